"""Harness overhead: share of a cell's wall time spent outside model evaluations.

    python -m bench.benchmarks.overhead

Runs one `nfe_curve` cell in-process through the same code path as `bench run` (worker ->
eval -> generate -> sampler -> CountingDenoiser -> metric -> atomic shard write) on a full-covariance
Gaussian oracle at 3x32x32 (each evaluation is two 3072x3072 matrix products per batch, the cost
of a small network), and prints where a cell's wall time goes. The target (< 5%) is for the harness's own share:
everything but model loading, model evaluations and the metric.
"""

from __future__ import annotations

import tempfile
import time

import yaml

from bench.store import ResultStore
from bench.suite import load_suite, plan
from bench.worker import run_shards

SUITE = {
    "name": "overhead", "seed": 0, "samples": 256, "batch_size": 128, "nfe": [20],
    "models": [{"name": "gmm", "params": {"shape": [3, 32, 32], "cov": "full", "var_min": 0.01}}],
    "samplers": ["euler", "heun", "ddim", "dpm_solver_2"], "nfe_rounding": "down",
    "evals": ["nfe_curve"],
}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/overhead.yaml"
        with open(path, "w") as f:
            yaml.safe_dump(SUITE, f)
        shards = plan(load_suite(path))
        store = ResultStore(f"{tmp}/res")
        print(f"{'sampler':14s} {'NFE':>4s} {'wall s':>7s} {'load s':>7s} {'model s':>8s} "
              f"{'metric s':>8s} {'harness s':>9s} {'harness/wall':>12s}")
        worst = 0.0
        for cell in shards:
            t0 = time.perf_counter()
            run_shards([cell], str(store.root))
            wall = time.perf_counter() - t0
            _, m = store.read_shard(cell.key)
            harness = wall - m["load_s"] - m["model_s"] - m["metric_s"]
            worst = max(worst, harness / wall)
            print(f"{cell.sampler['label']:14s} {m['nfe_counted']:4d} {wall:7.2f} {m['load_s']:7.2f} "
                  f"{m['model_s']:8.2f} {m['metric_s']:8.2f} {harness:9.2f} {100 * harness / wall:11.1f}%")
        print("harness = wall - model loading - model evaluations - metric (oracle ground truth):")
        print("sampler arithmetic, per-sample noise, NFE counting, shard write, bookkeeping.")
        print(f"worst harness share of a cell's wall time: {100 * worst:.1f}% (target < 5%)")


if __name__ == "__main__":
    main()
