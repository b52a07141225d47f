"""Multistep consistency sampling (Song et al. 2023, "Consistency Models", Algorithm 1).

For a consistency-parameterised model ``f(x, s)`` (the PF-ODE flow from ``s`` to ``epsilon``)::

    x <- f(x_T, T)
    for tau_n in (tau_1 > ... > tau_{N-1}):
        x_hat <- x + sqrt(tau_n^2 - epsilon^2) z,   z ~ N(0, I)
        x     <- f(x_hat, tau_n)

On a grid ``[T, tau_1, ..., tau_{N-1}, end]`` every step costs one evaluation; the last step
returns ``f`` (for ``end = 0`` or ``epsilon``) or re-noises to ``end`` otherwise, so the output is
at ``sigmas[-1]`` as for every sampler. The model must say it is consistency-parameterised
(``parameterisation == "consistency"``; the gmm oracle with ``parameterisation: consistency`` is
an exact one); ``epsilon`` defaults to the model's ``consistency_sigma_min``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from bench.denoiser import Denoiser
from bench.noise import NoiseSource
from bench.samplers._common import need_noise
from bench.samplers.base import register_sampler


@register_sampler("consistency", order=None, evals_per_step=1,
                  grid={"name": "karras", "rho": 7.0}, stochastic=True,
                  paper="Song et al. 2023 (Consistency Models), Algorithm 1 (multistep sampling)",
                  description="Multistep consistency sampling for consistency-parameterised "
                              "models; Song et al. 2023")
def sample_consistency(model: Denoiser, x: Tensor, sigmas: Tensor, *, cond: Any = None,
                       noise: NoiseSource | None = None, callback: Callable | None = None,
                       sigma_min: float | None = None) -> Tensor:
    param = getattr(model, "parameterisation", "x0")
    if param != "consistency":
        raise ValueError(f"consistency: the model is not consistency-parameterised "
                         f"(parameterisation={param!r}); use a consistency model, e.g. model gmm "
                         f"with params {{parameterisation: consistency}}.")
    eps = float(getattr(model, "consistency_sigma_min", 0.0) if sigma_min is None else sigma_min)
    if eps < 0:
        raise ValueError(f"consistency: sigma_min={eps} must be >= 0.")
    ones = x.new_ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        s, t = sigmas[i], sigmas[i + 1]
        x0 = model(x, s * ones, cond)
        if float(t) <= eps:
            x = x0
        else:
            z = need_noise("consistency", noise).randn_like(x)
            x = x0 + torch.sqrt(t**2 - eps**2) * z
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s, "denoised": x0})
    return x
