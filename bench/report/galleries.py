"""Sample galleries: PNG grids of the images a suite saved with ``gallery: N``, from
``RESULTS/_gallery/<suite>/<model>__<sampler>__nfe<N>/``.

Up to ``ROWS_MAX`` conditions (e.g. ten classes): one row per condition (class or prompt),
labelled with its name. More (e.g. 60 prompts): a captioned grid, ``GRID_COLUMNS`` conditions a
row, one row block per category (in the order the conditions list them; a category's label at
its first row), each cell the condition's first images (up to ``PER_CELL``) captioned with its
id and (wrapped) text, so a reader can tell which prompt each image answers and look the id up
in the report's per-prompt table. Ids and categories come from the cell's per-sample table
(``_samples``), joined on the sample index; without it, the gallery's own names are used.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.integrity import CorruptFile, load_npz

#: galleries with more conditions than this are a captioned grid, not one row per condition
ROWS_MAX = 12
#: conditions per row of a captioned grid, and images per condition shown in a cell
GRID_COLUMNS = 10
PER_CELL = 3


def save_png(fig, path: Path) -> None:
    """Save a figure; one without colour (a gallery of grayscale images) as an 8-bit grayscale
    PNG, a quarter of matplotlib's RGBA bytes before compression (rendered once, written once)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    buf.seek(0)
    rgb = np.asarray(Image.open(buf).convert("RGB"))
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        Image.fromarray(np.ascontiguousarray(rgb[..., 0])).save(path, optimize=True)
    else:
        Path(path).write_bytes(buf.getvalue())


def read_parts(folder: Path) -> list[dict[str, np.ndarray]]:
    """The image files of a gallery folder (``_gallery`` or ``_extremes``), in name order; a
    corrupt one is skipped with a warning (a rerun of the suite writes it again)."""
    parts = []
    for p in sorted(folder.glob("*.npz")):
        try:
            parts.append(load_npz(p))
        except CorruptFile as exc:
            print(f"warning: gallery image file skipped: {exc}", file=sys.stderr)
    return parts


def load_gallery(folder: Path) -> tuple[np.ndarray, np.ndarray, dict[str, str] | None]:
    """(uint8 NCHW images, condition per image, condition names) sorted by sample index."""
    parts = read_parts(folder)
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
    save_png(fig, path)
    plt.close(fig)
    return path


def sample_conditions(results: Path, suite: str, folders: set[str]) -> dict[str, dict[int, tuple]]:
    """Per gallery folder name: sample index -> (condition id, text, category), from the
    per-sample tables of the suite's cells (only those of ``folders`` are kept)."""
    from bench.evals.gallery import gallery_dir
    from bench.integrity import read_table

    out: dict[str, dict[int, tuple]] = {}
    root = Path(results) / "_samples" / suite
    for f in sorted(root.glob("*.parquet")) if root.is_dir() else []:
        try:
            t = read_table(f).to_pandas()
        except (CorruptFile, OSError):
            continue
        if t.empty or not {"model", "sampler", "nfe", "index", "cond_id"} <= set(t.columns):
            continue
        r = t.iloc[0]
        name = gallery_dir(Path(results), suite, str(r["model"]), str(r["sampler"]),
                           int(r["nfe"])).name
        if name not in folders or name in out:
            continue
        text = t["cond_text"] if "cond_text" in t else [""] * len(t)
        cat = t["category"] if "category" in t else [""] * len(t)
        out[name] = {int(i): (str(c), str(x or ""), str(k or ""))
                     for i, c, x, k in zip(t["index"], t["cond_id"], text, cat)}
    return out


def short(text: str, width: int = 22, lines: int = 3) -> str:
    """``text`` wrapped to ``lines`` lines of ``width`` characters (cut with '...')."""
    import textwrap

    parts = textwrap.wrap(text, width) or [""]
    if len(parts) > lines:
        parts = parts[:lines]
        parts[-1] = parts[-1][: width - 3].rstrip() + "..."
    return "\n".join(parts)


