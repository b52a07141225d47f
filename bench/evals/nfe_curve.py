"""Eval ``nfe_curve``: quality against the number of function evaluations.

For each (model, sampler, NFE) cell it draws N samples from per-sample seeds, runs the sampler
through an NFE-counting wrapper, and feeds each batch to the configured metrics. The default
metric is the error against an oracle's exact ODE solution; for real models the y-axis is any
other registered metric (``params: {metrics: [fid]}``). ``gallery: N`` writes the decoded
images of each cell's first N samples to ``RESULTS/_gallery/`` (for reports); nothing is written
to disk otherwise.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.denoiser import CountingDenoiser
from bench.evals.base import Eval, ShardResult
from bench.metrics.base import MetricContext, SampleBatch
from bench.noise import NoiseSource
from bench.registry import EVALS, METRICS, MODELS, SAMPLERS
from bench.samplers.schedules import make_grid
from bench.suite import Cell


_LOADED: dict[str, tuple[Any, Any]] = {}


def load_model(spec: dict[str, Any], device: torch.device) -> tuple[Any, Any]:
    """(adapter, denoiser) for a model spec, kept for the next cell of the same job."""
    key = json.dumps([spec["name"], spec["params"], str(device)], sort_keys=True, default=str)
    if key not in _LOADED:
        _LOADED.clear()  # one model in memory at a time
        adapter = MODELS.get(spec["name"])(**spec["params"])
        _LOADED[key] = (adapter, adapter.load(device))
    return _LOADED[key]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return "cpu"


def gallery_dir(results_dir: Path, suite: str, model: str, sampler: str, nfe: int) -> Path:
    slug = lambda v: re.sub(r"[^A-Za-z0-9_.=-]+", "-", v).strip("-")  # noqa: E731
    return results_dir / "_gallery" / slug(suite) / f"{slug(model)}__{slug(sampler)}__nfe{nfe}"


def save_gallery(cache_dir: Any, cell: Cell, adapter: Any, idx: np.ndarray, out: torch.Tensor,
                 cond: Any, limit: int) -> None:
    """Decoded images of samples ``idx < limit`` -> ``_gallery/<suite>/<cell>/<first idx>.npz``
    (one file per batch, written atomically, so a resumed shard keeps what it wrote)."""
    keep = idx < limit
    folder = gallery_dir(Path(cache_dir).parent, cell.suite, cell.model["label"],
                         cell.sampler["label"], cell.nfe)
    folder.mkdir(parents=True, exist_ok=True)
    images = adapter.decode(out[torch.from_numpy(keep).to(out.device)]).cpu().numpy()
    c = np.full(int(keep.sum()), -1) if cond is None else \
        torch.as_tensor(cond).reshape(-1).cpu().numpy()[keep]
    names = getattr(adapter, "cond_names", lambda: None)()
    tmp = folder / f".{int(idx[0]):08d}.tmp.npz"
    np.savez(tmp, images=images, idx=idx[keep], cond=c,
             names=np.array(json.dumps(names and {str(k): v for k, v in names.items()})))
    os.replace(tmp, folder / f"{int(idx[0]):08d}.npz")


@EVALS.register("nfe_curve", "Sampler quality vs NFE: per-sample seeds, counted NFE, wall time; "
                "metric default oracle_rmse")
class NFECurve(Eval):
    def __init__(self, *, metrics: list[str] = ("oracle_rmse",),  # type: ignore[assignment]
                 gallery: int = 0) -> None:
        super().__init__(metrics=list(metrics), **({"gallery": int(gallery)} if gallery else {}))
        self.metrics = [m if isinstance(m, str) else m["name"] for m in metrics]
        self.gallery = int(gallery)

    def run_shard(self, cell: Cell, cache_dir: Any = None, progress: Any = None) -> ShardResult:
        t_start = time.perf_counter()
        device = resolve_device(cell.device)
        adapter, denoiser = load_model(cell.model, device)
        model = CountingDenoiser(denoiser)
        sigmas = make_grid(cell.sampler["grid"], model.schedule, cell.steps).to(device)
        sampler = SAMPLERS.get(cell.sampler["name"])
        ctx = MetricContext(adapter, device, cache_dir)
        metrics = {name: METRICS.get(name)(ctx) for name in self.metrics}
        # Resume from an interrupted attempt: folded state of the finished batches.
        saved = progress.resume() if progress is not None else None
        start, acc, meta = saved if saved else (cell.start, None, {
            "nfe_counted": None, "network_calls": 0, "sample_s": 0.0, "model_s": 0.0,
            "metric_s": 0.0, "load_s": 0.0, "wall_s": 0.0, "attempts": 0})
        meta = {**meta, "load_s": meta["load_s"] + time.perf_counter() - t_start,
                "attempts": meta["attempts"] + 1}
        wall_before = meta["wall_s"]
        starts = range(start, cell.stop, cell.batch_size)
        for b0 in tqdm(starts, desc=cell.label(), leave=False, disable=None):
            idx = np.arange(b0, min(b0 + cell.batch_size, cell.stop), dtype=np.int64)
            noise = NoiseSource(cell.seed, idx, device, adapter.dtype)
            x = noise.randn(adapter.sample_shape()) * sigmas[0].to(adapter.dtype)
            model.reset()
            batch_cond = getattr(adapter, "batch_cond", None)
            model.cond = batch_cond(torch.from_numpy(idx)) if batch_cond is not None else None
            t0 = time.perf_counter()
            out = sampler(model, x, sigmas, noise=noise, **cell.sampler["params"])
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t1 = time.perf_counter()
            if meta["nfe_counted"] not in (None, model.nfe):
                raise RuntimeError(f"counted NFE differs between batches: {meta['nfe_counted']} "
                                   f"vs {model.nfe}")
            if self.gallery and b0 < self.gallery and cell.start == 0 and cache_dir is not None:
                save_gallery(cache_dir, cell, adapter, idx, out, model.cond, self.gallery)
            batch = SampleBatch(idx, x, out, sigmas)
            states = {}
            for name, m in metrics.items():
                m.update(batch)
                states[name] = m.state()
                m.reset()
            acc = states if acc is None else {
                name: METRICS.get(name).merge([acc[name], states[name]]) for name in states}
            now = time.perf_counter()
            meta = {**meta, "nfe_counted": model.nfe,
                    "network_calls": max(meta["network_calls"], model.network_calls),
                    "sample_s": meta["sample_s"] + t1 - t0, "model_s": meta["model_s"] + model.model_s,
                    "metric_s": meta["metric_s"] + now - t1, "wall_s": wall_before + now - t_start}
            if progress is not None:
                progress.update(int(idx[-1]) + 1, acc, meta)  # one assignment: consistent snapshot
        if acc is None or meta["nfe_counted"] is None:
            raise RuntimeError(f"shard {cell.label()} has no samples")
        state = {f"{name}/{k}": v for name, st in acc.items() for k, v in st.items()}
        meta.update({"n_samples": cell.stop - cell.start, "device": device_name(device),
                     "model_hash": adapter.describe().get("weights_hash", ""),
                     "sigma_start": float(sigmas[0]), "sigma_end": float(sigmas[-1])})
        return state, meta

    def finalize(self, cells: list[Cell], shards: list[ShardResult]) -> list[dict[str, Any]]:
        metas = [m for _, m in shards]
        counted = {m["nfe_counted"] for m in metas}
        if len(counted) != 1:
            raise RuntimeError(f"shards of one cell counted different NFE: {sorted(counted)}")
        wall = sum(m["wall_s"] for m in metas)
        n = sum(m["n_samples"] for m in metas)
        common = {"nfe_counted": counted.pop(), "network_calls": max(m["network_calls"] for m in metas),
                  "n_samples": n, "wall_s": wall, "sample_s": sum(m["sample_s"] for m in metas),
                  "model_s": sum(m["model_s"] for m in metas),
                  "load_s": sum(m["load_s"] for m in metas),
                  "metric_s": sum(m["metric_s"] for m in metas), "samples_per_s": n / wall if wall else
                  float("nan"), "device": metas[0]["device"], "model_hash": metas[0]["model_hash"],
                  "sigma_start": metas[0]["sigma_start"], "sigma_end": metas[0]["sigma_end"]}
        rows = []
        for name in self.metrics:
            cls = METRICS.get(name)
            prefix = f"{name}/"
            states = [{k[len(prefix):]: v for k, v in s.items() if k.startswith(prefix)}
                      for s, _ in shards]
            for metric, (value, lo, hi) in cls.compute(cls.merge(states)).items():
                rows.append({**common, "metric": metric, "value": value, "ci_low": lo, "ci_high": hi})
        return rows
