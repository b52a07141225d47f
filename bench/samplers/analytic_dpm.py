"""Analytic-DPM (Bao et al. 2022, "Analytic-DPM: an Analytic Estimate of the Optimal Reverse
Variance in Diffusion Probabilistic Models"), Theorem 1 with the Monte Carlo estimate of eq. 8.

For the generalised reverse process ``q_lambda`` (DDIM family; ``lambda_n^2 = eta^2 beta~_n``,
eta = 1: analytic-DDPM, eta = 0: analytic-DDIM) the optimal mean keeps the score-based form and
the optimal variance is (Theorem 1, over a skipped sub-sequence as in their Section 4)::

    sigma*_n^2 = lambda_n^2 + (sqrt(beta_bar_n / alpha_n) - sqrt(beta_bar_{n-1} - lambda_n^2))^2
                              * (1 - beta_bar_n Gamma_n)
    Gamma_n    = E_q ||grad log q_n(x_n)||^2 / d  ~  (1/M) sum_m ||eps_hat(x_n^m, n)||^2 / (d beta_bar_n)

with ``x_n^m = sqrt(alpha_bar_n) x_0^m + sqrt(beta_bar_n) eps^m`` and ``x_0^m`` data samples.
In the data-scaled frame (divide by ``sqrt(alpha_bar_{n-1})``, ``s = sigma/alpha``) a step from
``s`` to ``s'`` with ``c = eta s' sqrt(s^2 - s'^2) / s`` and ``k = sqrt(s'^2 - c^2)`` is::

    x'       = x0_hat + k eps_hat + sqrt(c^2 + (s - k)^2 (1 - G(s))) z
    G(s)     = beta_bar Gamma = mean_m ||eps_hat(x0^m + s eps^m; s)||^2 / d

``1 - G`` is clipped to [0, 1], the bounds of Theorem 2 that hold without a data range (by
Jensen, E||E[eps | x]||^2 <= d). G is estimated once per (model, s) from ``gamma_samples`` data
samples drawn with a fixed seed (common random numbers across levels) through the *uncounted*
model, and cached per model, as the paper precomputes Gamma_n once per model; it is not part of
the sampling NFE. The model must provide ``sample_data(n, generator)`` (the gmm oracle does).
A step to ``s' = 0`` is the final denoising step (Algorithm 1 returns the mean at n = 1).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from bench.denoiser import Denoiser
from bench.noise import NoiseSource
from bench.samplers._common import check_range, need_noise
from bench.samplers.base import register_sampler

#: (model cache key, gamma_samples, gamma_seed) -> {s: G(s)}
_GAMMA_CACHE: dict[tuple[Any, int, int], dict[float, float]] = {}
_CHUNK = 256


def _base_model(model: Any) -> Any:
    return getattr(model, "uncounted", model)


def estimate_gamma(model: Denoiser, levels: Tensor, *, samples: int = 1000, seed: int = 0) -> Tensor:
    """``G(s) = beta_bar Gamma`` at each (positive) level, estimated and cached per model."""
    base = _base_model(model)
    if not hasattr(base, "sample_data"):
        raise ValueError(f"analytic_dpm: Gamma_t is estimated from data samples, but the model "
                         f"({type(base).__name__}) has no sample_data(n, generator); give its "
                         f"adapter one (the gmm oracle has it).")
    key = (getattr(base, "cache_key", None) or id(base), int(samples), int(seed))
    cache = _GAMMA_CACHE.setdefault(key, {})
    missing = sorted({float(s) for s in levels if float(s) > 0 and float(s) not in cache})
    if missing:
        gen = torch.Generator().manual_seed(int(seed))
        x0 = base.sample_data(int(samples), gen).to(torch.float64)
        eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64).to(x0.device)
        dim = x0[0].numel()
        for s in missing:
            total = 0.0
            for a in range(0, x0.shape[0], _CHUNK):
                e = eps[a:a + _CHUNK]
                xs = x0[a:a + _CHUNK] + s * e
                d = base(xs, torch.full((xs.shape[0],), s, dtype=torch.float64, device=xs.device))
                total += float((((xs - d) / s) ** 2).sum())
            cache[s] = total / (x0.shape[0] * dim)
    return torch.tensor([cache.get(float(s), 0.0) for s in levels], dtype=torch.float64)


@register_sampler("analytic_dpm", order=1, evals_per_step=1, grid={"name": "time_uniform"},
                  stochastic=True,
                  paper="Bao et al. 2022 (Analytic-DPM), Theorem 1 with Monte Carlo Gamma (eq. 8)",
                  description="Analytic-DPM: DDPM/DDIM mean with the optimal reverse variance "
                              "(eta=1 analytic-DDPM, eta=0 analytic-DDIM); Bao et al. 2022")
def sample_analytic_dpm(model: Denoiser, x: Tensor, sigmas: Tensor, *, cond: Any = None,
                        noise: NoiseSource | None = None, callback: Callable | None = None,
                        eta: float = 1.0, gamma_samples: int = 1000, gamma_seed: int = 0) -> Tensor:
    check_range("analytic_dpm", "eta", eta, 0.0, 1.0)
    if gamma_samples < 2:
        raise ValueError(f"analytic_dpm: gamma_samples={gamma_samples} is too small for a Monte "
                         f"Carlo estimate; use >= 100 (the default is 1000).")
    g = estimate_gamma(model, sigmas[:-1], samples=gamma_samples, seed=gamma_seed)
    ones = x.new_ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        s, t = sigmas[i], sigmas[i + 1]
        x0 = model(x, s * ones, cond)
        if t == 0:
            x = x0
        else:
            eps = (x - x0) / s
            c = eta * t * torch.sqrt(s**2 - t**2) / s
            k = torch.sqrt(t**2 - c**2)
            var = c**2 + (s - k) ** 2 * float(min(max(1.0 - float(g[i]), 0.0), 1.0))
            z = need_noise("analytic_dpm", noise).randn_like(x)
            x = x0 + k * eps + torch.sqrt(var) * z
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s, "denoised": x0})
    return x
