#!/usr/bin/env python3
"""tools/din_plot on the metrics file of a real training job (mpirun on localhost).

  din_plot_e2e.py plot --build BUILD_DIR --work WORK_DIR

A small din_gen job (quickstart config, an evaluation every 20 steps) writes its
metrics file: evaluation lines carry the test and the train AUC and GAUC. din_plot
turns it into a PNG of 1300 x 850 pixels and more than 30 kB (four panels with their
curves), and prints its path; a file without metrics lines is refused.
"""
import os
import struct
import subprocess
import sys
import json

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "testing"))
import din_e2e  # noqa: E402
from din_e2e import fail  # noqa: E402

GEN = ["--rows", "20000", "--test_rows", "2000", "--users", "500", "--items", "5000",
       "--seed", "7"]


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        fail(path + " is not a PNG")
    return struct.unpack(">II", head[16:24])


def plot(args):
    d = din_e2e.gen_data(args.build, os.path.join(args.work, "data"), GEN)
    metrics = os.path.join(args.work, "metrics.jsonl")
    cmd = din_e2e.din_train(args.build, ["--train", os.path.join(d, "train.tsv"), "--test",
                                         os.path.join(d, "test.tsv"), "--epochs", "1",
                                         "--backend", "cpu", "--metrics", metrics,
                                         "--set", "trainer.eval_every_steps=20"])
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=200)
    if p.returncode != 0:
        print(p.stderr[-3000:])
        fail("training job exit %d" % p.returncode)
    with open(metrics) as f:
        lines = [json.loads(l) for l in f if l.strip()]
    evals = [r for r in lines if "eval" in r]
    if len(evals) < 3 or not all(0 < r["train_auc"] < 1 and 0 < r["train_gauc"] < 1
                                 for r in evals):
        fail("evaluation lines without train AUC/GAUC: %s" % evals[:2])
    png = os.path.join(args.work, "metrics.png")
    if os.path.exists(png):
        os.remove(png)
    tool = os.path.join(din_e2e.ROOT, "tools", "din_plot")
    p = subprocess.run([sys.executable, tool, metrics, png], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=120)
    if p.returncode != 0:
        fail("din_plot: " + p.stderr[-2000:])
    if p.stdout.strip() != os.path.abspath(png):
        fail("din_plot printed %r, not the PNG's path" % p.stdout)
    size = os.path.getsize(png)
    dims = png_size(png)
    if dims != (1300, 850) or size < 30000:
        fail("PNG of %s pixels and %d bytes" % (dims, size))
    print("din_plot: %s, %dx%d pixels, %d bytes, from %d step and %d evaluation lines"
          % (png, dims[0], dims[1], size, len(lines) - len(evals), len(evals)))
    empty = os.path.join(args.work, "empty.jsonl")
    open(empty, "w").close()
    p = subprocess.run([sys.executable, tool, empty, png], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=60)
    if p.returncode == 0 or "no metrics line" not in p.stderr:
        fail("an empty metrics file: exit %d, %r" % (p.returncode, p.stderr))


def main():
    args = din_e2e.parse_args(["plot"])
    globals()[args.scenario](args)
    print("PASS " + args.scenario)


if __name__ == "__main__":
    main()
