"""Reference statistics registry: what generated samples are compared against, by content.

A reference is an ``.npz`` in the refstats folder (``$BENCH_REFSTATS_DIR``, default
``~/.cache/bench/refstats``) holding the feature mean ``mu`` and covariance ``sigma``
(float64), the sample count, optionally the per-image features (float32; needed by KID,
precision/recall, density/coverage) and a JSON ``meta`` record. Its id is readable and ends in
a content hash of everything that determines the numbers::

    fmnist-test-10000-inception-clean-<sha256(data hash, weights sha256, preprocessing,
                                              feature code version, count)[:16]>

so building the same reference twice finds the first (nothing is recomputed), and a changed
data set, weights file, preprocessing or feature code gives a new id. Statistics made by other
tools (pytorch-fid / clean-fid / EDM ``mu``+``sigma`` files, clean-fid KID ``feats``) are
imported under an id keyed by the file's hash, with whatever provenance the user states.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError, close_matches
from bench.integrity import CorruptFile, checked, load_npz, npz_ok, quarantine, save_npz

REFSTATS_ENV = "BENCH_REFSTATS_DIR"


def refstats_dir(path: str | os.PathLike | None = None) -> Path:
    if path:
        return Path(path).expanduser()
    env = os.environ.get(REFSTATS_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bench" / "refstats"


@dataclass
class RefStats:
    id: str
    mu: np.ndarray
    sigma: np.ndarray
    n: int
    features: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def require_features(self, metric: str) -> np.ndarray:
        if self.features is None:
            raise BenchError(f"{metric} needs the reference's per-image features, and reference "
                             f"'{self.id}' holds only mu/sigma ({self.meta.get('source', 'built')}). "
                             f"Build it with 'bench refstats build' (features are kept by default) "
                             f"or import a file with a 'feats' array.")
        return self.features


# ------------------------------------------------------------------------------- sums -> stats
class Moments:
    """Float64 running sums of features: n, sum x, sum x x^T. Shards merge by adding."""

    def __init__(self, dim: int) -> None:
        self.n = 0
        self.s1 = np.zeros(dim, np.float64)
        self.s2 = np.zeros((dim, dim), np.float64)

    def update(self, feats: Any) -> None:
        import torch

        f = torch.as_tensor(feats).to(torch.float64)
        self.n += int(f.shape[0])
        self.s1 += f.sum(0).numpy()
        self.s2 += (f.T @ f).numpy()

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        return mean_cov(self.n, self.s1, self.s2)


def mean_cov(n: int, s1: np.ndarray, s2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (as np.cov) from float64 sums."""
    if n < 2:
        raise BenchError(f"a covariance needs at least 2 samples, got {n}.")
    mu = s1 / n
    sigma = (s2 - n * np.outer(mu, mu)) / (n - 1)
    return mu, (sigma + sigma.T) / 2


# ------------------------------------------------------------------------------- the store
def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in s).strip("-")[:40] or "ref"


def ref_path(ref_id: str, root: str | os.PathLike | None = None) -> Path:
    return refstats_dir(root) / f"{ref_id}.npz"


def save(ref: RefStats, root: str | os.PathLike | None = None) -> Path:
    """Write the statistics with their content digest (``bench.integrity``)."""
    path = ref_path(ref.id, root)
    arrays: dict[str, Any] = {"mu": ref.mu.astype(np.float64), "sigma": ref.sigma.astype(np.float64),
                              "n": np.array(ref.n), "meta": np.array(json.dumps(ref.meta))}
    if ref.features is not None:
        arrays["features"] = ref.features.astype(np.float32)
    save_npz(path, arrays)
    load.cache_clear()
    return path


def read_meta(path: Path) -> dict[str, Any]:
    return json.loads(str(load_npz(path)["meta"]))


@lru_cache(maxsize=4)
def load(ref_id: str, root: str | None = None) -> RefStats:
    """Statistics by id, verified against their digest (CorruptFile names a bad file)."""
    path = ref_path(ref_id, root)
    if not path.is_file():
        known = list_ids(root)
        raise BenchError(f"unknown reference statistics id '{ref_id}' in {path.parent}."
                         f"{close_matches(ref_id, known)} Known: {', '.join(known) or '(none)'}. "
                         f"Build one with 'bench refstats build --dataset NAME', import one with "
                         f"'bench refstats import FILE.npz', or set ${REFSTATS_ENV}.")
    z = load_npz(path)
    feats = z["features"] if "features" in z else None
    return RefStats(ref_id, z["mu"], z["sigma"], int(z["n"]), feats, json.loads(str(z["meta"])))


def list_ids(root: str | os.PathLike | None = None) -> list[str]:
    d = refstats_dir(root)
    return sorted(p.stem for p in d.glob("*.npz") if not p.name.startswith(".")) if d.is_dir() else []


