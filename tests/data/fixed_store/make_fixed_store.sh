#!/usr/bin/env bash
# Rebuilds the fixed store of tests/test_fixed_report.py: tiny synthetic runs made with the crt-bench
# commands of the README (a teacher, a Gaussian and a CRT student, their certifications, a sharded
# certification, a published log, timing probes). Only tables/ is kept (no model files).
# Usage: bash tests/data/fixed_store/make_fixed_store.sh OUT_DIR   (from the repository root)
set -euo pipefail
out=${1:?OUT_DIR}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
R=$work/results
cb() { ${PYTHON:-python3} -m crt_bench.cli "$@" --results "$R"; }
common=(--arch tiny_cnn --profile smoke --epochs 2 --train-limit 256 --seed 0)
T=$(cb run --method smoothmix "${common[@]}" | tail -1)
G=$(cb run --method gaussian "${common[@]}" | tail -1)
S=$(cb run --method crt --teacher "$T" "${common[@]}" | tail -1)
for run in "$T" "$G" "$S"; do cb certify "$run" --n0 20 --n 200 --subset range:0:12 --no-progress >/dev/null; done
cb certify "$S" --n0 20 --n 100 --subset range:0:8 --shards 2 --no-progress >/dev/null
cb import-log tests/data/certify_logs/cohen_resnet110_sigma0.25_skip20.tsv --name cohen-0.25 --sigma 0.25 --hours 10.5 \
   --method gaussian --arch resnet110 --dataset cifar10 --device "Tesla V100" >/dev/null
cb time --profile smoke --arch tiny_cnn --method gaussian --method crt --method smoothmix --teacher tiny_cnn \
   --batches 1 --repeats 2 >/dev/null
rm -rf "$out"; mkdir -p "$out"; cp -r "$R/tables" "$out/"
echo "fixed store written to $out"
