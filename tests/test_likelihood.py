"""bench.likelihood against the exact Gaussian-mixture oracle: the ODE likelihood equals the
closed-form log-density, the variational bound with exact reverse kernels equals the true NLL
(Bao et al. 2022), and per-sample results do not depend on the batch."""

import math

import numpy as np
import pytest
import scipy.stats
import torch

from bench.denoiser import CountingDenoiser
from bench.likelihood import (bpd_8bit, dequantize, discretized_gaussian_log_prob, ode_nll,
                              timesteps, vlb, vlb_variances)
from bench.metrics.base import mean_ci
from bench.models.gmm import GMMOracle
from bench.noise import NoiseSource
from bench.samplers.schedules import LinearVP

V = 0.3  # variance of the isotropic Gaussian data


def _mixture(d: int = 3) -> GMMOracle:
    return GMMOracle(shape=(d,), components=3, cov="full", var_min=0.05, seed=3)


def _gaussian() -> GMMOracle:
    return GMMOracle(shape=(4,), means=[[0.5, -0.3, 0.2, 0.1]], covs=[V])


def _exact_gamma(s: torch.Tensor) -> torch.Tensor:
    """G(s) = E||E[eps | x]||^2 / d = s^2 / (v + s^2) for N(mu, v I) data."""
    return s**2 / (V + s**2)


