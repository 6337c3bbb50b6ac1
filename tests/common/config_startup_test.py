#!/usr/bin/env python3
"""A bad config stops every process at start-up with a message naming the file and the
field, and a non-zero exit, within seconds (no process starts training or waits for
peers that will never come).

  config_startup_test.py --build BUILD_DIR --work WORK_DIR

Checks, each with its own config file:
  - din_ps alone under mpirun (tests/mpirun.sh -np 1): a zero dim, and a data field whose
    table is not declared (servers refuse it too, not only the workers);
  - a whole job through launch/din-train (1 server, 1 worker): a zero shard count, and an
    unknown field (reported as FILE:LINE:COLUMN).
"""
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "testing"))
import din_e2e  # noqa: E402
from din_e2e import fail  # noqa: E402
# Measured 1-3 s on a 2-core machine (mpirun start-up); the limit leaves margin for a busy
# machine but is far below any request or barrier timeout.
WITHIN_S = 30

TABLES = """tables { name: "user" dim: 8 }
tables { name: "item" dim: 8 shards: 2 }
tables { name: "cate" dim: 4 }
"""



def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def expect_refused(what, cmd, pattern):
    t0 = time.time()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=120)
    secs = time.time() - t0
    out = p.stdout + p.stderr
    if p.returncode == 0:
        fail("%s: exited 0" % what)
    if secs > WITHIN_S:
        fail("%s: took %.1fs to fail (limit %ds)" % (what, secs, WITHIN_S))
    m = re.search(pattern, out)
    if not m:
        print(out[-4000:])
        fail("%s: no message matching %r" % (what, pattern))
    print("%s: exit %d after %.1fs: %s" % (what, p.returncode, secs, m.group(0)), flush=True)


def main():
    args = din_e2e.parse_args(None)
    din_ps = os.path.join(args.build, "ps", "din_ps")
    mpirun = din_e2e.MPIRUN

    zero_dim = write(os.path.join(args.work, "zero_dim.pbtxt"),
                     TABLES.replace('dim: 4', 'dim: 0'))
    expect_refused("din_ps, zero dim", [mpirun, "-np", "1", din_ps, "--config", zero_dim],
                   re.escape("config %s: tables[2] (cate): dim must be in 1..4096, got 0"
                             % zero_dim))

    no_cate = write(os.path.join(args.work, "no_cate.pbtxt"),
                    TABLES.replace('tables { name: "cate" dim: 4 }\n', "") +
                    'data { train_path: "/nonexistent/train.tsv" }\n')
    expect_refused("din_ps, undeclared table", [mpirun, "-np", "1", din_ps, "--config", no_cate],
                   re.escape("config %s: data: din-tsv field 'cate': reads table 'cate', which "
                             "the config does not declare" % no_cate))

    train = write(os.path.join(args.work, "train.tsv"), "1\t1\t2\t3\t\t\n")
    launch = din_e2e.din_train(args.build, ["--train", train, "--backend", "cpu"], config=None)
    zero_shards = write(os.path.join(args.work, "zero_shards.pbtxt"),
                        TABLES.replace("shards: 2", "shards: 0"))
    expect_refused("din-train, zero shards", launch + ["--config", zero_shards],
                   re.escape("config %s (with --set overrides): tables[1] (item): shards must "
                             "be in 1..65536, got 0" % zero_shards))

    unknown = write(os.path.join(args.work, "unknown.pbtxt"),
                    TABLES + "trainer {\n  epochs: 1\n  epoch: 2\n}\n")
    expect_refused("din-train, unknown field", launch + ["--config", unknown],
                   re.escape(unknown) + r":6:\d+: [^\n]*no field named \"epoch\"")
    print("PASS")


if __name__ == "__main__":
    main()
