"""DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 12).

In the data-scaled frame DDIM's update from ``s`` to ``s'`` is
``x' = x0 + sqrt(s'^2 - c^2) eps + c z`` with ``c = eta s' sqrt(s^2 - s'^2) / s``, which is
eq. 12's ``sigma_t(eta)`` divided by ``alpha_{t'}``; ``eta = 0`` is the deterministic DDIM
(= DPM-Solver-1 = Euler in ``s``), ``eta = 1`` the DDPM posterior variance.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from bench.denoiser import Denoiser
from bench.noise import NoiseSource
from bench.samplers.base import register_sampler


@register_sampler("ddim", order=lambda p: None if p.get("eta", 0) else 1, evals_per_step=1, grid={"name": "time_uniform"},
                  paper="Song et al. 2021 (DDIM), eq. 12",
                  description="DDIM with eta (0 = deterministic); Song et al. 2021")
def sample_ddim(model: Denoiser, x: Tensor, sigmas: Tensor, *, cond: Any = None,
                noise: NoiseSource | None = None,
                callback: Callable | None = None, eta: float = 0.0) -> Tensor:
    if eta < 0:
        raise ValueError(f"ddim: eta must be >= 0, got {eta}")
    if eta > 0 and noise is None:
        raise ValueError("ddim: eta > 0 needs a NoiseSource (noise=...)")
    ones = x.new_ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0 = model(x, s * ones, cond)
        if s_next == 0:
            x = x0
        else:
            eps = (x - x0) / s
            c = eta * s_next * torch.sqrt(s**2 - s_next**2) / s if eta > 0 else s_next * 0
            x = x0 + torch.sqrt(s_next**2 - c**2) * eps
            if eta > 0:
                x = x + c * noise.randn_like(x)  # type: ignore[union-attr]
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s, "denoised": x0})
    return x
