#!/usr/bin/env bash
# End-to-end training throughput: din_gen data, 1 parameter server + W workers under
# mpirun on this machine, DIN on the CPU backend (staleness 0, PREPASS counts), all
# parameter-server traffic included. In the same run, the PyTorch reference
# (../shared/peers/din_torch.py run by bench/peer_torch.py with /usr/bin/python3, or
# $DIN_PEERS_DIR/din_torch.py) when that python can import torch; otherwise its figures
# are null. With --workers N > 1 the same job also runs with trainer.sparse_step=ASYNC
# (each worker's push its own step) and the line adds async_samples_per_s,
# async_test_gauc and sync_async_ratio (the default synchronous step's samples/s over the
# asynchronous one's, same run).
#
# Like for like with the reference:
#   model     the same fields (user, item, cate, histories: --use-user), dims 16, batch
#             256, history 50, Dice, attention [80, 40] and top MLP [200, 80];
#   optimizer Adam 0.001 for the embeddings (the reference: SparseAdam) and the dense
#             weights; MBA lambda 0.01 on every table (the reference: --mba 0.01);
#   threads   the trainer runs ps.threads = 1 lane per server and trainer.threads = 1
#             compute thread per worker (OMP_NUM_THREADS=1); the reference gets their
#             total, servers + workers, as torch.set_num_threads and OMP_NUM_THREADS
#             (peer_threads). ZeroMQ's I/O threads (one per process) are not counted;
#   timing    data loading OUT for both (ratio): the reference's training loop on tensors
#             already in memory (its samples_per_s), against the trainer's train_seconds
#             (training steps, PREPASS and evaluation excluded) less its reading and
#             parsing of the same epochs, measured in this run by reader_bench on the same
#             file with the trainer's partitions and shuffle block (reader_seconds); and
#             data loading IN for both (ratio_with_loading): the trainer's train_seconds
#             as they are, against the reference's loop plus its loading of train.tsv
#             (load_train_seconds, Python parsing into padded tensors).
#   attention the trainer scores only real history positions (ragged); the reference
#             pads every sample to 50. attention_padded_over_ragged is the ratio of
#             activation-unit FLOPs per epoch (50 / mean history length of train.tsv),
#             reported on its own: it is part of why the speeds differ, not corrected for.
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
servers=1
ps_threads=1
trainer_threads=1
peer_threads=$((servers * ps_threads + workers * trainer_threads))
mba=0.01
data="$build/bench/e2e_data_$rows"
if [ ! -f "$data/bayes.json" ]; then
  "$build/tools/din_gen" --out "$data" --rows "$rows" --test_rows 20000 --seed 1 >/dev/null
fi
job() {
  OMP_NUM_THREADS="$trainer_threads" BUILD_DIR="$build" ./launch/din-train \
    --config launch/configs/quickstart.pbtxt \
    --train "$data/train.tsv" --test "$data/test.tsv" --servers "$servers" \
    --workers "$workers" --epochs "$epochs" --backend cpu --set "ps.threads=$ps_threads" \
    --set "trainer.threads=$trainer_threads" --set "tables[user].mba_lambda=$mba" \
    --set "tables[item].mba_lambda=$mba" --set "tables[cate].mba_lambda=$mba" "$@" \
    2> >(grep -v '^I20' >&2) | tail -n 1
}
result="$(job)"
async="null"
if [ "$workers" -gt 1 ]; then
  async="$(job --set trainer.sparse_step=ASYNC)"
fi
# The trainer's reading and parsing of the same file, as its workers do it (StepReader
# with data.partitions = min(64, batch) and the quickstart's 100000-sample shuffle).
reader="$("$build/bench/reader_bench" --input "$data/train.tsv" --batch 256 --repeat 1 \
  --partitions 64 | tail -n 1)"

peer="null"
peer_python="${DIN_PEER_PYTHON:-/usr/bin/python3}"
peer_py="${DIN_PEERS_DIR:-$root/../shared/peers}/din_torch.py"
if [ -f "$peer_py" ] && "$peer_python" -c "import torch" 2>/dev/null; then
  peer="$("$peer_python" bench/peer_torch.py "$peer_py" "$data" --epochs "$epochs" --dim 16 \
    --batch 256 --maxlen 50 --act dice --lr 0.001 --mba "$mba" --use-user \
    --threads "$peer_threads" | tail -n 1)"
