# shellcheck shell=bash
# Shared logic of sweep_imbalance.sh and sweep_noise.sh. Source it; do not run it.
#
# A sweep script sources this file, defines three functions and then calls
# sweep_main "$@":
#   sweep_usage                   prints the script's --help text
#   sweep_parse_option NAME VALUE handles one script-specific option (returns 1 if unknown)
#   sweep_plan_runs               calls sweep_add_run once per run, after parsing
# It may also set SWEEP_DEFAULT_FLAGS, main.py flags placed before the extra flags. An
# extra flag of the same name overrides them because argparse keeps the last value.

SWEEP_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SWEEP_MAIN="$SWEEP_REPO_ROOT/main.py"
# The repository's own environment (made by `make install`) unless PYTHON names another.
if [[ -z "${PYTHON:-}" && -x "$SWEEP_REPO_ROOT/.venv/bin/python" ]]; then
    PYTHON="$SWEEP_REPO_ROOT/.venv/bin/python"
fi
PYTHON="${PYTHON:-python}"

# Options shared by both scripts, with their defaults.
RUNS_DIR=""
DATA_ROOT=""
DEVICE=""
DATASET="cifar10"
TRAIN_ITERS="10000"
SEEDS="1 2 3"
METHODS="reweight baseline"
DRY_RUN=0
EXTRA_FLAGS=()
SWEEP_DEFAULT_FLAGS=()

# The planned runs, by index: folder name, and main.py setting flags joined by spaces.
# Joining is safe because every flag and value is a validated token without spaces.
SWEEP_RUN_NAMES=()
SWEEP_RUN_FLAGS=()

SWEEP_INTERRUPTED=0

sweep_fail() {
    echo "error: $*" >&2
    exit 2
}

# The usage text of the options that both scripts share.
sweep_common_options_help() {
    cat <<'EOF'
  --runs_dir DIR      folder that receives one subfolder per run (required;
                      created if missing)
  --data_root DIR     passed to main.py --data_root (default: main.py's default)
  --device cpu|cuda   passed to main.py --device (default: main.py's choice)
  --dataset NAME      cifar10 or cifar100 (default: cifar10)
  --train_iters N     training iterations per run (default: 10000)
  --seeds "S ..."     seeds, space-separated (default: "1 2 3")
  --methods "M ..."   reweight, baseline or both (default: "reweight baseline");
                      baseline adds main.py --baseline
  --dry_run           print what each run would do, and run nothing
  -h, --help          print this help
  -- FLAGS ...        every later argument is passed to each main.py run
EOF
}

# The usage text about run folders, skipping and resuming, shared by both scripts.
sweep_common_notes_help() {
    cat <<'EOF'
Each run writes into RUNS_DIR/NAME and its console output is appended to
RUNS_DIR/NAME.log, beside the folder; NAME covers dataset, setting, budget,
method and seed only. Runs that differ in other flags (for example --meta_lr
after --) need separate --runs_dir folders, because a run whose folder already
holds results.json is skipped.

Restarting a sweep redoes nothing that finished:
  - results.json exists: the run is skipped and no file is touched;
  - the folder exists with checkpoint.pt but no results.json: main.py --resume;
  - the folder exists without either: main.py --overwrite (an interrupted run
    without a checkpoint starts again). Add --save_step N after -- to write
    checkpoints that a restart can resume from.

A failed run does not stop the others. The sweep ends with a one-line tally
(done, skipped, failed) and exits with 1 if any run failed, 2 on invalid
options, and 130 when interrupted with Ctrl-C.

Budget: main.py's learning-rate milestones default to 5000 7500 9000, which
suit --train_iters 10000. With a shorter budget, pass matching milestones
after --, for example: --train_iters 2000 -- --lr_milestones 1000 1500 1800

Environment: PYTHON is the interpreter that runs main.py (default: python).
EOF
}

# Print VALUE as a canonical decimal (100.0 -> 100, 1e-3 -> 0.001), or fail.
sweep_canonical_number() {
    local option="$1" value="$2"
    if [[ ! "$value" =~ ^([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][-+]?[0-9]+)?$ ]]; then
        sweep_fail "$option value '$value' is not a non-negative number; pass numbers such as 100 or 0.4"
    fi
    LC_ALL=C printf '%g' "$value"
}

sweep_check_integer() {
    local option="$1" value="$2"
    if [[ ! "$value" =~ ^[0-9]+$ ]]; then
        sweep_fail "$option value '$value' is not a non-negative integer"
    fi
}

# Reject an extra flag that repeats (or abbreviates, as argparse allows) a flag the
# sweep sets itself, naming the sweep option to use instead.
sweep_check_extra_flags() {
    local token name reserved replacement
    local -A replacements=(
        [--dataset]="--dataset" [--data_root]="--data_root" [--device]="--device"
        [--train_iters]="--train_iters" [--seed]="--seeds" [--baseline]="--methods"
        [--output_dir]="--runs_dir" [--imbalanced_factor]="the sweep's setting list"
        [--corruption_type]="the sweep's setting list"
        [--corruption_ratio]="the sweep's setting list"
        [--resume]="nothing: the sweep resumes runs that have checkpoint.pt"
        [--overwrite]="nothing: the sweep restarts interrupted runs itself"
    )
    for token in "${EXTRA_FLAGS[@]+"${EXTRA_FLAGS[@]}"}"; do
        [[ "$token" == --?* ]] || continue
        name="${token%%=*}"
        for reserved in "${!replacements[@]}"; do
            if [[ "$reserved" == "$name"* ]]; then
                replacement="${replacements[$reserved]}"
                sweep_fail "extra flag '$token' sets main.py $reserved, which the sweep sets for each run; use $replacement instead"
            fi
        done
    done
}

sweep_parse_args() {
    local name value
    while (($#)); do
        case "$1" in
            -h | --help)
                sweep_usage
                exit 0
                ;;
            --dry_run)
                DRY_RUN=1
                shift
                continue
                ;;
            --)
                shift
                EXTRA_FLAGS=("$@")
                return 0
                ;;
            --*=*)
                name="${1%%=*}"
                value="${1#*=}"
                shift
                ;;
            --*)
                name="$1"
                (($# >= 2)) || sweep_fail "option $name needs a value; see --help"
                value="$2"
                shift 2
                ;;
            *)
                sweep_fail "unexpected argument '$1'; main.py flags go after --, see --help"
                ;;
        esac

        case "$name" in
            --runs_dir) RUNS_DIR="$value" ;;
            --data_root) DATA_ROOT="$value" ;;
            --device) DEVICE="$value" ;;
            --dataset) DATASET="$value" ;;
            --train_iters) TRAIN_ITERS="$value" ;;
            --seeds) SEEDS="$value" ;;
            --methods) METHODS="$value" ;;
            *)
                sweep_parse_option "$name" "$value" ||
                    sweep_fail "unknown option '$name'; see --help (main.py flags go after --)"
                ;;
        esac
    done
}

