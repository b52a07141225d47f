"""A model entry's ``laplace:`` (bench.bayesian_model) and BayesDiff's samplers through the one
generate seam: settings refused before any work, the fit cached by weights and settings, the
guided variance rule, per-sample uncertainty independent of the batch, and the counting of NFE
and network passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.generate import LoadedModel, SamplerSpec, generate

pytestmark = pytest.mark.usefixtures("fmnist")

FIT = {"samples": 16}


def _suite(tmp_path, models: str, sampler: str = "bayesdiff_ddim") -> str:
    p = tmp_path / "s.yaml"
    p.write_text(f"name: s\nnfe: [4]\nsamples: 4\nmodels:\n{models}\nsamplers: [{sampler}]\n"
                 f"evals: [{{name: fidelity, params: {{metrics: [fid], ref: fmnist-test}}}}]\n")
    return str(p)


@pytest.mark.parametrize("entry, where, match", [
    ("{name: gmm, laplace: true}", "models[0].laplace", "no final convolution"),
    ("{name: fmnist-cond, laplace: {samples: 1}}", "models[0].laplace.samples", "at least two"),
    ("{name: fmnist-cond, laplace: {samples: 70000}}", "models[0].laplace.samples", "has only"),
    ("{name: fmnist-cond, laplace: {prior_precision: 0}}", "models[0].laplace.prior_precision",
     "> 0"),
    ("{name: fmnist-cond, laplace: {sample: 10}}", "models[0].laplace.sample", "samples"),
    ("{name: fmnist-cond, laplace: true, calibrate: true}", "models[0]", "both calibrate and "
     "laplace"),
    ("{name: fmnist-t2i, laplace: true}", "models[0].laplace", "latent"),
    ("{name: fmnist-cond}", "models[0]", "no last-layer posterior"),
])
def test_bad_laplace_settings_name_the_field_before_any_work(tmp_path, entry, where, match):
    from bench.errors import SuiteError
    from bench.suite import load_suite

    with pytest.raises(SuiteError, match=match) as info:
        load_suite(_suite(tmp_path, f"  - {entry}"))
    assert where in str(info.value)


def test_default_label_and_settings(tmp_path):
    from bench.suite import load_suite

    suite = load_suite(_suite(tmp_path, "  - fmnist-cond\n  - {name: fmnist-cond, laplace: true}",
                              sampler="ddim"))
    assert [m["label"] for m in suite.models] == ["fmnist-cond", "fmnist-cond-laplace"]
    assert suite.models[1]["laplace"] == {"data": "fmnist-train", "samples": 1000, "seed": 0,
                                          "sigma_noise": 1.0, "prior_precision": 1.0,
                                          "temperature": 1.0}


def test_fit_is_cached_by_weights_and_settings(tmp_path, monkeypatch):
    import bench.bayesian_model as bm

    spec = {"name": "fmnist-cond", "params": {}, "laplace": FIT}
    first = LoadedModel.load(spec, torch.device("cpu"), tmp_path)
    files = list((tmp_path / "laplace").glob("*.npz"))
    assert len(files) == 1

    def no_fit(*a, **k):
        raise AssertionError("refitted although the cache holds the fit")

    monkeypatch.setattr(bm, "fit", no_fit)
    again = LoadedModel.load(spec, torch.device("cpu"), tmp_path)
    assert torch.equal(first.denoiser.moments_of.posterior.weight_var,
                       again.denoiser.moments_of.posterior.weight_var)
    assert first.adapter.describe()["laplace"]["key"] == again.adapter.describe()["laplace"]["key"]
    other = {**spec, "laplace": {**FIT, "prior_precision": 10.0}}
    with pytest.raises(AssertionError, match="refitted"):  # other settings: another fit
        LoadedModel.load(other, torch.device("cpu"), tmp_path)


def test_guided_mean_and_variance_combine_the_branches():
    """Under guidance w the mean is the guided model's own noise prediction and the variance
    (1 - w)^2 v_u + w^2 v_c of the two branches' posterior variances."""
    from bench.denoiser import Cond

    w = 2.5
    guided = LoadedModel.load({"name": "fmnist-cond", "params": {"guidance": {"scale": w}},
                               "laplace": FIT}, torch.device("cpu"))
    den = guided.denoiser
    x = torch.randn(3, 1, 28, 28) * 2.0
    s = torch.full((3,), 2.0)
    cond = guided.encode(_classes([1, 5, 7]))
    mean, var = den.eps_moments(x, s, cond)
    with torch.no_grad():
        eps = (x.double() - den(x, s, cond).double()) / 2.0
    torch.testing.assert_close(mean.double(), eps, rtol=0, atol=1e-4)
    mu_c, v_c = den.moments_of(x, s, Cond(cond.rows))
    mu_u, v_u = den.moments_of(x, s, Cond(cond.null))
    torch.testing.assert_close(var, (1 - w) ** 2 * v_u + w * w * v_c, rtol=1e-5, atol=0)
    assert float(var.mean()) > float(v_c.mean())  # w > 1 widens it


