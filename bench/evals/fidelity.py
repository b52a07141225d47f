"""Eval ``fidelity``: sample-quality metrics of generated images (FID, KID, IS, precision/recall,
density/coverage) per (model, sampler, NFE) cell: FID vs NFE per sampler.

It runs nfe_curve's sampling loop (per-sample seeds, counted NFE, resumable per batch) and
hands every metric the eval's shared parameters (``ref``, ``extractor`` (inception | clip | dinov2),
``resize`` (inception's; default tf1_bilinear), ``weights``, ``arch`` (clip), ...) plus its
own (``metrics: [fid, {name: kid, params: {subset_size: 500}}]``). Every result row also names
what it was computed against: ``feature_extractor``, ``weights_sha256``, ``weights_source``,
``resize``, ``ref_id`` and the count of non-finite samples left out (``n_nonfinite``).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from bench.errors import BenchError
from bench.evals.base import ShardResult
from bench.evals.nfe_curve import NFECurve
from bench.registry import EVALS, METRICS
from bench.suite import Cell

SHARED = ("ref", "resize", "weights", "arch", "extractor", "refstats_dir", "ref_limit", "batch_size")


@EVALS.register("fidelity", "Image fidelity vs NFE: FID/KID/IS/precision-recall/density-coverage "
                "against a reference (params: metrics, ref, extractor, resize, weights, gallery)")
class Fidelity(NFECurve):
    def __init__(self, *, metrics: list[Any] = ("fid",), ref: str | None = None,  # type: ignore[assignment]
                 resize: str | None = None, weights: str | None = None,
                 extractor: str = "inception", arch: str | None = None,
                 refstats_dir: str | None = None,
                 ref_limit: int | None = None, batch_size: int = 64, gallery: int = 0) -> None:
        super().__init__(metrics=list(metrics), gallery=gallery)
        shared = {"ref": ref, "resize": resize, "weights": weights, "arch": arch, "extractor": extractor,
                  "refstats_dir": refstats_dir, "ref_limit": ref_limit, "batch_size": batch_size}
        self.params.update({k: v for k, v in shared.items()})
        self.metric_params: dict[str, dict[str, Any]] = {}
        for m in metrics:
            name = m if isinstance(m, str) else m.get("name")
            own = {} if isinstance(m, str) else dict(m.get("params") or {})
            if name not in METRICS:
                raise BenchError(f"fidelity: unknown metric {name!r}; use fid, kid, isc, prc or dc.")
            clash = set(own) & set(SHARED)
            if clash:
                raise BenchError(f"fidelity: set {sorted(clash)} once for the eval, not per metric.")
            self.metric_params[name] = {**{k: v for k, v in shared.items() if v is not None}, **own}
            if name == "isc":
                self.metric_params[name].pop("ref", None)
                self.metric_params[name].pop("ref_limit", None)

    def run_shard(self, cell: Cell, cache_dir: Any = None, progress: Any = None) -> ShardResult:
        from bench.metrics.fidelity_common import EVAL_PARAMS

        token = EVAL_PARAMS.set(self.metric_params)
        try:
            return super().run_shard(cell, cache_dir, progress)  # type: ignore[call-arg]
        finally:
            EVAL_PARAMS.reset(token)

    def finalize(self, cells: list[Cell], shards: list[ShardResult]) -> list[dict[str, Any]]:
        from bench.metrics.fidelity_common import describe_state, split_common

        rows = super().finalize(cells, shards)
        # every metric shares extractor, weights, resize and batches; name them on every row
        # (the reference from a metric that has one: isc has none)
        names = sorted(self.metrics, key=lambda n: n == "isc")
        prefix = f"{names[0]}/"
        states = [{k[len(prefix):]: v for k, v in s.items()
                   if k in (prefix + "config", prefix + "n_nonfinite")} for s, _ in shards]
        config, n_bad, _ = split_common(states)
        extra = describe_state({"config": np.array(json.dumps(config)),
                                "n_nonfinite": np.array([n_bad])})
        return [{**r, **extra} for r in rows]
