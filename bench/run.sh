#!/usr/bin/env bash
# Runs one benchmark from the repository root, building it first if needed:
#   bench/run.sh ps_bench [args]     din_ps + 2 clients under mpirun (loopback)
#   bench/run.sh table_bench [args]  one shard, 10M rows by default (--rows=N)
# The last line of output is one JSON object of figures.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
name="${1:?usage: bench/run.sh NAME [args]}"
shift
build="${BUILD_DIR:-build}"
if [ ! -f "$build/build.ninja" ] && [ ! -f "$build/Makefile" ]; then
  ./launch/install-deps.sh
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$build" -j "$(nproc)" --target "$name" din_ps >/dev/null
case "$name" in
  ps_bench)
    exec ./tests/mpirun.sh -np 1 "$build/ps/din_ps" --config bench/ps_bench.pbtxt : \
      -np 2 "$build/bench/ps_bench" --config bench/ps_bench.pbtxt "$@" 2> >(grep -v '^I20' >&2)
    ;;
  *)
    exec "$build/bench/$name" "$@"
    ;;
esac
