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

from typing import Any, Callable

import torch
from torch import Tensor

from bench.denoiser import Denoiser
from bench.noise import NoiseSource
from bench.samplers.base import register_sampler


@register_sampler("dpm_solver_2", order=2, evals_per_step=2, grid={"name": "logsnr"},
                  paper="Lu et al. 2022 (DPM-Solver), DPM-Solver-2 singlestep",
                  description="DPM-Solver-2 singlestep (noise prediction, r1=1/2); Lu et al. 2022")
def sample_dpm_solver_2(model: Denoiser, x: Tensor, sigmas: Tensor, *, cond: Any = None,
                        noise: NoiseSource | None = None, callback: Callable | None = None,
                        r1: float = 0.5) -> Tensor:
    if not 0 < r1 <= 1:
        raise ValueError(f"dpm_solver_2: r1 must be in (0, 1], got {r1}")
    ones = x.new_ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0 = model(x, s * ones, cond)
        if s_next == 0:
            x = x0
        else:
            eps = (x - x0) / s
            s_mid = s ** (1 - r1) * s_next**r1
            u = x + (s_mid - s) * eps
            eps_mid = (u - model(u, s_mid * ones, cond)) / s_mid
            x = x + (s_next - s) * ((1 - 0.5 / r1) * eps + (0.5 / r1) * eps_mid)
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s, "denoised": x0})
    return x


# ----------------------------------------------------------------------------------------
# DPM-Solver-1 and -3 singlestep, and the "fast" order schedule (Lu et al. 2022, Algorithms
# 1-2 and Section 3.4 / Appendix). Noise-prediction form in the data-scaled frame: with
# h = lambda_t - lambda_s and s = e^{-lambda}, the VP terms alpha_t / alpha_s x -> x and
# sigma_t phi(h) eps -> s_t phi(h) eps (see bench.samplers._common).

def _eps(model: Denoiser, x: Tensor, s: Tensor, cond: Any = None) -> Tensor:
    return (x - model(x, s * x.new_ones(x.shape[0]), cond)) / s


def dpm_solver_1_step(x: Tensor, s: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """DPM-Solver-1 (eq. 3.7, = DDIM): x_t = x - s_t (e^h - 1) eps = x + (s_t - s) eps."""
    return x + (t - s) * eps


def dpm_solver_2_step(model: Denoiser, x: Tensor, s: Tensor, t: Tensor, eps: Tensor,
                      r1: float = 0.5, cond: Any = None) -> Tensor:
    """DPM-Solver-2 (Algorithm 1) from s to t > 0, given eps at (x, s)."""
    h = torch.log(s / t)
    s1 = s * torch.exp(-r1 * h)
    u1 = x - s1 * torch.expm1(r1 * h) * eps
    eps1 = _eps(model, u1, s1, cond)
    return x - t * torch.expm1(h) * eps - t / (2 * r1) * torch.expm1(h) * (eps1 - eps)


def dpm_solver_3_step(model: Denoiser, x: Tensor, s: Tensor, t: Tensor, eps: Tensor,
                      r1: float = 1 / 3, r2: float = 2 / 3, cond: Any = None) -> Tensor:
    """DPM-Solver-3 (Algorithm 2) from s to t > 0, given eps at (x, s)."""
    h = torch.log(s / t)
    s1, s2 = s * torch.exp(-r1 * h), s * torch.exp(-r2 * h)
    u1 = x - s1 * torch.expm1(r1 * h) * eps
    eps1 = _eps(model, u1, s1, cond)
    phi_22 = torch.expm1(r2 * h) / (r2 * h) - 1
    u2 = x - s2 * torch.expm1(r2 * h) * eps - (r2 / r1) * s2 * phi_22 * (eps1 - eps)
    eps2 = _eps(model, u2, s2, cond)
    phi_2 = torch.expm1(h) / h - 1
    return x - t * torch.expm1(h) * eps - (1 / r2) * t * phi_2 * (eps2 - eps)


@register_sampler("dpm_solver_1", order=1, evals_per_step=1, grid={"name": "logsnr"},
                  paper="Lu et al. 2022 (DPM-Solver), DPM-Solver-1, eq. 3.7 (= DDIM)",
                  description="DPM-Solver-1 singlestep (first order; equals deterministic DDIM); "
                              "Lu et al. 2022")
def sample_dpm_solver_1(model: Denoiser, x: Tensor, sigmas: Tensor, *, cond: Any = None,
                        noise: NoiseSource | None = None, callback: Callable | None = None) -> Tensor:
    ones = x.new_ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        s, t = sigmas[i], sigmas[i + 1]
        x0 = model(x, s * ones, cond)
        x = x0 if t == 0 else dpm_solver_1_step(x, s, t, (x - x0) / s)
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s, "denoised": x0})
    return x


