"""Evals: what a suite computes for a cell (run per shard, finalized over shards)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from bench.suite import Cell

ShardResult = tuple[dict[str, np.ndarray], dict[str, Any]]  # (state arrays, meta)


class Eval(ABC):
    def __init__(self, **params: Any) -> None:
        self.params = params

    @abstractmethod
    def run_shard(self, cell: Cell, cache_dir: Any = None, progress: Any = None) -> ShardResult:
        """Compute one shard's mergeable state and meta (timings, counted NFE).

        ``progress`` (a ``bench.worker.Progress``) is given the folded state after every batch
        and hands back a saved one on resume, so preemption loses no finished batch.
        """

    @abstractmethod
    def finalize(self, cells: list[Cell], shards: list[ShardResult]) -> list[dict[str, Any]]:
        """Merge shard states into metric rows (metric, value, ci_low, ci_high, ...)."""
