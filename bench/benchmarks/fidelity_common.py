"""Shared by the fidelity benchmarks: stream real images through the harness's metric path.

Generated samples are Fashion-MNIST training images in the model frame ([-1, 1]); the ``gmm``
adapter's ``decode`` maps them back to the exact uint8 pixels, so the metrics see exactly
what a model run would hand them: samples -> decode (once) -> Generation -> features -> state,
with the per-batch ``state(); reset(); merge`` fold of the sharded evals.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bench.generate import Generation
from bench.metrics.base import MetricContext
from bench.registry import METRICS, load_all


def adapter() -> Any:
    from bench.models.gmm import GMMOracle

    return GMMOracle(shape=[1, 28, 28])


def stream(metrics: list[str], params: dict[str, Any], n: int, batch_size: int = 100,
           device: str = "cpu") -> dict[str, dict[str, np.ndarray]]:
    """Merged states of ``metrics`` over the first n training images (cycled past 60000)."""
    from bench.data import open_dataset

    load_all()
    ds = open_dataset("fmnist-train")
    model = adapter()
    ctx = MetricContext(model, torch.device(device), None, params=params)
    ms = {m: METRICS.get(m)(ctx) for m in metrics}
    acc: dict[str, dict[str, np.ndarray]] = {}
    for b0 in range(0, n, batch_size):
        idx = np.arange(b0, min(b0 + batch_size, n))
        src = idx % len(ds)
        imgs = torch.from_numpy(np.stack([ds.images(int(i), int(i) + 1)[0] for i in src]))
        x = imgs.to(torch.float64) / 127.5 - 1
        batch = Generation.of_samples(model, idx, x)
        for name, m in ms.items():
            m.update(batch)
            st = m.state()
            m.reset()
            acc[name] = st if name not in acc else METRICS.get(name).merge([acc[name], st])
    return acc


def compute(acc: dict[str, dict[str, np.ndarray]]) -> dict[str, tuple[float, float, float]]:
    out: dict[str, tuple[float, float, float]] = {}
    for name, st in acc.items():
        out.update(METRICS.get(name).compute(st))
    return out
