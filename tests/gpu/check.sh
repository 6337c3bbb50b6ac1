#!/usr/bin/env bash
# The one command that verifies the CUDA path on a GPU machine:
#   tests/gpu/check.sh OUT_DIR
# Builds with CUDA; runs the parity tests (they must run, not skip), again with
# DIN_CUDA_DEBUG=1 and under compute-sanitizer (memcheck, racecheck); model_bench on the
# GPU; a 200k-row din_gen training job with --backend cuda. Every log and figure goes to
# OUT_DIR (summary.tsv, figures.jsonl). Exits non-zero on any failure. See
# tests/worker/model/gpu_check.sh; its pass/fail logic is tested without a GPU by the
# ctest test gpu_check_logic.
set -euo pipefail
exec "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/worker/model/gpu_check.sh" "$@"
