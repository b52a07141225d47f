"""The ``likelihood`` eval: on the gmm oracle the ODE route equals the closed-form log-density
and the bound route is an upper bound that tightens with the analytic variance; per-image
results do not depend on the batch size or shard split; bad input fails at plan time; a
class-conditional Fashion-MNIST model is scored on its own labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.evals.likelihood import Likelihood
from bench.generate import LoadedModel
from bench.report import load_results
from bench.store import read_samples
from conftest import small_suite

GAUSS = {"name": "gmm", "label": "g", "params": {"shape": [4], "means": [[0.5, -0.3, 0.2, 0.1]],
                                                 "covs": [0.3]}}
MIX = {"name": "gmm", "label": "m", "params": {"shape": [3], "components": 3, "cov": "full",
                                              "var_min": 0.05, "seed": 3}}


def lk_suite(**over) -> dict:
    evals = [{"name": "likelihood", "label": "bound",
              "params": {"route": "bound", "steps": [5, 100], "decoder": "gaussian"}},
             {"name": "likelihood", "label": "ode", "params": {"route": "ode", "steps": [40]}}]
    return small_suite(**{"name": "lk", "samples": 24, "batch_size": 24, "models": [MIX],
                          "samplers": ["ddpm", "ddim"], "evals": evals, **over})


def _truth(model: dict, seed: int, n: int) -> np.ndarray:
    """-log p_{s_min}(x) in bits/dim of the eval's data items 0..n-1 (closed form)."""
    lm = LoadedModel.load({"name": "gmm", "params": model["params"]}, torch.device("cpu"))
    x, _, _, _ = Likelihood(route="ode")._data(lm, seed, 0, n, n)
    s_min = float(lm.denoiser.schedule.s_min)
    logp = lm.adapter.log_density(x, s_min)
    return (-logp / (x[0].numel() * math.log(2))).numpy()


def test_ode_route_equals_the_closed_form_and_the_bound_lies_above(cli, write_suite, tmp_path):
    res = tmp_path / "res"
    code, _, err = cli("run", write_suite(lk_suite(seed=5)), "--results", res)
    assert code == 0, err
    samples = read_samples(res).sort_values("index")
    truth = _truth(MIX, 5, 24)
    ode = samples[samples["sampler"] == "ddim"]
    # exact divergence, RK4 with 40 steps in log s. The per-image error is the prior's
    # mismatch, N(0, 1 + s_max^2) against the true p_{s_max} (up to 0.05 nats, mean ~0; see
    # tests/test_likelihood.py): measured max 0.0069 bits/dim
    err = ode["bpd"].to_numpy() - truth
    assert np.abs(err).max() < 0.025 and abs(err.mean()) < 2e-3
    rows = load_results(res)
    bound = rows[(rows["metric"] == "nll_bpd") & (rows["sampler"] == "ddpm")]
    assert set(bound["slice"]) == {f"variance={v}" for v in ("beta", "beta_tilde", "analytic")}
    assert set(bound["nfe"]) == {5, 100}
    for _, r in bound.iterrows():  # an upper bound on average: its CI reaches above the truth
        assert r["ci_high"] > truth.mean(), r["slice"]
    # the analytic variance is the tighter bound at K = 5 (Bao et al. 2022, Table 1's shape),
    # paired per image: the difference's CI excludes 0
    diff = rows[(rows["metric"] == "nll_bpd_diff") & (rows["nfe"] == 5)
                & (rows["slice"] == "variance=beta,minus=analytic")].iloc[0]
    assert diff["ci_low"] > 0
    ddpm = samples[(samples["sampler"] == "ddpm") & (samples["nfe"] == 100)]
    assert (ddpm["bpd_analytic"] <= ddpm["bpd_beta"] + 1e-12).mean() > 0.5


def test_per_image_results_do_not_depend_on_batch_or_shards(cli, write_suite, tmp_path):
    out = {}
    for tag, over in (("one", {"batch_size": 24}), ("split", {"batch_size": 5, "shard_size": 7})):
        res = tmp_path / tag
        code, _, err = cli("run", write_suite(lk_suite(**over), f"{tag}.yaml"), "--results", res)
        assert code == 0, err
        s = read_samples(res)
        out[tag] = s.sort_values(["sampler", "nfe", "index"]).reset_index(drop=True)
    cols = ["bpd_beta", "bpd_beta_tilde", "bpd_analytic", "bpd"]
    np.testing.assert_array_equal(out["one"][cols].to_numpy(), out["split"][cols].to_numpy())


def test_bad_input_is_refused_at_plan_time(cli, write_suite, tmp_path):
    cases = [
        ({"samplers": ["ddim"]}, "evals[0]", "no '\\w+' sampler|no 'ddpm' sampler"),
        ({"evals": [{"name": "likelihood", "params": {"steps": [1]}}]}, "evals[0].params.steps",
         "steps"),
        ({"evals": [{"name": "likelihood", "params": {"variances": ["optimal"]}}]},
         "evals[0].params.variances", "beta, beta_tilde, analytic"),
        ({"evals": [{"name": "likelihood", "params": {"route": "elbo"}}]},
         "evals[0].params.route", "bound, ode"),
        ({"evals": [{"name": "likelihood", "params": {"images": 0}}]},
         "evals[0].params.images", ">= 1"),
    ]
    for over, field, fix in cases:
        code, _, err = cli("plan", write_suite(lk_suite(**over), "bad.yaml"))
        assert code != 0 and field in err, (over, err)
        assert __import__("re").search(fix, err), (over, err)


