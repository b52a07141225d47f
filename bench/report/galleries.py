"""Sample galleries: PNG grids of the images a suite saved with ``gallery: N``, one row per
condition (class or prompt), from ``RESULTS/_gallery/<suite>/<model>__<sampler>__nfe<N>/``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from bench.integrity import CorruptFile, load_npz


def load_gallery(folder: Path) -> tuple[np.ndarray, np.ndarray, dict[str, str] | None]:
    """(uint8 NCHW images, condition per image, condition names) sorted by sample index."""
    parts = []
    for p in sorted(folder.glob("*.npz")):
        try:
            parts.append(load_npz(p))
        except CorruptFile as exc:  # a rerun of the suite writes it again
            print(f"warning: gallery image file skipped: {exc}", file=sys.stderr)
    if not parts:
        return np.zeros((0, 1, 1, 1), np.uint8), np.zeros(0, np.int64), None
    idx = np.concatenate([p["idx"] for p in parts])
    order = np.argsort(idx, kind="stable")
    images = np.concatenate([p["images"] for p in parts])[order]
    cond = np.concatenate([p["cond"] for p in parts])[order]
    names = json.loads(str(parts[0]["names"])) if parts else None
    return images, cond, names


def grid_png(images: np.ndarray, cond: np.ndarray, names: dict[str, str] | None, title: str,
             path: Path, per_row: int = 10, scale: int = 2) -> Path:
    """One row per condition (up to ``per_row`` samples each), labelled; written to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(set(cond.tolist()))
    per_row = min(per_row, max(int((cond == k).sum()) for k in rows))
    c, h, w = images.shape[1:]
    canvas = np.full((len(rows) * (h + 2), per_row * (w + 2), 3), 255, np.uint8)
    for r, k in enumerate(rows):
        sel = images[cond == k][:per_row]
        for j, im in enumerate(sel):
            rgb = np.repeat(im, 3, 0) if c == 1 else im[:3]
            canvas[r * (h + 2):r * (h + 2) + h, j * (w + 2):j * (w + 2) + w] = rgb.transpose(1, 2, 0)
    dpi = 100
    fig_w = canvas.shape[1] * scale / dpi + 1.6
    fig, ax = plt.subplots(figsize=(fig_w, canvas.shape[0] * scale / dpi + 0.5), dpi=dpi)
    ax.imshow(canvas, interpolation="nearest")
    ax.set_yticks([r * (h + 2) + h / 2 for r in range(len(rows))])
    ax.set_yticklabels([(names or {}).get(str(k), str(k)) if k >= 0 else "uncond." for k in rows],
                       fontsize=8)
    ax.set_xticks([])
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def render_galleries(results: Path, suite: str, out: Path, slug) -> list[tuple[str, Path]]:
    """(cell name, PNG) for every gallery the suite saved."""
    root = Path(results) / "_gallery" / slug(suite)
    if not root.is_dir():
        return []
    written = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and any(p.glob("*.npz"))):
        images, cond, names = load_gallery(folder)
        if not len(images):
            continue
        name = folder.name.replace("__", " / ")
        png = grid_png(images, cond, names, f"{suite}: {name}",
                       out / f"{slug(suite)}_gallery_{folder.name}.png")
        written.append((name, png))
    return written
