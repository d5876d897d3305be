#!/usr/bin/env bash
# One-call GPU check: the benchmark on CUDA, then a full-budget reweighting run.
#
#   scripts/gpu_check.sh                       # on a GPU machine, defaults below
#   DEVICE=cpu TRAIN_ITERS=20 VALID_STEP=10 MILESTONES="10 15" BENCH_ARGS="--rounds 1 \
#     --iters 1 --methods darts --check_iters 2" scripts/gpu_check.sh    # a dry run on CPU
#
# Inputs are looked up in BUNDLE_DIR (default .device/, which git ignores):
#   cifar10-jpg.tar.gz            the CIFAR-10 JPEG archive
#   betty_ml-0.2.1-*.whl          the Betty wheel (torch must already be installed)
# Outputs go under OUT_DIR (default $OUT where the device tool sets it, else a temp dir):
#   benchmark.json, benchmark.log, full_run/ (the run's folder), full_run.log, summary.txt
set -euo pipefail
cd "$(dirname "$0")/.."

BUNDLE_DIR=${BUNDLE_DIR:-.device}
OUT_DIR=${OUT_DIR:-${OUT:-$(mktemp -d)}}
DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-python3}
TRAIN_ITERS=${TRAIN_ITERS:-10000}
VALID_STEP=${VALID_STEP:-1000}
MILESTONES=${MILESTONES:-5000 7500 9000}
BENCH_ARGS=${BENCH_ARGS:-}
WORK=$(mktemp -d)
export PYTHONUNBUFFERED=1

archive="$BUNDLE_DIR/cifar10-jpg.tar.gz"
[[ -f $archive ]] || { echo "error: $archive not found; copy cifar10-jpg.tar.gz there" >&2; exit 2; }

# Betty 0.2.1 declares Python < 3.11; it runs on newer Pythons, so skip that check.
if ! "$PYTHON" -c "import betty" 2>/dev/null; then
    wheel=$(ls "$BUNDLE_DIR"/betty_ml-0.2.1-*.whl 2>/dev/null | head -n 1)
    [[ -n $wheel ]] || { echo "error: betty is not installed and no wheel is in $BUNDLE_DIR" >&2; exit 2; }
    "$PYTHON" -m pip install --quiet --no-deps --ignore-requires-python --target "$WORK/site" "$wheel"
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi

tar xzf "$archive" -C "$WORK"
data_root="$WORK/cifar10-jpg"
mkdir -p "$OUT_DIR"
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee "$OUT_DIR/summary.txt"

echo "== benchmark on $DEVICE" | tee -a "$OUT_DIR/summary.txt"
# shellcheck disable=SC2086  # BENCH_ARGS is a list of flags
"$PYTHON" scripts/benchmark.py --device "$DEVICE" --data_root "$data_root" \
    --json "$OUT_DIR/benchmark.json" $BENCH_ARGS 2>&1 | tee "$OUT_DIR/benchmark.log" | grep -v '^\[' || true

echo "== full run: IF 100, $TRAIN_ITERS iterations on $DEVICE" | tee -a "$OUT_DIR/summary.txt"
start=$(date +%s)
# shellcheck disable=SC2086  # MILESTONES is a list of numbers
"$PYTHON" main.py --dataset cifar10 --imbalanced_factor 100 --data_root "$data_root" \
    --device "$DEVICE" --train_iters "$TRAIN_ITERS" --valid_step "$VALID_STEP" \
    --log_step "$VALID_STEP" --lr_milestones $MILESTONES --output_dir "$OUT_DIR/full_run" \
    > "$OUT_DIR/full_run.log" 2>&1
end=$(date +%s)
"$PYTHON" - "$OUT_DIR/full_run/results.json" "$((end - start))" <<'PY' | tee -a "$OUT_DIR/summary.txt"
import json, sys
results = json.load(open(sys.argv[1]))
print(f"final_test_acc {results['final_test_acc']:.2f} best_test_acc {results['best_test_acc']:.2f} "
      f"iterations {results['iterations']} run wall time {results['wall_time_s']:.0f} s "
      f"(process {sys.argv[2]} s, data decoding included)")
PY
rm -rf "$WORK"
echo "outputs in $OUT_DIR"
