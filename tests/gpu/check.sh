#!/usr/bin/env bash
# The one command that verifies the CUDA path on a GPU machine:
#   tests/gpu/check.sh OUT_DIR
# Builds with CUDA, runs the GPU tests (they must run, not skip) and the model benchmark
# on the GPU, and writes logs and figures.jsonl to OUT_DIR. Exits non-zero on any failure.
set -euo pipefail
exec "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/worker/model/gpu_check.sh" "$@"
