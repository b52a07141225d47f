"""Captioned Fashion-MNIST: deterministic captions whose attribute words are measured from pixels.

Fashion-MNIST has class labels only. To train a small CLIP and a text-to-image model on it, every
image gets a caption built from its label and from three attributes measured from its pixels, so
a caption says something the image really shows ("a dark large coat", "a pair of plain
trousers"), and a held-out prompt set asks for things no training caption says.

Attributes (:func:`measure`), on the foreground (pixels > :data:`FOREGROUND`, i.e. > 20):

* ``brightness``: mean intensity of the foreground pixels -> ``dark`` / ``light``;
* ``size``: number of foreground pixels (area) -> ``small`` / ``large``;
* ``pattern``: mean absolute difference between horizontally and vertically neighbouring pixels
  of the foreground's *interior* (the foreground eroded by one pixel, 4-neighbourhood, so the
  outline of the garment does not count as texture) -> ``plain`` / ``patterned``. Stripes,
  prints, checks and logos score high; uniform fabric scores low. An item without interior
  (a thin strappy sandal) scores 0, i.e. plain.

Each measure is compared with *per-class* thresholds: the 1/3 and 2/3 quantiles of that measure
over the class's images in ``fmnist-train``, frozen as :data:`THRESHOLDS` (made once with
:func:`fit_thresholds`; ``python -m bench.data.captions thresholds`` prints them again). Below the
low one gives the low word, above the high one the high word, in between no word (""). So a
"dark" coat is dark *for a coat*, each word covers about a third of each class, and
:func:`measure` is a pure function of (image, label): it never looks at the rest of the data.

Training captions (:func:`training_caption`): a sha256 hash of ``(seed, index, k)`` (hashlib,
not Python's salted ``hash()``, so captions are the same in every process) chooses how many of
the image's measured (non-empty) attributes to mention (0, 1 or 2, never 3, uniformly among what
the image has), which ones, which name of the class (:data:`SYNONYMS`, canonical first), and one
of the :data:`TRAINING_TEMPLATES` that fits the count. Adjectives in front of the noun always
follow the order of :data:`ATTRIBUTES` (brightness, size, pattern: "a dark large patterned
coat"); articles agree ("an ankle boot", "a dark ankle boot"); plural nouns (trousers, pants)
take "a pair of" where an article is due, and none in templates without one ("dark trousers").

Held-out evaluation prompts (:func:`eval_prompts`, shipped as
``suites/prompts/fmnist-t2i-eval.csv``, :data:`EVAL_PROMPTS_FILE`): 60 prompts, one per class and
category: ``class`` (canonical noun, no attribute), ``synonym`` (the first non-canonical name),
``brightness`` / ``size`` / ``pattern`` (one attribute, low and high word alternating by class),
``composite`` (all three attributes: a combination no training caption has; across the classes
all 8 low/high combinations occur). They use only :data:`HELD_OUT_TEMPLATES`, none of which is a
training template, rotated by (label + category) so each category and each class sees a mix, so
no prompt text equals any possible training caption.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

#: the canonical noun of each Fashion-MNIST label (index = label)
CLASS_NAMES: tuple[str, ...] = ("t-shirt", "trousers", "pullover", "dress", "coat", "sandal",
                                "shirt", "sneaker", "bag", "ankle boot")

#: the names a caption may use for each label, canonical first
SYNONYMS: dict[int, tuple[str, ...]] = {
    0: ("t-shirt", "top", "tee"),
    1: ("trousers", "pants"),
    2: ("pullover", "sweater", "jumper"),
    3: ("dress", "frock"),
    4: ("coat", "jacket"),
    5: ("sandal", "open-toe shoe"),
    6: ("shirt", "blouse"),
    7: ("sneaker", "trainer", "running shoe"),
    8: ("bag", "handbag", "purse"),
    9: ("ankle boot", "boot"),
}

#: nouns that are plural: "a pair of trousers", never "a trousers"
PLURAL_NOUNS: frozenset[str] = frozenset({"trousers", "pants"})

ATTRIBUTES: tuple[str, ...] = ("brightness", "size", "pattern")

#: attribute -> (word below the class's low tercile, word above its high tercile)
WORDS: dict[str, tuple[str, str]] = {"brightness": ("dark", "light"), "size": ("small", "large"),
                                     "pattern": ("plain", "patterned")}

#: a pixel is foreground when its value is above this
FOREGROUND = 20

# Per-class (1/3, 2/3) quantiles (numpy's default, linear) of each raw measure (see raw_measures)
# over the 60000 images of fmnist-train, from fit_thresholds(train images, train labels),
# rounded to 2 decimals. Regenerate with `python -m bench.data.captions thresholds`; the tests
# recompute them from the training data and check this table.
THRESHOLDS: dict[int, dict[str, tuple[float, float]]] = {
    0: {"brightness": (132.26, 184.31), "size": (409.0, 447.0), "pattern": (9.34, 15.93)},
    1: {"brightness": (159.82, 190.58), "size": (241.0, 263.0), "pattern": (13.1, 20.04)},
    2: {"brightness": (133.42, 188.57), "size": (456.0, 508.0), "pattern": (12.75, 17.78)},
    3: {"brightness": (151.27, 193.13), "size": (280.0, 337.0), "pattern": (11.11, 20.89)},
    4: {"brightness": (166.36, 195.89), "size": (429.0, 475.0), "pattern": (13.71, 19.46)},
    5: {"brightness": (117.7, 143.08), "size": (166.0, 228.0), "pattern": (23.92, 33.27)},
    6: {"brightness": (116.88, 174.78), "size": (438.0, 492.0), "pattern": (13.23, 20.36)},
    7: {"brightness": (132.92, 158.44), "size": (211.0, 244.0), "pattern": (21.1, 28.61)},
    8: {"brightness": (158.43, 185.09), "size": (386.0, 460.0), "pattern": (11.53, 17.1)},
    9: {"brightness": (166.59, 187.21), "size": (316.0, 368.0), "pattern": (14.46, 19.63)},
}

#: training templates: id -> (format, needs at least one attribute). Fields: {np} the noun
#: phrase with article and adjectives ("a dark coat", "a pair of dark trousers"), {np0} the same
#: without adjectives, {adjs_noun} adjectives and noun without article, {list} the attribute
#: words as a list ("dark and large").
TRAINING_TEMPLATES: dict[str, tuple[str, bool]] = {
    "np": ("{np}", False),
    "photo": ("a photo of {np}", False),
    "bare": ("{adjs_noun}", False),
    "the": ("the {adjs_noun}", False),
    "product": ("a product photo of {np}", False),
    "grayscale": ("a grayscale photo of {np}", False),
    "that_is": ("{np0} that is {list}", True),
    "comma": ("{np0}, {list}", True),
}

#: evaluation-only templates (none is a training template); "showing" adds " which is {list}"
#: when there are attributes
HELD_OUT_TEMPLATES: dict[str, str] = {
    "image_of": "an image of {np}",
    "black_background": "{np} on a black background",
    "showing": "a picture showing {np0}",
}

#: the categories of the evaluation prompts, in file order
EVAL_CATEGORIES: tuple[str, ...] = ("class", "synonym", "brightness", "size", "pattern",
                                    "composite")
EVAL_COLUMNS: tuple[str, ...] = ("id", "prompt", "category", "label", "noun", "attributes")
EVAL_PROMPTS_FILE: Path = Path(__file__).parents[2] / "suites/prompts/fmnist-t2i-eval.csv"
#: the prompt file of suites/fmnist-robustness.yaml (``robustness_prompts``)
ROBUSTNESS_PROMPTS_FILE: Path = EVAL_PROMPTS_FILE.with_name("fmnist-t2i-robustness.csv")

_HASH_NAMESPACE = "bench.fmnist-captions.v1"


# ----------------------------------------------------------------------------- measurement
@dataclass(frozen=True)
class Attributes:
    """Words measured from one image: the low word, the high word, or "" (middle tercile)."""

    brightness: str
    size: str
    pattern: str

    def words(self) -> dict[str, str]:
        """attribute -> word, only the non-empty ones, in :data:`ATTRIBUTES` order."""
        return {a: getattr(self, a) for a in ATTRIBUTES if getattr(self, a)}


def _as_nhw(images: np.ndarray) -> np.ndarray:
    x = np.asarray(images)
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3:
        raise ValueError(f"expected grayscale images (N,H,W) or (N,1,H,W), got shape {x.shape}")
    if x.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {x.dtype}")
    return x


def raw_measures(images: np.ndarray, chunk: int = 8192) -> dict[str, np.ndarray]:
    """The raw float64 measures behind each attribute, one value per image (see module doc)."""
    x_all = _as_nhw(images)
    n = len(x_all)
    out = {a: np.zeros(n, dtype=np.float64) for a in ATTRIBUTES}
    for s in range(0, n, chunk):
        x = x_all[s:s + chunk].astype(np.int16)
        fg = x > FOREGROUND
        area = fg.sum((1, 2), dtype=np.int64)
        total = np.where(fg, x, 0).sum((1, 2), dtype=np.int64)
        inner = fg.copy()  # erosion, 4-neighbourhood; outside the image is background
        inner[:, 0, :] = inner[:, -1, :] = inner[:, :, 0] = inner[:, :, -1] = False
        inner[:, 1:, :] &= fg[:, :-1, :]
        inner[:, :-1, :] &= fg[:, 1:, :]
        inner[:, :, 1:] &= fg[:, :, :-1]
        inner[:, :, :-1] &= fg[:, :, 1:]
        ph = inner[:, :, 1:] & inner[:, :, :-1]
        pv = inner[:, 1:, :] & inner[:, :-1, :]
        dh = np.where(ph, np.abs(np.diff(x, axis=2)), 0).sum((1, 2), dtype=np.int64)
        dv = np.where(pv, np.abs(np.diff(x, axis=1)), 0).sum((1, 2), dtype=np.int64)
        pairs = ph.sum((1, 2), dtype=np.int64) + pv.sum((1, 2), dtype=np.int64)
        out["brightness"][s:s + chunk] = total / np.maximum(area, 1)
        out["size"][s:s + chunk] = area
        out["pattern"][s:s + chunk] = (dh + dv) / np.maximum(pairs, 1)
    return out


def fit_thresholds(images: np.ndarray, labels: np.ndarray) -> dict[int, dict[str, tuple[float, float]]]:
    """Per-class (1/3, 2/3) quantiles of each raw measure (how :data:`THRESHOLDS` was made)."""
    raw = raw_measures(images)
    y = np.asarray(labels).astype(np.int64)
    out: dict[int, dict[str, tuple[float, float]]] = {}
    for c in sorted(set(y.tolist())):
        m = y == c
        out[int(c)] = {a: tuple(float(q) for q in np.quantile(raw[a][m], [1 / 3, 2 / 3]))
                       for a in ATTRIBUTES}  # type: ignore[misc]
    return out


def measure(images: np.ndarray, labels: np.ndarray) -> list[Attributes]:
    """Attributes of each image, from its pixels and label against the frozen :data:`THRESHOLDS`."""
    raw = raw_measures(images)
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    if len(y) != len(raw["size"]):
        raise ValueError(f"{len(raw['size'])} images but {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() >= len(CLASS_NAMES)):
        raise ValueError(f"labels must lie in 0..{len(CLASS_NAMES) - 1}")
    cols = {}
    for a in ATTRIBUTES:
        lo = np.array([THRESHOLDS[c][a][0] for c in range(len(CLASS_NAMES))])[y]
        hi = np.array([THRESHOLDS[c][a][1] for c in range(len(CLASS_NAMES))])[y]
        low, high = WORDS[a]
        cols[a] = np.where(raw[a] < lo, low, np.where(raw[a] > hi, high, "")).tolist()
    return [Attributes(*t) for t in zip(*(cols[a] for a in ATTRIBUTES))]


# -------------------------------------------------------------------------------- captions
@dataclass(frozen=True)
class Caption:
    """One caption: its text, the label, the class word used, the attributes it mentions."""

    text: str
    label: int
    noun: str
    attributes: dict[str, str]
    template: str


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _word_list(words: Sequence[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _fields(noun: str, attributes: dict[str, str]) -> dict[str, str]:
    words = [attributes[a] for a in ATTRIBUTES if attributes.get(a)]
    adjs_noun = " ".join([*words, noun])
    if noun in PLURAL_NOUNS:
        np_, np0 = f"a pair of {adjs_noun}", f"a pair of {noun}"
    else:
        np_, np0 = f"{_article(adjs_noun)} {adjs_noun}", f"{_article(noun)} {noun}"
    return {"np": np_, "np0": np0, "adjs_noun": adjs_noun, "list": _word_list(words)}


def render(template: str, noun: str, attributes: dict[str, str]) -> str:
    """The text of a training or held-out template for this noun and these attribute words."""
    f = _fields(noun, attributes)
    if template in TRAINING_TEMPLATES:
        fmt, needs = TRAINING_TEMPLATES[template]
        if needs and not f["list"]:
            raise ValueError(f"template '{template}' needs at least one attribute")
        return fmt.format(**f)
    text = HELD_OUT_TEMPLATES[template].format(**f)
    if template == "showing" and f["list"]:
        text += f" which is {f['list']}"
    return text


def _choices(seed: int, index: int, k: int) -> list[int]:
    digest = hashlib.sha256(f"{_HASH_NAMESPACE}|{int(seed)}|{int(index)}|{int(k)}".encode()).digest()
    return [int.from_bytes(digest[i:i + 8], "big") for i in range(0, 32, 8)]


def training_caption(attrs: Attributes, label: int, index: int, seed: int = 0, k: int = 0) -> Caption:
    """The ``k``-th caption of image ``index`` (label and measured attributes given), for ``seed``."""
    label = int(label)
    measured = list(attrs.words().items())
    u_count, u_subset, u_noun, u_template = _choices(seed, index, k)
    count = u_count % (min(2, len(measured)) + 1)
    subsets = list(itertools.combinations(measured, count))
    mentioned = dict(subsets[u_subset % len(subsets)])
    names = SYNONYMS[label]
    noun = names[u_noun % len(names)]
    fitting = [t for t, (_, needs) in TRAINING_TEMPLATES.items() if count or not needs]
    template = fitting[u_template % len(fitting)]
    return Caption(text=render(template, noun, mentioned), label=label, noun=noun,
                   attributes=mentioned, template=template)


def training_captions(images: np.ndarray, labels: np.ndarray, seed: int = 0) -> list[Caption]:
    """One caption per image (``index`` = position, ``k`` = 0)."""
    y = np.asarray(labels).reshape(-1)
    return [training_caption(a, int(lab), i, seed) for i, (a, lab) in
            enumerate(zip(measure(images, y), y.tolist()))]


def training_caption_space(max_attributes: int = 2) -> set[str]:
    """Every text a training template can give, over all labels, names and attribute words
    (up to ``max_attributes`` attributes; training uses at most 2)."""
    out: set[str] = set()
    for label, names in SYNONYMS.items():
        for r in range(max_attributes + 1):
            for subset in itertools.combinations(ATTRIBUTES, r):
                for words in itertools.product(*(WORDS[a] for a in subset)):
                    attrs = dict(zip(subset, words))
                    for noun in names:
                        for t, (_, needs) in TRAINING_TEMPLATES.items():
                            if r or not needs:
                                out.add(render(t, noun, attrs))
    return out


# ------------------------------------------------------------------------ evaluation prompts
def eval_prompts() -> list[dict[str, Any]]:
    """The held-out prompt set: dicts with id, prompt, category, label (int), noun and
    attributes (dict attribute -> word), in file order (category-major, then label)."""
    out: list[dict[str, Any]] = []
    held_out = list(HELD_OUT_TEMPLATES)
    for ci, category in enumerate(EVAL_CATEGORIES):
        for label in range(len(CLASS_NAMES)):
            noun = SYNONYMS[label][1] if category == "synonym" else CLASS_NAMES[label]
            if category in ATTRIBUTES:  # low and high alternate by class (shifted per attribute)
                a = ATTRIBUTES.index(category)
                attrs = {category: WORDS[category][(label + a) % 2]}
            elif category == "composite":  # the label's bits: all 8 combinations occur
                attrs = {a: WORDS[a][(label >> i) & 1] for i, a in enumerate(ATTRIBUTES)}
            else:
                attrs = {}
            template = held_out[(label + ci) % len(held_out)]
            out.append({"id": f"p{len(out):03d}", "prompt": render(template, noun, attrs),
                        "category": category, "label": label, "noun": noun,
                        "attributes": attrs})
    return out


def _format_attributes(attrs: dict[str, str]) -> str:
    return ";".join(f"{a}={attrs[a]}" for a in ATTRIBUTES if attrs.get(a))


def robustness_prompts() -> list[dict[str, Any]]:
    """The prompts of suites/fmnist-robustness.yaml: the evaluation prompts of labels 0, 3, 6
    and 9 (4 per category, 24 in all; an attack costs tens of generated sets per prompt)."""
    return [p for p in eval_prompts() if p["label"] % 3 == 0]


def eval_prompts_csv(prompts: list[dict[str, Any]] | None = None) -> str:
    """The text of the evaluation prompt file (or of ``prompts`` in its format)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(EVAL_COLUMNS)
    for p in eval_prompts() if prompts is None else prompts:
        w.writerow([p["id"], p["prompt"], p["category"], p["label"], p["noun"],
                    _format_attributes(p["attributes"])])
    return buf.getvalue()


