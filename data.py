"""CIFAR data for Meta-Weight-Net: the meta/train split, long-tailed counts, label noise.

The protocol follows Shu et al., "Meta-Weight-Net" (NeurIPS 2019, arXiv 1902.07379):

1. num_meta / K images per class are taken from the training split first. They form
   the meta set, which stays clean and balanced and shares no image with training.
2. The remaining images form the pool. Class c keeps
   n_c = floor(n_max * IF ** (-c / (K - 1))) of them, with n_max = (N - num_meta) / K.
   By default the counts are assigned to the classes in a shuffled order; with
   shuffle_counts=False class 0 is the head class, as in the original code.
3. Label noise, if any, is applied once to the training subset: each label is
   resampled from its row of a corruption matrix.

Images are decoded once into a uint8 tensor and augmented in whole batches with tensor
operations (random 32x32 crop of a 4-pixel reflect-padded image, horizontal flip,
normalisation), so the training loop does no per-sample PIL work.

All randomness comes from generators seeded with the run's seed, so the same seed gives
the same split, the same noisy labels and the same batches in another process.
"""

import math
import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

NUM_CLASSES = {"cifar10": 10, "cifar100": 100}

# Per-channel statistics of the CIFAR training images, in [0, 1] units.
CIFAR_MEAN = {"cifar10": (0.4914, 0.4822, 0.4465), "cifar100": (0.5071, 0.4865, 0.4409)}
CIFAR_STD = {"cifar10": (0.2470, 0.2435, 0.2616), "cifar100": (0.2673, 0.2564, 0.2762)}

# Directory names and per-class training counts of the torchvision releases.
TORCHVISION_DIRS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
TORCHVISION_TRAIN_PER_CLASS = {"cifar10": 5000, "cifar100": 500}

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
CORRUPTION_TYPES = ("uniform", "flip1", "flip2")


class DataError(ValueError):
    """Invalid data location or protocol setting, reported to the user in one line."""


# ---------------------------------------------------------------------------
# Protocol: counts, split and label noise. These work on label arrays only.
# ---------------------------------------------------------------------------


def long_tail_counts(n_max, num_classes, imbalanced_factor):
    """Return n_c = floor(n_max * IF ** (-c / (K - 1))) for c = 0 .. K-1 (head first)."""
    if num_classes == 1:
        return [n_max]
    counts = []
    for c in range(num_classes):
        # Round before flooring so that exact values such as 25 * 10 ** -1 = 2.5 are not
        # pushed below an integer by floating-point error.
        value = round(n_max * imbalanced_factor ** (-c / (num_classes - 1)), 9)
        counts.append(int(math.floor(value)))
    return counts


def class_counts(train_per_class, num_meta, imbalanced_factor, shuffle_counts, generator):
    """Return the training count of each class, indexed by class label.

    train_per_class lists the number of training images of each class before the split.
    """
    num_classes = len(train_per_class)
    n_max = (sum(train_per_class) - num_meta) // num_classes
    counts = long_tail_counts(n_max, num_classes, imbalanced_factor or 1.0)
    if shuffle_counts:
        order = torch.randperm(num_classes, generator=generator).tolist()
        counts = [counts[order.index(c)] for c in range(num_classes)]
    # A class whose pool is smaller than n_c keeps its whole pool. This only happens for
    # image folders with unequal classes, never for CIFAR.
    meta_per_class = num_meta // num_classes
    return [min(n, total - meta_per_class) for n, total in zip(counts, train_per_class)]


def corruption_matrix(corruption_type, corruption_ratio, num_classes, generator):
    """Return the (K, K) matrix whose row c is the distribution of the noisy label of c.

    uniform: (1 - r) * I + r / K, so the label changes with probability r * (K - 1) / K.
    flip1:   1 - r on the diagonal and r on one other class, drawn per row.
    flip2:   1 - r on the diagonal and r / 2 on each of two other classes, drawn per row.
    """
    r = corruption_ratio
    if corruption_type == "uniform":
        return (1 - r) * torch.eye(num_classes, dtype=torch.float64) + r / num_classes
    num_targets = {"flip1": 1, "flip2": 2}[corruption_type]
    matrix = (1 - r) * torch.eye(num_classes, dtype=torch.float64)
    for c in range(num_classes):
        others = [k for k in range(num_classes) if k != c]
        picks = torch.randperm(len(others), generator=generator)[:num_targets]
        for k in picks.tolist():
            matrix[c, others[k]] += r / num_targets
    return matrix


