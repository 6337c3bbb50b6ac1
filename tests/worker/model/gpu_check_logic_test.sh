#!/usr/bin/env bash
# The pass/fail logic of tests/gpu/check.sh, on a machine without a GPU: a fake
# nvidia-smi and compute-sanitizer, and the parity tests on the CUDA emulation
# (model_cuda_emu_test) in place of model_cuda_test.
#   gpu_check_logic_test.sh BUILD_DIR
set -uo pipefail
BUILD=${1:?usage: gpu_check_logic_test.sh BUILD_DIR}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin" "$tmp/nogpu"
cat > "$tmp/bin/nvidia-smi" <<'SH'
#!/bin/sh
echo "GPU 0: Fake GPU (UUID: GPU-0)"
SH
# compute-sanitizer --tool T --error-exitcode N BIN ARGS...: runs BIN; reports
# $FAKE_SANITIZER_ERRORS errors (default 0).
cat > "$tmp/bin/compute-sanitizer" <<'SH'
#!/bin/bash
tool=; code=1
while [[ $1 == --* ]]; do
  case $1 in --tool) tool=$2; shift 2 ;; --error-exitcode) code=$2; shift 2 ;; *) shift ;; esac
done
"$@"; rc=$?
n=${FAKE_SANITIZER_ERRORS:-0}
if [ "$tool" = racecheck ]; then echo "========= RACECHECK SUMMARY: $n hazards displayed"
else echo "========= ERROR SUMMARY: $n errors"; fi
if [ "$n" != 0 ]; then exit "$code"; fi
exit $rc
SH
cp "$tmp/bin/compute-sanitizer" "$tmp/nogpu/compute-sanitizer"
chmod +x "$tmp/bin/"* "$tmp/nogpu/"*

fails=0
# expect NAME WANT_STATUS(0|nonzero) GREP_IN_SUMMARY [env...]
expect() {
  local name=$1 want=$2 pattern=$3
  shift 3
  local out="$tmp/out-$name"
  env "$@" DIN_GPU_BUILD_DIR="$BUILD" DIN_GPU_CHECK_BUILD=0 \
    DIN_GPU_CHECK_TEST_BIN=model_cuda_emu_test DIN_GPU_CHECK_STEPS="tests debug sanitizer" \
    DIN_GPU_CHECK_FILTER='*SmallProblemMatchesCpu/SumDice:*NoDeviceIsAClearError:*DeviceFromLocalRank' \
    "$ROOT/tests/worker/model/gpu_check.sh" "$out" > "$tmp/$name.log" 2>&1
  local rc=$?
  local ok=1
  if [ "$want" = 0 ] && [ $rc != 0 ]; then ok=0; fi
  if [ "$want" != 0 ] && [ $rc = 0 ]; then ok=0; fi
  if ! grep -qE "$pattern" "$out/summary.tsv"; then ok=0; fi
  if [ $ok = 1 ]; then
    echo "ok: $name (exit $rc)"
  else
    echo "FAILED: $name: exit $rc, wanted $want and /$pattern/ in summary.tsv:"
    cat "$tmp/$name.log"
    fails=$((fails + 1))
  fi
}

export PATH_GPU="$tmp/bin:$PATH"
# Everything passes; NoDeviceIsAClearError skips (a device exists) and must not count.
expect all_pass 0 '^tests	PASS' PATH="$tmp/bin:$PATH"
# No GPU listed: fails at once.
expect no_gpu nonzero '^gpu	FAIL' PATH="$tmp/nogpu:/usr/bin:/bin"
# The parity tests skip (no usable device): a wasted run is a failure.
expect skipped nonzero '^tests	FAIL.*skipped' PATH="$tmp/bin:$PATH" DIN_CUDA_EMU_DEVICES=0
# The sanitizer reports errors.
expect sanitizer_errors nonzero '^memcheck	FAIL' PATH="$tmp/bin:$PATH" FAKE_SANITIZER_ERRORS=2
# A parity test fails.
expect test_fails nonzero '^tests	FAIL' PATH="$tmp/bin:$PATH" \
  DIN_GPU_CHECK_FILTER='*SmallProblemMatchesCpu/SumDice' GTEST_FAIL_FAST=0 \
  DIN_CUDA_EMU_FAIL_LAUNCH=SumChunksKernel
exit $((fails > 0))
