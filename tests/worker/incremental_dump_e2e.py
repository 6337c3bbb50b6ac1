#!/usr/bin/env python3
"""Incremental dumps during training (trainer.dump_every_steps with trainer.incremental),
with a real job under mpirun on localhost (2 servers, 2 workers, quickstart config).

  incremental_dump_e2e.py SCENARIO --build BUILD_DIR --work WORK_DIR

Scenarios (each one ctest test):
  merge    dumps every 8 steps (trainer.dump_every_steps), with eviction.
  minutes  dumps on worker 0's clock only (trainer.dump_every_minutes: 0.005, 0.3 s): at
           least two dumps before the final step, consecutive ones at least the interval
           apart (their _SUCCESS times; no dump_every_steps is set); the series
           still merges to the final full dump byte for byte.

merge:

The job dumps every tenth of an epoch into DUMP/dump-STEP and, at the end, the full dump
into DUMP itself. The first periodic dump is a base (its MANIFEST names itself as base),
each later one a delta naming that base and the dump before it as parent, with _SUCCESS;
the last is at the final step. Every one passes din_dump inspect; a delta holds fewer
rows than the tables. Every table has ttl_steps, so rows are evicted between dumps (and
their row numbers reused): the deltas list the removed IDs (.removed.npy), among them
IDs that were created again before the same delta. `din_dump merge` of base and deltas
equals the final full dump byte for byte (every part file and the MANIFEST). Merging
with a delta left out, or in the wrong order, is refused; din_dump inspect reports row
numbers out of order. Prints each delta's size
against the full dump's and the IDs removed.
"""
import filecmp
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "testing"))
import din_e2e  # noqa: E402
from din_e2e import fail  # noqa: E402

# Rows not pushed for this many steps are evicted: four times the 8 steps between dumps,
# so the deltas of the epoch's second half have removed IDs (some created again since).
TTL = 32
GEN = ["--rows", "20000", "--test_rows", "2000", "--users", "500", "--items", "5000",
       "--seed", "11"]


def manifest(path):
    with open(os.path.join(path, "MANIFEST")) as f:
        text = f.read()
    head = text.split("\nconfig\n")[0].splitlines()
    fields = {}
    for line in head:
        k, _, v = line.partition(" ")
        if k in ("step", "base", "parent"):
            fields[k] = v
    return text, fields


def size_of(path):
    return sum(os.path.getsize(os.path.join(d, n)) for d, _, ns in os.walk(path) for n in ns
               if not n.startswith("dump-") and "dump-" not in os.path.relpath(d, path))


def tree_files(path):
    out = []
    for d, dirs, names in os.walk(path):
        dirs[:] = [x for x in dirs if not x.startswith("dump-")]
        for n in names:
            out.append(os.path.relpath(os.path.join(d, n), path))
    return sorted(out)


