#!/usr/bin/env bash
# The one command that verifies the model's CUDA path on a GPU machine:
#   tests/worker/model/gpu_check.sh OUT_DIR
# Builds with CUDA, runs the model tests (the CUDA-vs-CPU parity tests must run, not
# skip) and model_bench on both backends, and writes logs plus figures.jsonl (one JSON
# line per bench run) to OUT_DIR. Exits non-zero on any failure. The build dominates
# the run time (a few minutes on 16 cores).
set -euo pipefail
OUT=${1:?usage: gpu_check.sh OUT_DIR}
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
BUILD=${DIN_GPU_BUILD_DIR:-$ROOT/build-gpu}
mkdir -p "$OUT"
GEN=()
command -v ninja > /dev/null && GEN=(-G Ninja)
(nvidia-smi || true) > "$OUT/nvidia-smi.txt" 2>&1
cmake -S "$ROOT" -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DDIN_CUDA=ON \
  > "$OUT/configure.log" 2>&1
cmake --build "$BUILD" -j"$(nproc)" \
  --target model_cuda_test model_backend_test model_layers_test model_bench \
  > "$OUT/build.log" 2>&1

status=0
for t in model_cuda_test model_backend_test model_layers_test; do
  if ! "$BUILD/tests/worker/model/$t" > "$OUT/$t.log" 2>&1; then
    echo "FAILED: $t (see $OUT/$t.log)"
    status=1
  fi
done
if grep -q "^\[  SKIPPED \]" "$OUT/model_cuda_test.log"; then
  echo "FAILED: model_cuda_test skipped tests on a GPU machine"
  status=1
fi

: > "$OUT/figures.jsonl"
for args in "--backend cuda --batch 256" "--backend cuda --batch 4096" "--backend cpu --batch 256"; do
  # shellcheck disable=SC2086
  if "$BUILD/bench/model_bench" $args --seconds 3 > "$OUT/bench.tmp" 2>&1; then
    tail -n 1 "$OUT/bench.tmp" >> "$OUT/figures.jsonl"
  else
    echo "FAILED: model_bench $args"
    cat "$OUT/bench.tmp"
    status=1
  fi
done
rm -f "$OUT/bench.tmp"
cat "$OUT/figures.jsonl"
exit $status
