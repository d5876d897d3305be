"""scripts/sweep_imbalance.sh and scripts/sweep_noise.sh, end to end with main.py.

Every main.py run takes a few seconds (mostly the torch import), so the imbalance
sweep runs once per module and the tests that change its folders work on copies.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP_IMBALANCE = os.path.join(REPO_ROOT, "scripts", "sweep_imbalance.sh")
SWEEP_NOISE = os.path.join(REPO_ROOT, "scripts", "sweep_noise.sh")

# main.py flags for a 2-iteration run on 20 training images per class. --save_step 2
# leaves a checkpoint.pt that a restarted sweep can resume from.
TINY_RUN_FLAGS = ["--num_meta", "20", "--batch_size", "10", "--valid_step", "2",
                  "--lr_milestones", "1", "2", "--save_step", "2"]
IMBALANCE_RUNS = [
    "cifar10_if10_iters2_reweight_seed1",
    "cifar10_if10_iters2_baseline_seed1",
    "cifar10_if1_iters2_reweight_seed1",
    "cifar10_if1_iters2_baseline_seed1",
]


def run_sweep(script, *args):
    environment = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(["bash", script, *map(str, args)], capture_output=True, text=True,
                          env=environment, timeout=300)


def imbalance_sweep(runs_dir, data_root, *args):
    return run_sweep(SWEEP_IMBALANCE, "--runs_dir", runs_dir, "--data_root", data_root,
                     "--device", "cpu", "--seeds", "1", "--train_iters", "2", *args,
                     "--", *TINY_RUN_FLAGS)


def file_states(folder):
    """Map every path under folder to its (mtime_ns, size)."""
    states = {}
    for root, folders, files in os.walk(folder):
        for name in folders + files:
            path = os.path.join(root, name)
            status = os.stat(path)
            states[path] = (status.st_mtime_ns, status.st_size)
    return states


def read_json(path):
    with open(path) as handle:
        return json.load(handle)


def log_commands(log_path):
    """Return the main.py command lines that the sweep wrote into a run's log."""
    with open(log_path) as handle:
        return [line for line in handle if line.startswith("=== ")]


@pytest.fixture(scope="module")
def imbalance_runs(tmp_path_factory, tiny_cifar10):
    """A finished sweep over factors 10 and 1, seed 1, both methods: (runs_dir, process)."""
    runs_dir = tmp_path_factory.mktemp("sweep") / "runs"
    completed = imbalance_sweep(runs_dir, tiny_cifar10, "--factors", "10 1")
    return runs_dir, completed


def test_imbalance_sweep_writes_each_run(imbalance_runs, tiny_cifar10):
    runs_dir, completed = imbalance_runs

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert sorted(os.listdir(runs_dir)) == sorted(
        IMBALANCE_RUNS + [name + ".log" for name in IMBALANCE_RUNS])
    for name in IMBALANCE_RUNS:
        results = read_json(runs_dir / name / "results.json")
        factor = 10.0 if "_if10_" in name else 1.0
        method = "baseline" if "_baseline_" in name else "reweighting"
        assert results["imbalanced_factor"] == factor, name
        assert results["method"] == method, name
        assert results["seed"] == 1, name
        assert results["train_iters"] == 2, name
        args = read_json(runs_dir / name / "config.json")["args"]
        assert args["data_root"] == tiny_cifar10, name
        assert args["num_meta"] == 20, name
        assert args["lr_milestones"] == [1, 2], name
        assert args["output_dir"] == str(runs_dir / name), name
        assert len(log_commands(runs_dir / f"{name}.log")) == 1, name
    assert completed.stdout.splitlines()[-1] == (
        f"sweep: 4 done, 0 skipped, 0 failed (of 4 runs in {runs_dir})")