def write_eval_prompts(path: str | Path, prompts: list[dict[str, Any]] | None = None) -> None:
    """Write the evaluation prompts (or ``prompts``) as CSV (columns :data:`EVAL_COLUMNS`)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w", encoding="utf-8", newline="") as f:
        f.write(eval_prompts_csv(prompts))


def read_eval_prompts(path: str | Path = EVAL_PROMPTS_FILE) -> list[dict[str, Any]]:
    """Read a prompt file written by :func:`write_eval_prompts` back into :func:`eval_prompts` form."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return [{"id": r["id"], "prompt": r["prompt"], "category": r["category"],
             "label": int(r["label"]), "noun": r["noun"],
             "attributes": dict(kv.split("=", 1) for kv in r["attributes"].split(";") if kv)}
            for r in rows]


def main(argv: Sequence[str] | None = None) -> int:
    """``thresholds``: print fit_thresholds(fmnist-train) as a table to paste as THRESHOLDS;
    ``eval-prompts [PATH [ROBUSTNESS_PATH]]``: write the evaluation prompts and their
    robustness subset (default: the shipped files)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["thresholds"]:
        from bench.data import open_dataset

        ds = open_dataset("fmnist-train")
        th = fit_thresholds(ds.images(0, len(ds)), ds.labels)
        print("THRESHOLDS: dict[int, dict[str, tuple[float, float]]] = {")
        for c, t in th.items():
            inner = ", ".join(f'"{a}": ({round(lo, 2)}, {round(hi, 2)})' for a, (lo, hi) in t.items())
            print(f"    {c}: {{{inner}}},")
        print("}")
        return 0
    if args[:1] == ["eval-prompts"]:
        write_eval_prompts(args[1] if len(args) > 1 else EVAL_PROMPTS_FILE)
        write_eval_prompts(args[2] if len(args) > 2 else ROBUSTNESS_PROMPTS_FILE,
                           robustness_prompts())
        return 0
    print("usage: python -m bench.data.captions thresholds | eval-prompts [PATH [ROBUSTNESS_PATH]]")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
