"""Meta-Weight-Net data reweighting as a two-level program on Betty.

Shu et al., "Meta-Weight-Net: Learning an Explicit Mapping For Sample Weighting",
NeurIPS 2019 (arXiv 1902.07379). The lower level ("inner") trains a ResNet32 on the
weighted loss mean_i V(L_i; theta) * L_i. The upper level ("outer") trains the
weighting MLP V so that the classifier does well on a small clean, balanced meta set.

    python main.py --dataset cifar10 --imbalanced_factor 100 --data_root DATA
    python main.py --dataset cifar10 --imbalanced_factor 100 --data_root DATA --baseline
    python main.py --dataset cifar10 --corruption_type uniform --corruption_ratio 0.4 \\
        --meta_lr 1e-3 --meta_weight_decay 1e-4 --data_root DATA
    python main.py --help
"""

import argparse
import json
import logging
import os
import sys
import time

import torch
import torch.nn.functional as F
from betty.configs import Config, EngineConfig
from betty.engine import Engine
from betty.logging.logger_base import LoggerBase, get_logger
from betty.problems import ImplicitProblem

import data
import utils
from model import ResNet32, WeightingNet

DEFAULT_DATA_ROOT = os.path.join("~", ".cache", "meta-weight-net", "data")
DEFAULT_RUNS_ROOT = os.path.join("~", "meta-weight-net-runs")

# Finite-difference methods perturb the classifier's weights and only need the value
# of the per-sample losses there; the implicit methods differentiate through them.
FINITE_DIFFERENCE_METHODS = ("darts", "sama")