def list_refs(root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    out = []
    for ref_id in list_ids(root):
        try:
            meta = read_meta(ref_path(ref_id, root))
        except CorruptFile as exc:
            meta = {"dataset": f"CORRUPT: {exc.reason}"}
        out.append({"id": ref_id, **meta})
    return out


# ------------------------------------------------------------------------------- building
def ref_id_for(dataset: Any, extractor: Any, limit: int | None = None) -> tuple[str, dict[str, Any]]:
    """The content-keyed id (and its key record) of a data set's statistics under an extractor."""
    n = len(dataset) if limit is None else min(int(limit), len(dataset))
    key = {"data_sha256": dataset.content_hash(limit), "n": n, **extractor.key()}
    ext = extractor.describe()
    ref_id = f"{_slug(dataset.name)}-{n}-{ext['extractor']}-{ext['resize']}-{_hash(key)[:16]}"
    return ref_id, key


def build(dataset: Any, extractor: Any, *, limit: int | None = None, keep_features: bool = True,
          root: str | os.PathLike | None = None, batch_size: int = 100,
          progress: bool = False) -> tuple[RefStats, bool]:
    """Statistics of ``dataset`` under ``extractor``; (ref, built_now). Found -> nothing recomputed."""
    ref_id, key = ref_id_for(dataset, extractor, limit)
    path = ref_path(ref_id, root)
    if checked(path, refstats_dir(root), npz_ok):  # a corrupt file is moved aside and rebuilt
        ref = load(ref_id, str(root) if root else None)
        if keep_features and ref.features is None:
            pass  # rebuild below with features
        else:
            return ref, False
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    mom = Moments(extractor.dim)
    feats: list[np.ndarray] = []
    n = len(dataset) if limit is None else min(int(limit), len(dataset))
    for images in tqdm(dataset.batches(batch_size, limit), total=-(-n // batch_size),
                       desc=f"refstats {ref_id}", disable=not progress):
        f = extractor(images)["pool"]
        mom.update(f)
        if keep_features:
            feats.append(f.numpy())
    mu, sigma = mom.mean_cov()
    meta = {"dataset": dataset.name, **key, "extractor": extractor.describe(),
            "source": "built", "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "build_s": round(time.perf_counter() - t0, 3), "has_features": keep_features}
    ref = RefStats(ref_id, mu, sigma, mom.n, np.concatenate(feats) if keep_features else None, meta)
    save(ref, root)
    return ref, True


def import_stats(path: str | os.PathLike, *, name: str | None = None, fmt: str = "auto",
                 meta: dict[str, Any] | None = None,
                 root: str | os.PathLike | None = None) -> RefStats:
    """Import ``mu``/``sigma`` (pytorch-fid, clean-fid, EDM) and/or ``feats`` (clean-fid KID)."""
    p = Path(path)
    if not p.is_file():
        raise BenchError(f"statistics file '{p}' does not exist.")
    with np.load(p, allow_pickle=False) as z:
        files = set(z.files)
        mu = z["mu"].astype(np.float64) if "mu" in files else None
        sigma = z["sigma"].astype(np.float64) if "sigma" in files else None
        feats = None
        for k in ("feats", "features"):
            if k in files:
                feats = z[k].astype(np.float32)
    if mu is None or sigma is None:
        if feats is None:
            raise BenchError(f"'{p}' holds neither mu/sigma (pytorch-fid, clean-fid, EDM) nor "
                             f"feats (clean-fid KID); keys: {sorted(files)}.")
        m = Moments(feats.shape[1])
        m.update(feats)
        mu, sigma = m.mean_cov()
    if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
        raise BenchError(f"'{p}': mu {mu.shape} and sigma {sigma.shape} do not match.")
    detected = {"auto": "mu/sigma" if feats is None else "mu/sigma+feats"}.get(fmt, fmt)
    if fmt not in ("auto", "pytorch-fid", "clean-fid", "edm"):
        raise BenchError(f"unknown statistics format '{fmt}': use auto, pytorch-fid, clean-fid or edm.")
    file_hash = hashlib.sha256(p.read_bytes()).hexdigest()
    n = int(len(feats)) if feats is not None else -1
    info = {"dataset": name or p.stem, "source": f"imported ({detected})", "file": p.name,
            "file_sha256": file_hash, "n": n, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "has_features": feats is not None,
            "extractor": {"extractor": "unknown", "weights_sha256": "unknown", "resize": "unknown",
                          "dim": int(mu.size)}}
    for k, v in (meta or {}).items():
        if k in ("extractor", "weights_sha256", "resize") and v:
            info["extractor"][k] = v
        elif v is not None:
            info[k] = v
    ref_id = f"{_slug(name or p.stem)}-imported-{file_hash[:16]}"
    ref = RefStats(ref_id, mu, sigma, n, feats, info)
    save(ref, root)
    return ref


def resolve(spec: str, extractor: Any, *, root: str | os.PathLike | None = None,
            limit: int | None = None, keep_features: bool = True) -> RefStats:
    """A refstats id, a stats ``.npz`` (imported), or a data set (built or found)."""
    if ref_path(spec, root).is_file():
        try:
            return load(spec, str(root) if root else None)
        except CorruptFile as exc:
            moved = quarantine(exc.path, refstats_dir(root), exc.reason)
            raise BenchError(f"reference statistics '{spec}' were corrupt ({exc.reason}) and were "
                             f"moved to '{moved}'. Give the data set they were built from as 'ref' "
                             f"(they are rebuilt), or import the statistics file again.") from None
    p = Path(spec)
    if p.is_file() and p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            is_stats = "mu" in z.files or "feats" in z.files
        if is_stats:
            return import_stats(p, root=root)
    from bench.data import open_dataset

    try:
        ds = open_dataset(spec)
    except BenchError as exc:
        known = list_ids(root)
        raise BenchError(f"reference '{spec}' is not a refstats id{close_matches(spec, known)}, a "
                         f"statistics file, nor a data set: {exc}") from None
    ref, _ = build(ds, extractor, limit=limit, keep_features=keep_features, root=root)
    return ref


def check_compatible(ref: RefStats, ext_desc: dict[str, Any]) -> list[str]:
    """Problems (empty if none) comparing generated features with this reference."""
    r = ref.meta.get("extractor", {})
    problems = []
    for k in ("extractor", "weights_sha256", "resize", "dim"):
        rv, gv = r.get(k, "unknown"), ext_desc.get(k)
        if rv == "unknown":
            continue
        if rv != gv:
            problems.append(f"{k}: reference {rv!r} vs generated {gv!r}")
    return problems
