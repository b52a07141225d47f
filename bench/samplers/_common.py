"""Small helpers shared by the sampler modules (data-scaled / VE frame).

In the data-scaled frame ``x = x0 + s * eps`` the half-log-SNR is ``lambda = -log s``, so the
exponential-integrator formulas of DPM-Solver / DPM-Solver++ / UniPC, written in VP terms with
``alpha_t, sigma_t``, become (divide the VP update by ``alpha_t``):

* ``sigma_t / sigma_s * x_s``  ->  ``(s_t / s_s) * x``   (data prediction),
* ``alpha_t / alpha_s * x_s``  ->  ``x``                 (noise prediction),
* ``alpha_t * (...) * x0``     ->  ``(...) * x0``,
* ``sigma_t * (...) * eps``    ->  ``s_t * (...) * eps``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from bench.noise import NoiseSource


def need_noise(sampler: str, noise: NoiseSource | None, why: str = "") -> NoiseSource:
    """The NoiseSource a stochastic step needs, or an error that says how to pass one."""
    if noise is None:
        raise ValueError(f"{sampler}: this configuration{why} draws noise, so it needs "
                         f"noise=NoiseSource(seed, sample_indices); pass one (the nfe_curve eval "
                         f"always does).")
    return noise


def check_choice(sampler: str, param: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{sampler}: {param}={value!r} is not supported; use one of "
                         f"{', '.join(map(repr, choices))}.")


def check_range(sampler: str, param: str, value: float, lo: float, hi: float = math.inf,
                lo_open: bool = False) -> None:
    bad = value < lo or value > hi or (lo_open and value == lo)
    if bad:
        lo_s = f"> {lo}" if lo_open else f">= {lo}"
        hi_s = "" if hi == math.inf else f" and <= {hi}"
        raise ValueError(f"{sampler}: {param}={value!r} is out of range; use a value {lo_s}{hi_s}.")


def lam(s: Tensor) -> Tensor:
    """Half-log-SNR ``lambda = -log s`` (``+inf`` at ``s = 0``)."""
    return -torch.log(s)


def ones_like_batch(x: Tensor) -> Tensor:
    return x.new_ones(x.shape[0])


def vp_alpha(s: Tensor | float) -> Tensor:
    """VP ``alpha`` of the data-scaled level ``s``: ``alpha = 1 / sqrt(1 + s^2)``."""
    s = torch.as_tensor(s, dtype=torch.float64)
    return torch.rsqrt(1.0 + s * s)
