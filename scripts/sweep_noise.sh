#!/usr/bin/env bash
# Label-noise sweep: each noise type and ratio x seed x {reweighting, baseline} is one
# main.py run in its own folder. See --help.
set -euo pipefail

# shellcheck source=scripts/sweep_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/sweep_common.sh"

NOISE_SETTINGS="uniform:0.2 uniform:0.4 uniform:0.6 flip1:0.2 flip1:0.4 flip2:0.2 flip2:0.4"

# Meta-Weight-Net's label-noise protocol trains the weighting net with Adam at a
# learning rate of 1e-3 and weight decay 1e-4, where main.py defaults to the long-tail
# values (1e-5 and 0). Extra flags after -- come later on the command line and win.
SWEEP_DEFAULT_FLAGS=(--meta_lr 1e-3 --meta_weight_decay 1e-4)

sweep_usage() {
    cat <<'EOF'
Usage: scripts/sweep_noise.sh --runs_dir DIR [options] [-- MAIN_PY_FLAGS ...]

Train on CIFAR with corrupted training labels (main.py --corruption_type TYPE
--corruption_ratio RATIO), for each seed, with Meta-Weight-Net reweighting and
with the plain cross-entropy baseline (main.py --baseline). Every run gets
--meta_lr 1e-3 --meta_weight_decay 1e-4, the weighting-net optimiser settings of
the label-noise protocol; pass either flag after -- to override it. Run folders
are named DATASET_TYPE_rRATIO_itersN_METHOD_seedS, for example
cifar10_uniform_r0.4_iters10000_reweight_seed1.

Options:
  --settings "T:R ..."  noise types and ratios as TYPE:RATIO, space-separated;
                        TYPE is uniform, flip1 or flip2 and RATIO is in [0, 1]
                        (default: "uniform:0.2 uniform:0.4 uniform:0.6
                        flip1:0.2 flip1:0.4 flip2:0.2 flip2:0.4")
EOF
    sweep_common_options_help
    echo
    sweep_common_notes_help
    cat <<'EOF'

Example (3 seeds x 7 settings x 2 methods = 42 runs):
  PYTHON=.venv/bin/python scripts/sweep_noise.sh --runs_dir ~/runs/noise \
      --data_root ~/data/cifar10-jpg
  PYTHON=.venv/bin/python scripts/summarize.py ~/runs/noise
EOF
}

sweep_parse_option() {
    case "$1" in
        --settings) NOISE_SETTINGS="$2" ;;
        *) return 1 ;;
    esac
}

sweep_plan_runs() {
    local setting type ratio
    [[ -n "${NOISE_SETTINGS// /}" ]] || sweep_fail "--settings is empty; pass at least one TYPE:RATIO, for example --settings \"uniform:0.4\""
    for setting in $NOISE_SETTINGS; do
        if [[ "$setting" != *:* ]]; then
            sweep_fail "--settings value '$setting' is not TYPE:RATIO; use for example uniform:0.4"
        fi
        type="${setting%%:*}"
        case "$type" in
            uniform | flip1 | flip2) ;;
            *) sweep_fail "--settings value '$setting' has noise type '$type'; use uniform, flip1 or flip2" ;;
        esac
        ratio="$(sweep_canonical_number --settings "${setting#*:}")"
        # "_r" separates type and ratio, which would otherwise run together (flip20.2).
        sweep_add_runs_for_setting "${type}_r${ratio}" \
            --corruption_type "$type" --corruption_ratio "$ratio"
    done
}

sweep_main "$@"
