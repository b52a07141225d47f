"""DPM-Solver singlestep (Lu et al. 2022, "DPM-Solver", Algorithm 1 / DPM-Solver-2, eq. 3.6).

With half-log-SNR step ``h = lambda' - lambda`` and the data-scaled level ``s = e^{-lambda}``,
the noise-prediction update ``x' = (alpha'/alpha) x - sigma'(e^h - 1) eps`` becomes
``x' = x + (s' - s) eps``, so DPM-Solver-2 with intermediate point ``r1`` reads::

    s_mid = s^(1 - r1) * s'^r1          (lambda_mid = lambda + r1 h)
    u     = x + (s_mid - s) eps(x, s)
    x'    = x + (s' - s) [(1 - 1/(2 r1)) eps(x, s) + 1/(2 r1) eps(u, s_mid)]

For ``r1 = 1/2`` this is k-diffusion's ``sample_dpm_2``. A step to ``s' = 0`` is a single
denoising evaluation.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor

from bench.denoiser import Denoiser
from bench.noise import NoiseSource
from bench.samplers.base import register_sampler


@register_sampler("dpm_solver_2", order=2, evals_per_step=2, grid={"name": "logsnr"},
                  paper="Lu et al. 2022 (DPM-Solver), DPM-Solver-2 singlestep",
                  description="DPM-Solver-2 singlestep (noise prediction, r1=1/2); Lu et al. 2022")
def sample_dpm_solver_2(model: Denoiser, x: Tensor, sigmas: Tensor, *,
                        noise: NoiseSource | None = None, callback: Callable | None = None,
                        r1: float = 0.5) -> Tensor:
    if not 0 < r1 <= 1:
        raise ValueError(f"dpm_solver_2: r1 must be in (0, 1], got {r1}")
    ones = x.new_ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0 = model(x, s * ones)
        if s_next == 0:
            x = x0
        else:
            eps = (x - x0) / s
            s_mid = s ** (1 - r1) * s_next**r1
            u = x + (s_mid - s) * eps
            eps_mid = (u - model(u, s_mid * ones)) / s_mid
            x = x + (s_next - s) * ((1 - 0.5 / r1) * eps + (0.5 / r1) * eps_mid)
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s, "denoised": x0})
    return x