sweep_check_common_options() {
    local seed method

    [[ -n "$RUNS_DIR" ]] || sweep_fail "--runs_dir is missing; name the folder that receives the runs"
    if [[ -e "$RUNS_DIR" && ! -d "$RUNS_DIR" ]]; then
        sweep_fail "--runs_dir '$RUNS_DIR' exists and is not a directory; choose another path"
    fi
    if [[ -n "$DATA_ROOT" && ! -d "$DATA_ROOT" ]]; then
        sweep_fail "--data_root '$DATA_ROOT' is not a directory; pass the folder that holds train/ and test/"
    fi
    case "$DEVICE" in
        "" | cpu | cuda) ;;
        *) sweep_fail "--device '$DEVICE' is invalid; use cpu or cuda" ;;
    esac
    case "$DATASET" in
        cifar10 | cifar100) ;;
        *) sweep_fail "--dataset '$DATASET' is invalid; use cifar10 or cifar100" ;;
    esac
    sweep_check_integer --train_iters "$TRAIN_ITERS"
    ((10#$TRAIN_ITERS > 0)) || sweep_fail "--train_iters $TRAIN_ITERS must be positive"
    TRAIN_ITERS="$((10#$TRAIN_ITERS))"

    [[ -n "${SEEDS// /}" ]] || sweep_fail "--seeds is empty; pass at least one seed, for example --seeds \"1 2 3\""
    for seed in $SEEDS; do
        sweep_check_integer --seeds "$seed"
    done
    [[ -n "${METHODS// /}" ]] || sweep_fail "--methods is empty; pass reweight, baseline or both"
    for method in $METHODS; do
        case "$method" in
            reweight | baseline) ;;
            *) sweep_fail "--methods value '$method' is invalid; use reweight, baseline or both" ;;
        esac
    done

    sweep_check_extra_flags
    if ((!DRY_RUN)) && ! command -v "$PYTHON" >/dev/null; then
        sweep_fail "PYTHON '$PYTHON' was not found; set PYTHON to the interpreter of the project's environment, for example PYTHON=.venv/bin/python"
    fi
}

# Queue one run: sweep_add_run NAME MAIN_PY_FLAGS...
sweep_add_run() {
    local name="$1"
    shift
    SWEEP_RUN_NAMES+=("$name")
    SWEEP_RUN_FLAGS+=("$*")
}

# Queue each setting x seed x method, in that nesting order:
# sweep_add_runs_for_setting LABEL MAIN_PY_FLAGS...
# LABEL is the setting's part of the folder name, for example if100 or uniform_r0.4.
sweep_add_runs_for_setting() {
    local label="$1"
    shift
    local seed method name
    for seed in $SEEDS; do
        seed="$((10#$seed))"
        for method in $METHODS; do
            name="${DATASET}_${label}_iters${TRAIN_ITERS}_${method}_seed${seed}"
            if [[ "$method" == baseline ]]; then
                sweep_add_run "$name" "$@" --seed "$seed" --baseline
            else
                sweep_add_run "$name" "$@" --seed "$seed"
            fi
        done
    done
}

