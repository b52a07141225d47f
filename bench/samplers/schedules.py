"""VP noise schedules and the time/sigma grids that samplers step along.

Conventions (shared by every sampler):

* A VP schedule gives ``x_t = alpha_t x_0 + sigma_t eps`` for ``t`` in ``[t_eps, T]``.
* Samplers work in the *data-scaled* (VE) frame of Karras et al. 2022 (EDM):
  ``x = x_t / alpha_t = x_0 + s * eps`` with ``s = sigma_t / alpha_t = exp(-lambda_t)``.
  A grid is a descending float64 tensor of ``s`` values; a trailing 0 means "finish with a
  denoising step", as in EDM / k-diffusion.
* The discrete 1000-step DDPM schedule is made continuous as in DPM-Solver
  (Lu et al. 2022, ``NoiseScheduleVP('discrete')``): ``t_n = (n + 1) / N`` and ``log alpha``
  linearly interpolated between those points.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor

from bench.registry import GRIDS


def _interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Piecewise-linear interpolation with linear extrapolation (dpm-solver's interpolate_fn)."""
    x = x.to(torch.float64)
    idx = torch.searchsorted(xp, x).clamp(1, len(xp) - 1)
    x0, x1, f0, f1 = xp[idx - 1], xp[idx], fp[idx - 1], fp[idx]
    return f0 + (x - x0) * (f1 - f0) / (x1 - x0)


class VPSchedule(ABC):
    """A variance-preserving schedule: ``alpha_t^2 + sigma_t^2 = 1``."""

    T: float = 1.0
    t_eps: float = 1e-3

    @abstractmethod
    def log_alpha(self, t: Tensor) -> Tensor: ...

    @abstractmethod
    def inverse_lambda(self, lam: Tensor) -> Tensor: ...

    @abstractmethod
    def describe(self) -> dict[str, Any]: ...

    def alpha(self, t: Tensor) -> Tensor:
        return self.log_alpha(t).exp()

    def sigma(self, t: Tensor) -> Tensor:
        return (1.0 - (2.0 * self.log_alpha(t)).exp()).sqrt()

    def lambda_(self, t: Tensor) -> Tensor:
        la = self.log_alpha(t)
        return la - 0.5 * torch.log1p(-(2.0 * la).exp())

    def s_of_t(self, t: Tensor | float) -> Tensor:
        """Data-scaled noise level ``sigma_t / alpha_t``."""
        return torch.exp(-self.lambda_(torch.as_tensor(t, dtype=torch.float64)))

    def t_of_s(self, s: Tensor) -> Tensor:
        return self.inverse_lambda(-torch.log(torch.as_tensor(s, dtype=torch.float64)))

    @property
    def s_max(self) -> float:
        return float(self.s_of_t(self.T))

    @property
    def s_min(self) -> float:
        return float(self.s_of_t(self.t_eps))


class DiscreteVP(VPSchedule):
    """DDPM's N-step schedule (Ho et al. 2020), linear betas by default, with t_n = (n+1)/N."""

    def __init__(self, beta_start: float = 1e-4, beta_end: float = 0.02, num_steps: int = 1000,
                 betas: list[float] | None = None, kind: str = "linear") -> None:
        if betas is not None:
            b = torch.tensor(betas, dtype=torch.float64)
        elif kind == "linear":
            b = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
        elif kind == "cosine":
            b = cosine_betas(num_steps)
        else:
            raise ValueError(f"unknown beta schedule kind={kind!r}; use 'linear', 'cosine' or pass "
                             f"betas")
        self.kind, self.beta_start, self.beta_end = kind, beta_start, beta_end
        self.betas = b
        self.N = len(b)
        self.t_array = torch.linspace(0.0, 1.0, self.N + 1, dtype=torch.float64)[1:]
        self.log_alpha_array = 0.5 * torch.cumsum(torch.log1p(-b), 0)
        self.t_eps = 1.0 / self.N

    def log_alpha(self, t: Tensor) -> Tensor:
        return _interp(torch.as_tensor(t, dtype=torch.float64), self.t_array, self.log_alpha_array)

    def inverse_lambda(self, lam: Tensor) -> Tensor:
        log_alpha = -0.5 * torch.logaddexp(torch.zeros_like(lam), -2.0 * lam)
        return _interp(log_alpha, self.log_alpha_array.flip(0), self.t_array.flip(0))

    def describe(self) -> dict[str, Any]:
        return {"schedule": "discrete", "kind": self.kind, "beta_start": self.beta_start,
                "beta_end": self.beta_end, "num_steps": self.N}


def cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Nichol & Dhariwal 2021 (Improved DDPM), eq. 17: abar(t) = f(t)/f(0),
    f(t) = cos^2((t/T + s)/(1 + s) * pi/2), beta_t = min(1 - abar_t/abar_{t-1}, 0.999)
    (diffusers' ``squaredcos_cap_v2``)."""
    def f(t: Tensor) -> Tensor:
        return torch.cos((t / num_steps + s) / (1 + s) * math.pi / 2) ** 2

    i = torch.arange(num_steps, dtype=torch.float64)
    return torch.clamp(1 - f(i + 1) / f(i), max=max_beta)


class LinearVP(VPSchedule):
    """Continuous VP SDE with linear beta(t) (Song et al. 2021): beta in [beta_0, beta_1]."""

    def __init__(self, beta_0: float = 0.1, beta_1: float = 20.0, t_eps: float = 1e-3) -> None:
        self.beta_0, self.beta_1, self.t_eps = beta_0, beta_1, t_eps

    def log_alpha(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        return -0.25 * t**2 * (self.beta_1 - self.beta_0) - 0.5 * t * self.beta_0

    def inverse_lambda(self, lam: Tensor) -> Tensor:
        tmp = 2.0 * (self.beta_1 - self.beta_0) * torch.logaddexp(-2.0 * lam, torch.zeros_like(lam))
        delta = self.beta_0**2 + tmp
        return tmp / (torch.sqrt(delta) + self.beta_0) / (self.beta_1 - self.beta_0)

    def describe(self) -> dict[str, Any]:
        return {"schedule": "linear", "beta_0": self.beta_0, "beta_1": self.beta_1,
                "t_eps": self.t_eps}


def make_schedule(spec: str | dict[str, Any]) -> VPSchedule:
    """``'discrete'`` | ``'linear'`` | ``{name: discrete, beta_start: ..}``."""
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = spec.pop("name", "discrete")
    if name == "discrete":
        return DiscreteVP(**spec)
    if name == "linear":
        return LinearVP(**spec)
    raise ValueError(f"unknown schedule {name!r}; use 'discrete' or 'linear'")


# ---------------------------------------------------------------------------------- grids
# Every grid: (schedule, steps, **params) -> descending float64 tensor of steps + 1 values.

def _finish(points: Tensor, final_zero: bool) -> Tensor:
    if final_zero:
        points = torch.cat([points, points.new_zeros(1)])
    return points.to(torch.float64)


def _t_end(schedule: VPSchedule, t_end: float | None) -> float:
    """The grid's last VP time: the schedule's t_eps (1/N for the discrete schedule, i.e.
    dpm-solver's t = (n + 1)/N convention with n = 0) unless given, e.g. 1e-3 or 1e-4
    (dpm-solver's choices for continuous-time models)."""
    if t_end is None:
        return schedule.t_eps
    if not 0 < float(t_end) < schedule.T:
        raise ValueError(f"grid: t_end={t_end!r} is outside (0, T={schedule.T}); use e.g. "
                         f"{schedule.t_eps:g} (the schedule's t_eps), 1e-3 or 1e-4.")
    return float(t_end)


@GRIDS.register("karras", "EDM noise levels s_i = (s_max^(1/rho) + i/(n-1) (s_min^(1/rho) - "
                "s_max^(1/rho)))^rho (Karras et al. 2022)")
def karras(schedule: VPSchedule, steps: int, *, rho: float = 7.0, sigma_min: float | None = None,
           sigma_max: float | None = None, final_zero: bool = True) -> Tensor:
    n = steps if final_zero else steps + 1
    lo = schedule.s_min if sigma_min is None else float(sigma_min)
    hi = schedule.s_max if sigma_max is None else float(sigma_max)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    s = (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    return _finish(s, final_zero)


@GRIDS.register("time_uniform", "Uniform in VP time t from T to t_end (DDIM, DPM-Solver)")
def time_uniform(schedule: VPSchedule, steps: int, *, t_end: float | None = None,
                 final_zero: bool = False) -> Tensor:
    n = steps if final_zero else steps + 1
    t = torch.linspace(schedule.T, _t_end(schedule, t_end), n, dtype=torch.float64)
    return _finish(schedule.s_of_t(t), final_zero)


@GRIDS.register("logsnr", "Uniform in half-log-SNR lambda from lambda(T) to lambda(t_end) "
                "(DPM-Solver's recommended grid)")
def logsnr(schedule: VPSchedule, steps: int, *, t_end: float | None = None,
           final_zero: bool = False) -> Tensor:
    n = steps if final_zero else steps + 1
    lam_hi = -math.log(schedule.s_max)
    lam_lo = -math.log(float(schedule.s_of_t(_t_end(schedule, t_end))))
    lam = torch.linspace(lam_hi, lam_lo, n, dtype=torch.float64)
    return _finish(torch.exp(-lam), final_zero)


@GRIDS.register("time_quadratic", "Quadratic in VP time: t_i = (linspace(sqrt(T), sqrt(t_end)))^2")
def time_quadratic(schedule: VPSchedule, steps: int, *, t_end: float | None = None,
                   final_zero: bool = False) -> Tensor:
    n = steps if final_zero else steps + 1
    t = torch.linspace(schedule.T**0.5, _t_end(schedule, t_end) ** 0.5, n, dtype=torch.float64) ** 2
    return _finish(schedule.s_of_t(t), final_zero)


@GRIDS.register("vp", "Continuous VP grid of k-diffusion (get_sigmas_vp): t uniform in [eps_s, 1], "
                "s = sqrt(exp(beta_d t^2/2 + beta_min t) - 1) (Song et al. 2021)")
def vp(schedule: VPSchedule, steps: int, *, beta_d: float | None = None,
       beta_min: float | None = None, eps_s: float | None = None, final_zero: bool = True) -> Tensor:
    n = steps if final_zero else steps + 1
    lin = schedule if isinstance(schedule, LinearVP) else None
    bd = float(beta_d) if beta_d is not None else (lin.beta_1 - lin.beta_0 if lin else 19.9)
    bm = float(beta_min) if beta_min is not None else (lin.beta_0 if lin else 0.1)
    e = float(eps_s) if eps_s is not None else (lin.t_eps if lin else 1e-3)
    t = torch.linspace(1.0, e, n, dtype=torch.float64)
    return _finish(torch.sqrt(torch.expm1(bd * t**2 / 2 + bm * t)), final_zero)


def fast_orders(nfe: int, order: int) -> list[int]:
    """Step orders of DPM-Solver-fast for a budget of ``nfe`` evaluations (Lu et al. 2022,
    Appendix D.1; dpm-solver's ``get_orders_and_timesteps_for_singlestep_solver``)."""
    if nfe < 1:
        raise ValueError(f"dpm_fast: needs at least 1 evaluation, got nfe={nfe}.")
    if order == 3:
        k = nfe // 3 + 1
        if nfe % 3 == 0:
            return [3] * (k - 2) + [2, 1]
        return [3] * (k - 1) + [nfe % 3]
    if order == 2:
        return [2] * (nfe // 2) + [1] * (nfe % 2)
    if order == 1:
        return [1] * nfe
    raise ValueError(f"dpm_fast: order={order!r} is not supported; use 1, 2 or 3.")


@GRIDS.register("dpm_fast", "DPM-Solver-fast grid: one point per evaluation; K = NFE//order + 1 "
                "logSNR-uniform outer steps with their intermediate points (skip: logsnr), or the "
                "NFE-step skip grid (Lu et al. 2022)")
def dpm_fast(schedule: VPSchedule, steps: int, *, order: int = 3, skip: str = "logsnr",
             t_end: float | None = None, final_zero: bool = False) -> Tensor:
    """``steps`` is the evaluation budget N. For ``skip: logsnr`` the outer grid has K
    logSNR-uniform steps (as dpm-solver does) and each order-o step is filled with its o - 1
    intermediate points at lambda + j h / o; for other ``skip`` grids it is the N-step grid,
    which sampler ``dpm_solver_fast`` subsamples at the cumulative orders (as dpm-solver does)."""
    budget = steps - int(final_zero)
    if budget < 1:
        return _finish(torch.tensor([schedule.s_max], dtype=torch.float64), final_zero)
    if skip != "logsnr":
        if skip not in ("time_uniform", "time_quadratic"):
            raise ValueError(f"dpm_fast: skip={skip!r} is not supported; use logsnr, "
                             f"time_uniform or time_quadratic.")
        return _finish(GRIDS.get(skip)(schedule, budget, t_end=t_end, final_zero=False), final_zero)
    orders = fast_orders(budget, order)
    lam_hi = -math.log(schedule.s_max)
    lam_lo = -math.log(float(schedule.s_of_t(_t_end(schedule, t_end))))
    outer = torch.linspace(lam_hi, lam_lo, len(orders) + 1, dtype=torch.float64)
    fine = [outer[i] + j / o * (outer[i + 1] - outer[i]) for i, o in enumerate(orders)
            for j in range(o)]
    lam = torch.stack(fine + [outer[-1]])
    return _finish(torch.exp(-lam), final_zero)


def make_grid(spec: dict[str, Any], schedule: VPSchedule, steps: int) -> Tensor:
    params = {k: v for k, v in spec.items() if k != "name"}
    return GRIDS.get(spec["name"])(schedule, steps, **params)


def grid_final_zero(spec: dict[str, Any]) -> bool:
    """Whether a grid spec ends with s = 0 (its own default when not given)."""
    if "final_zero" in spec:
        return bool(spec["final_zero"])
    return bool(GRIDS.entry(spec["name"]).params().get("final_zero", False))
