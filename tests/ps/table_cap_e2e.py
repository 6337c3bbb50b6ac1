#!/usr/bin/env python3
"""Training jobs under mpirun (launch/din-train) with a tiny table memory cap
(max_rows_per_shard) on din_gen data.

  table_cap_e2e.py SCENARIO --build BUILD_DIR --work WORK_DIR

Scenarios (each one ctest test):
  fail      when_full: FAIL (the default): the first request that would create a row past
            the cap (the PREPASS counts) is refused; the job exits non-zero within
            seconds, with a message naming the table, the shard, the cap and the server.
  skip_new  when_full: SKIP_NEW: the job completes; every shard holds exactly the cap (the
            data has far more IDs per shard than the cap), and each server lane logs
            once per table that new IDs are skipped.
  evict     when_full: EVICT_LFU, then EVICT_LRU, on 2 servers: the job completes; every
            table holds between 18 and 20 rows per shard (a shard at the cap evicts down
            to CAP - 2 x max(1, CAP / 32) between requests), the summary reports evicted
            rows, and the end-of-training dump holds exactly the rows the servers hold,
            each ID once.
  memory    ps.memory_limit_bytes of 150 kB per server (no row caps): with when_full: FAIL
            the job exits non-zero within seconds, naming the table, the server and the
            budget; with SKIP_NEW it completes, skipping keys.
"""
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "testing"))
import din_e2e  # noqa: E402
from din_e2e import fail  # noqa: E402
# 500 users over 2 shards, 5000 items over 4, 100 categories over 2: each shard sees well
# over CAP distinct IDs.
GEN = ["--rows", "20000", "--test_rows", "2000", "--users", "500", "--items", "5000",
       "--cates", "100", "--seed", "3"]
CAP = 20
SHARDS = 2 + 4 + 2  # user, item, cate in quickstart.pbtxt
# Generous for a refusal that happens at the first PREPASS push (measured ~2 s on a
# 2-core machine, most of it mpirun start-up).
FAIL_WITHIN_S = 30



def data_dir(args):
    return din_e2e.gen_data(args.build, os.path.join(args.work, "data"), GEN)


def run(args, when_full, servers=1, extra=()):
    d = data_dir(args)
    cmd = din_e2e.din_train(args.build, [
        "--train", os.path.join(d, "train.tsv"), "--test", os.path.join(d, "test.tsv"),
        "--epochs", "1", "--backend", "cpu"] + list(extra), servers=servers)
    for table in ("user", "item", "cate"):
        cmd += ["--set", "tables[%s].max_rows_per_shard=%d" % (table, CAP),
                "--set", "tables[%s].when_full=%s" % (table, when_full)]
    t0 = time.time()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=180)
    return p, time.time() - t0


def scenario_fail(args):
    p, secs = run(args, "FAIL")
    print("exit %d after %.1fs" % (p.returncode, secs))
    if p.returncode == 0:
        fail("a job past its table cap with when_full: FAIL exited 0")
    if secs > FAIL_WITHIN_S:
        fail("the job took %.1fs to fail (limit %ds)" % (secs, FAIL_WITHIN_S))
    lines = [l for l in p.stderr.splitlines() if "max_rows_per_shard = %d" % CAP in l]
    if not lines:
        print(p.stderr[-4000:])
        fail("no error naming max_rows_per_shard = %d" % CAP)
    line = lines[0]
    for needle in ("is full", "on server 0", "shard ", "when_full: FAIL"):
        if needle not in line:
            fail("the error lacks %r: %s" % (needle, line))
    if not any("table %s shard" % t in line for t in ("user", "item", "cate")):
        fail("the error names no table: " + line)
    print("message: " + line.strip())


