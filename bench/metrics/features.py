"""Feature extractors (registry ``FEATURES``): images -> feature vectors, on the caller's device.

This module holds what every extractor shares: the :class:`FeatureExtractor` interface, the
factory :func:`make_extractor` (by registered name) and :func:`file_sha256` (the hash of weight
files recorded with results). The extractors themselves:

- ``inception``: the FID Inception-v3 network, :mod:`bench.metrics.inception`; its weights are
  found, hashed, converted and exported by :mod:`bench.metrics.inception_weights`;
- ``clip`` and ``dinov2``: :mod:`bench.metrics.features_vit`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from torch import Tensor

from bench.errors import BenchError
from bench.hashing import file_sha256  # noqa: F401  (re-exported: weights are hashed by content)
from bench.registry import FEATURES


class FeatureExtractor(ABC):
    """uint8 NCHW images -> {'pool': N x dim float32 [, 'logits_unbiased': N x C]} on CPU."""

    name: str = ""
    dim: int = 0
    has_logits: bool = False

    @abstractmethod
    def __call__(self, images: Tensor, logits: bool = False) -> dict[str, Tensor]: ...

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON-able identity: extractor, weights sha256 and source, preprocessing, dim."""

    def key(self) -> dict[str, Any]:
        """What determines the features (for content-keyed caches)."""
        d = self.describe()
        return {k: d[k] for k in ("extractor", "weights_sha256", "resize", "dim", "code")}


def make_extractor(name: str = "inception", **params: Any) -> FeatureExtractor:
    """An extractor from the registry; ``None`` parameters take the extractor's defaults."""
    import inspect

    from bench.registry import signature_params

    cls = FEATURES.get(name)
    params = {k: v for k, v in params.items() if v is not None}
    allowed = signature_params(cls)
    bad = sorted(set(params) - set(allowed))
    var_kw = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values())
    if bad and not var_kw:
        raise BenchError(f"feature extractor '{name}' has no parameter(s) {bad}; its parameters: "
                         f"{', '.join(allowed)}.")
    return cls(**params)
