#!/usr/bin/env bash
# The main job on built-in defaults, on this machine: installs missing dependencies,
# builds, starts 2 parameter servers and 2 workers under mpirun (loopback only) and runs
# the workers' end-to-end self-check of the parameter servers (pull, push through each
# table's optimizer, evaluation pulls, counts), printing one JSON line of figures.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
./launch/install-deps.sh
build="${BUILD_DIR:-build}"
if [ ! -f "$build/build.ninja" ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
fi
cmake --build "$build" -j "$(nproc)" --target din_ps din_worker
config="${CONFIG:-launch/configs/ps_demo.pbtxt}"
cmd=(./tests/mpirun.sh
  -np "${SERVERS:-2}" "$build/ps/din_ps" --config "$config" :
  -np "${WORKERS:-2}" "$build/worker/din_worker" --config "$config" --mode=selfcheck "$@")
echo "+ ${cmd[*]}"
"${cmd[@]}"
