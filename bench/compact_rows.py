#!/usr/bin/env python3
"""What do compact rows cost in quality? Trains the same job with each embedding row
format and reports its test GAUC against float32 Adagrad (per-coordinate state), averaged
over seeds, on din_gen data and ml-latest-small (when present).

  bench/run.sh compact_rows [--seeds N] [--epochs N]

Formats: adagrad/fp32 (the reference), rowwise_adagrad in fp32, fp16 and bf16, and
adagrad in fp16. One JSON line per run, one per (data set, format) with the mean GAUC and
its difference to the reference, then a summary line with the largest loss.
"""
import argparse
import json
import os
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_runs  # noqa: E402

GEN = ["--rows", "60000", "--test_rows", "15000", "--users", "5000", "--items", "30000",
       "--max_history", "20", "--zipf", "1.1"]
# name: (optimizer text, storage); the same learning rate for all (the sweep's middle one).
FORMATS = {
    "adagrad/fp32": ("adagrad {learning_rate: 0.05 initial_accumulator: 0.1}", "FP32"),
    "rowwise_adagrad/fp32": ("rowwise_adagrad {learning_rate: 0.05 initial_accumulator: 0.1}",
                             "FP32"),
    "rowwise_adagrad/fp16": ("rowwise_adagrad {learning_rate: 0.05 initial_accumulator: 0.1}",
                             "FP16"),
    "rowwise_adagrad/bf16": ("rowwise_adagrad {learning_rate: 0.05 initial_accumulator: 0.1}",
                             "BF16"),
    "adagrad/fp16": ("adagrad {learning_rate: 0.05 initial_accumulator: 0.1}", "FP16"),
}
REFERENCE = "adagrad/fp32"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.environ.get("BUILD_DIR", "build"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--formats", default=",".join(FORMATS),
                    help="comma-separated; %s is always included" % REFERENCE)
    ap.add_argument("--movielens", default=train_runs.ML_LATEST_SMALL,
                    help="the ml-latest-small directory (default ../shared/data/...)")
    args = ap.parse_args()
    train_runs.ML_LATEST_SMALL = args.movielens
    build = os.path.abspath(args.build)
    work = os.path.join(build, "bench", "compact_rows_data")
    sets = {}
    for seed in range(args.seeds):
        sets[("din_gen", seed)] = (
            train_runs.din_gen(build, os.path.join(work, "gen_%d" % seed),
                               GEN + ["--seed", str(100 + seed)]),
            train_runs.QUICKSTART, [])
    ml = train_runs.movielens(build, os.path.join(work, "movielens"))
    if ml:
        for seed in range(args.seeds):
            sets[("ml-latest-small", seed)] = (ml, train_runs.MOVIELENS_CONFIG,
                                               ["data.seed=%d" % (seed + 1)])
    formats = [REFERENCE] + [f for f in args.formats.split(",") if f != REFERENCE]
    gauc = defaultdict(list)  # (format, data set) -> GAUCs over seeds
    for (name, seed), (data, config, extra) in sets.items():
        for fmt in formats:
            text, storage = FORMATS[fmt]
            sets_ = ["trainer.epochs=%d" % args.epochs] + extra
            for t in ("user", "item", "cate"):
                sets_ += ["tables[%s].optimizer={%s}" % (t, text),
                          "tables[%s].storage=%s" % (t, storage)]
            r = train_runs.train(build, config, data, 1, 1, sets_)
            gauc[(fmt, name)].append(r["test_gauc"])
            print(json.dumps({"bench": "compact_rows_run", "data": name, "seed": seed,
                              "format": fmt, "test_gauc": r["test_gauc"]}), flush=True)
    worst = 0.0
    for name in sorted({n for (_, n) in gauc}):
        ref = sum(gauc[(REFERENCE, name)]) / len(gauc[(REFERENCE, name)])
        for fmt in formats:
            v = gauc[(fmt, name)]
            mean = sum(v) / len(v)
            if fmt != REFERENCE:
                worst = min(worst, mean - ref)
            print(json.dumps({"bench": "compact_rows_table", "data": name, "format": fmt,
                              "mean_gauc": round(mean, 4), "vs_adagrad_fp32": round(mean - ref, 4),
                              "seeds": len(v)}))
    print(json.dumps({"bench": "compact_rows", "largest_loss_vs_adagrad_fp32": round(-worst, 4),
                      "seeds": args.seeds, "epochs": args.epochs}))


if __name__ == "__main__":
    main()
