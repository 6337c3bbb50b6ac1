#!/usr/bin/env python3
"""A large-ID job on one box, phase by phase: din_gen data with many distinct IDs, 1 epoch
with 2 servers and 2 workers (by default the compact row format: row-wise Adagrad, fp16
weights; --format adagrad_fp32 for full Adagrad state in fp32), a checkpoint at the end, a resume of that checkpoint onto 3 servers with a dump,
and the same training job at 1M IDs for comparison, in the same run. Every process's RSS
is sampled (/proc, every 0.2 s) by role.

  bench/run.sh scale [--rows N] [--items N] [--users N] [--small_items N]
                     [--small_rows N] [--format rowwise_fp16|rowwise_fp32|adagrad_fp32]

Defaults: the 100M-ID job, --rows 4000000 --items 10000000000 --users 100000000: din_gen
with --zipf 0.3 gives 26.9 distinct IDs per training row at that many items (nearly every
behaviour a new item; measured on 100k rows: 2.59M distinct items in 2.59M candidates and
behaviours, 99.9k users), so about 107M distinct IDs; --small_items 1000000 over
--small_rows 1000000 (the small job measures samples/s only). Its servers
need about 170 bytes of RSS per row with adagrad_fp32 (docs/scale_plan.md): some 18 GB,
and a 2.4 GB training file (60 MB per 100k rows). Not part of tests/run.sh (minutes, GBs).

Last line: {"bench":"scale","distinct_ids":...,"server_bytes_per_row":...,
"train_samples_per_s":...,"small_job_samples_per_s":...,"prepass_fraction":...,
"checkpoint_gb_per_s":...,"load_gb_per_s":...,"load_peak_rss_ratio":...,
"worker_peak_rss_bytes":...}
  server_bytes_per_row  peak summed server RSS during training / server rows
  prepass_fraction      PREPASS seconds / training seconds of the epoch
  checkpoint_gb_per_s   checkpoint table bytes / checkpoint seconds (worker 0's figure)
  load_gb_per_s         checkpoint table bytes / LOAD seconds (the resume's log line)
  load_peak_rss_ratio   peak summed server RSS of the resumed job before its first step /
                        the checkpoint's table bytes
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "launch", "configs", "quickstart.pbtxt")


def rss_of_tree(root_pid):
    """{pid: (name, rss bytes)} of every descendant process of root_pid."""
    children = {}
    names = {}
    rss = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            with open("/proc/%s/statm" % d) as f:
                pages = int(f.read().split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
        names[int(d)] = name
        rss[int(d)] = pages * os.sysconf("SC_PAGE_SIZE")
    out, todo = {}, [root_pid]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out[c] = (names[c], rss[c])
            todo.append(c)
    return out


class Sampler:
    """Peak summed RSS of din_ps processes and peak single din_worker RSS, per phase."""

    def __init__(self, pid):
        self.pid = pid
        self.phase = "start"
        self.server_peak = {}
        self.worker_peak = 0
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop:
            procs = rss_of_tree(self.pid)
            servers = sum(r for n, r in procs.values() if n == "din_ps")
            workers = [r for n, r in procs.values() if n == "din_worker"]
            self.server_peak[self.phase] = max(self.server_peak.get(self.phase, 0), servers)
            if workers:
                self.worker_peak = max(self.worker_peak, max(workers))
            time.sleep(0.2)


def job(build, data, servers, workers, sets, phases=None):
    """Runs din-train; returns (result line, stderr, sampler). `phases` maps a stderr
    pattern to the phase name that starts when it appears."""
    cmd = [sys.executable, os.path.join(ROOT, "launch", "din-train"), "--config", QUICKSTART,
           "--train", os.path.join(data, "train.tsv"), "--servers", str(servers),
           "--workers", str(workers), "--epochs", "1", "--backend", "cpu",
           "--build-dir", build]
    for s in sets:
        cmd += ["--set", s]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = Sampler(p.pid)
    err_lines = []

    def read_err():
        for line in p.stderr:
            err_lines.append(line)
            for pattern, phase in (phases or {}).items():
                if pattern in line:
                    sampler.phase = phase

    t = threading.Thread(target=read_err, daemon=True)
    t.start()
    out = p.stdout.read()
    p.wait()
    t.join()
    sampler.stop = True
    sampler.thread.join()
    err = "".join(err_lines)
    if p.returncode != 0:
        sys.stderr.write(err[-4000:])
        raise SystemExit("scale: job failed (%d): %s" % (p.returncode, " ".join(cmd)))
    lines = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    return lines[-1], err, sampler


def dir_bytes(d):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.environ.get("BUILD_DIR", os.path.join(ROOT, "build")))
    ap.add_argument("--rows", type=int, default=4000000)
    ap.add_argument("--items", type=int, default=10000000000)
    ap.add_argument("--users", type=int, default=100000000)
    ap.add_argument("--small_items", type=int, default=1000000)
    # The small job measures samples/s, for which 1M rows are plenty.
    ap.add_argument("--small_rows", type=int, default=1000000)
    ap.add_argument("--format", default="rowwise_fp16",
                    choices=["rowwise_fp16", "rowwise_fp32", "adagrad_fp32"])
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    work = os.path.join(build, "bench", "scale_%d_%d" % (args.rows, args.items))
    os.makedirs(work, exist_ok=True)
    adagrad = []
    optimizer = "adagrad" if args.format == "adagrad_fp32" else "rowwise_adagrad"
    for table in ("user", "item", "cate"):
        adagrad.append("tables[%s].optimizer={%s {learning_rate: 0.05}}" % (table, optimizer))
        if args.format == "rowwise_fp16":
            adagrad.append("tables[%s].storage=FP16" % table)
    # A server creates a PREPASS's rows within one ADMIT request: tens of millions of rows
    # take minutes on a busy box, past the default 60 s.
    adagrad.append("ps.request_timeout_ms=1800000")

    def gen(items, name, rows):
        d = os.path.join(work, name)
        if not os.path.exists(os.path.join(d, "bayes.json")):
            subprocess.check_call([os.path.join(build, "tools", "din_gen"), "--out", d,
                                   "--rows", str(rows), "--test_rows", "1000",
                                   "--items", str(items), "--users", str(args.users),
                                   "--zipf", "0.3"], stdout=subprocess.DEVNULL)
        return d

    big = gen(args.items, "big", args.rows)
    small = gen(args.small_items, "small", min(args.rows, args.small_rows))
    ckpt = os.path.join(work, "ckpt")
    dump = os.path.join(work, "dump")
    for d in (ckpt, dump):
        shutil.rmtree(d, ignore_errors=True)

    r, _, s_train = job(build, big, 2, 2, adagrad + ["trainer.checkpoint.dir=" + ckpt],
                        {"PREPASS: counted": "train"})
    ckpt_dirs = sorted(x for x in os.listdir(ckpt) if x.startswith("ckpt-"))
    tables = os.path.join(ckpt, ckpt_dirs[-1], "tables")
    table_bytes = dir_bytes(tables)
    r2, err2, s_load = job(build, big, 3, 2, adagrad + ["trainer.resume_from=" + ckpt,
                                                        "trainer.dump_dir=" + dump],
                           {"resume: loaded": "trained"})
    m = re.search(r"resume: loaded (\d+) rows from .* in ([0-9.]+) s", err2)
    load_seconds = float(m.group(2)) if m else None
    small_r, _, _ = job(build, small, 2, 2, adagrad, {})

    rows = r["server_rows"]
    result = {
        "bench": "scale",
        "format": args.format,
        "distinct_ids": rows,
        "server_bytes_per_row": round(s_train.server_peak.get("train", 0) / max(rows, 1), 1),
        "server_table_bytes_per_row": round(sum(r.get("server_bytes", [0])) / max(rows, 1), 1),
        "train_samples_per_s": r["train_samples_per_s"],
        "small_job_samples_per_s": small_r["train_samples_per_s"],
        "prepass_seconds": r["prepass_seconds"],
        "train_seconds": r["train_seconds"],
        "prepass_fraction": round(r["prepass_seconds"] / max(r["train_seconds"], 1e-9), 3),
        "checkpoint_bytes": table_bytes,
        "checkpoint_gb_per_s": round(table_bytes / 1e9 / max(r["checkpoint_seconds"], 1e-9), 3),
        "load_seconds": load_seconds,
        "load_gb_per_s": round(table_bytes / 1e9 / load_seconds, 3) if load_seconds else None,
        "load_peak_rss_ratio": round(s_load.server_peak.get("start", 0) / table_bytes, 3),
        "worker_peak_rss_bytes": max(s_train.worker_peak, s_load.worker_peak),
        "resumed_rows": r2["server_rows"],
        "shard_rows": r.get("shard_rows"),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
