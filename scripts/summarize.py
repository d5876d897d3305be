"""Summarize a sweep: mean and standard deviation over seeds of each group of runs.

    python scripts/summarize.py RUNS_DIR
    python scripts/summarize.py RUNS_DIR --csv summary.csv

Reads every results.json under RUNS_DIR, recursively. The runs are grouped by dataset,
setting (imbalance factor, noise type and ratio), training budget (train_iters) and
method (reweighting with its hypergradient, or baseline). Each group becomes one
Markdown row with the number of seeds n and mean ± standard deviation of the final and
the best test accuracy, so runs with different budgets are never averaged together.
Beside each row are the published accuracies from scripts/reference_results.json that
match the group. The same rows go to a CSV file (default RUNS_DIR/summary.csv).
"""

import argparse
import csv
import json
import math
import os
import statistics
import sys
from collections import defaultdict

DEFAULT_REFERENCES = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                  "reference_results.json")
METHODS = ("reweighting", "baseline")

# Fields of results.json that the summary reads, with the types each may have.
NUMBER = (int, float)
RESULT_FIELDS = {
    "method": (str,),
    "dataset": (str,),
    "imbalanced_factor": NUMBER + (type(None),),
    "corruption_type": (str, type(None)),
    "corruption_ratio": NUMBER + (type(None),),
    "hypergrad": (str, type(None)),
    "seed": (int,),
    "train_iters": (int,),
    "final_test_acc": NUMBER,
    "best_test_acc": NUMBER,
}

CSV_COLUMNS = (
    "dataset", "setting", "imbalanced_factor", "corruption_type", "corruption_ratio",
    "train_iters", "method", "hypergrad", "n", "seeds", "final_acc_mean", "final_acc_std",
    "best_acc_mean", "best_acc_std", "reference",
)


class SummaryError(Exception):
    """A problem that stops the summary. main() prints it in one line and exits with 2."""


class InvalidRun(ValueError):
    """A results.json that cannot be read or lacks a field. The run is skipped."""


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Standard deviations are sample standard deviations (n - 1 in the "
               "denominator). A group with a single seed has none: the table shows '-' "
               "and the CSV leaves the *_std cell empty. 'final' is the test accuracy "
               "after the last iteration; 'best' is the highest test accuracy over the "
               "validations, so it is selected on the test set.",
    )
    parser.add_argument("runs_dir", metavar="RUNS_DIR",
                        help="folder searched recursively for results.json files")
    parser.add_argument("--csv", metavar="PATH", default=None,
                        help="CSV file to write (default: RUNS_DIR/summary.csv)")
    parser.add_argument("--references", metavar="PATH", default=DEFAULT_REFERENCES,
                        help="JSON file of published results (default: %(default)s)")
    return parser


# ---------------------------------------------------------------------------
# Reading runs
# ---------------------------------------------------------------------------


def find_results(runs_dir):
    paths = []
    for folder, subfolders, files in os.walk(runs_dir):
        subfolders.sort()
        if "results.json" in files:
            paths.append(os.path.join(folder, "results.json"))
    return sorted(paths)


