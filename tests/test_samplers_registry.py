"""Every registered sampler, called by name with the same arguments: counted NFE equals the
accounting the suite planner uses, and results do not depend on the batch size (per-sample
noise streams), including every stochastic configuration."""

from __future__ import annotations

import inspect

import pytest
import torch

import bench.samplers  # noqa: F401  (registration)
from bench.denoiser import CountingDenoiser
from bench.models.gmm import GMMOracle
from bench.noise import NoiseSource
from bench.registry import SAMPLERS
from bench.samplers import nfe_for_steps, sampler_info
from bench.samplers.base import sampler_grid
from bench.samplers.schedules import grid_final_zero, make_grid

ORACLE = GMMOracle(shape=(1, 4, 4), cov="full", var_min=0.05, seed=1)  # bit-exact batch invariance
CONSISTENCY = GMMOracle(shape=(1, 4, 4), cov="full", var_min=0.05, parameterisation="consistency",
                        consistency_sigma_min=0.002)
NAMES = SAMPLERS.names()
#: extra stochastic configurations of samplers that are deterministic by default
EXTRA = [("ddim", {"eta": 1.0}), ("ddpm", {"variance": "large"}), ("euler", {"s_churn": 20.0}),
         ("heun", {"s_churn": 20.0, "s_tmin": 0.05, "s_tmax": 20.0}), ("euler_ancestral", {"eta": 0.5}),
         ("analytic_dpm", {"eta": 0.0}), ("unipc", {"order": 3, "variant": "bh1"}),
         ("dpm_solver_fast", {"order": 2})]
#: samplers that need a parameter to run at all (their grid takes it from the params)
REQUIRED = {"diffusers": {"scheduler": "DPMSolverMultistepScheduler"}}
#: samplers that run on their own grid only
OWN_GRID = {"diffusers": {"name": "diffusers"}}
GRIDS = [None, {"name": "karras", "final_zero": True}, {"name": "karras", "final_zero": False},
         {"name": "logsnr", "final_zero": True}]


class ToyBayesian:
    """The oracle with a known last-layer posterior, for BayesDiff's samplers: the noise
    prediction is ``(1 + w) eps_oracle`` with ``w ~ N(0, 0.04)`` per element."""

    def __init__(self, inner) -> None:
        self.inner, self.schedule, self.seen = inner, inner.schedule, []

    def __getattr__(self, name: str):
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __call__(self, x, sigma, cond=None):
        return self.inner(x, sigma, cond)

    def eps_moments(self, x, sigma, cond=None):  # unconditional: records the cond it is given
        self.seen.append(cond)
        mu = (x - self.inner(x, sigma)) / sigma.view(-1, *([1] * (x.ndim - 1)))
        return mu, 0.04 * mu * mu


def _model(name: str):
    if name.startswith("bayesdiff"):
        return ToyBayesian(ORACLE.load())
    return (CONSISTENCY if name == "consistency" else ORACLE).load()


def _run(name: str, params: dict, grid: dict, steps: int, indices, seed: int = 5,
         step_seed: int | None = None):
    """Initial noise from stream ``seed``; step noise from the same stream, or ``step_seed``."""
    den = CountingDenoiser(_model(name))
    params = {**REQUIRED.get(name, {}), **params}
    sigmas = make_grid(sampler_grid(name, params, grid), den.schedule, steps)
    noise = NoiseSource(seed, indices)
    x = noise.randn((1, 4, 4)) * sigmas[0]
    if step_seed is not None:
        noise = NoiseSource(step_seed, indices)
    calls = []
    out = SAMPLERS.get(name)(den, x, sigmas, noise=noise, callback=calls.append, **params)
    out = out[0] if isinstance(out, tuple) else out  # (samples, per-sample extras)
    return out, den.nfe, calls


def test_every_sampler_has_the_one_signature_and_documents_its_paper() -> None:
    for name in NAMES:
        fn = SAMPLERS.get(name)
        sig = inspect.signature(fn)
        params = list(sig.parameters.values())
        assert [p.name for p in params[:4]] == ["model", "x", "sigmas", "cond"], name
        assert sig.parameters["cond"].kind is inspect.Parameter.KEYWORD_ONLY, name
        assert sig.parameters["cond"].default is None, name
        assert "cond" not in SAMPLERS.entry(name).params(), name  # not a suite param
        assert sig.parameters["noise"].kind is inspect.Parameter.KEYWORD_ONLY, name
        assert sig.parameters["callback"].kind is inspect.Parameter.KEYWORD_ONLY, name
        for p in params[3:]:
            assert p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not p.empty, (name, p)
        info = sampler_info(name)
        assert info.paper and fn.__module__.startswith("bench.samplers"), name
        doc = inspect.getdoc(inspect.getmodule(fn)) or ""
        assert any(w in doc for w in ("et al.", "k-diffusion")), name  # cites the paper


@pytest.mark.parametrize("name", NAMES)
def test_counted_nfe_equals_reported_nfe(name: str) -> None:
    info = sampler_info(name)
    for grid in GRIDS:
        grid = dict(info.grid) if grid is None else grid
        if name in OWN_GRID:  # runs on the scheduler's own levels only
            grid = OWN_GRID[name]
        if info.grid["name"] == "dpm_fast" and grid["name"] != "dpm_fast":
            grid = {**info.grid, "final_zero": grid.get("final_zero", False)}
        grid = sampler_grid(name, REQUIRED.get(name, {}), grid)
        for steps in (1, 2, 3, 7):
            out, nfe, calls = _run(name, {}, grid, steps, range(4))
            assert nfe == nfe_for_steps(info.evals_per_step, steps, grid_final_zero(grid)), (grid, steps)
            assert torch.isfinite(out).all() and out.shape == (4, 1, 4, 4)
            assert calls and "x" in calls[-1]


