#!/usr/bin/env python3
"""Checkpoints, resume, graceful stops and dead processes, with real jobs under mpirun on
localhost (launch/din-train) on a small din_gen data set.

  resume_e2e.py SCENARIO --build BUILD_DIR --work WORK_DIR

Scenarios (each one ctest test):
  exact     one worker, staleness 0, a checkpoint every 40 steps: resuming from a
            checkpoint of epoch 1 and from one of epoch 2 (fresh processes) ends with
            dumps identical byte for byte to the uninterrupted run's (every part file,
            and the MANIFEST up to its config section, which records the run's own
            paths), and identical figures (loss, test AUC/GAUC/logloss, dense checksum).
            din_dump inspect verifies the checkpoint (worker states and tables).
            Resumed from its final checkpoint, a run trains nothing and reports
            null rates and latencies. Resuming on 3 servers instead of 1 gives the
            same dump; checkpoints by
            time (every 0.3 s) are all intact; keep=2 leaves the newest two.
  corrupt   the newest checkpoints are damaged (a flipped byte in a worker state, a
            truncated table part, a missing _SUCCESS): --resume refuses each, naming
            the file, and continues from the newest intact one -- and still ends with
            the uninterrupted run's dump. din_dump inspect fails on each damaged one.
            With none intact the job fails non-zero.
  sigterm   SIGTERM to the launcher mid-training: the job writes a checkpoint and exits
            75 naming it; --resume from it completes the run, with the uninterrupted
            run's dump (one worker, staleness 0). Then the same with 2 servers and 2
            workers: stop, resume, complete.
  kill      kill -9 of a server rank, then of a worker rank, mid-training (2 servers,
            2 workers): the job ends non-zero within 30 s, Open MPI names the dead rank
            and its host, and no process of the job is left.
  compact   compact rows: every table with row-wise Adagrad and fp16 weights (stored with
            stochastic rounding). Resuming from a checkpoint of epoch 1 (fresh
            processes) ends with the uninterrupted run's dump byte for byte and its
            figures: the checkpoint restored the stored 16-bit weights exactly and the
            rounding draws continue as in the uninterrupted run. The dump's .emb.npy
            is float32 and every value is exactly an fp16 value.
  admission online admission and eviction state: mba_mode ONLINE, item with a count-min
            sketch (min_count 3, a small sketch) and a SHARED default row, cate with an
            admission probability, user with ttl_steps. Resuming from a checkpoint of
            epoch 1 (fresh processes) ends with the uninterrupted run's dump byte for
            byte (user: the same rows byte for byte, in another order: a resumed server
            loads rows compactly, where the uninterrupted one reuses evicted row
            numbers) and its figures: the checkpoint carried the sketches, the shared
            rows and the last-push steps (din_dump inspect accepts their files). The
            per-step metrics lines' admitted figures sum to the summary's totals.
  restart   --max-restarts 2 and a kill -9 of the worker after step 130 (checkpoints
            every 40 steps): the launcher relaunches from the latest checkpoint and the
            run completes, with the uninterrupted run's dump.
"""
import filecmp
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "testing"))
import din_e2e  # noqa: E402
from din_e2e import fail  # noqa: E402
GEN = ["--rows", "20000", "--test_rows", "4000", "--users", "500", "--items", "5000",
       "--seed", "3"]
# 20000 rows / global batch 256: 79 full steps per epoch plus a few smaller ones at the
# end of it (the 64 data partitions are equal in bytes, not in lines); the scenarios
# take the count from the uninterrupted run (EPOCH_STEPS in its result), 86 here.
COMMON = ["--backend", "cpu", "--set", "trainer.staleness=0"]
FIGURES = ["steps", "samples_trained", "final_train_loss", "test_auc", "test_gauc",
           "test_logloss", "dense_checksum", "server_rows"]



def data_dir(args):
    return din_e2e.gen_data(args.build, os.path.join(args.work, "data"), GEN)


def launcher(args, extra, servers=1, workers=1):
    d = data_dir(args)
    return din_e2e.din_train(args.build, ["--train", os.path.join(d, "train.tsv"),
                                          "--test", os.path.join(d, "test.tsv")] + COMMON + extra,
                             servers, workers)