@register_sampler("dpm_solver_3", order=3, evals_per_step=3, grid={"name": "logsnr"},
                  paper="Lu et al. 2022 (DPM-Solver), DPM-Solver-3 singlestep, Algorithm 2",
                  description="DPM-Solver-3 singlestep (noise prediction, r1=1/3, r2=2/3); "
                              "Lu et al. 2022")
def sample_dpm_solver_3(model: Denoiser, x: Tensor, sigmas: Tensor, *, cond: Any = None,
                        noise: NoiseSource | None = None, callback: Callable | None = None,
                        r1: float = 1 / 3, r2: float = 2 / 3) -> Tensor:
    if not 0 < r1 < r2 <= 1:
        raise ValueError(f"dpm_solver_3: need 0 < r1 < r2 <= 1, got r1={r1}, r2={r2}; "
                         f"the paper uses r1=1/3, r2=2/3.")
    ones = x.new_ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        s, t = sigmas[i], sigmas[i + 1]
        x0 = model(x, s * ones, cond)
        x = x0 if t == 0 else dpm_solver_3_step(model, x, s, t, (x - x0) / s, r1, r2, cond)
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s, "denoised": x0})
    return x


@register_sampler("dpm_solver_fast", order=3, evals_per_step=1,
                  grid={"name": "dpm_fast", "order": 3}, grid_params=("order",),
                  paper="Lu et al. 2022 (DPM-Solver), DPM-Solver-fast order schedule (Sec. 3.4, "
                        "Appendix D.1)",
                  description="DPM-Solver-fast: singlestep DPM-Solver-3/2/1 steps whose orders sum "
                              "to the NFE; Lu et al. 2022")
def sample_dpm_solver_fast(model: Denoiser, x: Tensor, sigmas: Tensor, *, cond: Any = None,
                           noise: NoiseSource | None = None, callback: Callable | None = None,
                           order: int = 3) -> Tensor:
    """DPM-Solver-fast: for a budget of N evaluations, K = N // order + 1 (order 3) outer steps of
    orders ``fast_orders(N, order)`` (e.g. N = 3(K-1): [3, ..., 3, 2, 1]).

    The grid carries the budget: it has N + 1 points (one per evaluation), and the outer steps go
    between ``sigmas[cumsum([0] + orders)]``. Grid ``dpm_fast`` (same ``order``; a suite forwards
    the sampler's ``order`` to it, so it is stated once, in params) reproduces
    dpm-solver's ``get_orders_and_timesteps_for_singlestep_solver`` exactly (K logSNR-uniform
    outer steps for ``skip: logsnr``, the N-step grid subsampled otherwise); intermediate points
    are at r1 = 1/3, r2 = 2/3 (order 3) and r1 = 1/2 (order 2) in lambda, as in the paper.
    On a grid ending at s = 0 the last step is the usual single denoising evaluation and the
    schedule covers the first N - 1 evaluations.
    """
    from bench.samplers.schedules import fast_orders

    if order not in (1, 2, 3):
        raise ValueError(f"dpm_solver_fast: order={order!r} is not supported; use 1, 2 or 3 (the "
                         f"dpm_fast grid takes the same order from the sampler's params).")
    final_zero = bool(sigmas[-1] == 0)
    budget = len(sigmas) - 1 - int(final_zero)
    orders = fast_orders(budget, order) if budget > 0 else []
    bounds = [0]
    for o in orders:
        bounds.append(bounds[-1] + o)
    ones = x.new_ones(x.shape[0])
    for i in range(len(orders)):
        s, t = sigmas[bounds[i]], sigmas[bounds[i + 1]]
        x0 = model(x, s * ones, cond)
        eps = (x - x0) / s
        if orders[i] == 1:
            x = dpm_solver_1_step(x, s, t, eps)
        elif orders[i] == 2:
            x = dpm_solver_2_step(model, x, s, t, eps, cond=cond)
        else:
            x = dpm_solver_3_step(model, x, s, t, eps, cond=cond)
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s, "denoised": x0})
    if final_zero:
        x = model(x, sigmas[-2] * ones, cond)
        if callback is not None:
            callback({"i": len(orders), "x": x, "sigma": sigmas[-2], "denoised": x})
    return x