class UsageError(ValueError):
    """A flag value that cannot work; main() prints it in one line and exits with 2."""


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except None and False, whose meaning the help text gives."""

    def _get_help_string(self, action):
        if action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


def build_parser():
    parser = argparse.ArgumentParser(
        description="Meta-Weight-Net sample reweighting on Betty, for long-tailed and "
                    "noisy-label CIFAR-10/100.",
        formatter_class=DefaultsHelpFormatter,
    )
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", choices=sorted(data.NUM_CLASSES), default="cifar10",
                       help="data set; sets the number of classes (10 or 100)")
    group.add_argument("--data_root", default=None,
                       help="folder with train/<class>/*.jpg and test/<class>/*.jpg (or a "
                            "single subfolder holding them), or torchvision's CIFAR files; "
                            f"default {DEFAULT_DATA_ROOT}, where torchvision may download")
    group.add_argument("--download", action="store_true",
                       help="let torchvision download CIFAR into --data_root when it contains "
                            "neither layout")
    group.add_argument("--imbalanced_factor", type=float, default=None,
                       help="ratio of the largest to the smallest class count in the "
                            "training subset; omit for a balanced subset")
    group.add_argument("--fixed_class_order", action="store_true",
                       help="give class 0 the largest count and class K-1 the smallest, as "
                            "the original code does, instead of a shuffled assignment")
    group.add_argument("--corruption_type", choices=data.CORRUPTION_TYPES, default=None,
                       help="label noise on the training subset: uniform over all classes, "
                            "or flips to one (flip1) or two (flip2) other classes")
    group.add_argument("--corruption_ratio", type=float, default=None,
                       help="noise rate r in [0, 1] of --corruption_type")
    group.add_argument("--num_meta", type=int, default=1000,
                       help="images in the clean, balanced meta set (total, split evenly "
                            "over the classes)")
    group.add_argument("--batch_size", type=int, default=100,
                       help="images per training batch and per meta batch")

    group = parser.add_argument_group("classifier (inner problem)")
    group.add_argument("--lr", type=float, default=0.1, help="SGD learning rate")
    group.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    group.add_argument("--dampening", type=float, default=0.0, help="SGD dampening")
    group.add_argument("--nesterov", action="store_true", help="use Nesterov momentum")
    group.add_argument("--weight_decay", type=float, default=5e-4,
                       help="SGD weight decay (L2 coefficient)")
    group.add_argument("--train_iters", type=int, default=10000,
                       help="training iterations (classifier updates)")
    group.add_argument("--lr_milestones", type=int, nargs="+", default=[5000, 7500, 9000],
                       help="iterations at which the learning rate is multiplied by 0.1")

    group = parser.add_argument_group("weighting net (outer problem)")
    group.add_argument("--meta_lr", type=float, default=1e-5, help="Adam learning rate")
    group.add_argument("--meta_weight_decay", type=float, default=0.0,
                       help="Adam weight decay (L2 coefficient)")
    group.add_argument("--meta_net_hidden_size", type=int, default=100,
                       help="width of the hidden layers of the weighting MLP")
    group.add_argument("--meta_net_num_layers", type=int, default=1,
                       help="number of hidden layers of the weighting MLP")
    group.add_argument("--baseline", action="store_true",
                       help="train with plain cross-entropy: the inner problem alone, no "
                            "weighting net")

    group = parser.add_argument_group("hypergradient")
    group.add_argument("--hypergrad", choices=("darts", "sama", "neumann", "cg"),
                       default="darts",
                       help="best-response Jacobian approximation: darts = finite "
                            "difference, sama = finite difference with Adam "
                            "preconditioning, neumann = Neumann series, cg = conjugate "
                            "gradient")
    group.add_argument("--hypergrad_alpha", type=float, default=None,
                       help="darts: perturbation norm (Betty default 0.01); sama: "
                            "perturbation scale (1.0); neumann and cg: step size (1.0)")
    group.add_argument("--hypergrad_iterations", type=int, default=1,
                       help="iterations of the neumann or cg approximation")
    group.add_argument("--unroll_steps", type=int, default=1,
                       help="classifier updates per weighting-net update")
    group.add_argument("--rollback", action="store_true",
                       help="after each weighting-net update, redo the classifier's "
                            "unrolled steps with the new weights (Betty's roll_back)")

    group = parser.add_argument_group("system")
    group.add_argument("--seed", type=int, default=1,
                       help="seed of the split, the label noise, the batches and the "
                            "initial weights")
    group.add_argument("--device", choices=("cpu", "cuda"), default=None,
                       help="default: cuda when available, else cpu")
    group.add_argument("--fp16", action="store_true",
                       help="float16 autocast with loss scaling (CUDA only)")
    group.add_argument("--bf16", action="store_true",
                       help="bfloat16 autocast, no loss scaling (CUDA only)")
    group.add_argument("--distributed", action="store_true",
                       help="data-parallel training on several GPUs; run under torchrun")

    group = parser.add_argument_group("logging and output")
    group.add_argument("--valid_step", type=int, default=100,
                       help="iterations between evaluations on the test set")
    group.add_argument("--log_step", type=int, default=100,
                       help="iterations between log and progress lines")
    group.add_argument("--output_dir", default=None,
                       help="folder for every file the run writes; default "
                            f"{DEFAULT_RUNS_ROOT}/<settings>_<time>")
    group.add_argument("--overwrite", action="store_true",
                       help="replace the run files already in --output_dir")
    group.add_argument("--save_step", type=int, default=0,
                       help="iterations between checkpoints (0: no checkpoint)")
    group.add_argument("--resume", action="store_true",
                       help="continue the run in --output_dir from its checkpoint")
    group.add_argument("--tensorboard", action="store_true",
                       help="write TensorBoard events to <output_dir>/tensorboard")
    return parser


def check_args(args, cuda_available):
    """Raise UsageError for flag values that cannot work, before anything is loaded."""
    if args.imbalanced_factor is not None and not args.imbalanced_factor >= 1:
        raise UsageError(f"--imbalanced_factor {args.imbalanced_factor} is below 1; use a "
                         f"value >= 1 (1 or no flag gives a balanced training subset)")
    if (args.corruption_type is None) != (args.corruption_ratio is None):
        present = "--corruption_type" if args.corruption_type else "--corruption_ratio"
        missing = "--corruption_ratio" if args.corruption_type else "--corruption_type"
        raise UsageError(f"{present} was given without {missing}; pass both or neither")
    if args.corruption_ratio is not None and not 0 <= args.corruption_ratio <= 1:
        raise UsageError(f"--corruption_ratio {args.corruption_ratio} is outside [0, 1]; pass "
                         f"a noise rate such as 0.4")

    num_classes = data.NUM_CLASSES[args.dataset]
    if args.num_meta <= 0 or args.num_meta % num_classes:
        raise UsageError(f"--num_meta {args.num_meta} is not a positive multiple of the "
                         f"{num_classes} classes of {args.dataset}")

    positive = {"batch_size": args.batch_size, "train_iters": args.train_iters,
                "valid_step": args.valid_step, "log_step": args.log_step,
                "unroll_steps": args.unroll_steps, "meta_net_hidden_size":
                args.meta_net_hidden_size, "meta_net_num_layers": args.meta_net_num_layers,
                "hypergrad_iterations": args.hypergrad_iterations}
    for name, value in positive.items():
        if value < 1:
            raise UsageError(f"--{name} {value} must be a positive integer")
    non_negative = {"lr": args.lr, "weight_decay": args.weight_decay, "meta_lr": args.meta_lr,
                    "meta_weight_decay": args.meta_weight_decay}
    for name, value in non_negative.items():
        if not value >= 0:
            raise UsageError(f"--{name} {value} is negative; use a value >= 0")
    if not 0 <= args.momentum < 1:
        raise UsageError(f"--momentum {args.momentum} is outside [0, 1); 0.9 is the default")
    if not 0 <= args.dampening <= 1:
        raise UsageError(f"--dampening {args.dampening} is outside [0, 1]; 0 is the default")
    if args.hypergrad_alpha is not None and not args.hypergrad_alpha > 0:
        raise UsageError(f"--hypergrad_alpha {args.hypergrad_alpha} must be above 0; omit it "
                         f"for Betty's default")
    if any(m < 1 for m in args.lr_milestones) or args.lr_milestones != sorted(args.lr_milestones):
        raise UsageError(f"--lr_milestones {' '.join(map(str, args.lr_milestones))} must be "
                         f"positive iterations in increasing order")
    if args.save_step < 0:
        raise UsageError(f"--save_step {args.save_step} must be 0 (off) or positive")
    if args.save_step % args.unroll_steps:
        raise UsageError(f"--save_step {args.save_step} is not a multiple of --unroll_steps "
                         f"{args.unroll_steps}; a checkpoint must fall between two "
                         f"weighting-net updates")
    if args.nesterov and (args.momentum <= 0 or args.dampening != 0):
        raise UsageError("--nesterov needs --momentum above 0 and --dampening 0")
    if args.resume and args.output_dir is None:
        raise UsageError("--resume needs --output_dir, the folder of the run to continue")
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite contradict each other; pass one")

    if args.device == "cuda" and not cuda_available:
        raise UsageError("--device cuda was given but CUDA is not available; use "
                         "--device cpu")
    if args.fp16 and args.bf16:
        raise UsageError("--fp16 and --bf16 were both given; pass one")
    for flag in ("fp16", "bf16"):
        if getattr(args, flag) and not cuda_available:
            raise UsageError(f"--{flag} needs CUDA, which is not available; drop --{flag}")
    if args.distributed and int(os.environ.get("WORLD_SIZE", "1")) < 2:
        raise UsageError("--distributed needs a distributed launcher with 2 or more "
                         "processes, for example: torchrun --nproc_per_node 2 main.py ...")
    if args.distributed and not cuda_available:
        raise UsageError("--distributed needs CUDA, which is not available")
    if args.tensorboard:
        try:
            import torch.utils.tensorboard  # noqa: F401
        except ImportError:
            raise UsageError("--tensorboard needs the tensorboard package: "
                             "pip install tensorboard") from None


def check_counts(args, source):
    """Raise UsageError when the split cannot be made from the located data."""
    num_classes = data.NUM_CLASSES[args.dataset]
    meta_per_class = args.num_meta // num_classes
    smallest = min(source.train_per_class)
    if meta_per_class > smallest:
        raise UsageError(f"--num_meta {args.num_meta} asks for {meta_per_class} images per "
                         f"class but the smallest class has {smallest} training images; use "
                         f"at most {smallest * num_classes}")

    # The same draws as the real split, so the names match the classes that would be empty.
    counts = data.class_counts(source.train_per_class, args.num_meta, args.imbalanced_factor,
                               not args.fixed_class_order,
                               _count_generator(args, source))
    empty = [name for name, n in zip(source.class_names, counts) if n < 1]
    n_max = (sum(source.train_per_class) - args.num_meta) // num_classes
    if empty and n_max < 1:
        raise UsageError(f"--num_meta {args.num_meta} leaves no training image for any class; "
                         f"use a smaller --num_meta")
    if empty:
        raise UsageError(f"--imbalanced_factor {args.imbalanced_factor:g} leaves no training "
                         f"image for {len(empty)} classes ({', '.join(empty)}); use a "
                         f"smaller factor or a smaller --num_meta")


def _count_generator(args, source):
    # make_split draws one permutation per class before the count assignment; replaying
    # them here gives the same shuffled assignment without touching any image.
    generator = torch.Generator().manual_seed(args.seed)
    for count in source.train_per_class:
        torch.randperm(count, generator=generator)
    return generator


def resolve_device(args, cuda_available):
    if args.device is not None:
        return args.device
    return "cuda" if cuda_available else "cpu"


def default_output_dir(args):
    setting = f"if{args.imbalanced_factor:g}" if args.imbalanced_factor else "balanced"
    if args.corruption_type:
        setting += f"_{args.corruption_type}_r{args.corruption_ratio:g}"
    method = "baseline" if args.baseline else "reweight"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{args.dataset}_{setting}_{method}_seed{args.seed}_{stamp}"
    return os.path.join(os.path.expanduser(DEFAULT_RUNS_ROOT), name)


# ---------------------------------------------------------------------------
# The two problems and the engine
# ---------------------------------------------------------------------------


class Inner(ImplicitProblem):
    """The classifier, trained with SGD on the weighted training loss.

    Meta-Weight-Net, eq. (2): L_train(w; theta) = 1/n sum_i V(L_i(w); theta) * L_i(w).
    The weights see the losses detached, so theta enters only through V.
    """

    def __init__(self, *args, reweight=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.reweight = reweight
        # Set by Outer while a finite-difference hypergradient runs; see Outer.backward.
        self.finite_difference_pass = False
        self.reference_loss = None  # (B, 1) per-sample losses of the last update step

    def training_step(self, batch):
        images, labels = batch[0], batch[1]
        if self.finite_difference_pass:
            # Only the values of L_i(w +/- eps * v) matter here: the gradient is taken
            # with respect to theta, so the classifier runs without an autograd graph.
            with torch.no_grad():
                per_sample_loss = F.cross_entropy(self.module(images), labels, reduction="none")
            # NOTE: V is fed the losses of the update step, not the perturbed ones. The
            # update treats V's input as a constant, so the finite difference must too.
            # Recomputing it, as Betty's example does, adds a d2V/(dtheta dL) term that
            # the unrolled hypergradient does not have.
            weights = self.outer(self.reference_loss)  # (B, 1)
            return (weights.squeeze(1) * per_sample_loss).mean()

        per_sample_loss = F.cross_entropy(self.module(images), labels, reduction="none")  # (B,)
        if not self.reweight:
            return per_sample_loss.mean()
        self.reference_loss = per_sample_loss.detach().unsqueeze(1)  # (B, 1)
        weights = self.outer(self.reference_loss)  # (B, 1)
        return (weights.squeeze(1) * per_sample_loss).mean()


class Outer(ImplicitProblem):
    """The weighting net, trained with Adam on the classifier's meta-set loss.

    Meta-Weight-Net, eq. (3): L_meta(w*(theta)) = 1/m sum_j CE(f(x_j; w*(theta)), y_j)
    on clean, balanced meta batches. Betty supplies d L_meta / d theta.
    """

    def training_step(self, batch):
        images, labels = batch[0], batch[1]
        logits = self.inner(images)
        loss = F.cross_entropy(logits, labels)
        if self.log_step <= 0 or self.count % self.log_step:
            return loss
        # Only on logged steps: .item() waits for the GPU.
        meta_acc = (logits.argmax(1) == labels).float().mean().item() * 100
        return {"loss": loss, "meta_acc": meta_acc}

    def backward(self, loss, params, paths, **kwargs):
        """Run Betty's hypergradient, then restore the classifier's exact state.

        The finite-difference methods move the classifier's weights to w +/- eps * v and
        back, which leaves rounding error in float arithmetic, and their forward passes
        in train mode update its BatchNorm running statistics. Restoring a copy makes
        the hypergradient free of side effects.
        """
        state = list(self.inner.module.parameters()) + list(self.inner.module.buffers())
        saved = [tensor.detach().clone() for tensor in state]
        self.inner.finite_difference_pass = self.inner.config.type in FINITE_DIFFERENCE_METHODS
        try:
            super().backward(loss, params, paths, **kwargs)
        finally:
            self.inner.finite_difference_pass = False
            with torch.no_grad():
                for tensor, copy in zip(state, saved):
                    tensor.copy_(copy)


class TensorBoardLogger(LoggerBase):
    """Betty logger that writes scalars under the run's folder, not ./betty_tensorboard."""

    def __init__(self, log_dir):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=log_dir)

    def log(self, stats, tag=None, step=None):
        for key, value in stats.items():
            if isinstance(value, (int, float)) or torch.is_tensor(value) and value.numel() == 1:
                self.writer.add_scalar(f"{tag}/{key}", float(value), step)


