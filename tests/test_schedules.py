"""VP schedules and grids against the formulas of DDPM / DPM-Solver / EDM."""

import math

import numpy as np
import pytest
import torch

from bench.samplers.schedules import DiscreteVP, LinearVP, karras, logsnr, time_quadratic, time_uniform


def test_discrete_schedule_matches_ddpm_alphas_cumprod_at_grid_points():
    sch = DiscreteVP()
    betas = np.linspace(1e-4, 0.02, 1000)
    alphas_cumprod = np.cumprod(1 - betas)  # DDPM's \bar alpha_n, computed independently
    n = np.array([0, 1, 10, 499, 999])
    t = (n + 1) / 1000  # dpm-solver's convention t_n = (n + 1) / N
    alpha = sch.alpha(torch.tensor(t)).numpy()
    np.testing.assert_allclose(alpha**2, alphas_cumprod[n], rtol=1e-12)
    assert sch.t_eps == pytest.approx(1e-3)
    # s_max = sigma/alpha at t = 1 = sqrt(1 / alphas_cumprod[-1] - 1)
    assert sch.s_max == pytest.approx(math.sqrt(1 / alphas_cumprod[-1] - 1), rel=1e-12)


def test_discrete_log_alpha_is_linear_between_grid_points():
    sch = DiscreteVP()
    t0, t1 = 0.5, 0.501
    mid = sch.log_alpha((t0 + t1) / 2)
    ends = sch.log_alpha(torch.tensor([t0, t1], dtype=torch.float64))
    assert float(mid) == pytest.approx(float(ends.mean()), abs=1e-15)


@pytest.mark.parametrize("sch", [DiscreteVP(), LinearVP()], ids=["discrete", "linear"])
def test_inverse_lambda_roundtrip(sch):
    t = torch.linspace(sch.t_eps, 1.0, 97, dtype=torch.float64)
    np.testing.assert_allclose(sch.inverse_lambda(sch.lambda_(t)).numpy(), t.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(sch.t_of_s(sch.s_of_t(t)).numpy(), t.numpy(), rtol=1e-9, atol=1e-12)


def test_linear_vp_log_alpha_formula():
    sch = LinearVP(beta_0=0.1, beta_1=20.0)
    t = 0.37
    # Song et al. 2021: log alpha_t = -1/4 t^2 (b1 - b0) - 1/2 t b0
    expected = -0.25 * t**2 * 19.9 - 0.5 * t * 0.1
    assert float(sch.log_alpha(t)) == pytest.approx(expected, rel=1e-14)
    assert float(sch.alpha(t) ** 2 + sch.sigma(t) ** 2) == pytest.approx(1.0, rel=1e-14)


def test_karras_grid_matches_edm_formula():
    sch = DiscreteVP()
    g = karras(sch, 5, rho=7.0, sigma_min=0.002, sigma_max=80.0)
    i = np.arange(5)
    expected = (80 ** (1 / 7) + i / 4 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    np.testing.assert_allclose(g[:-1].numpy(), expected, rtol=1e-13)
    assert g[-1] == 0 and len(g) == 6
    assert len(karras(sch, 5, final_zero=False)) == 6


@pytest.mark.parametrize("grid", [time_uniform, logsnr, time_quadratic])
def test_vp_grids_span_T_to_t_end(grid):
    sch = DiscreteVP()
    g = grid(sch, 7)
    assert len(g) == 8 and torch.all(g[1:] < g[:-1])
    assert float(g[0]) == pytest.approx(sch.s_max, rel=1e-12)
    assert float(g[-1]) == pytest.approx(sch.s_min, rel=1e-9)


def test_logsnr_grid_is_uniform_in_lambda():
    g = logsnr(LinearVP(), 6)
    lam = -torch.log(g)
    steps = lam[1:] - lam[:-1]
    np.testing.assert_allclose(steps.numpy(), np.full(6, float(steps[0])), rtol=1e-10)
