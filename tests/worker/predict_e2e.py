#!/usr/bin/env python3
"""Scoring with a checkpoint (launch/din-train --predict), with real jobs under mpirun on
localhost on a small din_gen data set.

  predict_e2e.py SCENARIO --build BUILD_DIR --work WORK_DIR

Scenarios (each one ctest test):
  exact   a training job (2 servers, 1 worker, a checkpoint at the end) and --predict of
          its own test file from that checkpoint on 3 servers: the AUC, GAUC and
          logloss equal the trainer's final evaluation exactly; one prediction per line;
          the servers hold as many rows after scoring as the checkpoint loaded (no row
          created, though the input has IDs the checkpoint lacks). The same with 2
          workers predicting, and with the lines reversed: the predictions follow the
          input order.
  workers a checkpoint written by 2 workers (2 servers) scored by 1 worker on 1 server:
          the metrics equal the 2-worker trainer's final evaluation.
  export  --export of a 2-worker checkpoint (quickstart config, trained for 200 steps
          on the quickstart data: launch/quickstart.sh's din_gen flags): model.json
          describes the network (layers, sizes, activation, pooling, fields and tables,
          max_history), dense/ holds one .npy per tensor and per Dice statistic,
          embeddings/ is a complete dump of every row; tools/din_score.py (numpy alone)
          reads it and the whole quickstart test set (20000 lines) and reproduces the C++
          predictions (--predict) to 1e-5. din_dump export (no servers) writes the same
          files, byte for byte.
"""
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "testing"))
import din_e2e  # noqa: E402
from din_e2e import fail  # noqa: E402

GEN = ["--rows", "20000", "--test_rows", "4000", "--users", "500", "--items", "5000",
       "--seed", "5"]
# The quickstart data (launch/quickstart.sh: din_gen --rows 200000 --test_rows 20000
# --seed 1), trained for QUICKSTART_STEPS steps.
QUICKSTART_GEN = ["--rows", "200000", "--test_rows", "20000", "--seed", "1"]
QUICKSTART_STEPS = 200
METRICS = ["test_auc", "test_gauc", "test_logloss"]


def run(args, extra, servers=1, workers=1):
    cmd = din_e2e.din_train(args.build, ["--backend", "cpu"] + extra, servers, workers)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=200)
    if p.returncode != 0:
        print(p.stderr[-4000:])
        fail("exit %d: %s" % (p.returncode, " ".join(extra)))
    lines = din_e2e.result_lines(p.stdout)
    if not lines:
        fail("no JSON line on stdout")
    return lines[-1]


def fresh(args, name):
    path = os.path.join(args.work, name)
    shutil.rmtree(path, ignore_errors=True)
    return path


def train(args, name, servers, workers, gen=GEN, data="data", extra=()):
    d = din_e2e.gen_data(args.build, os.path.join(args.work, data), gen)
    ckpt = fresh(args, name)
    res = run(args, ["--train", os.path.join(d, "train.tsv"), "--test",
                     os.path.join(d, "test.tsv"), "--epochs", "1", "--checkpoint-dir", ckpt] +
              list(extra), servers, workers)
    return d, res, os.path.join(ckpt, "ckpt-%012d" % res["steps"])


def predict(args, ckpt, data, out, servers=1, workers=1):
    return run(args, ["--predict", data, "--resume", ckpt, "--output", out], servers, workers)


def read_preds(path):
    with open(path) as f:
        return [float(x) for x in f.read().split()]


def same_metrics(trained, scored, what):
    for k in METRICS:
        if trained[k] is None or trained[k] != scored[k]:
            fail("%s: %s %r, the trainer's final evaluation %r" % (what, k, scored[k], trained[k]))
    print("%s: %s equal to the trainer's" % (what, ", ".join("%s %s" % (k, scored[k])
                                                            for k in METRICS)))


def no_rows_created(res, trained, what):
    if res["rows_loaded"] != trained["server_rows"]:
        fail("%s: loaded %d rows, the trainer ended with %d"
             % (what, res["rows_loaded"], trained["server_rows"]))
    if not res["server_rows_before"] == res["server_rows_after"] == res["rows_loaded"]:
        fail("%s: rows %d loaded, %d before scoring, %d after" % (
            what, res["rows_loaded"], res["server_rows_before"], res["server_rows_after"]))


