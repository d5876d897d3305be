"""Run bookkeeping: output directory, result files, checkpoints, evaluation helpers."""

import json
import os
import platform
import shutil
import sys
import time
from importlib import metadata

import torch
import torch.nn.functional as F

# Files and folders that a run writes into its output directory. --overwrite removes
# exactly these and leaves anything else in the directory alone.
RUN_FILES = (
    "config.json", "metrics.jsonl", "weights.jsonl", "results.json", "checkpoint.pt",
    "train.log", "tensorboard",
)
RUN_FILE_SUFFIXES = (".png",)

# Losses at which the learned weighting function w(loss) is recorded.
LOSS_GRID = torch.linspace(0.0, 10.0, 101)


class OutputDirError(ValueError):
    """An output directory that cannot be used as requested."""


def existing_run_files(output_dir):
    if not os.path.isdir(output_dir):
        return []
    return sorted(
        name for name in os.listdir(output_dir)
        if name in RUN_FILES or name.endswith(RUN_FILE_SUFFIXES)
    )


def prepare_output_dir(output_dir, resume, overwrite):
    """Create output_dir, refusing to mix a new run into the files of an earlier one."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise OutputDirError(f"--output_dir {output_dir!r} exists and is not a directory")
    found = existing_run_files(output_dir)
    if resume:
        if not os.path.isfile(os.path.join(output_dir, "checkpoint.pt")):
            raise OutputDirError(
                f"--resume: no checkpoint.pt in {output_dir!r}; start the run with "
                f"--save_step N so that it writes one"
            )
    elif found and overwrite:
        for name in found:
            path = os.path.join(output_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
    elif found:
        raise OutputDirError(
            f"--output_dir {output_dir!r} already contains a run ({', '.join(found)}); pass "
            f"--resume to continue it, --overwrite to replace it, or choose another directory"
        )
    os.makedirs(output_dir, exist_ok=True)


def environment_versions():
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for package in ("torchvision", "betty-ml", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    versions["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
    return versions


def write_json(path, obj):
    """Write obj as JSON through a temporary file and a rename, so readers never see half."""
    temporary = path + ".tmp"
    with open(temporary, "w") as handle:
        json.dump(obj, handle, indent=2)
        handle.write("\n")
    os.replace(temporary, path)


def append_jsonl(path, obj):
    with open(path, "a") as handle:
        handle.write(json.dumps(obj) + "\n")


def rewrite_jsonl(path, rows):
    """Replace a JSON-lines file with rows, atomically (used when a run resumes)."""
    temporary = path + ".tmp"
    with open(temporary, "w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    os.replace(temporary, path)


def read_jsonl(path):
    if not os.path.isfile(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def save_checkpoint(path, state):
    """Save state atomically: a crash during the write leaves the previous checkpoint."""
    temporary = path + ".tmp"
    torch.save(state, temporary)
    os.replace(temporary, path)


def load_checkpoint(path):
    # weights_only=True: the checkpoint contains tensors and plain Python containers only.
    return torch.load(path, map_location="cpu", weights_only=True)


def rng_state():
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def format_duration(seconds):
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds}s"


@torch.no_grad()
def evaluate(model, loader, num_classes):
    """Return (accuracy %, per-class accuracy % list) of model on every batch of loader."""
    correct = torch.zeros(num_classes, device=loader.labels.device)
    total = torch.zeros(num_classes, device=loader.labels.device)
    for images, labels, _ in loader:
        predictions = model(images).argmax(1)
        total += torch.bincount(labels, minlength=num_classes)
        correct += torch.bincount(labels[predictions == labels], minlength=num_classes)
    per_class = (100.0 * correct / total.clamp(min=1)).tolist()
    accuracy = (100.0 * correct.sum() / total.sum()).item()
    return accuracy, per_class


@torch.no_grad()
def weight_function(weighting_net, device):
    """Return the learned weights w(loss) on LOSS_GRID, as a list of floats."""
    grid = LOSS_GRID.to(device).unsqueeze(1)  # (G, 1)
    return weighting_net(grid).squeeze(1).tolist()


@torch.no_grad()
def training_set_weights(model, weighting_net, loader):
    """Return the weight of every training sample in loader's order, in eval mode.

    Each weight is w(L_i) with L_i the cross-entropy of the sample's (possibly noisy)
    training label, computed without augmentation.

    NOTE: this is a forward pass over the whole training subset at every validation of a
    noisy run. It is cheap on a GPU but took about 80 s for 49,000 images on a 2-core CPU,
    so CPU runs with label noise want a large --valid_step.
    """
    weights = torch.empty(len(loader.labels), device=loader.labels.device)
    for start in range(0, len(loader.labels), 500):
        indices = torch.arange(start, min(start + 500, len(loader.labels)),
                               device=loader.labels.device)
        images, labels, _ = loader.make_batch(indices, augment_images=False)
        per_sample_loss = F.cross_entropy(model(images), labels, reduction="none")
        weights[indices] = weighting_net(per_sample_loss.unsqueeze(1)).squeeze(1)
    return weights


class Stopwatch:
    """Wall time of the training loop, excluding validation, for progress lines."""

    def __init__(self):
        self.start = time.perf_counter()
        self.paused = 0.0

    def pause(self):
        self._pause_start = time.perf_counter()

    def resume(self):
        self.paused += time.perf_counter() - self._pause_start

    def training_seconds(self):
        return time.perf_counter() - self.start - self.paused


def print_error(message):
    print(f"error: {message}", file=sys.stderr)
