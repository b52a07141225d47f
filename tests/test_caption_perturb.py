"""Robustness training's caption perturbation (``bench.train_clip.perturb_caption``): the share
perturbed, one rule-made change per caption within the attack's budget, determinism, and the
config fields' checks."""

from __future__ import annotations

import numpy as np
import pytest

from bench.attacks.perturb import Budget, split_words
from bench.errors import BenchError
from bench.train_clip import ClipTrainConfig, perturb_caption
from bench.train_latent import T2ITrainConfig

CAPTIONS = ["a photo of a dark ankle boot", "a small patterned pullover", "the light sneaker",
            "an image of a large plain dress", "a product photo of a light shirt"]


def test_share_budget_and_determinism() -> None:
    rules = ["typo", "glyph", "phonetic"]
    out = [perturb_caption(CAPTIONS[i % 5], i, 0, 0, 0.3, rules) for i in range(1500)]
    changed = [(CAPTIONS[i % 5], o) for i, o in enumerate(out) if o != CAPTIONS[i % 5]]
    assert 0.25 < len(changed) / len(out) < 0.35  # these captions all have room for an edit
    for orig, new in changed:
        a, b = split_words(orig), split_words(new)
        assert len(a) == len(b) and sum(x.text != y.text for x, y in zip(a, b)) == 1
        assert Budget().allows(orig, new, 1)
    assert out == [perturb_caption(CAPTIONS[i % 5], i, 0, 0, 0.3, rules) for i in range(1500)]
    other_epoch = [perturb_caption(CAPTIONS[i % 5], i, 0, 1, 0.3, rules) for i in range(1500)]
    assert other_epoch != out
    assert all(perturb_caption(c, i, 0, 0, 0.0, rules) == c for i, c in enumerate(CAPTIONS))
    only_glyph = [perturb_caption(CAPTIONS[i % 5], i, 0, 0, 1.0, ["glyph"]) for i in range(50)]
    assert all(not o.isascii() for o in only_glyph)


@pytest.mark.parametrize("cls,extra", [(ClipTrainConfig, {}),
                                       (T2ITrainConfig, {"vae": "v", "text_encoder": "t"})])
def test_config_checks(cls, extra) -> None:
    for field, value in (("caption_perturb", 1.5), ("caption_perturb", "lots"),
                         ("perturb_rules", ["leet"]), ("perturb_rules", [])):
        cfg = cls(name="x", **extra, **{field: value})
        with pytest.raises(BenchError, match=field):
            cfg.validate("test config")
    cls(name="x", **extra, caption_perturb=0.3).validate("test config")
    assert np.isclose(cls(name="x", **extra).caption_perturb, 0.0)
