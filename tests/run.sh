#!/usr/bin/env bash
# Installs missing dependencies, builds (Release, tests on) and runs every test with ctest.
#   ./tests/run.sh                 all tests, then the sanitizer and fuzzing stages below
#   ./tests/run.sh -L mpi          only the distributed ones (any ctest arguments pass through;
#                                  the extra stages then run only when asked for)
# BUILD_DIR (default build/) and JOBS (default: cores) can be set in the environment.
#
# First, formatting: any C++ file that clang-format (.clang-format) would change fails the run.
# Extra stages, after the main build and tests (each in its own build tree):
#   DIN_CI_SANITIZERS=1  build-asan/ (ASan+UBSan): every unit test; build-tsan/ (TSan): the
#                        tests labelled tsan (parameter-server concurrency, the CUDA
#                        emulation's barrier kernels). Any sanitizer report fails.
#   DIN_CI_FUZZ=1        build-fuzz/ (clang, libFuzzer): each fuzzer for DIN_FUZZ_SECONDS
#                        (default 60) from its seed corpus; a crash fails, and the input
#                        is left in build-fuzz/artifacts/.
# Both default to 1 without ctest arguments and to 0 with them; set 0 to skip.
#
# Skips: a gtest case that calls GTEST_SKIP and a script that exits 77 show as skipped in
# ctest's summary; the run ends with the list of skipped tests and their reasons (also
# when it fails). DIN_CI=1 is exported: a dependency this script installs (numpy) missing
# is then a failure, not a skip.
# The CUDA backend's tests run in every stage without a GPU: the default build compiles
# its source against a CPU emulation of CUDA (DIN_CUDA_EMULATION, ctest label cuda_emu;
# unit tests among them run under ASan+UBSan, cuda_emu_test under TSan too).
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

export DIN_CI=1

stage() { echo "==== $1 ($(date +%T))"; }
# The names of the ctest tests of build tree $1 that carry label $2.
labelled_tests() {
  (cd "$1" && ctest -N -L "$2") | sed -n 's/^ *Test *#[0-9]*: *\([^ ]*\).*/\1/p'
}
# The gtest binaries behind those tests: a case is BINARY.Suite.Case, a binary not built
# yet is BINARY_NOT_BUILT (tests/CMakeLists.txt, din_add_test).
labelled_binaries() {
  labelled_tests "$1" "$2" | sed 's/\..*//; s/_NOT_BUILT$//' | sort -u
}
# Each ctest stage writes JUnit results; the skipped tests are listed from them at exit.
junit=()
report_skips() {
  stage "skipped tests"
  python3 "$root/tests/skipped_report.py" "${junit[@]}" || true
}
trap report_skips EXIT

stage "format: clang-format --dry-run over every C++ and CUDA file"
if git rev-parse --git-dir >/dev/null 2>&1; then
  git ls-files '*.cc' '*.h' '*.cu' | xargs clang-format --dry-run -Werror
else
  find common ps worker tools bench tests \( -name '*.cc' -o -name '*.h' -o -name '*.cu' \) \
    -print0 | xargs -0 clang-format --dry-run -Werror
fi

stage "main build and tests"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDIN_BUILD_TESTS=ON ${CMAKE_ARGS:-}
cmake --build "$build" -j "$jobs"
main_junit="$(cd "$build" && pwd)/ctest-junit.xml"
rm -f "$main_junit"
junit+=("main=$main_junit")
(cd "$build" && ctest --output-on-failure -j 1 --output-junit "$main_junit" "$@")

# A sanitizer report ends the test process with a non-zero status.
export ASAN_OPTIONS="abort_on_error=1:detect_leaks=1:strict_string_checks=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"

if [ "$sanitizers" = 1 ]; then
  stage "ASan+UBSan: unit tests"
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDIN_CUDA=OFF \
    -DDIN_BUILD_BENCH=OFF -DDIN_BUILD_TESTS=ON "-DDIN_SANITIZE=address;undefined"
  cmake --build build-asan -j "$jobs"
  rm -f build-asan/ctest-junit.xml
  junit+=("asan=$root/build-asan/ctest-junit.xml")
  (cd build-asan &&
     ctest --output-on-failure -j 1 -L unit --output-junit "$root/build-asan/ctest-junit.xml")

  stage "TSan: concurrency tests (ctest label tsan)"
  cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDIN_CUDA=OFF \
    -DDIN_BUILD_BENCH=OFF -DDIN_BUILD_TESTS=ON -DDIN_SANITIZE=thread
  # Each such test is a case of a gtest binary (din_add_test).
  mapfile -t tsan_tests < <(labelled_binaries build-tsan tsan)
  [ ${#tsan_tests[@]} -gt 0 ] || { echo "no test carries the label tsan" >&2; exit 1; }
  cmake --build build-tsan -j "$jobs" --target "${tsan_tests[@]}"
  rm -f build-tsan/ctest-junit.xml
  junit+=("tsan=$root/build-tsan/ctest-junit.xml")
  (cd build-tsan && TSAN_OPTIONS="halt_on_error=1:suppressions=$root/tests/tsan.supp" \
     ctest --output-on-failure -j 1 -L tsan --output-junit "$root/build-tsan/ctest-junit.xml")
fi

if [ "$fuzz" = 1 ]; then
  stage "libFuzzer: ${fuzz_seconds} s per fuzzer"
  CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DDIN_CUDA=OFF -DDIN_BUILD_BENCH=OFF -DDIN_BUILD_TESTS=ON -DDIN_FUZZ=ON
  # Every harness registers its corpus test fuzz_NAME_corpus with the label fuzzer.
  mapfile -t fuzzers < <(labelled_tests build-fuzz fuzzer | sed -n 's/^fuzz_\(.*\)_corpus$/\1/p')
  [ ${#fuzzers[@]} -gt 0 ] || { echo "no test carries the label fuzzer" >&2; exit 1; }
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
