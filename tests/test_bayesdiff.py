"""BayesDiff's moment propagation through DDIM (bench.bayesdiff) against a brute-force Monte
Carlo over the predictor's weights, on a model whose last layer is linear with a known diagonal
Gaussian posterior: eps = (1 + w) * eps_oracle, w ~ N(0, v_w) per element (features: the exact
noise prediction of the gmm oracle; weights: 1 + w)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.bayesdiff import ddim_uq, dpm_solver_2_uq, uq_steps
from bench.models.gmm import GMMOracle
from bench.noise import NoiseSource
from bench.samplers.schedules import make_grid

VW = 0.04  # posterior variance of the last-layer weights


def _model(g: GMMOracle):
    den = g.load("cpu")

    def eps_moments(x, sigma, cond=None):
        s = sigma.view(-1, *([1] * (x.ndim - 1)))
        mu = (x - den(x, sigma, cond)) / s
        return mu, VW * mu * mu
    return den, eps_moments


def _brute_force(den, x_t: torch.Tensor, sigmas: torch.Tensor, m: int, seed: int) -> torch.Tensor:
    """m trajectories from the same start, fresh weights at every step: final x, [m, *shape]."""
    gen = torch.Generator().manual_seed(seed)
    x = x_t.expand(m, *x_t.shape[1:]).clone()
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        mu = (x - den(x, s * x.new_ones(m))) / s
        w = torch.randn(x.shape, generator=gen, dtype=x.dtype) * VW ** 0.5
        x = x + (s_next - s) * (1 + w) * mu
    return x


def test_propagated_variance_equals_brute_force_monte_carlo():
    """Gaussian data: eps_oracle is linear in x, so the moment recursion is exact (k = 1, S = 10,
    moment-matched draws) and must equal the variance of 100k brute-force trajectories within
    4 standard errors of that estimate, per start. (On a 3-component mixture x_t is not Gaussian
    and the recursion is an approximation: measured 0.056, 0.50, 0.58 against 0.067, 0.49, 1.33
    at S = 1000; the paper's Gaussian assumption, not checked here.)"""
    g = GMMOracle(shape=(4,), means=[[0.5, -0.3, 0.2, 0.1]], covs=[0.3])
    den, moments = _model(g)
    sigmas = make_grid({"name": "time_uniform"}, g.schedule, 10).to(torch.float64)
    m = 100_000
    for idx in range(3):
        x_t = NoiseSource(7, [idx]).randn((4,)) * sigmas[0]
        out = ddim_uq(moments, x_t, sigmas, noise=NoiseSource(9, [idx]), mc=10)
        brute = _brute_force(den, x_t, sigmas, m, seed=idx)
        var = brute.var(0)
        m4 = ((brute - brute.mean(0)) ** 4).mean(0)
        se = float(((m4 - var**2) / m).sum().sqrt())  # elements are independent here
        got, want = float(out["var"].sum()), float(var.sum())
        assert abs(got - want) < 4 * se, (idx, got, want, se)
        assert se < 0.02 * want and want > 1e-2  # a sharp check of a spread that is there
        mean_se = (var / m).sqrt()
        assert bool(((out["mean"][0] - brute.mean(0)).abs() < 4 * mean_se + 1e-9).all())


def test_code_variance_misses_the_spread_of_the_mean_prediction():
    """eps_variance='sample' (v at the trajectory only, as BayesDiff's code) leaves out
    Var_x mu(x): on Gaussian data it is below the brute-force variance."""
    g = GMMOracle(shape=(4,), means=[[0.5, -0.3, 0.2, 0.1]], covs=[0.3])
    den, moments = _model(g)
    sigmas = make_grid({"name": "time_uniform"}, g.schedule, 10).to(torch.float64)
    x_t = NoiseSource(7, [0]).randn((4,)) * sigmas[0]
    total = ddim_uq(moments, x_t, sigmas, noise=NoiseSource(9, [0]), mc=10)["var"].sum()
    sample = ddim_uq(moments, x_t, sigmas, noise=NoiseSource(9, [0]), mc=10,
                     eps_variance="sample")["var"].sum()
    assert float(sample) < 0.9 * float(total)


def test_skip_updates_the_variance_every_kth_step_and_counts_calls():
    assert uq_steps(10, 5) == [True, False, False, False, False, True, False, False, False, False]
    assert uq_steps(3, 1) == [True] * 3
    g = GMMOracle(shape=(4,), means=[[0.5, -0.3, 0.2, 0.1]], covs=[0.3])
    _, moments = _model(g)
    sigmas = make_grid({"name": "time_uniform"}, g.schedule, 10).to(torch.float64)
    x_t = NoiseSource(7, [0]).randn((4,)) * sigmas[0]
    out = ddim_uq(moments, x_t, sigmas, noise=NoiseSource(9, [0]), mc=10, every=5)
    assert int(out["calls"]) == 10 + 10  # one per step, plus S at the second uncertainty step
    assert float(out["var"].sum()) > 0
    for bad in ({"mc": 0}, {"every": 0}, {"eps_variance": "code"}):
        with pytest.raises(ValueError, match=list(bad)[0]):
            ddim_uq(moments, x_t, sigmas, noise=NoiseSource(9, [0]), **bad)


def test_per_sample_variance_does_not_depend_on_the_batch():
    g = GMMOracle(shape=(3,), components=3, cov="full", var_min=0.05, seed=3)
    _, moments = _model(g)
    sigmas = make_grid({"name": "time_uniform"}, g.schedule, 8).to(torch.float64)
    x = NoiseSource(1, range(6)).randn((3,)) * sigmas[0]
    whole = ddim_uq(moments, x, sigmas, noise=NoiseSource(2, range(6)), mc=5)["var"]
    parts = torch.cat([ddim_uq(moments, x[a:b], sigmas, noise=NoiseSource(2, range(a, b)),
                               mc=5)["var"] for a, b in ((0, 2), (2, 3), (3, 6))])
    assert torch.equal(whole, parts)
    np.testing.assert_array_less(0, whole.sum(1).numpy())


def _brute_force_dpm2(den, x_t: torch.Tensor, sigmas: torch.Tensor, m: int, seed: int
                      ) -> torch.Tensor:
    """DPM-Solver-2 (r1 = 1/2) trajectories with fresh weights at every evaluation."""
    gen = torch.Generator().manual_seed(seed)
    x = x_t.expand(m, *x_t.shape[1:]).clone()

    def eps(y, s):
        w = torch.randn(y.shape, generator=gen, dtype=y.dtype) * VW ** 0.5
        return (1 + w) * (y - den(y, s * y.new_ones(m))) / s

    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        if s_next == 0:
            x = x - s * eps(x, s)
            continue
        s_mid = (s * s_next).sqrt()
        x = x + (s_next - s) * eps(x + (s_mid - s) * eps(x, s), s_mid)
    return x


@pytest.mark.parametrize("end", ["positive", "zero"])
def test_dpm_solver_2_propagated_variance_equals_brute_force_monte_carlo(end):
    """The DPM-Solver-2 recursion (k = 1) on the same model: the midpoint's input carries the
    first evaluation's sampled noise, so the moments are Monte Carlo estimates even where mu is
    linear. 64 independent runs of S = 250 from the same start (one noise stream each) average
    to 100k brute-force trajectories within 4 combined standard errors (the recursion's own
    from the runs' spread), on a grid ending at s > 0 and on one whose last step is a single
    evaluation to s = 0."""
    g = GMMOracle(shape=(4,), means=[[0.5, -0.3, 0.2, 0.1]], covs=[0.3])
    den, moments = _model(g)
    sigmas = make_grid({"name": "logsnr"}, g.schedule, 5).to(torch.float64)
    if end == "zero":
        sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    m, runs, mc = 100_000, 64, 250
    x_t = NoiseSource(7, [0]).randn((4,)) * sigmas[0]
    out = dpm_solver_2_uq(moments, x_t.expand(runs, 4), sigmas, noise=NoiseSource(9, range(runs)),
                          mc=mc)
    got = out["var"].sum(1)
    brute = _brute_force_dpm2(den, x_t, sigmas, m, seed=1)
    var = brute.var(0)
    m4 = ((brute - brute.mean(0)) ** 4).mean(0)
    se_brute = float(((m4 - var**2) / m).sum().sqrt())
    se_prop = float(got.std() / runs ** 0.5)
    want = float(var.sum())
    assert abs(float(got.mean()) - want) < 4 * (se_brute**2 + se_prop**2) ** 0.5, \
        (float(got.mean()), want, se_brute, se_prop)
    assert se_brute + se_prop < 0.03 * want and want > 1e-2
    mean = out["mean"].mean(0)
    assert bool(((mean - brute.mean(0)).abs() < 4 * (var / m).sqrt() + 0.01 * var.sqrt()).all())
    assert int(out["calls"]) == (2 * 5 + (end == "zero")) * (1 + mc)


def test_dpm_solver_2_uq_without_variance_is_the_plain_sampler():
    """With v = 0 the trajectory is plain DPM-Solver-2's, bitwise, and the variance stays 0."""
    from bench.samplers.dpm_solver import sample_dpm_solver_2

    g = GMMOracle(shape=(3,), components=3, cov="full", var_min=0.05, seed=3)
    den = g.load("cpu")

    def exact(x, sigma, cond=None):
        s = sigma.view(-1, 1)
        mu = (x - den(x, sigma, cond)) / s
        return mu, torch.zeros_like(mu)

    sigmas = make_grid({"name": "logsnr"}, g.schedule, 6).to(torch.float64)
    x = NoiseSource(1, range(4)).randn((3,)) * sigmas[0]
    out = dpm_solver_2_uq(exact, x, sigmas, noise=NoiseSource(2, range(4)), mc=3, every=2)
    torch.testing.assert_close(out["sample"], sample_dpm_solver_2(den, x, sigmas), rtol=1e-12,
                               atol=1e-12)
    assert float(out["var"].abs().max()) < 1e-20  # rounding of identical draws only
    torch.testing.assert_close(out["mean"], out["sample"], rtol=1e-12, atol=1e-12)
