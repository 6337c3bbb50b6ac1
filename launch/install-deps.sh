#!/usr/bin/env bash
# Installs every Debian package the build, the tests and the launcher need.
# Idempotent: does nothing (and needs no network) when all are present.
set -euo pipefail
PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libopenmpi-dev openmpi-bin
  libzmq3-dev cppzmq-dev
  libprotobuf-dev protobuf-compiler
  libeigen3-dev libgoogle-glog-dev libgflags-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev
  python3 python3-numpy python3-matplotlib
  clang-format
  clang libclang-rt-dev llvm  # tests/run.sh: libFuzzer (libclang_rt.fuzzer), llvm-symbolizer
)
# --bench adds what bench/e2e.sh's PyTorch reference needs (../shared/peers/din_torch.py);
# the build and the tests do not need it.
if [ "${1:-}" = "--bench" ]; then
  PACKAGES+=(python3-torch python3-sklearn)
fi
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
