"""Metrics: per-shard mergeable state, stateless compute (torchmetrics-style)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bench.models.base import ModelAdapter

#: metric name -> (value, ci_low, ci_high)
Values = dict[str, tuple[float, float, float]]


@dataclass
class SampleBatch:
    """One generated batch and how it was made."""

    indices: np.ndarray  # int64 sample indices
    x_start: Tensor      # the initial batch at sigmas[0] (data-scaled frame)
    samples: Tensor      # the sampler's output at sigmas[-1]
    sigmas: Tensor       # the grid stepped along (float64)
    cond: Any = None


@dataclass
class MetricContext:
    adapter: ModelAdapter
    device: torch.device
    cache_dir: Path | None = None
    #: the metric's own parameters (suite: ``metrics: [{name: fid, params: {ref: ...}}]``)
    params: dict[str, Any] | None = None


class Metric(ABC):
    """update() on batches -> state() arrays that merge() across shards -> compute().

    The harness calls ``update(batch); state(); reset()`` once per batch and folds the
    per-batch states left to right with ``merge``, so a shard interrupted after any batch
    resumes to bitwise the same result. ``merge`` must therefore be a left fold:
    ``merge([merge(states[:k]), *states[k:]]) == merge(states)`` bitwise, and it must not
    modify its inputs.
    """

    def __init__(self, ctx: MetricContext) -> None:
        self.ctx = ctx

    @abstractmethod
    def update(self, batch: SampleBatch) -> None: ...

    @abstractmethod
    def state(self) -> dict[str, np.ndarray]:
        """The state accumulated since construction or the last reset()."""

    @abstractmethod
    def reset(self) -> None:
        """Drop the accumulated state, keep loaded resources (feature extractors)."""

    @staticmethod
    @abstractmethod
    def merge(states: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]: ...

    @staticmethod
    @abstractmethod
    def compute(state: dict[str, np.ndarray]) -> Values: ...


def merge_per_sample(states: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate per-sample arrays and order them by sample index (shard order is irrelevant)."""
    index = np.concatenate([s["index"] for s in states])
    order = np.argsort(index, kind="stable")
    if len(np.unique(index)) != len(index):
        raise ValueError("merging shards that overlap in sample indices")
    return {k: np.concatenate([s[k] for s in states])[order] for k in states[0]}


def mean_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and a Student-t confidence interval over samples."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    m = float(values.mean())
    if len(values) < 2:
        return m, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return m, m - half, m + half
