"""DPM-Solver++ (Lu et al. 2022b, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
Probabilistic Models"): data-prediction exponential integrators, singlestep 2S (Algorithm 1)
and multistep 2M (Algorithm 2) / 3M (dpm-solver's ``multistep_dpm_solver_third_update``).

VP update (data prediction, ``h = lambda_t - lambda_s``)::

    x_t = sigma_t / sigma_s x_s - alpha_t (e^{-h} - 1) [x0_s + correction terms]

divided by ``alpha_t`` (data-scaled frame, ``s = sigma / alpha = e^{-lambda}``) this reads
``x_t = (s_t / s_s) x - expm1(-h) [x0_s + ...]``; with no correction it is DDIM. A step to
``s = 0`` (``h = inf``) is the single denoising evaluation ``x = x0``.

``lower_order_final`` (default on, as in dpm-solver and diffusers) lowers the order of the last
steps to the number of steps left, ``min(order, n - i)``, which keeps few-step sampling stable,
and only on grids of fewer than ``lower_order_below`` steps: 15 by default, as diffusers'
``DPMSolverMultistepScheduler`` (dpm-solver's own code uses 10; ``lower_order_below: null``
lowers at any number of steps). Above the threshold the solver keeps its order to the end, so
its error converges at that order instead of being capped by a first-order last step.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from bench.denoiser import Denoiser
from bench.noise import NoiseSource
from bench.samplers._common import check_choice
from bench.samplers.base import register_sampler

SOLVER_TYPES = ("dpmsolver", "taylor")
D2_CHOICES = ("taylor", "half")


def _multistep_update(x: Tensor, s: Tensor, t: Tensor, hist: list[tuple[Tensor, Tensor]],
                      order: int, solver_type: str, d2: str = "taylor") -> Tensor:
    """One DPM-Solver++ multistep update from s to t > 0; ``hist`` = [(s_j, x0_j)], newest last."""
    s0, m0 = hist[-1]
    h = torch.log(s0 / t)
    phi_1 = torch.expm1(-h)
    x_t = (t / s) * x - phi_1 * m0
    if order == 1:
        return x_t
    s1, m1 = hist[-2]
    r0 = torch.log(s1 / s0) / h
    d1_0 = (m0 - m1) / r0
    if order == 2:
        if solver_type == "dpmsolver":
            return x_t - 0.5 * phi_1 * d1_0
        return x_t + (phi_1 / h + 1) * d1_0
    s2, m2 = hist[-3]
    r1 = torch.log(s2 / s1) / h
    d1_1 = (m1 - m2) / r1
    d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
    second = (d1_0 - d1_1) / (r0 + r1) * (2.0 if d2 == "taylor" else 1.0)
    phi_2 = phi_1 / h + 1
    phi_3 = phi_2 / h - 0.5
    return x_t + phi_2 * d1 - phi_3 * second


def lowers_final_order(name: str, steps: int, lower_order_final: bool,
                       lower_order_below: int | None) -> bool:
    """Whether a multistep solver lowers the order of its last steps on a grid of ``steps``
    steps: ``lower_order_final`` on and, when a threshold is given, ``steps < lower_order_below``
    (diffusers' DPMSolverMultistep: 15, dpm-solver: 10; UniPC and diffusers' UniPC: always)."""
    if lower_order_below is not None and (isinstance(lower_order_below, bool) or
                                          not isinstance(lower_order_below, int) or
                                          lower_order_below < 1):
        raise ValueError(f"{name}: lower_order_below={lower_order_below!r} must be a whole number "
                         f">= 1 (15 as diffusers, 10 as dpm-solver) or null (at any step count).")
    return bool(lower_order_final) and (lower_order_below is None or steps < lower_order_below)


def _multistep(name: str, model: Denoiser, x: Tensor, sigmas: Tensor, order: int,
               callback: Callable | None, lower_order_final: bool, solver_type: str,
               d2: str = "taylor", cond: Any = None, lower_order_below: int | None = 15) -> Tensor:
    check_choice(name, "solver_type", solver_type, SOLVER_TYPES)
    check_choice(name, "d2", d2, D2_CHOICES)
    ones = x.new_ones(x.shape[0])
    n = len(sigmas) - 1
    lower_order_final = lowers_final_order(name, n, lower_order_final, lower_order_below)
    hist: list[tuple[Tensor, Tensor]] = []
    for i in range(n):
        s, t = sigmas[i], sigmas[i + 1]
        x0 = model(x, s * ones, cond)
        hist = (hist + [(s, x0)])[-order:]
        if t == 0:
            x = x0
        else:
            o = min(order, len(hist), n - i if lower_order_final else order)
            x = _multistep_update(x, s, t, hist, o, solver_type, d2)
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s, "denoised": x0})
    return x


@register_sampler("dpmpp_2m", order=2, evals_per_step=1, grid={"name": "logsnr"},
                  paper="Lu et al. 2022b (DPM-Solver++), Algorithm 2 (multistep 2M)",
                  description="DPM-Solver++(2M) multistep, data prediction; Lu et al. 2022b")
def sample_dpmpp_2m(model: Denoiser, x: Tensor, sigmas: Tensor, *, cond: Any = None,
                    noise: NoiseSource | None = None,
                    callback: Callable | None = None, lower_order_final: bool = True,
                    solver_type: str = "dpmsolver", lower_order_below: int | None = 15) -> Tensor:
    """First step first order (no history yet), then 2M with r = h_{i-1} / h_i. solver_type
    ``dpmsolver`` is the paper's (k-diffusion's sample_dpmpp_2m, diffusers' ``midpoint``)."""
    return _multistep("dpmpp_2m", model, x, sigmas, 2, callback, lower_order_final, solver_type,
                      cond=cond, lower_order_below=lower_order_below)