class ReweightingEngine(Engine):
    """Runs the two problems, validates on the test set and writes the run's files.

    "Best" accuracy is the maximum over validations on the test set, as in the paper and
    in Betty's example. results.json stores the final accuracy beside it.
    """

    def __init__(self, problems, config, dependencies, *, run):
        self.run_state = run
        self.best_test_acc = 0.0
        self.best_iteration = 0
        self.history = []
        self.start_iteration = 0
        super().__init__(problems, config=config, dependencies=dependencies)

    @property
    def reweight(self):
        return hasattr(self, "outer")

    def run(self):
        args = self.run_state.args
        stopwatch = utils.Stopwatch()
        last_time, last_iteration = stopwatch.training_seconds(), self.start_iteration
        self.train()
        for iteration in range(self.start_iteration + 1, self.train_iters + 1):
            self.global_step = iteration
            self.train_step()

            if iteration % args.log_step == 0 or iteration == self.train_iters:
                now = stopwatch.training_seconds()
                seconds_per_iter = (now - last_time) / max(1, iteration - last_iteration)
                self.log_progress(iteration, seconds_per_iter)
                last_time, last_iteration = now, iteration

            if iteration % self.valid_step == 0 or iteration == self.train_iters:
                stopwatch.pause()
                if self.is_rank_zero():
                    self.eval()
                    self.validation()
                    self.train()
                stopwatch.resume()

            if args.save_step and iteration % args.save_step == 0 and self.is_rank_zero():
                self.save_checkpoint(iteration)
        self.cleanup()

    def log_progress(self, iteration, seconds_per_iter):
        if not self.is_rank_zero():
            return
        left = (self.train_iters - iteration) * seconds_per_iter
        self.logger.info(
            f"[Progress] iteration {iteration}/{self.train_iters} "
            f"({100 * iteration / self.train_iters:.1f}%) | {seconds_per_iter:.3f} s/it | "
            f"training time left ~{utils.format_duration(left)} (excluding validation)"
        )

    @torch.no_grad()
    def validation(self):
        run = self.run_state
        test_acc, per_class = utils.evaluate(self.inner.module, run.data.test_loader,
                                             run.num_classes)
        if test_acc > self.best_test_acc:
            self.best_test_acc, self.best_iteration = test_acc, self.global_step
        row = {
            "iteration": self.global_step,
            "test_acc": test_acc,
            "best_test_acc": self.best_test_acc,
            "best_iteration": self.best_iteration,
            "per_class_acc": per_class,
            "lr": self.inner.optimizer.param_groups[0]["lr"],
            "elapsed_s": time.time() - run.start_time,
        }
        self.history.append(row)
        utils.append_jsonl(os.path.join(run.output_dir, "metrics.jsonl"), row)
        if self.reweight:
            self.record_weights()

        self.logger.info(
            f"[Validation] iteration {self.global_step} | test_acc {test_acc:.2f}% | "
            f"best_test_acc {self.best_test_acc:.2f}% (iteration {self.best_iteration})"
        )
        self.logger.log({"test_acc": test_acc, "best_test_acc": self.best_test_acc},
                        tag="validation", step=self.global_step)
        return {"test_acc": test_acc, "best_test_acc": self.best_test_acc}

    def record_weights(self):
        """Append w(loss) on a fixed grid and, with label noise, clean/corrupted weights."""
        run = self.run_state
        row = {
            "iteration": self.global_step,
            "loss_grid": utils.LOSS_GRID.tolist(),
            "weights": utils.weight_function(self.outer.module, self.device),
        }
        if run.args.corruption_type is not None:
            weights = utils.training_set_weights(self.inner.module, self.outer.module,
                                                 run.data.train_loader)
            corrupted = (run.data.split.train_labels != run.data.split.clean_labels)
            corrupted = corrupted.to(weights.device)
            edges = torch.linspace(0, 1, 21)
            for name, mask in (("clean", ~corrupted), ("corrupted", corrupted)):
                selected = weights[mask].float().cpu()
                row[f"{name}_count"] = int(mask.sum())
                row[f"{name}_mean_weight"] = selected.mean().item() if len(selected) else None
                row[f"{name}_histogram"] = torch.histc(selected, bins=20, min=0, max=1).tolist()
            row["histogram_edges"] = edges.tolist()
        utils.append_jsonl(os.path.join(run.output_dir, "weights.jsonl"), row)

    # -- checkpoints -------------------------------------------------------

    def checkpoint_state(self, iteration):
        run = self.run_state
        state = {
            "iteration": iteration,
            "problems": {},
            "best_test_acc": self.best_test_acc,
            "best_iteration": self.best_iteration,
            "history": self.history,
            "loaders": {"train": run.data.train_loader.state_dict(),
                        "meta": run.data.meta_loader.state_dict()},
            "rng": utils.rng_state(),
            "elapsed_s": time.time() - run.start_time,
        }
        for problem in self.problems:
            problem_state = problem.state_dict()
            if "scheduler" in problem_state:
                # MultiStepLR keeps its milestones in a Counter, which weights_only loading
                # rejects; a plain dict restores the same schedule.
                problem_state["scheduler"] = dict(problem_state["scheduler"])
                problem_state["scheduler"]["milestones"] = dict(
                    problem_state["scheduler"]["milestones"])
            state["problems"][problem.name] = {"state": problem_state,
                                               "count": problem.count}
        return state

    def save_checkpoint(self, iteration):
        path = os.path.join(self.run_state.output_dir, "checkpoint.pt")
        utils.save_checkpoint(path, self.checkpoint_state(iteration))
        self.logger.info(f"[Checkpoint] iteration {iteration} saved to {path}")

    def load_checkpoint(self, state):
        from collections import Counter

        run = self.run_state
        for problem in self.problems:
            saved = state["problems"][problem.name]
            problem_state = saved["state"]
            if "scheduler" in problem_state:
                problem_state["scheduler"]["milestones"] = Counter(
                    problem_state["scheduler"]["milestones"])
            problem.load_state_dict(problem_state)
            problem._count = saved["count"]
        run.data.train_loader.load_state_dict(state["loaders"]["train"])
        run.data.meta_loader.load_state_dict(state["loaders"]["meta"])
        utils.set_rng_state(state["rng"])
        self.best_test_acc = state["best_test_acc"]
        self.best_iteration = state["best_iteration"]
        self.history = state["history"]
        self.start_iteration = self.global_step = state["iteration"]
        # Drop validations logged after the checkpoint, so metrics.jsonl matches history.
        utils.rewrite_jsonl(os.path.join(run.output_dir, "metrics.jsonl"), self.history)
        weights_path = os.path.join(run.output_dir, "weights.jsonl")
        rows_to_keep = [row for row in utils.read_jsonl(weights_path)
                        if row["iteration"] <= state["iteration"]]
        utils.rewrite_jsonl(weights_path, rows_to_keep)


