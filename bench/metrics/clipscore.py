"""``clipscore``: image-prompt agreement in CLIP space, with every convention explicit.

Per sample ``s_i = scale * clamp(cos(E_img(image_i), E_txt(prefix + prompt_i)))``, the prompt
being the sample's condition text (``Generation.conditions[i].text``). The conventions in use:

============  =====  ===================  =====================  ===============================
convention    scale  clamp                prefix                 source
============  =====  ===================  =====================  ===============================
torchmetrics  100    mean (max(mean, 0))  ""                     ``torchmetrics CLIPScore``
hessel        2.5    sample (max(cos, 0)) "A photo depicts "     Hessel et al. 2021, CLIPScore
mlperf        100    none                 ""                     MLPerf Inference text-to-image
============  =====  ===================  =====================  ===============================

(MLPerf Inference's ``text_to_image/tools/accuracy_coco.py`` averages ``100 * cos`` of open_clip
embeddings over images with no clamp; its tokenizer truncates long captions, so
``long_prompts: truncate`` reproduces it. Hessel et al.'s reference code also truncates.)
Parameters given explicitly override the preset's. ``long_prompts``: ``error`` (default) refuses
a prompt longer than the text encoder's context (77 tokens with the start and end tokens),
``truncate`` keeps its first 76 tokens and the end token (see :mod:`bench.clip`).

Aggregate row ``clipscore``: the mean over prompts (condition ids) of the mean over each
prompt's images, with a 95% percentile bootstrap interval over prompts (1000 resamples of the
per-prompt means, numpy ``default_rng(0)``: deterministic). With clamp ``mean`` the value and
both ends are clamped at 0 afterwards. With the same number of images per prompt this equals
torchmetrics' mean over images. Per-sample values (``s_i``; with clamp ``mean`` unclamped) give
the per-prompt (``prompt=<id>``) and per-category rows of ``slices``.

Non-finite samples (decoded as zeros) are not fed to CLIP: their value is NaN, they are left out
and counted (``n_nonfinite``). Each network call has exactly ``batch_size`` rows and text is
padded to the context length, so a sample's value does not depend on the generation batch size
or on the shard split (bitwise, on a given device); text embeddings are computed once per prompt.

Result rows record what the number was computed against: ``feature_extractor``
``clip:transformers`` | ``clip:open_clip``, ``weights_sha256``, ``weights_source``, ``resize``
(the preprocessing: ``transformers`` | ``open_clip``) and, in ``ref_id``, the conventions
(``clipscore scale=... clamp=... prefix=... long_prompts=...``): a reference-free metric has no
reference statistics, and two numbers are comparable only under the same conventions.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np
import torch

from bench.errors import BenchError, FieldError
from bench.metrics.base import Metric, MetricContext, Output, Values, merge_per_sample
from bench.registry import METRICS

CONVENTIONS: dict[str, dict[str, Any]] = {
    "torchmetrics": {"scale": 100.0, "clamp": "mean", "prefix": ""},
    "hessel": {"scale": 2.5, "clamp": "sample", "prefix": "A photo depicts "},
    "mlperf": {"scale": 100.0, "clamp": "none", "prefix": ""},
}
CLAMPS = ("sample", "mean", "none")
BOOTSTRAP = 1000
BOOTSTRAP_SEED = 0
INTERVAL = (f"mean over prompts of the per-prompt mean over images [95% percentile bootstrap "
            f"over prompts, {BOOTSTRAP} resamples, seed {BOOTSTRAP_SEED}]")
NO_PROMPT_FIX = ("score images of a text-conditional model with 'conditions: {prompts: [...]}' "
                 "(or a prompt file), or score an image folder with 'bench clipscore IMAGE_DIR "
                 "PROMPTS_FILE' (a CSV/TSV with columns image,prompt)")


def resolve_params(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters with the convention's preset filled in (explicit values win), checked."""
    p = {**ClipScore.param_defaults, **{k: v for k, v in params.items() if v is not None}}
    conv = p["convention"]
    if conv not in CONVENTIONS:
        raise FieldError("convention", f"= {conv!r} is not a convention.",
                         f"use one of: {', '.join(CONVENTIONS)} (presets of scale, clamp, prefix).")
    for k, v in CONVENTIONS[conv].items():
        if p.get(k) is None:
            p[k] = v
    scale = p["scale"]
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not np.isfinite(scale) \
            or scale <= 0:
        raise FieldError("scale", f"= {scale!r}.", "use a positive number: 100 (torchmetrics, "
                         "MLPerf) or 2.5 (Hessel et al. 2021).")
    p["scale"] = float(scale)
    if p["clamp"] not in CLAMPS:
        raise FieldError("clamp", f"= {p['clamp']!r}.", "use sample (max(cos, 0) per sample, as "
                         "Hessel et al.), mean (clamp the mean at 0, as torchmetrics) or none.")
    if not isinstance(p["prefix"], str):
        raise FieldError("prefix", f"= {p['prefix']!r} is not a string.",
                         "write e.g. prefix: 'A photo depicts ' (or '' for none).")
    if p["long_prompts"] not in ("error", "truncate"):
        raise FieldError("long_prompts", f"= {p['long_prompts']!r}.",
                         "use error (refuse prompts over the context length) or truncate (keep "
                         "the first tokens and the end token).")
    bs = p["batch_size"]
    if isinstance(bs, bool) or not isinstance(bs, int) or not 1 <= bs <= 4096:
        raise FieldError("batch_size", f"= {bs!r}.", "use a whole number of images per CLIP call "
                         "from 1 to 4096 (e.g. 32).")
    for k in ("clip", "arch"):
        if p[k] is not None and not isinstance(p[k], str):
            raise FieldError(k, f"= {p[k]!r} is not a string.",
                             "give a path (clip) or an open_clip architecture name (arch).")
    return p


