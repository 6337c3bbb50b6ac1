#!/usr/bin/env bash
# The one command that verifies the model's CUDA path on a GPU machine:
#   tests/gpu/check.sh OUT_DIR        (this script)
# In order, each step with its own time limit, every log and figure under OUT_DIR:
#   gpu        nvidia-smi must list a GPU (else nothing else runs)
#   build      CUDA build (-DDIN_CUDA=ON) of the parity tests, model_bench and the trainer
#   tests      model_cuda_test: every CUDA test must pass and none may skip (the
#              NoDeviceIsAClearError test skips by design where a device exists)
#   more       the CUDA cases of model_batch_stats_sync_test (Dice statistics summed over
#              workers, a CPU and a CUDA worker together) and model_reference_test (the
#              independent double-precision forward pass): all pass, none skips
#   debug      the parity tests again with DIN_CUDA_DEBUG=1 (a check after every launch)
#   sanitizer  compute-sanitizer memcheck and racecheck over a subset of the parity
#              tests: no error reported
#   bench      model_bench on cuda (batch 256 and 4096) and cpu: figures.jsonl
#   train      din_gen 200k rows, then a 1-epoch job with --backend cuda (1 server,
#              2 workers sharing the GPU): its JSON line goes to figures.jsonl
# OUT_DIR/summary.tsv has one line per step: name, PASS/FAIL/SKIP, seconds, note. Exits
# non-zero when any step fails. About 6 minutes on 16 cores, most of it the build.
#
# Environment (defaults in brackets), for partial runs and for testing this script
# without a GPU (tests/worker/model/gpu_check_logic_test.sh):
#   DIN_GPU_BUILD_DIR [ROOT/build-gpu]     DIN_GPU_CHECK_BUILD [1]: 0 uses the build as is
#   DIN_GPU_CHECK_STEPS [tests more debug sanitizer bench train]
#   DIN_GPU_CHECK_TEST_BIN [model_cuda_test]   DIN_GPU_CHECK_FILTER [*]: the tests step's
#   gtest filter       COMPUTE_SANITIZER [compute-sanitizer, else /usr/local/cuda/bin/...]
set -uo pipefail
OUT=${1:?usage: gpu_check.sh OUT_DIR}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
BUILD=${DIN_GPU_BUILD_DIR:-$ROOT/build-gpu}
STEPS=${DIN_GPU_CHECK_STEPS:-tests more debug sanitizer bench train}
BIN_NAME=${DIN_GPU_CHECK_TEST_BIN:-model_cuda_test}
FILTER=${DIN_GPU_CHECK_FILTER:-*}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
: > "$OUT/summary.tsv"
: > "$OUT/figures.jsonl"
failed=0

record() {  # step status seconds note
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$OUT/summary.tsv"
  printf 'gpu_check: %-10s %-4s %4ss  %s\n' "$1" "$2" "$3" "$4"
  if [ "$2" = FAIL ]; then failed=1; fi
}
wants() { [[ " $STEPS " == *" $1 "* ]]; }
now() { date +%s; }

# gtest output: the run passed, and no test skipped except NoDeviceIsAClearError.
gtest_ok() {  # log rc -> prints a note, returns 0 when fine
  local log=$1 rc=$2 skipped
  skipped=$(grep -E '^\[  SKIPPED \] [A-Za-z0-9_/]+\.[A-Za-z0-9_/]+' "$log" |
    grep -v 'NoDeviceIsAClearError' | sort -u | sed 's/^\[  SKIPPED \] //' | tr '\n' ' ')
  if [ "$rc" != 0 ]; then
    echo "exit status $rc: $(grep -E '^\[  FAILED  \] [A-Za-z]' "$log" | sort -u | head -5 |
      sed 's/^\[  FAILED  \] //' | tr '\n' ' ')"
    return 1
  fi
  if [ -n "$skipped" ]; then echo "skipped on a GPU machine: $skipped"; return 1; fi
  if ! grep -q '^\[  PASSED  \] [1-9]' "$log"; then echo "no test ran"; return 1; fi
  echo "$(grep -E '^\[  PASSED  \]' "$log" | tail -1)"
}

# gpu
t0=$(now)
if nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  record gpu PASS $(($(now) - t0)) "$(nvidia-smi -L | head -1)"
else
  record gpu FAIL $(($(now) - t0)) "nvidia-smi lists no GPU (see nvidia-smi.txt)"
  exit 1
fi

# build
if [ "${DIN_GPU_CHECK_BUILD:-1}" = 1 ]; then
  t0=$(now)
  GEN=()
  command -v ninja > /dev/null && GEN=(-G Ninja)
  if cmake -S "$ROOT" -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DDIN_CUDA=ON \
       -DDIN_CUDA_EMULATION=OFF -DDIN_BUILD_TESTS=ON > "$OUT/configure.log" 2>&1 &&
     timeout 420 cmake --build "$BUILD" -j"$(nproc)" --target "$BIN_NAME" model_bench \
       model_batch_stats_sync_test model_reference_test \
       din_ps din_worker din_gen > "$OUT/build.log" 2>&1; then
    record build PASS $(($(now) - t0)) ""
  else
    record build FAIL $(($(now) - t0)) "see configure.log, build.log"
    exit 1
  fi