# ---------------------------------------------------------------------------
# Building and running
# ---------------------------------------------------------------------------


class RunState:
    """Arguments, data and output folder that main() hands to the engine."""

    def __init__(self, args, data_bundle, output_dir, num_classes):
        self.args = args
        self.data = data_bundle
        self.output_dir = output_dir
        self.num_classes = num_classes
        self.start_time = time.time()


def hypergradient_config(args):
    """Map --hypergrad and its settings onto Betty's Config fields."""
    settings = {"type": args.hypergrad}
    alpha_field = {"darts": "darts_alpha", "sama": "sama_adam_alpha",
                   "neumann": "neumann_alpha", "cg": "cg_alpha"}[args.hypergrad]
    if args.hypergrad_alpha is not None:
        settings[alpha_field] = args.hypergrad_alpha
    if args.hypergrad in ("neumann", "cg"):
        settings[f"{args.hypergrad}_iterations"] = args.hypergrad_iterations
    return settings


def build_problems(args, num_classes, data_bundle, device):
    precision = "fp32"
    if args.fp16:
        precision = "fp16"
    elif args.bf16:
        precision = "bf16"

    # channels_last: NHWC convolutions, faster on CPU (oneDNN) and GPU (cuDNN); see
    # BENCHMARKS.md. The loaders emit channels_last batches to match.
    classifier = ResNet32(num_classes).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(classifier.parameters(), lr=args.lr, momentum=args.momentum,
                                dampening=args.dampening, weight_decay=args.weight_decay,
                                nesterov=args.nesterov)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, args.lr_milestones, gamma=0.1)
    # The hypergradient settings live on the inner problem: Betty reads them from the
    # problem whose best-response Jacobian it approximates.
    inner_config = Config(unroll_steps=args.unroll_steps, log_step=args.log_step,
                          precision=precision, **hypergradient_config(args))
    inner = Inner("inner", inner_config, module=classifier, optimizer=optimizer,
                  scheduler=scheduler, train_data_loader=data_bundle.train_loader,
                  reweight=not args.baseline)
    if args.baseline:
        return [inner], {"u2l": {}, "l2u": {}}

    weighting_net = WeightingNet(args.meta_net_hidden_size, args.meta_net_num_layers)
    meta_optimizer = torch.optim.Adam(weighting_net.parameters(), lr=args.meta_lr,
                                      weight_decay=args.meta_weight_decay)
    outer_config = Config(type=args.hypergrad, log_step=args.log_step, precision=precision)
    outer = Outer("outer", outer_config, module=weighting_net, optimizer=meta_optimizer,
                  train_data_loader=data_bundle.meta_loader)
    dependencies = {"u2l": {outer: [inner]}, "l2u": {inner: [outer]}}
    return [outer, inner], dependencies


