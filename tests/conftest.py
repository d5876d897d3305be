"""Shared fixtures: tiny image-folder data sets written with PIL, and the repository root."""

import os
import sys

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def write_image_folder(root, num_classes=10, train_per_class=20, test_per_class=5, seed=0):
    """Write train/<class>/*.jpg and test/<class>/*.jpg of 32x32 noise images.

    Each class has its own mean brightness, so a classifier can learn something in a
    few steps. Returns root.
    """
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for label in range(num_classes):
            folder = os.path.join(root, split, f"class{label:03d}")
            os.makedirs(folder, exist_ok=True)
            shade = 255 * label / max(1, num_classes - 1)
            for index in range(count):
                pixels = rng.normal(shade, 40, size=(32, 32, 3)).clip(0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(
                    os.path.join(folder, f"{index:04d}.jpg"))
    return str(root)


@pytest.fixture(scope="session")
def tiny_cifar10(tmp_path_factory):
    """A 10-class image folder: 20 training and 5 test images per class."""
    return write_image_folder(tmp_path_factory.mktemp("tiny_cifar10"))


@pytest.fixture(scope="session")
def tiny_cifar100(tmp_path_factory):
    """A 100-class image folder: 6 training and 1 test image per class."""
    return write_image_folder(tmp_path_factory.mktemp("tiny_cifar100"), num_classes=100,
                              train_per_class=6, test_per_class=1)
