"""Time a Meta-Weight-Net iteration against a plain SGD step, and check it computes the same.

    python scripts/benchmark.py                                  # CPU, random tensors
    python scripts/benchmark.py --data_root DATA                 # adds the real-data rows
    python scripts/benchmark.py --device cuda --data_root DATA --json out.json

Variants, all ResNet32 at the same batch size, timed in one process and interleaved
round by round so that machine drift affects each of them alike:

  (a) plain      a hand-written SGD step (forward, backward, update): the reference
  (b) baseline   the --baseline path: the inner problem alone, stepped by Betty
  (c) <method>   a reweighting iteration with each hypergradient method
  (d) real data  a darts iteration on real CIFAR-10 batches from the product's loaders,
                 with augmentation (needs --data_root)
  (a0), (c0)     the starting point: (a) and a darts iteration with the problems written
                 plainly, both in the default NCHW memory layout

The table gives the median seconds per iteration and the ratio to (a). The peak
resident memory is that of a short `main.py` run on CIFAR-10 in a subprocess (needs
--data_root), and on CUDA the peak allocated memory of this process.

The equivalence check compares the product's problems with plain Betty problem
definitions of the same objective, which build the classifier's graph everywhere and
restore nothing. It steps both for 20 iterations, each from the same state, and compares
the training losses and the weighting-net parameters after every iteration.
"""

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import logging  # noqa: E402

from betty.configs import Config, EngineConfig  # noqa: E402
from betty.engine import Engine  # noqa: E402
from betty.problems import ImplicitProblem  # noqa: E402

import data  # noqa: E402
from main import Inner, Outer, hypergradient_config  # noqa: E402
from model import ResNet32, WeightingNet  # noqa: E402

METHODS = ("darts", "sama", "neumann", "cg")
SECOND_ORDER_TAG = "(2nd order)"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch_size", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds of interleaved timing; the median is over rounds")
    parser.add_argument("--iters", type=int, default=3,
                        help="iterations per variant per round")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--data_root", default=None,
                        help="unpacked CIFAR-10 (train/<class>/, test/<class>/) for the "
                             "real-data row and the memory check; omitted: both are skipped")
    parser.add_argument("--check_iters", type=int, default=20,
                        help="iterations of the equivalence check (0 skips it)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    return parser.parse_args(argv)


def synchronize(device):
    if device == "cuda":
        torch.cuda.synchronize()


def random_batch(batch_size, device, seed):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (batch_size,), generator=generator)
    images = images.to(device).contiguous(memory_format=torch.channels_last)
    return images, labels.to(device)


def make_classifier(device, channels_last):
    classifier = ResNet32(10)
    if channels_last:
        classifier = classifier.to(memory_format=torch.channels_last)
    return classifier


def sgd(classifier):
    return torch.optim.SGD(classifier.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)


# ---------------------------------------------------------------------------
# Variants: each returns a function that runs one iteration.
# ---------------------------------------------------------------------------


