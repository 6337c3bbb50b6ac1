"""Feature admission: server rows against GAUC (docs/design.md §5, feature admission).

  bench/run.sh admission [--seeds N] [--ks 2,3,5,8] [--epochs E] [--ml-dir DIR]
                         [--only DATA_SET] [--shared] [--caps SKIP_NEW,EVICT_LFU]
                         [--mba-mode PREPASS|ONLINE]

For din_gen (Zipf 1.1) and ml-latest-small (when ../shared/data has it): one job without
admission, then one per min_count k (applied to every table, default_row ZEROS; with
--shared also SHARED), and one per policy of --caps with every table capped at half its distinct IDs per shard:
SKIP_NEW (PREPASS creates the rows most frequent first: a static LFU by n_j), EVICT_LFU and
EVICT_LRU (rows evicted in batches between requests, docs/design.md §5; with --mba-mode
ONLINE n_j is the running count, so EVICT_LFU is a running LFU). --ks "" skips the
min_count settings. Each
with N seeds (data.seed, the shuffle and initialisation). Prints a table to stderr and
one JSON line: per data set and setting the mean rows, the row shrink against no
admission, the mean GAUC and its difference to no admission; and per data set the
smallest k that shrinks rows by >= 40% within 0.002 GAUC, if any.
"""
import argparse
import json
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_runs  # noqa: E402

GEN = ["--rows", "60000", "--test_rows", "15000", "--users", "5000", "--items", "30000",
       "--max_history", "20", "--zipf", "1.1"]
TABLES = 3  # user, item, cate in both configs


def table_shards(config):
    """(name, shards) of each table of a config file, in order."""
    text = open(config).read()
    out = []
    for m in re.finditer(r'tables\s*\{\s*name:\s*"(\w+)"[^}]*?shards:\s*(\d+)', text):
        out.append((m.group(1), int(m.group(2))))
    assert len(out) == TABLES, config
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.environ.get("BUILD_DIR", "build"))
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--ks", default="2,3,5,8")
    ap.add_argument("--ml-dir", default="", help="ml-latest-small (default: ../shared/data)")
    ap.add_argument("--only", default="", help="run only the data set of this name")
    ap.add_argument("--shared", action="store_true", help="also default_row: SHARED per k")
    ap.add_argument("--caps", default="SKIP_NEW,EVICT_LFU",
                    help="when_full policies of the half-size cap runs")
    ap.add_argument("--mba-mode", default="", help="trainer.mba_mode of every run")
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    work = os.path.join(build, "bench", "admission_data")
    sets = {"din_gen_zipf1.1": (train_runs.din_gen(build, os.path.join(work, "gen"), GEN),
                                train_runs.QUICKSTART)}
    if args.ml_dir:
        train_runs.ML_LATEST_SMALL = os.path.abspath(args.ml_dir)
    ml = train_runs.movielens(build, os.path.join(work, "movielens"))
    if ml:
        sets["ml-latest-small"] = (ml, train_runs.MOVIELENS_CONFIG)
    ks = [int(k) for k in args.ks.split(",") if k]
    common = ["trainer.epochs=%d" % args.epochs]
    if args.mba_mode:
        common.append("trainer.mba_mode=%s" % args.mba_mode)
    settings = [("none", [])]
    for k in ks:
        settings.append(("k=%d" % k, ["tables[%d].admission={min_count: %d}" % (t, k)
                                      for t in range(TABLES)]))
        if args.shared:
            settings.append(("k=%d shared" % k,
                             ["tables[%d].admission={min_count: %d default_row: SHARED}" % (t, k)
                              for t in range(TABLES)]))
    out = {"bench": "admission", "epochs": args.epochs, "seeds": args.seeds,
           "mba_mode": args.mba_mode or "PREPASS", "data_sets": {}}
    for name, (data, config) in sets.items():
        if args.only and name != args.only:
            continue
        rows = {}
        for label, extra in settings:
            runs = []
            for seed in range(args.seeds):
                sets_ = common + ["data.seed=%d" % (seed + 1)] + extra
                runs.append(train_runs.train(build, config, data, 1, 1, sets_))
            if label == "none":
                base_tables = [r["tables"] for r in runs]
            rows[label] = {"rows": statistics.mean(r["server_rows"] for r in runs),
                           "gauc": statistics.mean(r["test_gauc"] for r in runs),
                           "gaucs": [r["test_gauc"] for r in runs]}
            sys.stderr.write("%s %-10s rows %9.0f gauc %.4f\n" %
                             (name, label, rows[label]["rows"], rows[label]["gauc"]))
        # Every table capped at half its distinct IDs (the rows without admission), spread
        # evenly over its shards, under each policy of --caps.
        for policy in [c for c in args.caps.split(",") if c]:
            runs = []
            for seed in range(args.seeds):
                caps = []
                for t, (tname, shards) in enumerate(table_shards(config)):
                    distinct = base_tables[seed][tname]["rows"]
                    caps += ["tables[%d].max_rows_per_shard=%d" %
                             (t, max(1, distinct // (2 * shards))),
                             "tables[%d].when_full=%s" % (t, policy)]
                sets_ = common + ["data.seed=%d" % (seed + 1)] + caps
                runs.append(train_runs.train(build, config, data, 1, 1, sets_))
            label = "cap50 " + policy.lower()
            rows[label] = {"rows": statistics.mean(r["server_rows"] for r in runs),
                           "gauc": statistics.mean(r["test_gauc"] for r in runs),
                           "gaucs": [r["test_gauc"] for r in runs],
                           "evicted": statistics.mean(
                               sum(t.get("evicted_rows", 0) for t in r["tables"].values())
                               for r in runs)}
            sys.stderr.write("%s %-18s rows %9.0f gauc %.4f\n" %
                             (name, label, rows[label]["rows"], rows[label]["gauc"]))
        base = rows["none"]
        best = None
        for label, r in rows.items():
            r["row_shrink"] = round(1 - r["rows"] / base["rows"], 4)
            r["gauc_delta"] = round(r["gauc"] - base["gauc"], 4)
            if (label.startswith("k=") and best is None and r["row_shrink"] >= 0.4 and
                    r["gauc_delta"] >= -0.002):
                best = label
        out["data_sets"][name] = {"settings": rows, "smallest_k_40pct_within_0.002": best}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
