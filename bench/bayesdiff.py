"""BayesDiff's uncertainty propagation through DDIM (Kou, Gan, Wang, Li, Deng, ICLR 2024,
"BayesDiff: Estimating Pixel-wise Uncertainty in Diffusion via Bayesian Inference", Sec. 3.2
and Algorithm 1; code karrykkk/BayesDiff, ``ddim_skipUQ.py``).

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


@torch.no_grad()
def ddim_uq(eps_moments: EpsMoments, x: Tensor, sigmas: Tensor, *, noise: NoiseSource,
            mc: int = 10, every: int = 1, eps_variance: str = "total", cond: Any = None
            ) -> dict[str, Tensor]:
    """Deterministic-DDIM sampling with BayesDiff's moment propagation (module doc) from ``x``
    at ``sigmas[0]`` along the descending data-scaled levels ``sigmas``. Returns ``sample`` (the
    trajectory), ``mean`` and ``var`` (elementwise moments of the final ``x``) and ``calls``
    (predictor calls per sample: one per step plus ``mc`` per uncertainty step after the first)."""
    if isinstance(mc, bool) or not isinstance(mc, int) or mc < 1:
        raise ValueError(f"bayesdiff: mc={mc!r}; use a whole number of Monte Carlo samples >= 1.")
    if eps_variance not in EPS_VARIANCES:
        raise ValueError(f"bayesdiff: eps_variance={eps_variance!r}; use one of "
                         f"{', '.join(EPS_VARIANCES)}.")
    n_steps = len(sigmas) - 1
    uq = uq_steps(n_steps, every)
    ones = x.new_ones(x.shape[0])
    path, mean, var = x, x.clone(), torch.zeros_like(x)
    calls = 0
    for i in range(n_steps):
        s, s_next = sigmas[i], sigmas[i + 1]
        c = s_next - s
        mu, v = eps_moments(path, s * ones, cond)
        calls += 1
        if uq[i]:
            if i > 0:  # the first step starts from a known x: no spread to average over
                z = [noise.randn_like(mean) for _ in range(mc)]
                if mc > 1:  # moment-matched: the draws' own mean 0 and variance 1 per element
                    zm = _mean(z)
                    sd = _mean([(zi - zm) ** 2 for zi in z]).sqrt().clamp(min=1e-12)
                    z = [(zi - zm) / sd for zi in z]
                draws = [mean + var.clamp(min=0).sqrt() * zi for zi in z]
                mus, vs = zip(*(eps_moments(d, s * ones, cond) for d in draws))
                calls += mc
                e_eps = _mean(mus)
                # centred (the code's E[x mu] - E[x] E[mu] cancels catastrophically when
                # |E[x]| >> sd(x): same expectation, far less Monte Carlo noise)
                cov = _mean([(d - mean) * (m - e_eps) for d, m in zip(draws, mus)])
                var_eps = (_mean(vs) + _mean([(m - e_eps) ** 2 for m in mus])
                           if eps_variance == "total" else v)
            else:
                e_eps, cov, var_eps = mu, torch.zeros_like(mu), v
            eps = mu + v.clamp(min=0).sqrt() * noise.randn_like(mu)
            mean = mean + c * e_eps
            var = (var + 2 * c * cov + c * c * var_eps).clamp(min=0)
        else:
            eps = mu
            mean = mean + c * mu
        path = path + c * eps
    return {"sample": path, "mean": mean, "var": var, "calls": torch.tensor(calls)}


__all__ = ["EPS_VARIANCES", "ddim_uq", "uq_steps"]
