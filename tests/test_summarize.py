"""scripts/summarize.py on results.json files written by the tests."""

import csv
import importlib.util
import json
import os
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO_ROOT, "scripts", "summarize.py")
REFERENCE_FILE = os.path.join(REPO_ROOT, "scripts", "reference_results.json")

_spec = importlib.util.spec_from_file_location("summarize", SCRIPT)
summarize = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(summarize)


def write_result(runs_dir, name, **fields):
    """Write runs_dir/name/results.json: a cifar10 IF 100 darts run unless fields differ."""
    results = {
        "method": "reweighting", "dataset": "cifar10", "imbalanced_factor": 100.0,
        "corruption_type": None, "corruption_ratio": None, "hypergrad": "darts",
        "seed": 1, "train_iters": 100, "iterations": 100, "final_test_acc": 70.0,
        "best_test_acc": 71.0, "best_selected_on": "test set", "device": "cpu",
    }
    results.update(fields)
    folder = runs_dir / name
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(results))


def run_summary(capsys, *argv):
    code = summarize.main([str(arg) for arg in argv])
    output = capsys.readouterr()
    return code, output.out, output.err


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def table_rows(stdout):
    """Return the data rows of the Markdown table as lists of stripped cells."""
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def test_summary_mean_std_over_seeds(tmp_path, capsys):
    runs = tmp_path / "runs"
    write_result(runs, "s1", seed=1, final_test_acc=70.0, best_test_acc=71.0)
    write_result(runs, "s2", seed=2, final_test_acc=72.0, best_test_acc=75.0)
    write_result(runs, "s3", seed=3, final_test_acc=74.0, best_test_acc=73.0)

    code, stdout, stderr = run_summary(capsys, runs)

    assert code == 0
    assert stderr == ""
    rows = read_csv(runs / "summary.csv")
    assert len(rows) == 1
    assert rows[0]["n"] == "3"
    assert rows[0]["seeds"] == "1 2 3"
    assert rows[0]["final_acc_mean"] == "72"
    assert rows[0]["final_acc_std"] == "2"
    assert rows[0]["best_acc_mean"] == "73"
    assert rows[0]["best_acc_std"] == "2"
    assert table_rows(stdout)[0][:7] == [
        "cifar10", "IF 100", "100", "reweighting (darts)", "3", "72.00 ± 2.00",
        "73.00 ± 2.00"]


def test_summary_std_is_sample_std(tmp_path, capsys):
    runs = tmp_path / "runs"
    write_result(runs, "s1", seed=1, final_test_acc=70.5)
    write_result(runs, "s2", seed=2, final_test_acc=71.0)

    code, stdout, _ = run_summary(capsys, runs)

    assert code == 0
    row = read_csv(runs / "summary.csv")[0]
    assert row["final_acc_mean"] == "70.75"
    # stdev([70.5, 71.0]) with n - 1 = 1 is 0.25 * sqrt(2) = 0.353553...
    assert row["final_acc_std"] == "0.3536"
    assert table_rows(stdout)[0][5] == "70.75 ± 0.35"


def test_summary_single_seed_std_dash(tmp_path, capsys):
    runs = tmp_path / "runs"
    write_result(runs, "s1", final_test_acc=60.0, best_test_acc=61.5)

    code, stdout, _ = run_summary(capsys, runs)

    assert code == 0
    cells = table_rows(stdout)[0]
    assert cells[4] == "1"
    assert cells[5] == "60.00 ± -"
    assert cells[6] == "61.50 ± -"
    row = read_csv(runs / "summary.csv")[0]
    assert row["final_acc_std"] == ""
    assert row["best_acc_std"] == ""