def plain_step(device, batch_size, channels_last=True):
    classifier = make_classifier(device, channels_last).to(device)
    optimizer = sgd(classifier)
    images, labels = random_batch(batch_size, device, seed=0)
    if not channels_last:
        images = images.contiguous()

    def step():
        loss = F.cross_entropy(classifier(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def engine_step(device, train_loader, meta_loader, hypergrad=None, inner_class=Inner,
                outer_class=Outer, channels_last=None, meta_lr=1e-5, seed=0):
    """Build the product's problems (or the given classes) in a Betty engine."""
    torch.manual_seed(seed)
    channels_last = True if channels_last is None else channels_last
    classifier = make_classifier(device, channels_last)
    strategy = "gpu" if device == "cuda" else "cpu"
    settings = {"type": hypergrad or "darts"}
    if hypergrad:
        settings = hypergradient_config(argparse.Namespace(
            hypergrad=hypergrad, hypergrad_alpha=None, hypergrad_iterations=1))
    inner = inner_class("inner", Config(**settings), module=classifier,
                        optimizer=sgd(classifier), train_data_loader=train_loader,
                        reweight=hypergrad is not None)
    problems, dependencies = [inner], {"u2l": {}, "l2u": {}}
    if hypergrad is not None:
        weighting_net = WeightingNet()
        outer = outer_class("outer", Config(type=hypergrad), module=weighting_net,
                            optimizer=torch.optim.Adam(weighting_net.parameters(), lr=meta_lr),
                            train_data_loader=meta_loader)
        problems = [outer, inner]
        dependencies = {"u2l": {outer: [inner]}, "l2u": {inner: [outer]}}
    engine = Engine(problems, EngineConfig(train_iters=1, valid_step=10**9, strategy=strategy),
                    dependencies)
    engine.train()
    return engine


def engine_iteration(engine):
    def step():
        engine.global_step += 1
        engine.train_step()
    return step


def real_data_loaders(data_root, device, batch_size):
    source = data.locate_data("cifar10", data_root)
    if source is None:
        raise SystemExit(f"error: --data_root {data_root!r} contains no train/ and test/ folders")
    bundle = data.build_dataloader("cifar10", source, batch_size, 1000, imbalanced_factor=100,
                                   seed=1, device=device)
    return bundle.train_loader, bundle.meta_loader


# ---------------------------------------------------------------------------
# Equivalence check against straightforward problem definitions
# ---------------------------------------------------------------------------


class StraightforwardInner(ImplicitProblem):
    """The weighted loss written plainly: the classifier always builds its graph."""

    def __init__(self, *args, reweight=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.finite_difference_pass = False
        self.reference_loss = None

    def training_step(self, batch):
        per_sample_loss = F.cross_entropy(self.module(batch[0]), batch[1], reduction="none")
        if not self.finite_difference_pass:
            self.reference_loss = per_sample_loss.detach().unsqueeze(1)
        weights = self.outer(self.reference_loss)
        return (weights.squeeze(1) * per_sample_loss).mean()


class StraightforwardOuter(ImplicitProblem):
    """Betty's hypergradient with nothing restored afterwards."""

    def training_step(self, batch):
        return F.cross_entropy(self.inner(batch[0]), batch[1])

    def backward(self, *args, **kwargs):
        self.inner.finite_difference_pass = True
        try:
            super().backward(*args, **kwargs)
        finally:
            self.inner.finite_difference_pass = False


def copy_state(source, target):
    """Make target's problems equal to source's: modules, buffers and optimizer states."""
    for name in ("inner", "outer"):
        from_problem, to_problem = getattr(source, name), getattr(target, name)
        to_problem.module.load_state_dict(from_problem.module.state_dict())
        # A deep copy: load_state_dict keeps the same tensors when dtype and device match,
        # and the two engines would then share momentum buffers.
        to_problem.optimizer.load_state_dict(copy.deepcopy(from_problem.optimizer.state_dict()))


def equivalence_check(device, batch_size, iterations):
    """Step the optimised and the straightforward problems side by side.

    Before each iteration the straightforward engine takes the optimised engine's state,
    so every comparison is of one iteration from the same state. Running the two freely
    instead would compare chaos: 20 steps at lr 0.1 amplify the last-bit differences of
    the finite-difference restore into visible loss differences.
    """
    engines = {}
    for name, classes in (("optimised", (Inner, Outer)),
                          ("straightforward", (StraightforwardInner, StraightforwardOuter))):
        train_loader = [random_batch(batch_size, device, seed=s) for s in (1, 2, 3, 4)]
        meta_loader = [random_batch(batch_size, device, seed=s) for s in (5, 6)]
        engines[name] = engine_step(device, train_loader, meta_loader, hypergrad="darts",
                                    inner_class=classes[0], outer_class=classes[1],
                                    channels_last=True, meta_lr=1e-3, seed=0)
    optimised, straightforward = engines["optimised"], engines["straightforward"]
    theta_start = _theta(optimised)
    loss_diff = theta_diff = 0.0
    passed = True
    for _ in range(iterations):
        copy_state(optimised, straightforward)
        losses = []
        for engine in (optimised, straightforward):
            engine.global_step += 1
            engine.train_step()
            losses.append(engine.inner.reference_loss.mean())
        theta_a, theta_b = _theta(optimised), _theta(straightforward)
        loss_diff = max(loss_diff, (losses[0] - losses[1]).abs().item())
        theta_diff = max(theta_diff, (theta_a - theta_b).abs().max().item())
        passed &= torch.allclose(losses[0], losses[1], rtol=1e-5, atol=1e-6)
        passed &= torch.allclose(theta_a, theta_b, rtol=1e-5, atol=1e-7)
    return {"iterations": iterations, "max_loss_difference": loss_diff,
            "max_theta_difference": theta_diff,
            "max_theta_change_from_start": (_theta(optimised) - theta_start).abs().max().item(),
            "final_loss": losses[0].item(),
            "tolerance": "per iteration: rtol 1e-5, atol 1e-6 (loss) and 1e-7 (theta)",
            "passed": bool(passed)}


def _theta(engine):
    return torch.cat([p.detach().flatten().cpu() for p in engine.outer.module.parameters()])


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------


def time_variants(variants, device, rounds, iters):
    for step in variants.values():  # warm-up: allocator, cudnn autotuning, lazy init
        step()
        step()
    timings = {name: [] for name in variants}
    for _ in range(rounds):
        for name, step in variants.items():
            # The second-order methods take ten times longer; one iteration a round will do.
            count = 1 if SECOND_ORDER_TAG in name else iters
            synchronize(device)
            start = time.perf_counter()
            for _ in range(count):
                step()
            synchronize(device)
            timings[name].append((time.perf_counter() - start) / count)
    return {name: statistics.median(values) for name, values in timings.items()}


def main_run_peak_memory(data_root, device):
    """Peak resident memory (MiB) of a 20-iteration main.py run on CIFAR-10."""
    with tempfile.TemporaryDirectory() as output_dir:
        command = [sys.executable, os.path.join(REPO_ROOT, "main.py"), "--data_root", data_root,
                   "--imbalanced_factor", "100", "--train_iters", "20", "--valid_step", "20",
                   "--log_step", "20", "--lr_milestones", "10", "15", "--device", device,
                   "--output_dir", os.path.join(output_dir, "run")]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main(argv=None):
    args = parse_args(argv)
    logging.getLogger("betty").setLevel(logging.WARNING)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda was given but CUDA is not available", file=sys.stderr)
        return 2
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    device = args.device

    # First, while this process is small: a child's peak RSS counts the memory it shares
    # with its parent between fork and exec, so a large parent would inflate it.
    peak = main_run_peak_memory(args.data_root, device) if args.data_root else None

    train_batches = [random_batch(args.batch_size, device, seed=1)]
    meta_batches = [random_batch(args.batch_size, device, seed=2)]
    variants = {
        "(a) plain SGD step": plain_step(device, args.batch_size),
        "(b) baseline via Betty": engine_iteration(
            engine_step(device, train_batches, meta_batches)),
    }
    for method in args.methods:
        tag = f" {SECOND_ORDER_TAG}" if method in ("neumann", "cg") else ""
        variants[f"(c) reweighting, {method}{tag}"] = engine_iteration(
            engine_step(device, train_batches, meta_batches, hypergrad=method))
    # The starting point, for BENCHMARKS.md: default memory layout and the problems
    # written plainly (the classifier builds its graph in the finite-difference passes).
    variants["(a0) plain SGD step, NCHW layout"] = plain_step(device, args.batch_size,
                                                              channels_last=False)
    contiguous_batches = [(train_batches[0][0].contiguous(), train_batches[0][1])]
    variants["(c0) darts, plain definitions, NCHW"] = engine_iteration(engine_step(
        device, contiguous_batches, [(meta_batches[0][0].contiguous(), meta_batches[0][1])],
        hypergrad="darts", inner_class=StraightforwardInner, outer_class=StraightforwardOuter,
        channels_last=False))
    if args.data_root:
        train_loader, meta_loader = real_data_loaders(args.data_root, device, args.batch_size)
        variants["(d) darts, real CIFAR-10 batches"] = engine_iteration(
            engine_step(device, train_loader, meta_loader, hypergrad="darts"))

    print(f"Timing on {device} ({torch.get_num_threads()} threads), batch {args.batch_size}, "
          f"{args.rounds} rounds x {args.iters} iterations...", flush=True)
    medians = time_variants(variants, device, args.rounds, args.iters)
    reference = medians["(a) plain SGD step"]

    report = {"device": device, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "batch_size": args.batch_size,
              "rounds": args.rounds, "iters_per_round": args.iters, "variants": {}}
    print(f"\n{'variant':<36} {'s/iter':>8} {'x plain':>8}")
    for name, seconds in medians.items():
        report["variants"][name] = {"seconds_per_iter": seconds, "ratio_to_plain": seconds / reference}
        print(f"{name:<36} {seconds:>8.4f} {seconds / reference:>8.2f}")
    if args.data_root:
        ratio = medians["(d) darts, real CIFAR-10 batches"] / medians.get(
            "(c) reweighting, darts", float("nan"))
        report["real_data_over_random_tensors"] = ratio
        print(f"data loading and augmentation overhead, (d) / (c darts): {ratio:.3f}")
        print(f"peak resident memory of a 20-iteration main.py CIFAR-10 run: {peak:.0f} MiB")
        report["main_run_peak_rss_mib"] = peak
    if device == "cuda":
        report["peak_cuda_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        print(f"peak CUDA memory allocated here: {report['peak_cuda_allocated_mib']:.0f} MiB")

    if args.check_iters:
        print(f"\nEquivalence check, {args.check_iters} darts iterations on {device}...", flush=True)
        check = equivalence_check(device, args.batch_size, args.check_iters)
        report["equivalence_check"] = check
        print(f"max |loss difference| {check['max_loss_difference']:.3g}, max |theta "
              f"difference| {check['max_theta_difference']:.3g} (theta moved up to "
              f"{check['max_theta_change_from_start']:.3g}): "
              f"{'PASSED' if check['passed'] else 'FAILED'} ({check['tolerance']})")

    print("\n" + json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0 if report.get("equivalence_check", {}).get("passed", True) else 1


if __name__ == "__main__":
    sys.exit(main())