def conventions_label(p: dict[str, Any]) -> str:
    """The conventions of a number, as one string (the ``ref_id`` column of its rows)."""
    return (f"clipscore scale={p['scale']:g} clamp={p['clamp']} prefix={p['prefix']!r} "
            f"long_prompts={p['long_prompts']} (convention {p['convention']})")


def aggregate(values: np.ndarray, groups: np.ndarray, clamp: str, resamples: int = BOOTSTRAP,
              seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float, np.ndarray]:
    """(value, ci_low, ci_high, per-group means): the mean over groups (sorted by id) of the
    per-group mean of the finite values, with a percentile bootstrap over groups; clamp ``mean``
    clamps all three at 0 afterwards."""
    values = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(values)
    ids, inverse = np.unique(np.asarray(groups)[keep], return_inverse=True)
    if not len(ids):
        return float("nan"), float("nan"), float("nan"), np.zeros(0)
    sums = np.zeros(len(ids))
    np.add.at(sums, inverse, values[keep])  # in index order: deterministic
    means = sums / np.bincount(inverse, minlength=len(ids))
    value = float(means.mean())
    lo = hi = float("nan")
    if len(means) > 1:
        rng = np.random.default_rng(seed)
        boot = means[rng.integers(0, len(means), size=(resamples, len(means)))].mean(1)
        lo, hi = (float(v) for v in np.percentile(boot, [2.5, 97.5]))
    if clamp == "mean":
        value, lo, hi = max(value, 0.0), max(lo, 0.0), max(hi, 0.0)
    return value, lo, hi, means


def normalise(emb: torch.Tensor) -> np.ndarray:
    """Rows scaled to unit length, in float64 (numpy reduces each row on its own, so a row's
    result does not depend on the other rows)."""
    x = emb.double().cpu().numpy()
    return x / np.sqrt((x * x).sum(1, keepdims=True))


def scores(cos: np.ndarray, scale: float, clamp: str) -> np.ndarray:
    """Per-sample values from cosines: scale * max(cos, 0) for clamp ``sample``, else scale * cos."""
    cos = np.asarray(cos, dtype=np.float64)
    return scale * (np.maximum(cos, 0.0) if clamp == "sample" else cos)


@METRICS.register("clipscore", "CLIPScore: scale * clamp(cos(CLIP image, CLIP prompt)) per image; mean "
                  "over prompts of per-prompt means, 95% bootstrap CI over prompts (params: clip, "
                  "arch, convention torchmetrics|hessel|mlperf, scale, clamp, prefix, long_prompts)",
                  params={"clip": None, "arch": "ViT-B-32", "convention": "torchmetrics",
                          "scale": None, "clamp": None, "prefix": None, "long_prompts": "error",
                          "batch_size": 32})