def scenario_skip_new(args):
    p, secs = run(args, "SKIP_NEW")
    print("exit %d after %.1fs" % (p.returncode, secs))
    if p.returncode != 0:
        print(p.stderr[-4000:])
        fail("a job with when_full: SKIP_NEW failed")
    results = din_e2e.result_lines(p.stdout)
    if len(results) != 1:
        print(p.stdout)
        fail("expected one JSON line on stdout, got %d" % len(results))
    r = results[0]
    if r.get("server_rows") != CAP * SHARDS:
        fail("servers hold %s rows, expected exactly %d (%d shards at the cap of %d)"
             % (r.get("server_rows"), CAP * SHARDS, SHARDS, CAP))
    if not r.get("skipped_keys", 0) > 0:
        fail("the summary reports %r skipped keys" % r.get("skipped_keys"))
    if not 0.0 <= r["test_auc"] <= 1.0:
        fail("test_auc out of range: %s" % r["test_auc"])
    warned = [l for l in p.stderr.splitlines() if "new IDs get no row (when_full: SKIP_NEW)" in l]
    # Once per table and lane: at least one per table, at most one per shard.
    if not 3 <= len(warned) <= SHARDS:
        print(p.stderr[-4000:])
        fail("expected one SKIP_NEW warning per table and lane, got %d" % len(warned))
    print("server_rows %d, skipped_keys %d, test_auc %.4f, %d warning(s)"
          % (r["server_rows"], r["skipped_keys"], r["test_auc"], len(warned)))


def scenario_evict(args):
    low = CAP - 2 * max(1, CAP // 32)
    for when_full in ("EVICT_LFU", "EVICT_LRU"):
        dump = os.path.join(args.work, "dump_" + when_full.lower())
        p, secs = run(args, when_full, servers=2, extra=["--dump", dump])
        print("%s: exit %d after %.1fs" % (when_full, p.returncode, secs))
        if p.returncode != 0:
            print(p.stderr[-4000:])
            fail("a job with when_full: %s failed" % when_full)
        r = din_e2e.result_lines(p.stdout)[0]
        if not low * SHARDS <= r["server_rows"] <= CAP * SHARDS:
            fail("servers hold %d rows, expected %d..%d" % (r["server_rows"], low * SHARDS,
                                                             CAP * SHARDS))
        evicted = sum(t["evicted_rows"] for t in r["tables"].values())
        if evicted <= 0:
            fail("the summary reports no evicted rows: %r" % r["tables"])
        dumped = 0
        for table, t in r["tables"].items():
            ids = din_e2e.read_dump_table(dump, table)
            if len(ids) != t["rows"]:
                fail("%s: the dump holds %d IDs, the servers %d rows" % (table, len(ids),
                                                                         t["rows"]))
            dumped += len(ids)
        print("server_rows %d, evicted_rows %d, dumped %d, test_auc %.4f"
              % (r["server_rows"], evicted, dumped, r["test_auc"]))


def scenario_memory(args):
    d = data_dir(args)
    budget = 150000
    for when_full in ("FAIL", "SKIP_NEW"):
        cmd = din_e2e.din_train(args.build, [
            "--train", os.path.join(d, "train.tsv"), "--test", os.path.join(d, "test.tsv"),
            "--epochs", "1", "--backend", "cpu", "--set", "ps.memory_limit_bytes=%d" % budget],
            servers=2)
        for table in ("user", "item", "cate"):
            cmd += ["--set", "tables[%s].when_full=%s" % (table, when_full)]
        t0 = time.time()
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=180)
        secs = time.time() - t0
        print("%s: exit %d after %.1fs" % (when_full, p.returncode, secs))
        if when_full == "FAIL":
            if p.returncode == 0:
                fail("a job past its memory budget with when_full: FAIL exited 0")
            if secs > FAIL_WITHIN_S:
                fail("the job took %.1fs to fail (limit %ds)" % (secs, FAIL_WITHIN_S))
            lines = [l for l in p.stderr.splitlines()
                     if "ps.memory_limit_bytes = %d" % budget in l]
            if not lines:
                print(p.stderr[-4000:])
                fail("no error naming ps.memory_limit_bytes = %d" % budget)
            if not re.search(r"table (user|item|cate) on server [01]: the server's memory "
                             r"budget", lines[0]):
                fail("the error names no table and server: " + lines[0])
            print("message: " + lines[0].strip())
        else:
            if p.returncode != 0:
                print(p.stderr[-4000:])
                fail("a job past its memory budget with when_full: SKIP_NEW failed")
            r = din_e2e.result_lines(p.stdout)[0]
            if not r.get("skipped_keys", 0) > 0:
                fail("the summary reports %r skipped keys" % r.get("skipped_keys"))
            print("server_rows %d, skipped_keys %d" % (r["server_rows"], r["skipped_keys"]))


def main():
    args = din_e2e.parse_args(["fail", "skip_new", "evict", "memory"])
    {"fail": scenario_fail, "skip_new": scenario_skip_new, "evict": scenario_evict,
     "memory": scenario_memory}[args.scenario](args)
    print("PASS")


if __name__ == "__main__":
    main()