def test_summary_groups_by_budget(tmp_path, capsys):
    runs = tmp_path / "runs"
    write_result(runs, "short1", seed=1, train_iters=100, final_test_acc=50.0)
    write_result(runs, "short2", seed=2, train_iters=100, final_test_acc=52.0)
    write_result(runs, "long1", seed=1, train_iters=10000, final_test_acc=80.0)

    code, stdout, _ = run_summary(capsys, runs)

    assert code == 0
    rows = read_csv(runs / "summary.csv")
    assert [(row["train_iters"], row["n"], row["final_acc_mean"]) for row in rows] == [
        ("100", "2", "51"), ("10000", "1", "80")]
    assert [cells[2] for cells in table_rows(stdout)] == ["100", "10000"]


def test_summary_groups_by_setting_and_method(tmp_path, capsys):
    runs = tmp_path / "runs"
    write_result(runs, "if100_darts", imbalanced_factor=100.0)
    # An int factor from another writer groups with the float 100.0.
    write_result(runs, "if100_darts_int", imbalanced_factor=100, seed=2)
    write_result(runs, "if100_neumann", hypergrad="neumann")
    write_result(runs, "if100_baseline", method="baseline", hypergrad=None)
    write_result(runs, "if200", imbalanced_factor=200.0)
    write_result(runs, "uniform04", imbalanced_factor=None, corruption_type="uniform",
                 corruption_ratio=0.4)
    write_result(runs, "uniform02", imbalanced_factor=None, corruption_type="uniform",
                 corruption_ratio=0.2)
    write_result(runs, "flip1_04", imbalanced_factor=None, corruption_type="flip1",
                 corruption_ratio=0.4)
    write_result(runs, "cifar100", dataset="cifar100")

    code, stdout, _ = run_summary(capsys, runs)

    assert code == 0
    keys = [tuple(cells[:5]) for cells in table_rows(stdout)]
    assert keys == [
        ("cifar10", "IF 200", "100", "reweighting (darts)", "1"),
        ("cifar10", "IF 100", "100", "reweighting (darts)", "2"),
        ("cifar10", "IF 100", "100", "reweighting (neumann)", "1"),
        ("cifar10", "IF 100", "100", "baseline", "1"),
        ("cifar10", "flip1 0.4", "100", "reweighting (darts)", "1"),
        ("cifar10", "uniform 0.2", "100", "reweighting (darts)", "1"),
        ("cifar10", "uniform 0.4", "100", "reweighting (darts)", "1"),
        ("cifar100", "IF 100", "100", "reweighting (darts)", "1"),
    ]


def test_summary_shows_reference_values(tmp_path, capsys):
    runs = tmp_path / "runs"
    write_result(runs, "reweight", imbalanced_factor=100.0)
    write_result(runs, "baseline", method="baseline", hypergrad=None, imbalanced_factor=20.0)
    write_result(runs, "neumann", hypergrad="neumann", imbalanced_factor=100.0)
    write_result(runs, "noise", imbalanced_factor=None, corruption_type="uniform",
                 corruption_ratio=0.4)

    code, stdout, _ = run_summary(capsys, runs)

    assert code == 0
    published = {(cells[1], cells[3]): cells[7] for cells in table_rows(stdout)}
    assert published[("IF 100", "reweighting (darts)")] == (
        "78.11 Betty FD-1; 75.21 Betty MW-Net; 73.57 CMW-Net MW-Net")
    # Betty's finite-difference value belongs to darts only.
    assert published[("IF 100", "reweighting (neumann)")] == (
        "75.21 Betty MW-Net; 73.57 CMW-Net MW-Net")
    assert published[("IF 20", "baseline")] == "82.23 CMW-Net CE"
    assert published[("uniform 0.4", "reweighting (darts)")] == "-"
    assert "arXiv 2207.02849" in stdout
    assert "arXiv 2202.05613" in stdout
    rows = read_csv(runs / "summary.csv")
    assert rows[-1]["reference"] == ""
    assert "82.23 CMW-Net CE" in [row["reference"] for row in rows]