def engine_config(args, device):
    # NOTE: --distributed, --fp16 and --bf16 map onto Betty's strategy and precision
    # settings but have not been run here: the test machines have no GPU.
    if args.distributed:
        strategy = "distributed"
    else:
        strategy = "gpu" if device == "cuda" else "cpu"
    return EngineConfig(train_iters=args.train_iters, valid_step=args.valid_step,
                        roll_back=args.rollback, strategy=strategy, logger_type="none")


def write_results(engine, run, wall_time):
    args, split = run.args, run.data.split
    final = engine.history[-1]
    names = run.data.class_names
    results = {
        "method": "baseline" if args.baseline else "reweighting",
        "dataset": args.dataset,
        "imbalanced_factor": args.imbalanced_factor,
        "corruption_type": args.corruption_type,
        "corruption_ratio": args.corruption_ratio,
        "hypergrad": None if args.baseline else args.hypergrad,
        "unroll_steps": None if args.baseline else args.unroll_steps,
        "meta_lr": None if args.baseline else args.meta_lr,
        "meta_weight_decay": None if args.baseline else args.meta_weight_decay,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "train_iters": args.train_iters,
        "iterations": engine.global_step,
        "final_test_acc": final["test_acc"],
        "best_test_acc": engine.best_test_acc,
        "best_iteration": engine.best_iteration,
        "best_selected_on": "test set",
        "per_class_acc": dict(zip(names, final["per_class_acc"])),
        "num_per_class": dict(zip(names, split.num_per_class)),
        "num_train": len(split.train_indices),
        "num_meta": len(split.meta_indices),
        "wall_time_s": wall_time,
        "device": str(engine.device),
    }
    path = os.path.join(run.output_dir, "results.json")
    utils.write_json(path, results)
    return path


