"""Uncertainty filtering (BayesDiff, Kou et al., ICLR 2024, Sec. 5): rank the generated samples
by a per-sample uncertainty (a sampler's extra, ``uncertainty`` of ``bench.samplers.bayesdiff``),
keep the least uncertain, and compare the kept set with size-matched random subsets of the same
samples, all from the per-sample Inception features of one generated set (no regeneration).

Rule: ``keep`` = f keeps the ``ceil(f n)`` least uncertain samples (ties in sample order); with
``drop_above_std`` = k it drops instead every sample above ``mean + k std`` of the uncertainties.
Against ``draws`` random subsets of the same size (seeded ``seed``):

* ``filter_fid_diff``: FID(kept) minus the mean FID of the random subsets; interval: the 2.5 and
  97.5 percentiles of FID(kept) minus each subset's FID (negative: filtering lowers FID beyond
  the spread of a random choice of as many samples);
* ``filter_precision_diff``, ``filter_recall_diff``: the same for improved precision and recall
  (Kynkaanniemi et al. 2019, k = ``k``; precision per sample against the reference's k-NN balls,
  recall of the reference against the subset's own balls);
* ``filter_fid_kept``, ``filter_fid_random`` (interval: the random subsets' 2.5-97.5 percentiles),
  ``filter_kept`` (how many were kept);
* ``spearman_uncertainty_knn``: Spearman's rank correlation of the uncertainty with each sample's
  distance to its k-th nearest reference feature (a realism measure: far from real data is less
  realistic; Kynkaanniemi et al. 2019), 95% interval by Fisher's z with the standard error
  ``1.06 / sqrt(n - 3)`` of a rank correlation (Fieller, Hartley & Pearson 1957). Positive: the
  more uncertain samples lie farther from the real data, as BayesDiff claims.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bench.errors import BenchError, FieldError
from bench.metrics.base import Output, Values
from bench.metrics.fidelity_common import (PoolFeatureMetric, list_params, load_ref,
                                           nonfinite_values, read_config)
from bench.registry import METRICS

_NULL = "2.5-97.5 percentiles of the kept set minus each of the random subsets (draws)"


def kept_mask(u: np.ndarray, keep: float, drop_above_std: float | None) -> np.ndarray:
    """Which samples the rule keeps (module doc)."""
    u = np.asarray(u, np.float64)
    if drop_above_std is not None:
        return u <= u.mean() + float(drop_above_std) * u.std()
    m = max(1, math.ceil(keep * len(u) - 1e-9))
    mask = np.zeros(len(u), bool)
    mask[np.argsort(u, kind="stable")[:m]] = True
    return mask


def _fid(f: np.ndarray, mu_r: np.ndarray, sigma_r: np.ndarray, sqrt_r: np.ndarray) -> float:
    from bench.metrics.fid import trace_sqrt_product

    f = f.astype(np.float64)
    mu = f.mean(0)
    sigma = np.cov(f, rowvar=False)
    diff = mu - mu_r
    return float(diff @ diff + np.trace(sigma) + np.trace(sigma_r)
                 - 2 * trace_sqrt_product(sigma, sqrt_r))


def spearman_ci(x: np.ndarray, y: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Spearman's rho with a Fisher-z interval (standard error 1.06 / sqrt(n - 3))."""
    from scipy import stats

    n = len(x)
    rho = float(stats.spearmanr(x, y).statistic)
    if n < 4 or not np.isfinite(rho) or abs(rho) >= 1:
        return rho, float("nan"), float("nan")
    half = float(stats.norm.ppf(0.5 + level / 2)) * 1.06 / math.sqrt(n - 3)
    z = math.atanh(rho)
    return rho, math.tanh(z - half), math.tanh(z + half)


@METRICS.register("uncertainty_filter", "BayesDiff filtering: FID / precision / recall of the "
                  "least uncertain samples vs random subsets of as many, and the Spearman "
                  "correlation of uncertainty with the distance to real data (params: keep, "
                  "drop_above_std, draws, k)")
