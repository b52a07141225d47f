"""Eval ``nfe_curve``: quality against the number of function evaluations.

For each (model, sampler, NFE) cell it draws N samples from per-sample seeds through
``bench.generate`` and feeds each batch to the configured metrics (``bench.evals.sampled``).
The default metric is the error against an oracle's exact ODE solution; for real models the
y-axis is any other registered metric (``params: {metrics: [fid]}``). ``gallery: N`` keeps the
decoded images of each cell's first N samples under ``RESULTS/_gallery/`` (for reports).
"""

from __future__ import annotations

from bench.evals.sampled import SampledEval
from bench.registry import EVALS


@EVALS.register("nfe_curve", "Sampler quality vs NFE: per-sample seeds, counted NFE, wall time; "
                "metric default oracle_rmse (params: metrics, gallery, slices, extremes)")
class NFECurve(SampledEval):
    default_metrics = ("oracle_rmse",)
