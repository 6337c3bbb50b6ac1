#!/usr/bin/python3
"""Runs the PyTorch reference (din_torch.py) for bench/e2e.sh and adds what a like-for-like
comparison needs to its JSON line.

usage: peer_torch.py DIN_TORCH_PY DATA_DIR [din_torch.py flags ...]

The reference times only its training loop, with the data already parsed into tensors.
This wrapper also times its loading of train.tsv on its own (load_train_seconds; the
reference's load_seconds covers train.tsv and test.tsv together), so that e2e.sh can
compare with data loading in or out for both sides. OMP_NUM_THREADS and torch's thread
count are both set to the --threads given (e2e.sh passes the trainer's thread total).
"""
import importlib.util
import io
import json
import os
import sys
import time


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    script, data, flags = sys.argv[1], sys.argv[2], sys.argv[3:]
    threads = flags[flags.index("--threads") + 1] if "--threads" in flags else "1"
    # Before torch is imported: its OpenMP pool reads this once.
    os.environ["OMP_NUM_THREADS"] = threads
    os.environ["MKL_NUM_THREADS"] = threads
    spec = importlib.util.spec_from_file_location("din_torch", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    loads = []
    original = mod.load

    def timed_load(path, *args, **kwargs):
        t0 = time.time()
        out = original(path, *args, **kwargs)
        loads.append((os.path.basename(path), time.time() - t0))
        return out

    mod.load = timed_load  # main() looks `load` up in the module at call time
    sys.argv = [script, data] + flags
    captured = io.StringIO()
    real_stdout = sys.stdout
    sys.stdout = captured
    try:
        mod.main()
    finally:
        sys.stdout = real_stdout
    lines = [l for l in captured.getvalue().splitlines() if l.startswith("{")]
    if not lines:
        sys.exit("peer_torch.py: the reference printed no JSON line")
    out = json.loads(lines[-1])
    out["load_train_seconds"] = round(sum(s for name, s in loads if name == "train.tsv"), 3)
    out["torch_threads"] = mod.torch.get_num_threads()
    out["omp_num_threads"] = int(threads)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
