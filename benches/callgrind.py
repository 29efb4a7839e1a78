#!/usr/bin/env python3
"""Instructions per request of the native hot path, counted by valgrind's callgrind.

A figure a noisy machine cannot blur: the same binary and input execute the same instructions
however loaded the machine is, so a change of a few percent shows. For each case (a
configuration and a request of benches/hot_path.rs) the driver runs twice under callgrind,
with LOW and HIGH iterations; the instructions of one request are the difference of the two
totals divided by HIGH - LOW (start-up and configuration parsing cancel out).

Usage (what `make callgrind` runs):

  python3 benches/callgrind.py target/release/examples/hot_path
  python3 benches/callgrind.py BINARY --cases default:w3c widest:w3c --json out.json
  python3 benches/callgrind.py BINARY --compare before.json   # adds a before/after column

Python standard library only; needs valgrind (Debian package "valgrind").
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

# Every request of each configuration people run, plus the widest configuration's
# interesting ones.
DEFAULT_CASES = [
    "default:w3c",
    "default:b3",
    "default:b3multi",
    "default:xray",
    "default:cloudtrace",
    "default:none",
    "default:mixed",
    "four:w3c",
    "widest:w3c",
    "widest:xray",
    "widest:datadog",
    "widest:baggage",
    "widest:none",
]

COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def instructions(binary: str, config: str, request: str, iterations: int) -> int:
    out = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            binary,
            config,
            request,
            str(iterations),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{binary} {config} {request} failed:\n{out.stderr[-2000:]}")
    match = COLLECTED.search(out.stderr)
    if not match:
        raise SystemExit(f"no instruction count in valgrind's output:\n{out.stderr[-2000:]}")
    return int(match.group(1))


def per_request(binary: str, case: str, low: int, high: int) -> float:
    config, _, request = case.partition(":")
    a = instructions(binary, config, request, low)
    b = instructions(binary, config, request, high)
    return (b - a) / (high - low)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("binary", help="the hot_path example (cargo build --release --example hot_path)")
    parser.add_argument("--cases", nargs="+", default=DEFAULT_CASES, help="CONFIG:REQUEST ...")
    parser.add_argument("--low", type=int, default=200)
    parser.add_argument("--high", type=int, default=1200)
    parser.add_argument("--json", type=Path, help="write {case: instructions} here")
    parser.add_argument("--compare", type=Path, help="a --json file of an earlier run")
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        print("error: valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 1
    before = json.loads(args.compare.read_text()) if args.compare else {}
    print(f"Instructions per request, native hot path (callgrind, {args.high} - {args.low} iterations):")
    head = f"  {'configuration:request':<22} {'instructions':>12}"
    if before:
        head += f" {'before':>12} {'change':>8}"
    print(head)
    results = {}
    for case in args.cases:
        value = per_request(args.binary, case, args.low, args.high)
        results[case] = value
        line = f"  {case:<22} {value:>12,.0f}"
        if case in before:
            old = before[case]
            line += f" {old:>12,.0f} {100 * (value - old) / old:>+7.1f}%"
        print(line, flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