def captioned_grid_png(images: np.ndarray, cond: np.ndarray, info: dict[int, tuple[str, str, str]],
                       title: str, path: Path, columns: int = GRID_COLUMNS,
                       per_cell: int = PER_CELL) -> Path:
    """A grid of conditions (``info``: condition -> (id, text, category)), ``columns`` a row,
    one block of rows per category; each cell the condition's first ``per_cell`` images,
    captioned with its id and text."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conds = sorted(set(cond.tolist()))
    groups: dict[str, list[int]] = {}
    for k in conds:
        groups.setdefault(info.get(k, ("", "", ""))[2], []).append(k)
    layout: list[tuple[str, list[int]]] = []  # (row label, conditions of the row)
    for cat, ks in groups.items():
        for r in range(0, len(ks), columns):
            layout.append((cat if r == 0 else "", ks[r:r + columns]))
    n = min(per_cell, max(int((cond == k).sum()) for k in conds))
    c, h, w = images.shape[1:]
    cell_w = 1.25 * max(1.0, n * w / h / 1.6)
    fig, axes = plt.subplots(len(layout), columns, squeeze=False, dpi=100,
                             figsize=(columns * cell_w + 0.6, len(layout) * 1.8 + 0.6))
    for r, (label, ks) in enumerate(layout):
        for j in range(columns):
            ax = axes[r][j]
            if j >= len(ks):
                ax.set_visible(False)
                continue
            k = ks[j]
            sel = images[cond == k][:n]
            tile = np.full((h, n * (w + 2) - 2, 3), 255, np.uint8)
            for i, im in enumerate(sel):
                rgb = np.repeat(im, 3, 0) if c == 1 else im[:3]
                tile[:, i * (w + 2):i * (w + 2) + w] = rgb.transpose(1, 2, 0)
            ax.imshow(tile, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            cid, text, _ = info.get(k, (str(k), "", ""))
            ax.set_title(cid, fontsize=7, pad=2)
            if text and text != cid:
                ax.set_xlabel(short(text), fontsize=5.5, labelpad=2, linespacing=1.0)
            if j == 0 and label:
                ax.set_ylabel(label, fontsize=8, fontweight="bold")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.3, h_pad=0.8, w_pad=0.3,
                     rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))  # room for the title
    save_png(fig, path)
    plt.close(fig)
    return path


def render_galleries(results: Path, suite: str, out: Path, slug, patterns: Sequence[str] = ()
                     ) -> list[tuple[str, Path, bool]]:
    """(cell name, PNG, whether it is a captioned grid) for every gallery the suite saved, or
    only those whose cell ``MODEL/SAMPLER/nfeN`` matches one of ``patterns`` (fnmatch)."""
    from fnmatch import fnmatchcase

    root = Path(results) / "_gallery" / slug(suite)
    if not root.is_dir():
        return []
    folders = sorted(p for p in root.iterdir() if p.is_dir() and any(p.glob("*.npz"))
                     and (not patterns or any(fnmatchcase(p.name.replace("__", "/"), pat)
                                              for pat in patterns)))
    loaded = [(f, *load_gallery(f)) for f in folders]
    many = {f.name for f, _, cond, _ in loaded if len(set(cond.tolist())) > ROWS_MAX}
    per_sample = sample_conditions(Path(results), suite, many) if many else {}
    written = []
    for folder, images, cond, names in loaded:
        if not len(images):
            continue
        name = folder.name.replace("__", " / ")
        png = out / f"{slug(suite)}_gallery_{folder.name}.png"
        if folder.name in many:
            idx = load_index(folder)
            known = per_sample.get(folder.name, {})
            info: dict[int, tuple[str, str, str]] = {}
            for k, i in zip(cond.tolist(), idx.tolist()):
                fallback = (f"#{k}", (names or {}).get(str(k), ""), "")
                info.setdefault(k, known.get(int(i), fallback))
            written.append((name, captioned_grid_png(images, cond, info, f"{suite}: {name}", png),
                            True))
        else:
            written.append((name, grid_png(images, cond, names, f"{suite}: {name}", png), False))
    return written


def load_index(folder: Path) -> np.ndarray:
    """The sample index of each image of ``load_gallery(folder)`` (same order)."""
    idx = []
    for p in sorted(folder.glob("*.npz")):
        try:
            idx.append(load_npz(p)["idx"])
        except CorruptFile:
            continue
    return np.sort(np.concatenate(idx)) if idx else np.zeros(0, np.int64)


def load_extremes(folder: Path, n: int | None = None) -> dict[str, object] | None:
    """The cell's ``n`` lowest and ``n`` highest samples (ties in sample order; default: the
    ``n`` the suite kept) from the per-batch files of ``extremes: {by, n}``: ``{"by", "names",
    "low": (images, idx, value, cond), "high": (...)}`` (``high`` highest first); None if none."""
    parts = read_parts(folder)
    if not parts:
        return None
    idx = np.concatenate([p["idx"] for p in parts])
    value = np.concatenate([p["value"] for p in parts])
    images = np.concatenate([p["images"] for p in parts])
    cond = np.concatenate([p["cond"] for p in parts])
    _, first = np.unique(idx, return_index=True)  # a batch written twice counts once
    idx, value, images, cond = idx[first], value[first], images[first], cond[first]
    order = np.lexsort((idx, value))  # by value, ties by sample index
    if n is None:  # each batch kept its n lowest and n highest, so a batch holds at most 2n
        n = max(1, max(len(p["idx"]) for p in parts) // 2)
    low = order[:n]
    high = np.lexsort((idx, -value))[:n]
    pick = lambda s: (images[s], idx[s], value[s], cond[s])  # noqa: E731
    return {"by": str(parts[0]["by"]), "names": json.loads(str(parts[0]["names"])),
            "low": pick(low), "high": pick(high)}


def extremes_png(ext: dict[str, object], title: str, path: Path, columns: int = 10) -> Path:
    """Two blocks of images: the lowest values (top) and the highest (bottom), each image
    captioned with its class (or condition) and value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ext["names"] or {}
    blocks = [(f"lowest {ext['by']}", ext["low"]), (f"highest {ext['by']}", ext["high"])]
    columns = max(1, min(columns, max(len(b[1][0]) for b in blocks)))
    rows_per = [max(1, -(-len(b[1][0]) // columns)) for b in blocks]
    fig, axes = plt.subplots(sum(rows_per), columns, squeeze=False, dpi=100,
                             figsize=(columns * 1.05 + 0.4, sum(rows_per) * 1.3 + 0.5))
    r0 = 0
    for (label, (images, idx, value, cond)), nr in zip(blocks, rows_per):
        for j in range(nr * columns):
            ax = axes[r0 + j // columns][j % columns]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(images):
                ax.set_visible(False)
                continue
            im = images[j]
            ax.imshow(im[0] if im.shape[0] == 1 else im[:3].transpose(1, 2, 0),
                      cmap="gray" if im.shape[0] == 1 else None, vmin=0, vmax=255,
                      interpolation="nearest")
            c = int(cond[j])
            name = str(names.get(str(c), c)) if c >= 0 else "uncond."
            name = name if len(name) <= 14 else name[:13] + "..."
            ax.set_title(f"{name}\n{value[j]:.3g}", fontsize=6, pad=1.5)
            if j % columns == 0:
                ax.set_ylabel(label if j == 0 else "", fontsize=7, fontweight="bold")
        r0 += nr
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.3, h_pad=1.2, w_pad=0.2,
                     rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
    save_png(fig, path)
    plt.close(fig)
    return path


def render_extremes(results: Path, suite: str, out: Path, slug) -> list[tuple[str, Path, str]]:
    """(cell name, PNG, extra) for every cell whose ``extremes: {by, n}`` images were saved."""
    from bench.evals.gallery import EXTREMES_DIR

    root = Path(results) / EXTREMES_DIR / slug(suite)
    if not root.is_dir():
        return []
    written = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        ext = load_extremes(folder)
        if ext is None:
            continue
        name = folder.name.replace("__", " / ")
        png = out / f"{slug(suite)}_extremes_{folder.name}.png"
        written.append((name, extremes_png(ext, f"{suite}: {name}", png), str(ext["by"])))
    return written
