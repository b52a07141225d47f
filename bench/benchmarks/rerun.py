"""Rerun of a finished suite vs its first run, both as `bench run` processes.

    python -m bench.benchmarks.rerun [--suite suites/quickstart.yaml] [--executor local]

Prints both wall times and their ratio (target: rerun < 10% of the first run).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time


def timed(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return time.perf_counter() - t0, out.strip().splitlines()[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--suite", default="suites/quickstart.yaml")
    ap.add_argument("--executor", default="local")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as res:
        cmd = [sys.executable, "-m", "bench.cli", "run", args.suite, "--executor", args.executor,
               "--results", res] + [f"--set={s}" for s in args.set]
        first, line1 = timed(cmd)
        again, line2 = timed(cmd)
    print(f"first run : {first:7.2f} s  ({line1})")
    print(f"rerun     : {again:7.2f} s  ({line2})")
    print(f"ratio rerun/first = {again / first:.3f}  (target < 0.10)")


if __name__ == "__main__":
    main()