def run(args, extra, servers=1, workers=1, expect_rc=0, timeout=200):
    cmd = launcher(args, extra, servers, workers)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout)
    if p.returncode != expect_rc:
        print(p.stderr[-4000:])
        fail("exit %d, expected %d: %s" % (p.returncode, expect_rc, " ".join(extra)))
    result = None
    if p.returncode == 0:
        lines = din_e2e.result_lines(p.stdout)
        if not lines:
            fail("no JSON line on stdout")
        result = lines[-1]
    return result, p.stderr


def fresh(args, name):
    path = os.path.join(args.work, name)
    shutil.rmtree(path, ignore_errors=True)
    return path


def baseline(args, epochs):
    """The uninterrupted run every scenario compares with (cached per epoch count while
    the programs, the launcher and the config are the ones that wrote it)."""
    dump = os.path.join(args.work, "base-e%d" % epochs, "dump")
    res_file = os.path.join(args.work, "base-e%d" % epochs, "result.json")
    key_file = os.path.join(args.work, "base-e%d" % epochs, "build.key")
    key = din_e2e.build_key(args.build)
    if os.path.exists(res_file) and os.path.exists(os.path.join(dump, "_SUCCESS")) and \
            os.path.exists(key_file) and open(key_file).read() == key:
        with open(res_file) as f:
            return json.load(f), dump
    fresh(args, "base-e%d" % epochs)
    ckpt = os.path.join(args.work, "base-e%d" % epochs, "ckpt")
    res, _ = run(args, ["--epochs", str(epochs), "--dump", dump, "--checkpoint-dir", ckpt,
                        "--checkpoint-every-steps", "40", "--set", "trainer.checkpoint.keep=10"])
    with open(res_file, "w") as f:
        json.dump(res, f)
    with open(key_file, "w") as f:
        f.write(key)
    return res, dump


def manifest_head(path):
    with open(os.path.join(path, "MANIFEST")) as f:
        text = f.read()
    return text.split("\nconfig\n")[0]


def same_rows(a, b, table, what):
    """The parts of `table` in dumps a and b hold the same rows (ID and weight bytes),
    in any order."""
    n = 0
    for name in sorted(os.listdir(os.path.join(a, table))):
        if not name.endswith(".ids.npy"):
            continue
        rows = []
        for d in (a, b):
            stem = os.path.join(d, table, name[:-len(".ids.npy")])
            _, ids = din_e2e.read_npy(stem + ".ids.npy")
            shape, emb = din_e2e.read_npy(stem + ".emb.npy")
            dim = shape[1]
            rows.append(sorted((ids[i], emb[i * dim:(i + 1) * dim].tobytes())
                               for i in range(len(ids))))
        if rows[0] != rows[1] or not rows[0]:
            fail("%s: %s/%s holds other rows than the uninterrupted run's" % (what, table, name))
        n += len(rows[0])
    print("%s: table %s holds the same %d rows, byte for byte" % (what, table, n))


def same_dump(a, b, what, any_order=()):
    """Every part file identical byte for byte, except those of the tables in
    `any_order`, whose rows must be the same in any order (same_rows)."""
    for table in any_order:
        same_rows(a, b, table, what)
    files = []
    for dirpath, _, names in os.walk(a):
        for n in names:
            files.append(os.path.relpath(os.path.join(dirpath, n), a))
    parts = [f for f in files if f not in ("MANIFEST", "_SUCCESS") and
             f.split(os.sep)[0] not in any_order]
    if not parts:
        fail("no part files in " + a)
    for f in sorted(parts):
        if not os.path.exists(os.path.join(b, f)):
            fail("%s: %s missing" % (what, f))
        if not filecmp.cmp(os.path.join(a, f), os.path.join(b, f), shallow=False):
            fail("%s: %s differs from the uninterrupted run's" % (what, f))
    if not os.path.exists(os.path.join(b, "_SUCCESS")):
        fail(what + ": no _SUCCESS")
    def head(path):  # the checksums of reordered files differ
        return [line for line in manifest_head(path).split("\n")
                if not any(line.startswith("file %s/" % t) for t in any_order)]
    if head(a) != head(b):
        fail(what + ": MANIFEST differs (before its config section)")
    print("%s: %d part files identical byte for byte" % (what, len(parts)))