def exact(args):
    d, trained, ckpt = train(args, "exact-ckpt", servers=2, workers=1)
    test = os.path.join(d, "test.tsv")
    with open(test) as f:
        lines = f.read().splitlines()
    out = os.path.join(args.work, "exact.pred")
    res = predict(args, ckpt, test, out, servers=3)
    same_metrics(trained, res, "1 worker, 3 servers")
    no_rows_created(res, trained, "1 worker, 3 servers")
    preds = read_preds(out)
    if len(preds) != len(lines) or res["predictions"] != len(lines):
        fail("%d predictions (%d reported) for %d lines" % (len(preds), res["predictions"],
                                                            len(lines)))
    if not all(0 < p < 1 for p in preds):
        fail("a prediction outside (0, 1)")
    # Two workers: each scores its part, the file keeps the input order.
    out2 = os.path.join(args.work, "exact-2w.pred")
    res2 = predict(args, ckpt, test, out2, servers=1, workers=2)
    preds2 = read_preds(out2)
    worst = max(abs(a - b) for a, b in zip(preds, preds2)) if len(preds2) == len(preds) else 1
    if not worst <= 1e-6:
        fail("2 workers: predictions differ from 1 worker's by up to %g" % worst)
    no_rows_created(res2, trained, "2 workers")
    # Reversed input, plus a line of IDs no training line has (last): the predictions
    # come in the new order, and still no row is created.
    rev = os.path.join(args.work, "reversed.tsv")
    unseen = "1\t999999991\t999999992\t999999993\t999999994\t999999995"
    with open(rev, "w") as f:
        f.write("\n".join(lines[::-1] + [unseen]) + "\n")
    out3 = os.path.join(args.work, "reversed.pred")
    res3 = predict(args, ckpt, rev, out3, servers=2, workers=2)
    preds3 = read_preds(out3)
    if len(preds3) != len(lines) + 1:
        fail("reversed: %d predictions for %d lines" % (len(preds3), len(lines) + 1))
    worst = max(abs(a - b) for a, b in zip(preds[::-1], preds3))
    if not worst <= 1e-6:
        fail("reversed input: predictions are not in input order (differ by %g)" % worst)
    no_rows_created(res3, trained, "reversed input with unseen IDs")
    print("%d predictions in input order (1 and 2 workers, reversed input); rows %d before "
          "and after scoring" % (len(preds), res3["server_rows_after"]))


def workers(args):
    d, trained, ckpt = train(args, "workers-ckpt", servers=2, workers=2)
    res = predict(args, ckpt, os.path.join(d, "test.tsv"), os.path.join(args.work, "w.pred"))
    if res["checkpoint_workers"] != 2:
        fail("checkpoint_workers %r" % res["checkpoint_workers"])
    same_metrics(trained, res, "2-worker checkpoint scored by 1 worker on 1 server")
    no_rows_created(res, trained, "2-worker checkpoint")


def numpy_python():
    """An interpreter that has numpy (the Debian one when the first python3 lacks it)."""
    for exe in (sys.executable, "/usr/bin/python3"):
        if exe and subprocess.run([exe, "-c", "import numpy"],
                                  stderr=subprocess.DEVNULL).returncode == 0:
            return exe
    fail("no python3 with numpy (apt-get install python3-numpy)")


