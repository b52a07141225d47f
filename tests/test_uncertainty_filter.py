"""The BayesDiff filtering metric (bench.metrics.uncertainty_filter) on features with a known
answer: 20% of the generated features come from a shifted distribution. An uncertainty that
flags them must make the kept set beat random subsets (FID down, precision up, positive rank
correlation with the distance to real data); an uncertainty independent of them must not."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats

from bench.metrics import uncertainty_filter as uf
from bench.metrics.fid import sqrtm_psd

D = 16


@pytest.fixture
def synthetic(monkeypatch):
    rng = np.random.default_rng(0)
    real = rng.standard_normal((2000, D)).astype(np.float32)
    ref = SimpleNamespace(id="synthetic", mu=real.mean(0).astype(np.float64),
                          sigma=np.cov(real.astype(np.float64), rowvar=False), n=len(real),
                          require_features=lambda _name: real)
    monkeypatch.setattr(uf, "load_ref", lambda config: ref)
    import bench.metrics.fid as fid

    monkeypatch.setattr(fid, "_ref_sqrt", lambda ref_id, root: sqrtm_psd(ref.sigma))
    n = 500
    bad = np.zeros(n, bool)
    bad[rng.choice(n, n // 5, replace=False)] = True
    gen = rng.standard_normal((n, D)) + 2.5 * bad[:, None]
    return gen.astype(np.float32), bad, rng


def _state(features, u, **params):
    p = {**uf.UncertaintyFilter.extra_params, "draws": 30, **params}
    config = {"metric": "uncertainty_filter", "ref": "synthetic", "refstats_dir": None,
              "extractor": {}, "params": p}
    return {"index": np.arange(len(features)), "features": features, "uncertainty": u,
            "config": np.array(json.dumps(config)), "n_nonfinite": np.array([0])}


def test_an_uncertainty_that_flags_the_bad_samples_beats_random_subsets(synthetic):
    gen, bad, rng = synthetic
    u = bad * 2.0 + rng.random(len(bad))  # the bad ones rank above every good one
    out = uf.UncertaintyFilter.compute(_state(gen, u, keep=0.8))
    assert out["filter_kept"][0] == 400
    d, lo, hi = out["filter_fid_diff"]
    assert hi < 0 and d < -1.0, out["filter_fid_diff"]
    assert out["filter_precision_diff"][1] > 0
    assert out["filter_fid_kept"][0] < out["filter_fid_random"][1]
    rho, rlo, rhi = out["spearman_uncertainty_knn"]
    assert rlo > 0.3, out["spearman_uncertainty_knn"]
    same = uf.UncertaintyFilter.compute(_state(gen, u, drop_above_std=0.0))  # mean + 0 std
    assert same["filter_kept"][0] == int((u <= u.mean()).sum())


def test_an_uncertainty_unrelated_to_quality_does_not(synthetic):
    gen, bad, rng = synthetic
    u = rng.random(len(bad))
    out = uf.UncertaintyFilter.compute(_state(gen, u, keep=0.8))
    _, lo, hi = out["filter_fid_diff"]
    assert lo < 0 < hi, out["filter_fid_diff"]
    _, rlo, rhi = out["spearman_uncertainty_knn"]
    assert rlo < 0 < rhi


def test_kept_mask_and_spearman_interval():
    u = np.array([3.0, 1.0, 2.0, 1.0, 5.0])
    assert uf.kept_mask(u, 0.4, None).tolist() == [False, True, False, True, False]
    assert uf.kept_mask(u, 0.5, None).sum() == 3  # ceil
    assert uf.kept_mask(u, 1.0, 1.0).tolist() == [True, True, True, True, False]
    rng = np.random.default_rng(1)
    x = rng.standard_normal(200)
    y = x + rng.standard_normal(200)
    rho, lo, hi = uf.spearman_ci(x, y)
    assert rho == pytest.approx(stats.spearmanr(x, y).statistic) and lo < rho < hi
    assert hi - lo == pytest.approx(np.tanh(np.arctanh(rho) + 1.96 * 1.06 / np.sqrt(197))
                                    - np.tanh(np.arctanh(rho) - 1.96 * 1.06 / np.sqrt(197)),
                                    rel=1e-3)


@pytest.mark.parametrize("params, field", [({"keep": 0}, "keep"), ({"keep": 1.5}, "keep"),
                                           ({"draws": 1}, "draws"),
                                           ({"drop_above_std": "x"}, "drop_above_std")])
def test_bad_params_name_the_field(params, field):
    from bench.errors import FieldError

    with pytest.raises(FieldError) as info:
        uf.UncertaintyFilter.check_params({"ref": "fmnist-test", **params})
    assert info.value.field == field