def same_figures(a, b, what):
    for k in FIGURES:
        if a.get(k) != b.get(k):
            fail("%s: %s is %r, the uninterrupted run's %r" % (what, k, b.get(k), a.get(k)))
    print("%s: figures identical (%s)" % (what, ", ".join("%s %s" % (k, a[k]) for k in FIGURES)))


def checkpoints(root):
    return sorted(n for n in os.listdir(root) if n.startswith("ckpt-") and "." not in n)


def exact(args):
    base, base_dump = baseline(args, 2)
    ckpt = os.path.join(args.work, "base-e2", "ckpt")
    names = checkpoints(ckpt)
    last = base["steps"]
    if not 158 <= last <= 190 or \
            names != ["ckpt-%012d" % s for s in [40, 80, 120, 160][:last // 40] + [last]]:
        fail("checkpoints %s (%d steps)" % (names, last))
    subprocess.check_call([din_e2e.tool(args.build, "din_dump"), "inspect",
                           os.path.join(ckpt, "ckpt-000000000040")], stdout=subprocess.DEVNULL)
    for step in (40, 120):  # epoch 1 and epoch 2
        dump = fresh(args, "exact-dump-%d" % step)
        res, err = run(args, ["--epochs", "2", "--dump", dump,
                              "--resume", os.path.join(ckpt, "ckpt-%012d" % step),
                              "--checkpoint-dir", fresh(args, "exact-ckpt-%d" % step)])
        if res.get("resumed_step") != step:
            fail("resumed_step %r, expected %d" % (res.get("resumed_step"), step))
        same_dump(base_dump, dump, "resumed from step %d" % step)
        same_figures(base, res, "resumed from step %d" % step)
    # Resumed from the final checkpoint: nothing left to train, so no rate and no
    # latency of this run's own work (null), while the run's totals stay the base's.
    if not (isinstance(base["train_samples_per_s"], float) and base["train_samples_per_s"] > 0):
        fail("the uninterrupted run's train_samples_per_s is %r" % base["train_samples_per_s"])
    res, _ = run(args, ["--epochs", "2", "--resume", os.path.join(ckpt, "ckpt-%012d" % last)])
    if res.get("resumed_step") != last or res["steps"] != last:
        fail("resumed at the end: %s" % res)
    # (The synchronous step's closing push without samples is a request it did make.)
    for k in ("train_samples_per_s", "pull_ms_p50", "pull_ms_p99", "step_ms_p50"):
        if res[k] is not None:
            fail("resumed with nothing to train: %s is %r, expected null" % (k, res[k]))
    same_figures(base, res, "resumed at the end")
    # The tables load into another number of servers (shards stay, lanes move).
    dump = fresh(args, "exact-dump-3servers")
    res, _ = run(args, ["--epochs", "2", "--dump", dump, "--resume",
                        os.path.join(ckpt, "ckpt-%012d" % 80),
                        "--checkpoint-dir", fresh(args, "exact-ckpt-3servers")], servers=3)
    same_dump(base_dump, dump, "resumed from step 80 on 3 servers")
    same_figures(base, res, "resumed from step 80 on 3 servers")
    # By time: every 0.005 minutes (0.3 s) gives several, and each verifies.
    tck = fresh(args, "exact-timed")
    res, _ = run(args, ["--epochs", "2", "--checkpoint-dir", tck,
                        "--checkpoint-every-minutes", "0.005",
                        "--set", "trainer.checkpoint.keep=1000"])
    names = checkpoints(tck)
    if len(names) < 3 or res["checkpoints"] != len(names):
        fail("timed checkpoints: %s (summary says %d)" % (names, res["checkpoints"]))
    for n in names:
        subprocess.check_call([din_e2e.tool(args.build, "din_dump"), "inspect",
                               os.path.join(tck, n)], stdout=subprocess.DEVNULL)
    print("every 0.3 s: %d checkpoints, all intact" % len(names))
    # Retention: keep 2.
    kck = fresh(args, "exact-keep")
    one, _ = run(args, ["--epochs", "1", "--checkpoint-dir", kck, "--checkpoint-every-steps", "10",
                        "--set", "trainer.checkpoint.keep=2"])
    tail = [one["steps"] // 10 * 10, one["steps"]]
    if one["steps"] % 10 == 0:
        tail = [one["steps"] - 10, one["steps"]]
    if checkpoints(kck) != ["ckpt-%012d" % s for s in tail] or \
            [n for n in os.listdir(kck) if n.endswith(".tmp")]:
        fail("keep=2 left %s" % sorted(os.listdir(kck)))


def corrupt(args):
    base, base_dump = baseline(args, 2)
    src = os.path.join(args.work, "base-e2", "ckpt")
    root = fresh(args, "corrupt-ckpt")
    shutil.copytree(src, root)
    last = base["steps"]
    # The scenario damages the newest three and resumes from 40: others go.
    for n in checkpoints(root):
        if n not in ["ckpt-%012d" % s for s in (40, 80, 120, last)]:
            shutil.rmtree(os.path.join(root, n))
    # Newest (the last step): a flipped byte in the worker state.
    state = os.path.join(root, "ckpt-%012d" % last, "worker-00000.state")
    with open(state, "r+b") as f:
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 0x40]))
    # 120: a truncated table part.
    part = os.path.join(root, "ckpt-000000000120", "tables", "item", "part-00001-of-00004.emb.npy")
    with open(part, "r+b") as f:
        f.truncate(os.path.getsize(part) - 64)
    # 80: no _SUCCESS (an interrupted write).
    os.remove(os.path.join(root, "ckpt-000000000080", "_SUCCESS"))
    for step in (last, 120, 80):
        p = subprocess.run([din_e2e.tool(args.build, "din_dump"), "inspect",
                            os.path.join(root, "ckpt-%012d" % step)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if p.returncode == 0:
            fail("din_dump inspect passes the damaged checkpoint of step %d" % step)
    dump = fresh(args, "corrupt-dump")
    res, err = run(args, ["--epochs", "2", "--dump", dump, "--resume", root,
                          "--checkpoint-dir", fresh(args, "corrupt-out")])
    for needle in ("refusing checkpoint " + os.path.join(root, "ckpt-%012d" % last),
                   "worker-00000.state: XXH64",
                   "refusing checkpoint " + os.path.join(root, "ckpt-000000000120"),
                   "part-00001-of-00004.emb.npy",
                   "refusing checkpoint " + os.path.join(root, "ckpt-000000000080"),
                   "no _SUCCESS"):
        if needle not in err:
            print(err[-3000:])
            fail("stderr does not say: " + needle)
    if res.get("resumed_step") != 40:
        fail("resumed from step %r, expected the newest intact one, 40" % res.get("resumed_step"))
    same_dump(base_dump, dump, "resumed past 3 damaged checkpoints")
    same_figures(base, res, "resumed past 3 damaged checkpoints")
    # Nothing intact: a clear failure, not a fresh start.
    shutil.rmtree(os.path.join(root, "ckpt-000000000040", "tables", "user"))
    _, err = run(args, ["--epochs", "2", "--resume", root], expect_rc=1)
    if "no complete, intact checkpoint in " + root not in err:
        print(err[-3000:])
        fail("no clear error when every checkpoint is damaged")
    # A checkpoint named explicitly must be intact.
    _, err = run(args, ["--epochs", "2", "--resume", os.path.join(root, "ckpt-%012d" % last)],
                 expect_rc=1)
    if "refusing checkpoint" not in err:
        fail("a damaged checkpoint given by name was not refused")
    print("corrupt: every damaged checkpoint refused with its reason")


def descendants(pid):
    """PIDs of every process below `pid` (from /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        except (OSError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def world_rank(pid):
    with open("/proc/%d/environ" % pid, "rb") as f:
        for var in f.read().split(b"\0"):
            if var.startswith(b"OMPI_COMM_WORLD_RANK="):
                return int(var.split(b"=")[1])
    fail("no OMPI_COMM_WORLD_RANK in the environment of %d" % pid)


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def start(args, extra, servers, workers, metrics):
    if os.path.exists(metrics):
        os.remove(metrics)
    cmd = launcher(args, extra + ["--metrics", metrics], servers, workers)
    log = open(metrics + ".stderr", "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    return proc, log


def wait_steps(metrics, steps, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            fail("the job ended before step %d (exit %d)" % (steps, proc.returncode))
        try:
            with open(metrics) as f:
                n = sum(1 for l in f if l.startswith('{"step"'))
            if n >= steps:
                return
        except OSError:
            pass
        time.sleep(0.1)
    fail("no step %d within %d s" % (steps, timeout))


def stderr_of(metrics):
    with open(metrics + ".stderr") as f:
        return f.read()


def sigterm(args):
    base, base_dump = baseline(args, 4)
    # One worker: the resumed run must end exactly where the uninterrupted one does.
    ckpt = fresh(args, "sigterm-ckpt")
    metrics = os.path.join(args.work, "sigterm-metrics.jsonl")
    proc, log = start(args, ["--epochs", "4", "--checkpoint-dir", ckpt], 1, 1, metrics)
    wait_steps(metrics, 100, proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    log.close()
    err = stderr_of(metrics)
    if proc.returncode != 75:
        print(err[-3000:])
        fail("exit %d after SIGTERM, expected 75" % proc.returncode)
    names = checkpoints(ckpt)
    if len(names) != 1:
        fail("checkpoints after the stop: %s" % names)
    where = os.path.join(ckpt, names[0])
    if "the state is in checkpoint " + where not in err:
        print(err[-3000:])
        fail("the launcher does not say where the checkpoint is")
    step = int(names[0][5:])
    print("sigterm: stopped at step %d with checkpoint %s" % (step, where))
    dump = fresh(args, "sigterm-dump")
    res, _ = run(args, ["--epochs", "4", "--dump", dump, "--resume", ckpt])
    same_dump(base_dump, dump, "stopped at step %d and resumed" % step)
    same_figures(base, res, "stopped at step %d and resumed" % step)

    # Two servers, two workers: stop, resume, complete.
    ckpt = fresh(args, "sigterm-ckpt-2x2")
    metrics = os.path.join(args.work, "sigterm-2x2-metrics.jsonl")
    proc, log = start(args, ["--epochs", "4", "--checkpoint-dir", ckpt], 2, 2, metrics)
    wait_steps(metrics, 30, proc)
    t0 = time.time()
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    log.close()
    err = stderr_of(metrics)
    if proc.returncode != 75 or len(checkpoints(ckpt)) != 1:
        print(err[-3000:])
        fail("2x2: exit %d, checkpoints %s" % (proc.returncode, checkpoints(ckpt)))
    where = os.path.join(ckpt, checkpoints(ckpt)[0])
    step = int(checkpoints(ckpt)[0][5:])
    if "the state is in checkpoint " + where not in err:
        print(err[-3000:])
        fail("2x2: the launcher does not say where the checkpoint is")
    states = sorted(n for n in os.listdir(where) if n.endswith(".state"))
    if states != ["worker-00000.state", "worker-00001.state"]:
        fail("2x2: checkpoint %s holds worker states %s" % (where, states))
    if not 30 <= step < base["steps"]:
        fail("2x2: stopped at step %d, after step 30 and before the end (%d) expected"
             % (step, base["steps"]))
    print("sigterm 2x2: stopped in %.1f s at %s" % (time.time() - t0, checkpoints(ckpt)[0]))
    res, _ = run(args, ["--epochs", "4", "--resume", ckpt], servers=2, workers=2)
    # The same global batch and data order: the same steps and samples, the same rows
    # created; the model matches the one-worker run's up to summation order.
    for k in ("steps", "samples_trained", "server_rows", "bad_lines"):
        if res.get(k) != base.get(k):
            fail("2x2 resumed run: %s is %r, the uninterrupted run's %r"
                 % (k, res.get(k), base.get(k)))
    if res.get("resumed_step") != step:
        fail("2x2 resumed run: resumed_step %r, the checkpoint's step %d"
             % (res.get("resumed_step"), step))
    if res["test_auc"] is None or abs(res["test_auc"] - base["test_auc"]) > 0.01:
        fail("2x2 resumed run: test AUC %r, the uninterrupted run's %r"
             % (res["test_auc"], base["test_auc"]))
    print("sigterm 2x2: resumed from step %d, finished %d steps, test AUC %.4f (uninterrupted "
          "%.4f), %d rows" % (res["resumed_step"], res["steps"], res["test_auc"],
                              base["test_auc"], res["server_rows"]))


def kill(args):
    host = socket.gethostname()
    for role, exe in (("server", b"din_ps"), ("worker", b"din_worker")):
        metrics = os.path.join(args.work, "kill-%s-metrics.jsonl" % role)
        proc, log = start(args, ["--epochs", "20"], 2, 2, metrics)
        wait_steps(metrics, 20, proc)
        job = descendants(proc.pid)
        ranks = [p for p in job if any(a.endswith(exe) for a in cmdline(p)[:1])]
        if len(ranks) != 2:
            fail("found %d %s processes of the job" % (len(ranks), exe.decode()))
        victim = ranks[-1]
        rank = world_rank(victim)
        t0 = time.time()
        os.kill(victim, signal.SIGKILL)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            fail("the job did not end within 30 s of a kill -9 of a %s" % role)
        secs = time.time() - t0
        log.close()
        err = stderr_of(metrics)
        if proc.returncode == 0:
            fail("the job exited 0 after a %s was killed" % role)
        # Open MPI names the rank and host (its PID field is not always filled in).
        needle = re.compile(r"process rank %d with PID \d+ on node %s exited on signal 9"
                            % (rank, re.escape(host)))
        found = [l.strip() for l in err.splitlines() if needle.search(l)]
        if not found:
            print(err[-3000:])
            fail("no message naming the dead %s (rank %d, host %s)" % (role, rank, host))
        line = found[0]
        time.sleep(0.5)
        left = [p for p in job if alive(p)]
        if left:
            fail("processes left after the job ended: %s" % left)
        print("kill -9 %s: exit %d after %.1f s; %s; no process left"
              % (role, proc.returncode, secs, line))


def restart(args):
    base, base_dump = baseline(args, 4)
    ckpt = fresh(args, "restart-ckpt")
    dump = fresh(args, "restart-dump")
    metrics = os.path.join(args.work, "restart-metrics.jsonl")
    proc, log = start(args, ["--epochs", "4", "--dump", dump, "--checkpoint-dir", ckpt,
                             "--checkpoint-every-steps", "40", "--max-restarts", "2"],
                      1, 1, metrics)
    wait_steps(metrics, 130, proc)
    workers = [p for p in descendants(proc.pid) if cmdline(p)[:1] and
               cmdline(p)[0].endswith(b"din_worker")]
    if len(workers) != 1:
        fail("found %d workers" % len(workers))
    os.kill(workers[0], signal.SIGKILL)
    out, _ = proc.communicate(timeout=200)
    log.close()
    err = stderr_of(metrics)
    if proc.returncode != 0:
        print(err[-3000:])
        fail("exit %d after a restart" % proc.returncode)
    if "restart 1 of 2 from checkpoint " + os.path.join(ckpt, "ckpt-") not in err:
        print(err[-3000:])
        fail("the launcher did not restart from a checkpoint")
    res = din_e2e.result_lines(out)[-1]
    what = "killed at step >= 130, restarted from step %d" % res["resumed_step"]
    if res["resumed_step"] < 120:
        fail(what + ": not the latest checkpoint")
    same_dump(base_dump, dump, what)
    same_figures(base, res, what)


COMPACT = []
for _t in ("user", "item", "cate"):
    COMPACT += ["--set", "tables[%s].optimizer={rowwise_adagrad {learning_rate: 0.05}}" % _t,
                "--set", "tables[%s].storage=FP16" % _t]


def compact(args):
    root = fresh(args, "compact")
    dump = os.path.join(root, "dump")
    ckpt = os.path.join(root, "ckpt")
    base, _ = run(args, COMPACT + ["--epochs", "2", "--dump", dump, "--checkpoint-dir", ckpt,
                                   "--checkpoint-every-steps", "40",
                                   "--set", "trainer.checkpoint.keep=10"])
    shape, emb = din_e2e.read_npy(os.path.join(dump, "item", "part-00000-of-00004.emb.npy"))
    if len(shape) != 2 or shape[1] != 16 or shape[0] == 0:
        fail("item part 0 has shape %s" % (shape,))
    for v in emb:
        if struct.unpack("<e", struct.pack("<e", v))[0] != v:
            fail("item part 0 holds %r, not an fp16 value" % v)
    print("item part 0: %d rows of float32, every value an fp16 value" % shape[0])
    subprocess.check_call([din_e2e.tool(args.build, "din_dump"), "inspect",
                           os.path.join(ckpt, "ckpt-000000000040")], stdout=subprocess.DEVNULL)
    resumed = os.path.join(root, "resumed-dump")
    res, _ = run(args, COMPACT + ["--epochs", "2", "--dump", resumed,
                                  "--resume", os.path.join(ckpt, "ckpt-000000000040"),
                                  "--checkpoint-dir", os.path.join(root, "resumed-ckpt")])
    if res.get("resumed_step") != 40:
        fail("resumed_step %r, expected 40" % res.get("resumed_step"))
    same_dump(dump, resumed, "compact rows, resumed from step 40")
    same_figures(base, res, "compact rows, resumed from step 40")


ADMISSION = ["--set", "trainer.mba_mode=ONLINE",
             "--set", "tables[item].admission={min_count: 3 default_row: SHARED "
                      "sketch_bytes: 16384}",
             "--set", "tables[cate].admission={min_count: 2 probability: 0.5}",
             "--set", "tables[user].ttl_steps=4"]


def admission(args):
    root = fresh(args, "admission")
    os.makedirs(root)
    dump = os.path.join(root, "dump")
    ckpt = os.path.join(root, "ckpt")
    metrics = os.path.join(root, "metrics.jsonl")
    base, _ = run(args, ADMISSION + ["--epochs", "2", "--dump", dump, "--checkpoint-dir", ckpt,
                                     "--checkpoint-every-steps", "40",
                                     "--set", "trainer.checkpoint.keep=10",
                                     "--set", "trainer.metrics_path=" + metrics])
    # The per-step lines carry each admission table's figures; their sums are the
    # summary's totals (admissions happen at the counts, before each step's line).
    sums = {}
    with open(metrics) as f:
        for line in f:
            j = json.loads(line)
            if "eval" in j:
                continue
            for name in ("item", "cate", "user"):
                if name not in j.get("tables", {}):
                    fail("step %s line has no tables.%s: %s" % (j.get("step"), name, line))
                for k, v in j["tables"][name].items():
                    sums[(name, k)] = sums.get((name, k), 0) + v
    for name in ("item", "cate"):
        want = base["tables"][name]["admitted_ids"]
        if sums[(name, "admitted")] != want or want == 0:
            fail("%s: per-step admitted sum to %d, the summary says %d" %
                 (name, sums[(name, "admitted")], want))
        if sums[(name, "rejected")] == 0:
            fail("%s: no rejected sightings in the metrics lines" % name)
    if sums[("user", "evicted")] == 0:
        fail("user: no evictions in the metrics lines (ttl_steps)")
    print("metrics: admitted item %d, cate %d; evicted user %d" %
          (sums[("item", "admitted")], sums[("cate", "admitted")], sums[("user", "evicted")]))
    first = os.path.join(ckpt, "ckpt-000000000040")
    for suffix, table in ((".sketch.npy", "item"), (".default.npy", "item"),
                          (".sketch.npy", "cate"), (".step.npy", "user")):
        if not any(n.endswith(suffix) for n in os.listdir(os.path.join(first, "tables", table))):
            fail("checkpoint table %s has no %s file" % (table, suffix))
    subprocess.check_call([din_e2e.tool(args.build, "din_dump"), "inspect",
                           os.path.join(first, "tables")], stdout=subprocess.DEVNULL)
    resumed = os.path.join(root, "resumed-dump")
    res, _ = run(args, ADMISSION + ["--epochs", "2", "--dump", resumed, "--resume", first,
                                    "--checkpoint-dir", os.path.join(root, "resumed-ckpt")])
    if res.get("resumed_step") != 40:
        fail("resumed_step %r, expected 40" % res.get("resumed_step"))
    # Rows evicted by ttl_steps free row numbers that new rows take again; a resumed
    # server loads the rows compactly, so the user table's rows come in another order.
    same_dump(dump, resumed, "online admission, resumed from step 40", any_order=("user",))
    same_figures(base, res, "online admission, resumed from step 40")


def main():
    args = din_e2e.parse_args(["exact", "corrupt", "sigterm", "kill", "restart", "compact",
                               "admission"])
    globals()[args.scenario](args)
    print("PASS " + args.scenario)


if __name__ == "__main__":
    main()
