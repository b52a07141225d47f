"""Decoded images kept for reports: a cell's first samples (``gallery: N``, under ``_gallery``)
and, per batch, the samples with the lowest and highest values of a per-sample extra
(``extremes: {by, n}``, under ``_extremes``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError
from bench.integrity import save_npz


def gallery_dir(results_dir: Path, suite: str, model: str, sampler: str, nfe: int,
                root: str = "_gallery") -> Path:
    """``DIR/<root>/<suite>/<model>__<sampler>__nfe<N>`` (``_gallery``: first samples of cells;
    ``_attacks``: original-vs-adversarial images of the robustness eval)."""
    slug = lambda v: re.sub(r"[^A-Za-z0-9_.=-]+", "-", v).strip("-")  # noqa: E731
    return Path(results_dir) / root / slug(suite) / f"{slug(model)}__{slug(sampler)}__nfe{nfe}"


#: where the images of ``extremes: {by, n}`` go (``gallery_dir(..., EXTREMES_DIR)``)
EXTREMES_DIR = "_extremes"


def _names(conds: Any) -> dict[str, str] | None:
    return {str(i): (f"{it.label}: {it.text}" if it.label is not None and it.text else
                     it.text or it.id) for i, it in enumerate(conds.items)} if conds.items else None


def save_extremes(cache_dir: Any, shard: Any, gen: Any, by: str, n: int) -> None:
    """The batch's ``n`` lowest and ``n`` highest samples by ``gen.extras[by]`` (ties in sample
    order) -> ``_extremes/<suite>/<cell>/<first idx>.npz``: images, idx, value, cond, names.
    The cell's n lowest and highest are among the union of its batches' (``load_extremes``)."""
    v = np.asarray(gen.extras[by], np.float64)
    if v.shape != (len(gen.indices),):
        raise BenchError(f"extremes.by: the sampler's extra '{by}' has shape {v.shape}, not one "
                         f"number per sample; name a per-sample value (e.g. 'uncertainty').")
    order = np.argsort(v, kind="stable")
    pick = np.unique(np.concatenate([order[:n], order[-n:]]))
    folder = gallery_dir(Path(cache_dir).parent, shard.suite, shard.model["label"],
                         shard.sampler["label"], shard.nfe, EXTREMES_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    k = len(shard.conditions.items)
    idx = gen.indices[pick]
    save_npz(folder / f"{int(gen.indices[0]):08d}.npz",
             {"images": gen.images[pick].cpu().numpy(), "idx": idx, "value": v[pick],
              "cond": (idx % k) if k else np.full(len(idx), -1), "by": np.array(by),
              "names": np.array(json.dumps(_names(shard.conditions)))})


def save_gallery(cache_dir: Any, shard: Any, gen: Any, limit: int) -> None:
    """Images of samples ``index < limit`` -> ``_gallery/<suite>/<cell>/<first idx>.npz`` (one
    file per batch, written atomically, so a resumed shard keeps what it wrote). ``cond`` is each
    image's position in the cell's conditions, ``names`` their display names."""
    keep = gen.indices < limit
    folder = gallery_dir(Path(cache_dir).parent, shard.suite, shard.model["label"],
                         shard.sampler["label"], shard.nfe)
    folder.mkdir(parents=True, exist_ok=True)
    images = gen.images[np.flatnonzero(keep)].cpu().numpy()
    k = len(shard.conditions.items)
    c = (gen.indices[keep] % k) if k else np.full(int(keep.sum()), -1)
    save_npz(folder / f"{int(gen.indices[0]):08d}.npz",
             {"images": images, "idx": gen.indices[keep], "cond": c,
              "names": np.array(json.dumps(_names(shard.conditions)))})