def prepare(args):
    """Check flags and data, then create the output folder; returns (source, device)."""
    cuda_available = torch.cuda.is_available()
    check_args(args, cuda_available)

    data_root = os.path.expanduser(args.data_root or DEFAULT_DATA_ROOT)
    if args.data_root is None and not os.path.isdir(data_root):
        os.makedirs(data_root, exist_ok=True)
    source = data.locate_data(args.dataset, data_root)
    if source is None and (args.download or args.data_root is None):
        source = data.download_torchvision(args.dataset, data_root)
    if source is None:
        raise data.DataError(
            f"--data_root {data_root!r} contains neither train/<class>/ and test/<class>/ "
            f"image folders nor torchvision's {data.TORCHVISION_DIRS[args.dataset]}/; "
            f"unpack the data there or add --download"
        )
    check_counts(args, source)

    args.output_dir = args.output_dir or default_output_dir(args)
    utils.prepare_output_dir(args.output_dir, args.resume, args.overwrite)
    if args.resume:
        check_resume_args(args)
    return source, resolve_device(args, cuda_available)


# Flags that may differ between a run and its resumption: they change where the data
# lives, how long the run goes on and what it logs, not what one iteration computes.
RESUMABLE_CHANGES = {"data_root", "download", "train_iters", "valid_step", "log_step",
                     "save_step", "resume", "overwrite", "output_dir", "tensorboard", "device"}


