"""The ``fidelity`` eval end to end: FID vs NFE per sampler through `bench run`, sharded and
resumable, every row naming extractor, weights sha256, preprocessing and reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import test_fidelity_support as S


def _suite(ref, root, **over):
    suite = {
        "name": "fid-vs-nfe", "seed": 0, "samples": 48, "batch_size": 16, "shard_size": 24,
        "nfe": [4, 16], "device": "cpu",
        "models": [{"name": "gmm", "label": "g", "params": {"shape": [1, 8, 8], "components": 3,
                                                            "cov": "diag", "var_min": 0.01,
                                                            "var_max": 0.05}}],
        "samplers": ["ddim", "euler"],
        "evals": [{"name": "fidelity", "params": {
            "ref": str(ref), "extractor": "test_proj", "refstats_dir": str(root),
            "metrics": ["fid", {"name": "kid", "params": {"subset_size": 40, "subsets": 10}}, "prc", "dc"]}}],
    }
    suite.update(over)
    return suite


@pytest.fixture
def ref_npz(tmp_path):
    """Exact samples of the same mixture, decoded: the reference the samplers approach."""
    import torch

    from bench.models.gmm import GMMOracle

    m = GMMOracle(shape=[1, 8, 8], components=3, cov="diag", var_min=0.01, var_max=0.05)
    x = m.decode(m.sample_data(200, torch.Generator().manual_seed(5)))
    p = tmp_path / "ref.npz"
    np.savez(p, images=x.numpy())
    return p


def test_fid_vs_nfe_rows_name_what_they_were_computed_against(cli, write_suite, ref_npz, tmp_path):
    suite = write_suite(_suite(ref_npz, tmp_path / "refs"))
    results = tmp_path / "results"
    code, out, err = cli("run", suite, "--results", results, "--executor", "debug")
    assert code == 0, out + err
    df = pd.read_parquet(results)
    assert set(df["metric"]) == {"fid", "kid", "precision", "recall", "density", "coverage"}
    assert len(df) == 2 * 2 * 6 and (df["n_samples"] == 48).all()
    for col, want in (("feature_extractor", "test_proj"), ("weights_sha256", "proj-seed-0"),
                      ("resize", "tf1_bilinear"), ("n_nonfinite", 0)):
        assert (df[col] == want).all(), col
    assert df["ref_id"].str.startswith("array-ref-npz-200-test_proj-tf1_bilinear-").all()
    fid = df[df.metric == "fid"].set_index(["sampler", "nfe"])["value"]
    assert np.isfinite(fid).all()
    kid = df[df.metric == "kid"]
    assert (kid["ci_low"] <= kid["value"]).all() and (kid["value"] <= kid["ci_high"]).all()
    # a second run recomputes nothing
    code, out, _ = cli("run", suite, "--results", results, "--executor", "debug")
    assert code == 0 and " 0 computed, 8 already done" in out
    # the report says what each metric's bracket is (KID's is -/+ std over subsets, not a CI)
    assert cli("report", results, "--out", tmp_path / "rep")[0] == 0
    md = (tmp_path / "rep" / "fid-vs-nfe.md").read_text()
    sections = {s.split("\n", 1)[0].rsplit("— ", 1)[-1]: s for s in md.split("\n## ")[1:]}
    assert "jackknife" in sections["fid"] and "95% CI" in sections["fid"]
    assert "std over subsets" in sections["kid"] and "95% CI" not in sections["kid"]
    for m in ("precision", "recall", "density", "coverage"):
        assert "mean [95% CI] over samples" in sections[m], m


def test_same_fid_whatever_the_sharding(cli, write_suite, ref_npz, tmp_path):
    a = write_suite(_suite(ref_npz, tmp_path / "refs", nfe=[8], samplers=["euler"]), "a.yaml")
    b = write_suite(_suite(ref_npz, tmp_path / "refs", nfe=[8], samplers=["euler"], shard_size=11,
                           batch_size=5), "b.yaml")
    for s, r in ((a, "ra"), (b, "rb")):
        assert cli("run", s, "--results", tmp_path / r, "--executor", "debug")[0] == 0
    da, db = pd.read_parquet(tmp_path / "ra"), pd.read_parquet(tmp_path / "rb")
    va = da.set_index("metric")["value"]
    vb = db.set_index("metric")["value"]
    for m in va.index:
        assert va[m] == pytest.approx(vb[m], rel=1e-9, abs=1e-12), m


def test_suite_validation_of_fidelity_params(cli, write_suite, ref_npz, tmp_path):
    bad = _suite(ref_npz, tmp_path / "refs")
    bad["evals"][0]["params"]["refs"] = "x"
    code, _, err = cli("plan", write_suite(bad))
    assert code == 2 and "refs" in err and "ref" in err


def test_fidelity_with_real_inception_names_its_weights(cli, write_suite, tmp_path):
    """A few samples through the real FID Inception: rows carry the weights' sha256."""
    S.need_fmnist()
    w = S.inception_weights()
    suite = _suite("fmnist-test", tmp_path / "refs", samples=12, batch_size=12, shard_size=12,
                   nfe=[4], samplers=["euler"])
    suite["models"][0]["params"]["shape"] = [1, 28, 28]
    suite["evals"][0]["params"].update(extractor="inception", weights=str(w.path), ref_limit=12,
                                       metrics=["fid"], resize="clean")
    code, out, err = cli("run", write_suite(suite), "--results", tmp_path / "res", "--executor", "debug")
    assert code == 0, out + err
    df = pd.read_parquet(tmp_path / "res")
    row = df[df.metric == "fid"].iloc[0]
    assert row["weights_sha256"] == w.sha256 and row["feature_extractor"] == "inception"
    assert row["resize"] == "clean" and row["ref_id"].startswith("fmnist-test-12-inception-clean-")
    assert np.isfinite(row["value"]) and row["value"] > 0
