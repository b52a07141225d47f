"""Slurm vs local executor, on a single-node Slurm cluster started here (needs root).

    python -m bench.benchmarks.slurm [--quick]

Prints the submit-to-result latency of a trivial cell (one sample, NFE 1) on both executors,
and the wall time of the quickstart suite on both, with the slurm/local ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.dispatch import run_suite
from bench.suite import load_suite

# the Slurm test-cluster launcher is test tooling (tests/support/slurm_local.py), not part of the
# installed package: this benchmark runs from a checkout of the repository
TESTS = Path(__file__).resolve().parents[2] / "tests"
if not (TESTS / "support" / "slurm_local.py").is_file():
    raise ImportError(f"bench.benchmarks.slurm needs the repository's tests/support/slurm_local.py "
                      f"(not found under {TESTS}): run it from a checkout of the repository, "
                      f"installed with 'pip install -e .'.")
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
from support.slurm_local import SlurmCluster, unavailable_reason  # noqa: E402

TRIVIAL = {"name": "trivial", "samples": 1, "nfe": [1], "samplers": ["euler"], "evals": ["nfe_curve"],
           "models": [{"name": "gmm", "params": {"shape": [2]}}]}
SLURM = {"partition": "debug", "cpus_per_task": 1, "timeout_min": 30}


def timed(suite_path: str, results: str, executor: str, sets: list[str] | None = None) -> float:
    suite = load_suite(suite_path, sets)
    t0 = time.perf_counter()
    # same packing on both: as many jobs as CPUs, one torch thread each
    summary = run_suite(suite, results, executor=executor, jobs=os.cpu_count() or 1,
                        executor_params=SLURM if executor == "slurm" else None)
    if summary.failed or summary.computed == 0:
        raise RuntimeError(f"{executor}: {summary.line()}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="quickstart with 128 samples")
    args = ap.parse_args()
    reason = unavailable_reason()
    if reason:
        sys.exit(f"cannot start a Slurm cluster here: {reason}")
    quick = ["samples=128"] if args.quick else []
    with tempfile.TemporaryDirectory() as tmp:
        cluster = SlurmCluster(Path(tmp) / "slurm")
        t0 = time.perf_counter()
        cluster.start()
        print(f"cluster start: {time.perf_counter() - t0:.1f} s")
        os.environ["SLURM_CONF"] = cluster.env["SLURM_CONF"]
        try:
            trivial = f"{tmp}/trivial.yaml"
            Path(trivial).write_text(yaml.safe_dump(TRIVIAL))
            lat = {ex: timed(trivial, f"{tmp}/t-{ex}", ex) for ex in ("local", "slurm")}
            print(f"trivial cell, submit to result: local {lat['local']:.1f} s, slurm "
                  f"{lat['slurm']:.1f} s")
            qs = str(Path(__file__).resolve().parents[2] / "suites" / "quickstart.yaml")
            wall = {ex: timed(qs, f"{tmp}/q-{ex}", ex, quick) for ex in ("local", "slurm")}
            print(f"quickstart{' (128 samples)' if quick else ''}: local {wall['local']:.1f} s, "
                  f"slurm {wall['slurm']:.1f} s, ratio slurm/local {wall['slurm'] / wall['local']:.2f}")
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
