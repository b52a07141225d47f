"""Euler and Heun on the probability-flow ODE dx/ds = (x - D(x; s)) / s.

Karras et al. 2022 ("Elucidating the Design Space of Diffusion-Based Generative Models"),
Algorithm 1 (Heun's 2nd-order method, Euler on the last step to s = 0) and its first-order
Euler counterpart. With ``s_churn > 0`` both are Algorithm 2 (stochastic sampler): before each
step with ``s_tmin <= s_i <= s_tmax`` the level is raised to ``s_hat = (1 + gamma) s_i``,
``gamma = min(s_churn / N, sqrt(2) - 1)`` (N = number of steps), by adding fresh noise
``sqrt(s_hat^2 - s_i^2) * s_noise * z``; the step then starts from ``s_hat``.
"""

from __future__ import annotations

from typing import Any, Callable

import math

from torch import Tensor

from bench.denoiser import Denoiser
from bench.noise import NoiseSource
from bench.samplers._common import check_range, need_noise
from bench.samplers.base import register_sampler

EDM_GRID = {"name": "karras", "rho": 7.0}


def churn(name: str, x: Tensor, s: Tensor, steps: int, noise: NoiseSource | None, s_churn: float,
          s_tmin: float, s_tmax: float, s_noise: float) -> tuple[Tensor, Tensor]:
    """EDM Algorithm 2, lines 4-6: (x_hat, s_hat). No noise is drawn when gamma = 0."""
    gamma = min(s_churn / steps, math.sqrt(2) - 1) if s_tmin <= float(s) <= s_tmax else 0.0
    if gamma <= 0:
        return x, s
    s_hat = s * (1 + gamma)
    z = need_noise(name, noise, " (s_churn > 0)").randn_like(x)
    return x + (s_hat**2 - s**2).sqrt() * s_noise * z, s_hat


def _check_churn(name: str, s_churn: float, s_noise: float) -> None:
    check_range(name, "s_churn", s_churn, 0.0)
    check_range(name, "s_noise", s_noise, 0.0)


@register_sampler("euler", order=lambda p: None if p.get("s_churn", 0) else 1, evals_per_step=1, grid=EDM_GRID,
                  paper="Karras et al. 2022 (EDM), Euler on the PF-ODE (Algorithm 2 steps with s_churn > 0)",
                  description="Euler on the PF-ODE, EDM sigma grid; Karras et al. 2022")
def sample_euler(model: Denoiser, x: Tensor, sigmas: Tensor, *, cond: Any = None,
                 noise: NoiseSource | None = None,
                 callback: Callable | None = None, s_churn: float = 0.0, s_tmin: float = 0.0,
                 s_tmax: float = math.inf, s_noise: float = 1.0) -> Tensor:
    _check_churn("euler", s_churn, s_noise)
    ones = x.new_ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        x, s = churn("euler", x, s, len(sigmas) - 1, noise, s_churn, s_tmin, s_tmax, s_noise)
        x0 = model(x, s * ones, cond)
        x = x + (s_next - s) * (x - x0) / s
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s, "denoised": x0})
    return x


@register_sampler("heun", order=lambda p: None if p.get("s_churn", 0) else 2, evals_per_step=2, grid=EDM_GRID,
                  paper="Karras et al. 2022 (EDM), Algorithm 1 (Algorithm 2 with s_churn > 0)",
                  description="Heun 2nd order on the PF-ODE, EDM sigma grid; Karras et al. 2022")
def sample_heun(model: Denoiser, x: Tensor, sigmas: Tensor, *, cond: Any = None,
                noise: NoiseSource | None = None,
                callback: Callable | None = None, s_churn: float = 0.0, s_tmin: float = 0.0,
                s_tmax: float = math.inf, s_noise: float = 1.0) -> Tensor:
    _check_churn("heun", s_churn, s_noise)
    ones = x.new_ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        x, s = churn("heun", x, s, len(sigmas) - 1, noise, s_churn, s_tmin, s_tmax, s_noise)
        x0 = model(x, s * ones, cond)
        d = (x - x0) / s
        x_next = x + (s_next - s) * d
        if s_next != 0:
            d2 = (x_next - model(x_next, s_next * ones, cond)) / s_next
            x_next = x + (s_next - s) * 0.5 * (d + d2)
        x = x_next
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s, "denoised": x0})
    return x
