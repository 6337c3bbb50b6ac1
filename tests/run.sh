#!/usr/bin/env bash
# Installs missing dependencies, builds (Release, tests on) and runs every test with ctest.
#   ./tests/run.sh                 all tests, then the sanitizer and fuzzing stages below
#   ./tests/run.sh -L mpi          only the distributed ones (any ctest arguments pass through;
#                                  the extra stages then run only when asked for)
# BUILD_DIR (default build/) and JOBS (default: cores) can be set in the environment.
#
# Extra stages, after the main build and tests (each in its own build tree):
#   DIN_CI_SANITIZERS=1  build-asan/ (ASan+UBSan): every unit test; build-tsan/ (TSan): the
#                        parameter-server concurrency tests. Any sanitizer report fails.
#   DIN_CI_FUZZ=1        build-fuzz/ (clang, libFuzzer): each fuzzer for DIN_FUZZ_SECONDS
#                        (default 60) from its seed corpus; a crash fails, and the input
#                        is left in build-fuzz/artifacts/.
# Both default to 1 without ctest arguments and to 0 with them; set 0 to skip.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
./launch/install-deps.sh
build="${BUILD_DIR:-build}"
jobs="${JOBS:-$(nproc)}"
extra_default=1
if [ $# -gt 0 ]; then extra_default=0; fi
sanitizers="${DIN_CI_SANITIZERS:-$extra_default}"
fuzz="${DIN_CI_FUZZ:-$extra_default}"
fuzz_seconds="${DIN_FUZZ_SECONDS:-60}"

stage() { echo "==== $1 ($(date +%T))"; }

stage "main build and tests"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDIN_BUILD_TESTS=ON ${CMAKE_ARGS:-}
cmake --build "$build" -j "$jobs"
(cd "$build" && ctest --output-on-failure -j 1 "$@")

# A sanitizer report ends the test process with a non-zero status.
export ASAN_OPTIONS="abort_on_error=1:detect_leaks=1:strict_string_checks=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"

if [ "$sanitizers" = 1 ]; then
  stage "ASan+UBSan: unit tests"
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDIN_CUDA=OFF \
    -DDIN_BUILD_BENCH=OFF -DDIN_BUILD_TESTS=ON "-DDIN_SANITIZE=address;undefined"
  cmake --build build-asan -j "$jobs"
  (cd build-asan && ctest --output-on-failure -j 1 -L unit)

  stage "TSan: parameter-server concurrency tests"
  tsan_tests=(lane_handler_test ps_client_test live_server_garbage_test)
  cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDIN_CUDA=OFF \
    -DDIN_BUILD_BENCH=OFF -DDIN_BUILD_TESTS=ON -DDIN_SANITIZE=thread
  cmake --build build-tsan -j "$jobs" --target "${tsan_tests[@]}"
  regex="^($(IFS='|'; echo "${tsan_tests[*]}"))\$"
  (cd build-tsan && TSAN_OPTIONS="halt_on_error=1:suppressions=$root/tests/tsan.supp" \
     ctest --output-on-failure -j 1 -R "$regex")
fi

if [ "$fuzz" = 1 ]; then
  stage "libFuzzer: ${fuzz_seconds} s per fuzzer"
  fuzzers=(lane_handler ps_reply line_parser reader config)
  CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DDIN_CUDA=OFF -DDIN_BUILD_BENCH=OFF -DDIN_BUILD_TESTS=ON -DDIN_FUZZ=ON
  cmake --build build-fuzz -j "$jobs" --target "${fuzzers[@]/#/fuzz_}"
  mkdir -p build-fuzz/artifacts
  for f in "${fuzzers[@]}"; do
    stage "fuzz_$f"
    # New inputs go to build-fuzz/corpus/; the checked-in seeds are only read.
    rm -rf "build-fuzz/corpus/$f" && mkdir -p "build-fuzz/corpus/$f"
    dict=()
    if [ -f "tests/fuzz/$f.dict" ]; then dict=("-dict=tests/fuzz/$f.dict"); fi
    "build-fuzz/tests/fuzz/fuzz_$f" -max_total_time="$fuzz_seconds" -timeout=30 \
      -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="build-fuzz/artifacts/$f-" \
      "${dict[@]}" "build-fuzz/corpus/$f" "tests/fuzz/corpus/$f"
  done
fi
stage "done"
