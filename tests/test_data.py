"""The data protocol with exact values: counts, meta/train split, label noise, batches."""

import subprocess
import sys

import pytest
import torch

import data
from conftest import REPO_ROOT

LABELS_30_PER_CLASS = torch.arange(10).repeat_interleave(30)


@pytest.mark.parametrize("imbalanced_factor, expected", [
    (10, [25, 19, 14, 11, 8, 6, 5, 4, 3, 2]),
    (1, [25] * 10),
    (25, [25, 17, 12, 8, 5, 4, 2, 2, 1, 1]),
])
def test_long_tail_counts_small(imbalanced_factor, expected):
    # 10 classes of 30 images and 50 meta images: n_max = (300 - 50) / 10 = 25.
    assert data.long_tail_counts(25, 10, imbalanced_factor) == expected


def test_long_tail_counts_cifar10():
    # n_max = (50000 - 1000) / 10 = 4900, as in the Meta-Weight-Net setup.
    assert data.long_tail_counts(4900, 10, 100) == [
        4900, 2937, 1760, 1055, 632, 379, 227, 136, 81, 49]
    assert data.long_tail_counts(4900, 10, 200)[-1] == 24
    # With n_max = 5000 and 500 (no meta set) the sizes are the usual long-tailed CIFAR ones.
    assert sum(data.long_tail_counts(5000, 10, 100)) == 12406
    assert sum(data.long_tail_counts(500, 100, 100)) == 10847


def test_split_fixed_order_counts():
    split = data.make_split(LABELS_30_PER_CLASS, 10, 50, imbalanced_factor=10,
                            shuffle_counts=False, seed=3)
    assert split.num_per_class == [25, 19, 14, 11, 8, 6, 5, 4, 3, 2]
    assert torch.bincount(split.train_labels, minlength=10).tolist() == split.num_per_class


def test_split_shuffled_counts_are_a_permutation():
    split = data.make_split(LABELS_30_PER_CLASS, 10, 50, imbalanced_factor=10, seed=3)
    assert sorted(split.num_per_class) == sorted([25, 19, 14, 11, 8, 6, 5, 4, 3, 2])
    assert split.num_per_class != [25, 19, 14, 11, 8, 6, 5, 4, 3, 2]
    assert torch.bincount(split.train_labels, minlength=10).tolist() == split.num_per_class


def test_meta_set_balanced_and_disjoint():
    split = data.make_split(LABELS_30_PER_CLASS, 10, 50, imbalanced_factor=10,
                            corruption_type="uniform", corruption_ratio=0.5, seed=0)
    meta_labels = LABELS_30_PER_CLASS[split.meta_indices]
    assert torch.bincount(meta_labels, minlength=10).tolist() == [5] * 10
    assert not set(split.meta_indices.tolist()) & set(split.train_indices.tolist())
    assert len(set(split.train_indices.tolist())) == len(split.train_indices)
    # Noise touches training labels only; clean labels are the originals.
    assert torch.equal(split.clean_labels, LABELS_30_PER_CLASS[split.train_indices])


@pytest.mark.parametrize("corruption_type", data.CORRUPTION_TYPES)
@pytest.mark.parametrize("ratio", [0.0, 0.2, 0.4, 1.0])
def test_corruption_matrix_rows(corruption_type, ratio):
    generator = torch.Generator().manual_seed(0)
    matrix = data.corruption_matrix(corruption_type, ratio, 10, generator)
    torch.testing.assert_close(matrix.sum(1), torch.ones(10, dtype=torch.float64))
    assert (matrix >= 0).all()
    if corruption_type != "uniform":
        assert torch.allclose(matrix.diagonal(), torch.full((10,), 1 - ratio, dtype=torch.float64))
        others = (matrix - torch.diag(matrix.diagonal()) > 0).sum(1)
        expected = {"flip1": 1, "flip2": 2}[corruption_type] if ratio > 0 else 0
        assert others.tolist() == [expected] * 10


def test_uniform_matrix_values():
    matrix = data.corruption_matrix("uniform", 0.4, 10, None)
    assert matrix[0, 0].item() == pytest.approx(0.64)
    assert matrix[0, 1].item() == pytest.approx(0.04)