def corrupt_labels(labels, matrix, generator):
    """Resample each label from its row of the corruption matrix; returns a new tensor."""
    return torch.multinomial(matrix[labels], 1, generator=generator).squeeze(1)


@dataclass
class Split:
    """Indices into the training split, and the labels used for training."""

    train_indices: torch.Tensor  # (n_train,) into the original training split
    train_labels: torch.Tensor  # (n_train,) labels after corruption, if any
    clean_labels: torch.Tensor  # (n_train,) labels before corruption
    meta_indices: torch.Tensor  # (num_meta,) clean and balanced
    num_per_class: list  # training count per class, before corruption


def make_split(labels, num_classes, num_meta, imbalanced_factor=None, corruption_type=None,
               corruption_ratio=0.0, shuffle_counts=True, seed=0):
    """Split the training labels into a meta set and a (long-tailed, noisy) training subset.

    The draws happen in a fixed order from one generator seeded with `seed`, so the
    result depends on nothing else.
    """
    generator = torch.Generator().manual_seed(seed)
    labels = torch.as_tensor(labels, dtype=torch.long)
    by_class = [torch.nonzero(labels == c).squeeze(1) for c in range(num_classes)]
    by_class = [idx[torch.randperm(len(idx), generator=generator)] for idx in by_class]

    meta_per_class = num_meta // num_classes
    train_per_class = [len(idx) for idx in by_class]
    num_per_class = class_counts(
        train_per_class, num_meta, imbalanced_factor, shuffle_counts, generator
    )

    meta_indices = torch.cat([idx[:meta_per_class] for idx in by_class])
    train_indices = torch.cat([
        idx[meta_per_class:meta_per_class + n] for idx, n in zip(by_class, num_per_class)
    ])
    clean_labels = labels[train_indices]
    train_labels = clean_labels
    if corruption_type is not None:
        matrix = corruption_matrix(corruption_type, corruption_ratio, num_classes, generator)
        train_labels = corrupt_labels(clean_labels, matrix, generator)
    return Split(train_indices, train_labels, clean_labels, meta_indices, num_per_class)


# ---------------------------------------------------------------------------
# Sources: an image-folder tree or torchvision's CIFAR release.
# ---------------------------------------------------------------------------


@dataclass
class Source:
    kind: str  # "folder" or "torchvision"
    root: str  # the folder that contains train/ and test/, or the torchvision root
    class_names: list
    train_per_class: list  # training images per class, counted without decoding


def _folder_root(data_root):
    """Return data_root, or its only subfolder, if it contains train/ and test/ folders."""
    candidates = [data_root] + sorted(
        os.path.join(data_root, name) for name in os.listdir(data_root)
        if os.path.isdir(os.path.join(data_root, name))
    )
    for path in candidates:
        if all(os.path.isdir(os.path.join(path, split)) for split in ("train", "test")):
            return path
    return None


def _list_images(folder):
    return sorted(
        name for name in os.listdir(folder) if name.lower().endswith(IMAGE_EXTENSIONS)
    )


def locate_data(dataset, data_root):
    """Find the data under data_root without decoding it; raise DataError if there is none.

    Returns a Source, or None when data_root contains neither layout (the caller may then
    download with torchvision).
    """
    if not os.path.isdir(data_root):
        raise DataError(
            f"--data_root {data_root!r} is not a directory; pass the folder that contains "
            f"train/<class>/ and test/<class>/ images (for example an unpacked "
            f"cifar10-jpg.tar.gz) or torchvision's {TORCHVISION_DIRS[dataset]}/"
        )
    num_classes = NUM_CLASSES[dataset]

    folder = _folder_root(data_root)
    if folder is not None:
        train_dir = os.path.join(folder, "train")
        class_names = sorted(
            name for name in os.listdir(train_dir)
            if os.path.isdir(os.path.join(train_dir, name))
        )
        test_names = sorted(
            name for name in os.listdir(os.path.join(folder, "test"))
            if os.path.isdir(os.path.join(folder, "test", name))
        )
        if len(class_names) != num_classes or test_names != class_names:
            raise DataError(
                f"{folder!r} has {len(class_names)} class folders in train/ and "
                f"{len(test_names)} in test/, but --dataset {dataset} needs the same "
                f"{num_classes} in both; check --dataset and --data_root"
            )
        train_per_class = [len(_list_images(os.path.join(train_dir, c))) for c in class_names]
        return Source("folder", folder, class_names, train_per_class)

    if os.path.isdir(os.path.join(data_root, TORCHVISION_DIRS[dataset])):
        class_names = [f"class_{c}" for c in range(num_classes)]
        per_class = TORCHVISION_TRAIN_PER_CLASS[dataset]
        return Source("torchvision", data_root, class_names, [per_class] * num_classes)
    return None


