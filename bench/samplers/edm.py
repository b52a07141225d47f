"""Euler and Heun on the probability-flow ODE dx/ds = (x - D(x; s)) / s.

Karras et al. 2022 ("Elucidating the Design Space of Diffusion-Based Generative Models"),
Algorithm 1 (Heun's 2nd-order method, Euler on the last step to s = 0) and its first-order
Euler counterpart; deterministic (no churn).
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor

from bench.denoiser import Denoiser
from bench.noise import NoiseSource
from bench.samplers.base import register_sampler

EDM_GRID = {"name": "karras", "rho": 7.0}


@register_sampler("euler", order=1, evals_per_step=1, grid=EDM_GRID,
                  paper="Karras et al. 2022 (EDM), Euler on the PF-ODE",
                  description="Euler on the PF-ODE, EDM sigma grid; Karras et al. 2022")
def sample_euler(model: Denoiser, x: Tensor, sigmas: Tensor, *, noise: NoiseSource | None = None,
                 callback: Callable | None = None) -> Tensor:
    ones = x.new_ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0 = model(x, s * ones)
        x = x + (s_next - s) * (x - x0) / s
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s, "denoised": x0})
    return x


@register_sampler("heun", order=2, evals_per_step=2, grid=EDM_GRID,
                  paper="Karras et al. 2022 (EDM), Algorithm 1",
                  description="Heun 2nd order on the PF-ODE, EDM sigma grid; Karras et al. 2022")
def sample_heun(model: Denoiser, x: Tensor, sigmas: Tensor, *, noise: NoiseSource | None = None,
                callback: Callable | None = None) -> Tensor:
    ones = x.new_ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0 = model(x, s * ones)
        d = (x - x0) / s
        x_next = x + (s_next - s) * d
        if s_next != 0:
            d2 = (x_next - model(x_next, s_next * ones)) / s_next
            x_next = x + (s_next - s) * 0.5 * (d + d2)
        x = x_next
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s, "denoised": x0})
    return x
