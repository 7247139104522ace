#!/usr/bin/env python3
"""Compare an x509-limbo harness run with the suite's expected results.

Usage: python3 scripts/limbo_check.py LIMBO_JSON RESULTS_JSON EXCEPTIONS_FILE

EXCEPTIONS_FILE lists accepted disagreements, one per line: `<case id>  # <reason>`
(blank lines and lines starting with `#` are ignored; a reason is required).

Prints `limbo: N agree, N disagree (N listed as exceptions), N skipped`, then every
disagreement that is not listed, every listed exception that now agrees (stale) or that
names no case / a skipped case, and finally `N passed, N failed` (passed = agreeing
cases, failed = unlisted disagreements; listed exceptions count in neither).
Exits 1 on any unlisted disagreement, stale or dangling exception, or malformed input; 0
otherwise.
"""

import json
import sys


def load_exceptions(path):
    exceptions = {}
    problems = []
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            case_id, sep, reason = line.partition("#")
            case_id, reason = case_id.strip(), reason.strip()
            if not sep or not reason:
                problems.append(f"{path}:{lineno}: exception {case_id!r} has no reason")
            if " " in case_id or "\t" in case_id:
                problems.append(f"{path}:{lineno}: malformed exception line: {line!r}")
                continue
            if case_id in exceptions:
                problems.append(f"{path}:{lineno}: duplicate exception {case_id}")
            exceptions[case_id] = reason
    return exceptions, problems


def main(argv):
    if len(argv) != 4:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    limbo_path, results_path, exceptions_path = argv[1:]
    with open(limbo_path, encoding="utf-8") as f:
        suite = json.load(f)
    with open(results_path, encoding="utf-8") as f:
        run = json.load(f)
    exceptions, problems = load_exceptions(exceptions_path)

    expected = {c["id"]: c["expected_result"] for c in suite["testcases"]}
    actual = {}
    for r in run.get("results", []):
        if r["id"] in actual:
            problems.append(f"duplicate result for {r['id']}")
        actual[r["id"]] = (r["actual_result"], r.get("context", ""))
    for case_id in expected:
        if case_id not in actual:
            problems.append(f"no result for {case_id}")
    for case_id in actual:
        if case_id not in expected:
            problems.append(f"result for unknown case {case_id}")

    agree = disagree = listed = skipped = 0
    unlisted = []
    stale = []
    for case_id, want in expected.items():
        if case_id not in actual:
            continue
        got, context = actual[case_id]
        if got == "SKIPPED":
            skipped += 1
            if case_id in exceptions:
                problems.append(f"exception for skipped case {case_id}")
            continue
        if got not in ("SUCCESS", "FAILURE"):
            problems.append(f"{case_id}: invalid actual_result {got!r}")
            continue
        if got == want:
            agree += 1
            if case_id in exceptions:
                stale.append((case_id, got))
        else:
            disagree += 1
            if case_id in exceptions:
                listed += 1
            else:
                unlisted.append((case_id, want, got, context))
    for case_id in exceptions:
        if case_id not in expected:
            problems.append(f"exception for unknown case {case_id}")

    print(f"limbo: {agree} agree, {disagree} disagree ({listed} listed as exceptions), {skipped} skipped")
    for case_id, want, got, context in unlisted:
        print(f"DISAGREE {case_id}: expected {want}, got {got}: {context}")
    for case_id, got in stale:
        print(f"STALE EXCEPTION {case_id}: now agrees ({got}); remove it from {exceptions_path}")
    for p in problems:
        print(f"ERROR {p}")
    print(f"{agree} passed, {len(unlisted)} failed")
    return 1 if unlisted or stale or problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
