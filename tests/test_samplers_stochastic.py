"""Stochastic samplers and grids against closed forms: DDPM's two variances (exact moment
recursion), Analytic-DPM's Gamma (closed form for a Gaussian), consistency sampling with an exact
consistency function, and the dpm_fast / cosine / t_end grids."""

from __future__ import annotations

import math

import pytest
import torch

import bench.samplers  # noqa: F401  (registration)
from bench.denoiser import CountingDenoiser
from bench.models.gmm import GMMOracle
from bench.noise import NoiseSource
from bench.registry import SAMPLERS
from bench.samplers.analytic_dpm import _GAMMA_CACHE, estimate_gamma
from bench.samplers.schedules import DiscreteVP, fast_orders, make_grid

DIAG = GMMOracle(shape=(1, 2, 2), cov="diag", var_min=0.02, var_max=1.0, seed=3)
N = 4000


def _samples(name: str, params: dict, sigmas: torch.Tensor, oracle=DIAG, n: int = N):
    noise = NoiseSource(1, range(n))
    x = noise.randn(oracle.sample_shape()) * sigmas[0]
    model = CountingDenoiser(oracle.load())
    return SAMPLERS.get(name)(model, x, sigmas, noise=noise, **params).flatten(1), model


@pytest.mark.parametrize("variance", ["small", "large"])
def test_ddpm_output_moments_match_the_exact_linear_recursion(variance: str) -> None:
    """For Gaussian data each DDPM step is x' - mu = g (x - mu) + c z with
    g = k + (s'^2/s^2)(1 - k), k = lam/(lam + s^2): mean and variance propagate exactly."""
    sigmas = make_grid({"name": "time_uniform"}, DIAG.schedule, 6)
    out, model = _samples("ddpm", {"variance": variance}, sigmas)
    mu, lam = DIAG.mu[0], DIAG.lam[0]
    pred = {}
    for v in ("small", "large"):
        mean, var = -mu, sigmas[0] ** 2 * torch.ones_like(lam)
        for s, t in zip(sigmas[:-1], sigmas[1:]):
            k = lam / (lam + s**2)
            g = k + (t**2 / s**2) * (1 - k)
            c2 = t**2 * (s**2 - t**2) / s**2 if v == "small" else (s**2 - t**2) * (1 + t**2) / (1 + s**2)
            mean, var = g * mean, g**2 * var + c2
        pred[v] = (mean + mu, var)
    m, var = pred[variance]
    se_var = var * math.sqrt(2 / N)
    assert torch.all((out.var(0) - var).abs() < 5 * se_var), (out.var(0), var)
    assert torch.all((out.mean(0) - m).abs() < 5 * var.sqrt() / math.sqrt(N))
    # the two variances are distinguishable at this sample size
    assert torch.any((pred["small"][1] - pred["large"][1]).abs() > 10 * se_var)
    assert model.nfe == 6


def test_analytic_dpm_gamma_matches_closed_form_and_is_cached_outside_nfe() -> None:
    """G(s) = E||eps_hat||^2 / d = mean_d s^2 / (lam_d + s^2) for one Gaussian component."""
    oracle = GMMOracle(shape=(1, 4, 4), cov="full", var_min=0.01, seed=4)
    den = oracle.load()
    levels = torch.tensor([0.05, 0.3, 1.0, 5.0], dtype=torch.float64)
    _GAMMA_CACHE.clear()
    est = estimate_gamma(den, levels, samples=N, seed=3)
    lam = oracle.lam[0]
    for s, g in zip(levels, est):
        r = s**2 / (lam + s**2)
        exact = float(r.mean())
        se = math.sqrt(2 * float((r**2).sum())) / lam.numel() / math.sqrt(N)
        assert abs(float(g) - exact) < 5 * se + 1e-12, (float(s), float(g), exact)
    counting = CountingDenoiser(den)
    estimate_gamma(counting, levels, samples=N, seed=3)
    assert counting.nfe == 0  # cached per model; and estimation never goes through the counter
    sigmas = make_grid({"name": "time_uniform"}, den.schedule, 5)
    _samples("analytic_dpm", {"gamma_samples": 500}, sigmas, oracle, n=4)
    key = (den.cache_key, 500, 0)
    assert set(_GAMMA_CACHE[key]) == {float(s) for s in sigmas[:-1]}