def check_resume_args(args):
    config_path = os.path.join(args.output_dir, "config.json")
    if not os.path.isfile(config_path):
        raise UsageError(f"--resume: no config.json in {args.output_dir!r}, so the saved "
                         f"settings are unknown; start a new --output_dir")
    with open(config_path) as handle:
        saved = json.load(handle)["args"]
    changed = sorted(
        key for key, value in vars(args).items()
        if key not in RESUMABLE_CHANGES and saved.get(key) != value
    )
    if changed:
        details = ", ".join(f"--{key} {saved.get(key)!r} -> {getattr(args, key)!r}"
                            for key in changed)
        raise UsageError(f"--resume with settings that differ from the saved run ({details}); "
                         f"repeat the original flags or start a new --output_dir")
    done = utils.load_checkpoint(os.path.join(args.output_dir, "checkpoint.pt"))["iteration"]
    if args.train_iters < done:
        raise UsageError(f"--train_iters {args.train_iters} is below the {done} iterations the "
                         f"checkpoint has done; pass --train_iters {done} or more")


def record_resume(args, iteration):
    """Update config.json: the new budget, and when and how the run was resumed."""
    config_path = os.path.join(args.output_dir, "config.json")
    with open(config_path) as handle:
        config = json.load(handle)
    config["args"]["train_iters"] = args.train_iters
    config.setdefault("resumed", []).append({"iteration": iteration, "argv": sys.argv,
                                             "time": time.strftime("%Y-%m-%d %H:%M:%S")})
    utils.write_json(config_path, config)


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        source, device = prepare(args)
    except (UsageError, data.DataError, utils.OutputDirError) as error:
        utils.print_error(error)
        return 2

    logger = get_logger()
    log_file = logging.FileHandler(os.path.join(args.output_dir, "train.log"))
    log_file.setFormatter(logger.handlers[0].formatter if logger.handlers else None)
    logger.addHandler(log_file)
    try:
        return train(args, source, device, logger)
    finally:
        logger.removeHandler(log_file)
        log_file.close()


