"""Evals: what a suite computes for a cell. Two shapes share ``generate`` and the store:

* ``sharded`` (``bench.evals.sampled``): per-sample work split over shards whose states merge
  exactly (FID, oracle error, ...);
* ``loop``: an adaptive method over one shard that calls ``generate`` as often as it needs,
  checkpoints its own state after every step and emits rows with a ``step``
  (``bench.evals.nfe_to_target``).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from bench.generate import LoadedModel

if TYPE_CHECKING:
    import pandas as pd

ShardResult = tuple[dict[str, np.ndarray], dict[str, Any]]  # (state arrays, meta)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Models:
    """The models a job has loaded: the last one is kept for the job's next shard (one model in
    memory at a time). Passed to ``run_shard`` by the worker."""

    def __init__(self, cache_dir: Any = None) -> None:
        self._key: str | None = None
        self._loaded: LoadedModel | None = None
        #: where model-side precomputations are cached (a results folder's ``_cache``)
        self.cache_dir = cache_dir

    def get(self, spec: dict[str, Any], device: str) -> LoadedModel:
        dev = resolve_device(device)
        key = json.dumps([spec["name"], spec.get("params", {}), spec.get("calibrate"), str(dev)],
                         sort_keys=True, default=str)
        if key != self._key or self._loaded is None:
            self._loaded = None  # free the previous model first
            self._loaded, self._key = LoadedModel.load(spec, dev, self.cache_dir), key
        return self._loaded

    @staticmethod
    def device_name(loaded: LoadedModel) -> str:
        d = loaded.device
        return f"cuda:{torch.cuda.get_device_name(d)}" if d.type == "cuda" else "cpu"


class Eval(ABC):
    shape: ClassVar[str] = "sharded"
    #: "module:function" that renders this eval's rows as report blocks (bench.report.sections)
    report_sections: ClassVar[str] = "bench.report.sections:sampled_sections"

    def __init__(self, **params: Any) -> None:
        self.params = params

    def metric_specs(self) -> list[tuple[str, dict[str, Any]]]:
        """(name, params) of the registered metrics this eval computes (their code is part of
        the cell key)."""
        return []

    def points(self, sampler: dict[str, Any]) -> list[tuple[int, int]] | None:
        """The (nfe, steps) of this eval's cells for ``sampler``; None: the suite's NFE list."""
        return None

    def no_points(self) -> str:
        """Why ``points`` gave no cell for any of the suite's samplers (a plan error)."""
        return "it has no (NFE, steps) point for any of the suite's samplers"

    def sample_count(self, n: int) -> int:
        """The samples of this eval's cells, given the suite's (or conditions') count ``n``."""
        return n

    def probe_steps(self, sampler: dict[str, Any]) -> list[tuple[int, int]]:
        """Further (nfe, steps) a loop eval may run at inside its cells (checked by the dry run)."""
        return []

    @abstractmethod
    def run_shard(self, shard: Any, models: Models, cache_dir: Any = None,
                  progress: Any = None) -> ShardResult:
        """Compute one shard's mergeable state and meta (timings, counted NFE).

        ``progress`` (a ``bench.worker.Progress``) is given the folded state after every batch
        (or step) and hands back a saved one on resume, so preemption loses no finished batch.
        """

    @abstractmethod
    def finalize(self, shards: list[Any], results: list[ShardResult]
                 ) -> tuple[list[dict[str, Any]], pd.DataFrame | None]:
        """Merge shard states into aggregate rows (metric, value, ci_low, ci_high, slice, step,
        ...) and the per-sample table (None for evals without one)."""
