"""FID's default 95% interval (delete-a-group jackknife over the generated samples) and
``bench list features|datasets``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import test_fidelity_support as S  # noqa: F401  (registers the test_proj extractor)
from bench.metrics.fid import FID, frechet_distance, jackknife_fid, sqrtm_psd
from test_fidelity_metrics import _batches, _ctx, _fold, ref_npz  # noqa: F401  (fixture)


def _compute(state):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FID.compute(state)["fid"]


def test_default_interval_brackets_the_unchanged_point_estimate(ref_npz, tmp_path):
    with_ci = _fold(FID, _batches(60, 60), _ctx(ref_npz, tmp_path))
    sums_only = _fold(FID, _batches(60, 60), _ctx(ref_npz, tmp_path, ci_groups=0))
    assert "features" in with_ci and "features" not in sums_only
    v, lo, hi = _compute(with_ci)
    v0, lo0, hi0 = _compute(sums_only)
    assert v == v0 and np.isnan(lo0) and np.isnan(hi0)  # point estimate exactly unchanged
    assert lo < v < hi
    assert _compute(with_ci) == (v, lo, hi)  # deterministic
    # shard/batch split: the same groups (by sample index), the same interval up to rounding
    parts = [_fold(FID, list(_batches(60, 7))[i::3], _ctx(ref_npz, tmp_path)) for i in range(3)]
    v2, lo2, hi2 = _compute(FID.merge(parts[::-1]))
    assert (v2, lo2, hi2) == pytest.approx((v, lo, hi), rel=1e-9)
    other_seed = _fold(FID, _batches(60, 60), _ctx(ref_npz, tmp_path, ci_seed=1))
    assert _compute(other_seed)[0] == v and _compute(other_seed)[1] != lo


def test_jackknife_se_matches_the_spread_of_fid_over_independent_sample_sets():
    """Coverage check on Gaussian features: the jackknife half-width / 1.96-ish t quantile tracks
    the actual standard deviation of FID across 200 independent generated sets."""
    rng = np.random.default_rng(0)
    d, n = 6, 300
    ref = rng.normal(size=(20000, d))
    mu_r, sigma_r = ref.mean(0), np.cov(ref, rowvar=False)
    sqrt_r = sqrtm_psd(sigma_r)
    shift = np.full(d, 0.15)
    vals, halves, covered = [], [], 0
    for _ in range(200):
        f = (rng.normal(size=(n, d)) * 1.1 + shift).astype(np.float32)
        f64 = f.astype(np.float64)
        v = frechet_distance(f64.mean(0), np.cov(f64, rowvar=False), mu_r, sigma_r, sqrt2=sqrt_r)
        lo, hi = jackknife_fid(f, f64.sum(0), f64.T @ f64, mu_r, sigma_r, sqrt_r, v, groups=10)
        vals.append(v)
        halves.append((hi - lo) / 2)
    vals = np.array(vals)
    center = vals.mean()
    covered = np.mean([abs(v - center) <= h for v, h in zip(vals, halves)])
    from scipy import stats

    se_jack = np.mean(halves) / stats.t.ppf(0.975, 9)
    assert 0.7 < se_jack / vals.std() < 1.4
    assert 0.85 < covered <= 1.0


def test_bootstrap_option_still_works(ref_npz, tmp_path):
    st = _fold(FID, _batches(60, 60), _ctx(ref_npz, tmp_path, bootstrap=30))
    v, lo, hi = _compute(st)
    assert lo < hi and np.isfinite(lo)
    assert v == _compute(_fold(FID, _batches(60, 60), _ctx(ref_npz, tmp_path)))[0]


def test_cli_fid_prints_the_interval(cli, tmp_path):
    rng = np.random.default_rng(0)
    a, b = tmp_path / "gen.npz", tmp_path / "ref.npz"
    np.savez(a, images=rng.integers(0, 256, size=(40, 12, 12, 3), dtype=np.uint8))
    np.savez(b, images=rng.integers(0, 200, size=(50, 12, 12, 3), dtype=np.uint8))
    args = ("fid", a, b, "--extractor", "test_proj", "--refstats-dir", tmp_path / "refs")
    code, out, err = cli(*args)
    assert code == 0, err
    line = out.splitlines()[0]
    assert line.startswith("FID") and "95% CI [" in line
    assert "delete-a-group jackknife, 10 groups" in out
    code, out0, _ = cli(*args, "--ci-groups", "0")
    assert out0.splitlines()[0].split()[1] == line.split()[1] and "CI" not in out0.splitlines()[0]
    code, outj, _ = cli(*args, "--json")
    import json

    rec = json.loads(outj)["values"]["fid"]
    assert rec["ci_low"] < rec["value"] < rec["ci_high"]


def test_cli_list_features_and_datasets(cli):
    code, out, _ = cli("list", "features")
    assert code == 0 and out.startswith("features:")
    for name in ("inception", "clip", "dinov2"):
        assert f"  {name} " in out
    assert "arch='ViT-B-32'" in out and "resize='tf1_bilinear'" in out
    code, out, _ = cli("list", "datasets")
    assert code == 0 and out.startswith("datasets:") and "fmnist-test" in out and "fmnist-train" in out
    code, out, _ = cli("list")
    assert code == 0 and "\nfeatures:\n" in out and "\ndatasets:\n" in out and out.startswith("models:")
