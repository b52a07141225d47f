"""Reference statistics registry and the `bench fid` / `bench refstats` commands."""

from __future__ import annotations

import numpy as np
import pytest

import test_fidelity_support as S
from bench.data import open_dataset
from bench.errors import BenchError
from bench.metrics import refstats
from bench.metrics.fid import frechet_distance


@pytest.fixture
def arrays(tmp_path):
    rng = np.random.default_rng(0)
    a = tmp_path / "gen.npz"
    b = tmp_path / "ref.npz"
    np.savez(a, arr_0=rng.integers(0, 256, size=(40, 12, 12, 3), dtype=np.uint8))
    np.savez(b, images=rng.integers(0, 200, size=(50, 3, 12, 12), dtype=np.uint8))
    return a, b


def test_build_twice_recomputes_nothing_and_keys_by_content(arrays, tmp_path):
    root = tmp_path / "refs"
    ext = S.ProjectionExtractor()
    ds = open_dataset(str(arrays[1]))
    before = S.ProjectionExtractor.calls
    ref, built = refstats.build(ds, ext, root=root)
    assert built and S.ProjectionExtractor.calls - before == 50
    again, built2 = refstats.build(ds, ext, root=root)
    assert not built2 and S.ProjectionExtractor.calls - before == 50  # nothing recomputed
    assert again.id == ref.id and np.array_equal(again.sigma, ref.sigma)
    # different preprocessing, weights, data or count -> different id
    ids = {ref.id,
           refstats.ref_id_for(ds, S.ProjectionExtractor(resize="clean"))[0],
           refstats.ref_id_for(ds, S.ProjectionExtractor(seed=1))[0],
           refstats.ref_id_for(ds, ext, limit=49)[0],
           refstats.ref_id_for(open_dataset(str(arrays[0])), ext)[0]}
    assert len(ids) == 5
    assert ref.meta["data_sha256"] == ds.content_hash() and ref.meta["weights_sha256"] == "proj-seed-0"
    listed = refstats.list_refs(root)
    assert [r["id"] for r in listed] == [ref.id] and listed[0]["n"] == 50


@pytest.mark.parametrize("fmt", ["pytorch-fid", "clean-fid", "edm"])
def test_import_mu_sigma_files(fmt, arrays, tmp_path):
    root = tmp_path / "refs"
    ref, _ = refstats.build(open_dataset(str(arrays[1])), S.ProjectionExtractor(), root=root)
    f = tmp_path / f"{fmt}.npz"
    # pytorch-fid and clean-fid save mu/sigma with savez_compressed; EDM with savez
    (np.savez if fmt == "edm" else np.savez_compressed)(f, mu=ref.mu, sigma=ref.sigma)
    imp = refstats.import_stats(f, name="cifar", fmt=fmt, root=root,
                                meta={"resize": "clean", "weights_sha256": "abc"})
    assert imp.id.startswith("cifar-imported-") and imp.features is None
    assert imp.meta["source"] == f"imported ({fmt})" and imp.meta["extractor"]["resize"] == "clean"
    loaded = refstats.load(imp.id, str(root))
    assert frechet_distance(ref.mu, ref.sigma, loaded.mu, loaded.sigma) == pytest.approx(0, abs=1e-9)
    with pytest.raises(BenchError, match="needs the reference's per-image features"):
        loaded.require_features("kid")


def test_import_clean_fid_kid_features(arrays, tmp_path):
    feats = np.random.default_rng(1).normal(size=(30, 16)).astype(np.float32)
    f = tmp_path / "kid.npz"
    np.savez_compressed(f, feats=feats)
    imp = refstats.import_stats(f, root=tmp_path / "refs")
    assert imp.n == 30 and imp.features is not None
    assert np.allclose(imp.mu, feats.mean(0)) and np.allclose(imp.sigma, np.cov(feats, rowvar=False))


def test_unknown_id_lists_known_ones(tmp_path):
    with pytest.raises(BenchError, match="unknown reference statistics id"):
        refstats.load("nope", str(tmp_path))


def test_cli_refstats_build_list_import_and_fid(cli, arrays, tmp_path):
    root = str(tmp_path / "refs")
    code, out, err = cli("refstats", "build", "--dataset", arrays[1], "--extractor", "test_proj",
                         "--refstats-dir", root)
    assert code == 0, err
    ref_id = out.strip()
    assert "built" in err
    code, out, err = cli("refstats", "build", "--dataset", arrays[1], "--extractor", "test_proj",
                         "--refstats-dir", root)
    assert code == 0 and out.strip() == ref_id and "nothing recomputed" in err
    code, out, _ = cli("refstats", "list", "--refstats-dir", root)
    assert ref_id in out and "test_proj" in out
    # generated = .npz images, reference = the refstats id or the data itself: same numbers
    code, out1, err1 = cli("fid", arrays[0], ref_id, "--extractor", "test_proj", "--refstats-dir", root,
                           "--metrics", "fid,kid,prc,dc", "--kid-subset-size", "40")
    assert code == 0, err1
    for name in ("FID", "KID", "PRECISION", "RECALL", "DENSITY", "COVERAGE"):
        assert name in out1
    assert "weights sha256 proj-seed-0" in out1
    code, out2, _ = cli("fid", arrays[0], arrays[1], "--extractor", "test_proj", "--refstats-dir", root,
                        "--metrics", "fid,kid,prc,dc", "--kid-subset-size", "40")
    assert out1.splitlines()[:6] == out2.splitlines()[:6]
    # import through the CLI
    f = tmp_path / "stats.npz"
    ref = refstats.load(ref_id, root)
    np.savez(f, mu=ref.mu, sigma=ref.sigma)
    code, out, _ = cli("refstats", "import", f, "--name", "mine", "--refstats-dir", root)
    assert code == 0 and out.strip().startswith("mine-imported-")
    code, out, _ = cli("fid", arrays[0], out.strip(), "--extractor", "test_proj", "--refstats-dir", root)
    assert code == 0 and out.split()[1] == out1.split()[1]  # same FID


def test_cli_fid_bad_input(cli, arrays, tmp_path):
    code, _, err = cli("fid", arrays[0], tmp_path / "missing", "--extractor", "test_proj",
                       "--refstats-dir", tmp_path)
    assert code == 2 and "not a refstats id" in err
    code, _, err = cli("fid", arrays[0], arrays[1], "--extractor", "test_proj", "--metrics", "fdi",
                       "--refstats-dir", tmp_path)
    assert code == 2 and "unknown" in err
    bad = tmp_path / "nan.npz"
    x = np.zeros((5, 3, 8, 8), np.float32)
    x[1, 0, 0, 0] = np.nan
    x[3] = np.inf
    np.savez(bad, images=x)
    code, _, err = cli("fid", bad, arrays[1], "--extractor", "test_proj", "--refstats-dir", tmp_path)
    assert code == 2 and "2 of 5 images contain NaN or Inf" in err