else
  echo "e2e: $peer_python cannot import torch or $peer_py is missing; the peer is skipped" >&2
fi

python3 - "$result" "$peer" "$async" "$reader" "$data/train.tsv" "$workers" "$peer_threads" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
peer = None if sys.argv[2] == "null" else json.loads(sys.argv[2])
a = None if sys.argv[3] == "null" else json.loads(sys.argv[3])
reader = json.loads(sys.argv[4])
train_path, workers, peer_threads = sys.argv[5], int(sys.argv[6]), int(sys.argv[7])

# Attention FLOPs per epoch: the activation unit [4*2*16 -> 80 -> 40 -> 1] per scored
# history position, forward multiply-adds x 2 (backward is about twice that on both sides).
maxlen, d = 50, 2 * 16
unit_flops = 2 * (4 * d * 80 + 80 * 40 + 40 * 1)
positions = samples = 0
with open(train_path) as f:
    for line in f:
        c = line.rstrip("\n").split("\t")
        positions += min(maxlen, len([x for x in c[4].split(",") if x]))
        samples += 1
ragged = unit_flops * positions
padded = unit_flops * maxlen * samples

trained = r["samples_trained"] if "samples_trained" in r else r["train_rows"] * r["epochs"]
# Each worker reads its share of the epochs' rows at the measured rate, in parallel.
reader_seconds = trained / workers / reader["step_shuffled_rows_per_s"]
compute_seconds = r["train_seconds"] - reader_seconds
sps_in = r["train_samples_per_s"]
sps_out = trained / compute_seconds if compute_seconds > 0 else None
peer_out = peer_in = None
if peer:
    peer_out = peer["samples_per_s"]
    peer_trained = peer["train_rows"] * peer["epochs"]
    # The reference loads train.tsv once for all epochs.
    peer_in = peer_trained / (peer["train_seconds"] + peer["load_train_seconds"])
div = lambda x, y: round(x / y, 3) if x and y else None
out = {"bench": "e2e",
       "timing": "ratio: data loading out for both; ratio_with_loading: in for both",
       "samples_per_s": round(sps_out, 1) if sps_out else None,
       "peer_samples_per_s": peer_out,
       "ratio": div(sps_out, peer_out),
       "samples_per_s_with_loading": sps_in,
       "peer_samples_per_s_with_loading": round(peer_in, 1) if peer_in else None,
       "ratio_with_loading": div(sps_in, peer_in),
       "reader_seconds": round(reader_seconds, 3), "train_seconds": r["train_seconds"],
       "peer_train_seconds": peer["train_seconds"] if peer else None,
       "peer_load_train_seconds": peer["load_train_seconds"] if peer else None,
       "trainer_threads": r["servers"] + workers, "peer_threads": peer_threads,
       "peer_torch_threads": peer.get("torch_threads") if peer else None,
       "attention_gflops_ragged": round(ragged / 1e9, 2),
       "attention_gflops_padded": round(padded / 1e9, 2),
       "attention_padded_over_ragged": round(padded / ragged, 3) if ragged else None,
       "mean_history": round(positions / samples, 2),
       "workers": r["workers"], "servers": r["servers"], "train_rows": r["train_rows"],
       "epochs": r["epochs"], "test_gauc": r["test_gauc"],
       "peer_test_gauc": peer.get("test_gauc") if peer else None,
       "test_auc": r["test_auc"], "peer_test_auc": peer.get("test_auc") if peer else None,
       "pull_ms_p50": r["pull_ms_p50"], "push_ms_p50": r["push_ms_p50"],
       "step_ms_p50": r["step_ms_p50"],
       "sparse_step": r.get("sparse_step"),
       "async_samples_per_s": a["train_samples_per_s"] if a else None,
       "async_test_gauc": a["test_gauc"] if a else None,
       "sync_async_ratio": r["train_samples_per_s"] / a["train_samples_per_s"] if a else None}
print(json.dumps(out))
PY
