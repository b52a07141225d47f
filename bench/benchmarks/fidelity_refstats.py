"""A second fidelity run against the same reference recomputes nothing: time of building the
Fashion-MNIST test reference vs finding it again, through the metric path a suite uses.

    python -m bench.benchmarks.fidelity_refstats [--n 500] [--resize clean] [--device cpu]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500, help="reference images (fmnist-test[:n])")
    ap.add_argument("--resize", default="clean")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    from bench.benchmarks.fidelity_common import adapter
    from bench.metrics.base import MetricContext
    from bench.metrics.fidelity_common import get_extractor
    from bench.metrics.fid import FID

    with tempfile.TemporaryDirectory() as root:
        params = {"ref": "fmnist-test", "ref_limit": a.n, "refstats_dir": root, "resize": a.resize}
        get_extractor(params, a.device)  # load the network outside the timings
        ctx = MetricContext(adapter(), torch.device(a.device), None, params=params)
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            m = FID(ctx)  # resolves the reference: builds it, or finds it by content
            times.append(time.perf_counter() - t0)
        print(f"reference {m.ref_id}")
        print(f"first run (builds {a.n} images): {times[0]:.2f} s; second run (found by content "
              f"hash): {times[1]:.3f} s; ratio first/second {times[0] / times[1]:.0f}x")


if __name__ == "__main__":
    main()