def _classes(labels):
    from bench.conditions import Condition

    return [Condition(id=f"class={c}", label=c) for c in labels]


@pytest.mark.parametrize("name", ["bayesdiff_ddim", "bayesdiff_dpm_solver_2"])
@pytest.mark.parametrize("nfe, every", [(6, 3), (7, 2)])
def test_network_passes_are_known_before_sampling(name, nfe, every):
    """``bench plan``'s count of the passes beyond NFE (``SamplerInfo.passes_beyond_nfe``) is
    what sampling counts, with the variance updated every step or every few, on grids ending
    at 0 or not (DPM-Solver-2 at an odd NFE ends with one evaluation at 0)."""
    from bench.samplers.base import sampler_info, steps_for_nfe
    from bench.samplers.schedules import grid_final_zero

    lm = LoadedModel.load({"name": "fmnist-cond", "params": {}, "laplace": FIT},
                          torch.device("cpu"))
    info = sampler_info(name)
    grid = {"name": "time_uniform", "final_zero": True} if nfe % 2 else dict(info.grid)
    fz = grid_final_zero(grid)
    steps, counted = steps_for_nfe(info.evals_per_step, nfe, fz)
    params = {"mc": 2, "every": every}
    gen = generate(lm, SamplerSpec(name, params, grid, steps), range(1), seed=0,
                   conditions=_classes([4]))
    more = info.passes_beyond_nfe(params, steps, fz)
    assert gen.nfe == counted and more > 0
    assert gen.network_calls == counted + more


@pytest.mark.parametrize("name", ["bayesdiff_ddim", "bayesdiff_dpm_solver_2"])
def test_uncertainty_per_sample_through_generate(name):
    """Bitwise the same per-sample uncertainty in one batch of 5 or in batches of 2 and 3;
    NFE is the base sampler's and network passes add mc per trajectory evaluation of an
    uncertainty step (DDIM: none at its first step, whose start is known)."""
    from bench.samplers.base import sampler_info, steps_for_nfe
    from bench.samplers.schedules import grid_final_zero

    lm = LoadedModel.load({"name": "fmnist-cond", "params": {}, "laplace": FIT},
                          torch.device("cpu"))
    info = sampler_info(name)
    nfe, mc = 4, 2
    steps, _ = steps_for_nfe(info.evals_per_step, nfe, grid_final_zero(info.grid))
    spec = SamplerSpec(name, {"mc": mc, "every": 1, "variance_map": True}, dict(info.grid), steps)
    conds = _classes([0, 3, 3, 8, 9])
    whole = generate(lm, spec, range(5), seed=3, conditions=conds)
    parts = [generate(lm, spec, range(a, b), seed=3, conditions=conds[a:b])
             for a, b in ((0, 2), (2, 5))]
    u = whole.extras["uncertainty"]
    assert u.shape == (5,) and u.dtype == np.float64 and bool((u > 0).all())
    assert np.array_equal(np.concatenate([p.extras["uncertainty"] for p in parts]), u)
    assert torch.equal(torch.cat([p.samples for p in parts]), whole.samples)
    np.testing.assert_allclose(whole.extras["variance"].reshape(5, -1).sum(1), u, rtol=1e-6)
    assert whole.nfe == nfe
    extra = mc * (nfe - 1) if name == "bayesdiff_ddim" else mc * nfe
    assert whole.network_calls == nfe + extra


def test_samplers_refuse_a_model_without_a_posterior_and_bad_mc():
    plain = LoadedModel.load({"name": "fmnist-cond", "params": {}}, torch.device("cpu"))
    spec = SamplerSpec("bayesdiff_ddim", {}, {"name": "time_uniform"}, 2)
    with pytest.raises(ValueError, match="laplace: true"):
        generate(plain, spec, range(2), seed=0, conditions=_classes([0, 1]))
    lm = LoadedModel.load({"name": "fmnist-cond", "params": {}, "laplace": FIT},
                          torch.device("cpu"))
    for params, match in (({"mc": 0}, "mc=0"), ({"every": 0}, "every=0"),
                          ({"eps_variance": "code"}, "eps_variance='code'")):
        with pytest.raises(ValueError, match=match):
            generate(lm, SamplerSpec("bayesdiff_dpm_solver_2", params, {"name": "logsnr"}, 2),
                     range(2), seed=0, conditions=_classes([0, 1]))


def _run_suite(cli, write_suite, tmp_path, name: str, batch_size: int, shard_size: int):
    suite = {
        "name": "bd", "seed": 0, "samples": 12, "batch_size": batch_size,
        "shard_size": shard_size, "nfe": [4], "device": "cpu",
        "models": [{"name": "fmnist-cond", "laplace": FIT}],
        "samplers": ["ddim", {"name": "bayesdiff_ddim", "params": {"mc": 2, "every": 2}}],
        "evals": [{"name": "fidelity", "params": {
            "ref": "fmnist-test", "ref_limit": 60, "extractor": "test_proj",
            "refstats_dir": str(tmp_path / "refs"), "extremes": {"by": "uncertainty", "n": 2},
            "metrics": ["fid", {"name": "uncertainty_filter",
                                "params": {"keep": 0.5, "draws": 5}}]}}],
    }
    results = tmp_path / name
    code, out, err = cli("run", write_suite(suite, f"{name}.yaml"), "--results", results,
                         "--executor", "debug")
    assert code == 0, out + err
    return results


