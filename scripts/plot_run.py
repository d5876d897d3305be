"""Draw PNG figures of one run from the files main.py wrote into its output directory.

    python scripts/plot_run.py RUN_DIR
    python scripts/plot_run.py RUN_DIR --baseline_dir BASELINE_RUN_DIR
    python scripts/plot_run.py BASELINE_RUN_DIR --reweight_dir REWEIGHT_RUN_DIR

Figures, all written into RUN_DIR:
    weight_function.png      w(loss) at the first, middle and last validation
                             (reweighting runs only)
    test_accuracy.png        test accuracy against iteration, beside the partner run
    per_class_accuracy.png   final per-class test accuracy against training images per class
    weight_distribution.png  weights of clean and corrupted training samples at the last
                             validation, and their means over training (noisy reweighting runs)

The partner run is the other method (reweighting or baseline) on the same setting. Without
--baseline_dir or --reweight_dir, the script looks for it among RUN_DIR's sibling folders:
one whose results.json has the same dataset, imbalanced_factor, corruption_type,
corruption_ratio, seed and train_iters.

Needs matplotlib: pip install -e '.[plots]' (or pip install matplotlib).
"""

import argparse
import json
import os
import sys

FIGURE_DPI = 150

# matplotlib.pyplot and matplotlib.ticker, imported by import_matplotlib() because
# matplotlib is an optional dependency.
plt = ticker = None

# results.json fields that must agree for two runs to share one setting.
SETTING_KEYS = ("dataset", "imbalanced_factor", "corruption_type", "corruption_ratio",
                "seed", "train_iters")
RESULTS_KEYS = ("method", *SETTING_KEYS, "per_class_acc", "num_per_class")
METRICS_KEYS = ("iteration", "test_acc")
WEIGHTS_KEYS = ("iteration", "loss_grid", "weights")
NOISE_KEYS = ("clean_count", "clean_mean_weight", "clean_histogram", "corrupted_count",
              "corrupted_mean_weight", "corrupted_histogram", "histogram_edges")

METHOD_LABELS = {"reweighting": "Meta-Weight-Net", "baseline": "cross-entropy baseline"}
OTHER_METHOD = {"reweighting": "baseline", "baseline": "reweighting"}


class PlotError(Exception):
    """A run folder or option that cannot be plotted. main() prints it as one line."""


# ---------------------------------------------------------------------------
# Reading a run
# ---------------------------------------------------------------------------


class Run:
    """The files of one run: config.json, metrics.jsonl, results.json, weights.jsonl."""

    def __init__(self, path, config, metrics, results, weights):
        self.path = path
        self.config = config
        self.metrics = metrics
        self.results = results
        self.weights = weights

    @property
    def method(self):
        return self.results["method"]

    @property
    def noisy(self):
        return self.config["args"].get("corruption_type") is not None