# Build the main.py command of one run into the array SWEEP_COMMAND.
sweep_build_command() {
    local run_dir="$1" flags="$2" action="$3"
    local -a setting_flags
    read -r -a setting_flags <<<"$flags"

    SWEEP_COMMAND=("$PYTHON" "$SWEEP_MAIN" --dataset "$DATASET")
    [[ -z "$DATA_ROOT" ]] || SWEEP_COMMAND+=(--data_root "$DATA_ROOT")
    [[ -z "$DEVICE" ]] || SWEEP_COMMAND+=(--device "$DEVICE")
    SWEEP_COMMAND+=(--train_iters "$TRAIN_ITERS" --output_dir "$run_dir" "${setting_flags[@]}")
    SWEEP_COMMAND+=("${SWEEP_DEFAULT_FLAGS[@]+"${SWEEP_DEFAULT_FLAGS[@]}"}")
    SWEEP_COMMAND+=("${EXTRA_FLAGS[@]+"${EXTRA_FLAGS[@]}"}")
    [[ -z "$action" ]] || SWEEP_COMMAND+=("$action")
}

sweep_last_log_line() {
    local line
    line="$(tail -n 1 "$1" 2>/dev/null || true)"
    echo "      ${line}"
}

sweep_print_tally() {
    local total="${#SWEEP_RUN_NAMES[@]}" failure
    echo "sweep: $SWEEP_DONE done, $SWEEP_SKIPPED skipped, ${#SWEEP_FAILURES[@]} failed" \
        "(of $total runs in $RUNS_DIR)"
    for failure in "${SWEEP_FAILURES[@]+"${SWEEP_FAILURES[@]}"}"; do
        echo "  failed: $failure"
    done
}

sweep_execute() {
    local total="${#SWEEP_RUN_NAMES[@]}" index name run_dir log action mode rc start
    SWEEP_DONE=0
    SWEEP_SKIPPED=0
    SWEEP_FAILURES=()
    ((DRY_RUN)) || mkdir -p "$RUNS_DIR"

    for index in "${!SWEEP_RUN_NAMES[@]}"; do
        ((!SWEEP_INTERRUPTED)) || break
        name="${SWEEP_RUN_NAMES[$index]}"
        run_dir="$RUNS_DIR/$name"
        log="$run_dir.log"
        local counter="[$((index + 1))/$total]"

        if [[ -f "$run_dir/results.json" ]]; then
            echo "$counter skipped $name: results.json exists"
            SWEEP_SKIPPED=$((SWEEP_SKIPPED + 1))
            continue
        fi
        action=""
        mode="start"
        if [[ -d "$run_dir" ]]; then
            if [[ -f "$run_dir/checkpoint.pt" ]]; then
                action="--resume"
                mode="resume (checkpoint.pt found)"
            else
                action="--overwrite"
                mode="restart (interrupted run without checkpoint)"
            fi
        fi
        sweep_build_command "$run_dir" "${SWEEP_RUN_FLAGS[$index]}" "$action"

        if ((DRY_RUN)); then
            echo "$counter would $mode $name: ${SWEEP_COMMAND[*]}"
            continue
        fi
        echo "$counter $mode $name (log: $log)"
        echo "=== $(date '+%Y-%m-%d %H:%M:%S') ${SWEEP_COMMAND[*]}" >>"$log"
        start="$SECONDS"
        if "${SWEEP_COMMAND[@]}" >>"$log" 2>&1; then
            rc=0
        else
            rc=$?
        fi

        if ((rc == 0)) && [[ -f "$run_dir/results.json" ]]; then
            SWEEP_DONE=$((SWEEP_DONE + 1))
            echo "      finished in $((SECONDS - start)) s"
            sweep_last_log_line "$log"
        elif ((rc == 130 || SWEEP_INTERRUPTED)); then
            SWEEP_INTERRUPTED=1
            echo "      interrupted: $run_dir (log: $log)"
        else
            if ((rc == 0)); then
                SWEEP_FAILURES+=("$run_dir (exit 0 without results.json; log: $log)")
                echo "      FAILED: $run_dir exited with 0 but wrote no results.json (log: $log)"
            else
                SWEEP_FAILURES+=("$run_dir (exit $rc; log: $log)")
                echo "      FAILED: $run_dir exited with $rc (log: $log)"
            fi
            sweep_last_log_line "$log"
        fi
    done
}

# Parse the options, plan the runs and execute them. The sourcing script calls this
# with its own arguments.
sweep_main() {
    sweep_parse_args "$@"
    sweep_check_common_options
    sweep_plan_runs

    # Ctrl-C also reaches the running main.py, which exits with 130. The sweep then
    # stops instead of starting the next run.
    trap 'SWEEP_INTERRUPTED=1' INT
    sweep_execute
    trap - INT

    if ((DRY_RUN)); then
        return 0
    fi
    sweep_print_tally
    if ((SWEEP_INTERRUPTED)); then
        exit 130
    fi
    if ((${#SWEEP_FAILURES[@]})); then
        exit 1
    fi
    return 0
}
