"""Euler ancestral sampling (k-diffusion's ``sample_euler_ancestral``, Crowson 2022).

Each step splits the move from ``s`` to ``s'`` into a deterministic Euler step of the PF-ODE
(Karras et al. 2022, eq. 4) down to ``s_down`` and fresh noise of std ``s_up`` back up to
``s'``, with the DDPM/DDIM ancestral split (Song et al. 2021, DDIM eq. 16 in the data-scaled
frame)::

    s_up   = min(s', eta * sqrt(s'^2 (s^2 - s'^2) / s^2))
    s_down = sqrt(s'^2 - s_up^2)
    x'     = x + (s_down - s) (x - D(x; s)) / s + s_noise * s_up * z

``eta = 1`` is ancestral (DDPM-like) sampling, ``eta = 0`` plain Euler. No noise is added on a
step to ``s' = 0``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from bench.denoiser import Denoiser
from bench.noise import NoiseSource
from bench.samplers._common import check_range, need_noise
from bench.samplers.base import register_sampler


def ancestral_step(s: Tensor, s_next: Tensor, eta: float) -> tuple[Tensor, Tensor]:
    """(s_down, s_up) of an ancestral step (k-diffusion's get_ancestral_step)."""
    if eta == 0:
        return s_next, s_next * 0
    s_up = torch.minimum(s_next, eta * torch.sqrt(s_next**2 * (s**2 - s_next**2) / s**2))
    return torch.sqrt(s_next**2 - s_up**2), s_up


@register_sampler("euler_ancestral", order=1, evals_per_step=1, grid={"name": "karras", "rho": 7.0},
                  stochastic=True,
                  paper="Karras et al. 2022 Euler step + ancestral noise (k-diffusion "
                        "sample_euler_ancestral; Song et al. 2021 DDIM eq. 16 split)",
                  description="Euler ancestral (eta=1: DDPM-like noise split); k-diffusion")
def sample_euler_ancestral(model: Denoiser, x: Tensor, sigmas: Tensor, *, cond: Any = None,
                           noise: NoiseSource | None = None, callback: Callable | None = None,
                           eta: float = 1.0, s_noise: float = 1.0) -> Tensor:
    check_range("euler_ancestral", "eta", eta, 0.0)
    check_range("euler_ancestral", "s_noise", s_noise, 0.0)
    ones = x.new_ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0 = model(x, s * ones, cond)
        s_down, s_up = ancestral_step(s, s_next, eta)
        x = x + (s_down - s) * (x - x0) / s
        if s_next > 0 and eta > 0:
            x = x + s_noise * s_up * need_noise("euler_ancestral", noise, " (eta > 0)").randn_like(x)
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s, "denoised": x0})
    return x
