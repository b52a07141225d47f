"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
Diffusion Models"): multistep UniP-p predictor (Algorithm 2 / eq. 7) with the UniC corrector
(eq. 9), B(h) variants ``bh1`` (B(h) = h) and ``bh2`` (B(h) = e^h - 1), orders 1-3.

With ``hh = -h`` (data prediction) or ``h`` (noise prediction), ``r_k`` the ratios of the
previous log-SNR steps to ``h`` and ``D_k = (m_k - m_0) / r_k``, UniPC solves
``R rho = b`` with ``R_ij = r_j^(i-1)`` and ``b_i = (i! phi_{i+1}(hh) hh^i) / B(hh)``;
the predictor uses the first ``p - 1`` rows (``rho = 1/2`` for p = 2) and the corrector, which
adds the fresh evaluation ``m_t`` at the predicted point, all ``p`` (``rho = 1/2`` for p = 1).
The Theorem (Sec. 3.3) gives UniC-p order ``p + 1``: UniPC with predictor order p converges with
order p + 1. The evaluation at the predicted point is reused by the next step, so UniPC costs one
evaluation per step; the last step is not corrected (there is nothing to evaluate after it).

In the data-scaled frame (``s = sigma / alpha``) the VP update
``x_t = sigma_t/sigma_s x - alpha_t h_phi_1 m_0 - alpha_t B(h) sum rho_k D_k`` becomes
``x_t = (s_t / s) x - h_phi_1 m_0 - B(h) sum rho_k D_k`` (data prediction) and
``x_t = x - s_t h_phi_1 eps_0 - s_t B(h) sum rho_k D_k`` (noise prediction).
A step to ``s = 0`` returns the denoiser output already computed at the current point
(diffusers' final first-order step to sigma = 0).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from bench.denoiser import Denoiser
from bench.noise import NoiseSource
from bench.samplers._common import check_choice
from bench.samplers.base import register_sampler

VARIANTS = ("bh1", "bh2")
PREDICTIONS = ("data", "noise")


def unipc_coefficients(rks: Tensor, hh: Tensor, order: int, variant: str
                       ) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    """(h_phi_1, rhos_p or None, rhos_c, B_h) for one UniPC step of ``order`` (official code)."""
    h_phi_1 = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b_h = hh if variant == "bh1" else torch.expm1(hh)
    factorial = 1
    rows, b = [], []
    for i in range(1, order + 1):
        rows.append(rks ** (i - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    r_mat, b_vec = torch.stack(rows), torch.stack(b)
    if order == 1:
        rhos_p = None
    elif order == 2:
        rhos_p = rks.new_tensor([0.5])
    else:
        rhos_p = torch.linalg.solve(r_mat[:-1, :-1], b_vec[:-1])
    rhos_c = rks.new_tensor([0.5]) if order == 1 else torch.linalg.solve(r_mat, b_vec)
    return h_phi_1, rhos_p, rhos_c, b_h


@register_sampler("unipc", order=lambda p: p.get("order", 2) + bool(p.get("corrector", True)),
                  evals_per_step=1, grid={"name": "time_uniform"},
                  paper="Zhao et al. 2023 (UniPC), multistep UniP-p + UniC, B(h) = bh1 | bh2",
                  description="UniPC multistep predictor-corrector (variant bh1|bh2, order p; "
                              "order of accuracy p+1); Zhao et al. 2023")
def sample_unipc(model: Denoiser, x: Tensor, sigmas: Tensor, *, cond: Any = None,
                 noise: NoiseSource | None = None,
                 callback: Callable | None = None, order: int = 2, variant: str = "bh2",
                 prediction: str = "data", corrector: bool = True,
                 lower_order_final: bool = True, lower_order_below: int | None = None) -> Tensor:
    """``order`` is the predictor order p (order of accuracy p + 1 with the corrector).
    ``corrector: false`` gives plain UniP-p (order p). ``lower_order_final`` lowers the order
    of the last steps at any number of steps, as UniPC's code and diffusers' UniPCMultistep do
    (``lower_order_below: N`` only on grids of fewer than N steps)."""
    from bench.samplers.dpm_solver_pp import lowers_final_order

    if order not in (1, 2, 3):
        raise ValueError(f"unipc: order={order!r} is not supported; use 1, 2 or 3.")
    check_choice("unipc", "variant", variant, VARIANTS)
    check_choice("unipc", "prediction", prediction, PREDICTIONS)
    data = prediction == "data"
    ones = x.new_ones(x.shape[0])
    n = len(sigmas) - 1
    lower_order_final = lowers_final_order("unipc", n, lower_order_final, lower_order_below)

    def evaluate(xx: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        x0 = model(xx, s * ones, cond)
        return x0, (x0 if data else (xx - x0) / s)

    last_x0, m = evaluate(x, sigmas[0])
    hist: list[tuple[Tensor, Tensor]] = [(sigmas[0], m)]  # (s_k, model output), newest last
    for i in range(n):
        s, t = sigmas[i], sigmas[i + 1]
        if t == 0:
            x = last_x0
            if callback is not None:
                callback({"i": i, "x": x, "sigma": s, "denoised": last_x0})
            break
        o = min(order, len(hist), n - i if lower_order_final else order)
        s0, m0 = hist[-1]
        h = torch.log(s0 / t)
        hh = -h if data else h
        past = hist[-o:-1][::-1]  # m_1 (newest previous), m_2, ...
        rks = torch.stack([torch.log(s0 / sk) / h for sk, _ in past] + [h.new_tensor(1.0)])
        d1s = [(mk - m0) / rk for (_, mk), rk in zip(past, rks[:-1])]
        h_phi_1, rhos_p, rhos_c, b_h = unipc_coefficients(rks, hh, o, variant)
        scale = 1.0 if data else t
        base = (t / s) * x - h_phi_1 * m0 if data else x - t * h_phi_1 * m0
        pred = base
        if rhos_p is not None:
            pred = base - scale * b_h * sum(r * d for r, d in zip(rhos_p, d1s))
        denoised = last_x0
        if i == n - 1:
            x = pred
        else:
            last_x0, m_t = evaluate(pred, t)
            if corrector:
                corr = sum((r * d for r, d in zip(rhos_c[:-1], d1s)), torch.zeros_like(x))
                x = base - scale * b_h * (corr + rhos_c[-1] * (m_t - m0))
            else:
                x = pred
            hist = (hist + [(t, m_t)])[-order:]
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s, "denoised": denoised})
    return x

