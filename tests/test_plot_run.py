"""scripts/plot_run.py on the files of real tiny main.py runs, run as a user would."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from conftest import REPO_ROOT

PLOT_SCRIPT = os.path.join(REPO_ROOT, "scripts", "plot_run.py")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MATPLOTLIB_REASON = "matplotlib is not installed; pip install -e '.[plots]' to test the figures"

# Three validations (iterations 1, 2, 3), so w(loss) has a first, middle and last curve.
RUN_FLAGS = ["--num_meta", "50", "--batch_size", "10", "--train_iters", "3",
             "--valid_step", "1", "--log_step", "3", "--lr_milestones", "2",
             "--device", "cpu"]
IMBALANCE_FLAGS = ["--imbalanced_factor", "10"]
# Balanced, so per_class_accuracy.png takes its bar-chart path.
NOISE_FLAGS = ["--corruption_type", "uniform", "--corruption_ratio", "0.4"]


def subprocess_env(tmp_path):
    # matplotlib writes its font cache into MPLCONFIGDIR; keep it under tmp_path.
    env = dict(os.environ, MPLCONFIGDIR=str(tmp_path / "mplconfig"), OMP_NUM_THREADS="1")
    return env


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_cifar10):
    """Finished tiny runs: imbalanced reweighting and baseline siblings, a noisy one."""
    root = tmp_path_factory.mktemp("plot_runs")
    layout = {
        "reweight": (root / "imbalanced" / "reweight", IMBALANCE_FLAGS),
        "baseline": (root / "imbalanced" / "baseline", [*IMBALANCE_FLAGS, "--baseline"]),
        "noisy": (root / "noisy" / "reweight", NOISE_FLAGS),
    }
    env = subprocess_env(root)
    processes = {}
    for name, (output_dir, flags) in layout.items():
        command = [sys.executable, "main.py", "--data_root", tiny_cifar10,
                   "--output_dir", str(output_dir), *RUN_FLAGS, *flags]
        processes[name] = subprocess.Popen(command, cwd=REPO_ROOT, env=env, text=True,
                                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for name, process in processes.items():
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, f"main.py run {name!r} failed:\n{output}"
    return {name: output_dir for name, (output_dir, _) in layout.items()}


def plot(run_dir, *flags, env_root):
    return subprocess.run([sys.executable, PLOT_SCRIPT, str(run_dir), *flags],
                          cwd=REPO_ROOT, env=subprocess_env(env_root), text=True,
                          capture_output=True, timeout=300)


def files_under(root):
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            found[path] = os.path.getmtime(path)
    return found


def assert_valid_png(path):
    assert os.path.getsize(path) > 0, f"{path} is empty"
    with open(path, "rb") as handle:
        assert handle.read(8) == PNG_SIGNATURE, f"{path} lacks the PNG signature"
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width > 300
        assert image.height > 300
        image.verify()


def copy_run(run_dir, destination):
    shutil.copytree(run_dir, destination,
                    ignore=shutil.ignore_patterns("*.png"))
    return destination


def test_reweighting_run_figures(runs, tmp_path):
    pytest.importorskip("matplotlib", reason=MATPLOTLIB_REASON)
    run_dir = runs["reweight"]
    before = files_under(run_dir.parent.parent)

    result = plot(run_dir, env_root=tmp_path)

    assert result.returncode == 0, result.stderr
    names = ["weight_function.png", "test_accuracy.png", "per_class_accuracy.png"]
    assert result.stdout.splitlines() == [
        f"partner run (baseline, found beside RUN_DIR): {runs['baseline']}",
        *[str(run_dir / name) for name in names],
    ]
    for name in names:
        assert_valid_png(run_dir / name)
    assert not (run_dir / "weight_distribution.png").exists()

    after = files_under(run_dir.parent.parent)
    changed = sorted(path for path in after if before.get(path) != after[path])
    assert changed == sorted(str(run_dir / name) for name in names)


def test_baseline_run_figures(runs, tmp_path):
    pytest.importorskip("matplotlib", reason=MATPLOTLIB_REASON)
    run_dir = runs["baseline"]

    result = plot(run_dir, env_root=tmp_path)

    assert result.returncode == 0, result.stderr
    names = ["test_accuracy.png", "per_class_accuracy.png"]
    assert result.stdout.splitlines() == [
        f"partner run (reweighting, found beside RUN_DIR): {runs['reweight']}",
        "skipped weight_function.png: a baseline run has no weighting net",
        *[str(run_dir / name) for name in names],
    ]
    for name in names:
        assert_valid_png(run_dir / name)
    assert not (run_dir / "weight_function.png").exists()


def test_noisy_run_figures(runs, tmp_path):
    pytest.importorskip("matplotlib", reason=MATPLOTLIB_REASON)
    run_dir = runs["noisy"]

    result = plot(run_dir, env_root=tmp_path)

    assert result.returncode == 0, result.stderr
    names = ["weight_function.png", "test_accuracy.png", "per_class_accuracy.png",
             "weight_distribution.png"]
    assert result.stdout.splitlines() == [
        f"no baseline run with the same setting found beside {run_dir}; pass one with "
        f"--baseline_dir",
        *[str(run_dir / name) for name in names],
    ]
    for name in names:
        assert_valid_png(run_dir / name)
    results = json.loads((run_dir / "results.json").read_text())
    assert len(set(results["num_per_class"].values())) == 1


def test_noisy_baseline_skips_weights(runs, tmp_path):
    pytest.importorskip("matplotlib", reason=MATPLOTLIB_REASON)
    # The files of a noisy baseline run: a noisy run's files without weights.jsonl and
    # with method "baseline" in results.json.
    run_dir = copy_run(runs["noisy"], tmp_path / "noisy" / "baseline")
    os.remove(run_dir / "weights.jsonl")
    results = json.loads((run_dir / "results.json").read_text())
    results["method"] = "baseline"
    (run_dir / "results.json").write_text(json.dumps(results))

    result = plot(run_dir, env_root=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == [
        "skipped weight_function.png: a baseline run has no weighting net",
        "skipped weight_distribution.png: a baseline run records no sample weights",
        str(run_dir / "test_accuracy.png"),
        str(run_dir / "per_class_accuracy.png"),
    ]
    assert sorted(name for name in os.listdir(run_dir) if name.endswith(".png")) == [
        "per_class_accuracy.png", "test_accuracy.png"]


def test_explicit_baseline_dir(runs, tmp_path):
    pytest.importorskip("matplotlib", reason=MATPLOTLIB_REASON)
    run_dir = copy_run(runs["reweight"], tmp_path / "alone" / "reweight")

    result = plot(run_dir, "--baseline_dir", str(runs["baseline"]), env_root=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        f"partner run (baseline, from --baseline_dir): {runs['baseline']}")
    assert result.stderr == ""
    assert_valid_png(run_dir / "test_accuracy.png")


def test_partner_with_other_seed(runs, tmp_path):
    pytest.importorskip("matplotlib", reason=MATPLOTLIB_REASON)
    run_dir = copy_run(runs["reweight"], tmp_path / "runs" / "reweight")
    other_seed = copy_run(runs["baseline"], tmp_path / "runs" / "baseline_seed2")
    results_path = other_seed / "results.json"
    results = json.loads(results_path.read_text())
    results["seed"] = 2
    results_path.write_text(json.dumps(results))

    automatic = plot(run_dir, env_root=tmp_path)
    explicit = plot(run_dir, "--baseline_dir", str(other_seed), env_root=tmp_path)

    assert automatic.returncode == 0, automatic.stderr
    assert automatic.stdout.splitlines()[0].startswith("no baseline run with the same setting")
    assert explicit.returncode == 0, explicit.stderr
    assert explicit.stdout.splitlines()[0] == (
        f"partner run (baseline, from --baseline_dir): {other_seed}")
    assert explicit.stderr.startswith(f"warning: --baseline_dir {other_seed} has another "
                                      f"setting (seed 1 vs 2)")


@pytest.mark.parametrize("run_name, flags, message", [
    ("reweight", ["--reweight_dir", "PARTNER"], "is itself a reweighting run; pass its "
                                                "partner with --baseline_dir"),
    ("baseline", ["--baseline_dir", "PARTNER"], "is itself a baseline run; pass its "
                                                "partner with --reweight_dir"),
    ("reweight", ["--baseline_dir", "NOISY"], "contains a reweighting run; pass the output "
                                              "directory of a baseline run"),
])
def test_wrong_partner_exits_2(runs, tmp_path, run_name, flags, message):
    partners = {"PARTNER": str(runs["baseline"] if run_name == "reweight"
                               else runs["reweight"]),
                "NOISY": str(runs["noisy"])}
    flags = [partners.get(flag, flag) for flag in flags]

    result = plot(runs[run_name], *flags, env_root=tmp_path)

    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("run_name, missing", [
    ("reweight", "config.json"),
    ("reweight", "results.json"),
    ("reweight", "metrics.jsonl"),
    ("reweight", "weights.jsonl"),
    ("baseline", "results.json"),
])
def test_missing_file_exits_2(runs, tmp_path, run_name, missing):
    run_dir = copy_run(runs[run_name], tmp_path / "run")
    os.remove(run_dir / missing)

    result = plot(run_dir, env_root=tmp_path)

    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {missing} not found in {run_dir}")
    assert len(result.stderr.splitlines()) == 1
    assert result.stdout == ""
    assert sorted(os.listdir(run_dir)) == sorted(
        name for name in os.listdir(runs[run_name])
        if name != missing and not name.endswith(".png"))


def test_missing_run_dir_exits_2(tmp_path):
    result = plot(tmp_path / "absent", env_root=tmp_path)

    assert result.returncode == 2
    assert result.stderr == (f"error: run directory {str(tmp_path / 'absent')!r} not found; "
                             f"pass the --output_dir of a run\n")


def test_corrupt_metrics_line_exits_2(runs, tmp_path):
    run_dir = copy_run(runs["baseline"], tmp_path / "run")
    with open(run_dir / "metrics.jsonl", "a") as handle:
        handle.write('{"iteration": 4, "test_acc"\n')

    result = plot(run_dir, env_root=tmp_path)

    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {run_dir / 'metrics.jsonl'} line 4 is not "
                                    f"valid JSON")
    assert "Traceback" not in result.stderr


def test_without_matplotlib_exits_2(runs, tmp_path):
    # A None entry in sys.modules makes `import matplotlib` raise ImportError, as on a
    # machine where it is not installed.
    code = ("import runpy, sys\n"
            "sys.modules['matplotlib'] = None\n"
            f"sys.argv = ['plot_run.py', {str(runs['baseline'])!r}]\n"
            f"runpy.run_path({PLOT_SCRIPT!r}, run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT,
                            env=subprocess_env(tmp_path), text=True, capture_output=True,
                            timeout=120)

    assert result.returncode == 2
    assert result.stderr == ("error: plot_run.py needs matplotlib, which is not installed; "
                             "run pip install -e '.[plots]' (or pip install matplotlib)\n")
