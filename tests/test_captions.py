"""Captioned Fashion-MNIST: measured attributes, deterministic captions, held-out eval prompts."""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.conditions import load_prompts
from bench.data import captions as C
from bench.data.captions import (ATTRIBUTES, CLASS_NAMES, EVAL_PROMPTS_FILE, SYNONYMS, THRESHOLDS,
                                 WORDS, Attributes, eval_prompts, fit_thresholds, measure,
                                 training_caption, training_captions, write_eval_prompts)

ROOT = Path(__file__).resolve().parent.parent
ALL_WORDS = {w: a for a, pair in WORDS.items() for w in pair}


@lru_cache(maxsize=1)
def train() -> dict[str, Any]:
    """fmnist-train images, labels, raw measures, attributes and seed-0 captions (once)."""
    from bench.data import open_dataset

    ds = open_dataset("fmnist-train")
    x, y = ds.images(0, len(ds)), np.asarray(ds.labels).astype(np.int64)
    return {"x": x, "y": y, "raw": C.raw_measures(x), "attrs": measure(x, y),
            "captions": training_captions(x, y)}


def mentions(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


# ------------------------------------------------------------------------------------- API
def test_vocabulary() -> None:
    assert CLASS_NAMES == ("t-shirt", "trousers", "pullover", "dress", "coat", "sandal", "shirt",
                           "sneaker", "bag", "ankle boot")
    assert ATTRIBUTES == ("brightness", "size", "pattern")
    assert WORDS == {"brightness": ("dark", "light"), "size": ("small", "large"),
                     "pattern": ("plain", "patterned")}
    assert sorted(SYNONYMS) == list(range(10))
    for label, names in SYNONYMS.items():
        assert names[0] == CLASS_NAMES[label] and len(names) >= 2 and len(set(names)) == len(names)
    assert EVAL_PROMPTS_FILE == ROOT / "suites/prompts/fmnist-t2i-eval.csv"
    assert Attributes("dark", "", "patterned").words() == {"brightness": "dark",
                                                           "pattern": "patterned"}
    assert list(Attributes("light", "large", "plain").words()) == list(ATTRIBUTES)
    assert Attributes("", "", "").words() == {}


def test_measure_synthetic_images() -> None:
    """Words follow the pixels: uniform vs striped, dim vs bright, small vs large squares."""
    img = np.zeros((4, 28, 28), np.uint8)
    img[0, 8:20, 8:20] = 60                     # small, dim, uniform
    img[1, 1:27, 1:27] = 250                    # large, bright, uniform
    img[2, 1:27, 1:27] = 250
    img[2, 1:27, 1:27:2] = 90                   # large, striped
    img[3, 8:20, 8:20] = 250                    # small, bright
    a = measure(img[:, None], np.full(4, 4))    # coat thresholds; NCHW accepted too
    assert a[0] == Attributes("dark", "small", "plain")
    assert a[1] == Attributes("light", "large", "plain")
    assert a[2].size == "large" and a[2].pattern == "patterned"
    assert a[3].brightness == "light" and a[3].size == "small"
    assert measure(img, np.full(4, 4)) == a     # (N,28,28) gives the same
    # a pure function of (image, label): the same image measures the same alone or in a batch
    assert measure(img[2:3], np.array([4])) == [a[2]]
    raw = C.raw_measures(img)
    assert raw["size"][0] == 144 and raw["brightness"][0] == 60 and raw["pattern"][0] == 0
    # |250 - 90| between horizontal interior neighbours, 0 between vertical ones
    assert raw["pattern"][2] == 80


def test_measure_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        measure(np.zeros((2, 28, 28), np.float32), np.zeros(2))
    with pytest.raises(ValueError):
        measure(np.zeros((2, 28, 28), np.uint8), np.zeros(3))
    with pytest.raises(ValueError):
        measure(np.zeros((1, 28, 28), np.uint8), np.array([10]))


# ------------------------------------------------------------------------ thresholds (data)
def test_thresholds_constant_matches_training_terciles(fmnist: None) -> None:
    d = train()
    fitted = fit_thresholds(d["x"], d["y"])
    assert sorted(fitted) == sorted(THRESHOLDS) == list(range(10))
    for c in range(10):
        for a in ATTRIBUTES:
            lo, hi = fitted[c][a]
            assert lo < hi, (c, a)
            np.testing.assert_allclose(THRESHOLDS[c][a], (lo, hi), atol=0.0051,
                                       err_msg=f"THRESHOLDS[{c}][{a!r}] drifted from the data")


def test_terciles_split_each_class_in_thirds(fmnist: None) -> None:
    d = train()
    y, attrs = d["y"], d["attrs"]
    for a in ATTRIBUTES:
        v = np.array([getattr(t, a) for t in attrs])
        for c in range(10):
            m = y == c
            for w in (*WORDS[a], ""):
                frac = float(np.mean(v[m] == w))
                assert 0.30 < frac < 0.37, (a, c, w, frac)


def test_words_agree_with_independent_pixel_statistics(fmnist: None) -> None:
    """In every class: 'dark' images have lower mean intensity (foreground and whole image) than
    'light' ones; 'large' ones cover a bigger bounding box than 'small' ones; 'patterned' ones have
    a higher spread of intensities inside the garment (its outline excluded) and a larger
    Laplacian there than 'plain' ones."""
    d, n = train(), 20000  # the first 20000 images (about 2000 per class) keep it quick
    x, y = d["x"][:n, 0].astype(np.float32), d["y"][:n]
    raw, attrs = {a: v[:n] for a, v in d["raw"].items()}, d["attrs"][:n]
    fg = x > C.FOREGROUND
    rows, cols = fg.any(2), fg.any(1)
    bbox = rows.sum(1) * cols.sum(1)
    whole_mean = x.mean((1, 2))
    inner = fg.copy()
    inner[:, 0, :] = inner[:, -1, :] = inner[:, :, 0] = inner[:, :, -1] = False
    inner[:, 1:-1, 1:-1] &= (fg[:, :-2, 1:-1] & fg[:, 2:, 1:-1] & fg[:, 1:-1, :-2]
                             & fg[:, 1:-1, 2:])
    n_inner = np.maximum(inner.sum((1, 2)), 1)
    inner_mean = np.where(inner, x, 0).sum((1, 2)) / n_inner
    inner_std = np.sqrt(np.where(inner, (x - inner_mean[:, None, None]) ** 2, 0).sum((1, 2))
                        / n_inner)
    lap = np.abs(4 * x[:, 1:-1, 1:-1] - x[:, :-2, 1:-1] - x[:, 2:, 1:-1] - x[:, 1:-1, :-2]
                 - x[:, 1:-1, 2:])
    lap_mean = np.where(inner[:, 1:-1, 1:-1], lap, 0).sum((1, 2)) / n_inner
    checks = {"brightness": [raw["brightness"], whole_mean], "size": [raw["size"], bbox],
              "pattern": [raw["pattern"], inner_std, lap_mean]}
    for a, stats in checks.items():
        v = np.array([getattr(t, a) for t in attrs])
        low, high = WORDS[a]
        for c in range(10):
            lo_m, hi_m = (y == c) & (v == low), (y == c) & (v == high)
            for s in stats:
                assert s[lo_m].mean() < s[hi_m].mean(), (a, c)
            # and the raw measure separates the terciles completely
            assert stats[0][lo_m].max() <= stats[0][hi_m].min(), (a, c)


# ----------------------------------------------------------------------------------- captions
GOLDEN = [  # pins the hashlib scheme: Python's salted hash() would change these between runs
    (Attributes("dark", "large", "patterned"), 4, 0, 0, 0),
    (Attributes("dark", "large", "patterned"), 4, 1, 0, 0),
    (Attributes("light", "small", ""), 9, 7, 0, 0),
    (Attributes("light", "small", ""), 9, 7, 3, 0),
    (Attributes("", "large", "plain"), 1, 12, 0, 2),
]


def test_training_caption_golden_values() -> None:
    got = [training_caption(a, label, i, seed, k).text for a, label, i, seed, k in GOLDEN]
    assert got == ["a product photo of a dark patterned coat", "a product photo of a jacket",
                   "a product photo of a boot", "a boot that is light and small",
                   "a grayscale photo of a pair of large pants"]


def test_determinism_and_seed() -> None:
    a = Attributes("dark", "large", "patterned")
    caps = [training_caption(a, 2, i) for i in range(300)]
    assert caps == [training_caption(a, 2, i, seed=0, k=0) for i in range(300)]
    other_seed = [training_caption(a, 2, i, seed=1) for i in range(300)]
    other_k = [training_caption(a, 2, i, k=1) for i in range(300)]
    assert sum(x.text != y.text for x, y in zip(caps, other_seed)) > 100
    assert sum(x.text != y.text for x, y in zip(caps, other_k)) > 100
    assert len({c.text for c in caps}) > 50


def test_training_captions_are_deterministic(fmnist: None) -> None:
    d = train()
    x, y = d["x"][:2000], d["y"][:2000]
    assert training_captions(x, y) == d["captions"][:2000]
    again = [training_caption(a, lab, i) for i, (a, lab) in
             enumerate(zip(measure(x[:100], y[:100]), y[:100]))]
    assert again == d["captions"][:100]
    seeded = training_captions(x, y, seed=5)
    assert sum(a.text != b.text for a, b in zip(seeded, d["captions"])) > 1000


def test_caption_text_matches_its_fields(fmnist: None) -> None:
    d = train()
    for cap, attrs, label in zip(d["captions"], d["attrs"], d["y"].tolist()):
        measured = attrs.words()
        assert cap.label == label and cap.noun in SYNONYMS[label]
        assert mentions(cap.text, cap.noun), cap
        assert len(cap.attributes) <= 2, cap
        assert list(cap.attributes) == [a for a in ATTRIBUTES if a in cap.attributes]
        for a, w in cap.attributes.items():
            assert measured.get(a) == w, (cap, attrs)  # only words the pixels support
            assert mentions(cap.text, w), cap
        for w, a in ALL_WORDS.items():  # no other attribute word ("dark" never says "light")
            if mentions(cap.text, w):
                assert cap.attributes.get(a) == w, cap
        assert C.render(cap.template, cap.noun, cap.attributes) == cap.text


def test_choices_are_balanced(fmnist: None) -> None:
    d = train()
    caps, attrs, y = d["captions"], d["attrs"], d["y"]
    n_measured = np.array([len(a.words()) for a in attrs])
    counts = Counter(len(c.attributes) for c, n in zip(caps, n_measured) if n >= 2)
    total = sum(counts.values())
    assert set(counts) == {0, 1, 2}
    for r in (0, 1, 2):
        assert abs(counts[r] / total - 1 / 3) < 0.02, counts
    assert all(len(c.attributes) == 0 for c, n in zip(caps, n_measured) if n == 0)
    with_attr = Counter(c.template for c in caps if c.attributes)
    assert set(with_attr) == set(C.TRAINING_TEMPLATES)
    for t, n in with_attr.items():
        assert abs(n / sum(with_attr.values()) - 1 / len(C.TRAINING_TEMPLATES)) < 0.015, with_attr
    without = Counter(c.template for c in caps if not c.attributes)
    assert set(without) == {t for t, (_, needs) in C.TRAINING_TEMPLATES.items() if not needs}
    for t, n in without.items():
        assert abs(n / sum(without.values()) - 1 / len(without)) < 0.02, without
    for label, names in SYNONYMS.items():
        nouns = Counter(c.noun for c, lab in zip(caps, y) if lab == label)
        assert set(nouns) == set(names)
        for n in nouns.values():
            assert abs(n / sum(nouns.values()) - 1 / len(names)) < 0.03, nouns
    mentioned = Counter(a for c in caps for a in c.attributes)
    for a in ATTRIBUTES:
        assert abs(mentioned[a] / sum(mentioned.values()) - 1 / 3) < 0.03, mentioned


def test_adjective_order_and_never_three() -> None:
    for a in (Attributes("dark", "large", "patterned"), Attributes("light", "small", "plain")):
        caps = [training_caption(a, 4, i) for i in range(2000)]
        assert len({len(c.attributes) for c in caps}) == 3
        for c in caps:
            found = [w for w in re.findall(r"[\w-]+", c.text) if w in ALL_WORDS]
            assert len(found) <= 2, c
            # the words come in ATTRIBUTES order (brightness, size, pattern)
            assert [ALL_WORDS[w] for w in found] == [x for x in ATTRIBUTES if x in c.attributes]
    assert C.render("np", "coat", {"pattern": "patterned", "brightness": "dark", "size": "large"}) \
        == "a dark large patterned coat"
    assert C.render("bare", "bag", {"pattern": "plain", "size": "small", "brightness": "light"}) \
        == "light small plain bag"
    assert C.render("that_is", "bag", {"pattern": "plain", "size": "small"}) \
        == "a bag that is small and plain"


# ------------------------------------------------------------------------------------ articles
def check_articles(text: str) -> None:
    for m in re.finditer(r"(?<![\w-])(a|an) ([\w-]+)", text):
        art, nxt = m.group(1), m.group(2)
        assert nxt not in C.PLURAL_NOUNS, text
        assert (art == "an") == (nxt[0] in "aeiou"), text


def test_articles() -> None:
    assert C.render("np", "ankle boot", {}) == "an ankle boot"
    assert C.render("np", "ankle boot", {"brightness": "dark"}) == "a dark ankle boot"
    assert C.render("photo", "trousers", {}) == "a photo of a pair of trousers"
    assert C.render("np", "pants", {"size": "small"}) == "a pair of small pants"
    assert C.render("bare", "trousers", {"brightness": "light"}) == "light trousers"
    assert C.render("that_is", "open-toe shoe", {"pattern": "plain"}) \
        == "an open-toe shoe that is plain"
    assert C.render("image_of", "ankle boot", {}) == "an image of an ankle boot"
    texts = C.training_caption_space(3) | {p["prompt"] for p in eval_prompts()}
    for t in texts:
        check_articles(t)
        assert "a trousers" not in t and "a pants" not in t and "an trousers" not in t
    assert any("an ankle boot" in t for t in texts)
    with pytest.raises(AssertionError):
        check_articles("a ankle boot")
    with pytest.raises(AssertionError):
        check_articles("a photo of a trousers")


# --------------------------------------------------------------------------- evaluation prompts
def test_eval_prompts_are_held_out() -> None:
    assert not set(C.HELD_OUT_TEMPLATES) & set(C.TRAINING_TEMPLATES)
    assert not {f for f in C.HELD_OUT_TEMPLATES.values()} & \
        {f for f, _ in C.TRAINING_TEMPLATES.values()}
    space = C.training_caption_space(3)  # training templates with up to all three attributes
    assert len(space) > 4000
    prompts = [p["prompt"] for p in eval_prompts()]
    assert not set(prompts) & space, sorted(set(prompts) & space)
    # the enumeration covers what training_caption produces
    a = Attributes("light", "small", "plain")
    for label in range(10):
        for i in range(200):
            assert training_caption(a, label, i, seed=label).text in space


def test_eval_prompt_content() -> None:
    prompts = eval_prompts()
    assert len(prompts) == 60
    assert [p["id"] for p in prompts] == [f"p{i:03d}" for i in range(60)]
    assert len({p["prompt"] for p in prompts}) == 60
    by_cat = Counter(p["category"] for p in prompts)
    assert by_cat == {c: 10 for c in C.EVAL_CATEGORIES}
    for p in prompts:
        cat, label, noun, attrs = p["category"], p["label"], p["noun"], p["attributes"]
        assert noun in SYNONYMS[label] and mentions(p["prompt"], noun)
        assert (noun == CLASS_NAMES[label]) == (cat != "synonym")
        expected = {"class": set(), "synonym": set(), "composite": set(ATTRIBUTES)}.get(cat, {cat})
        assert set(attrs) == expected, p
        for w, a in ALL_WORDS.items():
            assert mentions(p["prompt"], w) == (attrs.get(a) == w), p
    for a in ATTRIBUTES:  # low and high both asked for, alternating by class
        words = [p["attributes"][a] for p in prompts if p["category"] == a]
        assert Counter(words) == {WORDS[a][0]: 5, WORDS[a][1]: 5}
        assert all(words[i] != words[i + 1] for i in range(9))
    combos = {tuple(p["attributes"].values()) for p in prompts if p["category"] == "composite"}
    assert len(combos) == 8


def test_shipped_file_is_current(tmp_path: Path) -> None:
    out = tmp_path / "eval.csv"
    write_eval_prompts(out)
    assert EVAL_PROMPTS_FILE.read_bytes() == out.read_bytes(), \
        "suites/prompts/fmnist-t2i-eval.csv drifted: run 'python -m bench.data.captions eval-prompts'"
    write_eval_prompts(out, C.robustness_prompts())
    assert C.ROBUSTNESS_PROMPTS_FILE.read_bytes() == out.read_bytes()
    robust = C.read_eval_prompts(C.ROBUSTNESS_PROMPTS_FILE)
    assert len(robust) == 24 and {p["label"] for p in robust} == {0, 3, 6, 9}
    assert Counter(p["category"] for p in robust) == {c: 4 for c in C.EVAL_CATEGORIES}
    assert C.read_eval_prompts(EVAL_PROMPTS_FILE) == eval_prompts()
    header = EVAL_PROMPTS_FILE.read_text().splitlines()[0]
    assert header == "id,prompt,category,label,noun,attributes"


def test_shipped_file_loads_as_prompts() -> None:
    conds, source = load_prompts("suites/prompts/fmnist-t2i-eval.csv", base=ROOT)
    assert source == "fmnist-t2i-eval.csv"
    assert len(conds) == 60
    assert len({c.id for c in conds}) == 60
    assert Counter(c.category for c in conds) == {c: 10 for c in C.EVAL_CATEGORIES}
    assert [(c.id, c.text, c.category) for c in conds] == \
        [(p["id"], p["prompt"], p["category"]) for p in eval_prompts()]
