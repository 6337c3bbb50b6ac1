"""What the end-to-end test scripts share: paths, failing a scenario, data from din_gen,
launching jobs with launch/din-train and reading their one JSON result line.

Scripts import it with
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "testing"))
    import din_e2e
"""
import argparse
import array
import ast
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


def file_hash(path):
    """SHA-256 of a file's bytes, hex."""
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
    return json.dumps([file_hash(f) for f in files])


def gen_data(build, out_dir, gen_args):
    """din_gen --out OUT_DIR GEN_ARGS, reused while both the arguments and the din_gen
    binary are the ones that wrote it (a stamp file records them); returns OUT_DIR."""
    gen = tool(build, "din_gen")
    stamp = os.path.join(out_dir, "din_gen.stamp")
    key = json.dumps({"args": list(gen_args), "din_gen": file_hash(gen)})
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


def read_npy(path):
    """A little-endian float32, uint32 or uint64 .npy file as (shape, flat array.array),
    without numpy."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:6] != b"\x93NUMPY":
        raise ValueError(path + ": not an .npy file")
    major = data[6]
    if major == 1:
        hlen, start = int.from_bytes(data[8:10], "little"), 10
    else:
        hlen, start = int.from_bytes(data[8:12], "little"), 12
    header = ast.literal_eval(data[start:start + hlen].decode("latin1"))
    code = {"<f4": "f", "<u4": "I", "<u8": "Q"}[header["descr"]]
    values = array.array(code)
    values.frombytes(data[start + hlen:])
    return tuple(header["shape"]), values


def read_dump_table(dump, table):
    """{id: [weights]} of one table of an embedding dump (all its parts)."""
    rows = {}
    d = os.path.join(dump, table)
    for name in sorted(os.listdir(d)):
        if not name.endswith(".ids.npy"):
            continue
        _, ids = read_npy(os.path.join(d, name))
        shape, emb = read_npy(os.path.join(d, name.replace(".ids.npy", ".emb.npy")))
        dim = shape[1]
        for i, key in enumerate(ids):
            rows[key] = emb[i * dim:(i + 1) * dim]
    return rows


def _varint(data, pos):
    value = shift = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def worker_state_field(path, field):
    """The bytes of one length-delimited field of a checkpoint's worker-WWWWW.state (a
    serialized WorkerState, common/proto/checkpoint.proto), read without protobuf."""
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, pos = _varint(data, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == 2:
            n, pos = _varint(data, pos)
            if number == field:
                return data[pos:pos + n]
            pos += n
        else:
            raise ValueError("%s: wire type %d" % (path, wire_type))
    raise KeyError("%s: no field %d" % (path, field))


def dense_params(checkpoint):
    """Worker 0's dense parameters (float32, ModelLayout order) in a checkpoint."""
    values = array.array("f")
    values.frombytes(worker_state_field(os.path.join(checkpoint, "worker-00000.state"), 6))
    return values


def relative_difference(a, b):
    """max |a - b| / max |a|: the difference against the tensor's own scale."""
    scale = max((abs(x) for x in a), default=0.0)
    diff = max((abs(x - y) for x, y in zip(a, b)), default=0.0)
    return diff / scale if scale > 0 else diff
