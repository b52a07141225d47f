"""Optional feature extractors ``clip`` (open_clip) and ``dinov2`` (transformers), on tiny randomly
initialised models saved to a temporary folder in the layouts the loaders accept (no downloads)."""

from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
import pytest
import torch

from bench.errors import BenchError
from bench.metrics.features import make_extractor

MEAN_STD = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """open_clip hub layout: open_clip_config.json + open_clip_pytorch_model.bin (random ViT)."""
    import open_clip  # the test extra installs it
    d = tmp_path_factory.mktemp("clip")
    cfg = {"model_cfg": {"embed_dim": 16,
                         "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8,
                                        "head_width": 16},
                         "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2,
                                      "layers": 1}},
           "preprocess_cfg": {"size": 32}}
    (d / "open_clip_config.json").write_text(json.dumps(cfg))
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{d}", load_weights=False)
    torch.save(model.state_dict(), d / "open_clip_pytorch_model.bin")
    return d


@pytest.fixture(scope="module")
def dinov2_dir(tmp_path_factory):
    """Hugging Face layout: config.json + model.safetensors (+ preprocessor_config.json)."""
    import transformers  # the test extra installs it
    d = tmp_path_factory.mktemp("dinov2")
    torch.manual_seed(0)
    cfg = transformers.Dinov2Config(hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=48, image_size=28, patch_size=14)
    transformers.Dinov2Model(cfg).save_pretrained(d)
    (d / "preprocessor_config.json").write_text(json.dumps(
        {"size": {"shortest_edge": 32}, "crop_size": {"height": 28, "width": 28},
         "do_center_crop": True, "resample": 3, **MEAN_STD}))
    return d


def _images(n: int, seed: int, channels: int = 1, size: int = 20) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)


@pytest.fixture(params=["clip", "dinov2"])
def setup(request, clip_dir, dinov2_dir):
    folder = {"clip": clip_dir, "dinov2": dinov2_dir}[request.param]
    files = {"clip": "open_clip_pytorch_model.bin", "dinov2": "model.safetensors"}
    return request.param, folder, folder / files[request.param], {"clip": 16, "dinov2": 24}[request.param]


def test_features_are_deterministic_batch_invariant_and_recorded(setup):
    name, folder, weights_file, dim = setup
    ext = make_extractor(name, weights=str(folder), batch_size=3)
    x = _images(7, 0)
    f = ext(x)["pool"]
    assert ext.dim == dim and f.shape == (7, dim) and f.dtype == torch.float32
    assert torch.isfinite(f).all()
    assert torch.equal(ext(x)["pool"], f)  # deterministic
    whole = make_extractor(name, weights=str(folder), batch_size=16)(x)["pool"]
    torch.testing.assert_close(whole, f, rtol=1e-5, atol=1e-5)  # batch split changes nothing
    torch.testing.assert_close(ext(x[4:5])["pool"], f[4:5], rtol=1e-5, atol=1e-5)
    assert torch.cdist(f, f)[~torch.eye(7, dtype=torch.bool)].min() > 1e-3  # distinct images differ
    rgb = ext(x.expand(-1, 3, -1, -1))["pool"]  # grayscale is RGB with equal channels
    torch.testing.assert_close(rgb, f)
    d = ext.describe()
    assert d["extractor"] == name and d["dim"] == dim and d["has_logits"] is False
    assert d["weights_sha256"] == hashlib.sha256(weights_file.read_bytes()).hexdigest()
    assert d["weights_source"] == "explicit" and d["weights_file"] == weights_file.name
    assert d["preprocess"] and ext.key()["preprocess"] == d["preprocess"]
    json.dumps(d)  # recorded in result rows and refstats metadata


def test_env_var_weights_and_no_logits(setup, monkeypatch):
    name, folder, _, dim = setup
    monkeypatch.setenv(f"BENCH_{name.upper()}_WEIGHTS", str(folder))
    ext = make_extractor(name)
    assert ext.describe()["weights_source"] == "env" and ext.dim == dim
    with pytest.raises(BenchError, match="has none"):
        ext(_images(2, 0), logits=True)
    with pytest.raises(BenchError, match="own preprocessing"):
        make_extractor(name, resize="clean")