fi
BIN="$BUILD/tests/worker/model/$BIN_NAME"

if wants tests; then
  t0=$(now)
  timeout 240 "$BIN" --gtest_filter="$FILTER" --gtest_output="xml:$OUT/$BIN_NAME.xml" \
    > "$OUT/tests.log" 2>&1
  rc=$?
  if note=$(gtest_ok "$OUT/tests.log" $rc); then st=PASS; else st=FAIL; fi
  record tests $st $(($(now) - t0)) "$note"
fi

if wants more; then
  t0=$(now)
  st=PASS
  notes=""
  for bin in model_batch_stats_sync_test model_reference_test; do
    timeout 180 "$BUILD/tests/worker/model/$bin" --gtest_filter='*Cuda*:*cuda*' \
      --gtest_output="xml:$OUT/$bin.xml" > "$OUT/$bin.log" 2>&1
    rc=$?
    if note=$(gtest_ok "$OUT/$bin.log" $rc); then :; else st=FAIL; fi
    notes="$notes$bin: $note; "
  done
  record more $st $(($(now) - t0)) "$notes"
fi

# The parity tests that cover every kernel at small sizes, for the slow tools.
SUBSET='*SmallProblemMatchesCpu*:*EdgeBatches*:*MaskedPositions*:*DefaultSizesBatchOf1/AttentionDice*'
if wants debug; then
  t0=$(now)
  DIN_CUDA_DEBUG=1 timeout 120 "$BIN" --gtest_filter="$SUBSET" > "$OUT/debug.log" 2>&1
  rc=$?
  if note=$(gtest_ok "$OUT/debug.log" $rc); then st=PASS; else st=FAIL; fi
  record debug $st $(($(now) - t0)) "$note"
fi

if wants sanitizer; then
  CS=${COMPUTE_SANITIZER:-$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)}
  for tool in memcheck racecheck; do
    t0=$(now)
    filter=$SUBSET
    # racecheck is the slow one: the kernels with shared memory on a few configurations.
    [ $tool = racecheck ] && filter='*SmallProblemMatchesCpu/AttentionDice*:*DefaultSizesBatchOf1/SumDice*'
    timeout 180 "$CS" --tool $tool --error-exitcode 3 "$BIN" --gtest_filter="$filter" \
      > "$OUT/sanitizer-$tool.log" 2>&1
    rc=$?
    summary=$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer-$tool.log" | tail -1)
    if note=$(gtest_ok "$OUT/sanitizer-$tool.log" $rc) &&
       grep -qE '(ERROR|RACECHECK) SUMMARY: 0 (errors|hazards)' "$OUT/sanitizer-$tool.log"; then
      record "$tool" PASS $(($(now) - t0)) "$summary"
    else
      record "$tool" FAIL $(($(now) - t0)) "${summary:-$note}"
    fi
  done
fi

if wants bench; then
  for args in "--backend cuda --batch 256" "--backend cuda --batch 4096" "--backend cpu --batch 256"; do
    t0=$(now)
    name="bench ${args// /_}"
    # shellcheck disable=SC2086
    if timeout 60 "$BUILD/bench/model_bench" $args --seconds 3 > "$OUT/bench.tmp" 2>&1 &&
       tail -n 1 "$OUT/bench.tmp" | grep -q '"samples_per_s"'; then
      tail -n 1 "$OUT/bench.tmp" >> "$OUT/figures.jsonl"
      record bench PASS $(($(now) - t0)) "$args: $(tail -n 1 "$OUT/bench.tmp")"
    else
      record bench FAIL $(($(now) - t0)) "$args: $(tail -n 2 "$OUT/bench.tmp" | tr '\n' ' ')"
    fi
    cat "$OUT/bench.tmp" >> "$OUT/bench.log"
  done
  rm -f "$OUT/bench.tmp"
fi

if wants train; then
  t0=$(now)
  data="$OUT/data"
  if timeout 60 "$BUILD/tools/din_gen" --out "$data" --rows 200000 --test_rows 20000 --seed 1 \
       > "$OUT/din_gen.log" 2>&1 &&
     BUILD_DIR="$BUILD" timeout 240 "$ROOT/launch/din-train" \
       --config "$ROOT/launch/configs/quickstart.pbtxt" --train "$data/train.tsv" \
       --test "$data/test.tsv" --servers 1 --workers 2 --epochs 1 --backend cuda \
       --metrics "$OUT/train_metrics.jsonl" > "$OUT/train.log" 2> "$OUT/train.err" &&
     grep '^{' "$OUT/train.log" | tail -1 | grep -q '"test_auc"'; then
    grep '^{' "$OUT/train.log" | tail -1 >> "$OUT/figures.jsonl"
    record train PASS $(($(now) - t0)) "$(grep '^{' "$OUT/train.log" | tail -1 | cut -c1-200)"
  else
    record train FAIL $(($(now) - t0)) "see din_gen.log, train.log, train.err"
  fi
  rm -rf "$data"
fi

echo "gpu_check: results in $OUT (summary.tsv, figures.jsonl, logs)"
exit $failed
