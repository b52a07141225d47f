"""The gmm oracle against independent computations: dense linear algebra, autograd of the
mixture log-density (Tweedie's formula), and the VP form of the ODE solution given in the issue."""

import numpy as np
import pytest
import scipy.linalg
import torch

from bench.errors import BenchError
from bench.models.gmm import GMMOracle
from bench.noise import NoiseSource


def _dense_cov(g: GMMOracle, k: int) -> np.ndarray:
    lam = g.lam[k].numpy()
    if g.U is None:
        return np.diag(lam)
    u = g.U[k].numpy()
    return u @ np.diag(lam) @ u.T


@pytest.mark.parametrize("cov", ["diag", "full"])
def test_single_gaussian_denoiser_equals_dense_posterior_mean(cov):
    g = GMMOracle(shape=(6,), cov=cov, var_min=0.01, seed=1)
    x = torch.randn(5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3
    s = torch.tensor([0.1, 0.5, 1.0, 3.0, 80.0], dtype=torch.float64)
    d = g.load()(x, s).numpy()
    sig, mu = _dense_cov(g, 0), g.mu[0].numpy()
    for i in range(5):
        c = sig + s[i].item() ** 2 * np.eye(6)
        expected = mu + sig @ np.linalg.solve(c, x[i].numpy() - mu)
        np.testing.assert_allclose(d[i], expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cov", ["diag", "full"])
def test_mixture_denoiser_satisfies_tweedie(cov):
    """D(x; s) = x + s^2 grad log p_s(x), with p_s built by torch.distributions."""
    g = GMMOracle(shape=(4,), cov=cov, components=3, var_min=0.05, mean_std=2.0, seed=2)
    x = torch.randn(7, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2
    s = 0.7
    covs = torch.stack([torch.from_numpy(_dense_cov(g, k)) for k in range(3)]) + s**2 * torch.eye(4, dtype=torch.float64)
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=g.w),
        torch.distributions.MultivariateNormal(g.mu, covariance_matrix=covs))
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(mix.log_prob(xr).sum(), xr)
    expected = x + s**2 * grad
    d = g.load()(x, torch.full((7,), s, dtype=torch.float64))
    torch.testing.assert_close(d, expected, rtol=1e-9, atol=1e-10)


def test_closed_form_solution_matches_vp_formula_of_the_issue():
    """x_0 = mu + Sigma^{1/2} C_T^{-1/2} (x_T - alpha_T mu), C_T = alpha_T^2 Sigma + sigma_T^2 I."""
    g = GMMOracle(shape=(5,), cov="full", var_min=0.02, seed=4)
    sch = g.schedule
    t_T = torch.tensor(1.0, dtype=torch.float64)
    a, sg = float(sch.alpha(t_T)), float(sch.sigma(t_T))
    x_vp = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    sig, mu = _dense_cov(g, 0), g.mu[0].numpy()
    c = a**2 * sig + sg**2 * np.eye(5)
    m = np.real(scipy.linalg.sqrtm(sig)) @ np.linalg.inv(np.real(scipy.linalg.sqrtm(c)))
    expected = mu + (x_vp.numpy() - a * mu) @ m.T
    got = g.ode_solution(x_vp / a, sch.s_max, 0.0)  # data-scaled frame: x = x_vp / alpha
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-10)


def test_adaptive_solver_agrees_with_closed_form():
    g = GMMOracle(shape=(3,), cov="full", var_min=0.05, seed=5)
    x = NoiseSource(0, range(4)).randn((3,)) * g.schedule.s_max
    exact = g.ode_solution(x, g.schedule.s_max, g.schedule.s_min)
    adaptive = torch.stack([g._adaptive(r, g.schedule.s_max, g.schedule.s_min) for r in x])
    torch.testing.assert_close(adaptive, exact, rtol=1e-8, atol=1e-8)


def test_mixture_truth_is_an_ode_solution_to_zero():
    """Integrating the mixture's ODE to s=0 lands on a point of high data density."""
    g = GMMOracle(shape=(2,), components=2, mean_std=3.0, var_min=0.01, var_max=0.02, seed=0)
    x = NoiseSource(1, range(6)).randn((2,)) * g.schedule.s_max
    x0 = g.ode_solution(x, g.schedule.s_max, 0.0)
    d2 = ((x0[:, None, :] - g.mu[None]) ** 2).sum(-1).min(1).values
    assert bool((d2 < 1.0).all()), d2  # every end point sits near one of the two means


def test_image_shaped_and_explicit_parameters():
    g = GMMOracle(shape=(1, 2, 2), means=[[0, 0, 1, 1], [2, 2, 2, 2]], covs=[0.5, [1, 2, 3, 4]],
                  weights=[1, 3])
    x = torch.zeros(2, 1, 2, 2, dtype=torch.float64)
    assert g.load()(x, torch.ones(2, dtype=torch.float64)).shape == (2, 1, 2, 2)
    assert float(g.w[1]) == pytest.approx(0.75)


@pytest.mark.parametrize("kwargs, field", [
    ({"shape": [0]}, "shape"), ({"cov": "banded"}, "cov"), ({"means": [[0, 0]], "covs": [-1.0]}, "covs"),
    ({"means": [[0, 0], [1, 1]], "weights": [1]}, "weights"), ({"truth_rtol": 1e-6}, "truth_rtol")])
def test_bad_parameters_name_the_field(kwargs, field):
    with pytest.raises(BenchError, match=field):
        GMMOracle(**{"shape": [2], **kwargs})
