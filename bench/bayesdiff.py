"""BayesDiff's uncertainty propagation through DDIM and DPM-Solver-2 (Kou, Gan, Wang, Li, Deng, ICLR 2024,
"BayesDiff: Estimating Pixel-wise Uncertainty in Diffusion via Bayesian Inference", Sec. 3.2
and Algorithm 1; code karrykkk/BayesDiff, ``ddim_skipUQ.py`` and ``dpm_solver_skipUQ.py``).

A Bayesian noise predictor gives, per element, a Gaussian ``eps | x_t ~ N(mu(x_t), v(x_t))``
(last-layer Laplace in BayesDiff). With the initial noise fixed, the only randomness of a
deterministic DDIM trajectory is then the predictor's, and BayesDiff tracks the elementwise mean
and variance of ``x_t`` along it. In this repository's data-scaled frame (``x = x_t / alpha_t``,
``s = sigma_t / alpha_t``) a DDIM step from ``s`` to ``s'`` is ``x' = x + (s' - s) eps`` (the
paper's eq. for ``alpha_{t-1} / alpha_t x_t + (sigma_{t-1} - alpha_{t-1} / alpha_t sigma_t)
eps_t``, divided by ``alpha_{t-1}``), so with ``c = s' - s``:

* ``E[x'] = E[x] + c E[eps]``;
* ``Var[x'] = Var[x] + 2 c Cov(x, eps) + c^2 Var[eps]`` (elementwise).

``E[eps]``, ``Cov(x, eps)`` and ``Var[eps]`` come from ``mc`` Monte Carlo draws ``x_i ~ N(E[x],
Var[x])`` (the paper's Gaussian approximation of ``x_t``): ``E[eps] = mean_i mu(x_i)``,
``Cov = mean_i (x_i - E[x]) (mu(x_i) - E[eps])`` (centred; the code's ``mean_i x_i mu(x_i) -
E[x] E[eps]`` has the same expectation and far more noise). The ``mc`` standard normal draws
are moment-matched per element (shifted and scaled to mean 0 and variance 1 over the draws;
``mc`` = 1: a plain draw): where ``mu`` is linear in ``x`` the three moments are then exact for
any ``mc``, and elsewhere far less noisy; the variance terms largely cancel (``2 c Cov`` against
``c^2 Var[eps]``), so plain draws would amplify their noise. ``eps_variance`` sets ``Var[eps]``: ``total``
(default) by the law of total variance, ``mean_i v(x_i) + var_i mu(x_i)``; ``sample`` as
BayesDiff's code, ``v`` at the trajectory's own ``x_t`` only (it leaves out ``Var_x mu(x)``, so
it understates the variance wherever ``mu`` varies with ``x``). The trajectory itself steps with
a draw ``eps ~ N(mu, v)`` at uncertainty steps (as BayesDiff's code) and with ``mu`` otherwise.
``every = k`` updates the variance only every k-th step ("BayesDiff-Skip"); in between
``Var[x'] = Var[x]`` and the mean steps with ``mu`` at the trajectory (as the code's
``conditioned_*_iteration``). Every draw comes from the sample's own ``NoiseSource`` stream.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from bench.noise import NoiseSource

EPS_VARIANCES = ("total", "sample")
#: ``eps_moments(x, sigma, cond) -> (mu, v)``: the predictor's elementwise mean and variance
EpsMoments = Callable[[Tensor, Tensor, Any], "tuple[Tensor, Tensor]"]


def uq_steps(steps: int, every: int) -> list[bool]:
    """Which of ``steps`` steps update the variance: the first, then every ``every``-th (the
    code's ``uq_array``: the last of its reversed indices, then every fifth down)."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"bayesdiff: every={every!r}; use a whole number >= 1 (1: every step).")
    return [i % every == 0 for i in range(steps)]


def _mean(xs: "list[Tensor] | tuple[Tensor, ...]") -> Tensor:
    """Elementwise mean of a list, summed in order: no reduction whose order could depend on
    the batch's shape, so a sample's result is bitwise the same in any batch."""
    total = xs[0].clone()
    for x in xs[1:]:
        total = total + x
    return total / len(xs)


def _check(mc: int, eps_variance: str) -> None:
    if isinstance(mc, bool) or not isinstance(mc, int) or mc < 1:
        raise ValueError(f"bayesdiff: mc={mc!r}; use a whole number of Monte Carlo samples >= 1.")
    if eps_variance not in EPS_VARIANCES:
        raise ValueError(f"bayesdiff: eps_variance={eps_variance!r}; use one of "
                         f"{', '.join(EPS_VARIANCES)}.")


def _start(x: Tensor, sigmas: Tensor, mc: int, every: int, eps_variance: str
           ) -> tuple[list[bool], Tensor, Tensor, Tensor, Tensor]:
    """Checked settings and the start of a propagation: which steps update the variance, the
    per-row ones, and the trajectory, mean and variance at ``sigmas[0]``."""
    _check(mc, eps_variance)
    return (uq_steps(len(sigmas) - 1, every), x.new_ones(x.shape[0]), x, x.clone(),
            torch.zeros_like(x))


def _draws(mean: Tensor, var: Tensor, mc: int, noise: NoiseSource) -> list[Tensor]:
    """``mc`` draws of ``N(mean, var)`` elementwise, moment-matched when ``mc`` > 1 (module
    doc); with ``var`` = 0 every draw is ``mean``."""
    z = [noise.randn_like(mean) for _ in range(mc)]
    if mc > 1:  # moment-matched: the draws' own mean 0 and variance 1 per element
        zm = _mean(z)
        sd = _mean([(zi - zm) ** 2 for zi in z]).sqrt().clamp(min=1e-12)
        z = [(zi - zm) / sd for zi in z]
    return [mean + var.clamp(min=0).sqrt() * zi for zi in z]


def _moments_of(draws: list[Tensor], mean: Tensor, gbar: list[Tensor], gvar: list[Tensor]
                ) -> tuple[Tensor, Tensor, Tensor]:
    """``E[g]``, ``Cov(x, g)`` (centred) and ``Var[g]`` (law of total variance) from the draws
    ``x_k`` and the conditional mean ``gbar_k`` and variance ``gvar_k`` of ``g`` given each."""
    e_g = _mean(gbar)
    # centred (the code's E[x mu] - E[x] E[mu] cancels catastrophically when |E[x]| >> sd(x):
    # same expectation, far less Monte Carlo noise)
    cov = _mean([(d - mean) * (g - e_g) for d, g in zip(draws, gbar)])
    var_g = _mean(gvar) + _mean([(g - e_g) ** 2 for g in gbar])
    return e_g, cov, var_g


@torch.no_grad()
def ddim_uq(eps_moments: EpsMoments, x: Tensor, sigmas: Tensor, *, noise: NoiseSource,
            mc: int = 10, every: int = 1, eps_variance: str = "total", cond: Any = None,
            draw_moments: EpsMoments | None = None, callback: Callable | None = None
            ) -> dict[str, Tensor]:
    """Deterministic-DDIM sampling with BayesDiff's moment propagation (module doc) from ``x``
    at ``sigmas[0]`` along the descending data-scaled levels ``sigmas``. Returns ``sample`` (the
    trajectory), ``mean`` and ``var`` (elementwise moments of the final ``x``) and ``calls``
    (predictor calls per sample: one per step plus ``mc`` per uncertainty step after the first).
    ``eps_moments`` evaluates the trajectory (the sampler's counted evaluations),
    ``draw_moments`` (default: the same) the Monte Carlo draws. ``callback`` gets ``{i, x,
    sigma, denoised}`` after each step, as the samplers' callbacks."""
    uq, ones, path, mean, var = _start(x, sigmas, mc, every, eps_variance)
    draw_moments, n_steps, calls = draw_moments or eps_moments, len(uq), 0
    for i in range(n_steps):
        s, s_next = sigmas[i], sigmas[i + 1]
        c = s_next - s
        mu, v = eps_moments(path, s * ones, cond)
        calls += 1
        if uq[i]:
            if i > 0:  # the first step starts from a known x: no spread to average over
                draws = _draws(mean, var, mc, noise)
                mus, vs = zip(*(draw_moments(d, s * ones, cond) for d in draws))
                calls += mc
                e_eps, cov, var_eps = _moments_of(draws, mean, list(mus), list(vs))
                if eps_variance == "sample":
                    var_eps = v
            else:
                e_eps, cov, var_eps = mu, torch.zeros_like(mu), v
            eps = mu + v.clamp(min=0).sqrt() * noise.randn_like(mu)
            mean = mean + c * e_eps
            var = (var + 2 * c * cov + c * c * var_eps).clamp(min=0)
        else:
            eps = mu
            mean = mean + c * mu
        if callback is not None:
            callback({"i": i, "x": path + c * eps, "sigma": s, "denoised": path - s * mu})
        path = path + c * eps
    return {"sample": path, "mean": mean, "var": var, "calls": torch.tensor(calls)}


@torch.no_grad()
def dpm_solver_2_uq(eps_moments: EpsMoments, x: Tensor, sigmas: Tensor, *, noise: NoiseSource,
                    mc: int = 10, every: int = 1, eps_variance: str = "total", cond: Any = None,
                    r1: float = 0.5, draw_moments: EpsMoments | None = None,
                    callback: Callable | None = None) -> dict[str, Tensor]:
    """Singlestep DPM-Solver-2 (``bench.samplers.dpm_solver``) with BayesDiff's moment
    propagation (its ``dpm_solver_skipUQ.py``). A step is ``x' = x + c g`` with ``c = s' - s``
    and ``g = a eps(x, s) + b eps(u, s_mid)``, ``u = x + (s_mid - s) eps(x, s)``, ``a = 1 -
    1/(2 r1)``, ``b = 1/(2 r1)`` (``r1`` = 1/2: ``g`` is the midpoint's noise alone); a step
    to ``s' = 0`` is one evaluation, ``g = eps(x, s)``. So ``Var[x'] = Var[x] + 2 c Cov(x, g) +
    c^2 Var[g]``, as for DDIM, with ``g``'s moments from ``mc`` draws ``x_k`` (moment-matched),
    a sampled ``eps_k ~ N(mu(x_k), v(x_k))`` each (as the code), ``u_k`` and ``mu, v`` at
    ``u_k``: ``E[g | x_k, eps_k] = a eps_k + b mu(u_k)``, ``Var[g | ...] = b^2 v(u_k)`` (a
    step to 0: ``a mu(x_k)`` and ``a^2 v(x_k)``). At the first step ``x`` is known and only
    ``eps_k`` varies. ``eps_variance = "sample"``: ``Var[g] = a^2 v + b^2 v_mid`` at the
    trajectory (the code's). The trajectory samples both noises at uncertainty steps and uses
    the means elsewhere; skipped steps leave ``Var[x]`` unchanged and move ``E[x]`` by the
    trajectory's ``c g``. ``calls``: 2 per step (1 for a step to 0) plus ``mc`` times as many
    per uncertainty step. ``callback`` as for :func:`ddim_uq`."""
    if not 0 < r1 <= 1:
        raise ValueError(f"bayesdiff: r1={r1!r}; use a value in (0, 1] (1/2: the midpoint).")
    uq, ones, path, mean, var = _start(x, sigmas, mc, every, eps_variance)
    draw_moments, n_steps, calls = draw_moments or eps_moments, len(uq), 0
    for i in range(n_steps):
        s, s_next = sigmas[i], sigmas[i + 1]
        c = s_next - s
        last = bool(s_next == 0)
        s_mid = s if last else s ** (1 - r1) * s_next ** r1
        a, b = (1.0, 0.0) if last else (1 - 0.5 / r1, 0.5 / r1)

        def sampled(m: Tensor, v: Tensor) -> Tensor:
            return m + v.clamp(min=0).sqrt() * noise.randn_like(m)

        def step_g(x_: Tensor, moments: EpsMoments, sample: bool
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
            """(E[g | x_, eps], Var[g | x_, eps], g as the trajectory steps, its variance by
            the code's rule, mu at x_)."""
            mu, v = moments(x_, s * ones, cond)
            if last:
                return a * mu, a * a * v, sampled(mu, v) if sample else mu, v, mu
            eps = sampled(mu, v) if sample else mu
            mu_m, v_m = moments(x_ + (s_mid - s) * eps, s_mid * ones, cond)
            g = a * eps + b * (sampled(mu_m, v_m) if sample else mu_m)
            return a * eps + b * mu_m, b * b * v_m, g, a * a * v + b * b * v_m, mu

        per = 1 if last else 2
        _, _, g_path, v_path, mu_path = step_g(path, eps_moments, uq[i])
        calls += per
        if uq[i]:
            draws = _draws(mean, var, mc, noise)
            parts = [step_g(d, draw_moments, True) for d in draws]
            calls += mc * per
            e_g, cov, var_g = _moments_of(draws, mean, [p[0] for p in parts],
                                          [p[1] for p in parts])
            if eps_variance == "sample":
                var_g = v_path
            mean = mean + c * e_g
            var = (var + 2 * c * cov + c * c * var_g).clamp(min=0)
        else:
            mean = mean + c * g_path
        if callback is not None:
            callback({"i": i, "x": path + c * g_path, "sigma": s, "denoised": path - s * mu_path})
        path = path + c * g_path
    return {"sample": path, "mean": mean, "var": var, "calls": torch.tensor(calls)}


def mc_passes(solver: str, steps: int, final_zero: bool, mc: int, every: int) -> int:
    """The Monte Carlo network passes per sample of :func:`ddim_uq` (``solver="ddim"``) or
    :func:`dpm_solver_2_uq` (``"dpm_solver_2"``) over ``steps`` steps, on a grid ending at 0 or
    not: their ``calls`` minus the trajectory's (the counted NFE), known before sampling
    (``bench plan``)."""
    uq = [i for i, on in enumerate(uq_steps(steps, every)) if on]
    if solver == "ddim":
        return mc * sum(1 for i in uq if i > 0)
    return mc * sum(1 if (final_zero and i == steps - 1) else 2 for i in uq)


__all__ = ["EPS_VARIANCES", "ddim_uq", "dpm_solver_2_uq", "mc_passes", "uq_steps"]