def test_analytic_dpm_variance_lies_between_its_bounds_and_beats_ddpm_small() -> None:
    """Bao et al. Thm 2 (data-free bounds): lam^2 <= sigma*^2 <= lam^2 + (s - k)^2. With few steps
    the optimal variance gives output variances closer to the data's than DDPM's beta~."""
    sigmas = make_grid({"name": "time_uniform"}, DIAG.schedule, 4)
    ana, _ = _samples("analytic_dpm", {"gamma_samples": 2000}, sigmas)
    ddpm, _ = _samples("ddpm", {}, sigmas)
    lam = DIAG.lam[0]
    err_ana = float(((ana.var(0) - lam) / lam).abs().mean())
    err_ddpm = float(((ddpm.var(0) - lam) / lam).abs().mean())
    assert err_ana < err_ddpm


def test_consistency_sampling_with_an_exact_consistency_function() -> None:
    cm = GMMOracle(shape=(1, 2, 2), cov="diag", var_min=0.02, seed=3, parameterisation="consistency")
    one = make_grid({"name": "karras"}, cm.schedule, 1)  # [T, 0]: one evaluation
    noise = NoiseSource(2, range(16))
    x = noise.randn(cm.sample_shape()) * one[0]
    out = SAMPLERS.get("consistency")(cm.load(), x, one, noise=noise)
    assert torch.allclose(out, DIAG.ode_solution(x, float(one[0]), 0.0), atol=1e-10)
    three = make_grid({"name": "karras"}, cm.schedule, 3)
    samples, model = _samples("consistency", {}, three, cm)
    assert model.nfe == 3
    lam, mu = cm.lam[0], cm.mu[0]
    assert torch.all((samples.var(0) - lam).abs() < 5 * lam * math.sqrt(2 / N))
    assert torch.all((samples.mean(0) - mu).abs() < 5 * (lam / N).sqrt())


def test_dpm_fast_grid_has_one_point_per_evaluation_and_uniform_outer_steps() -> None:
    sch = DiscreteVP()
    for nfe in (5, 6, 10, 20):
        g = make_grid({"name": "dpm_fast", "order": 3}, sch, nfe)
        orders = fast_orders(nfe, 3)
        assert len(g) == nfe + 1 and sum(orders) == nfe
        assert len(orders) == nfe // 3 + 1
        bounds = torch.tensor([0] + orders).cumsum(0)
        outer = -torch.log(g[bounds])
        assert torch.allclose(outer.diff(), outer.diff()[0].expand(len(orders)), rtol=1e-10)
    assert fast_orders(9, 3) == [3, 3, 2, 1] and fast_orders(10, 3) == [3, 3, 3, 1]
    assert fast_orders(7, 2) == [2, 2, 2, 1]


def test_cosine_schedule_and_t_end_choices() -> None:
    cos = DiscreteVP(kind="cosine")
    assert cos.s_max > 1e3 and cos.s_min < 0.02  # abar_N ~ 0 (beta clipped at 0.999)
    lin = DiscreteVP()
    g = make_grid({"name": "time_uniform", "t_end": 1e-3}, lin, 10)
    assert torch.isclose(g[-1], lin.s_of_t(1e-3))
    with pytest.raises(ValueError, match=r"t_end=1\.5 is outside \(0, T=1\.0\)"):
        make_grid({"name": "logsnr", "t_end": 1.5}, lin, 10)
    with pytest.raises(ValueError, match="kind='quadratic'.*'linear', 'cosine'"):
        DiscreteVP(kind="quadratic")
