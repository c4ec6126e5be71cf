#!/usr/bin/env bash
# The GPU checks of the performance work, as one prepared script for a short lease of a GPU machine
# whose Python has torch but not this project's pins, and no network.
#
#   bash launch/gpu_check.sh prepare        # here (PyPI reachable): .device/ = wheels + real data
#   bash launch/gpu_check.sh [STAGE ...]    # there, with .device carried: STAGE = tests bench pack sweep
#
# Stages (default: all four, in this order), each logged as it runs to $OUT/<stage>.log (default
# ./gpu-check; with env.txt, summary.csv and runs.csv, at most 7 files):
#   tests   tests/test_gpu.py: no host sync per step, CPU = GPU batches and steps, bf16/compile learn
#   bench   launch/bench.py train on real CIFAR-10 at the paper's width: baseline vs memory path,
#           channels_last, bf16, compile, fused K=1,4,10; ratios; each preset's projected wall time
#           from its own variant, with evaluation and checkpoints
#   pack    launch/bench.py pack: sequential vs packed processes vs fused, per width
#   sweep   the `fast` preset on real CIFAR-10 (SWEEP_ARGS, default seed 0 of the bilateral
#           comparison) until its limit; summary.csv and runs.csv of what finished, written also when
#           it is cut. Rerunning the stage on a still-warm machine resumes the sweep.
# Each stage is interrupted at its limit (TESTS_SECONDS 150, BENCH_SECONDS 240, PACK_SECONDS 120,
# SWEEP_SECONDS 150; killed 10 s later if still running) and leaves its partial log; after every
# stage the outcomes so far are printed, so a call cut by the device tool still says what finished.
# The script refuses to start (exit 2) when the chosen stages' limits add up to more than
# CALL_SECONDS (default 570: one 600-second call, less setup). A 15-minute device budget, machine
# start (up to ~3 minutes) included, fits these two calls, the second made as soon as the first
# returns (the machine stays warm only 30 s): 180 + 420 + 300 = 900 s at worst.
#   run(command='bash launch/gpu_check.sh tests bench', carry=['.device'], timeout_s=420)  # 390 s of limits
#   run(command='bash launch/gpu_check.sh pack sweep', carry=['.device'], timeout_s=300)   # 270 s of limits
# Before any stage a preflight imports what the stages need and, for DEVICE=cuda, checks that torch
# sees a GPU (exit 2 otherwise, naming the fix); a missing C compiler or Python.h, which
# torch.compile needs, is a warning. bench times each variant apart: one that fails is reported and
# the others' numbers stand. A tests stage on a GPU that ran no test (all skipped) fails.
# Exit status 1 when a stage failed (a sweep cut at its time limit is not a failure).
# Environment: PYTHON (default python3), OUT, DEVICE (default cuda), DEVICE_DIR (default .device),
# RESULTS (the sweep's --out, default results), CALL_SECONDS, the stage limits above, and the
# arguments that replace each stage's defaults: BENCH_ARGS, PACK_ARGS, SWEEP_ARGS.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE_DIR=${DEVICE_DIR:-.device}
DATA="cifar10-hier:$DEVICE_DIR/cifar10-jpg.tar.gz"
PYTHON=${PYTHON:-python3}
OUT=${OUT:-gpu-check}
RESULTS=${RESULTS:-results}
DEVICE=${DEVICE:-cuda}

prepare() {
  # Pure-Python packages the GPU image lacks (its torch, numpy, pandas, scipy, sklearn, tqdm,
  # tabulate, pillow and pytest serve as they are), built here as wheels; and the real data.
  set -e
  mkdir -p "$DEVICE_DIR/wheels"
  "$PYTHON" -m pip wheel -q --no-deps -w "$DEVICE_DIR/wheels" omegaconf==2.3.0 antlr4-python3-runtime==4.9.3
  cp ../shared/data/cifar10-jpg/cifar10-jpg.tar.gz "$DEVICE_DIR/"
  du -sh "$DEVICE_DIR"
  echo "carry $DEVICE_DIR in the device calls:"
  echo "  run(command='bash launch/gpu_check.sh tests bench', carry=['$DEVICE_DIR'], timeout_s=420)"
  echo "  run(command='bash launch/gpu_check.sh pack sweep', carry=['$DEVICE_DIR'], timeout_s=300)"
}

stage() {  # stage NAME COMMAND...: run under the stage's limit, log to $OUT/NAME.log, note the outcome
  local name=$1 tic=$SECONDS
  shift
  echo "=== $name (limit ${limit[$name]} s): $*" | tee "$OUT/$name.log"
  timeout --signal=INT --kill-after=10 "${limit[$name]}" "$@" 2>&1 | tee -a "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  outcomes+=("$name: exit $rc after $((SECONDS - tic)) s")
  [ "$rc" = 0 ] || [ "$name:$rc" = sweep:124 ] || failed+=("$name")  # a sweep cut short resumes
  if [ "$name" = tests ] && [ "$DEVICE" != cpu ] && ! tail -n 3 "$OUT/tests.log" | grep -Eq '[0-9]+ passed'; then
    outcomes+=("tests: no GPU test ran (all skipped: no GPU visible to torch)")
    failed+=(tests)
  fi
}