@register_sampler("dpmpp_3m", order=lambda p: 2 if p.get("d2") == "half" else 3, evals_per_step=1, grid={"name": "logsnr"},
                  paper="Lu et al. 2022b (DPM-Solver++), multistep third order (3M; dpm-solver "
                        "multistep_dpm_solver_third_update)",
                  description="DPM-Solver++(3M) multistep, data prediction; Lu et al. 2022b")
def sample_dpmpp_3m(model: Denoiser, x: Tensor, sigmas: Tensor, *, cond: Any = None,
                    noise: NoiseSource | None = None,
                    callback: Callable | None = None, lower_order_final: bool = True,
                    solver_type: str = "dpmsolver", d2: str = "taylor",
                    lower_order_below: int | None = 15) -> Tensor:
    """Warm-up with orders 1 and 2, then 3M; solver_type applies to the order-2 steps.

    The third-order update is ``x_t = (s_t/s) x - phi_1 m0 + phi_2 D1 - phi_3 D2`` with
    ``phi_2 = phi_1/h + 1``, ``phi_3 = phi_2/h - 1/2`` (the coefficients of ``h x0'`` and
    ``h^2 x0''`` in the exact integral), ``D1 = D1_0 + r0/(r0+r1) (D1_0 - D1_1)`` and
    ``D2 = 2 (D1_0 - D1_1)/(r0 + r1)``, the divided-difference estimate of ``h^2 x0''``
    (``d2: taylor``, default): this integrates quadratic x0(lambda) exactly and is third order
    (it coincides with UniP-3). dpm-solver's ``multistep_dpm_solver_third_update``, k-diffusion's
    ``sample_dpmpp_3m_sde(eta=0)`` and diffusers' ``DPMSolverMultistepScheduler(solver_order=3)``
    use half that D2 (``d2: half``, kept for parity with them), which leaves an O(h^3) local
    error: that variant converges with order 2 (tests/test_samplers_order.py measures both).
    """
    return _multistep("dpmpp_3m", model, x, sigmas, 3, callback, lower_order_final, solver_type,
                      d2, cond, lower_order_below)


@register_sampler("dpmpp_2s", order=2, evals_per_step=2, grid={"name": "logsnr"},
                  paper="Lu et al. 2022b (DPM-Solver++), Algorithm 1 (singlestep 2S)",
                  description="DPM-Solver++(2S) singlestep, data prediction, r1=1/2; Lu et al. 2022b")
def sample_dpmpp_2s(model: Denoiser, x: Tensor, sigmas: Tensor, *, cond: Any = None,
                    noise: NoiseSource | None = None,
                    callback: Callable | None = None, r1: float = 0.5) -> Tensor:
    if not 0 < r1 < 1:
        raise ValueError(f"dpmpp_2s: r1={r1!r} must be in (0, 1); the paper uses 1/2.")
    ones = x.new_ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        s, t = sigmas[i], sigmas[i + 1]
        x0 = model(x, s * ones, cond)
        if t == 0:
            x = x0
        else:
            h = torch.log(s / t)
            s1 = s * torch.exp(-r1 * h)
            u = (s1 / s) * x - torch.expm1(-r1 * h) * x0
            x0_1 = model(u, s1 * ones, cond)
            phi_1 = torch.expm1(-h)
            x = (t / s) * x - phi_1 * x0 - (0.5 / r1) * phi_1 * (x0_1 - x0)
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s, "denoised": x0})
    return x