def _torchvision_class(dataset):
    import torchvision

    return {"cifar10": torchvision.datasets.CIFAR10,
            "cifar100": torchvision.datasets.CIFAR100}[dataset]


def download_torchvision(dataset, data_root):
    """Download CIFAR with torchvision into data_root; raise DataError if that fails."""
    dataset_class = _torchvision_class(dataset)
    os.makedirs(data_root, exist_ok=True)
    try:
        dataset_class(data_root, train=True, download=True)
        dataset_class(data_root, train=False, download=True)
    except Exception as error:  # torchvision raises URLError, OSError, RuntimeError, ...
        raise DataError(
            f"no {dataset} data found in {data_root!r} and the download failed "
            f"({type(error).__name__}: {error}); unpack cifar10-jpg.tar.gz or torchvision's "
            f"{TORCHVISION_DIRS[dataset]}/ there, or pass --data_root"
        ) from None
    return locate_data(dataset, data_root)


def _decode_folder(split_dir, class_names):
    paths, labels = [], []
    for label, name in enumerate(class_names):
        folder = os.path.join(split_dir, name)
        for file_name in _list_images(folder):
            paths.append(os.path.join(folder, file_name))
            labels.append(label)

    # Decode straight into one preallocated (N, 32, 32, 3) array: no per-image copies to
    # stack, which would double the peak memory. Pillow releases the GIL while it
    # decodes, so the threads use every core.
    images = np.empty((len(paths), 32, 32, 3), dtype=np.uint8)

    def decode(index):
        with Image.open(paths[index]) as image:
            pixels = np.asarray(image.convert("RGB"))
        if pixels.shape != (32, 32, 3):
            raise DataError(f"{paths[index]!r} is {pixels.shape[1]}x{pixels.shape[0]} pixels; "
                            f"CIFAR images must be 32x32")
        images[index] = pixels

    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        for _ in pool.map(decode, range(len(paths)), chunksize=256):
            pass
    return _as_tensor(images), torch.tensor(labels, dtype=torch.long)


def _as_tensor(images):
    """View (N, 32, 32, 3) uint8 pixels as (N, 3, 32, 32) in channels_last order, no copy."""
    return torch.from_numpy(images).permute(0, 3, 1, 2)


def _read_torchvision(dataset, root, train):
    data = _torchvision_class(dataset)(root, train=train, download=False)
    return _as_tensor(np.ascontiguousarray(data.data)), torch.tensor(data.targets, dtype=torch.long)


def read_class_names_torchvision(dataset, root):
    meta_file = {"cifar10": "batches.meta", "cifar100": "meta"}[dataset]
    key = {"cifar10": "label_names", "cifar100": "fine_label_names"}[dataset]
    with open(os.path.join(root, TORCHVISION_DIRS[dataset], meta_file), "rb") as handle:
        return pickle.load(handle, encoding="latin1")[key]


def load_images(dataset, source):
    """Decode both splits into uint8 tensors of shape (N, 3, 32, 32), with int64 labels.

    The tensors are in channels_last memory order, as the classifier consumes them.
    """
    if source.kind == "folder":
        train = _decode_folder(os.path.join(source.root, "train"), source.class_names)
        test = _decode_folder(os.path.join(source.root, "test"), source.class_names)
    else:
        train = _read_torchvision(dataset, source.root, train=True)
        test = _read_torchvision(dataset, source.root, train=False)
        source.class_names = read_class_names_torchvision(dataset, source.root)
    return train, test


# ---------------------------------------------------------------------------
# Batches: augmentation and loading on whole uint8 tensors.
# ---------------------------------------------------------------------------


