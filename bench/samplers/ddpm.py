"""DDPM ancestral sampling (Ho et al. 2020, "Denoising Diffusion Probabilistic Models", Algorithm 2).

One step from VP time ``t`` to an earlier ``t'`` draws from ``N(mu~(x_t, x0_hat), sigma^2 I)`` with
the posterior mean ``mu~`` of ``q(x_t' | x_t, x_0)`` (eq. 7) and either variance of Section 3.2:

* ``small``: the posterior variance ``beta~ = (1 - abar_t') / (1 - abar_t) * beta_{t|t'}``
  (optimal for deterministic x_0),
* ``large``: ``beta_{t|t'} = 1 - abar_t / abar_t'`` (optimal for x_0 ~ N(0, I)),

where ``beta_{t|t'}`` is the forward transition variance, i.e. eq. 7 over a skipped sub-sequence
(as in DDIM's / Analytic-DPM's respacing). Divided by ``alpha_t'`` (data-scaled frame,
``s = sigma / alpha``, ``alpha^2 = 1 / (1 + s^2)``) a step from ``s`` to ``s'`` reads::

    x' = x0_hat + (s'^2 / s^2) (x - x0_hat) + c z
    c^2 = s'^2 (s^2 - s'^2) / s^2                 (small; = DDIM with eta = 1)
    c^2 = (s^2 - s'^2) (1 + s'^2) / (1 + s^2)     (large)

A step to ``s' = 0`` is the final denoising step ``x' = x0_hat`` (Algorithm 2 adds no noise at t=1).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from bench.denoiser import Denoiser
from bench.noise import NoiseSource
from bench.samplers._common import check_choice, need_noise
from bench.samplers.base import register_sampler

VARIANCES = ("small", "large")


def ddpm_step_std(s: Tensor, s_next: Tensor, variance: str) -> Tensor:
    """Standard deviation ``c`` of the ancestral noise in the data-scaled frame."""
    if variance == "small":
        return s_next * torch.sqrt(s**2 - s_next**2) / s
    return torch.sqrt((s**2 - s_next**2) * (1 + s_next**2) / (1 + s**2))


@register_sampler("ddpm", order=1, evals_per_step=1, grid={"name": "time_uniform"}, stochastic=True,
                  paper="Ho et al. 2020 (DDPM), Algorithm 2 with sigma_t^2 = beta~_t or beta_t",
                  description="DDPM ancestral sampling, variance small (beta~) or large (beta); "
                              "Ho et al. 2020")
def sample_ddpm(model: Denoiser, x: Tensor, sigmas: Tensor, *, cond: Any = None,
                noise: NoiseSource | None = None,
                callback: Callable | None = None, variance: str = "small") -> Tensor:
    check_choice("ddpm", "variance", variance, VARIANCES)
    ones = x.new_ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0 = model(x, s * ones, cond)
        if s_next == 0:
            x = x0
        else:
            c = ddpm_step_std(s, s_next, variance)
            x = x0 + (s_next**2 / s**2) * (x - x0) + c * need_noise("ddpm", noise).randn_like(x)
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s, "denoised": x0})
    return x
