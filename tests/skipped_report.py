#!/usr/bin/env python3
"""Lists the tests that ctest reported as skipped, with their reasons, from the JUnit
files ctest wrote (ctest --output-junit FILE). tests/run.sh prints this at its end.

The reason is what the test printed: a gtest case's GTEST_SKIP() message (the lines
after "file:line: Skipped"), a script's "SKIP: reason" line (scripts skip with exit code
77, the tests' SKIP_RETURN_CODE), else ctest's own word for it.

    skipped_report.py STAGE=FILE.xml ...
"""
import sys
import xml.etree.ElementTree as ET


def reason_of(case):
    out = case.findtext("system-out") or ""
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.endswith(": Skipped"):
            why = []
            for more in lines[i + 1:]:
                if more.startswith("[  SKIPPED ]"):
                    break
                why.append(more.strip())
            return " ".join(w for w in why if w) or "(no message)"
    for line in lines:
        if line.startswith("SKIP:"):
            return line[len("SKIP:"):].strip()
    skipped = case.find("skipped")
    return skipped.get("message", "") if skipped is not None else "(no message)"


def main(argv):
    rows = []
    for arg in argv:
        stage, _, path = arg.partition("=")
        try:
            root = ET.parse(path).getroot()
        except (OSError, ET.ParseError):
            continue  # a stage that did not run (or did not finish) wrote no file
        for case in root.iter("testcase"):
            if case.find("skipped") is not None:
                rows.append((stage, case.get("name"), reason_of(case)))
    if not rows:
        print("no test was skipped")
        return 0
    print("%d test(s) skipped:" % len(rows))
    for stage, name, why in rows:
        print("  [%s] %s: %s" % (stage, name, why))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
