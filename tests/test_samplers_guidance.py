"""Classifier-free guidance at the Denoiser layer, and its NFE / network-call counting."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import bench.samplers  # noqa: F401  (registration)
from bench.denoiser import CountingDenoiser
from bench.guidance import GuidedDenoiser
from bench.models.gmm import GMMOracle
from bench.noise import NoiseSource
from bench.registry import SAMPLERS
from bench.samplers.schedules import make_grid

MIX = dict(shape=(1, 2, 2), cov="full", var_min=0.05, components=2, mean_std=2.0, seed=5)


def test_guided_denoiser_is_ho_salimans_eq6_and_batching_only_changes_network_calls() -> None:
    den = GMMOracle(**MIX).load()
    x = torch.randn(6, 1, 2, 2, dtype=torch.float64) * 3
    s = torch.full((6,), 2.5, dtype=torch.float64)
    d_u, d_c = den(x, s), den(x, s, 1)
    expected = d_u + 3.0 * (d_c - d_u)
    # eps form of the paper: (1 + w') eps_c - w' eps_u with w = 1 + w'
    eps = 3.0 * (x - d_c) / 2.5 - 2.0 * (x - d_u) / 2.5
    assert torch.allclose(expected, x - 2.5 * eps)
    for batched, calls in [(True, 1), (False, 2)]:
        g = CountingDenoiser(GuidedDenoiser(den, scale=3.0, cond=1, uncond=-1, batched=batched))
        assert torch.allclose(g(x, s), expected, atol=1e-12)
        g(x, s)
        assert g.nfe == 2 and g.network_calls == 2 * calls
        g.reset()
        assert g.network_calls == 0


def test_scale_one_is_the_exact_conditional_ode() -> None:
    """w = 1 samples component k alone, whose PF-ODE solution is closed form."""
    oracle = GMMOracle(**MIX, guidance={"scale": 1.0, "cond": 1})
    errs = []
    for nfe in (10, 20, 40):
        sigmas = make_grid({"name": "logsnr"}, oracle.schedule, nfe)
        noise = NoiseSource(0, range(8))
        x = noise.randn(oracle.sample_shape()) * sigmas[0]
        out = SAMPLERS.get("dpmpp_2m")(oracle.load(), x, sigmas)
        truth = oracle._closed_form(x.flatten(1), float(sigmas[0]), float(sigmas[-1]), 1)
        errs.append(float((out.flatten(1) - truth).abs().max()))
    assert errs[0] > errs[1] > errs[2] and errs[2] < errs[0] / 8  # second order: ~4x per doubling


def test_guided_truth_is_the_limit_of_the_guided_samplers() -> None:
    oracle = GMMOracle(**MIX, guidance={"scale": 2.5, "cond": 0})
    den = oracle.load()
    noise = NoiseSource(0, range(4))
    z = noise.randn(oracle.sample_shape())
    errs = []
    for nfe in (10, 40):
        sigmas = make_grid({"name": "logsnr"}, oracle.schedule, nfe)
        out = SAMPLERS.get("dpmpp_2m")(den, z * sigmas[0], sigmas)
        errs.append(float((out - oracle.ode_solution(z * sigmas[0], float(sigmas[0]),
                                                     float(sigmas[-1]))).abs().max()))
    assert errs[1] < errs[0] / 8  # 4x the NFE of a second-order solver: ~16x smaller
    unguided = GMMOracle(**MIX).ode_solution(z * sigmas[0], float(sigmas[0]), float(sigmas[-1]))
    assert float((out - unguided).abs().max()) > 100 * errs[1]  # guidance really changed the ODE


@pytest.mark.parametrize("batched", [True, False])
def test_suite_counts_nfe_once_per_guided_evaluation_and_network_calls_separately(
        cli, write_suite, tmp_path, batched: bool) -> None:
    suite = {"name": "cfg", "seed": 0, "samples": 4, "batch_size": 2, "nfe": [6],
             "models": [{"name": "gmm", "label": "g",
                         "params": {**{k: list(v) if isinstance(v, tuple) else v
                                       for k, v in MIX.items()},
                                    "guidance": {"scale": 2.0, "cond": 1, "batched": batched}}}],
             "samplers": ["dpmpp_2m"], "evals": ["nfe_curve"], "executor": {"name": "debug"}}
    code, out, err = cli("run", write_suite(suite), "--results", tmp_path / "r")
    assert code == 0, out + err
    rows = pd.read_parquet(tmp_path / "r")
    assert (rows["nfe_counted"] == 6).all()
    assert (rows["network_calls"] == (6 if batched else 12)).all()
