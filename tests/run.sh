#!/usr/bin/env bash
# Installs missing dependencies, builds (Release, tests on) and runs every test with ctest.
#   ./tests/run.sh                 all tests
#   ./tests/run.sh -L mpi          only the distributed ones (any ctest arguments pass through)
# BUILD_DIR (default build/) and JOBS (default: cores) can be set in the environment.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
./launch/install-deps.sh
build="${BUILD_DIR:-build}"
jobs="${JOBS:-$(nproc)}"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDIN_BUILD_TESTS=ON ${CMAKE_ARGS:-}
cmake --build "$build" -j "$jobs"
cd "$build"
ctest --output-on-failure -j 1 "$@"