def _noisy(g: GMMOracle, n: int, s: float, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = g.sample_data(n, gen)
    return x + s * torch.randn(x.shape, generator=gen, dtype=torch.float64)


def _se(values: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error (the 95% half-width of mean_ci over 1.96)."""
    m, lo, hi = mean_ci(values.numpy())
    return m, (hi - lo) / 2 / 1.96


# ------------------------------------------------------------------------------ log-density

def test_log_density_equals_scipy_for_a_full_covariance_mixture():
    g = _mixture(3)
    x = _noisy(g, 6, 0.5, seed=1)
    covs = [g.U[k].numpy() @ np.diag(g.lam[k].numpy()) @ g.U[k].numpy().T for k in range(3)]
    s = torch.tensor([0.0, 0.1, 0.4, 1.0, 3.0, 20.0], dtype=torch.float64)
    for k_only in (None, 1):
        got = g.log_density(x, s, cond=k_only).numpy()
        for i in range(6):
            c = [cv + s[i].item() ** 2 * np.eye(3) for cv in covs]
            dens = [scipy.stats.multivariate_normal(g.mu[k].numpy(), c[k]).pdf(x[i].numpy())
                    for k in range(3)]
            expected = dens[1] if k_only == 1 else sum(g.w[k].item() * dens[k] for k in range(3))
            assert got[i] == pytest.approx(math.log(expected), rel=1e-10, abs=1e-10)
    per_sample = torch.full((6,), 0.4, dtype=torch.float64)
    torch.testing.assert_close(g.log_density(x, 0.4), g.log_density(x, per_sample), rtol=0, atol=0)


# ------------------------------------------------------------------------------ ODE likelihood

def test_ode_exact_divergence_equals_the_closed_form_nll():
    """Measured (n = 200, steps = 100, d = 3): |mean(nll + log p_{s_min}(x))| = 2.7e-4 nats,
    dominated by the prior mismatch N(0, 1 + s_max^2) vs the true p_{s_max} (up to ~0.02 nats
    per sample, mean ~0); the integral itself (delta_logp against the exact
    log p_{s_min}(x) - log p_{s_max}(x(s_max)), x(s_max) from the oracle's DOP853 solve) is off
    by at most 5.4e-7 nats on the 8 rows checked (RK4; second-order weights would give 1.2e-5)."""
    g = _mixture(3)
    sch, steps = g.schedule, 100
    x = _noisy(g, 200, sch.s_min)
    counted = CountingDenoiser(g.load("cpu"))
    r = ode_nll(counted, sch, x, method="exact", steps=steps)
    assert r["nfe"] == 4 * steps == counted.nfe
    err = r["nll"] + g.log_density(x, sch.s_min)
    assert abs(float(err.mean())) < 2e-3
    assert float(err.abs().max()) < 0.05
    assert torch.allclose(r["bpd"], r["nll"] / (3 * math.log(2)), rtol=1e-15, atol=0)
    rows = x[:8]
    x_end = g.ode_solution(rows, sch.s_min, sch.s_max)
    exact = g.log_density(rows, sch.s_min) - g.log_density(x_end, sch.s_max)
    assert float((r["delta_logp"][:8] - exact).abs().max()) < 2e-6


def test_hutchinson_is_unbiased_and_its_spread_shrinks_with_probes():
    """The x path does not depend on the probes, so hutchinson - exact has mean 0 per sample.
    Measured (n = 200): std 1.25 nats with 1 probe, 0.44 with 8 (1/sqrt(8) = 0.35)."""
    g = _mixture(3)
    sch, n = g.schedule, 200
    x = _noisy(g, n, sch.s_min)
    den = g.load("cpu")
    exact = ode_nll(den, sch, x, method="exact", steps=20)["nll"]
    spread = {}
    for probes in (1, 8):
        r = ode_nll(den, sch, x, method="hutchinson", probes=probes, steps=20,
                    noise=NoiseSource(5, range(n)))
        diff = r["nll"] - exact
        m, se = _se(diff)
        assert abs(m) < 4 * se, (probes, m, se)
        spread[probes] = float(diff.std())
    assert spread[1] > 0.3
    assert spread[8] < 0.6 * spread[1]


# --------------------------------------------------------------------------- variational bound

@pytest.mark.parametrize("steps, n", [(5, 2000), (1000, 400)])
def test_vlb_with_exact_kernels_equals_the_true_nll(steps, n):
    """For N(mu, v I) data and the exact G, the analytic variance makes every reverse kernel
    the true q(x_{tau_{k-1}} | x_{tau_k}), so E[bound] = -log p_0(x0) for any K, up to the prior
    mismatch (mean prior term 3e-5 nats). Measured: mean gap 0.048 +- 0.075 (K = 5, n = 2000),
    -0.007 +- 0.196 (K = 1000, n = 400), 95% half-widths of a true NLL of 3.3 nats."""
    g = _gaussian()
    x0 = g.sample_data(n, torch.Generator().manual_seed(1))
    r = vlb(g.load("cpu"), g.schedule, x0, steps=steps, variance="analytic",
            noise=NoiseSource(7, range(n)), gamma=_exact_gamma)
    m, se = _se(r["nll"] + g.log_density(x0, 0.0))
    assert se < 0.12
    assert abs(m) < 4 * se + 1e-3
    torch.testing.assert_close(r["nll"], r["prior"] + r["kl"] + r["decoder"], rtol=0, atol=0)
    assert float(r["prior"].mean()) < 1e-4


def _paired_gaps(g: GMMOracle, n: int, gamma) -> tuple[dict, torch.Tensor]:
    x0 = g.sample_data(n, torch.Generator().manual_seed(2))
    den = g.load("cpu")
    nll = {v: vlb(den, g.schedule, x0, steps=10, variance=v, noise=NoiseSource(7, range(n)),
                  gamma=gamma)["nll"] for v in ("analytic", "beta", "beta_tilde")}
    return nll, -g.log_density(x0, 0.0)


def test_vlb_analytic_variance_beats_beta_and_beta_tilde_at_small_k():
    """Bao et al. 2022, Table 1 shape at K = 10 (same draws, paired): measured beta - analytic
    0.29 [0.22, 0.35] nats, beta_tilde - analytic ~2000 nats (n = 300)."""
    nll, _ = _paired_gaps(_gaussian(), 300, _exact_gamma)
    for v in ("beta", "beta_tilde"):
        assert mean_ci((nll[v] - nll["analytic"]).numpy())[1] > 0, v


def test_vlb_analytic_with_monte_carlo_gamma_on_a_mixture():
    """estimate_gamma on a 3-component mixture, K = 10, n = 400: measured analytic - true NLL
    0.91 [0.64, 1.17], beta - analytic 0.23 [0.16, 0.29], beta_tilde - analytic ~1800 nats."""
    nll, true = _paired_gaps(_mixture(4), 400, None)
    assert mean_ci((nll["analytic"] - true).numpy())[1] > 0  # a bound, and not exact here
    for v in ("beta", "beta_tilde"):
        assert mean_ci((nll[v] - nll["analytic"]).numpy())[1] > 0, v


def test_timesteps_are_the_rounded_linspace():
    assert timesteps(1000, 2).tolist() == [1, 1000]
    assert timesteps(1000, 4).tolist() == [1, 334, 667, 1000]
    assert timesteps(1000, 1000).tolist() == list(range(1, 1001))


# --------------------------------------------------------------------------- batch invariance

def _in_batches(fn, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    whole = fn(x, NoiseSource(seed, range(len(x))))["nll"]
    parts = torch.cat([fn(x[a:b], NoiseSource(seed, range(a, b)))["nll"]
                       for a, b in ((0, 5), (5, 6), (6, len(x)))])
    return whole, parts


@pytest.mark.parametrize("method", ["exact", "hutchinson"])
def test_ode_nll_per_sample_is_bitwise_batch_independent(method):
    g = _mixture(3)
    den, sch = g.load("cpu"), g.schedule
    whole, parts = _in_batches(lambda x, nz: ode_nll(den, sch, x, method=method, probes=2,
                                                     steps=10, noise=nz), _noisy(g, 13, 0.1), 3)
    assert torch.equal(whole, parts)


def test_vlb_per_sample_is_bitwise_batch_independent():
    g = _mixture(3)
    den, sch = g.load("cpu"), g.schedule
    x0 = g.sample_data(13, torch.Generator().manual_seed(4))
    whole, parts = _in_batches(lambda x, nz: vlb(den, sch, x, steps=10, variance="analytic",
                                                 noise=nz), x0, 3)
    assert torch.equal(whole, parts)


# ---------------------------------------------------------------------- discretized decoder

@pytest.mark.parametrize("std", [0.004, 0.05, 0.7, 3.0])
def test_discretized_decoder_bins_sum_to_one_and_match_scipy(std):
    grid = torch.arange(256, dtype=torch.float64) * 2 / 255 - 1
    mean = torch.full_like(grid, 0.137)
    lp = discretized_gaussian_log_prob(grid, mean, torch.tensor(std, dtype=torch.float64))
    p = lp.exp().numpy()
    assert abs(p.sum() - 1) < 1e-6
    x = grid.numpy()
    cdf = scipy.stats.norm(0.137, std).cdf
    expected = cdf(x + 1 / 255) - cdf(x - 1 / 255)
    expected[0], expected[-1] = cdf(x[0] + 1 / 255), 1 - cdf(x[-1] - 1 / 255)
    np.testing.assert_allclose(p, expected, rtol=1e-9, atol=1e-14)
    far = discretized_gaussian_log_prob(grid, torch.full_like(grid, -1.0), torch.tensor(0.004))
    assert torch.isfinite(far).all()  # log space: the far tail is not clamped to log 0


def test_vlb_discretized_decoder_on_8_bit_data():
    g = GMMOracle(shape=(4,), means=[[0.2, -0.1, 0.0, 0.3]], covs=[0.05])
    data = g.sample_data(50, torch.Generator().manual_seed(5))
    x0 = ((data.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1  # on the 256 levels
    r = vlb(g.load("cpu"), g.schedule, x0, steps=10, variance="beta", decoder="discretized",
            noise=NoiseSource(1, range(50)))
    assert torch.isfinite(r["decoder"]).all() and (r["decoder"] >= 0).all()  # -log P, P <= 1
    torch.testing.assert_close(r["bpd"], r["nll"] / (4 * math.log(2)), rtol=0, atol=0)


# --------------------------------------------------------------------------------- 8-bit data

def test_dequantize_stays_in_the_bins_and_bpd_8bit_adds_seven():
    images = torch.randint(0, 256, (6, 1, 2, 2), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    x = dequantize(images, NoiseSource(2, range(6)))
    assert x.dtype == torch.float64 and x.min() >= -1 and x.max() <= 1
    assert torch.equal(torch.floor((x + 1) * 128).to(torch.uint8), images)
    assert torch.equal(dequantize(images[2:4], NoiseSource(2, [2, 3])), x[2:4])
    nll = torch.tensor([100.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(bpd_8bit(nll, 4), nll / (4 * math.log(2)) + 7)


# ------------------------------------------------------------------------------- bad input

def test_bad_input_is_refused_with_clear_messages():
    g = _gaussian()
    den, sch = g.load("cpu"), g.schedule
    x = g.sample_data(2, torch.Generator().manual_seed(0))
    nz = NoiseSource(0, range(2))
    with pytest.raises(ValueError, match=r"variance='optimal'.*beta, beta_tilde, analytic"):
        vlb(den, sch, x, steps=10, variance="optimal", noise=nz)
    with pytest.raises(ValueError, match=r"decoder='logistic'.*gaussian, discretized"):
        vlb(den, sch, x, steps=10, variance="beta", decoder="logistic", noise=nz)
    for k in (1, 1001):
        with pytest.raises(ValueError, match=rf"steps={k} .*\[2, 1000\]"):
            vlb(den, sch, x, steps=k, variance="beta", noise=nz)
    with pytest.raises(ValueError, match="DiscreteVP"):
        vlb(den, LinearVP(), x, steps=10, variance="beta", noise=nz)
    with pytest.raises(ValueError, match=r"method='trace'.*exact, hutchinson"):
        ode_nll(den, sch, x, method="trace", noise=nz)
    with pytest.raises(ValueError, match="probes=0"):
        ode_nll(den, sch, x, probes=0, noise=nz)
    with pytest.raises(ValueError, match="steps=0"):
        ode_nll(den, sch, x, steps=0, noise=nz)
    with pytest.raises(ValueError, match="NoiseSource"):
        ode_nll(den, sch, x)
    with pytest.raises(ValueError, match="s_start"):
        ode_nll(den, sch, x, noise=nz, s_start=2.0, s_end=1.0)
    big = GMMOracle(shape=(65,))
    with pytest.raises(ValueError, match=r"d = 65.*hutchinson"):
        ode_nll(big.load("cpu"), big.schedule, big.sample_data(2), method="exact")
    with pytest.raises(ValueError, match="cond=3"):
        g.log_density(x, 0.0, cond=3)
    with pytest.raises(ValueError, match="uint8"):
        dequantize(x, nz)


def test_vlb_variances_equal_separate_bounds_from_the_same_draws():
    """One pass for several variances gives each variance's bound bitwise (same draws)."""
    g = _mixture(3)
    den, sch = g.load("cpu"), g.schedule
    x0 = g.sample_data(9, torch.Generator().manual_seed(6))
    together = vlb_variances(den, sch, x0, steps=7, variances=("beta", "analytic"),
                             noise=NoiseSource(2, range(9)), gamma=_exact_gamma)
    for v in ("beta", "analytic"):
        alone = vlb(den, sch, x0, steps=7, variance=v, noise=NoiseSource(2, range(9)),
                    gamma=_exact_gamma)
        for k in ("nll", "kl", "decoder", "prior"):
            assert torch.equal(together[v][k], alone[k]), (v, k)
    assert not torch.equal(together["beta"]["nll"], together["analytic"]["nll"])
    with pytest.raises(ValueError, match="give a list"):
        vlb_variances(den, sch, x0, steps=7, variances="beta", noise=NoiseSource(2, range(9)))


def test_gamma_from_data_equals_the_exact_g_on_gaussian_data():
    """G(s) = s^2 / (v + s^2) for N(mu, v I) data; 4000 samples x 4 dims: within 3%."""
    from bench.likelihood import gamma_from_data

    g = _gaussian()
    x0 = g.sample_data(4000, torch.Generator().manual_seed(8))
    levels = torch.tensor([0.1, 0.5, 2.0, 10.0], dtype=torch.float64)
    got = gamma_from_data(g.load("cpu"), levels, x0, seed=3, batch_size=1000)
    torch.testing.assert_close(got, _exact_gamma(levels), rtol=0.03, atol=0)