def test_imbalance_sweep_rerun_changes_nothing(imbalance_runs, tiny_cifar10):
    runs_dir, first = imbalance_runs
    assert first.returncode == 0, first.stdout + first.stderr
    before = file_states(runs_dir)

    completed = imbalance_sweep(runs_dir, tiny_cifar10, "--factors", "10 1")

    assert completed.returncode == 0, completed.stdout + completed.stderr
    for name in IMBALANCE_RUNS:
        assert f"skipped {name}: results.json exists" in completed.stdout
    assert completed.stdout.splitlines()[-1] == (
        f"sweep: 0 done, 4 skipped, 0 failed (of 4 runs in {runs_dir})")
    assert file_states(runs_dir) == before


def test_sweep_resumes_and_reports_failure(imbalance_runs, tiny_cifar10, tmp_path):
    source_dir, first = imbalance_runs
    assert first.returncode == 0, first.stdout + first.stderr
    runs_dir = tmp_path / "runs"
    shutil.copytree(source_dir, runs_dir)
    # An interrupted run with a checkpoint, and one that stopped before writing one.
    resumable = runs_dir / "cifar10_if10_iters2_baseline_seed1"
    (resumable / "results.json").unlink()
    stale = runs_dir / "cifar10_if0.5_iters2_baseline_seed1"
    stale.mkdir()
    (stale / "metrics.jsonl").write_text("{}\n")
    untouched = file_states(runs_dir / "cifar10_if1_iters2_baseline_seed1")

    # Factor 0.5 comes first and main.py rejects it. The runs after it must still run.
    completed = imbalance_sweep(runs_dir, tiny_cifar10, "--factors", "0.5 10 1",
                                "--methods", "baseline")

    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert f"FAILED: {stale} exited with 2 (log: {stale}.log)" in completed.stdout
    assert "--imbalanced_factor 0.5 is below 1" in completed.stdout
    assert completed.stdout.splitlines()[-2] == (
        f"sweep: 1 done, 1 skipped, 1 failed (of 3 runs in {runs_dir})")
    assert completed.stdout.splitlines()[-1] == f"  failed: {stale} (exit 2; log: {stale}.log)"

    assert log_commands(f"{stale}.log")[-1].rstrip().endswith("--overwrite")
    assert log_commands(f"{resumable}.log")[-1].rstrip().endswith("--resume")
    assert (resumable / "results.json").is_file()
    with open(resumable / "train.log") as handle:
        assert "Resumed from" in handle.read()
    assert file_states(runs_dir / "cifar10_if1_iters2_baseline_seed1") == untouched


def test_noise_sweep_passes_noise_flags(tmp_path, tiny_cifar10):
    runs_dir = tmp_path / "runs"

    # --meta_weight_decay after -- overrides the sweep's 1e-4, and --meta_lr keeps 1e-3.
    completed = run_sweep(
        SWEEP_NOISE, "--runs_dir", runs_dir, "--data_root", tiny_cifar10, "--device", "cpu",
        "--settings", "uniform:0.40", "--seeds", "3", "--methods", "reweight",
        "--train_iters", "2", "--", *TINY_RUN_FLAGS, "--meta_weight_decay", "0")

    assert completed.returncode == 0, completed.stdout + completed.stderr
    run_dir = runs_dir / "cifar10_uniform_r0.4_iters2_reweight_seed3"
    results = read_json(run_dir / "results.json")
    assert results["corruption_type"] == "uniform"
    assert results["corruption_ratio"] == 0.4
    assert results["imbalanced_factor"] is None
    assert results["method"] == "reweighting"
    assert results["seed"] == 3
    args = read_json(run_dir / "config.json")["args"]
    assert args["meta_lr"] == 1e-3
    assert args["meta_weight_decay"] == 0
    with open(run_dir / "weights.jsonl") as handle:
        assert "clean_count" in json.loads(handle.readline())
    assert completed.stdout.splitlines()[-1] == (
        f"sweep: 1 done, 0 skipped, 0 failed (of 1 runs in {runs_dir})")