def test_summary_csv_path_option(tmp_path, capsys):
    runs = tmp_path / "runs"
    write_result(runs, "s1")
    csv_path = tmp_path / "elsewhere.csv"

    code, stdout, _ = run_summary(capsys, runs, "--csv", csv_path)

    assert code == 0
    assert csv_path.is_file()
    assert not (runs / "summary.csv").exists()
    assert str(csv_path) in stdout
    assert list(read_csv(csv_path)[0]) == list(summarize.CSV_COLUMNS)


def test_summary_skips_malformed_results(tmp_path, capsys):
    runs = tmp_path / "runs"
    write_result(runs, "good", final_test_acc=66.0)
    (runs / "broken").mkdir()
    (runs / "broken" / "results.json").write_text("{not json")
    write_result(runs, "no_accuracy", final_test_acc=None)
    (runs / "nested" / "deeper").mkdir(parents=True)
    (runs / "nested" / "deeper" / "results.json").write_text(json.dumps({"method": "x"}))

    code, stdout, stderr = run_summary(capsys, runs)

    assert code == 0
    assert str(runs / "broken" / "results.json") in stderr
    assert str(runs / "no_accuracy" / "results.json") in stderr
    assert str(runs / "nested" / "deeper" / "results.json") in stderr
    assert len(stderr.splitlines()) == 3
    rows = read_csv(runs / "summary.csv")
    assert len(rows) == 1
    assert rows[0]["final_acc_mean"] == "66"


def test_summary_warns_on_repeated_seed(tmp_path, capsys):
    runs = tmp_path / "runs"
    write_result(runs / "lr_a", "s1", seed=1)
    write_result(runs / "lr_b", "s1", seed=1)

    code, _, stderr = run_summary(capsys, runs)

    assert code == 0
    assert "seed 1 appears 2 times" in stderr


@pytest.mark.parametrize("make_runs_dir, message", [
    (lambda path: path / "missing", "is not a directory"),
    (lambda path: path, "no results.json found"),
])
def test_summary_rejects_missing_or_empty_dir(tmp_path, make_runs_dir, message):
    runs_dir = make_runs_dir(tmp_path)

    completed = subprocess.run([sys.executable, SCRIPT, str(runs_dir)], capture_output=True,
                               text=True, timeout=60)

    assert completed.returncode == 2
    assert completed.stdout == ""
    assert completed.stderr.startswith("error: ")
    assert message in completed.stderr
    assert len(completed.stderr.splitlines()) == 1


def test_summary_rejects_only_malformed(tmp_path, capsys):
    runs = tmp_path / "runs"
    (runs / "broken").mkdir(parents=True)
    (runs / "broken" / "results.json").write_text("[]")

    code, _, stderr = run_summary(capsys, runs)

    assert code == 2
    assert "does not contain a JSON object" in stderr
    assert stderr.splitlines()[-1].startswith("error: none of the 1 results.json")
    assert not (runs / "summary.csv").exists()


def test_reference_file_names_sources():
    with open(REFERENCE_FILE) as handle:
        document = json.load(handle)
    sources, entries = document["sources"], document["entries"]

    for key, source in sources.items():
        assert source["citation"], key
        assert source["read_in"], key
    for entry in entries:
        assert entry["source"] in sources, entry
        assert entry["method"] in summarize.METHODS, entry
        if "test_error" in entry:
            assert entry["test_acc"] == round(100 - entry["test_error"], 2), entry

    covered = {(entry["dataset"], entry["imbalanced_factor"], entry["label"])
               for entry in entries}
    for dataset in ("cifar10", "cifar100"):
        for factor in (200, 100, 50, 20, 10, 1):
            assert (dataset, factor, "CMW-Net CE") in covered
            assert (dataset, factor, "CMW-Net MW-Net") in covered
    for factor in (200, 100, 50):
        assert ("cifar10", factor, "Betty FD-1") in covered
        assert ("cifar10", factor, "Betty MW-Net") in covered
