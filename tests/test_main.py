"""End-to-end runs of main() on tiny image folders and on a real CIFAR-10 subset."""

import json
import os
import random
import shutil
import tarfile

import pytest
import torch

import main
from conftest import REPO_ROOT

# DATA_ARCHIVE, as `make test DATA_ARCHIVE=...` passes it, else the archive beside the checkout.
ARCHIVE = os.environ.get("DATA_ARCHIVE") or os.path.join(
    os.path.dirname(REPO_ROOT), "shared", "data", "cifar10-jpg.tar.gz")

TINY_FLAGS = ["--num_meta", "50", "--batch_size", "10", "--valid_step", "3",
              "--log_step", "3", "--lr_milestones", "4", "5", "--device", "cpu"]


def run_main(data_root, output_dir, *flags):
    return main.main(["--data_root", data_root, "--output_dir", str(output_dir),
                      *TINY_FLAGS, *flags])


def read_json(path):
    with open(path) as handle:
        return json.load(handle)


def read_jsonl(path):
    with open(path) as handle:
        return [json.loads(line) for line in handle]


def test_reweighting_run_writes_results(tiny_cifar10, tmp_path):
    output_dir = tmp_path / "run"
    assert run_main(tiny_cifar10, output_dir, "--imbalanced_factor", "10",
                    "--train_iters", "6") == 0

    results = read_json(output_dir / "results.json")
    assert results["method"] == "reweighting"
    assert results["iterations"] == 6
    assert 0 <= results["final_test_acc"] <= 100
    assert results["best_test_acc"] >= results["final_test_acc"]
    assert sorted(results["num_per_class"].values()) == [1, 1, 2, 3, 4, 5, 6, 8, 11, 15]
    assert len(results["per_class_acc"]) == 10

    metrics = read_jsonl(output_dir / "metrics.jsonl")
    assert [row["iteration"] for row in metrics] == [3, 6]
    weights = read_jsonl(output_dir / "weights.jsonl")
    assert len(weights[-1]["weights"]) == len(weights[-1]["loss_grid"]) == 101
    assert all(0 < w < 1 for w in weights[-1]["weights"])

    config = read_json(output_dir / "config.json")
    assert config["args"]["imbalanced_factor"] == 10
    assert set(config["versions"]) >= {"torch", "torchvision", "betty-ml"}


def test_baseline_and_noise_run(tiny_cifar10, tmp_path):
    output_dir = tmp_path / "baseline"
    assert run_main(tiny_cifar10, output_dir, "--baseline", "--train_iters", "4",
                    "--corruption_type", "flip2", "--corruption_ratio", "0.4") == 0
    results = read_json(output_dir / "results.json")
    assert results["method"] == "baseline"
    assert results["hypergrad"] is None
    assert results["corruption_type"] == "flip2"
    assert not (output_dir / "weights.jsonl").exists()


def test_noisy_run_records_clean_and_corrupted_weights(tiny_cifar10, tmp_path):
    output_dir = tmp_path / "noisy"
    assert run_main(tiny_cifar10, output_dir, "--train_iters", "3", "--corruption_type",
                    "uniform", "--corruption_ratio", "0.6") == 0
    row = read_jsonl(output_dir / "weights.jsonl")[-1]
    assert row["clean_count"] + row["corrupted_count"] == 150
    assert row["corrupted_count"] > 0
    assert sum(row["clean_histogram"]) == row["clean_count"]
    assert 0 < row["corrupted_mean_weight"] < 1


def test_cifar100_code_path(tiny_cifar100, tmp_path):
    output_dir = tmp_path / "c100"
    assert main.main(["--dataset", "cifar100", "--data_root", tiny_cifar100, "--output_dir",
                      str(output_dir), "--num_meta", "100", "--batch_size", "20",
                      "--train_iters", "2", "--valid_step", "2", "--imbalanced_factor", "5",
                      "--lr_milestones", "1", "--device", "cpu"]) == 0
    results = read_json(output_dir / "results.json")
    assert len(results["num_per_class"]) == 100
    assert max(results["num_per_class"].values()) == 5
    assert min(results["num_per_class"].values()) == 1


@pytest.mark.parametrize("hypergrad", ["darts", "neumann"])
def test_resume_matches_uninterrupted(tiny_cifar10, tmp_path, hypergrad):
    flags = ["--imbalanced_factor", "10", "--save_step", "3", "--hypergrad", hypergrad,
             "--corruption_type", "uniform", "--corruption_ratio", "0.2"]
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    assert run_main(tiny_cifar10, straight, "--train_iters", "6", *flags) == 0
    # Stopping after 3 iterations leaves the same state as an interruption right after the
    # checkpoint at iteration 3; the resumed run then goes on to 6.
    assert run_main(tiny_cifar10, interrupted, "--train_iters", "3", *flags) == 0
    assert run_main(tiny_cifar10, interrupted, "--train_iters", "6", "--resume", *flags) == 0

    a = torch.load(straight / "checkpoint.pt", weights_only=True)
    b = torch.load(interrupted / "checkpoint.pt", weights_only=True)
    assert a["iteration"] == b["iteration"] == 6
    for name in ("inner", "outer"):
        state_a, state_b = a["problems"][name]["state"], b["problems"][name]["state"]
        for key, tensor in state_a["module"].items():
            assert torch.equal(tensor, state_b["module"][key]), f"{name}.{key}"
        assert a["problems"][name]["count"] == b["problems"][name]["count"]
    assert a["loaders"] == b["loaders"]
    assert read_jsonl(straight / "metrics.jsonl")[-1]["test_acc"] == \
        read_jsonl(interrupted / "metrics.jsonl")[-1]["test_acc"]


