"""Metrics: per-shard mergeable state, stateless compute (torchmetrics-style)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from bench.models.base import ModelAdapter

if TYPE_CHECKING:
    from bench.generate import Generation

#: metric name -> (value, ci_low, ci_high)
Values = dict[str, tuple[float, float, float]]


@dataclass(frozen=True)
class Output:
    """A result row a metric emits: which way is better and what its bracket means. Compare,
    reports and the CLI read these; no other module keeps a list of metric names."""

    higher_is_better: bool | None  # None: no direction (a count, a diagnostic)
    interval: str                  # what [ci_low, ci_high] is
    description: str = ""
    #: what a NaN value of this row means when it is an outcome, not a failure (e.g. "the
    #: target was not reached"); empty: a NaN is a failure (run exit 1, compare NON-FINITE)
    nan_means: str = ""
    #: an error against an exact or reference ODE solution: its slope against NFE is the
    #: solver's order of accuracy (reports print the theory beside the fitted slope)
    convergence: bool = False


#: the interval of a mean over per-sample values (``mean_ci``)
MEAN_CI = "mean [95% CI] over samples (Student t)"


@dataclass
class MetricContext:
    adapter: ModelAdapter | None  # None: images from no model (bench fid)
    device: torch.device
    cache_dir: Path | None = None
    #: the metric's own parameters (suite: ``metrics: [{name: fid, params: {ref: ...}}]``)
    params: dict[str, Any] | None = None
    #: the loaded model (``bench.generate.LoadedModel``), for metrics that run it (ref_rmse)
    model: Any = None


class Metric(ABC):
    """update() on generations -> state() arrays that merge() across shards -> compute().

    The harness calls ``update(gen); state(); reset()`` once per generated batch and folds the
    per-batch states left to right with ``merge``, so a shard interrupted after any batch
    resumes to bitwise the same result. ``merge`` must therefore be a left fold:
    ``merge([merge(states[:k]), *states[k:]]) == merge(states)`` bitwise, and it must not
    modify its inputs. ``outputs`` names every row ``compute`` can emit.
    """

    outputs: ClassVar[dict[str, Output]] = {}
    #: the metric reads ``Generation.images`` (the harness decodes once for all metrics)
    needs_images: ClassVar[bool] = False
    #: parameters with defaults (checked by ``bench plan``)
    param_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, ctx: MetricContext) -> None:
        self.ctx = ctx

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """Raise FieldError for a parameter this metric does not take (before any work)."""
        from bench.errors import FieldError, close_matches

        for k in params:
            if k not in cls.param_defaults:
                raise FieldError(k, f"is not a parameter of this metric."
                                 f"{close_matches(k, cls.param_defaults)}",
                                 f"use one of: {', '.join(sorted(cls.param_defaults)) or '(none)'}.")

    @classmethod
    def needs_extra(cls, params: dict[str, Any]) -> str | None:
        """The per-sample sampler extra this metric reads (``Generation.extras``), or None. A
        metric that reads one runs only in cells whose sampler declares it (``extras=`` of
        ``register_sampler``); a suite where no sampler does is a plan error."""
        return None

    @abstractmethod
    def update(self, gen: Generation) -> None: ...

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

    @staticmethod
    def per_sample(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per-sample values (aligned with ``state['index']``) for the per-sample table."""
        return {}

    @staticmethod
    def describe(state: dict[str, np.ndarray]) -> dict[str, Any]:
        """Result-row columns naming what the number was computed against (provenance)."""
        return {}


def find_output(row: str) -> Output | None:
    """The declared meaning of a result row name (e.g. 'fid', 'isc', 'rmse'), or None: metrics
    and evals that emit rows of their own (``nfe_to_target``) declare ``outputs``."""
    from bench.registry import EVALS, METRICS, load_all

    load_all()
    for entry in [*METRICS, *EVALS]:
        outs = getattr(entry.load(), "outputs", {})
        if row in outs:
            return outs[row]
    return None


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
