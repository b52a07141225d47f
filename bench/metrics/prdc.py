"""k-NN manifold metrics on features.

``prc``: improved precision and recall (Kynkäänniemi et al. 2019, k = 3), computed as
torch-fidelity's ``prc`` (``torch.cdist`` on float32 features, radius = distance to the k-th
neighbour, a point is inside a ball when ``dist <= radius``), in row blocks so memory stays
O(block x n).

``dc``: density and coverage (Naeem et al. 2020, k = 5), with the reference set's k-NN balls
(``dist < radius``, as the authors' ``prdc`` package).

Uncertainty: each number is a mean of per-sample quantities (precision and density over
generated samples, recall and coverage over reference samples); ``ci_low``/``ci_high`` is a
95% Student-t interval over them, the manifold built from the other set held fixed.
"""

from __future__ import annotations


import numpy as np
import torch

from bench.metrics.base import MEAN_CI, Output, Values, mean_ci
from bench.metrics.fidelity_common import (list_params, PoolFeatureMetric, load_ref,
                                           nonfinite_values, read_config)
from bench.registry import METRICS


def _kth_radius(x: torch.Tensor, k: int, block: int) -> torch.Tensor:
    """Distance of each row of x to its k-th nearest other row (the row itself is at 0)."""
    out = []
    for xb in x.split(block):
        out.append(torch.cat([torch.cdist(xb, yb) for yb in x.split(block)], dim=1)
                   .kthvalue(k + 1, dim=1).values)
    return torch.cat(out)


def _inside_any(points: torch.Tensor, centers: torch.Tensor, radii: torch.Tensor, block: int,
                strict: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per point: inside any ball (bool) and the number of balls it lies in."""
    any_in, count = [], []
    for pb in points.split(block):
        d = torch.cat([torch.cdist(pb, cb) for cb in centers.split(block)], dim=1)
        inside = d < radii[None] if strict else d <= radii[None]
        any_in.append(inside.any(dim=1))
        count.append(inside.sum(dim=1))
    return torch.cat(any_in), torch.cat(count)


def precision_recall(gen: np.ndarray, ref: np.ndarray, k: int = 3, block: int = 10000
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Per-generated-sample precision indicators and per-reference-sample recall indicators."""
    g, r = torch.from_numpy(np.ascontiguousarray(gen)), torch.from_numpy(np.ascontiguousarray(ref))
    rad_g, rad_r = _kth_radius(g, k, block), _kth_radius(r, k, block)
    recall, _ = _inside_any(r, g, rad_g, block)
    precision, _ = _inside_any(g, r, rad_r, block)
    return precision.double().numpy(), recall.double().numpy()


def density_coverage(gen: np.ndarray, ref: np.ndarray, k: int = 5, block: int = 10000
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Per-generated-sample density contributions (count / k) and per-reference coverage."""
    g, r = torch.from_numpy(np.ascontiguousarray(gen)), torch.from_numpy(np.ascontiguousarray(ref))
    rad_r = _kth_radius(r, k, block)
    _, counts = _inside_any(g, r, rad_r, block, strict=True)
    nearest = torch.cat([torch.cat([torch.cdist(rb, gb) for gb in g.split(block)], dim=1).min(dim=1).values
                         for rb in r.split(block)])
    covered = nearest < rad_r
    return counts.double().numpy() / k, covered.double().numpy()


@METRICS.register("prc", "Improved precision/recall (k=3) vs params.ref, as torch-fidelity prc; "
                  "95% t-CI over samples")
class PrecisionRecall(PoolFeatureMetric):
    name = "prc"
    outputs = {"precision": Output(True, MEAN_CI), "recall": Output(True, MEAN_CI),
               "prc_nonfinite": Output(False, "none (a count of NaN/Inf samples left out)")}
    extra_params = {"k": 3}

    @staticmethod
    def compute(state: dict[str, np.ndarray]) -> Values:
        config, n_bad = read_config(state)
        ref = load_ref(config)
        p, r = precision_recall(state["features"], ref.require_features("prc"), int(config["params"]["k"]))
        return {"precision": mean_ci(p), "recall": mean_ci(r), **nonfinite_values("prc", n_bad)}


@METRICS.register("dc", "Density and coverage (k=5, Naeem et al. 2020) vs params.ref; 95% t-CI")
class DensityCoverage(PoolFeatureMetric):
    name = "dc"
    outputs = {"density": Output(True, MEAN_CI), "coverage": Output(True, MEAN_CI),
               "dc_nonfinite": Output(False, "none (a count of NaN/Inf samples left out)")}
    extra_params = {"k": 5}

    @staticmethod
    def compute(state: dict[str, np.ndarray]) -> Values:
        config, n_bad = read_config(state)
        ref = load_ref(config)
        d, c = density_coverage(state["features"], ref.require_features("dc"), int(config["params"]["k"]))
        return {"density": mean_ci(d), "coverage": mean_ci(c), **nonfinite_values("dc", n_bad)}
list_params(PrecisionRecall)
list_params(DensityCoverage)
