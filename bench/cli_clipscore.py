"""``bench clipscore IMAGE_DIR PROMPTS_FILE``: the ``clipscore`` metric on a folder of images.

PROMPTS_FILE is a CSV (``.csv``) or TSV (``.tsv``) with a header naming the columns ``image``
(a file name relative to IMAGE_DIR) and ``prompt`` (optionally ``id``: images with the same id,
or without ids the same prompt text, are one prompt of the aggregate). Every check runs before
any image is scored: the file's lines and columns, that every listed image exists and every
image in the folder has a row, that the images have one size, and the prompts' lengths.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from bench.errors import BenchError, FieldError

FLAGS = {"clip": "--clip", "arch": "--arch", "convention": "--convention", "scale": "--scale",
         "clamp": "--clamp", "prefix": "--prefix", "long_prompts": "--long-prompts",
         "batch_size": "--batch-size"}


def read_prompt_file(path: Path) -> list[dict[str, Any]]:
    """Rows ``{line, image, prompt, id}`` of a CSV/TSV prompt file; errors name line and fix."""
    if not path.is_file():
        raise BenchError(f"PROMPTS_FILE '{path}' {'is a folder' if path.exists() else 'does not exist'}; "
                         f"give a .csv or .tsv file with a header 'image,prompt'.")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv"):
        raise BenchError(f"PROMPTS_FILE '{path}': unknown type '{suffix}'; use a .csv or .tsv file "
                         f"with a header naming the columns image and prompt.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise BenchError(f"PROMPTS_FILE '{path}' is not UTF-8 text; save it as UTF-8.") from None
    reader = csv.reader(text.splitlines(keepends=True), delimiter="\t" if suffix == ".tsv" else ",")
    try:
        header = next(reader)
    except StopIteration:
        raise BenchError(f"PROMPTS_FILE '{path}' is empty; write a header 'image,prompt' and one "
                         f"row per image.") from None
    cols = {h.strip().lower(): i for i, h in enumerate(header)}
    for need in ("image", "prompt"):
        if need not in cols:
            raise BenchError(f"PROMPTS_FILE '{path}': no '{need}' column (columns: "
                             f"{', '.join(h.strip() for h in header) or 'none'}). Fix: name the "
                             f"columns in the first line, e.g. 'image{',' if suffix == '.csv' else '<TAB>'}prompt'.")
    out, seen = [], {}
    for row in reader:
        line = reader.line_num
        if not row or not any(c.strip() for c in row):
            raise BenchError(f"PROMPTS_FILE '{path}', line {line}: empty line. Fix: remove it.")
        if len(row) != len(header):
            raise BenchError(f"PROMPTS_FILE '{path}', line {line}: {len(row)} fields, the header has "
                             f"{len(header)}. Fix: quote fields holding the delimiter "
                             f"(\"a, b\") or fill in the missing ones.")
        image, prompt = row[cols["image"]].strip(), row[cols["prompt"]].strip()
        if not image:
            raise BenchError(f"PROMPTS_FILE '{path}', line {line}: empty 'image' field. Fix: give "
                             f"the image's file name relative to IMAGE_DIR.")
        if not prompt:
            raise BenchError(f"PROMPTS_FILE '{path}', line {line}: empty 'prompt' for image "
                             f"'{image}'. Fix: fill it in or remove the line.")
        rel = PurePosixPath(image.replace("\\", "/"))
        if rel.is_absolute() or ".." in rel.parts:
            raise BenchError(f"PROMPTS_FILE '{path}', line {line}: image '{image}' is not a path "
                             f"inside IMAGE_DIR. Fix: give it relative to IMAGE_DIR, e.g. 0001.png.")
        key = rel.as_posix()
        if key in seen:
            raise BenchError(f"PROMPTS_FILE '{path}', line {line}: image '{image}' is listed again "
                             f"(first on line {seen[key]}). Fix: list each image once.")
        seen[key] = line
        pid = row[cols["id"]].strip() if "id" in cols and row[cols["id"]].strip() else prompt
        out.append({"line": line, "image": key, "prompt": prompt, "id": pid})
    if not out:
        raise BenchError(f"PROMPTS_FILE '{path}' has a header but no rows; add one row per image.")
    return out


def check_images(image_dir: Path, rows: list[dict[str, Any]], prompts_file: Path) -> tuple[int, int]:
    """Every listed image exists, every image of the folder is listed, all have one size."""
    from PIL import Image

    from bench.data import IMAGE_EXTENSIONS

    if not image_dir.is_dir():
        raise BenchError(f"IMAGE_DIR '{image_dir}' {'is a file' if image_dir.exists() else 'does not exist'}; "
                         f"give the folder holding the images.")
    present = {p.relative_to(image_dir).as_posix() for p in image_dir.rglob("*")
               if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS}
    for r in rows:
        if r["image"] not in present:
            what = "is not an image file (" + ", ".join(IMAGE_EXTENSIONS) + ")" \
                if (image_dir / r["image"]).is_file() else "does not exist"
            raise BenchError(f"PROMPTS_FILE '{prompts_file}', line {r['line']}: image '{r['image']}' "
                             f"{what} in IMAGE_DIR '{image_dir}'. Fix: correct the name or add the image.")
    extra = sorted(present - {r["image"] for r in rows})
    if extra:
        more = f" and {len(extra) - 5} more" if len(extra) > 5 else ""
        raise BenchError(f"IMAGE_DIR '{image_dir}' holds {len(extra)} image(s) without a prompt row in "
                         f"'{prompts_file}': {', '.join(extra[:5])}{more}. Fix: add a row "
                         f"'image,prompt' for each, or move them out of the folder.")
    first: tuple[str, tuple[int, int]] | None = None
    for r in rows:
        p = image_dir / r["image"]
        try:
            with Image.open(p) as im:
                size = im.size
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise BenchError(f"image '{p}' cannot be read ({type(exc).__name__}: {exc}). Fix: "
                             f"replace or remove it (and its row).") from None
        if first is None:
            first = (r["image"], size)
        elif size != first[1]:
            raise BenchError(f"images differ in size: '{first[0]}' is {first[1][0]}x{first[1][1]}, "
                             f"'{r['image']}' is {size[0]}x{size[1]} (width x height). Fix: resize "
                             f"them to one size first (CLIP's processor then resizes them alike).")
    assert first is not None
    return first[1]


def load_images(image_dir: Path, names: list[str]) -> Any:
    """uint8 NCHW RGB (as bench's image folders read files)."""
    import torch
    from PIL import Image

    out = []
    for n in names:
        with Image.open(image_dir / n) as im:
            out.append(np.asarray(im.convert("RGB")).transpose(2, 0, 1))
    return torch.from_numpy(np.stack(out))


def cmd_clipscore(args: argparse.Namespace) -> int:
    import torch

    from bench.conditions import Condition
    from bench.generate import Generation
    from bench.metrics.base import MetricContext
    from bench.metrics.clipscore import INTERVAL, ClipScore, aggregate, conventions_label, \
        resolve_params

    given = {"clip": args.clip, "arch": args.arch, "convention": args.convention,
             "scale": args.scale, "clamp": args.clamp, "prefix": args.prefix,
             "long_prompts": args.long_prompts, "batch_size": args.batch_size}
    try:
        params = resolve_params(given)
    except FieldError as exc:
        raise BenchError(f"{FLAGS.get(exc.field, exc.field)}: {exc.problem} Fix: {exc.fix}") from None
    image_dir, prompts_file = Path(args.image_dir), Path(args.prompts_file)
    rows = read_prompt_file(prompts_file)
    check_images(image_dir, rows, prompts_file)
    t0 = time.perf_counter()
    metric = ClipScore(MetricContext(None, torch.device(args.device), None,
                                     params={k: v for k, v in given.items() if v is not None}))
    texts = [params["prefix"] + r["prompt"] for r in rows]
    truncated = metric.clip.check_long(texts, params["long_prompts"])  # before any scoring
    bs = params["batch_size"]
    states = []
    for b0 in range(0, len(rows), bs):
        part = rows[b0:b0 + bs]
        gen = Generation.of_images(np.arange(b0, b0 + len(part), dtype=np.int64),
                                   load_images(image_dir, [r["image"] for r in part]))
        gen.conditions = [Condition(id=r["id"], text=r["prompt"]) for r in part]
        metric.update(gen)
        states.append(metric.state())
        metric.reset()
    state = ClipScore.merge(states)
    value, lo, hi = ClipScore.compute(state)["clipscore"]
    _, _, _, means = aggregate(state["clipscore"], state["prompt"], params["clamp"])
    ids = sorted(set(state["prompt"].tolist()))
    d = metric.clip.describe()
    out = {"clipscore": {"value": value, "ci_low": lo, "ci_high": hi}, "interval": INTERVAL,
           "n_images": len(rows), "n_prompts": len(ids),
           "conventions": {k: params[k] for k in ("convention", "scale", "clamp", "prefix",
                                                  "long_prompts")},
           "clip": {k: d[k] for k in ("kind", "arch", "weights_sha256", "weights_source",
                                      "weights_file", "resize", "preprocess", "tokenizer")},
           "per_prompt": [{"id": i, "mean": float(m)} for i, m in zip(ids, means)],
           "per_image": [{"image": r["image"], "prompt": r["prompt"], "id": r["id"],
                          "clipscore": float(state["clipscore"][k]), "cos": float(state["cos"][k]),
                          "truncated": bool(truncated[k])} for k, r in enumerate(rows)],
           "wall_s": round(time.perf_counter() - t0, 3)}
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    ci = "" if np.isnan(lo) else f"  95% CI [{lo:.6g}, {hi:.6g}]"
    print(f"CLIPSCORE  {value:.6g}{ci}")
    print(f"{len(rows)} image(s), {len(ids)} prompt(s): {INTERVAL}")
    print(f"conventions: {conventions_label(params)}"
          + (f"; {sum(truncated)} prompt(s) truncated" if any(truncated) else ""))
    print(f"clip: {d['kind']} {d['arch']}, weights sha256 {d['weights_sha256']} "
          f"({d['weights_source']}), preprocessing {d['resize']}; {out['wall_s']:.1f} s")
    return 0


def add_parsers(sub: Any) -> None:
    c = sub.add_parser("clipscore", help="CLIPScore of a folder of images against their prompts",
                       description="CLIPScore of the images in IMAGE_DIR against their prompts "
                       "(PROMPTS_FILE: CSV/TSV with columns image,prompt[,id]): scale * clamp(cos) "
                       "per image, mean over prompts of per-prompt means, 95% bootstrap CI over "
                       "prompts. Conventions: torchmetrics (100, clamp mean), hessel (2.5, clamp "
                       "per sample, prefix 'A photo depicts '), mlperf (100, no clamp).")
    c.add_argument("image_dir")
    c.add_argument("prompts_file")
    c.add_argument("--clip", default=None, help="CLIP weights: a transformers CLIPModel folder, an "
                   "open_clip checkpoint for --arch, or an open_clip hub folder (default "
                   "$BENCH_CLIP_WEIGHTS)")
    c.add_argument("--arch", default=None, help="open_clip architecture of a --clip checkpoint "
                   "file (default ViT-B-32)")
    c.add_argument("--convention", default="torchmetrics", choices=("torchmetrics", "hessel", "mlperf"),
                   help="preset of scale, clamp and prefix (default torchmetrics); the flags below "
                   "override it")
    c.add_argument("--scale", type=float, default=None, help="multiplier of the cosine (100; 2.5 Hessel)")
    c.add_argument("--clamp", default=None, choices=("sample", "mean", "none"),
                   help="sample: max(cos, 0) per image; mean: clamp the mean at 0; none")
    c.add_argument("--prefix", default=None, help="text put before every prompt "
                   "(hessel: 'A photo depicts ')")
    c.add_argument("--long-prompts", default="error", choices=("error", "truncate"),
                   help="prompts over the context length (77 tokens): refuse (default) or keep "
                   "the first 76 tokens and the end token")
    c.add_argument("--batch-size", type=int, default=32, help="images per CLIP call (default 32)")
    c.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    c.add_argument("--json", action="store_true", help="print per-image scores, the aggregate "
                   "and its interval as JSON")
    c.set_defaults(func=cmd_clipscore)
