"""Eval ``fidelity``: sample-quality metrics of generated images (FID, KID, IS, precision/recall,
density/coverage) per (model, sampler, NFE) cell: FID vs NFE per sampler.

It is the sharded sampling eval (``bench.evals.sampled``) whose metrics share the eval's
parameters (``ref``, ``extractor`` (inception | clip | dinov2), ``resize`` (inception's; default
tf1_bilinear), ``weights``, ``arch`` (clip), ...); each metric may add its own
(``metrics: [fid, {name: kid, params: {subset_size: 500}}]``). Every result row also names what
it was computed against: ``feature_extractor``, ``weights_sha256``, ``weights_source``,
``resize``, ``ref_id`` and the count of non-finite samples left out (``n_nonfinite``).
"""

from __future__ import annotations

from typing import Any

from bench.errors import FieldError
from bench.evals.sampled import MetricSpec, SampledEval
from bench.registry import EVALS, METRICS

SHARED = ("ref", "resize", "weights", "arch", "extractor", "refstats_dir", "ref_limit", "batch_size")


@EVALS.register("fidelity", "Image fidelity vs NFE: FID/KID/IS/precision-recall/density-coverage "
                "against a reference (params: metrics, ref, extractor, resize, weights, gallery, "
                "extremes)")
class Fidelity(SampledEval):
    default_metrics = ("fid",)

    def __init__(self, *, metrics: Any = None, ref: str | None = None, resize: str | None = None,
                 weights: str | None = None, extractor: str = "inception", arch: str | None = None,
                 refstats_dir: str | None = None, ref_limit: int | None = None, batch_size: int = 64,
                 gallery: int = 0, slices: Any = ("all",), extremes: Any = None) -> None:
        self.shared = {"ref": ref, "resize": resize, "weights": weights, "arch": arch,
                       "extractor": extractor, "refstats_dir": refstats_dir, "ref_limit": ref_limit,
                       "batch_size": batch_size}
        super().__init__(metrics=metrics, gallery=gallery, slices=slices, extremes=extremes)
        self.params.update(self.shared)

    def metric_params(self, spec: MetricSpec) -> dict[str, Any]:
        clash = set(spec.params) & set(SHARED)
        if clash:
            raise FieldError(f"metrics.{spec.name}.params", f"sets {sorted(clash)}, which the eval "
                             f"shares among its metrics.", "set them once, in the eval's params.")
        allowed = METRICS.get(spec.name).param_defaults
        shared = {k: v for k, v in self.shared.items() if v is not None and k in allowed}
        return {**shared, **spec.params}
