"""Likelihoods in nats and bits per dimension: the discrete-time variational bound and the
probability-flow ODE likelihood.

* ``vlb``: the DDPM bound (Ho et al. 2020, eq. 5) over a K-step sub-sequence of the N-step
  schedule, with the reverse variance beta, beta~ or the analytic optimum of Bao et al. 2022
  ("Analytic-DPM", Theorem 1 with eta = 1).
* ``ode_nll``: the instantaneous change of variables along the probability-flow ODE (Song et
  al. 2021, Appendix D.2), with the exact divergence or FFJORD's Hutchinson estimator
  (Grathwohl et al. 2019).

Conventions are the repository's: a denoiser ``D(x, sigma, cond) -> x0_hat`` acts in the
data-scaled frame ``x = x_t / alpha_t = x_0 + s eps``, ``s = sigma_t / alpha_t``. Every random
draw comes from a ``NoiseSource``, so a sample's result does not depend on its batch.
Results are per-sample float64 tensors.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from bench.denoiser import Cond, Denoiser
from bench.noise import NoiseSource
from bench.samplers.schedules import DiscreteVP, VPSchedule

VARIANCES = ("beta", "beta_tilde", "analytic")
DECODERS = ("gaussian", "discretized")
METHODS = ("exact", "hutchinson")
#: most dimensions for the exact divergence (one backward pass per dimension and stage)
EXACT_MAX_DIM = 64
_LN2 = math.log(2.0)


def _sum(x: Tensor) -> Tensor:
    """Per-sample sum over every dimension but the batch one."""
    return x.flatten(1).sum(1)


# ------------------------------------------------------------------------ variational bound

def timesteps(n: int, steps: int) -> Tensor:
    """The 1-based DDPM sub-sequence ``tau_1 = 1 < ... < tau_K = N``: round(linspace(1, N, K))."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 2 <= steps <= n:
        raise ValueError(f"vlb: steps={steps!r} is out of range; use a whole number in "
                         f"[2, {n}] (2 <= K <= N, the schedule's number of steps).")
    return torch.unique(torch.round(torch.linspace(1, n, steps, dtype=torch.float64)).long())


