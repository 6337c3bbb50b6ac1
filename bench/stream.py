"""Daily training on drifting data with ttl_steps eviction (docs/design.md §5).

  bench/run.sh stream [--days 10] [--drift 0.1] [--ttl-days 0.5] [--rows 20000]

din_gen writes days 0..DAYS (--day D --drift F: a fraction F of the item population
turns over each day). Two runs of DAYS daily jobs each, one worker and one server: day D
trains one epoch on day D's train.tsv, resuming from day D-1's checkpoint with
trainer.resume_new_data (the model continues on the new file; PREPASS counts it), and
evaluates on day D+1's test.tsv (the next day). The `unbounded` run keeps every row; the
`ttl` run sets ttl_steps on every table to TTL_DAYS days of steps (a day's steps taken as
rows / batch size 256; the trainer's steps per day are a few more), so rows of items that
stopped appearing are evicted. Checkpoints do not hold the rows' last-push steps: a
loaded row's age counts from the first step of the day's job, so a TTL of a day or more
never fires in daily jobs, and the default is half a day. Prints a table to stderr and one JSON line: per run and
day the server rows at the end of the day (per table and in all), the rows evicted by
that day's servers (each day's job starts new servers) and the next-day GAUC;
and the largest GAUC shortfall of the ttl run against the unbounded one.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_runs  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.environ.get("BUILD_DIR", "build"))
    ap.add_argument("--days", type=int, default=10)
    ap.add_argument("--drift", type=float, default=0.1)
    ap.add_argument("--ttl-days", type=float, default=0.5)
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--items", type=int, default=10000)
    ap.add_argument("--users", type=int, default=2000)
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    work = os.path.join(build, "bench", "stream_data")
    days = []
    for d in range(args.days + 1):
        days.append(train_runs.din_gen(
            build, os.path.join(work, "day%d" % d),
            ["--rows", str(args.rows), "--test_rows", str(args.rows // 4), "--users",
             str(args.users), "--items", str(args.items), "--max_history", "20", "--zipf", "1.1",
             "--day", str(d), "--drift", str(args.drift)]))
    batch = 256  # quickstart's trainer.batch_size
    steps_per_day = (args.rows + batch - 1) // batch
    ttl = int(args.ttl_days * steps_per_day)
    out = {"bench": "stream", "days": args.days, "drift": args.drift, "rows_per_day": args.rows,
           "steps_per_day": steps_per_day, "ttl_steps": ttl, "runs": {}}
    for run, extra in [("unbounded", []),
                       ("ttl", ["tables[%d].ttl_steps=%d" % (t, ttl) for t in range(3)])]:
        ckpt = os.path.join(work, "ckpt_" + run)
        shutil.rmtree(ckpt, ignore_errors=True)
        per_day = []
        for d in range(args.days):
            sets = ["trainer.epochs=1", "trainer.checkpoint.dir=" + ckpt] + extra
            if d > 0:
                sets += ["trainer.resume_from=" + ckpt, "trainer.resume_new_data=true"]
            data = {"train": os.path.join(days[d], "train.tsv"),
                    "test": os.path.join(days[d + 1], "test.tsv")}
            r = train(build, data, sets)
            rows = {name: t["rows"] for name, t in r["tables"].items()}
            evicted = sum(t.get("evicted_rows", 0) for t in r["tables"].values())
            per_day.append({"day": d, "rows": r["server_rows"], "table_rows": rows,
                            "evicted_rows": evicted, "next_day_gauc": r["test_gauc"]})
            sys.stderr.write("%-9s day %d rows %7d evicted %7d next-day gauc %.4f\n" %
                             (run, d, r["server_rows"], evicted, r["test_gauc"]))
        out["runs"][run] = per_day
    deltas = [t["next_day_gauc"] - u["next_day_gauc"]
              for t, u in zip(out["runs"]["ttl"], out["runs"]["unbounded"])]
    out["worst_gauc_delta"] = round(min(deltas), 4)
    out["mean_gauc_delta"] = round(sum(deltas) / len(deltas), 4)
    out["max_rows"] = {run: max(d["rows"] for d in v) for run, v in out["runs"].items()}
    print(json.dumps(out))


def train(build, data, sets):
    """One daily job (train_runs.train with separate train and test files)."""
    cmd = [sys.executable, os.path.join(train_runs.ROOT, "launch", "din-train"), "--config",
           train_runs.QUICKSTART, "--train", data["train"], "--test", data["test"], "--servers",
           "1", "--workers", "1", "--build-dir", build, "--backend", "cpu"]
    for s in sets:
        cmd += ["--set", s]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-3000:])
        raise SystemExit("job failed: " + " ".join(cmd))
    return json.loads([line for line in p.stdout.splitlines() if line.startswith("{")][-1])


if __name__ == "__main__":
    main()
