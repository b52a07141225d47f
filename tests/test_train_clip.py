"""``bench train`` for ``kind: clip``: config errors, resumption, the exported folder, and the
shipped ``fmnist-clip``."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.errors import BenchError
from bench.train_clip import ClipTrainConfig, load_captioned, pixel_values, train

from conftest import ROOT

SHIPPED = ROOT / "bench" / "checkpoints" / "fmnist-clip" / "model"
TINY = ["vision_width=16", "text_width=16", "vision_layers=1", "text_layers=1", "heads=2",
        "projection_dim=8", "batch_size=32", "n_merges=50", "threads=1", "checkpoint_every=2",
        "limit=640"]


def tiny(tmp_path: Path, *more: str) -> ClipTrainConfig:
    cfg = ClipTrainConfig.from_yaml("fmnist-clip", [*TINY, *more])
    cfg.out = str(tmp_path)
    return cfg


@pytest.mark.parametrize("override, field", [
    (["kind=vae"], "kind"), (["patch_size=5"], "patch_size"), (["vision_width=30"], "vision_width"),
    (["batch_size=1"], "batch_size"), (["precision=fp16"], "precision"), (["typo_field=1"], "typo_field"),
    (["lr=abc"], "lr"), (["limit=10"], "limit")])
def test_config_errors_name_the_field(override, field):
    with pytest.raises(BenchError, match=field):
        ClipTrainConfig.from_yaml("fmnist-clip", override)


def test_resumed_training_takes_the_same_steps(tmp_path, fmnist):
    straight = tiny(tmp_path / "a", "max_steps=4")
    train(straight, progress=False, stop_after=4)
    resumed = tiny(tmp_path / "b", "max_steps=4")
    train(resumed, progress=False, stop_after=2)
    train(resumed, progress=False, stop_after=2)
    la = (tmp_path / "a" / "losses.jsonl").read_text()
    assert la == (tmp_path / "b" / "losses.jsonl").read_text() and len(la.splitlines()) == 4
    sa = torch.load(tmp_path / "a" / "state.pt", weights_only=True)["model"]
    sb = torch.load(tmp_path / "b" / "state.pt", weights_only=True)["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    other = tiny(tmp_path / "b", "max_steps=4", "lr=0.01")
    with pytest.raises(BenchError, match="another config"):
        train(other, progress=False, stop_after=1)


def test_processor_of_the_export_matches_the_training_transform(tmp_path, fmnist):
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    summary = train(tiny(tmp_path, "max_steps=1"), progress=False)
    folder = Path(summary["export"])
    for f in ("config.json", "model.safetensors", "vocab.json", "merges.txt", "README.md",
              "preprocessor_config.json", "training.json"):
        assert (folder / f).is_file(), f
    proc = CLIPProcessor.from_pretrained(folder)
    imgs = load_captioned("fmnist-test").images[:8]
    got = proc(images=[Image.fromarray(x) for x in imgs], return_tensors="pt").pixel_values
    assert torch.allclose(got, pixel_values(imgs), atol=1e-6)
    model = CLIPModel.from_pretrained(folder)
    assert model.config.text_config.eos_token_id == proc.tokenizer.eos_token_id
    meta = json.loads((folder / "training.json").read_text())
    assert 0 <= meta["eval"]["zero_shot_accuracy"] <= 1 and meta["steps"] == 1


def test_shipped_fmnist_clip_classifies_and_reads_attributes(fmnist):
    """The shipped weights match their card and know the classes and attribute words: zero-shot
    accuracy on 2000 test images far above chance (0.1), and the brightness word right more
    often than not."""
    from transformers import CLIPModel, CLIPTokenizer

    from bench.hashing import file_sha256
    from bench.train_clip import class_prompts, embed_images, embed_texts

    meta = json.loads((SHIPPED / "training.json").read_text())
    assert file_sha256(SHIPPED / "model.safetensors") == meta["weights_sha256"]
    model, tok = CLIPModel.from_pretrained(SHIPPED).eval(), CLIPTokenizer.from_pretrained(SHIPPED)
    data = load_captioned("fmnist-test")
    n = 2000
    img = embed_images(model, data.images[:n])
    cls = torch.nn.functional.normalize(
        torch.stack([embed_texts(model, tok, class_prompts(c)).mean(0) for c in range(10)]), dim=-1)
    acc = float(((img @ cls.T).argmax(1).numpy() == data.labels[:n]).mean())
    assert acc > 0.6, acc
    assert abs(acc - meta["eval"]["zero_shot_accuracy"]) < 0.05
    sel = [i for i in range(n) if data.attributes[i].brightness]
    from bench.data.captions import CLASS_NAMES

    dark = embed_texts(model, tok, [f"a dark {CLASS_NAMES[data.labels[i]]}" for i in sel])
    light = embed_texts(model, tok, [f"a light {CLASS_NAMES[data.labels[i]]}" for i in sel])
    says_light = ((img[sel] * light).sum(1) > (img[sel] * dark).sum(1)).numpy()
    truth = np.array([data.attributes[i].brightness == "light" for i in sel])
    assert (says_light == truth).mean() > 0.6