@pytest.mark.parametrize("corruption_type, ratio, expected_rate", [
    ("uniform", 0.4, 0.36),  # r * (K - 1) / K
    ("flip1", 0.4, 0.4),
    ("flip2", 0.2, 0.2),
])
def test_realised_noise_rate(corruption_type, ratio, expected_rate):
    labels = torch.arange(10).repeat_interleave(2000)
    generator = torch.Generator().manual_seed(1)
    matrix = data.corruption_matrix(corruption_type, ratio, 10, generator)
    noisy = data.corrupt_labels(labels, matrix, generator)
    rate = (noisy != labels).float().mean().item()
    # 20,000 draws: the standard error is about 0.0035.
    assert rate == pytest.approx(expected_rate, abs=0.015)


def test_flip1_targets_one_class():
    labels = torch.arange(10).repeat_interleave(500)
    generator = torch.Generator().manual_seed(2)
    matrix = data.corruption_matrix("flip1", 0.4, 10, generator)
    noisy = data.corrupt_labels(labels, matrix, generator)
    for c in range(10):
        changed = noisy[(labels == c) & (noisy != labels)]
        target = [k for k in range(10) if k != c and matrix[c, k] > 0]
        assert changed.unique().tolist() == target


SPLIT_SCRIPT = (
    "import torch, data; "
    "s = data.make_split(torch.arange(10).repeat_interleave(30), 10, 50, 10, 'flip2', 0.4, "
    "seed=7); print(s.train_indices.tolist(), s.train_labels.tolist(), s.meta_indices.tolist())"
)


def test_same_seed_same_split_across_processes():
    outputs = [
        subprocess.run([sys.executable, "-c", SPLIT_SCRIPT], cwd=REPO_ROOT, check=True,
                       capture_output=True, text=True).stdout
        for _ in range(2)
    ]
    assert outputs[0] == outputs[1]
    in_process = data.make_split(LABELS_30_PER_CLASS, 10, 50, 10, "flip2", 0.4, seed=7)
    expected = " ".join(str(t.tolist()) for t in (
        in_process.train_indices, in_process.train_labels, in_process.meta_indices))
    assert outputs[0].strip() == expected


def test_other_seed_other_split():
    a = data.make_split(LABELS_30_PER_CLASS, 10, 50, 10, seed=1)
    b = data.make_split(LABELS_30_PER_CLASS, 10, 50, 10, seed=2)
    assert not torch.equal(a.train_indices, b.train_indices)


def make_loader(**kwargs):
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (25, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.arange(25) % 5
    return data.TensorLoader(images, labels, batch_size=10, mean=(0.5,) * 3,
                             std=(0.25,) * 3, seed=4, **kwargs)


def test_loader_batches_and_resume():
    loader = make_loader()
    batches = [b for _, b in zip(range(5), _endless(loader))]
    assert [tuple(b[0].shape) for b in batches] == [(10, 3, 32, 32)] * 5
    assert batches[0][0].dtype == torch.float32

    resumed = make_loader()
    for _, _ in zip(range(3), _endless(resumed)):
        pass
    state = resumed.state_dict()
    fresh = make_loader()
    fresh.load_state_dict(state)
    for expected, got in zip(batches[3:], _endless(fresh)):
        assert torch.equal(expected[0], got[0])
        assert torch.equal(expected[2], got[2])


def _endless(loader):
    while True:
        yield from loader


def test_loader_without_augmentation_normalises():
    loader = make_loader(shuffle=False, augment=False, drop_last=False)
    images, labels, indices = next(iter(loader))
    expected = (loader.images[:10].float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(images, expected)
    assert indices.tolist() == list(range(10))
    assert sum(len(b[1]) for b in loader) == 15  # the rest of the epoch: 10 + 5


def test_augment_crops_from_padded_image():
    image = torch.arange(3 * 32 * 32, dtype=torch.float32).view(1, 3, 32, 32)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        out = data.augment(image, generator)
        padded = torch.nn.functional.pad(image, (4, 4, 4, 4), mode="reflect")
        windows = [padded[..., r:r + 32, c:c + 32] for r in range(9) for c in range(9)]
        windows += [w.flip(3) for w in windows]
        assert any(torch.equal(out, w) for w in windows)