class UncertaintyFilter(PoolFeatureMetric):
    name = "uncertainty_filter"
    #: the report's filtering table; the rows are one number per cell, not curves over NFE, so
    #: the per-metric sampler x NFE tables leave them out
    report_sections = "bench.report.bayesdiff:filter_sections"
    report_tables = False
    outputs = {
        "filter_fid_diff": Output(False, _NULL),
        "filter_precision_diff": Output(True, _NULL),
        "filter_recall_diff": Output(True, _NULL),
        "filter_fid_kept": Output(False, "none (one subset)"),
        "filter_fid_random": Output(False, "2.5-97.5 percentiles over the random subsets"),
        "filter_kept": Output(None, "none (a count)"),
        "spearman_uncertainty_knn": Output(True, "95% CI: Fisher z, se 1.06/sqrt(n-3)"),
        "uncertainty_filter_nonfinite": Output(False, "none (a count of NaN/Inf samples left "
                                                      "out)"),
    }
    extra_params = {"extra": "uncertainty", "keep": 0.9, "drop_above_std": None, "draws": 50,
                    "seed": 0, "k": 3}

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        keep = params.get("keep", cls.extra_params["keep"])
        if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
            raise FieldError("keep", f"must be a fraction in (0, 1], got {keep!r}.",
                             "use e.g. keep: 0.9 (the least uncertain 90%).")
        k_std = params.get("drop_above_std")
        if k_std is not None and (isinstance(k_std, bool) or not isinstance(k_std, (int, float))):
            raise FieldError("drop_above_std", f"must be a number, got {k_std!r}.",
                             "use e.g. drop_above_std: 2 (drop above mean + 2 std), or leave it "
                             "out to keep a fraction.")
        for name, lo in (("draws", 2), ("k", 1), ("seed", 0)):
            v = params.get(name, cls.extra_params[name])
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise FieldError(name, f"must be a whole number >= {lo}, got {v!r}.",
                                 f"use e.g. {name}: {cls.extra_params[name]}.")
        super().check_params(params)

    @classmethod
    def needs_extra(cls, params: dict[str, Any]) -> str | None:
        return str(params.get("extra", cls.extra_params["extra"]))

    def reset(self) -> None:
        super().reset()
        self.u: list[np.ndarray] = []

    def update(self, gen: Any) -> None:
        key = str(self.params["extra"])
        if key not in gen.extras:
            raise BenchError(f"metric 'uncertainty_filter': the sampler gave no per-sample "
                             f"'{key}' (extras: {sorted(gen.extras) or 'none'}); use a sampler "
                             f"with uncertainty (bayesdiff_ddim, bayesdiff_dpm_solver_2) on a "
                             f"model with 'laplace:'.")
        idx, feats = self.features(gen)
        pos = {int(i): j for j, i in enumerate(gen.indices)}
        self.u.append(np.asarray(gen.extras[key], np.float64)[[pos[int(i)] for i in idx]])
        self.add_features(idx, feats)

    def state(self) -> dict[str, np.ndarray]:
        return {**super().state(), "uncertainty": np.concatenate(self.u) if self.u
                else np.zeros(0, np.float64)}

    @staticmethod
    def compute(state: dict[str, np.ndarray]) -> Values:
        from bench.metrics.fid import _ref_sqrt
        from bench.metrics.prdc import _inside_any, _kth_radius, precision_recall

        import torch

        config, n_bad = read_config(state)
        p = config["params"]
        ref = load_ref(config)
        real = ref.require_features("uncertainty_filter")
        f, u = state["features"], np.asarray(state["uncertainty"], np.float64)
        n, k = len(f), int(p["k"])
        keep = kept_mask(u, float(p["keep"]), p["drop_above_std"])
        m = int(keep.sum())
        if m < 2 or n - m < 0 or n < 4:
            raise BenchError(f"uncertainty_filter: {n} samples, {m} kept; FID needs at least 2 "
                             f"in the kept set (generate more samples or keep more).")
        sqrt_r = _ref_sqrt(ref.id, config.get("refstats_dir"))
        prec, _ = precision_recall(f, real, k)  # per generated sample, against the reference
        r_t = torch.from_numpy(np.ascontiguousarray(real))

        def recall(sub: np.ndarray) -> float:
            g = torch.from_numpy(np.ascontiguousarray(f[sub]))
            inside, _ = _inside_any(r_t, g, _kth_radius(g, k, 10000), 10000)
            return float(inside.double().mean())

        fid_kept, prec_kept, rec_kept = (_fid(f[keep], ref.mu, ref.sigma, sqrt_r),
                                         float(prec[keep].mean()), recall(keep))
        rng = np.random.default_rng(int(p["seed"]))
        fids, precs, recs = [], [], []
        for _ in range(int(p["draws"])):
            sub = np.zeros(n, bool)
            sub[rng.choice(n, m, replace=False)] = True
            fids.append(_fid(f[sub], ref.mu, ref.sigma, sqrt_r))
            precs.append(float(prec[sub].mean()))
            recs.append(recall(sub))

        def diff(kept: float, null: list[float]) -> tuple[float, float, float]:
            d = kept - np.asarray(null)
            lo, hi = np.quantile(d, [0.025, 0.975])
            return float(kept - np.mean(null)), float(lo), float(hi)

        knn = torch.cat([torch.cdist(torch.from_numpy(np.ascontiguousarray(b)), r_t)
                         .kthvalue(k, dim=1).values for b in np.array_split(f, max(1, n // 1000))])
        lo_r, hi_r = np.quantile(fids, [0.025, 0.975])
        return {"filter_fid_diff": diff(fid_kept, fids),
                "filter_precision_diff": diff(prec_kept, precs),
                "filter_recall_diff": diff(rec_kept, recs),
                "filter_fid_kept": (fid_kept, float("nan"), float("nan")),
                "filter_fid_random": (float(np.mean(fids)), float(lo_r), float(hi_r)),
                "filter_kept": (float(m), float("nan"), float("nan")),
                "spearman_uncertainty_knn": spearman_ci(u, knn.double().numpy()),
                **nonfinite_values("uncertainty_filter", n_bad)}


list_params(UncertaintyFilter)
