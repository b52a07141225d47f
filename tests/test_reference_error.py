"""ref_rmse: each sample against a high-accuracy solve of the same model's PF-ODE. On the
oracle the reference solve converges to the exact ODE solution, so ref_rmse must agree with
oracle_rmse; the solve is cached per sample and shared by every sampler and NFE."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.metrics.reference import reference_grid
from bench.report import load_results
from bench.store import read_samples
from conftest import small_suite

GMM = {"name": "gmm", "label": "g", "params": {"shape": [2, 2], "cov": "full", "var_min": 0.05}}


def ref_suite(**over) -> dict:
    ev = {"name": "nfe_curve", "params": {"metrics": [
        "oracle_rmse", {"name": "ref_rmse", "params": {"ref_nfe": 300}}]}}
    return small_suite(**{"name": "ref", "samples": 16, "nfe": [6, 12], "models": [GMM],
                          "samplers": ["ddim", "dpm_solver_2"], "evals": [ev], **over})


def test_ref_rmse_agrees_with_the_oracle_error_and_is_cached_per_sample(cli, write_suite, tmp_path):
    res = tmp_path / "res"
    code, _, err = cli("run", write_suite(ref_suite()), "--results", res)
    assert code == 0, err
    samples = read_samples(res)
    assert samples["ref_rmse"].notna().all() and len(samples) == 4 * 16
    # the reference (DPM-Solver-3, NFE 300) is ~1e-6 from the exact solution, far below the
    # samplers' errors (1e-3 .. 1e-1), so the two per-sample errors agree to 1e-3 relative
    np.testing.assert_allclose(samples["ref_rmse"], samples["rmse"], rtol=1e-3, atol=1e-7)
    assert (samples["rmse"] > 1e-4).all()
    files = sorted((res).rglob("refsolve/*.npz"))
    assert len(files) == 16  # one solve per sample, shared by 2 samplers x 2 NFE
    rows = load_results(res)
    assert set(rows.loc[rows["metric"] == "ref_rmse", "sampler"]) == {"ddim", "dpm_solver_2"}

    # a new sampler reuses every cached solve: no new file, and the model is not rerun for it
    stamps = {f: f.stat().st_mtime_ns for f in files}
    code, _, err = cli("run", write_suite(ref_suite(samplers=["ddim", "dpm_solver_2", "dpmpp_2m"]),
                                          "b.yaml"), "--results", res)
    assert code == 0, err
    assert {f: f.stat().st_mtime_ns for f in sorted(res.rglob("refsolve/*.npz"))} == stamps


def test_the_reference_itself_converges_at_its_order():
    """DPM-Solver-3 on the oracle: ref_rmse of the reference sampler at lower NFE against the
    exact solution falls about 8x per doubling (order 3)."""
    from bench.generate import LoadedModel, SamplerSpec, generate, solve_from

    lm = LoadedModel.load({"name": "gmm", "params": GMM["params"]}, torch.device("cpu"))
    gen = generate(lm, SamplerSpec("ddim", {}, {"name": "time_uniform"}, 4), np.arange(8), 0)
    truth = lm.adapter.ode_solution(gen.x_start, float(gen.sigmas[0]), float(gen.sigmas[-1]))
    sched = lm.denoiser.schedule
    for kind in ("time_uniform", "logsnr"):
        err = [float((solve_from(lm, "dpm_solver_3", {}, gen.x_start,
                                 reference_grid(gen.sigmas, n, sched, kind))
                      - truth).pow(2).mean().sqrt()) for n in (40, 80, 160)]
        assert err[0] / err[1] > 5 and err[1] / err[2] > 5, (kind, err)


@pytest.mark.parametrize("kind", ["time_uniform", "logsnr"])
def test_reference_grid_keeps_the_end_points_and_a_final_denoising_step(kind):
    from bench.samplers.schedules import make_schedule

    sched = make_schedule("discrete")
    sig = torch.tensor([80.0, 5.0, 0.5, 0.02, 0.0], dtype=torch.float64)
    g = reference_grid(sig, 10, sched, kind)
    assert len(g) == 12 and float(g[0]) == 80.0 and float(g[-2]) == 0.02 and float(g[-1]) == 0.0
    assert bool((g[:-1].diff() < 0).all())
    even = -torch.log(g[:-1]) if kind == "logsnr" else sched.t_of_s(g[:-1])
    assert torch.allclose(even.diff(), even.diff()[0].expand(10), rtol=1e-6)
    g2 = reference_grid(sig[:-1], 10, sched, kind)
    assert len(g2) == 11 and float(g2[-1]) == 0.02


@pytest.mark.parametrize("params, field", [
    ({"ref_sampler": "ddpm"}, "ref_sampler"),          # stochastic: no ODE solution
    ({"ref_sampler": "no_such"}, "ref_sampler"),
    ({"ref_nfe": 0}, "ref_nfe"),
    ({"ref_nfe": "many"}, "ref_nfe"),
    ({"ref_params": [1]}, "ref_params"),
    ({"ref_steps": 10}, "ref_steps"),
    ({"ref_grid": "karras"}, "ref_grid"),
])
def test_bad_reference_settings_fail_plan(cli, write_suite, params, field):
    suite = ref_suite()
    suite["evals"][0]["params"]["metrics"][1]["params"] = params
    code, _, err = cli("plan", write_suite(suite))
    assert code == 2 and field in err, err