def load_run(path):
    """Return the RESULT_FIELDS of one results.json, or raise InvalidRun."""
    try:
        with open(path) as handle:
            results = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidRun(f"cannot be read as JSON ({error})") from None
    if not isinstance(results, dict):
        raise InvalidRun("does not contain a JSON object")

    run = {}
    for name, types in RESULT_FIELDS.items():
        if name not in results:
            raise InvalidRun(f"field {name!r} is missing")
        value = results[name]
        # bool is a subclass of int, but true/false is never a valid count or accuracy.
        if isinstance(value, bool) or not isinstance(value, types):
            raise InvalidRun(f"field {name!r} has the invalid value {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidRun(f"field {name!r} is {value!r}, not a finite number")
        run[name] = value
    if run["method"] not in METHODS:
        raise InvalidRun(f"field 'method' is {run['method']!r}, not one of {METHODS}")
    return run


def load_runs(paths):
    """Return (path, run) pairs of the valid files and report each invalid one on stderr."""
    runs = []
    for path in paths:
        try:
            runs.append((path, load_run(path)))
        except InvalidRun as error:
            print(f"warning: skipped {path}: {error}", file=sys.stderr)
    return runs


# ---------------------------------------------------------------------------
# Grouping
# ---------------------------------------------------------------------------


def group_key(run):
    factor = run["imbalanced_factor"]
    ratio = run["corruption_ratio"]
    return (
        run["dataset"],
        None if factor is None else float(factor),
        run["corruption_type"],
        None if ratio is None else float(ratio),
        run["train_iters"],
        run["method"],
        run["hypergrad"] if run["method"] == "reweighting" else None,
    )


def sort_key(key):
    dataset, factor, corruption_type, ratio, train_iters, method, hypergrad = key
    # Imbalance rows come first, largest factor first, then noise rows by type and ratio.
    return (dataset, corruption_type or "", ratio or 0.0, -(factor or 0.0), train_iters,
            METHODS.index(method), hypergrad or "")


def mean_and_std(values):
    """Return (mean, sample standard deviation). The deviation is None for one value."""
    std = statistics.stdev(values) if len(values) > 1 else None
    return statistics.fmean(values), std


def summarize(runs):
    """Return one row (a dict) per group of runs, in table order."""
    groups = defaultdict(list)
    for path, run in runs:
        groups[group_key(run)].append((path, run))

    rows = []
    for key in sorted(groups, key=sort_key):
        members = groups[key]
        warn_repeated_seeds(members)
        dataset, factor, corruption_type, ratio, train_iters, method, hypergrad = key
        final_mean, final_std = mean_and_std([run["final_test_acc"] for _, run in members])
        best_mean, best_std = mean_and_std([run["best_test_acc"] for _, run in members])
        rows.append({
            "dataset": dataset, "imbalanced_factor": factor,
            "corruption_type": corruption_type, "corruption_ratio": ratio,
            "train_iters": train_iters, "method": method, "hypergrad": hypergrad,
            "n": len(members), "seeds": sorted(run["seed"] for _, run in members),
            "final_acc_mean": final_mean, "final_acc_std": final_std,
            "best_acc_mean": best_mean, "best_acc_std": best_std,
        })
    return rows


def warn_repeated_seeds(members):
    # Two runs of one group with the same seed differ in a flag that results.json does
    # not record (for example --meta_lr), so their mean is not a mean over seeds.
    paths_by_seed = defaultdict(list)
    for path, run in members:
        paths_by_seed[run["seed"]].append(path)
    for seed, paths in sorted(paths_by_seed.items()):
        if len(paths) > 1:
            print(f"warning: seed {seed} appears {len(paths)} times in one group "
                  f"({', '.join(paths)}); those runs differ in flags the summary does not "
                  f"group by, so summarize their folders separately", file=sys.stderr)


# ---------------------------------------------------------------------------
# Published reference values
# ---------------------------------------------------------------------------


def load_references(path):
    """Return (entries, sources) of the reference file, or raise SummaryError."""
    try:
        with open(path) as handle:
            document = json.load(handle)
        entries, sources = document["entries"], document["sources"]
        for entry in entries:
            if entry["source"] not in sources:
                raise KeyError(entry["source"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise SummaryError(f"cannot read the reference file {path!r} ({error!r}); restore "
                           f"scripts/reference_results.json or pass --references") from None
    return entries, sources


def matching_references(row, entries):
    def same_number(a, b):
        return (a is None and b is None) or (
            a is not None and b is not None and math.isclose(a, b))

    return [
        entry for entry in entries
        if entry["dataset"] == row["dataset"]
        and same_number(entry["imbalanced_factor"], row["imbalanced_factor"])
        and entry["corruption_type"] == row["corruption_type"]
        and same_number(entry["corruption_ratio"], row["corruption_ratio"])
        and entry["method"] == row["method"]
        and entry["hypergrad"] in (None, row["hypergrad"])
    ]


def reference_text(entries):
    return "; ".join(f"{entry['test_acc']:.2f} {entry['label']}" for entry in entries)


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------


def setting_label(row):
    parts = []
    if row["imbalanced_factor"] is not None:
        parts.append(f"IF {row['imbalanced_factor']:g}")
    if row["corruption_type"] is not None:
        parts.append(f"{row['corruption_type']} {row['corruption_ratio']:g}")
    return " + ".join(parts) or "balanced"


def method_label(row):
    if row["method"] == "reweighting" and row["hypergrad"]:
        return f"reweighting ({row['hypergrad']})"
    return row["method"]


def format_mean_std(mean, std):
    return f"{mean:.2f} ± {'-' if std is None else f'{std:.2f}'}"


def markdown_table(rows):
    header = ("dataset", "setting", "iters", "method", "n", "final acc (%)",
              "best acc (%)", "published acc (%)")
    lines = [header]
    for row in rows:
        lines.append((
            row["dataset"], setting_label(row), str(row["train_iters"]), method_label(row),
            str(row["n"]), format_mean_std(row["final_acc_mean"], row["final_acc_std"]),
            format_mean_std(row["best_acc_mean"], row["best_acc_std"]),
            reference_text(row["references"]) or "-",
        ))
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]

    def render(cells):
        padded = [cell.ljust(width) for cell, width in zip(cells, widths)]
        return "| " + " | ".join(padded) + " |"

    rendered = [render(lines[0]), render(["-" * width for width in widths])]
    rendered += [render(line) for line in lines[1:]]
    return "\n".join(rendered)


def source_notes(rows, sources):
    used = sorted({entry["source"] for row in rows for entry in row["references"]})
    return [f"[{key}] {sources[key]['citation']}" for key in used]


def csv_value(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".")
    return value


def write_csv(path, rows):
    try:
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_COLUMNS)
            for row in rows:
                values = dict(row, setting=setting_label(row),
                              seeds=" ".join(str(seed) for seed in row["seeds"]),
                              reference=reference_text(row["references"]))
                writer.writerow([csv_value(values[column]) for column in CSV_COLUMNS])
    except OSError as error:
        raise SummaryError(f"cannot write the CSV file {path!r} ({error.strerror}); pass "
                           f"--csv with a writable path") from None


def run(args):
    if not os.path.isdir(args.runs_dir):
        raise SummaryError(f"RUNS_DIR {args.runs_dir!r} is not a directory; pass the "
                           f"--runs_dir folder of a sweep")
    paths = find_results(args.runs_dir)
    if not paths:
        raise SummaryError(f"no results.json found under {args.runs_dir!r}; pass the folder "
                           f"of finished runs")
    runs = load_runs(paths)
    if not runs:
        raise SummaryError(f"none of the {len(paths)} results.json files under "
                           f"{args.runs_dir!r} could be read; see the warnings above")
    entries, sources = load_references(args.references)

    rows = summarize(runs)
    for row in rows:
        row["references"] = matching_references(row, entries)
    csv_path = args.csv or os.path.join(args.runs_dir, "summary.csv")
    write_csv(csv_path, rows)

    print(markdown_table(rows))
    notes = source_notes(rows, sources)
    if notes:
        print("\nPublished values (top-1 test accuracy, %):")
        print("\n".join(notes))
    print(f"\n{len(runs)} runs in {len(rows)} groups; CSV written to {csv_path}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except SummaryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