def test_noise_sweep_dry_run_plans_all_runs(tmp_path):
    runs_dir = tmp_path / "runs"

    completed = run_sweep(SWEEP_NOISE, "--runs_dir", runs_dir, "--dry_run")

    assert completed.returncode == 0, completed.stderr
    planned = [line for line in completed.stdout.splitlines() if " would start " in line]
    # 7 settings x 3 seeds x 2 methods.
    assert len(planned) == 42
    names = {line.split(" would start ")[1].split(":")[0] for line in planned}
    for setting in ("uniform_r0.2", "uniform_r0.4", "uniform_r0.6", "flip1_r0.2",
                    "flip1_r0.4", "flip2_r0.2", "flip2_r0.4"):
        for seed in (1, 2, 3):
            for method in ("reweight", "baseline"):
                assert f"cifar10_{setting}_iters10000_{method}_seed{seed}" in names
    assert all("--meta_lr 1e-3 --meta_weight_decay 1e-4" in line for line in planned)
    assert sum("--baseline" in line for line in planned) == 21
    assert not runs_dir.exists()


def test_imbalance_sweep_dry_run_defaults(tmp_path):
    completed = run_sweep(SWEEP_IMBALANCE, "--runs_dir", tmp_path / "runs", "--dry_run",
                          "--factors", "200 100.0 1e1")

    assert completed.returncode == 0, completed.stderr
    planned = [line for line in completed.stdout.splitlines() if " would start " in line]
    assert len(planned) == 3 * 3 * 2
    assert "cifar10_if200_iters10000_reweight_seed1" in planned[0]
    assert "--imbalanced_factor 100 " in planned[6]
    assert "cifar10_if10_iters10000_baseline_seed3" in planned[-1]
    assert "--lr_milestones" not in completed.stdout


@pytest.mark.parametrize("script, args, message", [
    (SWEEP_IMBALANCE, [], "--runs_dir is missing"),
    (SWEEP_IMBALANCE, ["--runs_dir", "RUNS", "--factors", "ten"], "'ten' is not"),
    (SWEEP_IMBALANCE, ["--runs_dir", "RUNS", "--seeds", "1 x"], "'x' is not"),
    (SWEEP_IMBALANCE, ["--runs_dir", "RUNS", "--train_iters", "0"], "must be positive"),
    (SWEEP_IMBALANCE, ["--runs_dir", "RUNS", "--methods", "mwn"], "'mwn' is invalid"),
    (SWEEP_IMBALANCE, ["--runs_dir", "RUNS", "--dataset", "mnist"], "'mnist' is invalid"),
    (SWEEP_IMBALANCE, ["--runs_dir", "RUNS", "--data_root", "NOPE"], "is not a directory"),
    (SWEEP_IMBALANCE, ["--runs_dir", "RUNS", "--", "--seed", "2"], "use --seeds instead"),
    (SWEEP_IMBALANCE, ["--runs_dir", "RUNS", "--", "--train_it", "5"],
     "use --train_iters instead"),
    (SWEEP_IMBALANCE, ["--runs_dir", "RUNS", "--bogus", "1"], "unknown option '--bogus'"),
    (SWEEP_NOISE, ["--runs_dir", "RUNS", "--settings", "uniform"], "is not TYPE:RATIO"),
    (SWEEP_NOISE, ["--runs_dir", "RUNS", "--settings", "pair:0.2"], "noise type 'pair'"),
    (SWEEP_NOISE, ["--runs_dir", "RUNS", "--", "--corruption_ratio", "0.1"],
     "sweep's setting list"),
])
def test_sweep_rejects_invalid_options(tmp_path, script, args, message):
    args = [str(tmp_path / arg) if arg in ("RUNS", "NOPE") else arg for arg in args]

    completed = run_sweep(script, *args)

    assert completed.returncode == 2
    assert completed.stdout == ""
    assert completed.stderr.startswith("error: ")
    assert message in completed.stderr
    assert len(completed.stderr.splitlines()) == 1
    assert not (tmp_path / "RUNS").exists()


@pytest.mark.parametrize("script", [SWEEP_IMBALANCE, SWEEP_NOISE])
def test_sweep_help_documents_budget(script):
    completed = run_sweep(script, "--help")

    assert completed.returncode == 0
    assert completed.stdout.startswith("Usage: scripts/sweep_")
    assert "--lr_milestones" in completed.stdout
    assert "--resume" in completed.stdout