def test_clip_preprocessing_is_open_clips_transform(clip_dir):
    from PIL import Image
    import open_clip

    ext = make_extractor("clip", weights=str(clip_dir))
    x = _images(2, 5, channels=3, size=40)
    _, _, pre = open_clip.create_model_and_transforms(f"local-dir:{clip_dir}")
    ref = torch.stack([pre(Image.fromarray(a.permute(1, 2, 0).numpy())) for a in x])
    torch.testing.assert_close(ext.transform_images(x), ref)
    assert ext.describe()["preprocess"]["interpolation"] == "bicubic"
    assert ext.describe()["preprocess"]["size"] == [32, 32]


def test_dinov2_features_are_the_cls_token(dinov2_dir):
    from transformers import Dinov2Model

    ext = make_extractor("dinov2", weights=str(dinov2_dir))
    x = _images(3, 2)
    px = ext.transform_images(x)
    assert px.shape == (3, 3, 28, 28)
    model = Dinov2Model.from_pretrained(str(dinov2_dir)).eval()
    with torch.no_grad():
        cls = model(pixel_values=px).last_hidden_state[:, 0]
    torch.testing.assert_close(ext(x)["pool"], cls)


@pytest.mark.parametrize("name", ["clip", "dinov2"])
def test_missing_weights_name_every_way(name, monkeypatch, tmp_path):
    env = f"BENCH_{name.upper()}_WEIGHTS"
    monkeypatch.delenv(env, raising=False)
    with pytest.raises(BenchError) as e:
        make_extractor(name)
    msg = str(e.value)
    for part in ("'weights' parameter", "--weights", f"${env}", "huggingface-cli download",
                 "nothing is downloaded"):
        assert part in msg, part
    with pytest.raises(BenchError, match=f"{tmp_path / 'nope'}.*do not exist"):
        make_extractor(name, weights=str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchError, match="holds none of"):
        make_extractor(name, weights=str(tmp_path / "empty"))


def test_clip_file_for_another_architecture_is_refused(clip_dir):
    with pytest.raises(BenchError, match="cannot load open_clip weights .* into architecture 'ViT-B-32'"):
        make_extractor("clip", weights=str(clip_dir / "open_clip_pytorch_model.bin"))
    with pytest.raises(BenchError, match="unknown open_clip architecture 'ViT-X'"):
        make_extractor("clip", weights=str(clip_dir / "open_clip_pytorch_model.bin"), arch="ViT-X")


def test_inception_has_no_arch_parameter():
    with pytest.raises(BenchError, match="no parameter.*'arch'"):
        make_extractor("inception", arch="ViT-B-32")


# ------------------------------------------------------------------------- FID end to end
def test_fid_with_clip_features_end_to_end(clip_dir, tmp_path, cli):
    from bench.generate import Generation
    from bench.metrics.base import MetricContext
    from bench.metrics.fid import FID
    from bench.models.gmm import GMMOracle

    rng = np.random.default_rng(0)
    ref = tmp_path / "ref.npz"
    np.savez(ref, images=rng.integers(0, 256, size=(60, 8, 8, 1), dtype=np.uint8))
    params = {"ref": str(ref), "extractor": "clip", "weights": str(clip_dir),
              "refstats_dir": str(tmp_path / "refs")}
    adapter = GMMOracle(shape=[1, 8, 8], components=3, cov="diag", var_min=0.01, var_max=0.1)
    m = FID(MetricContext(adapter, torch.device("cpu"), None, params=params))
    x = torch.rand((40, 1, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 - 1
    m.update(Generation.of_samples(adapter, np.arange(40), x))
    state = m.state()
    assert state["sum"].shape == (16,) and state["features"].shape == (40, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fid, lo, hi = FID.compute(state)["fid"]
    assert np.isfinite(fid) and fid > 0 and lo < fid < hi
    desc = FID.describe(state)
    assert desc["feature_extractor"] == "clip" and desc["resize"] == "open_clip"
    assert desc["weights_sha256"] == hashlib.sha256(
        (clip_dir / "open_clip_pytorch_model.bin").read_bytes()).hexdigest()
    # the CLI on image arrays: the same extractor, the same kind of numbers, with an interval
    gen = tmp_path / "gen.npz"
    np.savez(gen, images=rng.integers(0, 200, size=(40, 8, 8, 1), dtype=np.uint8))
    code, out, err = cli("fid", gen, ref, "--extractor", "clip", "--weights", clip_dir,
                         "--refstats-dir", tmp_path / "refs")
    assert code == 0, err
    assert out.startswith("FID") and "95% CI [" in out and "extractor: clip" in out
    code, out2, err = cli("fid", gen, ref, "--extractor", "clip", "--weights", clip_dir,
                          "--refstats-dir", tmp_path / "refs", "--resize", "clean")
    assert code == 2 and "own preprocessing" in err