def read_json(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise PlotError(f"{path} is not valid JSON ({error}); rerun main.py or restore "
                        f"the file") from None


def read_jsonl(path):
    rows = []
    with open(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise PlotError(f"{path} line {number} is not valid JSON ({error}); "
                                f"rerun main.py or restore the file") from None
    return rows


def require_file(run_dir, name, reason):
    path = os.path.join(run_dir, name)
    if not os.path.isfile(path):
        raise PlotError(f"{name} not found in {run_dir}; {reason}")
    return path


def require_keys(obj, keys, where):
    if not isinstance(obj, dict):
        raise PlotError(f"{where} is not a JSON object; rerun main.py or restore the file")
    missing = [key for key in keys if key not in obj]
    if missing:
        raise PlotError(f"{where} is missing {', '.join(missing)}; it was not written by this "
                        f"version of main.py")


def load_run(run_dir):
    """Read the files of the run in run_dir and check their fields.

    Raises PlotError that names the missing or invalid file.
    """
    if not os.path.isdir(run_dir):
        raise PlotError(f"run directory {run_dir!r} not found; pass the --output_dir of a run")
    unfinished = "the run may not have finished; plot it once main.py has ended"

    config_path = require_file(run_dir, "config.json", "pass the --output_dir of a run")
    config = read_json(config_path)
    require_keys(config, ("args",), config_path)

    results_path = require_file(run_dir, "results.json", unfinished)
    results = read_json(results_path)
    require_keys(results, RESULTS_KEYS, results_path)
    if results["method"] not in OTHER_METHOD:
        raise PlotError(f"{results_path} has method {results['method']!r}; expected "
                        f"'reweighting' or 'baseline'")

    metrics_path = require_file(run_dir, "metrics.jsonl", unfinished)
    metrics = read_jsonl(metrics_path)
    if not metrics:
        raise PlotError(f"{metrics_path} has no validation rows; {unfinished}")
    for number, row in enumerate(metrics, start=1):
        require_keys(row, METRICS_KEYS, f"{metrics_path} row {number}")

    weights = []
    if results["method"] == "reweighting":
        weights_path = require_file(run_dir, "weights.jsonl",
                                    "a reweighting run writes it at every validation, so "
                                    "rerun it with this version of main.py")
        weights = read_jsonl(weights_path)
        if not weights:
            raise PlotError(f"{weights_path} has no validation rows; {unfinished}")
        for number, row in enumerate(weights, start=1):
            require_keys(row, WEIGHTS_KEYS, f"{weights_path} row {number}")
    return Run(run_dir, config, metrics, results, weights)


# ---------------------------------------------------------------------------
# Finding the partner run
# ---------------------------------------------------------------------------


def find_partner(run, baseline_dir=None, reweight_dir=None):
    """Return (partner Run or None, message for the user)."""
    partner_method = OTHER_METHOD[run.method]
    if baseline_dir is not None:
        return load_explicit_partner(run, "baseline", baseline_dir)
    if reweight_dir is not None:
        return load_explicit_partner(run, "reweighting", reweight_dir)

    parent = os.path.dirname(os.path.abspath(run.path))
    own = os.path.realpath(run.path)
    candidates = []
    for name in sorted(os.listdir(parent)):
        folder = os.path.join(parent, name)
        if os.path.realpath(folder) == own:
            continue
        results_path = os.path.join(folder, "results.json")
        metrics_path = os.path.join(folder, "metrics.jsonl")
        if not (os.path.isfile(results_path) and os.path.isfile(metrics_path)):
            continue
        try:
            results = read_json(results_path)
        except (PlotError, OSError):
            continue
        if not isinstance(results, dict) or results.get("method") != partner_method:
            continue
        if all(results.get(key) == run.results[key] for key in SETTING_KEYS):
            candidates.append(folder)

    if not candidates:
        return None, (f"no {partner_method} run with the same setting found beside "
                      f"{run.path}; pass one with --{partner_option(partner_method)}")
    # Several matches (for example a rerun): take the most recently finished one.
    chosen = max(candidates, key=lambda folder: os.path.getmtime(
        os.path.join(folder, "results.json")))
    message = f"partner run ({partner_method}, found beside RUN_DIR): {chosen}"
    if len(candidates) > 1:
        message += f" (newest of {len(candidates)} matching runs)"
    return load_run(chosen), message


def load_explicit_partner(run, partner_method, partner_dir):
    option = f"--{partner_option(partner_method)}"
    if run.method == partner_method:
        other = f"--{partner_option(OTHER_METHOD[partner_method])}"
        raise PlotError(f"RUN_DIR {run.path} is itself a {run.method} run; pass its "
                        f"partner with {other} instead of {option}")
    if os.path.realpath(partner_dir) == os.path.realpath(run.path):
        raise PlotError(f"{option} {partner_dir} is RUN_DIR itself; pass the other run")
    partner = load_run(partner_dir)
    if partner.method != partner_method:
        raise PlotError(f"{option} {partner_dir} contains a {partner.method} run; pass the "
                        f"output directory of a {partner_method} run")

    message = f"partner run ({partner_method}, from {option}): {partner_dir}"
    differing = [key for key in SETTING_KEYS if partner.results[key] != run.results[key]]
    if differing:
        details = ", ".join(f"{key} {run.results[key]} vs {partner.results[key]}"
                            for key in differing)
        print(f"warning: {option} {partner_dir} has another setting ({details}); "
              f"the comparison is not like for like", file=sys.stderr)
    return partner, message


def partner_option(method):
    return "baseline_dir" if method == "baseline" else "reweight_dir"


# ---------------------------------------------------------------------------
# Titles
# ---------------------------------------------------------------------------


def describe_setting(results, with_method=True):
    """Return e.g. 'cifar10, IF 100, 40% uniform noise, Meta-Weight-Net, seed 1'."""
    parts = [results["dataset"]]
    factor = results["imbalanced_factor"]
    parts.append(f"IF {factor:g}" if factor is not None else "balanced")
    if results["corruption_type"] is not None:
        ratio = results["corruption_ratio"]
        parts.append(f"{100 * ratio:g}% {results['corruption_type']} noise")
    else:
        parts.append("no label noise")
    if with_method:
        parts.append(METHOD_LABELS[results["method"]])
    parts.append(f"seed {results['seed']}")
    return ", ".join(parts)


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------


def save_figure(figure, run_dir, name):
    path = os.path.join(run_dir, name)
    figure.tight_layout()
    figure.savefig(path, dpi=FIGURE_DPI)
    plt.close(figure)
    return path


def iteration_locator():
    """Integer ticks at round steps (20, 25, 30 rather than 21, 24, 27)."""
    return ticker.MaxNLocator(integer=True, steps=[1, 2, 5, 10])


def plot_weight_function(run):
    """Plot w(loss) at the first, middle and last validation, one line each."""
    rows = run.weights
    picked = []
    for row in (rows[0], rows[len(rows) // 2], rows[-1]):
        if row not in picked:
            picked.append(row)

    figure, axes = plt.subplots(figsize=(6.4, 4.4))
    for row, style in zip(picked, ("--", "-.", "-")):
        axes.plot(row["loss_grid"], row["weights"], style, linewidth=2,
                  label=f"iteration {row['iteration']}")
    axes.set_xlabel("training loss L (cross-entropy, nats)")
    axes.set_ylabel("weight w(L)")
    axes.set_title(f"Learned weighting function\n{describe_setting(run.results)}",
                   fontsize=11)
    axes.grid(alpha=0.3)
    axes.legend(title="weighting net at")
    return save_figure(figure, run.path, "weight_function.png")


def plot_test_accuracy(run, partner):
    figure, axes = plt.subplots(figsize=(6.4, 4.4))
    runs = [run] if partner is None else sorted(
        [run, partner], key=lambda item: item.method != "reweighting")
    for item, marker in zip(runs, ("o", "s")):
        iterations = [row["iteration"] for row in item.metrics]
        accuracies = [row["test_acc"] for row in item.metrics]
        axes.plot(iterations, accuracies, marker=marker, linewidth=2,
                  label=f"{METHOD_LABELS[item.method]} (final {accuracies[-1]:.2f}%)")
    axes.set_xlabel("iteration (classifier updates)")
    axes.set_ylabel("test accuracy (%)")
    axes.xaxis.set_major_locator(iteration_locator())
    setting = describe_setting(run.results, with_method=partner is None)
    axes.set_title(f"Test accuracy\n{setting}", fontsize=11)
    axes.grid(alpha=0.3)
    axes.legend()
    return save_figure(figure, run.path, "test_accuracy.png")


def plot_per_class_accuracy(run, partner):
    """Plot the final per-class test accuracy against training images per class.

    When every class has the same count (a balanced run), a scatter plot would stack all
    points at one x, so the figure shows one bar per class instead.
    """
    names = list(run.results["per_class_acc"])
    counts = [run.results["num_per_class"][name] for name in names]
    runs = [run] if partner is None else sorted(
        [run, partner], key=lambda item: item.method != "reweighting")
    figure, axes = plt.subplots(figsize=(6.4, 4.6))

    if len(set(counts)) == 1:
        draw_per_class_bars(axes, runs, names, counts[0])
    else:
        draw_per_class_scatter(axes, run, runs, names, counts)

    axes.set_ylabel("final test accuracy of the class (%)")
    axes.set_ylim(-5, 105)
    iteration = run.metrics[-1]["iteration"]
    setting = describe_setting(run.results, with_method=partner is None)
    axes.set_title(f"Per-class test accuracy at iteration {iteration}\n{setting}",
                   fontsize=11)
    axes.legend()
    return save_figure(figure, run.path, "per_class_accuracy.png")


def draw_per_class_scatter(axes, run, runs, names, counts):
    for item, (marker, fill) in zip(runs, (("o", True), ("s", False))):
        accuracies = [item.results["per_class_acc"].get(name) for name in names]
        points = [(count, accuracy) for count, accuracy in zip(counts, accuracies)
                  if accuracy is not None]
        style = {} if fill else {"facecolors": "none", "edgecolors": "C1"}
        axes.scatter([count for count, _ in points], [accuracy for _, accuracy in points],
                     marker=marker, s=45, label=METHOD_LABELS[item.method], zorder=3,
                     **style)

    if len(names) <= 10:
        accuracies = [run.results["per_class_acc"][name] for name in names]
        for name, count, accuracy in zip(names, counts, accuracies):
            axes.annotate(name, (count, accuracy), textcoords="offset points",
                          xytext=(5, 4), fontsize=8)

    axes.set_xscale("log")
    # Label the ticks at 1, 2 and 5 times a power of ten as plain numbers ("20", "500",
    # not "2x10^1"). The other minor ticks stay unlabelled, so labels do not collide.
    axes.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(ticker.NullFormatter())
    axes.set_xlabel("training images of the class (log scale)")
    axes.grid(alpha=0.3, which="both")


def draw_per_class_bars(axes, runs, names, count):
    width = 0.8 / len(runs)
    for offset, item in enumerate(runs):
        accuracies = [item.results["per_class_acc"].get(name, 0.0) for name in names]
        positions = [index + (offset - (len(runs) - 1) / 2) * width
                     for index in range(len(names))]
        axes.bar(positions, accuracies, width=width, label=METHOD_LABELS[item.method],
                 zorder=3)

    if len(names) <= 10:
        axes.set_xticks(range(len(names)))
        axes.set_xticklabels(names, rotation=30, ha="right")
        axes.set_xlabel(f"class (each has {count} training images)")
    else:
        axes.set_xlabel(f"class label (each class has {count} training images)")
    axes.grid(alpha=0.3, axis="y")


def plot_weight_distribution(run):
    """Plot histograms of clean and corrupted sample weights, and their means over training."""
    rows = [row for row in run.weights if all(key in row for key in NOISE_KEYS)]
    last = rows[-1]
    edges = last["histogram_edges"]
    figure, (hist_axes, mean_axes) = plt.subplots(1, 2, figsize=(11, 4.4))

    for group, color in (("clean", "C0"), ("corrupted", "C3")):
        count = last[f"{group}_count"]
        if not count:
            continue
        fractions = [value / count for value in last[f"{group}_histogram"]]
        mean = last[f"{group}_mean_weight"]
        hist_axes.stairs(fractions, edges, fill=True, alpha=0.35, color=color)
        hist_axes.stairs(fractions, edges, color=color, linewidth=1.5,
                         label=f"{group} labels (n={count}, mean {mean:.3f})")
    hist_axes.set_xlim(edges[0], edges[-1])
    # Headroom above the highest bar for the legend.
    hist_axes.set_ylim(0, 1.3 * hist_axes.get_ylim()[1])
    hist_axes.set_xlabel("weight w(L) of a training sample")
    hist_axes.set_ylabel("fraction of the group's samples")
    hist_axes.set_title(f"Weights at iteration {last['iteration']}", fontsize=11)
    hist_axes.grid(alpha=0.3)
    hist_axes.legend()

    for group, color in (("clean", "C0"), ("corrupted", "C3")):
        points = [(row["iteration"], row[f"{group}_mean_weight"]) for row in rows
                  if row[f"{group}_mean_weight"] is not None]
        if points:
            mean_axes.plot([point[0] for point in points], [point[1] for point in points],
                           marker="o", color=color, linewidth=2, label=f"{group} labels")
    mean_axes.set_xlabel("iteration (classifier updates)")
    mean_axes.set_ylabel("mean weight w(L)")
    mean_axes.xaxis.set_major_locator(iteration_locator())
    mean_axes.set_title("Mean weight over training", fontsize=11)
    mean_axes.grid(alpha=0.3)
    mean_axes.legend()

    figure.suptitle(f"Weights of clean and corrupted training samples\n"
                    f"{describe_setting(run.results)}", fontsize=12)
    return save_figure(figure, run.path, "weight_distribution.png")


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def build_parser():
    parser = argparse.ArgumentParser(
        description="Draw PNG figures of a main.py run into its output directory.")
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help="the --output_dir of a finished main.py run")
    partner = parser.add_mutually_exclusive_group()
    partner.add_argument("--baseline_dir", metavar="DIR",
                         help="baseline run to compare a reweighting RUN_DIR with; default: "
                              "a sibling folder of RUN_DIR with the same setting")
    partner.add_argument("--reweight_dir", metavar="DIR",
                         help="reweighting run to compare a baseline RUN_DIR with; default: "
                              "a sibling folder of RUN_DIR with the same setting")
    return parser


def import_matplotlib():
    """Import pyplot with the Agg backend into the module globals.

    Returns False when matplotlib is not installed.
    """
    global plt, ticker
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker as ticker
    return True


def draw_figures(run, partner):
    """Draw every figure that fits the run. Returns (written paths, notes on skipped ones)."""
    written, notes = [], []
    if run.method == "reweighting":
        written.append(plot_weight_function(run))
    else:
        notes.append("skipped weight_function.png: a baseline run has no weighting net")
    written.append(plot_test_accuracy(run, partner))
    written.append(plot_per_class_accuracy(run, partner))
    if run.noisy and run.method == "baseline":
        notes.append("skipped weight_distribution.png: a baseline run records no "
                     "sample weights")
    elif run.noisy and not any(all(key in row for key in NOISE_KEYS) for row in run.weights):
        notes.append("skipped weight_distribution.png: weights.jsonl has no clean and "
                     "corrupted histograms")
    elif run.noisy:
        written.append(plot_weight_distribution(run))
    return written, notes


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        run = load_run(args.run_dir)
        partner, partner_message = find_partner(run, args.baseline_dir, args.reweight_dir)
    except (PlotError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    if not import_matplotlib():
        print("error: plot_run.py needs matplotlib, which is not installed; run "
              "pip install -e '.[plots]' (or pip install matplotlib)", file=sys.stderr)
        return 2

    print(partner_message)
    try:
        written, notes = draw_figures(run, partner)
    except OSError as error:
        print(f"error: cannot write a figure into {args.run_dir} ({error}); check that "
              f"the directory is writable", file=sys.stderr)
        return 2
    for note in notes:
        print(note)
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