def augment(images, generator):
    """Randomly crop 32x32 from 4-pixel reflect-padded images and flip half of them.

    images: (B, 3, 32, 32) float. The crop is one gather with per-image offsets, which
    costs far less than a ResNet forward pass, so it needs no special kernel.
    """
    batch, _, height, width = images.shape
    padded = F.pad(images, (4, 4, 4, 4), mode="reflect")  # (B, 3, 40, 40)
    offsets = torch.randint(0, 9, (2, batch), generator=generator).to(images.device)
    rows = offsets[0, :, None] + torch.arange(height, device=images.device)  # (B, 32)
    cols = offsets[1, :, None] + torch.arange(width, device=images.device)  # (B, 32)
    batch_index = torch.arange(batch, device=images.device)[:, None, None, None]
    channel_index = torch.arange(3, device=images.device)[None, :, None, None]
    crops = padded[batch_index, channel_index, rows[:, None, :, None], cols[:, None, None, :]]
    flip = torch.rand(batch, generator=generator).to(images.device) < 0.5
    return torch.where(flip[:, None, None, None], crops.flip(3), crops)


class TensorLoader:
    """Batches from uint8 images held in memory, with batched augmentation.

    Iterating it yields (images, labels, indices): float images normalised to zero
    mean and unit variance per channel, their labels, and their positions in `labels`.
    The order and the augmentation of batch b in epoch e depend only on (seed, e, b),
    so state_dict() and load_state_dict() are enough to resume exactly where a run
    stopped.
    """

    def __init__(self, images, labels, batch_size, mean, std, seed, shuffle=True,
                 augment=True, drop_last=True, device="cpu"):
        self.images = images.to(device)
        self.labels = labels.to(device)
        # A set smaller than one batch (a tiny meta set, say) is served whole every step.
        self.batch_size = max(1, min(batch_size, len(labels)))
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255
        self.seed = seed
        self.shuffle = shuffle
        self.augment = augment
        self.drop_last = drop_last
        self.epoch = 0
        self.position = 0  # batches already yielded in this epoch

    def __len__(self):
        if self.drop_last:
            return len(self.labels) // self.batch_size
        return math.ceil(len(self.labels) / self.batch_size)

    def state_dict(self):
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state):
        self.epoch = state["epoch"]
        self.position = state["position"]

    def _generator(self, *keys):
        # One independent stream per (seed, epoch, batch); the constants only spread keys.
        seed = self.seed * 1_000_003
        for key in keys:
            seed = seed * 10_007 + key + 1
        return torch.Generator().manual_seed(seed % (2**63))

    def __iter__(self):
        num_batches = len(self)
        if self.position >= num_batches:
            self.epoch += 1
            self.position = 0
        order = torch.arange(len(self.labels))
        if self.shuffle:
            order = torch.randperm(len(self.labels), generator=self._generator(self.epoch))
        order = order.to(self.labels.device)
        while self.position < num_batches:
            start = self.position * self.batch_size
            indices = order[start:start + self.batch_size]
            self.position += 1
            yield self.make_batch(indices, self._generator(self.epoch, self.position))

    def make_batch(self, indices, generator=None, augment_images=None):
        """Return (images, labels, indices); augment_images=None follows self.augment."""
        if augment_images is None:
            augment_images = self.augment
        images = self.images[indices].float()
        if augment_images:
            images = augment(images, generator)
        images = (images - self.mean) / self.std
        return images.contiguous(memory_format=torch.channels_last), self.labels[indices], indices


@dataclass
class Data:
    train_loader: TensorLoader
    meta_loader: TensorLoader
    test_loader: TensorLoader
    split: Split
    class_names: list


def build_dataloader(dataset, source, batch_size, num_meta, imbalanced_factor=None,
                     corruption_type=None, corruption_ratio=0.0, shuffle_counts=True,
                     seed=0, device="cpu", test_batch_size=200):
    """Decode the data and return the train, meta and test loaders with the split.

    The meta loader augments like the train loader, as in the original Meta-Weight-Net
    code. The test loader neither shuffles nor augments and keeps every test image.
    """
    (train_images, train_labels), (test_images, test_labels) = load_images(dataset, source)
    num_classes = NUM_CLASSES[dataset]
    split = make_split(train_labels, num_classes, num_meta, imbalanced_factor,
                       corruption_type, corruption_ratio, shuffle_counts, seed)
    mean, std = CIFAR_MEAN[dataset], CIFAR_STD[dataset]

    train_loader = TensorLoader(train_images[split.train_indices], split.train_labels,
                                batch_size, mean, std, seed=seed + 1, device=device)
    meta_loader = TensorLoader(train_images[split.meta_indices], train_labels[split.meta_indices],
                               batch_size, mean, std, seed=seed + 2, device=device)
    test_loader = TensorLoader(test_images, test_labels, test_batch_size, mean, std,
                               seed=seed + 3, shuffle=False, augment=False, drop_last=False,
                               device=device)
    return Data(train_loader, meta_loader, test_loader, split, source.class_names)
