#!/usr/bin/env bash
# The GPU checks of the performance work, as one prepared script for a short lease of a GPU machine
# whose Python has torch but not this project's pins, and no network.
#
#   bash launch/gpu_check.sh prepare        # here (PyPI reachable): .device/ = wheels + real data
#   bash launch/gpu_check.sh [STAGE ...]    # there, with .device carried: STAGE = tests bench pack sweep
#
# Stages (default: all four, in this order), each logged to $OUT/<stage>.log (default ./gpu-check;
# with env.txt, summary.csv and runs.csv, at most 7 files):
#   tests   tests/test_gpu.py: no host sync per step, CPU = GPU batches and steps, bf16/compile learn
#   bench   launch/bench.py train on real CIFAR-10 at the paper's width: baseline vs memory path,
#           channels_last, bf16, compile, fused K=1,4,10; ratios; projected fast/paper wall time
#   pack    launch/bench.py pack: sequential vs packed processes vs fused, per width
#   sweep   the `fast` preset on real CIFAR-10 (SWEEP_ARGS, default seed 0 of the bilateral
#           comparison), cut at SWEEP_SECONDS (default 300); summary.csv and runs.csv of what
#           finished. Rerunning the stage on a still-warm machine resumes the sweep.
# Exit status 1 when a stage failed (a sweep cut at its time limit is not a failure).
# Each stage stops at its time limit (tests 300 s, bench 300 s, pack 240 s, sweep SWEEP_SECONDS), so
# a 15-minute lease fits `tests bench pack` in one call and `sweep` in a second on the warm machine.
# Environment: PYTHON (default python3), OUT, DEVICE (default cuda), DEVICE_DIR (default .device),
# RESULTS (the sweep's --out, default results), SWEEP_SECONDS, and the arguments that replace each
# stage's defaults: BENCH_ARGS, PACK_ARGS, SWEEP_ARGS.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE_DIR=${DEVICE_DIR:-.device}
DATA="cifar10-hier:$DEVICE_DIR/cifar10-jpg.tar.gz"
PYTHON=${PYTHON:-python3}
OUT=${OUT:-gpu-check}
RESULTS=${RESULTS:-results}
DEVICE=${DEVICE:-cuda}
COMPARISON=bilateral-specialised,bilateral-unspecialised,unilateral  # + the two hemispheres

prepare() {
  # Pure-Python packages the GPU image lacks (its torch, numpy, pandas, scipy, sklearn, tqdm,
  # tabulate, pillow and pytest serve as they are), built here as wheels; and the real data.
  set -e
  mkdir -p "$DEVICE_DIR/wheels"
  "$PYTHON" -m pip wheel -q --no-deps -w "$DEVICE_DIR/wheels" omegaconf==2.3.0 antlr4-python3-runtime==4.9.3
  cp ../shared/data/cifar10-jpg/cifar10-jpg.tar.gz "$DEVICE_DIR/"
  du -sh "$DEVICE_DIR"
  echo "carry $DEVICE_DIR in the device call: run(command='bash launch/gpu_check.sh', carry=['$DEVICE_DIR'])"
}

stage() {  # stage NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, note the outcome
  local name=$1 seconds=$2
  shift 2
  local tic=$SECONDS
  echo "=== $name: $*" | tee "$OUT/$name.log"
  timeout --signal=INT --kill-after=20 "$seconds" "$@" 2>&1 | tee -a "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  outcomes+=("$name: exit $rc after $((SECONDS - tic)) s")
  [ "$rc" = 0 ] || [ "$name:$rc" = sweep:124 ] || failed+=("$name")  # a sweep cut short resumes
}

if [ "${1:-}" = prepare ]; then
  prepare
  exit
fi
[ -d "$DEVICE_DIR/wheels" ] || { echo "no $DEVICE_DIR/wheels: run 'bash launch/gpu_check.sh prepare' here first, then carry $DEVICE_DIR"; exit 2; }
mkdir -p "$OUT"
site=$(mktemp -d)
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$DEVICE_DIR"/wheels/*.whl
export PYTHONPATH="$site:$PWD" PYTHONUNBUFFERED=1
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(tests bench pack sweep)
outcomes=() failed=()
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  "$PYTHON" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, \
'cuda', torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
  nproc
} | tee "$OUT/env.txt"

for name in "${stages[@]}"; do
  case $name in
    tests) stage tests 300 "$PYTHON" -m pytest tests/test_gpu.py -v -p no:cacheprovider ;;
    bench) stage bench 300 "$PYTHON" launch/bench.py train --device "$DEVICE" --data "$DATA" \
             ${BENCH_ARGS:---compile --steps 20} ;;
    pack) stage pack 240 "$PYTHON" launch/bench.py pack --device "$DEVICE" --data "$DATA" \
            ${PACK_ARGS:---bf16 --channels-last} ;;
    sweep)
      stage sweep "${SWEEP_SECONDS:-300}" "$PYTHON" launch/sweep.py --preset fast --data "$DATA" \
        --device "$DEVICE" --out "$RESULTS" --name gpu-check ${SWEEP_ARGS:---seeds 0 --models $COMPARISON}
      "$PYTHON" launch/aggregate.py "$RESULTS/gpu-check" 2>&1 | tee -a "$OUT/sweep.log"  # what finished
      cp "$RESULTS"/gpu-check/{summary,runs}.csv "$OUT/" 2>/dev/null ;;
    *) echo "unknown stage $name: choose from tests bench pack sweep"; exit 2 ;;
  esac
done
printf '%s\n' "${outcomes[@]}"  # last: the end of the output is what a device call returns
[ ${#failed[@]} = 0 ] || { echo "failed: ${failed[*]}"; exit 1; }
