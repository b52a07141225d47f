"""Metrics over generated samples (mergeable per-shard state)."""

from bench.metrics import oracle  # noqa: F401  (registration)
from bench.metrics import reference  # noqa: F401  (registration)
from bench.metrics import clipscore  # noqa: F401  (registration)
from bench.metrics import features, features_vit, fid, inception, isc, kid, prdc  # noqa: F401  (registration)
from bench.metrics import uncertainty_filter  # noqa: F401  (registration)
from bench.metrics.base import Metric, MetricContext, Output

__all__ = ["Metric", "MetricContext", "Output"]
