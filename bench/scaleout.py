#!/usr/bin/env python3
"""Does adding workers change the model? Test GAUC of 1 worker against 4 workers with the
synchronous sparse step (the default), with staleness 1, and with the asynchronous step,
at equal epochs and global batch, on din_gen data and on ml-latest-small (when present).

  bench/run.sh scaleout [--epochs N] [--workers W]

Prints one JSON line per data set, then a last line with the worst |GAUC(W) - GAUC(1)|
of the synchronous step over the data sets ("sync_max_gauc_gap"; aim: <= 0.002).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_runs  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.environ.get("BUILD_DIR", "build"))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--workers", type=int, default=4)
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    work = os.path.join(build, "bench", "scaleout_data")
    sets = []
    gen = train_runs.din_gen(build, os.path.join(work, "din_gen"),
                             ["--rows", "100000", "--test_rows", "20000", "--seed", "11"])
    sets.append(("din_gen", gen, train_runs.QUICKSTART))
    ml = train_runs.movielens(build, os.path.join(work, "movielens"))
    if ml:
        sets.append(("ml-latest-small", ml, train_runs.MOVIELENS_CONFIG))
    worst = 0.0
    for name, data, config in sets:
        epochs = ["trainer.epochs=%d" % args.epochs]
        one = train_runs.train(build, config, data, 2, 1, epochs)
        w = args.workers
        sync = train_runs.train(build, config, data, 2, w, epochs)
        stale = train_runs.train(build, config, data, 2, w, epochs + ["trainer.staleness=1"])
        asyn = train_runs.train(build, config, data, 2, w, epochs + ["trainer.sparse_step=ASYNC"])
        row = {"bench": "scaleout", "data": name, "workers": w, "epochs": args.epochs,
               "gauc_1": one["test_gauc"], "gauc_sync": sync["test_gauc"],
               "gauc_sync_staleness1": stale["test_gauc"], "gauc_async": asyn["test_gauc"],
               "gap_sync": sync["test_gauc"] - one["test_gauc"],
               "gap_sync_staleness1": stale["test_gauc"] - one["test_gauc"],
               "gap_async": asyn["test_gauc"] - one["test_gauc"],
               "samples_per_s_1": one["train_samples_per_s"],
               "samples_per_s_sync": sync["train_samples_per_s"],
               "samples_per_s_async": asyn["train_samples_per_s"]}
        worst = max(worst, abs(row["gap_sync"]))
        print(json.dumps(row), flush=True)
    print(json.dumps({"bench": "scaleout", "sync_max_gauc_gap": worst,
                      "data_sets": [s[0] for s in sets]}))


if __name__ == "__main__":
    main()