def train(args, source, device, logger):
    start = time.time()
    torch.manual_seed(args.seed)
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    num_classes = data.NUM_CLASSES[args.dataset]
    checkpoint_path = os.path.join(args.output_dir, "checkpoint.pt")
    checkpoint = utils.load_checkpoint(checkpoint_path) if args.resume else None
    if checkpoint is None:
        utils.write_json(os.path.join(args.output_dir, "config.json"),
                         {"args": vars(args), "argv": sys.argv,
                          "versions": utils.environment_versions()})

    logger.info(f"Output folder: {args.output_dir}")
    logger.info(f"Decoding {args.dataset} from {source.root} ({source.kind})")
    data_bundle = data.build_dataloader(
        args.dataset, source, args.batch_size, args.num_meta, args.imbalanced_factor,
        args.corruption_type, args.corruption_ratio or 0.0, not args.fixed_class_order,
        args.seed, device)
    counts = dict(zip(data_bundle.class_names, data_bundle.split.num_per_class))
    logger.info(f"Training images per class: {counts}; "
                f"meta set: {len(data_bundle.split.meta_indices)} images")
    if min(args.lr_milestones) >= args.train_iters:
        logger.warning(f"Every --lr_milestones value is >= --train_iters {args.train_iters}, so "
                       f"the learning rate stays at {args.lr}; pass milestones within the budget")

    run = RunState(args, data_bundle, args.output_dir, num_classes)
    problems, dependencies = build_problems(args, num_classes, data_bundle, device)
    engine = ReweightingEngine(problems, engine_config(args, device), dependencies, run=run)
    if args.tensorboard:
        tensorboard = TensorBoardLogger(os.path.join(args.output_dir, "tensorboard"))
        engine.logger = tensorboard
        for problem in problems:
            problem.logger = tensorboard
    if checkpoint is not None:
        engine.load_checkpoint(checkpoint)
        record_resume(args, engine.start_iteration)
        start -= checkpoint["elapsed_s"]
        logger.info(f"Resumed from {checkpoint_path} at iteration {engine.start_iteration}")

    try:
        engine.run()
    except KeyboardInterrupt:
        logger.info(f"Interrupted at iteration {engine.global_step}; the files so far are "
                    f"in {args.output_dir}" + ("; continue with --resume" if args.save_step
                                               else ""))
        return 130
    if not engine.is_rank_zero():
        return 0  # validation and the result files belong to rank 0
    results_path = write_results(engine, run, time.time() - start)
    final = engine.history[-1]
    logger.info(f"Final test accuracy {final['test_acc']:.2f}%, best on test "
                f"{engine.best_test_acc:.2f}% (iteration {engine.best_iteration}); "
                f"results in {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