def export(args):
    d, trained, ckpt = train(args, "export-ckpt", servers=2, workers=2, gen=QUICKSTART_GEN,
                             data="quickstart",
                             extra=["--set", "trainer.max_steps=%d" % QUICKSTART_STEPS])
    if trained["steps"] != QUICKSTART_STEPS:
        fail("trained %d steps, expected %d" % (trained["steps"], QUICKSTART_STEPS))
    test = os.path.join(d, "test.tsv")
    with open(test) as f:
        test_lines = sum(1 for _ in f)
    if test_lines != 20000:
        fail("the quickstart test set has %d lines, expected 20000" % test_lines)
    out = fresh(args, "export")
    res = run(args, ["--export", out, "--resume", ckpt])
    if res["rows"] != trained["server_rows"]:
        fail("export: %d rows, the trainer ended with %d" % (res["rows"], trained["server_rows"]))
    with open(os.path.join(out, "model.json")) as f:
        m = json.load(f)
    if (m["pooling"], m["activation"], m["max_history"]) != ("ATTENTION", "DICE", 50):
        fail("model.json: pooling %s activation %s max_history %s"
             % (m["pooling"], m["activation"], m["max_history"]))
    tables = {g: [f["table"] for f in m["fields"][g]] for g in m["fields"]}
    if tables != {"user": ["user"], "candidate": ["item", "cate"], "behavior": ["item", "cate"],
                  "context": []}:
        fail("model.json: fields read %s" % tables)
    sizes = [(l["in"], l["out"], l["activation"]) for l in m["attention"] + m["top"]]
    if sizes != [(128, 80, "DICE"), (80, 40, "DICE"), (40, 1, "NONE"),
                 (112, 200, "DICE"), (200, 80, "DICE"), (80, 1, "NONE")]:
        fail("model.json: layers %s" % sizes)
    files = sorted(os.listdir(os.path.join(out, "dense")))
    want = []
    for l in m["attention"] + m["top"]:
        want += [l[k] for k in ("weight", "bias", "alpha", "running_mean", "running_var") if k in l]
    if sorted("dense/" + f for f in files) != sorted(want):
        fail("dense/ holds %s" % files)
    rows = 0
    for t in ("user", "item", "cate"):
        for n in os.listdir(os.path.join(out, "embeddings", t)):
            if n.endswith(".ids.npy"):
                rows += len(din_e2e.read_npy(os.path.join(out, "embeddings", t, n))[1])
    if rows != res["rows"] or not os.path.exists(os.path.join(out, "embeddings", "_SUCCESS")):
        fail("embeddings/: %d rows, the checkpoint has %d" % (rows, res["rows"]))
    cpp = os.path.join(args.work, "export-cpp.pred")
    predict(args, ckpt, test, cpp)
    ref = os.path.join(args.work, "export-numpy.pred")
    score = os.path.join(din_e2e.ROOT, "tools", "din_score.py")
    p = subprocess.run([numpy_python(), score, out, test, "--output", ref],
                       stderr=subprocess.PIPE, text=True, timeout=300)
    if p.returncode != 0:
        fail("din_score.py: " + p.stderr[-2000:])
    a, b = read_preds(cpp), read_preds(ref)
    if not len(a) == len(b) == test_lines:
        fail("%d C++ predictions, %d from din_score.py, for %d test lines"
             % (len(a), len(b), test_lines))
    bad = [i for i, (x, y) in enumerate(zip(a, b)) if not abs(x - y) <= 1e-5]  # NaN too
    if bad:
        fail("din_score.py differs from the C++ predictions on %d lines, first line %d: %r vs %r"
             % (len(bad), bad[0] + 1, b[bad[0]], a[bad[0]]))
    worst = max(abs(x - y) for x, y in zip(a, b))
    print("din_score.py reproduces %d C++ predictions to %.2g (%s)" % (len(a), worst,
                                                                     p.stderr.strip()))
    # din_dump export, without servers, writes the same export.
    off = fresh(args, "export-offline")
    subprocess.check_call([din_e2e.tool(args.build, "din_dump"), "export", ckpt, off],
                          stdout=subprocess.DEVNULL)
    compared = 0
    for dirpath, _, names in os.walk(out):
        for n in names:
            rel = os.path.relpath(os.path.join(dirpath, n), out)
            mine, theirs = os.path.join(out, rel), os.path.join(off, rel)
            if not os.path.exists(theirs):
                fail("din_dump export wrote no " + rel)
            with open(mine, "rb") as f:
                x = f.read()
            with open(theirs, "rb") as f:
                y = f.read()
            if rel == os.path.join("embeddings", "MANIFEST"):  # the config section differs
                x, y = x.split(b"\nconfig\n")[0], y.split(b"\nconfig\n")[0]
            if x != y:
                fail("din_dump export: %s differs from din-train --export's" % rel)
            compared += 1
    print("din_dump export: the same %d files as din-train --export" % compared)


def main():
    args = din_e2e.parse_args(["exact", "workers", "export"])
    globals()[args.scenario](args)
    print("PASS " + args.scenario)


if __name__ == "__main__":
    main()
