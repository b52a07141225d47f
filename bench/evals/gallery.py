"""Decoded images of a cell's first samples, kept for reports (``gallery: N``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from bench.integrity import save_npz


def gallery_dir(results_dir: Path, suite: str, model: str, sampler: str, nfe: int,
                root: str = "_gallery") -> Path:
    """``DIR/<root>/<suite>/<model>__<sampler>__nfe<N>`` (``_gallery``: first samples of cells;
    ``_attacks``: original-vs-adversarial images of the robustness eval)."""
    slug = lambda v: re.sub(r"[^A-Za-z0-9_.=-]+", "-", v).strip("-")  # noqa: E731
    return Path(results_dir) / root / slug(suite) / f"{slug(model)}__{slug(sampler)}__nfe{nfe}"


def save_gallery(cache_dir: Any, shard: Any, gen: Any, limit: int) -> None:
    """Images of samples ``index < limit`` -> ``_gallery/<suite>/<cell>/<first idx>.npz`` (one
    file per batch, written atomically, so a resumed shard keeps what it wrote). ``cond`` is each
    image's position in the cell's conditions, ``names`` their display names."""
    keep = gen.indices < limit
    folder = gallery_dir(Path(cache_dir).parent, shard.suite, shard.model["label"],
                         shard.sampler["label"], shard.nfe)
    folder.mkdir(parents=True, exist_ok=True)
    images = gen.images[np.flatnonzero(keep)].cpu().numpy()
    conds = shard.conditions
    k = len(conds.items)
    c = (gen.indices[keep] % k) if k else np.full(int(keep.sum()), -1)
    names = {str(i): (f"{it.label}: {it.text}" if it.label is not None and it.text else
                      it.text or it.id) for i, it in enumerate(conds.items)} if k else None
    save_npz(folder / f"{int(gen.indices[0]):08d}.npz",
             {"images": images, "idx": gen.indices[keep], "cond": c, "names": np.array(json.dumps(names))})
