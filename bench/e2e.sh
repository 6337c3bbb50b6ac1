#!/usr/bin/env bash
# End-to-end training throughput: din_gen data, 1 parameter server + 1 worker under
# mpirun on this machine, DIN on the CPU backend (staleness 0, PREPASS counts), all
# parameter-server traffic included. In the same run, the PyTorch reference
# (../shared/peers/din_torch.py, same data, dims, batch, epochs and optimizer family)
# when python3 can import torch; otherwise its figures are null. With --workers N > 1 the
# same job also runs with trainer.sparse_step=ASYNC (each worker's push its own step) and
# the line adds async_samples_per_s, async_test_gauc and sync_async_ratio (the default
# synchronous step's samples/s over the asynchronous one's, same run).
#
#   bench/run.sh e2e [--rows N] [--epochs N] [--workers N]
#
# Last line: {"bench":"e2e","samples_per_s":...,"peer_samples_per_s":...,"ratio":...,...}
set -euo pipefail
root="${DIN_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
build="${BUILD_DIR:-$root/build}"
rows=200000
epochs=1
workers=1
while [ $# -gt 0 ]; do
  case "$1" in
    --rows) rows="$2"; shift 2 ;;
    --epochs) epochs="$2"; shift 2 ;;
    --workers) workers="$2"; shift 2 ;;
    *) echo "usage: bench/run.sh e2e [--rows N] [--epochs N] [--workers N]" >&2; exit 2 ;;
  esac
done
cd "$root"
data="$build/bench/e2e_data_$rows"
if [ ! -f "$data/bayes.json" ]; then
  "$build/tools/din_gen" --out "$data" --rows "$rows" --test_rows 20000 --seed 1 >/dev/null
fi
job() {
  BUILD_DIR="$build" ./launch/din-train --config launch/configs/quickstart.pbtxt \
    --train "$data/train.tsv" --test "$data/test.tsv" --servers 1 --workers "$workers" \
    --epochs "$epochs" --backend cpu "$@" 2> >(grep -v '^I20' >&2) | tail -n 1
}
result="$(job)"
async="null"
if [ "$workers" -gt 1 ]; then
  async="$(job --set trainer.sparse_step=ASYNC)"
fi

peer="null"
peer_py="$root/../shared/peers/din_torch.py"
if [ -f "$peer_py" ] && python3 -c "import torch" 2>/dev/null; then
  peer="$(python3 "$peer_py" "$data" --epochs "$epochs" --dim 16 --batch 256 --maxlen 50 \
    --threads "$(nproc)" | tail -n 1)"
else
  echo "e2e: PyTorch not importable; the peer is skipped" >&2
fi

python3 - "$result" "$peer" "$async" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
peer = None if sys.argv[2] == "null" else json.loads(sys.argv[2])
a = None if sys.argv[3] == "null" else json.loads(sys.argv[3])
peer_sps = None
if peer:
    for k in ("train_samples_per_s", "samples_per_s"):
        if k in peer:
            peer_sps = peer[k]
            break
out = {"bench": "e2e", "samples_per_s": r["train_samples_per_s"],
       "peer_samples_per_s": peer_sps,
       "ratio": (r["train_samples_per_s"] / peer_sps) if peer_sps else None,
       "workers": r["workers"], "servers": r["servers"], "train_rows": r["train_rows"],
       "epochs": r["epochs"], "test_gauc": r["test_gauc"],
       "peer_test_gauc": peer.get("test_gauc") if peer else None,
       "pull_ms_p50": r["pull_ms_p50"], "push_ms_p50": r["push_ms_p50"],
       "step_ms_p50": r["step_ms_p50"],
       "sparse_step": r.get("sparse_step"),
       "async_samples_per_s": a["train_samples_per_s"] if a else None,
       "async_test_gauc": a["test_gauc"] if a else None,
       "sync_async_ratio": r["train_samples_per_s"] / a["train_samples_per_s"] if a else None}
print(json.dumps(out))
PY