CONFIGS = [(n, {}) for n in NAMES] + EXTRA + [
    ("diffusers", {"scheduler": "EulerAncestralDiscreteScheduler"})]
STOCHASTIC_EXTRA = [c for c in CONFIGS[len(NAMES):] if c[0] not in ("unipc", "dpm_solver_fast")]


@pytest.mark.parametrize("name, params", CONFIGS, ids=[f"{n}-{p}" for n, p in CONFIGS])
def test_same_samples_for_batch_sizes_1_5_32(name: str, params: dict) -> None:
    grid = sampler_grid(name, {**REQUIRED.get(name, {}), **params})  # e.g. dpm_fast's order
    full, nfe, _ = _run(name, params, grid, 6, range(32))
    parts = [_run(name, params, grid, 6, range(a, b))[0] for a, b in [(0, 1), (1, 6), (6, 32)]]
    assert torch.equal(torch.cat(parts), full)
    # other step noise from the same start changes exactly the stochastic configurations
    other, _, _ = _run(name, params, grid, 6, range(32), step_seed=6)
    stochastic = sampler_info(name).stochastic or (name, params) in STOCHASTIC_EXTRA
    assert torch.equal(other, full) is not stochastic


def test_stochastic_samplers_without_noise_source_say_how_to_pass_one() -> None:
    den = ORACLE.load()
    sigmas = make_grid({"name": "karras"}, den.schedule, 4)
    x = torch.ones(2, 1, 4, 4) * sigmas[0]
    for name, params in [("ddpm", {}), ("euler", {"s_churn": 10.0}), ("euler_ancestral", {}),
                         ("analytic_dpm", {})]:
        with pytest.raises(ValueError, match=rf"{name}.*NoiseSource"):
            SAMPLERS.get(name)(den, x, sigmas, **params)


@pytest.mark.parametrize("name, params, match", [
    ("ddpm", {"variance": "medium"}, "variance='medium'.*'small', 'large'"),
    ("unipc", {"order": 4}, "order=4.*1, 2 or 3"),
    ("unipc", {"variant": "bh3"}, "variant='bh3'"),
    ("dpmpp_3m", {"d2": "full"}, "d2='full'"),
    ("euler", {"s_churn": -1.0}, "s_churn=-1.0"),
    ("dpm_solver_3", {"r1": 0.7, "r2": 0.5}, "r1=0.7, r2=0.5"),
    ("analytic_dpm", {"eta": 2.0}, "eta=2.0"),
    ("consistency", {}, "not consistency-parameterised.*parameterisation: consistency"),
])
def test_bad_params_name_param_value_and_fix(name: str, params: dict, match: str) -> None:
    den = ORACLE.load()
    sigmas = make_grid(sampler_info(name).grid, den.schedule, 3)
    noise = NoiseSource(0, range(2))
    with pytest.raises(ValueError, match=match):
        SAMPLERS.get(name)(den, noise.randn((1, 4, 4)) * sigmas[0], sigmas, noise=noise, **params)


class CondRecorder:
    """A denoiser wrapper that records the ``cond`` of every call (and ignores it)."""

    def __init__(self, inner) -> None:
        self.inner, self.schedule, self.conds = inner, inner.schedule, []

    def __getattr__(self, name: str):
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def uncounted(self):  # precomputations (Analytic-DPM's Gamma) are unconditional
        return self.inner

    def __call__(self, x, sigma, cond=None):
        self.conds.append(cond)
        return self.inner(x, sigma)

    def eps_moments(self, x, sigma, cond=None):  # BayesDiff's trajectory evaluations
        self.conds.append(cond)
        return self.inner.eps_moments(x, sigma, cond)


@pytest.mark.parametrize("name, params", CONFIGS, ids=[f"{n}-{p}" for n, p in CONFIGS])
def test_every_model_call_receives_the_cond_passed_to_the_sampler(name: str, params: dict) -> None:
    params = {**REQUIRED.get(name, {}), **params}
    info = sampler_info(name)
    grid = sampler_grid(name, params)
    marker = object()
    for steps in (1, 4):
        model = CondRecorder(_model(name))
        sigmas = make_grid(grid, model.schedule, steps)
        noise = NoiseSource(0, range(3))
        out = SAMPLERS.get(name)(model, noise.randn((1, 4, 4)) * sigmas[0], sigmas, cond=marker,
                                 noise=noise, **params)
        out = out[0] if isinstance(out, tuple) else out
        assert torch.isfinite(out).all()
        assert len(model.conds) == nfe_for_steps(info.evals_per_step, steps, grid_final_zero(grid))
        dropped = [i for i, c in enumerate(model.conds) if c is not marker]
        assert not dropped, f"{name}: model calls {dropped} of {len(model.conds)} got no cond"
        draws = getattr(model.inner, "seen", [])  # BayesDiff's Monte Carlo passes as well
        assert all(c is marker for c in draws), f"{name}: a Monte Carlo pass got no cond"