def test_checkpoint_loads_with_weights_only(tiny_cifar10, tmp_path):
    output_dir = tmp_path / "run"
    assert run_main(tiny_cifar10, output_dir, "--train_iters", "3", "--save_step", "3") == 0
    state = torch.load(output_dir / "checkpoint.pt", weights_only=True)
    assert state["iteration"] == 3
    assert set(state["problems"]) == {"inner", "outer"}
    assert state["problems"]["inner"]["state"]["scheduler"]["milestones"] == {4: 1, 5: 1}


def test_existing_run_is_not_overwritten(tiny_cifar10, tmp_path, capsys):
    output_dir = tmp_path / "run"
    assert run_main(tiny_cifar10, output_dir, "--train_iters", "1", "--valid_step", "1") == 0
    before = (output_dir / "results.json").read_bytes()
    capsys.readouterr()

    assert run_main(tiny_cifar10, output_dir, "--train_iters", "1") == 2
    error = capsys.readouterr().err
    assert "already contains a run" in error
    assert "--overwrite" in error
    assert (output_dir / "results.json").read_bytes() == before

    (output_dir / "notes.txt").write_text("mine")
    assert run_main(tiny_cifar10, output_dir, "--train_iters", "1", "--overwrite") == 0
    assert (output_dir / "notes.txt").read_text() == "mine"


def test_resume_rejects_changed_settings(tiny_cifar10, tmp_path, capsys):
    output_dir = tmp_path / "run"
    assert run_main(tiny_cifar10, output_dir, "--train_iters", "3", "--save_step", "3") == 0
    capsys.readouterr()
    assert run_main(tiny_cifar10, output_dir, "--train_iters", "6", "--save_step", "3",
                    "--resume", "--lr", "0.05") == 2
    assert "--lr 0.1 -> 0.05" in capsys.readouterr().err
    assert run_main(tiny_cifar10, output_dir, "--train_iters", "2", "--save_step", "3",
                    "--resume") == 2
    assert "--train_iters 2 is below the 3 iterations" in capsys.readouterr().err


def test_resume_records_new_budget(tiny_cifar10, tmp_path):
    output_dir = tmp_path / "run"
    assert run_main(tiny_cifar10, output_dir, "--train_iters", "3", "--save_step", "3") == 0
    assert run_main(tiny_cifar10, output_dir, "--train_iters", "4", "--save_step", "3",
                    "--resume") == 0
    config = read_json(output_dir / "config.json")
    assert config["args"]["train_iters"] == 4
    assert [entry["iteration"] for entry in config["resumed"]] == [3]
    assert read_json(output_dir / "results.json")["iterations"] == 4


@pytest.fixture(scope="module")
def real_cifar_subset(tmp_path_factory):
    """A small subset of the real CIFAR-10 JPEGs: 60 training and 20 test images per class."""
    if not os.path.isfile(ARCHIVE):
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the real-data test, but {ARCHIVE} is missing")
        pytest.skip(f"real CIFAR-10 archive not found at {ARCHIVE}")
    root = tmp_path_factory.mktemp("cifar10_subset")
    keep = {"train": 60, "test": 20}
    with tarfile.open(ARCHIVE) as archive:
        members = []
        for member in archive:
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 4 and int(parts[3][:4]) < keep[parts[1]]:
                members.append(member)
        archive.extractall(root, members=members, filter="data")
    return str(root)


def test_real_cifar10_subset(real_cifar_subset, tmp_path):
    output_dir = tmp_path / "real"
    assert main.main(["--data_root", real_cifar_subset, "--output_dir", str(output_dir),
                      "--imbalanced_factor", "10", "--num_meta", "100", "--batch_size", "20",
                      "--train_iters", "4", "--valid_step", "2", "--lr_milestones", "3",
                      "--device", "cpu"]) == 0
    results = read_json(output_dir / "results.json")
    assert list(results["per_class_acc"]) == [
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    # 60 per class - 10 meta = 50 = n_max; IF 10 over 10 classes.
    assert sorted(results["num_per_class"].values(), reverse=True) == \
        [50, 38, 29, 23, 17, 13, 10, 8, 6, 5]
    assert results["num_meta"] == 100
    assert results["iterations"] == 4


def test_tensorboard_events_in_output_dir(tiny_cifar10, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard", reason="--tensorboard needs the tensorboard package")
    monkeypatch.chdir(tmp_path)
    output_dir = tmp_path / "run"
    assert run_main(tiny_cifar10, output_dir, "--train_iters", "3", "--tensorboard") == 0
    assert list((output_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert not (tmp_path / "betty_tensorboard").exists()
