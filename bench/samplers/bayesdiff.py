"""BayesDiff samplers (Kou et al., ICLR 2024): DDIM (eta 0) and singlestep DPM-Solver-2 that
propagate the elementwise mean and variance of the sample (``bench.bayesdiff``) and return,
besides the images, each sample's summed final variance: its uncertainty (latent space for
latent models), and on request the variance map.

They need a model with a last-layer posterior (a suite's model entry with ``laplace:``,
``bench.bayesian_model``). The counted NFE is the base sampler's on the same grid (DDIM 1, and
DPM-Solver-2 2 per step); the Monte Carlo passes of the propagation (``mc`` per uncertainty
step for DDIM, ``2 mc`` for DPM-Solver-2) are extra network passes, counted in
``network_calls`` only. ``every = k`` updates the variance every k-th step (BayesDiff-Skip;
the paper's default 5 is the default here too). ``eps_variance``: ``total`` (default, the law of
total variance) or ``sample`` (the code's variance at the trajectory only).
"""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor

from bench.bayesdiff import EPS_VARIANCES, ddim_uq, dpm_solver_2_uq, mc_passes
from bench.denoiser import Denoiser
from bench.noise import NoiseSource
from bench.samplers.base import register_sampler

#: the per-sample extra holding the summed final variance
UNCERTAINTY = "uncertainty"
#: the samplers of this module: they run only on a model with a last-layer posterior
NEEDS_POSTERIOR = ("bayesdiff_ddim", "bayesdiff_dpm_solver_2")


def _run(uq: Callable[..., dict[str, Tensor]], name: str, model: Denoiser, x: Tensor,
         sigmas: Tensor, cond: Any, noise: NoiseSource | None, callback: Callable | None,
         mc: int, every: int, eps_variance: str, variance_map: bool, **kw: Any
         ) -> tuple[Tensor, dict[str, Tensor]]:
    """The trajectory's evaluations go through ``model.eps_moments`` (counted as NFE by the
    counting wrapper), the Monte Carlo draws through ``model.uncounted.eps_moments``."""
    if noise is None:
        raise ValueError(f"{name}: needs a NoiseSource (noise=...): the propagation draws "
                         f"Monte Carlo samples from each sample's own stream.")
    draw = getattr(getattr(model, "uncounted", model), "eps_moments", None)
    if draw is None:
        raise ValueError(f"{name}: the model has no last-layer posterior (eps_moments); give "
                         f"its suite entry 'laplace: true' (bench.bayesian_model), e.g. "
                         f"'- {{name: fmnist-cond, laplace: true}}'.")
    if eps_variance not in EPS_VARIANCES:
        raise ValueError(f"{name}: eps_variance={eps_variance!r}; use one of "
                         f"{', '.join(EPS_VARIANCES)}.")
    out = uq(model.eps_moments, x, sigmas, noise=noise, mc=mc, every=every,  # type: ignore
             eps_variance=eps_variance, cond=cond, draw_moments=draw, callback=callback, **kw)
    var = out["var"]
    extras = {UNCERTAINTY: var.double().reshape(var.shape[0], -1).sum(1)}
    if variance_map:
        extras["variance"] = var
    return out["sample"], extras


@register_sampler("bayesdiff_ddim", order=1, evals_per_step=1, grid={"name": "time_uniform"},
                  stochastic=True, extras=(UNCERTAINTY,),
                  extra_passes=lambda p, steps, fz: mc_passes("ddim", steps, fz, p["mc"],
                                                             p["every"]),
                  paper="Kou et al. 2024 (BayesDiff), Algorithm 1 on DDIM",
                  description="DDIM (eta 0) with BayesDiff's variance propagation; per-sample "
                              "uncertainty; needs a model with 'laplace:'")
def sample_bayesdiff_ddim(model: Denoiser, x: Tensor, sigmas: Tensor, *, cond: Any = None,
                          noise: NoiseSource | None = None, callback: Callable | None = None,
                          mc: int = 10, every: int = 5, eps_variance: str = "total",
                          variance_map: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
    return _run(ddim_uq, "bayesdiff_ddim", model, x, sigmas, cond, noise, callback, mc, every,
                eps_variance, variance_map)


@register_sampler("bayesdiff_dpm_solver_2", order=2, evals_per_step=2, grid={"name": "logsnr"},
                  stochastic=True, extras=(UNCERTAINTY,),
                  extra_passes=lambda p, steps, fz: mc_passes("dpm_solver_2", steps, fz,
                                                             p["mc"], p["every"]),
                  paper="Kou et al. 2024 (BayesDiff), DPM-Solver-2 with variance propagation",
                  description="singlestep DPM-Solver-2 (r1=1/2) with BayesDiff's variance "
                              "propagation; per-sample uncertainty; needs a model with 'laplace:'")
def sample_bayesdiff_dpm_solver_2(model: Denoiser, x: Tensor, sigmas: Tensor, *,
                                  cond: Any = None, noise: NoiseSource | None = None,
                                  callback: Callable | None = None, mc: int = 10,
                                  every: int = 5, eps_variance: str = "total",
                                  variance_map: bool = False, r1: float = 0.5
                                  ) -> tuple[Tensor, dict[str, Tensor]]:
    return _run(dpm_solver_2_uq, "bayesdiff_dpm_solver_2", model, x, sigmas, cond, noise,
                callback, mc, every, eps_variance, variance_map, r1=r1)
