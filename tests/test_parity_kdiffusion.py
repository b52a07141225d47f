"""Agreement with k-diffusion's samplers on the same model, grid and initial noise (float64).

k-diffusion is a test dependency installed without its training/eval dependencies (its package
``__init__`` imports clean-fid, kornia, wandb, ...): ``k_diffusion.sampling`` is imported from the
installed files under a bare package module, which only needs torch, scipy, torchdiffeq, torchsde,
tqdm, Pillow, safetensors and torchvision.
"""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest
import torch

import bench.samplers  # noqa: F401  (registration)
from bench.models.gmm import GMMOracle
from bench.noise import NoiseSource
from bench.registry import SAMPLERS
from bench.samplers.schedules import make_grid

TOL = 1e-4


def load_k_diffusion_sampling() -> types.ModuleType:
    if "k_diffusion.sampling" in sys.modules:
        return sys.modules["k_diffusion.sampling"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("k-diffusion is not installed: pip install --no-deps -c bench/constraints.txt "
                    "k-diffusion (see README, Samplers)")
    if "k_diffusion" not in sys.modules:
        pkg = types.ModuleType("k_diffusion")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["k_diffusion"] = pkg
    import k_diffusion.sampling as sampling  # noqa: E402

    return sampling


K = load_k_diffusion_sampling()
ORACLE = GMMOracle(shape=(1, 4, 4), cov="full", var_min=0.01, components=3, seed=2)
DEN = ORACLE.load()


def model_fn(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return DEN(x, sigma)


def start(sigmas: torch.Tensor, n: int = 8) -> tuple[NoiseSource, torch.Tensor]:
    noise = NoiseSource(11, range(n))
    return noise, noise.randn(ORACLE.sample_shape()) * sigmas[0]


KARRAS = {"name": "karras", "rho": 7.0}


@pytest.mark.parametrize("ours, theirs, params, kparams", [
    ("euler", "sample_euler", {}, {}),
    ("heun", "sample_heun", {}, {}),
    ("dpm_solver_2", "sample_dpm_2", {}, {}),
    ("dpmpp_2m", "sample_dpmpp_2m", {}, {}),
    ("dpmpp_2s", "sample_dpmpp_2s_ancestral", {}, {"eta": 0.0}),
    # k-diffusion's 3M warms up with the Taylor-type second-order step and has no lower-order end
    ("dpmpp_3m", "sample_dpmpp_3m_sde", {"d2": "half", "solver_type": "taylor",
                                         "lower_order_final": False}, {"eta": 0.0}),
])
@pytest.mark.parametrize("steps", [6, 25])
def test_deterministic_samplers_match_k_diffusion(ours, theirs, params, kparams, steps) -> None:
    sigmas = make_grid(KARRAS, DEN.schedule, steps)
    _, x = start(sigmas)
    a = SAMPLERS.get(ours)(DEN, x, sigmas, **params)
    b = getattr(K, theirs)(model_fn, x, sigmas, disable=True, **kparams)
    assert float((a - b).abs().max()) <= TOL
    assert float((a - b).abs().max()) < 1e-10  # float64: agreement is to rounding


@pytest.mark.parametrize("ours, theirs", [("euler", "sample_euler"), ("heun", "sample_heun")])
def test_churn_matches_k_diffusion_with_the_same_noise(monkeypatch, ours, theirs) -> None:
    """EDM Algorithm 2: k-diffusion draws torch.randn_like(x) every step; with churn on every
    step our sampler draws once per step too, so both read the same per-sample streams."""
    sigmas = make_grid(KARRAS, DEN.schedule, 10)
    noise_a, x = start(sigmas)
    noise_b, _ = start(sigmas)
    a = SAMPLERS.get(ours)(DEN, x, sigmas, noise=noise_a, s_churn=5.0, s_noise=1.003)
    monkeypatch.setattr(torch, "randn_like", lambda t, **kw: noise_b.randn_like(t))
    b = getattr(K, theirs)(model_fn, x, sigmas, disable=True, s_churn=5.0, s_noise=1.003)
    monkeypatch.undo()
    assert float((a - b).abs().max()) <= TOL
    assert float((a - x * 0).abs().max()) > 0


def test_euler_ancestral_matches_k_diffusion_with_the_same_noise() -> None:
    sigmas = make_grid(KARRAS, DEN.schedule, 12)
    noise_a, x = start(sigmas)
    noise_b, _ = start(sigmas)
    a = SAMPLERS.get("euler_ancestral")(DEN, x, sigmas, noise=noise_a, eta=0.7)
    b = K.sample_euler_ancestral(model_fn, x, sigmas, disable=True, eta=0.7,
                                 noise_sampler=lambda s, t: noise_b.randn_like(x))
    assert float((a - b).abs().max()) <= TOL


@pytest.fixture
def float64_default():
    """k-diffusion builds some grids with torch.linspace / torch.tensor in the default dtype
    (float32); run it in float64 like everything else here."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("nfe", [5, 6, 10, 12, 20])
def test_dpm_solver_fast_matches_k_diffusion_dpm_fast(nfe: int, float64_default) -> None:
    """Grid dpm_fast (logSNR outer steps) + sampler dpm_solver_fast = sample_dpm_fast."""
    sigmas = make_grid({"name": "dpm_fast", "order": 3}, DEN.schedule, nfe)
    _, x = start(sigmas)
    a = SAMPLERS.get("dpm_solver_fast")(DEN, x, sigmas)
    b = K.sample_dpm_fast(model_fn, x, float(sigmas[-1]), float(sigmas[0]), nfe, disable=True)
    assert float((a - b).abs().max()) <= TOL


@pytest.mark.parametrize("name, step", [("dpm_solver_1", "dpm_solver_1_step"),
                                        ("dpm_solver_2", "dpm_solver_2_step"),
                                        ("dpm_solver_3", "dpm_solver_3_step")])
def test_dpm_solver_singlestep_matches_k_diffusion_dpm_solver_steps(name: str, step: str) -> None:
    sigmas = make_grid({"name": "logsnr"}, DEN.schedule, 7)
    _, x = start(sigmas)
    a = SAMPLERS.get(name)(DEN, x, sigmas)
    solver = K.DPMSolver(model_fn)
    b = x
    for i in range(len(sigmas) - 1):
        b, _ = getattr(solver, step)(b, solver.t(sigmas[i]), solver.t(sigmas[i + 1]))
    assert float((a - b).abs().max()) <= TOL


def test_vp_and_karras_grids_equal_k_diffusion(float64_default) -> None:
    from bench.samplers.schedules import LinearVP

    ours = make_grid({"name": "vp"}, LinearVP(), 10)
    theirs = K.get_sigmas_vp(10, beta_d=19.9, beta_min=0.1, eps_s=1e-3)
    assert torch.allclose(ours, theirs, rtol=1e-10)
    ours = make_grid(KARRAS, DEN.schedule, 10)
    theirs = K.get_sigmas_karras(10, float(ours[-2]), float(ours[0]), rho=7.0)
    assert torch.allclose(ours, theirs, rtol=1e-10)
