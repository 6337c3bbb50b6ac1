"""What the training benchmarks share (bench/scaleout.py, bench/sweep.py): the data sets
they train on and one training job through launch/din-train, returning its JSON line."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "launch", "configs", "quickstart.pbtxt")
MOVIELENS_CONFIG = os.path.join(ROOT, "launch", "configs", "movielens.pbtxt")
ML_LATEST_SMALL = os.path.join(os.path.dirname(ROOT), "shared", "data", "ml-latest-small")


def din_gen(build, out, args):
    """din_gen data in OUT (made once per argument list)."""
    stamp = os.path.join(out, "args.json")
    if os.path.exists(stamp) and json.load(open(stamp)) == args:
        return out
    os.makedirs(out, exist_ok=True)
    subprocess.check_call([os.path.join(build, "tools", "din_gen"), "--out", out] + args,
                          stdout=subprocess.DEVNULL)
    json.dump(args, open(stamp, "w"))
    return out


def movielens(build, out):
    """ml-latest-small converted with the paper's protocol, or None when absent."""
    if not os.path.exists(os.path.join(ML_LATEST_SMALL, "ratings.csv")):
        return None
    if not os.path.exists(os.path.join(out, "test.tsv")):
        subprocess.check_call([os.path.join(build, "tools", "din_convert"), "movielens",
                               ML_LATEST_SMALL, out], stdout=subprocess.DEVNULL)
    return out


def train(build, config, data, servers, workers, sets):
    """One job; its final JSON line as a dict. SETS: a list of PATH=VALUE overrides."""
    cmd = [sys.executable, os.path.join(ROOT, "launch", "din-train"), "--config", config,
           "--train", os.path.join(data, "train.tsv"), "--test", os.path.join(data, "test.tsv"),
           "--servers", str(servers), "--workers", str(workers), "--build-dir", build,
           "--backend", "cpu"]
    for s in sets:
        cmd += ["--set", s]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-3000:])
        raise SystemExit("job failed: " + " ".join(cmd))
    return json.loads([l for l in p.stdout.splitlines() if l.startswith("{")][-1])
