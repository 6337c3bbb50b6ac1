#!/usr/bin/env bash
# The main job on this machine, from nothing: installs missing dependencies, builds,
# generates a synthetic click log with din_gen (200k training rows, 20k test rows, with
# its Bayes-optimal ceiling), trains DIN with 2 parameter servers and 2 workers under
# mpirun (loopback only) and prints the test metrics next to the ceiling (on stderr).
# stdout holds the trainer's one JSON line of figures. The trained embeddings are dumped
# to DATA_DIR/dump (TABLE/part-*.npy, MANIFEST, _SUCCESS) and checked with din_dump;
# tools/din_plot draws DATA_DIR/metrics.jsonl (an evaluation every 250 steps) into
# DATA_DIR/metrics.png.
#
# Environment: BUILD_DIR (default build/), DATA_DIR (default data/quickstart/), ROWS,
# SERVERS, WORKERS, CONFIG; extra arguments go to launch/din-train (e.g. --set ...).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
./launch/install-deps.sh
build="${BUILD_DIR:-build}"
if [ ! -f "$build/build.ninja" ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
fi
cmake --build "$build" -j "$(nproc)" --target din_ps din_worker din_gen din_dump

data="${DATA_DIR:-data/quickstart}"
rows="${ROWS:-200000}"
# Regenerate only when the data is missing or was made with other settings.
stamp="rows=$rows test_rows=20000 seed=1"
if [ ! -f "$data/bayes.json" ] || [ "$(cat "$data/.stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "quickstart: generating $rows training rows into $data" >&2
  "$build/tools/din_gen" --out "$data" --rows "$rows" --test_rows 20000 --seed 1 >/dev/null
  echo "$stamp" > "$data/.stamp"
fi

out="$(mktemp)"
trap 'rm -f "$out"' EXIT
BUILD_DIR="$build" ./launch/din-train \
  --config "${CONFIG:-launch/configs/quickstart.pbtxt}" \
  --train "$data/train.tsv" --test "$data/test.tsv" \
  --servers "${SERVERS:-2}" --workers "${WORKERS:-2}" \
  --metrics "$data/metrics.jsonl" --dump "$data/dump" \
  --set trainer.eval_every_steps=250 "$@" | tee "$out"

python3 - "$out" <<'PY'
import json, sys
lines = [l for l in open(sys.argv[1]) if l.startswith("{")]
if not lines:
    sys.exit("quickstart: the job printed no result line")
r = json.loads(lines[-1])
print("\nDIN on %d rows x %d epochs: %.0f samples/s over %d workers, %d servers"
      % (r["train_rows"], r["epochs"], r["train_samples_per_s"], r["workers"], r["servers"]),
      file=sys.stderr)
print("%-8s %8s %14s" % ("", "DIN", "Bayes ceiling"), file=sys.stderr)
for k in ("auc", "gauc", "logloss"):
    print("%-8s %8.4f %14.4f" % (k, r["test_" + k], r.get("bayes_test_" + k, float("nan"))),
          file=sys.stderr)
PY
"$build/tools/din_dump" inspect "$data/dump" >&2
echo "quickstart: embeddings dumped to $data/dump" >&2
png="$(python3 tools/din_plot "$data/metrics.jsonl" "$data/metrics.png")"
echo "quickstart: training curves (loss, AUC/GAUC, samples/s, latencies) in $png" >&2
