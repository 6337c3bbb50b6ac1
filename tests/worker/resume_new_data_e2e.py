#!/usr/bin/env python3
"""Daily training: a checkpoint's model continued on the next day's file with
trainer.resume_new_data, under mpirun on localhost (launch/din-train), on two din_gen days
whose item populations differ (--day D --drift 0.5).

  resume_new_data_e2e.py SCENARIO --build BUILD_DIR --work WORK_DIR

Scenarios (each one ctest test):
  new_data  day 0 is trained with a checkpoint at the end. Resuming from it on day 1's
            file without resume_new_data is refused (the checkpoint's reader position
            belongs to other input) and the job exits non-zero. With it, the job trains
            all of day 1 from its start: its step count continues from day 0's (ending
            at about twice day 0's, the days being of one size), it trains and counts (PREPASS) day 1's samples, and the
            item table ends with more rows than after day 0 (day 1's new items got rows,
            the loaded ones stayed).
"""
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "testing"))
import din_e2e  # noqa: E402
from din_e2e import fail  # noqa: E402

ROWS = 4000
GEN = ["--rows", str(ROWS), "--test_rows", "1000", "--users", "200", "--items", "2000",
       "--max_history", "10", "--seed", "5", "--drift", "0.5"]


def job(args, day, extra):
    d = din_e2e.gen_data(args.build, os.path.join(args.work, "day%d" % day),
                         GEN + ["--day", str(day)])
    cmd = din_e2e.din_train(args.build, [
        "--train", os.path.join(d, "train.tsv"), "--test", os.path.join(d, "test.tsv"),
        "--epochs", "1", "--backend", "cpu"] + extra)
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=180)


def scenario_new_data(args):
    ckpt = os.path.join(args.work, "ckpt")
    shutil.rmtree(ckpt, ignore_errors=True)
    p = job(args, 0, ["--checkpoint-dir", ckpt])
    if p.returncode != 0:
        print(p.stderr[-4000:])
        fail("day 0 failed")
    day0 = din_e2e.result_lines(p.stdout)[0]
    if day0["samples_trained"] != ROWS:
        fail("day 0 trained %d samples, expected %d" % (day0["samples_trained"], ROWS))

    p = job(args, 1, ["--resume", ckpt])
    print("without resume_new_data: exit %d" % p.returncode)
    if p.returncode == 0:
        fail("resuming a checkpoint on other training data without resume_new_data exited 0")
    if "other input files" not in p.stderr:
        print(p.stderr[-4000:])
        fail("the refusal does not say the reader state belongs to other input files")

    p = job(args, 1, ["--resume", ckpt, "--set", "trainer.resume_new_data=true"])
    if p.returncode != 0:
        print(p.stderr[-4000:])
        fail("day 1 with resume_new_data failed")
    day1 = din_e2e.result_lines(p.stdout)[0]
    print("day 0: %d steps, item rows %d; day 1: %d steps, %d samples, item rows %d, "
          "test_gauc %.4f" % (day0["steps"], day0["tables"]["item"]["rows"], day1["steps"],
                              day1["samples_trained"], day1["tables"]["item"]["rows"],
                              day1["test_gauc"]))
    # The step count continues; day 1 has as many rows as day 0, so about as many steps.
    if not 1.8 * day0["steps"] <= day1["steps"] <= 2.2 * day0["steps"]:
        fail("day 1 ends at step %d, day 0 at %d: expected about twice" %
             (day1["steps"], day0["steps"]))
    if day1["samples_trained"] != ROWS or day1["train_rows"] != ROWS:
        fail("day 1 trained %d samples and counted %d, expected %d" %
             (day1["samples_trained"], day1["train_rows"], ROWS))
    if not day1["tables"]["item"]["rows"] > day0["tables"]["item"]["rows"]:
        fail("day 1's new items got no rows")


def main():
    args = din_e2e.parse_args(["new_data"])
    {"new_data": scenario_new_data}[args.scenario](args)
    print("PASS")


if __name__ == "__main__":
    main()