def discretized_gaussian_log_prob(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Elementwise log-probability of the 8-bit bin of ``x`` (data in [-1, 1] on 256 levels)
    under ``N(mean, std^2)``: Ho et al. 2020, eq. 13, the CDF difference over ``x -+ 1/255`` with
    open edges below -1 and above 1 (``discretized_gaussian_log_likelihood`` of
    openai/improved-diffusion, with the exact normal CDF instead of its tanh approximation).
    Both tails are computed in log space, so no probability is clamped."""
    mean, std = torch.broadcast_tensors(mean.to(x), torch.as_tensor(std).to(x))
    hi = (x - mean + 1.0 / 255.0) / std
    lo = (x - mean - 1.0 / 255.0) / std
    # P(lo < Z < hi) = P(-hi < Z < -lo): take the side whose bin lies in the lower tail
    flip = lo + hi > 0
    a, b = torch.where(flip, -hi, lo), torch.where(flip, -lo, hi)
    la, lb = torch.special.log_ndtr(a), torch.special.log_ndtr(b)
    mid = lb + torch.log(-torch.expm1(la - lb))
    return torch.where(x < -0.999, torch.special.log_ndtr(hi),
                       torch.where(x > 0.999, torch.special.log_ndtr(-lo), mid))


def vlb(denoiser: Denoiser, schedule: DiscreteVP, x0: Tensor, *, steps: int, variance: str,
        noise: NoiseSource, cond: Any = None, gamma: Callable[[Tensor], Tensor] | None = None,
        decoder: str = "gaussian") -> dict[str, Tensor]:
    """The variational bound ``-log p(x0) <= L_prior + sum_{k=2}^K L_k + L_decoder`` per sample
    (Ho et al. 2020, eq. 5), over the sub-sequence ``tau`` of ``timesteps(N, steps)``.

    Step k (``tau_{k-1} -> tau_k``, ``abar_{tau_0} = 1``): ``alpha_k = abar_{tau_k} /
    abar_{tau_{k-1}}``, ``beta_k = 1 - alpha_k``, ``bbar_k = 1 - abar_{tau_k}``, ``beta~_k =
    bbar_{k-1} / bbar_k beta_k``. The model kernel is ``N(mu~(x_{tau_k}, x0_hat), sigma_k^2 I)``
    with ``x0_hat = D(x_{tau_k} / sqrt(abar_{tau_k}), s_k)``, ``s_k = sqrt(bbar_k / abar_{tau_k})``
    and ``sigma_k^2`` by ``variance``: ``beta`` (beta_k), ``beta_tilde`` (beta~_k; beta_1 at
    k = 1, where beta~_1 = 0, as Ho et al. fix it) or ``analytic`` (Bao et al. 2022, Theorem 1,
    eta = 1: ``beta~_k + (sqrt(bbar_k / alpha_k) - sqrt(bbar_{k-1} - beta~_k))^2 (1 - G(s_k))``,
    ``1 - G`` clipped to [0, 1]). ``G(s) = bbar Gamma`` comes from ``gamma(levels)`` if given,
    else from ``estimate_gamma`` with its defaults (pass ``gamma=lambda s: estimate_gamma(model,
    s, samples=M, seed=S)`` to choose them).

    The prior term is in closed form; each other term draws its own ``x_{tau_k} ~ q(. | x0)``
    (one draw per term and sample from ``noise``). The decoder (k = 1) is ``gaussian`` (``-log
    N(x0; x0_hat, sigma_1^2 I)``) or ``discretized`` (eq. 13, data in [-1, 1] on 256 levels).
    Returns ``nll`` (nats), ``prior``, ``kl`` (sum of the K - 1 transition terms), ``decoder``
    and ``bpd = nll / (d ln 2)`` (bits per 8-bit pixel directly with the discretized decoder).
    ``vlb_variances`` gives several variances from the same network passes.
    """
    return vlb_variances(denoiser, schedule, x0, steps=steps, variances=(variance,), noise=noise,
                         cond=cond, gamma=gamma, decoder=decoder)[variance]


def vlb_variances(denoiser: Denoiser, schedule: DiscreteVP, x0: Tensor, *, steps: int,
                  variances: Sequence[str], noise: NoiseSource, cond: Any = None,
                  gamma: Callable[[Tensor], Tensor] | None = None, decoder: str = "gaussian"
                  ) -> dict[str, dict[str, Tensor]]:
    """``vlb`` for each of ``variances`` from one set of draws and network passes (K per
    sample): the terms differ only in the reverse variance, so the bounds of one sample under
    beta, beta~ and the analytic variance are paired (their differences have no noise from the
    draws of ``x_{tau_k}``). Returns ``{variance: vlb's dict}``."""
    if not isinstance(schedule, DiscreteVP):
        raise ValueError(f"vlb: needs the discrete schedule (DiscreteVP, betas of N steps), got "
                         f"{type(schedule).__name__}.")
    if isinstance(variances, str) or not variances:
        raise ValueError(f"vlb: variances={variances!r}; give a list of {', '.join(VARIANCES)}.")
    for variance in variances:
        if variance not in VARIANCES:
            raise ValueError(f"vlb: variance={variance!r} is unknown; use one of "
                             f"{', '.join(VARIANCES)}.")
    if decoder not in DECODERS:
        raise ValueError(f"vlb: decoder={decoder!r} is unknown; use one of {', '.join(DECODERS)}.")
    tau = timesteps(schedule.N, steps)
    abar_all = torch.cumprod(1.0 - schedule.betas.to(torch.float64), 0)
    abar = abar_all[tau - 1]
    abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
    alpha = abar / abar_prev
    beta = 1.0 - alpha
    bbar, bbar_prev = 1.0 - abar, 1.0 - abar_prev
    beta_tilde = bbar_prev / bbar * beta
    levels = torch.sqrt(bbar / abar)
    var: dict[str, Tensor] = {}
    for variance in variances:
        if variance == "beta":
            var[variance] = beta
        elif variance == "beta_tilde":
            var[variance] = torch.cat([beta[:1], beta_tilde[1:]])
        else:
            if gamma is None:
                from bench.samplers.analytic_dpm import estimate_gamma

                g = estimate_gamma(denoiser, levels)
            else:
                g = torch.as_tensor(gamma(levels), dtype=torch.float64).reshape(-1).cpu()
            if g.shape != levels.shape:
                raise ValueError(f"vlb: gamma gave {g.numel()} values for {levels.numel()} levels.")
            gap = torch.sqrt(bbar / alpha) - torch.sqrt((bbar_prev - beta_tilde).clamp(min=0.0))
            var[variance] = beta_tilde + gap**2 * (1.0 - g).clamp(0.0, 1.0)
    coef = torch.sqrt(abar_prev) * beta / bbar  # mu~'s coefficient of x0 (Ho et al. eq. 7)

    x = x0.to(torch.float64)
    dim = x[0].numel()
    prior = 0.5 * _sum(bbar[-1] + abar[-1] * x**2 - 1.0 - torch.log(bbar[-1]))
    kl = {v: torch.zeros_like(prior) for v in variances}
    dec = {v: torch.zeros_like(prior) for v in variances}
    for k in tqdm(range(len(tau) - 1, -1, -1), desc="vlb terms", disable=None, leave=False):
        eps = noise.randn_like(x0).to(torch.float64)
        sigma = torch.full((x.shape[0],), float(levels[k]), dtype=x0.dtype, device=x0.device)
        x0_hat = denoiser((x + levels[k] * eps).to(x0.dtype), sigma, cond).to(torch.float64)
        err2 = _sum((x - x0_hat) ** 2)
        for v in variances:
            if k > 0:  # KL(N(mu~, beta~ I) || N(mu_model, var I)); means differ by coef (x0 - x0_hat)
                ratio = beta_tilde[k] / var[v][k]
                kl[v] = kl[v] + 0.5 * (dim * (ratio - 1.0 - torch.log(ratio))
                                       + coef[k] ** 2 * err2 / var[v][k])
            elif decoder == "gaussian":
                dec[v] = 0.5 * (err2 / var[v][0] + dim * torch.log(2 * math.pi * var[v][0]))
            else:
                dec[v] = -_sum(discretized_gaussian_log_prob(x, x0_hat, torch.sqrt(var[v][0])))
    out = {}
    for v in variances:
        nll = prior + kl[v] + dec[v]
        out[v] = {"nll": nll, "prior": prior, "kl": kl[v], "decoder": dec[v],
                  "bpd": nll / (dim * _LN2)}
    return out


@torch.no_grad()
def gamma_from_data(denoiser: Denoiser, levels: Tensor, x0: Tensor, *, seed: int,
                    cond: Any = None, batch_size: int = 256) -> Tensor:
    """Analytic-DPM's ``G(s) = E ||eps_hat(x0 + s eps, s)||^2 / d`` (Bao et al. 2022, eq. 8:
    ``bbar_n Gamma_n``) at each level, by Monte Carlo over the data samples ``x0`` (``[M,
    *shape]``, each with its row of the ``Cond`` if given) and one ``eps`` per sample drawn from a
    generator seeded ``seed`` and shared by every level; float64 ``[L]``."""
    levels = torch.as_tensor(levels, dtype=torch.float64).reshape(-1).cpu()
    gen = torch.Generator().manual_seed(int(seed))
    eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64).to(x0.device)
    x0d, m, dim = x0.to(torch.float64), x0.shape[0], x0[0].numel()
    out = torch.zeros(len(levels), dtype=torch.float64)
    for j, s in enumerate(tqdm(levels.tolist(), desc="analytic gamma", disable=None, leave=False)):
        total = 0.0
        for a in range(0, m, batch_size):
            b = slice(a, min(a + batch_size, m))
            x = (x0d[b] + s * eps[b]).to(x0.dtype)
            sig = torch.full((x.shape[0],), s, dtype=x0.dtype, device=x0.device)
            c = None if cond is None else Cond(cond.rows[b], None if cond.null is None
                                               else cond.null[b])
            e = (x.to(torch.float64) - denoiser(x, sig, c).to(torch.float64)) / s
            total += float((e * e).sum())
        out[j] = total / (m * dim)
    return out


# -------------------------------------------------------------------- probability-flow ODE

def ode_nll(denoiser: Denoiser, schedule: VPSchedule, x: Tensor, *, method: str = "hutchinson",
            probes: int = 1, steps: int = 100, noise: NoiseSource | None = None, cond: Any = None,
            s_start: float | None = None, s_end: float | None = None) -> dict[str, Tensor | int]:
    """``-log p_{s_start}(x)`` per sample by the probability-flow ODE (Song et al. 2021,
    Appendix D.2), in the data-scaled frame.

    ``dx/ds = f(x, s) = (x - D(x, s)) / s`` and ``log p_{s_start}(x(s_start)) =
    log p_{s_end}(x(s_end)) + int_{s_start}^{s_end} div f(x(s), s) ds``. In ``u = log s`` the
    field is ``x - D`` and the integrand ``div_x (x - D) = d - tr dD/dx``; both are integrated
    from ``s_start`` (default ``schedule.s_min``) to ``s_end`` (default ``schedule.s_max``) by
    classic RK4 with ``steps`` fixed steps uniform in log s (no step size shared across a
    batch, so each sample is independent of the others). The prior at ``s_end`` is
    ``N(0, (1 + s_end^2) I)``: the VP prior ``x_T ~ N(0, I)`` seen as ``x = x_T / alpha_T`` with
    ``alpha_T^2 = 1 / (1 + s_end^2)`` (from ``alpha^2 + sigma^2 = 1`` and ``s = sigma/alpha``).

    ``method``: ``exact`` (autograd, one backward pass per dimension; d <= 64) or
    ``hutchinson`` (FFJORD: ``probes`` Rademacher vectors per sample drawn once from ``noise``
    and kept along the path, ``E[e^T J e] = tr J``, averaged over the probes). The trajectory
    is in ``x``'s dtype (give float64 ``x`` to a float64 model, e.g. the gmm oracle); the
    log-density is accumulated in float64. Returns ``nll`` (nats), ``prior_logp``, ``delta_logp`` (the integral), ``bpd =
    nll / (d ln 2)`` and ``nfe`` (network passes per sample, ``4 * steps``).
    """
    if method not in METHODS:
        raise ValueError(f"ode_nll: method={method!r} is unknown; use one of {', '.join(METHODS)}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"ode_nll: steps={steps!r} must be a whole number >= 1 (RK4 steps).")
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
        raise ValueError(f"ode_nll: probes={probes!r} must be a whole number >= 1.")
    lo = schedule.s_min if s_start is None else float(s_start)
    hi = schedule.s_max if s_end is None else float(s_end)
    if not 0 < lo < hi:
        raise ValueError(f"ode_nll: needs 0 < s_start < s_end, got s_start={lo}, s_end={hi}.")
    batch, dim = x.shape[0], x[0].numel()
    if method == "exact":
        if dim > EXACT_MAX_DIM:
            raise ValueError(f"ode_nll: the exact divergence takes one backward pass per "
                             f"dimension and is limited to d <= {EXACT_MAX_DIM}; this x has "
                             f"d = {dim}. Use method='hutchinson'.")
        basis = torch.eye(dim, dtype=x.dtype, device=x.device)
        vectors = [basis[i].expand(batch, dim).reshape(x.shape) for i in range(dim)]
    else:
        if noise is None:
            raise ValueError("ode_nll: method='hutchinson' draws its probes from a NoiseSource; "
                             "pass noise=NoiseSource(seed, indices).")
        if len(noise.indices) != batch:
            raise ValueError(f"ode_nll: batch of {batch} but {len(noise.indices)} sample streams.")
        draws = torch.sign(noise.randn((probes, *x.shape[1:]))).to(x.dtype).to(x.device)
        vectors = list(draws.unbind(1))

    def field(y: Tensor, u: float) -> tuple[Tensor, Tensor]:
        """``(x - D, div_x (x - D))`` at ``s = e^u``."""
        sigma = torch.full((batch,), math.exp(u), dtype=x.dtype, device=x.device)
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            den = denoiser(y, sigma, cond)
            tr = torch.zeros(batch, dtype=torch.float64, device=x.device)
            for i, v in enumerate(vectors):
                (vjp,) = torch.autograd.grad(den, y, v, retain_graph=i < len(vectors) - 1)
                tr = tr + _sum(vjp * v).to(torch.float64)
        # exact: sum_i e_i^T J e_i = tr J; hutchinson: the probes' mean (e^T e = d for Rademacher)
        return (y - den).detach(), dim - (tr if method == "exact" else tr / probes)

    us = torch.linspace(math.log(lo), math.log(hi), steps + 1, dtype=torch.float64).tolist()
    y = x.detach()
    delta = torch.zeros(batch, dtype=torch.float64, device=x.device)
    for u, u_next in tqdm(list(zip(us[:-1], us[1:])), desc="ode nll", disable=None):
        h = u_next - u
        k1, d1 = field(y, u)
        k2, d2 = field(y + h / 2 * k1, u + h / 2)
        k3, d3 = field(y + h / 2 * k2, u + h / 2)
        k4, d4 = field(y + h * k3, u_next)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        delta = delta + h / 6 * (d1 + 2 * d2 + 2 * d3 + d4)
    var = 1.0 + hi**2
    prior = -0.5 * (_sum(y.to(torch.float64) ** 2) / var + dim * math.log(2 * math.pi * var))
    nll = -(prior + delta)
    return {"nll": nll, "prior_logp": prior, "delta_logp": delta, "bpd": nll / (dim * _LN2),
            "nfe": 4 * steps}


# ----------------------------------------------------------------------------- 8-bit data

def dequantize(images_uint8: Tensor, noise: NoiseSource) -> Tensor:
    """Uniform dequantisation of 8-bit images to [-1, 1]: ``x = 2 (k + u) / 256 - 1``, ``u ~
    U[0, 1)`` per value from the sample's stream (``u = Phi(z)``, z standard normal)."""
    if images_uint8.dtype != torch.uint8:
        raise ValueError(f"dequantize: needs uint8 images, got {images_uint8.dtype}.")
    u = torch.special.ndtr(noise.randn_like(images_uint8).to(torch.float64).cpu())
    x = 2.0 * (images_uint8.cpu().to(torch.float64) + u) / 256.0 - 1.0
    return x.to(device=noise.device, dtype=noise.dtype)


def bpd_8bit(nll_nats: Tensor, d: int) -> Tensor:
    """Bits per 8-bit dimension of a density on dequantised data in [-1, 1]: ``nll / (d ln 2)
    + 7``, where 7 = log2 128 is the per-dimension log-Jacobian of the map [0, 256) -> [-1, 1],
    ``x = y / 128 - 1`` (the offset Song et al. 2021's code adds)."""
    return nll_nats / (d * _LN2) + 7.0
