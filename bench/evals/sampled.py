"""Sharded evals: a shard's samples are generated in batches (``bench.generate``), each batch
feeds the eval's metrics, and the per-batch states are folded left to right, so a shard
interrupted after any batch resumes to bitwise the same state and shards merge exactly.

Besides the metrics, every shard keeps a per-sample record (index, seed of its stream, its
condition, the sampler's per-sample extras), from which ``finalize`` writes the per-sample
table, joined with each metric's per-sample values. Aggregate rows carry a ``slice``: ``all``,
and with ``slices: [condition, category]`` one row per condition (``class=<label>`` or
``prompt=<id>``) and per category for metrics with per-sample values (mean and 95% t-CI).

A metric that reads a per-sample sampler extra (``Metric.needs_extra``, e.g. the uncertainty
filter) runs only in the cells whose sampler declares that extra; the eval's other metrics run in
every cell. ``extremes: {by: EXTRA, n: N}`` keeps, in the cells whose sampler gives ``EXTRA``,
the images of the N lowest and N highest samples of each batch (``bench.evals.gallery``), from
which a report draws the cell's N lowest and N highest (e.g. BayesDiff's least and most
uncertain images).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable


import numpy as np
from tqdm.auto import tqdm

from bench.conditions import Conditions
from bench.errors import FieldError, close_matches
from bench.evals.base import Eval, Models, ShardResult
from bench.evals.gallery import save_extremes, save_gallery
from bench.generate import Generation, LoadedModel, SamplerSpec, generate
from bench.metrics.base import Metric, MetricContext, mean_ci, merge_per_sample
from bench.registry import METRICS

SLICES = ("all", "condition", "category")
if TYPE_CHECKING:
    import pandas as pd

RECORD = "_samples"  # state prefix of the per-sample record


@dataclass(frozen=True)
class MetricSpec:
    name: str
    params: dict[str, Any]


def parse_metrics(metrics: Any, field_: str = "metrics") -> list[MetricSpec]:
    """``[fid, {name: kid, params: {...}}]`` -> specs; names checked against the registry."""
    if isinstance(metrics, (str, dict)):
        metrics = [metrics]
    if not isinstance(metrics, (list, tuple)) or not metrics:
        raise FieldError(field_, f"must be a non-empty list of metric names, got {metrics!r}.",
                         f"e.g. '{field_}: [fid, kid]' (see 'bench list metrics').")
    out = []
    for i, m in enumerate(metrics):
        where = f"{field_}[{i}]"
        if isinstance(m, dict):
            extra = set(m) - {"name", "params"}
            if extra or not isinstance(m.get("name"), str):
                raise FieldError(where, f"must be a name or {{name, params}}, got {m!r}.",
                                 "write '- fid' or '- {name: kid, params: {subset_size: 500}}'.")
            name, params = m["name"], m.get("params") or {}
        elif isinstance(m, str):
            name, params = m, {}
        else:
            raise FieldError(where, f"must be a metric name, got {m!r}.", "write e.g. '- fid'.")
        if name not in METRICS:
            raise FieldError(f"{where}", f"unknown metric {name!r}.{close_matches(name, METRICS.names())}",
                             f"use one of: {', '.join(METRICS.names())} (see 'bench list metrics').")
        if not isinstance(params, dict):
            raise FieldError(f"{where}.params", f"must be a mapping, got {params!r}.",
                             "write 'params: {key: value}'.")
        out.append(MetricSpec(name, dict(params)))
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise FieldError(field_, f"lists a metric twice: {names}.", "list each metric once.")
    return out


class SampleRecord:
    """The per-sample record of a shard, folded like a metric's state."""

    def __init__(self, conditions: Conditions) -> None:
        self.conditions = conditions
        self.reset()

    def reset(self) -> None:
        self.parts: list[dict[str, np.ndarray]] = []

    def update(self, gen: Generation) -> None:
        conds = gen.conditions
        part = {"index": gen.indices.copy(), "seed": gen.seeds.copy(),
                "finite": np.asarray(gen.finite if gen.finite is not None else np.ones(len(gen), bool))}
        if conds is not None:
            part["cond_id"] = np.array([c.id for c in conds], dtype=str)
            part["cond_text"] = np.array([c.text or "" for c in conds], dtype=str)
            part["category"] = np.array([c.category for c in conds], dtype=str)
        for k, v in gen.extras.items():
            if v.ndim == 1:
                part[f"extra_{k}"] = v
        self.parts.append(part)

    def state(self) -> dict[str, np.ndarray]:
        return merge_per_sample(self.parts) if self.parts else {"index": np.zeros(0, np.int64)}

    @staticmethod
    def merge(states: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        return merge_per_sample([s for s in states if len(s["index"])] or states[:1])


def check_extremes(extremes: Any) -> tuple[str, int] | None:
    """``{by: EXTRA, n: N}`` (n default 10) -> (EXTRA, N); None when not set."""
    if extremes is None:
        return None
    fix = "write e.g. 'extremes: {by: uncertainty, n: 10}' (the 10 lowest and highest samples)."
    if not isinstance(extremes, dict) or set(extremes) - {"by", "n"} or "by" not in extremes:
        raise FieldError("extremes", f"must be a mapping with 'by' (a sampler extra) and "
                         f"optionally 'n', got {extremes!r}.", fix)
    by, n = extremes["by"], extremes.get("n", 10)
    if not isinstance(by, str) or not by:
        raise FieldError("extremes.by", f"must name a per-sample sampler extra, got {by!r}.", fix)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise FieldError("extremes.n", f"must be a whole number >= 1, got {n!r}.", fix)
    return by, n


def flatten(acc: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {f"{name}/{k}": v for name, st in acc.items() for k, v in st.items()}


def unflatten(flat: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    p = f"{prefix}/"
    return {k[len(p):]: v for k, v in flat.items() if k.startswith(p)}


def sample_batches(loaded: LoadedModel, spec: SamplerSpec, start: int, stop: int, batch_size: int,
                   seed: int, conditions: Conditions, decode: bool, desc: str = ""
                   ) -> Iterable[Generation]:
    """Generations of samples [start, stop) in batches of ``batch_size`` (with a progress bar)."""
    starts = range(start, stop, batch_size)
    for b0 in tqdm(starts, desc=desc, leave=False, disable=None):
        idx = np.arange(b0, min(b0 + batch_size, stop), dtype=np.int64)
        yield generate(loaded, spec, idx, seed, conditions.for_indices(idx),
                       negative_prompt=conditions.negative_prompt, decode=decode)


class SampledEval(Eval):
    """Generate each shard's samples and measure them with the eval's metrics (see module doc)."""

    shape = "sharded"
    default_metrics: tuple[Any, ...] = ("oracle_rmse",)

    def __init__(self, *, metrics: Any = None, gallery: int = 0, slices: Any = ("all",),
                 extremes: Any = None) -> None:
        specs = parse_metrics(list(self.default_metrics) if metrics is None else metrics)
        if isinstance(gallery, bool) or not isinstance(gallery, int) or gallery < 0:
            raise FieldError("gallery", f"= {gallery!r}.", "use a number of samples >= 0.")
        self.extremes = check_extremes(extremes)
        if not isinstance(slices, (str, list, tuple)):
            raise FieldError("slices", f"must be a list of slice names, got {slices!r}.",
                             f"write e.g. 'slices: [all, condition]' (slices: {', '.join(SLICES)}).")
        slices = [slices] if isinstance(slices, str) else list(slices)
        for s in slices:
            if s not in SLICES:
                raise FieldError("slices", f"{s!r} is not a slice.{close_matches(str(s), SLICES)}",
                                 f"use a list of: {', '.join(SLICES)}.")
        self.specs = [MetricSpec(s.name, self.metric_params(s)) for s in specs]
        for s in self.specs:
            try:
                METRICS.get(s.name).check_params(s.params)
            except FieldError as exc:
                raise FieldError(f"metrics.{s.name}.{exc.field}", exc.problem, exc.fix) from None
        self.gallery = gallery
        self.slices = ["all", *[s for s in slices if s != "all"]]
        super().__init__(metrics=[{"name": s.name, "params": s.params} for s in self.specs],
                         **({"gallery": gallery} if gallery else {}),
                         **({"extremes": dict(zip(("by", "n"), self.extremes))}
                            if self.extremes else {}),
                         **({"slices": self.slices} if self.slices != ["all"] else {}))

    def metric_params(self, spec: MetricSpec) -> dict[str, Any]:
        """A metric's parameters (the fidelity eval adds the ones its metrics share)."""
        return spec.params

    def metric_specs(self) -> list[tuple[str, dict[str, Any]]]:
        return [(s.name, s.params) for s in self.specs]

    def extras_needed(self) -> dict[str, str]:
        """What reads a per-sample sampler extra: ``{"metrics.<name>" | "extremes": extra}``."""
        out = {f"metrics.{s.name}": METRICS.get(s.name).needs_extra(s.params) for s in self.specs}
        if self.extremes:
            out["extremes"] = self.extremes[0]
        return {k: v for k, v in out.items() if v is not None}

    def specs_for(self, sampler: dict[str, Any]) -> list[MetricSpec]:
        """The metrics that run in a cell of this sampler (module doc)."""
        from bench.samplers.base import sampler_info

        has = sampler_info(sampler["name"]).extras
        return [s for s in self.specs
                if METRICS.get(s.name).needs_extra(s.params) in (None, *has)]

    def make_metrics(self, loaded: LoadedModel, cache_dir: Any,
                     specs: list[MetricSpec] | None = None) -> dict[str, Metric]:
        """The metrics of ``specs`` (default: all of the eval's)."""
        return {s.name: METRICS.get(s.name)(MetricContext(loaded.adapter, loaded.device, cache_dir,
                                                          params=s.params, model=loaded))
                for s in (self.specs if specs is None else specs)}

    def run_shard(self, shard: Any, models: Models, cache_dir: Any = None,
                  progress: Any = None) -> ShardResult:
        t_start = time.perf_counter()
        loaded = models.get(shard.model, shard.device)
        spec = SamplerSpec.from_dict(shard.sampler, shard.steps)
        metrics = self.make_metrics(loaded, cache_dir, self.specs_for(shard.sampler))
        record = SampleRecord(shard.conditions)
        from bench.samplers.base import sampler_info

        extremes = (self.extremes if self.extremes and cache_dir is not None
                    and self.extremes[0] in sampler_info(shard.sampler["name"]).extras else None)
        decode = (self.gallery > 0 or extremes is not None
                  or any(m.needs_images for m in metrics.values()))
        saved = progress.resume() if progress is not None else None
        start, acc, meta = saved if saved else (shard.start, None, {
            "nfe_counted": None, "network_calls": 0, "sample_s": 0.0, "model_s": 0.0,
            "decode_s": 0.0, "metric_s": 0.0, "load_s": 0.0, "wall_s": 0.0, "attempts": 0})
        meta = {**meta, "load_s": meta["load_s"] + time.perf_counter() - t_start,
                "attempts": meta["attempts"] + 1}
        wall_before = meta["wall_s"]
        for gen in sample_batches(loaded, spec, start, shard.stop, shard.batch_size, shard.seed,
                                  shard.conditions, decode, shard.label()):
            t1 = time.perf_counter()
            if meta["nfe_counted"] not in (None, gen.nfe):
                raise RuntimeError(f"counted NFE differs between batches: {meta['nfe_counted']} "
                                   f"vs {gen.nfe}")
            if self.gallery and gen.indices[0] < self.gallery and cache_dir is not None:
                save_gallery(cache_dir, shard, gen, self.gallery)
            if extremes is not None:
                save_extremes(cache_dir, shard, gen, *extremes)
            states = {}
            for name, m in [*metrics.items(), (RECORD, record)]:
                m.update(gen)
                states[name] = m.state()
                m.reset()
            acc = states if acc is None else {
                name: self._merge(name, [acc[name], states[name]]) for name in states}
            now = time.perf_counter()
            meta = {**meta, "nfe_counted": gen.nfe,
                    "network_calls": max(meta["network_calls"], gen.network_calls),
                    "sample_s": meta["sample_s"] + gen.timings["sample_s"],
                    "model_s": meta["model_s"] + gen.timings["model_s"],
                    "decode_s": meta["decode_s"] + gen.timings["decode_s"],
                    "metric_s": meta["metric_s"] + now - t1, "wall_s": wall_before + now - t_start}
            if progress is not None:
                progress.update(int(gen.indices[-1]) + 1, acc, meta)  # one consistent snapshot
        if acc is None or meta["nfe_counted"] is None:
            raise RuntimeError(f"shard {shard.label()} has no samples")
        meta.update({"n_samples": shard.stop - shard.start, "device": models.device_name(loaded),
                     "sigma_start": float(loaded.sigmas(spec)[0]),
                     "sigma_end": float(loaded.sigmas(spec)[-1])})
        return flatten(acc), meta

    @staticmethod
    def _merge(name: str, states: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        return SampleRecord.merge(states) if name == RECORD else METRICS.get(name).merge(states)

    def finalize(self, shards: list[Any], results: list[ShardResult]
                 ) -> tuple[list[dict[str, Any]], pd.DataFrame]:
        import pandas as pd

        metas = [m for _, m in results]
        counted = {m["nfe_counted"] for m in metas}
        if len(counted) != 1:
            raise RuntimeError(f"shards of one cell counted different NFE: {sorted(counted)}")
        common = cost_columns(metas)
        record = SampleRecord.merge([unflatten(s, RECORD) for s, _ in results])
        table = pd.DataFrame({k: v for k, v in record.items()})
        rows = []
        for spec in self.specs_for(shards[0].sampler):
            cls = METRICS.get(spec.name)
            state = cls.merge([unflatten(s, spec.name) for s, _ in results])
            described = cls.describe(state)
            for metric, (value, lo, hi) in cls.compute(state).items():
                rows.append({**common, **described, "metric": metric, "value": value,
                             "ci_low": lo, "ci_high": hi, "slice": "all", "step": 0})
            per = cls.per_sample(state)
            if per:
                pos = pd.Series(np.arange(len(table)), index=table["index"].to_numpy())
                at = pos.reindex(state["index"]).to_numpy()
                for k, v in per.items():
                    col = np.full(len(table), np.nan)
                    col[at] = v
                    table[k] = col
                rows += self.slice_rows(table, per, {**common, **described}, shards[0].conditions)
        bad = int((~table["finite"].astype(bool)).sum()) if "finite" in table else 0
        for r in rows:  # samples whose output had NaN or inf (a metric may count its own)
            if r["slice"] == "all" and r.get("n_nonfinite") is None:
                r["n_nonfinite"] = bad
        return rows, table

    def slice_rows(self, table: pd.DataFrame, per: dict[str, np.ndarray], common: dict[str, Any],
                   conditions: Conditions) -> list[dict[str, Any]]:
        """Mean and 95% t-CI of per-sample values on each condition / category."""
        rows = []
        for how in self.slices[1:]:
            col = "cond_id" if how == "condition" else "category"
            if col not in table or conditions.kind == "none":
                continue
            # condition ids of classes read 'class=<label>'; prompts get 'prompt=<id>'
            prefix = "prompt=" if how == "condition" and conditions.kind == "prompts" else \
                ("category=" if how == "category" else "")
            for key, sub in table.groupby(col, sort=True):
                if how == "category" and not key:
                    continue
                for metric in per:
                    value, lo, hi = mean_ci(sub[metric].dropna().to_numpy())
                    rows.append({**common, "metric": metric, "value": value, "ci_low": lo,
                                 "ci_high": hi, "slice": f"{prefix}{key}", "step": 0,
                                 "n_samples": int(len(sub))})
        return rows


def cost_columns(metas: list[dict[str, Any]]) -> dict[str, Any]:
    """Counted NFE, network calls, sample count and timings of a cell from its shards' metas."""
    wall = sum(m["wall_s"] for m in metas)
    n = sum(m["n_samples"] for m in metas)
    return {"nfe_counted": metas[0]["nfe_counted"],
            "network_calls": max(m["network_calls"] for m in metas),
            "n_samples": n, "wall_s": wall, "sample_s": sum(m["sample_s"] for m in metas),
            "model_s": sum(m["model_s"] for m in metas),
            "load_s": sum(m["load_s"] for m in metas),
            "metric_s": sum(m["metric_s"] for m in metas),
            "samples_per_s": n / wall if wall else float("nan"), "device": metas[0]["device"],
            "sigma_start": metas[0]["sigma_start"], "sigma_end": metas[0]["sigma_end"]}