sweep_results() {  # what finished, also of a sweep cut at its limit: summary.csv, runs.csv
  timeout 30 "$PYTHON" launch/aggregate.py "$RESULTS/gpu-check" 2>&1 | tee -a "$OUT/sweep.log"
  cp "$RESULTS"/gpu-check/{summary,runs}.csv "$OUT/" 2>/dev/null
}

check_budget() {  # every chosen stage known, with a whole number of seconds, and all in one call
  local name total=0 named=()
  [[ $CALL_SECONDS =~ ^[0-9]+$ ]] || { echo "CALL_SECONDS '$CALL_SECONDS' is not whole seconds"; exit 2; }
  for name in "${stages[@]}"; do
    [ -n "${limit[$name]+set}" ] || { echo "unknown stage $name: choose from tests bench pack sweep"; exit 2; }
    [[ ${limit[$name]} =~ ^[0-9]+$ ]] || { echo "the $name stage's limit '${limit[$name]}' is not whole seconds"; exit 2; }
    total=$((total + limit[$name]))
    named+=("$name ${limit[$name]} s")
  done
  local list
  list=$(printf '%s, ' "${named[@]}")
  if [ "$total" -gt "$CALL_SECONDS" ]; then
    echo "refusing to start: the stages' limits (${list%, }) add up to $total s, over CALL_SECONDS=$CALL_SECONDS" \
      "(one device call): run them in calls that fit, e.g. 'tests bench' then 'pack sweep', or lower their *_SECONDS"
    exit 2
  fi
  echo "stages: ${list%, } ($total s of CALL_SECONDS=$CALL_SECONDS)"
}

if [ "${1:-}" = prepare ]; then
  prepare
  exit
fi
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(tests bench pack sweep)
declare -A limit=([tests]=${TESTS_SECONDS:-150} [bench]=${BENCH_SECONDS:-240} [pack]=${PACK_SECONDS:-120}
                  [sweep]=${SWEEP_SECONDS:-150})
CALL_SECONDS=${CALL_SECONDS:-570}
check_budget
[ -d "$DEVICE_DIR/wheels" ] || { echo "no $DEVICE_DIR/wheels: run 'bash launch/gpu_check.sh prepare' here first, then carry $DEVICE_DIR"; exit 2; }
mkdir -p "$OUT"
site=$(mktemp -d)
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$DEVICE_DIR"/wheels/*.whl
export PYTHONPATH="$site:$PWD" PYTHONUNBUFFERED=1
outcomes=() failed=()
preflight() {  # before any stage: a lease is too short to learn of a missing piece at its end
  DEVICE="$DEVICE" "$PYTHON" - <<'PY'
import importlib, os, shutil, sys, sysconfig
problems, notes = [], []
for name in ("torch", "torchvision", "numpy", "pandas", "yaml", "omegaconf", "tabulate", "PIL", "pytest",
             "bilateral.training", "bilateral.sweep", "bilateral.report"):  # what the stages import
    try:
        importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - any failure to import is the finding
        problems.append(f"import {name}: {type(exc).__name__}: {exc} (install it, or add its wheel to prepare)")
import torch
device = os.environ["DEVICE"]
if device.startswith("cuda") and not torch.cuda.is_available():
    build = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
    problems.append(f"DEVICE={device} but torch {torch.__version__} ({build}) sees no GPU: the GPU tests would "
                    "all skip and the stages report success; install a torch whose CUDA the driver runs "
                    "(nvidia-smi shows the driver), or set DEVICE=cpu")
compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
headers = os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h"))
if not (compiler and headers):
    missing = " and ".join(m for m, ok in (("a C compiler", compiler), ("Python.h", headers)) if not ok)
    notes.append(f"torch.compile: {missing} missing (Triton builds its launcher with them): the compile "
                 "variant and tests will fail, the others still run; install gcc and python3-dev")
for line in notes:
    print("preflight warning:", line)
for line in problems:
    print("preflight failed:", line)
sys.exit(2 if problems else 0)
PY
}
checks=$(preflight)
checked=$?
[ -z "$checks" ] || echo "$checks"
[ "$checked" = 0 ] || { echo "refusing to start: fix the preflight failures above (nothing ran)"; exit 2; }
{
  [ -z "$checks" ] || echo "$checks"
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  "$PYTHON" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, \
'cuda', torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
  nproc
} | tee "$OUT/env.txt"

for name in "${stages[@]}"; do
  case $name in
    tests) stage tests "$PYTHON" -m pytest tests/test_gpu.py -v -p no:cacheprovider ;;
    bench) stage bench "$PYTHON" launch/bench.py train --device "$DEVICE" --data "$DATA" \
             ${BENCH_ARGS:---compile --steps 20} ;;
    pack) stage pack "$PYTHON" launch/bench.py pack --device "$DEVICE" --data "$DATA" \
            ${PACK_ARGS:---bf16 --channels-last} ;;
    sweep)
      stage sweep "$PYTHON" launch/sweep.py --preset fast --data "$DATA" --device "$DEVICE" \
        --out "$RESULTS" --name gpu-check ${SWEEP_ARGS:---seeds 0 --experiment gpu-check}
      sweep_results ;;
  esac
  printf '=== outcomes after %s:\n' "$name"  # after every stage: the end of a cut call's output says
  printf '  %s\n' "${outcomes[@]}"          # which stages finished
done
[ ${#failed[@]} = 0 ] || { echo "failed: ${failed[*]}"; exit 1; }
