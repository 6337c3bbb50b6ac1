#!/usr/bin/env python3
"""Which embedding optimizer, learning rate and MBA lambda hold across data sets? Trains
every combination on several data sets of different shape with several seeds and ranks
the combinations by their worst relative GAUC across data sets (GAUC over the best GAUC
seen on that data set, averaged over seeds), so a default that is good everywhere wins
over one that is best on one data set only.

  bench/run.sh sweep [--seeds N] [--epochs N] [--quick]

Data sets: din_gen with Zipf 1.1 / short histories / many users, din_gen with Zipf 0.7 /
long histories / few users, din_gen with Zipf 1.4 and many items, and ml-latest-small
(when present). One JSON line per run, then a table (one JSON line per combination,
best first) and a last line naming the most robust combination.
"""
import argparse
import json
import os
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_runs  # noqa: E402

DATA = {
    "gen_zipf1.1": ["--rows", "60000", "--test_rows", "15000", "--users", "5000",
                    "--items", "30000", "--max_history", "20", "--zipf", "1.1"],
    "gen_zipf0.7_long": ["--rows", "60000", "--test_rows", "15000", "--users", "1000",
                         "--items", "20000", "--max_history", "100", "--zipf", "0.7"],
    "gen_zipf1.4_items": ["--rows", "60000", "--test_rows", "15000", "--users", "3000",
                          "--items", "200000", "--max_history", "50", "--zipf", "1.4"],
}
# optimizer text (per table), learning rates.
OPTIMIZERS = {
    "adagrad": ("adagrad {learning_rate: %g initial_accumulator: 0.1}", [0.01, 0.05, 0.2]),
    "adam": ("adam {learning_rate: %g}", [0.0003, 0.001, 0.003]),
    "sgd": ("sgd {learning_rate: %g}", [0.1, 0.5, 2.0]),
    "ftrl": ("ftrl {alpha: %g}", [0.01, 0.05, 0.2]),
}
LAMBDAS = [0.0, 0.01, 0.1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.environ.get("BUILD_DIR", "build"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--quick", action="store_true",
                    help="middle learning rate only, lambda 0 and 0.01")
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    work = os.path.join(build, "bench", "sweep_data")
    sets = {}
    for name, gen_args in DATA.items():
        for seed in range(args.seeds):
            sets[(name, seed)] = (train_runs.din_gen(build, os.path.join(work, "%s_%d" % (name, seed)),
                                                     gen_args + ["--seed", str(100 + seed)]),
                                  train_runs.QUICKSTART, [])
    ml = train_runs.movielens(build, os.path.join(work, "movielens"))
    if ml:
        for seed in range(args.seeds):  # one data set, seeds of the shuffle and init
            sets[("ml-latest-small", seed)] = (ml, train_runs.MOVIELENS_CONFIG,
                                               ["data.seed=%d" % (seed + 1)])
    combos = []
    for opt, (text, rates) in OPTIMIZERS.items():
        for lr in (rates[1:2] if args.quick else rates):
            for lam in (LAMBDAS[:2] if args.quick else LAMBDAS):
                combos.append((opt, lr, lam, text % lr))
    gauc = defaultdict(list)  # (combo, data set) -> GAUCs over seeds
    for (name, seed), (data, config, extra) in sets.items():
        for opt, lr, lam, text in combos:
            sets_ = ["trainer.epochs=%d" % args.epochs] + extra
            for t in ("user", "item", "cate"):  # both configs name their tables so
                sets_ += ["tables[%s].optimizer={%s}" % (t, text),
                          "tables[%s].mba_lambda=%g" % (t, lam)]
            r = train_runs.train(build, config, data, 1, 1, sets_)
            gauc[((opt, lr, lam), name)].append(r["test_gauc"])
            print(json.dumps({"bench": "sweep_run", "data": name, "seed": seed,
                              "optimizer": opt, "lr": lr, "lambda": lam,
                              "test_gauc": r["test_gauc"]}), flush=True)
    names = sorted({n for (_, n) in gauc})
    best = {n: max(sum(v) / len(v) for (c, m), v in gauc.items() if m == n) for n in names}
    rows = []
    for opt, lr, lam, _ in combos:
        rel = {n: (sum(gauc[((opt, lr, lam), n)]) / len(gauc[((opt, lr, lam), n)])) / best[n]
               for n in names}
        rows.append({"optimizer": opt, "lr": lr, "lambda": lam,
                     "worst_relative_gauc": min(rel.values()),
                     "mean_gauc": {n: round(sum(gauc[((opt, lr, lam), n)]) /
                                            len(gauc[((opt, lr, lam), n)]), 4) for n in names}})
    rows.sort(key=lambda r: -r["worst_relative_gauc"])
    for r in rows:
        print(json.dumps(dict(bench="sweep_table", **r)))
    print(json.dumps({"bench": "sweep", "most_robust": rows[0], "data_sets": names,
                      "seeds": args.seeds, "epochs": args.epochs}))


if __name__ == "__main__":
    main()
