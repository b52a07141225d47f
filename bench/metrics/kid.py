"""Kernel Inception Distance (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial
kernel ``k(x, y) = (x.y / d + 1)^3``, averaged over random subsets.

The subsets are drawn exactly as torch-fidelity draws them (``np.random.RandomState(seed)``;
per subset first the generated, then the reference indices, without replacement), and the
kernel sums are formed as in its ``mmd2``, so with the same features and seed the numbers are
torch-fidelity's. Uncertainty, as the paper and torch-fidelity report it: the standard
deviation over subsets; ``ci_low``/``ci_high`` are mean -/+ that std.
"""

from __future__ import annotations

import warnings

import numpy as np

from bench.errors import BenchError
from bench.metrics.base import Output, Values
from bench.metrics.fidelity_common import (list_params, PoolFeatureMetric, load_ref,
                                           nonfinite_values, read_config)
from bench.registry import METRICS


def poly_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> np.ndarray:
    return (np.matmul(x, y.T) * (1.0 / x.shape[1]) + coef0) ** degree


def mmd2_unbiased(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray) -> float:
    m = k_xx.shape[0]
    kt_xx = (k_xx.sum(axis=1) - np.diagonal(k_xx)).sum()
    kt_yy = (k_yy.sum(axis=1) - np.diagonal(k_yy)).sum()
    return float((kt_xx + kt_yy) / (m * (m - 1)) - 2 * k_xy.sum(axis=0).sum() / (m * m))


def kid_subsets(gen: np.ndarray, ref: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                seed: int = 2020) -> np.ndarray:
    """MMD^2 per subset (gen = torch-fidelity's input 1, ref = input 2)."""
    n1, n2 = len(gen), len(ref)
    m = min(subset_size, n1, n2)
    if m < 2:
        raise BenchError(f"KID needs at least 2 generated and 2 reference samples, got {n1} and {n2}.")
    if m < subset_size:
        warnings.warn(f"KID: subset size {subset_size} is more than the {n1} generated / {n2} "
                      f"reference samples; using subsets of {m}.", stacklevel=2)
    rng = np.random.RandomState(seed)
    out = np.zeros(subsets)
    for i in range(subsets):
        f1 = gen[rng.choice(n1, m, replace=False)]
        f2 = ref[rng.choice(n2, m, replace=False)]
        out[i] = mmd2_unbiased(poly_kernel(f1, f1), poly_kernel(f1, f2), poly_kernel(f2, f2))
    return out


@METRICS.register("kid", "Kernel Inception Distance vs params.ref (cubic polynomial kernel, "
                  "subsets as torch-fidelity; CI = mean -/+ std over subsets)")
class KID(PoolFeatureMetric):
    name = "kid"
    outputs = {"kid": Output(False, "mean -/+ std over subsets (random subsets, as torch-fidelity)"),
               "kid_nonfinite": Output(False, "none (a count of NaN/Inf samples left out)")}
    extra_params = {"subsets": 100, "subset_size": 1000, "seed": 2020}

    @staticmethod
    def compute(state: dict[str, np.ndarray]) -> Values:
        config, n_bad = read_config(state)
        ref = load_ref(config)
        p = config["params"]
        vals = kid_subsets(state["features"], ref.require_features("kid"), int(p["subsets"]),
                           int(p["subset_size"]), int(p["seed"]))
        mean, std = float(np.mean(vals)), float(np.std(vals))
        return {"kid": (mean, mean - std, mean + std), **nonfinite_values("kid", n_bad)}
list_params(KID)
