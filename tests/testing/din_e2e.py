"""What the end-to-end test scripts share: paths, failing a scenario, data from din_gen,
launching jobs with launch/din-train and reading their one JSON result line.

Scripts import it with
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "testing"))
    import din_e2e
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICKSTART_CONFIG = os.path.join(ROOT, "launch", "configs", "quickstart.pbtxt")
DIN_TRAIN = os.path.join(ROOT, "launch", "din-train")
MPIRUN = os.path.join(ROOT, "tests", "mpirun.sh")


def fail(msg):
    """Ends the scenario: prints FAIL and exits 1."""
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


def tool(build, name):
    """A program built under build/tools (din_gen, din_dump, din_convert, din_keys)."""
    return os.path.join(build, "tools", name)


def parse_args(scenarios):
    """SCENARIO --build BUILD_DIR --work WORK_DIR, with absolute paths and WORK made."""
    ap = argparse.ArgumentParser()
    if scenarios:
        ap.add_argument("scenario", choices=scenarios)
    ap.add_argument("--build", required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    args.build = os.path.abspath(args.build)
    args.work = os.path.abspath(args.work)
    os.makedirs(args.work, exist_ok=True)
    return args


def _file_hash(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_key(build):
    """A key for results cached across test runs: the hashes of the programs a job runs,
    the launcher and the quickstart config. A rebuilt program invalidates the cache."""
    files = [os.path.join(build, "ps", "din_ps"), os.path.join(build, "worker", "din_worker"),
             DIN_TRAIN, QUICKSTART_CONFIG]
    return json.dumps([_file_hash(f) for f in files])


def gen_data(build, out_dir, gen_args):
    """din_gen --out OUT_DIR GEN_ARGS, reused while both the arguments and the din_gen
    binary are the ones that wrote it (a stamp file records them); returns OUT_DIR."""
    gen = tool(build, "din_gen")
    stamp = os.path.join(out_dir, "din_gen.stamp")
    key = json.dumps({"args": list(gen_args), "din_gen": _file_hash(gen)})
    if os.path.exists(stamp) and os.path.exists(os.path.join(out_dir, "bayes.json")):
        with open(stamp) as f:
            if f.read() == key:
                return out_dir
    os.makedirs(out_dir, exist_ok=True)
    if os.path.exists(stamp):
        os.remove(stamp)
    subprocess.check_call([gen, "--out", out_dir] + list(gen_args), stdout=subprocess.DEVNULL)
    with open(stamp, "w") as f:
        f.write(key)
    return out_dir


def bayes(data_dir):
    """din_gen's bayes.json: the test set's Bayes-optimal metrics."""
    with open(os.path.join(data_dir, "bayes.json")) as f:
        return json.load(f)


def din_train(build, extra, servers=1, workers=1, config=QUICKSTART_CONFIG):
    """The launcher command line for a job of SERVERS servers and WORKERS workers (with
    config=None, EXTRA names the config)."""
    cmd = [sys.executable, DIN_TRAIN]
    if config:
        cmd += ["--config", config]
    return cmd + ["--servers", str(servers), "--workers", str(workers),
                  "--build-dir", build] + list(extra)


def result_lines(stdout):
    """The JSON lines a job printed on stdout, parsed."""
    return [json.loads(l) for l in stdout.splitlines() if l.startswith("{")]
