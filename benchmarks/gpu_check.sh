#!/usr/bin/env bash
# The prepared GPU check: run it first on any new GPU machine, then commit OUT_DIR/summary.md.
#
#   bash benchmarks/gpu_check.sh OUT_DIR          # GPU mode: at most 9 minutes on one H100/H200
#   bash benchmarks/gpu_check.sh --cpu OUT_DIR    # CPU mode (or CRT_GPU_CHECK=cpu): tiny sizes, ~2 minutes
#
# Uses the torch the machine already has: nothing is installed, nothing is downloaded. Runs from the
# repository root with PYTHONPATH=. and $PYTHON (default python3); submitit is not needed (the reproduce
# step runs its jobs in-process with --executor inline). Steps, each under its own
# timeout so that a failure or a hang does not hide the others, each logging to OUT_DIR/<step>.log:
#   1. pytest -m gpu                 (CPU mode: the gpu-marked tests' collection only; they need CUDA)
#   2. certification speed           ResNet-110 in fp32, TF32, bf16, compiled bf16 (benchmarks/gpu_check.py)
#   3. one training step per method  ResNet-110 and ConvNeXt-Atto (2022), recipe batch sizes
#   4. reproduce --profile gpu-smoke --device cuda (CPU mode: --device cpu in-process, the plan shrunk)
#   5. the slowdown table's methods in the paper protocol, fp32, what the budget leaves (at most 150 s) (benchmarks/gpu_check_paper.py)
#   6. summary.md (always written, also when a step failed) and measurements.csv
# At most 9 files in OUT_DIR: summary.md, measurements.csv, REPORT.md and the 5 step logs.
set -u
START=$SECONDS

mode=gpu
[ "${CRT_GPU_CHECK:-}" = cpu ] && mode=cpu
if [ "${1:-}" = --cpu ]; then mode=cpu; shift; fi
if [ $# -ne 1 ] || [ "${1#-}" != "$1" ]; then
  echo "usage: bash benchmarks/gpu_check.sh [--cpu] OUT_DIR" >&2
  exit 2
fi
PYTHON=${PYTHON:-python3}
if [ "$mode" = gpu ] && ! "$PYTHON" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  echo "error: no CUDA device visible to $PYTHON's torch; the CPU mode is: bash benchmarks/gpu_check.sh --cpu OUT_DIR" >&2
  exit 2
fi
mkdir -p "$1" && OUT=$(cd "$1" && pwd) || exit 2
# an earlier run's files would mislead
rm -f "$OUT"/{pytest_gpu,certify,train,paper,reproduce}.log "$OUT"/{summary.md,measurements.csv,REPORT.md}
cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
WORK=$(mktemp -d "${TMPDIR:-/tmp}/crt-gpu-check.XXXXXX") || exit 2
trap 'rm -rf "$WORK"' EXIT

# Budget: the steps end by BUDGET seconds after the start (a step gets the smaller of its own limit and
# the time left), then the summary (its own limit) and the fallback: GPU mode fits 9 minutes in all (a device call is at most 9-10 minutes).
if [ "$mode" = gpu ]; then
  BUDGET=505; LIMIT_PYTEST=90; LIMIT_CERTIFY=150; LIMIT_TRAIN=150; LIMIT_PAPER=150; LIMIT_REPRODUCE=300; DEVICE=cuda
else
  # about 2 minutes on 2 idle cores; the limits only stop a hang (a loaded machine takes several times longer)
  BUDGET=480; LIMIT_PYTEST=120; LIMIT_CERTIFY=120; LIMIT_TRAIN=150; LIMIT_PAPER=150; LIMIT_REPRODUCE=240; DEVICE=cpu
fi
GRACE=5  # seconds between timeout's TERM and its KILL

# step NAME LIMIT COMMAND...: runs COMMAND with its output in OUT/NAME.log, appends "name rc seconds
# limit log" to WORK/steps.tsv (rc -1: not started, the budget was spent).
step() {
  local name=$1 limit=$2; shift 2
  local left=$((BUDGET - (SECONDS - START) - GRACE))
  [ "$left" -lt "$limit" ] && limit=$left
  local began=$SECONDS rc
  if [ "$limit" -lt 10 ]; then
    rc=-1
    echo "not started: the check's ${BUDGET}-second budget is spent" >"$OUT/$name.log"
  else
    echo "== $name (limit ${limit} s)" >&2
    timeout -k "$GRACE" "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
  fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - began))" "$limit" "$name.log" >>"$WORK/steps.tsv"
  echo "   $name: exit $rc after $((SECONDS - began)) s" >&2
}

if [ "$mode" = gpu ]; then
  step pytest_gpu "$LIMIT_PYTEST" "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider
else
  # The gpu-marked tests need CUDA: here they are only collected (imports, fixtures, markers).
  step pytest_gpu "$LIMIT_PYTEST" "$PYTHON" -m pytest -m gpu --collect-only -q -p no:cacheprovider \
    $(grep -l 'mark\.gpu' tests/*.py)
fi
step certify "$LIMIT_CERTIFY" "$PYTHON" benchmarks/gpu_check.py certify --mode "$mode" --work "$WORK"
step train "$LIMIT_TRAIN" "$PYTHON" benchmarks/gpu_check.py train --mode "$mode" --work "$WORK"
REPRODUCE=(reproduce --profile gpu-smoke --device "$DEVICE" --executor inline --results "$WORK/results"
           --out "$WORK/plots")
if [ "$mode" = gpu ]; then
  step reproduce "$LIMIT_REPRODUCE" "$PYTHON" -m crt_bench.cli "${REPRODUCE[@]}"
else  # the same command, with the plan shrunk to tiny_cnn
  step reproduce "$LIMIT_REPRODUCE" "$PYTHON" benchmarks/gpu_check.py reproduce --mode cpu --work "$WORK" \
    -- "${REPRODUCE[@]}"
fi
[ -f "$WORK/plots/REPORT.md" ] && cp "$WORK/plots/REPORT.md" "$OUT/REPORT.md"
step paper "$LIMIT_PAPER" "$PYTHON" benchmarks/gpu_check.py paper --mode "$mode" --work "$WORK"

timeout -k "$GRACE" 25 "$PYTHON" benchmarks/gpu_check.py summary --mode "$mode" --work "$WORK" --out "$OUT" \
  >"$WORK/summary.log" 2>&1
rc=$?
if [ $rc -ne 0 ] || [ ! -s "$OUT/summary.md" ]; then
  {  # the summary script failed: the steps' exit codes and its error, without the tables
    echo "# crt-bench GPU check ($mode mode), $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "The summary step failed (exit $rc); the steps' exit codes (-1: not started, 124/137: timed out):"
    echo
    echo '| step | exit | seconds | limit | log |'
    echo '|---|---|---|---|---|'
    touch "$WORK/steps.tsv"
    awk -F'\t' '{print "| " $1 " | " $2 " | " $3 " | " $4 " | " $5 " |"}' "$WORK/steps.tsv"
    echo
    echo '```'
    tail -n 25 "$WORK/summary.log"
    echo '```'
  } >"$OUT/summary.md"
fi
echo "GPU check ($mode mode) done in $((SECONDS - START)) s: $OUT/summary.md" >&2
# exit 0 only when every step and the summary passed
awk -F'\t' '$2 != 0 {bad=1} END {exit bad}' "$WORK/steps.tsv" && [ $rc -eq 0 ]
