#!/usr/bin/env python3
"""Prints "passed failed skipped" of a test run, for the shell scripts that
add up the suites (tests/run.sh, tests/sanitize.sh):

  tests/counts.py meson build/meson-logs/testlog.json
  tests/counts.py junit RESULTS.xml

An unreadable file counts as one failure (the suite did not get to write it)."""
import json
import sys
import xml.etree.ElementTree as ET


def meson(path):
    ok = fail = skip = 0
    for line in open(path):
        r = json.loads(line).get("result")
        if r == "OK":
            ok += 1
        elif r == "SKIP":
            skip += 1
        elif r:
            fail += 1
    return ok, fail, skip


def junit(path):
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    t = sum(int(s.get("tests", 0)) for s in suites)
    f = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    s = sum(int(s.get("skipped", 0)) for s in suites)
    return t - f - s, f, s


try:
    counts = {"meson": meson, "junit": junit}[sys.argv[1]](sys.argv[2])
except Exception:
    counts = (0, 1, 0)
print(*counts)