class ClipScore(Metric):
    outputs: ClassVar[dict[str, Output]] = {"clipscore": Output(
        True, INTERVAL, "CLIP image-prompt agreement (conventions in ref_id)")}
    needs_images = True
    #: the report's text-to-image views (guidance trade-off, per category and per prompt)
    report_sections = "bench.report.t2i:t2i_sections"
    param_defaults: ClassVar[dict[str, Any]] = {
        "clip": None, "arch": "ViT-B-32", "convention": "torchmetrics", "scale": None,
        "clamp": None, "prefix": None, "long_prompts": "error", "batch_size": 32}

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """Names and values, and that the weights exist (``bench plan``, before any work)."""
        import os
        from pathlib import Path

        from bench.clip import CLIP_ENV
        from bench.metrics.features_vit import how_to_provide, shipped_clips

        super().check_params(params)
        p = resolve_params(params)
        given = p["clip"] or os.environ.get(CLIP_ENV) or None
        where = "'clip'" if p["clip"] else f"${CLIP_ENV}"
        if not given:
            raise FieldError("clip", f"no CLIP weights: the parameter is unset and so is ${CLIP_ENV}.",
                             how_to_provide("clip"))
        if not Path(given).expanduser().exists() and given not in shipped_clips():
            raise FieldError("clip", f"= '{given}' (from {where}) does not exist.",
                             how_to_provide("clip"))

    def __init__(self, ctx: MetricContext) -> None:
        super().__init__(ctx)
        self.p = resolve_params(dict(ctx.params or {}))
        adapter = ctx.adapter
        if adapter is not None and getattr(adapter, "conditioning", None) != "prompts":
            kind = getattr(adapter, "conditioning", None) or "no"
            raise BenchError(f"metric 'clipscore' scores each image against its prompt, and model "
                             f"{adapter.label()} takes {kind} conditions, not prompts. Fix: "
                             f"{NO_PROMPT_FIX}.")
        from bench.clip import load_clip

        self.clip = load_clip(self.p["clip"], arch=self.p["arch"] or "ViT-B-32", device=ctx.device)
        d = self.clip.describe()
        self.config = {"clip": {k: d[k] for k in ("kind", "arch", "weights_sha256", "weights_source",
                                                  "weights_file", "resize", "preprocess",
                                                  "tokenizer", "dim")},
                       **{k: self.p[k] for k in ("convention", "scale", "clamp", "prefix",
                                                 "long_prompts", "batch_size")}}
        self._text: dict[str, np.ndarray] = {}  # prompt -> normalised embedding (float64)
        self.reset()

    def reset(self) -> None:
        self.parts: list[dict[str, np.ndarray]] = []

    # ---------------------------------------------------------------- embeddings
    def text_embeddings(self, texts: list[str]) -> np.ndarray:
        """Normalised float64 embeddings of ``prefix + text``, computed once per text."""
        new = [t for t in dict.fromkeys(texts) if t not in self._text]
        if new:
            emb = self.clip.encode_text([self.p["prefix"] + t for t in new], self.p["long_prompts"],
                                        rows=self.p["batch_size"])
            self._text.update(zip(new, normalise(emb)))
        return np.stack([self._text[t] for t in texts])

    def image_embeddings(self, images: torch.Tensor) -> np.ndarray:
        return normalise(self.clip.encode_images(images, rows=self.p["batch_size"]))

    def cosines(self, images: torch.Tensor, texts: list[str]) -> np.ndarray:
        """cos(image_i, prefix + text_i) in float64 (texts checked before any image is encoded)."""
        if len(images) != len(texts):
            raise ValueError(f"clipscore: {len(images)} images for {len(texts)} prompts")
        if not len(texts):
            return np.zeros(0)
        t = self.text_embeddings(texts)
        return (self.image_embeddings(images) * t).sum(1)  # row by row: same for any batch

    # ---------------------------------------------------------------- Metric API
    def update(self, gen: Any) -> None:
        conds = gen.conditions
        if conds is None or any(c.text is None or c.label is not None for c in conds):
            what = "no conditions" if conds is None else "class conditions"
            raise BenchError(f"metric 'clipscore' needs a prompt for every image; this cell's "
                             f"samples have {what}. Fix: {NO_PROMPT_FIX}.")
        if gen.images is None:
            raise RuntimeError("clipscore needs decoded images (generate(decode=True))")
        n = len(gen)
        finite = np.ones(n, bool) if gen.finite is None else np.asarray(gen.finite, bool)
        cos = np.full(n, np.nan)
        keep = np.flatnonzero(finite)
        if len(keep):
            images = gen.images[torch.from_numpy(keep).to(gen.images.device)]
            cos[keep] = self.cosines(images, [conds[i].text for i in keep])
        self.parts.append({"index": np.asarray(gen.indices, dtype=np.int64).copy(),
                           "cos": cos, "clipscore": scores(cos, self.p["scale"], self.p["clamp"]),
                           "prompt": np.array([c.id for c in conds], dtype=str),
                           "finite": finite.copy()})

    def state(self) -> dict[str, np.ndarray]:
        per = merge_per_sample(self.parts)
        return {**per, "config": np.array(json.dumps(self.config, sort_keys=True))}

    @staticmethod
    def merge(states: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        def essential(s: dict[str, np.ndarray]) -> str:  # where the same file came from may differ
            c = json.loads(str(s["config"]))
            c["clip"] = {k: v for k, v in c["clip"].items() if k not in ("weights_source", "weights_file")}
            return json.dumps(c, sort_keys=True)

        if len({essential(s) for s in states}) != 1:
            raise ValueError(f"merging clipscore shards computed with different CLIP weights or "
                             f"conventions: {sorted({essential(s) for s in states})}")
        per = merge_per_sample([{k: v for k, v in s.items() if k != "config"} for s in states])
        return {**per, "config": states[0]["config"]}

    @staticmethod
    def compute(state: dict[str, np.ndarray]) -> Values:
        cfg = json.loads(str(state["config"]))
        value, lo, hi, _ = aggregate(state["clipscore"], state["prompt"], cfg["clamp"])
        return {"clipscore": (value, lo, hi)}

    @staticmethod
    def per_sample(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"clipscore": state["clipscore"]}

    @staticmethod
    def describe(state: dict[str, np.ndarray]) -> dict[str, Any]:
        cfg = json.loads(str(state["config"]))
        c = cfg["clip"]
        return {"feature_extractor": f"clip:{c['kind']}", "weights_sha256": c["weights_sha256"],
                "weights_source": c["weights_source"], "resize": c["resize"],
                "ref_id": conventions_label(cfg),
                "n_nonfinite": int((~np.asarray(state["finite"], bool)).sum())}
