"""Calibrated models (bench.calibration; Zheng, Pang, Du et al. 2023): on the exact Gaussian
oracle, whose data-averaged noise prediction is 0 in theory, and on a deliberately biased one
whose average is a known vector b(s)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from bench import calibration
from bench.calibration import CalibratedDenoiser, calibration_levels, check_settings, \
    estimate_eps_mean
from bench.errors import FieldError
from bench.generate import LoadedModel, SamplerSpec, generate
from bench.models.gmm import GMMOracle
from bench.suite import plan, validate
from conftest import small_suite

N = 4000  # data samples of the estimates: Monte Carlo error std / sqrt(N) ~ 0.016 std
GMM = {"shape": [1, 4, 4], "components": 1, "cov": "diag", "var_min": 0.05, "seed": 1}


@pytest.fixture(scope="module")
def oracle():
    """One diagonal Gaussian (DDIM is then affine in x: its response to a shift is exact)."""
    g = GMMOracle(**GMM)
    den = g.load()
    levels = calibration_levels(g.schedule, 100)
    x0 = g.sample_data(N, torch.Generator().manual_seed(5))
    means, std = estimate_eps_mean(den, levels, x0, seed=0, return_std=True)
    return g, den, levels, x0, means, std


@pytest.fixture(scope="module")
def plain_estimate(oracle):
    g, den, levels, x0, _, _ = oracle
    return estimate_eps_mean(den, levels, x0, seed=0, return_std=True, estimator="plain")


class Biased:
    """The exact oracle with eps_hat + b(s), b(s) = amp s / (1 + s) v (v: signs +-1)."""

    def __init__(self, inner, amp: float = 0.5) -> None:
        self.inner, self.schedule, self.amp = inner, inner.schedule, amp
        signs = torch.rand(16, generator=torch.Generator().manual_seed(2)) < 0.5
        self.v = torch.where(signs, -1.0, 1.0).to(torch.float64).reshape(1, 4, 4)

    def b(self, s) -> torch.Tensor:
        s = torch.as_tensor(s, dtype=torch.float64).reshape(-1, 1, 1, 1)
        return self.amp * s / (1.0 + s) * self.v

    def __call__(self, x, sigma, cond=None):
        s = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1).expand(x.shape[0])
        return (self.inner(x, sigma, cond) - s.view(-1, 1, 1, 1) * self.b(s)).to(x.dtype)


def ddim(model, denoiser, nfe: int = 50, n: int = 256):
    loaded = LoadedModel(model, denoiser, torch.device("cpu"))
    spec = SamplerSpec.from_dict({"name": "ddim", "grid": {"name": "time_uniform"}}, nfe)
    return generate(loaded, spec, np.arange(n), seed=3)


def rms(x: torch.Tensor) -> float:
    return float(x.pow(2).mean().sqrt())


# ----------------------------------------------------------------------------- exact oracle
@pytest.mark.parametrize("estimator", ["control_variate", "plain"])
def test_exact_oracle_mean_is_zero_within_monte_carlo_error(oracle, plain_estimate, estimator):
    """E[eps_hat] = E[E[eps | x]] = E[eps] = 0: each estimated component is a mean of N terms
    (eps_hat, or for the control variate eps_hat - c eps), so |m| <= 5 std / sqrt(N) (std: the
    terms' sample std at that level and pixel); and the estimate is noise of that size, not 0
    by construction (RMS of m / (std / sqrt N) ~ 1; measured 1.06 and 1.03)."""
    _, _, levels, _, means, std = oracle
    if estimator == "plain":
        means, std = plain_estimate
    assert means.shape == (100, 1, 4, 4) and means.dtype == torch.float64
    z = means / (std / math.sqrt(N))
    assert float(z.abs().max()) < 5.0, float(z.abs().max())
    assert 0.5 < rms(z) < 1.5, rms(z)
    # the levels: uniform in t over [t_eps, T] of the discrete schedule (the training steps)
    assert torch.allclose(levels[[0, -1]], torch.stack([oracle[0].schedule.s_of_t(1e-3),
                                                        oracle[0].schedule.s_of_t(1.0)]))


def test_control_variate_removes_the_noise_draws_own_mean(oracle, plain_estimate):
    """At high noise eps_hat ~ eps, so the plain mean is mostly mean(eps) of the N draws (the
    same vector at every level); the control variate removes it (measured over the upper half
    of the levels: RMS of m 0.0157 plain, 0.0011 control variate; at s < 0.1, where eps_hat is
    small, both ~0.006)."""
    _, den, levels, x0, means, std = oracle
    plain, plain_std = plain_estimate
    high = levels > 1.0
    assert rms(means[high]) < rms(plain[high]) / 5
    assert rms(means[:10]) < 1.5 * rms(plain[:10])
    assert bool((std <= plain_std * 1.01).all())
    draws = calibration._NoiseRows(0, (1, 4, 4)).take(N).mean(0)
    assert rms(plain[-1] - draws) < 0.1 * rms(draws)


def test_estimate_does_not_depend_on_batching(oracle):
    g, den, levels, x0, means, _ = oracle
    few = levels[::25]
    a = estimate_eps_mean(den, few, x0[:600], seed=0, batch_size=256)
    b = estimate_eps_mean(den, few, x0[:600], seed=0, batch_size=64)
    c = estimate_eps_mean(den, few, iter([x0[:100], x0[100:600]]), seed=0, batch_size=1000)
    assert torch.allclose(a, b, rtol=0, atol=1e-12) and torch.allclose(a, c, rtol=0, atol=1e-12)
    assert not torch.allclose(a, estimate_eps_mean(den, few, x0[:600], seed=1), atol=1e-6)


def test_calibrating_the_exact_oracle_moves_ddim_samples_by_the_monte_carlo_error(oracle):
    """DDIM on one Gaussian is affine: a step from s_i to s_{i+1} has slope
    J_i = (lam + s_i s_{i+1}) / (lam + s_i^2) per eigen-direction, and calibration adds
    (s_i - s_{i+1}) m(s_i) to it. So calibrated - plain samples = the propagated sum, exactly;
    and it is no larger than the same sum with |m| replaced by 3 std / sqrt(N)."""
    g, den, levels, _, means, std = oracle
    cal = CalibratedDenoiser(den, levels, means, tag="t")
    plain, moved = ddim(g, den), ddim(g, cal)
    assert torch.equal(plain.x_start, moved.x_start)
    sig, lam = plain.sigmas, g.lam.reshape(1, 1, 4, 4)
    error = CalibratedDenoiser(den, levels, 3 * std / math.sqrt(N))  # 3 MC errors, interpolated
    delta = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    bound = torch.zeros_like(delta)
    for i in range(len(sig) - 1):
        s, t = sig[i], sig[i + 1]
        jac = (lam + s * t) / (lam + s * s)
        delta = jac * delta + (s - t) * cal.offset(s.reshape(1)).reshape(1, 1, 4, 4)
        bound = jac * bound + (s - t) * error.offset(s.reshape(1)).reshape(1, 1, 4, 4)
    diff = moved.samples - plain.samples
    assert torch.allclose(diff, delta.expand_as(diff), rtol=0, atol=1e-9)
    assert bool((delta.abs() <= bound).all()), (delta, bound)
    assert rms(diff) < 0.03  # measured 0.009 (plain estimator: 0.06); data scale 0.22 to 1


# ----------------------------------------------------------------------------- biased oracle
def test_biased_oracle_estimate_recovers_the_bias(oracle):
    g, den, levels, x0, means, std = oracle
    biased = Biased(den)
    got, got_std = estimate_eps_mean(biased, levels, x0, seed=0, return_std=True)
    err = (got - biased.b(levels)) / (got_std / math.sqrt(N))
    assert float(err.abs().max()) < 5.0
    # common random numbers: the biased estimate is the exact one plus b, to rounding
    assert torch.allclose(got - biased.b(levels), means, rtol=0, atol=1e-12)


def test_calibrated_biased_oracle_predicts_x0_ten_times_better(oracle):
    g, den, levels, x0, _, _ = oracle
    biased = Biased(den)
    cal = CalibratedDenoiser(biased, levels, estimate_eps_mean(biased, levels, x0, seed=0),
                             tag="t")
    data = g.sample_data(2000, torch.Generator().manual_seed(9))
    eps = torch.randn(data.shape, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    for s in (0.5, 1.0, 3.0, 10.0):  # between grid levels: m interpolated in log s
        x, sig = data + s * eps, torch.full((len(data),), s, dtype=torch.float64)
        exact = den(x, sig)
        e_biased, e_cal = rms(biased(x, sig) - exact), rms(cal(x, sig) - exact)
        assert e_cal < 0.1 * e_biased, (s, e_cal, e_biased)  # measured 0.002-0.05


def test_calibrated_biased_oracle_samples_are_closer_to_the_exact_ode_solution(oracle):
    g, den, levels, x0, _, _ = oracle
    biased = Biased(den)
    cal = CalibratedDenoiser(biased, levels, estimate_eps_mean(biased, levels, x0, seed=0),
                             tag="t")
    errs = {}
    for name, d in (("exact", den), ("biased", biased), ("calibrated", cal)):
        gen = ddim(g, d)
        truth = g.ode_solution(gen.x_start, float(gen.sigmas[0]), float(gen.sigmas[-1]))
        errs[name] = float((gen.samples - truth).flatten(1).pow(2).mean(1).sqrt().mean())
    # measured at NFE 50: exact 0.0278, biased 1.36, calibrated 0.0292 (plain estimator 0.065)
    assert errs["calibrated"] < errs["biased"] / 10, errs
    assert errs["calibrated"] < 1.25 * errs["exact"], errs


def test_calibration_tightens_the_variational_bound(oracle):
    """The bound's terms grow with E||x0 - x0_hat||^2 = s^2 E||eps - eps_hat||^2, which the
    calibration lowers by s^2 ||b||^2 (measured: exact 162.12, biased 180.14, calibrated
    162.11 nats)."""
    from bench.likelihood import vlb
    from bench.noise import NoiseSource

    g, den, levels, x0, _, _ = oracle
    biased = Biased(den)
    cal = CalibratedDenoiser(biased, levels, estimate_eps_mean(biased, levels, x0, seed=0))
    data = g.sample_data(500, torch.Generator().manual_seed(13))
    nll = {name: float(vlb(d, g.schedule, data, steps=100, variance="beta_tilde",
                           noise=NoiseSource(0, range(500)))["nll"].mean())
           for name, d in (("exact", den), ("biased", biased), ("calibrated", cal))}
    assert nll["calibrated"] < nll["biased"] - 10, nll
    assert abs(nll["calibrated"] - nll["exact"]) < 0.5, nll


def test_interpolation_in_log_s_and_ends(oracle):
    g, den, *_ = oracle
    levels = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    means = torch.stack([torch.full((1, 4, 4), v, dtype=torch.float64) for v in (1.0, 2.0, 4.0)])
    cal = CalibratedDenoiser(den, levels, means, tag="x")
    got = cal.offset(torch.tensor([0.0, 0.01, 0.1, math.sqrt(0.1), 1.0, math.sqrt(10.0), 10.0,
                                   1e3]))[:, 0, 0, 0]
    assert torch.allclose(got, torch.tensor([1.0, 1.0, 1.0, 1.5, 2.0, 3.0, 4.0, 4.0],
                                            dtype=torch.float64))
    x = torch.zeros(2, 1, 4, 4, dtype=torch.float64)
    sig = torch.tensor([0.0, 1.0], dtype=torch.float64)
    assert torch.equal(cal(x, sig)[0], den(x, sig)[0])  # s = 0: no correction
    assert torch.allclose(cal(x, sig)[1], den(x, sig)[1] + 2.0)
    assert cal.schedule is den.schedule and cal.sample_data is not None
    assert cal.cache_key.startswith(den.cache_key) and cal.cache_key != den.cache_key


def test_analytic_dpm_estimates_gamma_of_the_calibrated_model_apart(oracle):
    from bench.samplers.analytic_dpm import _GAMMA_CACHE

    g, den, levels, _, means, _ = oracle
    spec = SamplerSpec.from_dict({"name": "analytic_dpm", "params": {"gamma_samples": 100},
                                  "grid": {"name": "time_uniform"}}, 5)
    cal = CalibratedDenoiser(den, levels, means, tag="gamma-test")
    for d in (den, cal):
        gen = generate(LoadedModel(g, d, torch.device("cpu")), spec, np.arange(4), seed=0)
        assert bool(torch.isfinite(gen.samples).all())
    keys = {k[0] for k in _GAMMA_CACHE}
    assert den.cache_key in keys and cal.cache_key in keys


# ------------------------------------------------------------------------------------ cache
def test_cache_is_read_back_and_a_corrupt_file_is_recomputed(tmp_path, monkeypatch, capsys):
    calls = []
    real = calibration.estimate_eps_mean

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(calibration, "estimate_eps_mean", counted)
    settings = {"data": "sample_data", "samples": 200, "points": 10, "seed": 0}
    spec = {"name": "gmm", "params": GMM, "calibrate": settings}
    cache = tmp_path / "_cache"
    first = LoadedModel.load(spec, torch.device("cpu"), cache)
    files = list((cache / "calibration").glob("*.npz"))
    assert len(calls) == 1 and len(files) == 1
    assert files[0].stem == first.adapter.describe()["calibration"]["key"]
    again = LoadedModel.load(spec, torch.device("cpu"), cache)
    assert len(calls) == 1  # read, not estimated: no model passes
    assert torch.equal(again.denoiser.means, first.denoiser.means)

    raw = bytearray(files[0].read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    files[0].write_bytes(bytes(raw))
    third = LoadedModel.load(spec, torch.device("cpu"), cache)
    assert len(calls) == 2 and "is corrupt" in capsys.readouterr().err
    assert len(list((tmp_path / "_corrupt").rglob("*.npz*"))) == 1
    assert torch.equal(third.denoiser.means, first.denoiser.means)
    assert LoadedModel.load(spec, torch.device("cpu"), cache).denoiser.means is not None
    assert len(calls) == 2

    other = LoadedModel.load({**spec, "calibrate": {**settings, "seed": 1}}, torch.device("cpu"),
                             cache)
    assert len(calls) == 3 and len(list((cache / "calibration").glob("*.npz"))) == 2
    assert not torch.equal(other.denoiser.means, first.denoiser.means)
    assert other.denoiser.cache_key != first.denoiser.cache_key  # Analytic-DPM's Gamma cache
    LoadedModel.load(spec, torch.device("cpu"))  # no cache folder: in memory
    assert len(calls) == 4


def test_a_job_loads_the_calibrated_model_apart_and_caches_in_the_results(tmp_path):
    """A job keeps its last model for the next shard: the calibrated one is another model."""
    from bench.evals.base import Models

    models = Models(tmp_path / "_cache")
    spec = {"name": "gmm", "params": GMM}
    plain = models.get(spec, "cpu")
    cal = models.get({**spec, "calibrate": {"data": "sample_data", "samples": 50, "points": 4}},
                     "cpu")
    assert isinstance(cal.denoiser, CalibratedDenoiser) and not isinstance(plain.denoiser,
                                                                            CalibratedDenoiser)
    assert len(list((tmp_path / "_cache" / "calibration").glob("*.npz"))) == 1
    assert not isinstance(models.get(spec, "cpu").denoiser, CalibratedDenoiser)


# ---------------------------------------------------------------------------- suites, keys
def _cells(**model):
    suite = validate(small_suite(models=[{"name": "gmm", "label": "g", "params": GMM, **model}],
                                 samplers=["ddim"], nfe=[10]), "suite.yaml")
    return suite, plan(suite)


def test_cell_key_changes_with_calibration_and_its_settings():
    keys = {}
    for name, cal in (("off", None), ("false", False), ("on", True), ("samples", {"samples": 500}),
                      ("points", {"points": 50}), ("seed", {"seed": 1}),
                      ("estimator", {"estimator": "plain"})):
        suite, shards = _cells(**({} if cal is None else {"calibrate": cal}))
        keys[name] = (shards[0].cell_key, shards[0].key)
        if name == "on":
            assert suite.models[0]["calibrate"] == {"data": "sample_data", "samples": 1000,
                                                    "points": 100, "seed": 0,
                                                    "estimator": "control_variate"}
            assert "calibration" in shards[0].code
    assert keys["off"] == keys["false"]
    assert len({keys[k] for k in ("off", "on", "samples", "points", "seed", "estimator")}) == 6


def test_default_label_and_result_rows_tell_calibrated_models_apart(cli, write_suite, tmp_path):
    gmm = {"name": "gmm", "params": GMM}
    p = write_suite(small_suite(models=[gmm, {**gmm, "calibrate": {"samples": 300, "points": 20}}],
                                samplers=["ddim"], nfe=[10], samples=16))
    code, out, err = cli("run", p, "--executor", "debug", "--results", tmp_path / "res")
    assert code == 0, (out, err)
    rows = pd.read_parquet(tmp_path / "res" / "tiny")
    rows = rows[rows.metric == "rmse"].set_index("model")
    assert sorted(rows.index) == ["gmm", "gmm-calibrated"]
    assert "calibrate" in rows.loc["gmm-calibrated", "model_params"]
    assert "calibrate" not in rows.loc["gmm", "model_params"]
    assert rows.loc["gmm", "value"] != rows.loc["gmm-calibrated", "value"]
    assert len(list((tmp_path / "res" / "_cache" / "calibration").glob("*.npz"))) == 1


@pytest.mark.parametrize("block, field, words", [
    ({"samples": 1}, "models[0].calibrate.samples", ">= 2"),
    ({"sample": 10}, "models[0].calibrate.sample", "Did you mean 'samples'"),
    ({"points": 1}, "models[0].calibrate.points", ">= 2"),
    ({"seed": -1}, "models[0].calibrate.seed", "whole number"),
    ({"data": "fmnist-trian"}, "models[0].calibrate.data", "Did you mean 'fmnist-train'"),
    ({"estimator": "cv"}, "models[0].calibrate.estimator", "control_variate"),
    ("yes", "models[0].calibrate", "true, false or a mapping"),
])
def test_plan_refuses_a_bad_calibrate_block(cli, write_suite, block, field, words):
    p = write_suite(small_suite(models=[{"name": "gmm", "params": GMM, "calibrate": block}]))
    code, out, err = cli("plan", p)
    assert code == 2, (out, err)
    assert f"field '{field}'" in err and words in err and "Fix:" in err, err


def test_plan_refuses_more_samples_than_the_data_and_other_shapes(cli, write_suite, tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (10, 4, 4, 1), dtype=np.uint8)
    np.savez(tmp_path / "ten.npz", images=images)
    p = write_suite(small_suite(models=[{"name": "gmm", "params": GMM,
                                         "calibrate": {"data": "ten.npz", "samples": 20}}]))
    code, _, err = cli("plan", p)  # a relative path is found beside the suite
    assert code == 2 and "models[0].calibrate.samples" in err and "only 10 images" in err
    p = write_suite(small_suite(models=[{"name": "gmm", "params": {**GMM, "shape": [1, 5, 5]},
                                         "calibrate": {"data": "ten.npz", "samples": 8}}]))
    code, _, err = cli("plan", p)
    assert code == 2 and "models[0].calibrate.data" in err and "[1, 4, 4]" in err


def test_image_data_is_mapped_to_the_sample_space(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (10, 4, 4, 1), dtype=np.uint8)
    np.savez(tmp_path / "ten.npz", images=images)
    g = GMMOracle(**GMM)
    settings = check_settings({"data": str(tmp_path / "ten.npz"), "samples": 10}, g)
    x, digest = calibration.load_data(g, settings)
    want = torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float64)) / 127.5 - 1.0
    assert torch.equal(x, want) and len(digest) == 64  # all 10, in index order
    sub, _ = calibration.load_data(g, {**settings, "samples": 4})
    assert sub.shape == (4, 1, 4, 4) and all(any(torch.equal(r, w) for w in want) for r in sub)


def test_models_that_cannot_be_calibrated_are_refused():
    class NoSchedule:
        schedule = None

        def label(self):
            return "'x'"

    with pytest.raises(FieldError, match="no noise schedule"):
        check_settings(True, NoSchedule())
    for params, words in (({"parameterisation": "consistency"}, "not a denoiser"),
                          ({"components": 2, "guidance": {"scale": 2.0}}, "guidance")):
        with pytest.raises(FieldError, match=words):
            check_settings(True, GMMOracle(**{**GMM, **params}))

    class Latent(NoSchedule):
        schedule, latent = object(), True

    with pytest.raises(FieldError, match="latent models is not supported"):
        check_settings(True, Latent())


def test_trained_model_calibrates_on_its_training_set(fmnist, tmp_path):
    """fmnist-v names its training set (fmnist-train); its uint8 images map to [-1, 1]."""
    from bench.registry import MODELS, load_all

    load_all()
    adapter = MODELS.get("fmnist-v")()
    settings = check_settings({"samples": 6, "points": 2}, adapter)
    assert settings["data"] == "fmnist-train"
    x, _ = calibration.load_data(adapter, settings)
    assert x.shape == (6, 1, 28, 28) and x.dtype == torch.float32
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    loaded = LoadedModel.load({"name": "fmnist-v", "params": {}, "calibrate": settings},
                              torch.device("cpu"), tmp_path / "_cache")
    assert loaded.denoiser.means.shape == (2, 1, 28, 28)
    assert bool(torch.isfinite(loaded.denoiser.means).all())
    assert loaded.adapter.describe()["calibration"]["data"] == "fmnist-train"
    with pytest.raises(FieldError, match="text-conditional"):
        check_settings(True, MODELS.get("gmm-keyword")(keywords=["boot", "coat"], components=2))
    with pytest.raises(FieldError, match="classifier-free guidance"):
        check_settings(True, MODELS.get("fmnist-cond")(guidance={"scale": 2.0}))


@pytest.mark.usefixtures("fmnist")
def test_class_conditional_model_gets_one_term_per_class(tmp_path):
    """fmnist-cond, 30 training images, plain estimator: one term per class present, and each
    class's calibrated noise prediction averages to 0 over that class's data and draws (the
    same ones: a term applied to the wrong class would leave its class's mean, ~1e-2)."""
    from bench.conditions import Condition
    from bench.denoiser import Cond
    from bench.registry import MODELS, load_all

    load_all()
    adapter = MODELS.get("fmnist-cond")()
    settings = check_settings({"samples": 30, "points": 2, "estimator": "plain"}, adapter)
    loaded = LoadedModel.load({"name": "fmnist-cond", "params": {}, "calibrate": settings},
                              torch.device("cpu"), tmp_path / "_cache")
    den = loaded.denoiser
    labels = calibration.subset_labels("fmnist-train", 30, settings["seed"])
    assert den.classes.tolist() == sorted(set(labels.tolist()))
    assert den.means.shape == (len(den.classes), 2, 1, 28, 28)
    x0, _ = calibration.load_data(adapter, settings)
    worst_plain, worst_cal = 0.0, 0.0
    for c in den.classes.tolist()[:3]:
        rows, _ = adapter.encode([Condition(id=f"class={c}", label=c)])
        xs = x0[torch.from_numpy(labels == c)]

        def cond(b, rows=rows):
            return Cond(rows[:1].expand(b))
        seed = calibration.derived_seed(settings["seed"], f"class={c}")
        levels = den.levels
        plain = estimate_eps_mean(den.inner, levels, xs, seed=seed, cond=cond, estimator="plain")
        cal = estimate_eps_mean(den, levels, xs, seed=seed, cond=cond, estimator="plain")
        worst_plain = max(worst_plain, float(plain.abs().max()))
        worst_cal = max(worst_cal, float(cal.abs().max()))
    assert worst_cal < 1e-5 < 1e-2 < worst_plain
    with pytest.raises(ValueError, match="per class"):
        den(x0[:2], torch.full((2,), 1.0), None)