def test_filtering_through_a_suite_and_the_same_uncertainty_for_any_shard_split(
        cli, write_suite, tmp_path):
    """`bench run` with a Laplace model, plain DDIM and a BayesDiff sampler, the filtering
    metric and the extremes gallery: the filter rows and the extremes exist for the BayesDiff
    cell only (plain DDIM gets FID), each sample's uncertainty in the per-sample table is
    bitwise the same with batches of 4 in one shard as with batches of 5 in shards of 7, and
    the extremes are the samples of lowest and highest uncertainty in that table."""
    import pandas as pd

    from bench.evals.gallery import EXTREMES_DIR, gallery_dir
    from bench.report.galleries import load_extremes
    from bench.store import read_samples

    a = _run_suite(cli, write_suite, tmp_path, "a", 4, 12)
    b = _run_suite(cli, write_suite, tmp_path, "b", 5, 7)
    rows = pd.read_parquet(a)
    got = set(rows.loc[rows.sampler == "bayesdiff_ddim", "metric"])
    assert {"fid", "filter_fid_diff", "filter_precision_diff", "filter_kept",
            "spearman_uncertainty_knn"} <= got, got
    assert set(rows.loc[rows.sampler == "ddim", "metric"]) == {"fid"}
    assert float(rows.loc[rows.metric == "filter_kept", "value"].iloc[0]) == 6
    ta = read_samples(a, "bd")
    ta = ta[ta["sampler"] == "bayesdiff_ddim"].sort_values("index")
    tb = read_samples(b, "bd")
    tb = tb[tb["sampler"] == "bayesdiff_ddim"].sort_values("index")
    ua, ub = ta["extra_uncertainty"].to_numpy(), tb["extra_uncertainty"].to_numpy()
    assert len(ua) == 12 and np.array_equal(ua, ub) and bool((ua > 0).all())
    order = ta["index"].to_numpy()[np.argsort(ua, kind="stable")]
    for res in (a, b):
        assert not gallery_dir(res, "bd", "fmnist-cond-laplace", "ddim", 4, EXTREMES_DIR).exists()
        ext = load_extremes(gallery_dir(res, "bd", "fmnist-cond-laplace", "bayesdiff_ddim", 4,
                                        EXTREMES_DIR))
        assert ext is not None and ext["by"] == "uncertainty"
        assert ext["low"][1].tolist() == order[:2].tolist()
        assert ext["high"][1].tolist() == order[::-1][:2].tolist()
        assert np.array_equal(ext["low"][2], np.sort(ua)[:2])
        assert ext["low"][0].dtype == np.uint8 and ext["low"][0].shape[1:] == (1, 28, 28)
        assert ext["low"][3].tolist() == (order[:2] % 10).tolist()


@pytest.mark.parametrize("params, where", [
    ("{metrics: [fid, uncertainty_filter], ref: fmnist-test}", "metrics.uncertainty_filter"),
    ("{metrics: [fid], ref: fmnist-test, extremes: {by: uncertainty}}", "extremes"),
])
def test_a_per_sample_extra_no_sampler_gives_is_a_plan_error(tmp_path, params, where):
    from bench.errors import SuiteError
    from bench.suite import load_suite

    p = tmp_path / "s.yaml"
    p.write_text("name: s\nnfe: [4]\nsamples: 4\nmodels: [fmnist-cond]\nsamplers: [ddim, euler]\n"
                 f"evals: [{{name: fidelity, params: {params}}}]\n")
    with pytest.raises(SuiteError, match="none of the suite's samplers .ddim, euler.") as info:
        load_suite(str(p))
    assert f"evals[0].params.{where}" in str(info.value)
    assert "bayesdiff_ddim" in str(info.value)


@pytest.mark.parametrize("extremes, where", [
    ("[uncertainty]", "extremes"), ("{n: 3}", "extremes"), ("{by: 3}", "extremes.by"),
    ("{by: uncertainty, n: 0}", "extremes.n"),
])
def test_bad_extremes_name_the_field(tmp_path, extremes, where):
    from bench.errors import SuiteError
    from bench.suite import load_suite

    p = tmp_path / "s.yaml"
    p.write_text("name: s\nnfe: [4]\nsamples: 4\nmodels: [{name: fmnist-cond, laplace: true}]\n"
                 "samplers: [bayesdiff_ddim]\nevals: [{name: fidelity, params: {metrics: [fid], "
                 f"ref: fmnist-test, extremes: {extremes}}}}}]\n")
    with pytest.raises(SuiteError) as info:
        load_suite(str(p))
    assert f"evals[0].params.{where}" in str(info.value)