def test_images_overrides_the_suite_samples_for_this_eval(cli, write_suite, tmp_path):
    suite = lk_suite(evals=[{"name": "likelihood", "params": {"steps": [3], "images": 6,
                                                              "variances": ["beta"]}}],
                     samplers=["ddpm"])
    res = tmp_path / "res"
    code, _, err = cli("run", write_suite(suite), "--results", res)
    assert code == 0, err
    assert len(read_samples(res)) == 6


@pytest.mark.usefixtures("fmnist")
def test_class_conditional_model_is_scored_on_its_labels(cli, write_suite, tmp_path):
    """fmnist-cond on 3 test images: the table has their labels; the bound at K = 3 gives
    plausible bits per 8-bit value and the ODE with 2 RK4 steps finite ones (this checks the
    plumbing; the suite measures the numbers)."""
    suite = small_suite(name="lkf", samples=3, batch_size=3,
                        models=[{"name": "fmnist-cond", "params": {"block": 8}}],
                        samplers=["ddpm", "ddim"],
                        evals=[{"name": "likelihood", "label": "bound",
                                "params": {"steps": [3], "gamma_samples": 4}},
                               {"name": "likelihood", "label": "ode",
                                "params": {"route": "ode", "steps": [2]}}])
    res = tmp_path / "res"
    code, _, err = cli("run", write_suite(suite), "--results", res)
    assert code == 0, err
    s = read_samples(res)
    from bench.data import open_dataset

    labels = open_dataset("fmnist-test").labels[:3]
    for _, sub in s.groupby("sampler"):
        np.testing.assert_array_equal(sub.sort_values("index")["label"].to_numpy(), labels)
    bound = s[["bpd_beta", "bpd_analytic"]].dropna().to_numpy().ravel()
    assert len(bound) == 6 and bool(((bound > 0) & (bound < 16)).all()), bound
    ode = s["bpd"].dropna().to_numpy()  # 2 RK4 steps: finite, not accurate (measured -0.4..1.8)
    assert len(ode) == 3 and bool(np.isfinite(ode).all()), ode


def test_report_shows_the_bound_table_the_calibration_pairs_and_the_plot(cli, write_suite,
                                                                        tmp_path):
    cal = {**MIX, "label": "m-cal", "calibrate": {"samples": 200, "points": 20}}
    suite = lk_suite(models=[MIX, cal], samples=12, batch_size=12)
    res, out = tmp_path / "res", tmp_path / "rep"
    code, _, err = cli("run", write_suite(suite), "--results", res)
    assert code == 0, err
    code, _, err = cli("report", res, "--out", out, "--format", "md")
    assert code == 0, err
    md = (out / "lk.md").read_text()
    rows = load_results(res)
    r = rows[(rows["model"] == "m") & (rows["nfe"] == 5) & (rows["slice"] == "variance=analytic")
             & (rows["metric"] == "nll_bpd")].iloc[0]
    assert f"| m | 5 | " in md and f"{r['value']:.3g}" in md
    assert "### Calibration" in md and "| m-cal − m | ODE |" in md
    assert "| m-cal − m | bound K=100 |" in md
    assert (out / "likelihood-bound.png").stat().st_size > 10_000


@pytest.mark.parametrize("model", ["fmnist-v", "fmnist-cond"])
def test_trained_denoiser_is_differentiable_for_the_ode_divergence(model):
    """v^T (dD/dx) v by autograd (what ode_nll's Hutchinson estimator takes) equals a central
    finite difference of the network (float32: h = 1e-2, 1% tolerance): the divergence sees
    the network, not only the linear part of D = x - s eps (a no_grad inside the network once
    made it v^T v = 784 for epsilon models)."""
    from bench.denoiser import Cond

    lm = LoadedModel.load({"name": model, "params": {}}, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((2, 1, 28, 28), generator=gen) * 0.8
    v = torch.sign(torch.randn(x.shape, generator=gen))
    sigma = torch.full((2,), 0.7)
    cond = Cond(torch.tensor([3, 7])) if model == "fmnist-cond" else None
    y = x.clone().requires_grad_(True)
    (vjp,) = torch.autograd.grad(lm.denoiser(y, sigma, cond), y, v)
    auto = (vjp * v).flatten(1).sum(1)
    h = 1e-2
    with torch.no_grad():
        fd = ((lm.denoiser(x + h * v, sigma, cond) - lm.denoiser(x - h * v, sigma, cond))
              / (2 * h) * v).flatten(1).sum(1)
    torch.testing.assert_close(auto, fd, rtol=1e-2, atol=0.5)
    assert bool(((auto - 784).abs() > 20).all())  # not the identity's trace