def merge(args):
    d = din_e2e.gen_data(args.build, os.path.join(args.work, "data"), GEN)
    dump = os.path.join(args.work, "dump")
    shutil.rmtree(dump, ignore_errors=True)
    # 20000 rows / 256 per step: about 79 steps an epoch; a dump every 8 steps.
    cmd = din_e2e.din_train(args.build, ["--train", os.path.join(d, "train.tsv"), "--test",
                                         os.path.join(d, "test.tsv"), "--epochs", "1",
                                         "--backend", "cpu", "--dump", dump,
                                         "--set", "trainer.dump_every_steps=8",
                                         "--set", "trainer.incremental=true"] +
                           [a for t in ("user", "item", "cate")
                            for a in ("--set", "tables[%s].ttl_steps=%d" % (t, TTL))], 2, 2)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=200)
    if p.returncode != 0:
        print(p.stderr[-3000:])
        fail("training job exit %d" % p.returncode)
    res = din_e2e.result_lines(p.stdout)[-1]
    series = sorted(n for n in os.listdir(dump) if n.startswith("dump-"))
    steps = [int(n[5:]) for n in series]
    want = list(range(8, res["steps"] + 1, 8))
    if want[-1] != res["steps"]:
        want.append(res["steps"])
    if steps != want:
        fail("periodic dumps at steps %s, expected %s" % (steps, want))
    dump_dump = din_e2e.tool(args.build, "din_dump")
    full_text, _ = manifest(dump)
    full_bytes = size_of(dump)
    for i, n in enumerate(series):
        path = os.path.join(dump, n)
        if not os.path.exists(os.path.join(path, "_SUCCESS")):
            fail(n + ": no _SUCCESS")
        _, f = manifest(path)
        parent = series[i - 1] if i else None
        if f.get("base") != series[0] or f.get("parent") != parent or \
                f.get("step") != str(steps[i]):
            fail("%s: MANIFEST names base %r parent %r step %r" % (n, f.get("base"),
                                                                  f.get("parent"), f.get("step")))
        subprocess.check_call([dump_dump, "inspect", path], stdout=subprocess.DEVNULL)
    # Each delta's removed IDs, and how many of them the same delta holds again as rows.
    removed, again = [], []
    for n in series[1:]:
        r = a = 0
        for d, _, names in os.walk(os.path.join(dump, n)):
            for name in names:
                if not name.endswith(".removed.npy"):
                    continue
                _, gone = din_e2e.read_npy(os.path.join(d, name))
                _, ids = din_e2e.read_npy(os.path.join(d, name.replace(".removed.npy",
                                                                       ".ids.npy")))
                r += len(gone)
                a += len(set(gone) & set(ids))
        removed.append(r)
        again.append(a)
    if sum(removed) == 0 or sum(again) == 0:
        fail("eviction: removed IDs per delta %s, created again %s" % (removed, again))
    print("removed IDs per delta %s, of which created again before the delta %s"
          % (removed, again))
    sizes = [size_of(os.path.join(dump, n)) for n in series]
    if not all(s < full_bytes for s in sizes[1:]):
        fail("a delta is not smaller than the full dump: %s vs %d" % (sizes, full_bytes))
    out = os.path.join(args.work, "merged")
    shutil.rmtree(out, ignore_errors=True)
    subprocess.check_call([dump_dump, "merge"] + [os.path.join(dump, n) for n in series] + [out],
                          stdout=subprocess.DEVNULL)
    files = tree_files(dump)
    if tree_files(out) != files:
        fail("merged files %s, the full dump's %s" % (tree_files(out), files))
    for f in files:
        if not filecmp.cmp(os.path.join(dump, f), os.path.join(out, f), shallow=False):
            fail("merged %s differs from the full dump's" % f)
    print("base + %d deltas merged = the full dump at step %d: %d files identical byte for "
          "byte" % (len(series) - 1, res["steps"], len(files)))
    print("full dump %d bytes; base %d; deltas %s bytes (%s of the full dump)"
          % (full_bytes, sizes[0], sizes[1:],
             ", ".join("%.2f" % (s / full_bytes) for s in sizes[1:])))
    # inspect checks that a series' row numbers ascend (two swapped are reported).
    bad = os.path.join(args.work, "swapped")
    shutil.rmtree(bad, ignore_errors=True)
    shutil.copytree(os.path.join(dump, series[-2]), bad)
    path = os.path.join(bad, "item", "part-00000-of-00004.rows.npy")
    with open(path, "rb") as f:
        b = bytearray(f.read())
    h = 10 + int.from_bytes(b[8:10], "little")
    b[h:h + 4], b[h + 4:h + 8] = b[h + 4:h + 8], b[h:h + 4]
    with open(path, "wb") as f:
        f.write(b)
    q = subprocess.run([dump_dump, "inspect", bad], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if q.returncode == 0 or "row numbers do not ascend" not in q.stderr:
        fail("inspect of swapped row numbers: exit %d, %r" % (q.returncode, q.stderr))
    # A gap or a wrong order in the chain is refused.
    for bad in ([series[0]] + series[2:], [series[0], series[2], series[1]]):
        q = subprocess.run([dump_dump, "merge"] + [os.path.join(dump, n) for n in bad] +
                           [out + "-bad"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
        if q.returncode == 0 or "parent" not in q.stderr:
            fail("merge of %s: exit %d, %r" % (bad, q.returncode, q.stderr))


def minutes(args):
    d = din_e2e.gen_data(args.build, os.path.join(args.work, "data"), GEN)
    dump = os.path.join(args.work, "dump-minutes")
    shutil.rmtree(dump, ignore_errors=True)
    interval_min = 0.005
    cmd = din_e2e.din_train(args.build, ["--train", os.path.join(d, "train.tsv"), "--test",
                                         os.path.join(d, "test.tsv"), "--epochs", "1",
                                         "--backend", "cpu", "--dump", dump,
                                         "--set", "trainer.dump_every_minutes=%g" % interval_min,
                                         "--set", "trainer.incremental=true"], 2, 2)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=200)
    if p.returncode != 0:
        print(p.stderr[-3000:])
        fail("training job exit %d" % p.returncode)
    res = din_e2e.result_lines(p.stdout)[-1]
    series = sorted(n for n in os.listdir(dump) if n.startswith("dump-"))
    steps = [int(n[5:]) for n in series]
    if len(steps) < 3 or steps[-1] != res["steps"] or steps != sorted(set(steps)):
        fail("dumps at steps %s (final step %d): expected at least two before the final "
             "step" % (steps, res["steps"]))
    done = [os.stat(os.path.join(dump, n, "_SUCCESS")).st_mtime_ns / 1e9 for n in series]
    gaps = [b - a for a, b in zip(done, done[1:-1])]  # the last is forced by the end
    if min(gaps) < interval_min * 60:
        fail("dumps %.3f s apart, under the %.1f s interval: %s"
             % (min(gaps), interval_min * 60, ["%.3f" % g for g in gaps]))
    print("time-triggered dumps at steps %s (final step %d), %s s apart (interval %.1f s)"
          % (steps[:-1], res["steps"], ["%.2f" % g for g in gaps], interval_min * 60))
    dump_dump = din_e2e.tool(args.build, "din_dump")
    out = os.path.join(args.work, "merged-minutes")
    shutil.rmtree(out, ignore_errors=True)
    subprocess.check_call([dump_dump, "merge"] + [os.path.join(dump, n) for n in series] + [out],
                          stdout=subprocess.DEVNULL)
    files = tree_files(dump)
    if tree_files(out) != files or not all(
            filecmp.cmp(os.path.join(dump, f), os.path.join(out, f), shallow=False)
            for f in files):
        fail("the merged time-triggered series differs from the full dump")
    print("base + %d deltas merged = the full dump" % (len(series) - 1))


def main():
    args = din_e2e.parse_args(["merge", "minutes"])
    globals()[args.scenario](args)
    print("PASS " + args.scenario)


if __name__ == "__main__":
    main()
