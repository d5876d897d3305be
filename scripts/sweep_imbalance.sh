#!/usr/bin/env bash
# Long-tailed sweep: each imbalance factor x seed x {reweighting, baseline} is one
# main.py run in its own folder. See --help.
set -euo pipefail

# shellcheck source=scripts/sweep_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/sweep_common.sh"

FACTORS="200 100 50 20 10 1"

sweep_usage() {
    cat <<'EOF'
Usage: scripts/sweep_imbalance.sh --runs_dir DIR [options] [-- MAIN_PY_FLAGS ...]

Train on long-tailed CIFAR at each imbalance factor, for each seed, with
Meta-Weight-Net reweighting and with the plain cross-entropy baseline
(main.py --baseline). Run folders are named
DATASET_ifFACTOR_itersN_METHOD_seedS, for example
cifar10_if100_iters10000_reweight_seed1.

Options:
  --factors "F ..."   imbalance factors (largest / smallest class count),
                      space-separated (default: "200 100 50 20 10 1")
EOF
    sweep_common_options_help
    echo
    sweep_common_notes_help
    cat <<'EOF'

Example (3 seeds x 6 factors x 2 methods = 36 runs):
  PYTHON=.venv/bin/python scripts/sweep_imbalance.sh --runs_dir ~/runs/lt \
      --data_root ~/data/cifar10-jpg
  PYTHON=.venv/bin/python scripts/summarize.py ~/runs/lt
EOF
}

sweep_parse_option() {
    case "$1" in
        --factors) FACTORS="$2" ;;
        *) return 1 ;;
    esac
}

sweep_plan_runs() {
    local factor
    [[ -n "${FACTORS// /}" ]] || sweep_fail "--factors is empty; pass at least one imbalance factor, for example --factors \"100\""
    for factor in $FACTORS; do
        factor="$(sweep_canonical_number --factors "$factor")"
        sweep_add_runs_for_setting "if${factor}" --imbalanced_factor "$factor"
    done
}

sweep_main "$@"
