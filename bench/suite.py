"""Suites: YAML files with ``include:`` and ``--set`` overrides, validated into Cells.

A suite crosses models x samplers x NFE list x evals; ``plan()`` turns it into Cells, each a
(model, sampler, NFE, eval, shard of sample indices) keyed by a hash of everything that
determines its numbers (including the package's code hash), so a finished cell is never
recomputed.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

import bench
from bench.errors import BenchError, SuiteError, close_matches
from bench.registry import EVALS, GRIDS, MODELS, SAMPLERS, Registry, load_all

TOP_LEVEL = {
    "name": "suite name (letters, digits, - and _), used in results and reports",
    "description": "free text",
    "include": "base suite file(s) merged under this one, paths relative to this file",
    "seed": "integer seed; sample i uses a stream seeded from (seed, i)",
    "samples": "number of samples per cell",
    "batch_size": "samples per model batch (results do not depend on it)",
    "shard_size": "samples per shard/job (results do not depend on it); default: all",
    "device": "cpu | cuda | auto",
    "nfe": "list of requested numbers of function evaluations",
    "nfe_rounding": "error | down | up: what to do with an NFE a sampler cannot hit exactly",
    "models": "list of model names or {name, label, params}",
    "samplers": "list of sampler names or {name, label, params, grid}",
    "evals": "list of eval names or {name, params}",
    "executor": "{name: debug|local|slurm, ...} default executor and its parameters",
    "report": "{fit_min_nfe: N} options for bench report",
}
REQUIRED = ("name", "models", "samplers", "nfe", "evals")
DEFAULTS: dict[str, Any] = {"seed": 0, "samples": 64, "batch_size": 64, "shard_size": None,
                            "device": "auto", "nfe_rounding": "error", "executor": {},
                            "report": {}, "description": ""}


# ------------------------------------------------------------------------------ loading
def _read_yaml(path: Path, origin: str) -> dict[str, Any]:
    if not path.is_file():
        raise SuiteError(origin, "include" if origin != str(path) else "(file)",
                         f"file '{path}' does not exist.", "check the path (relative paths in "
                         "include: are resolved from the including file).")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SuiteError(str(path), "(file)", f"is not valid YAML{where}: "
                         f"{getattr(exc, 'problem', exc)}.",
                         "fix the YAML syntax (indentation, ':' after keys, closed brackets).") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SuiteError(str(path), "(file)", f"must be a mapping of fields, got a "
                         f"{type(data).__name__}.", "write the suite as 'key: value' lines.")
    return data


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_raw(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a suite file, resolving ``include:`` (a path or a list) recursively."""
    path = Path(path)
    if path.resolve() in _seen:
        raise SuiteError(str(path), "include", "includes itself (a cycle).", "remove the cycle.")
    data = _read_yaml(path, str(path))
    inc = data.pop("include", None)
    if inc is None:
        return data
    incs = [inc] if isinstance(inc, str) else inc
    if not isinstance(incs, list) or not all(isinstance(i, str) for i in incs):
        raise SuiteError(str(path), "include", f"must be a path or a list of paths, got {inc!r}.",
                         "write 'include: base.yaml'.")
    merged: dict[str, Any] = {}
    for i in incs:
        merged = _merge(merged, load_raw(path.parent / i, _seen + (path.resolve(),)))
    return _merge(merged, data)


def apply_sets(data: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (value parsed as YAML; list items by index)."""
    data = copy.deepcopy(data)
    for item in sets:
        if "=" not in item:
            raise SuiteError("--set", item, "is not of the form key=value.",
                             "write e.g. --set samples=128 or --set nfe=[5,10].")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node: Any = data
        parts = key.strip().split(".")
        for j, part in enumerate(parts):
            last = j == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise SuiteError("--set", key, f"'{part}' is not an index of a list of "
                                     f"{len(node)} items.", "use a valid 0-based index.")
                idx = int(part)
                if isinstance(node[idx], str) and not last:
                    node[idx] = {"name": node[idx]}
                if last:
                    node[idx] = value
                else:
                    node = node[idx]
            else:
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, {})
    return data


# ---------------------------------------------------------------------------- validation
@dataclass
class Suite:
    name: str
    source: str
    data: dict[str, Any]
    models: list[dict[str, Any]] = field(default_factory=list)
    samplers: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]


def _check_int(src: str, field_: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SuiteError(src, field_, f"must be an integer, got {value!r} "
                         f"({type(value).__name__}).", f"write a whole number >= {minimum}.")
    if value < minimum:
        raise SuiteError(src, field_, f"must be >= {minimum}, got {value}.",
                         f"use a value >= {minimum}.")
    return value


def _check_params(src: str, field_: str, params: Any, allowed: dict[str, Any], what: str) -> dict:
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise SuiteError(src, field_, f"must be a mapping, got {params!r}.",
                         "write 'params: {key: value}'.")
    for k in params:
        if k not in allowed:
            raise SuiteError(src, f"{field_}.{k}", f"is not a parameter of {what}."
                             f"{close_matches(k, allowed)}",
                             f"use one of: {', '.join(sorted(allowed)) or '(none)'}.")
    return dict(params)


def _entries(src: str, field_: str, items: Any, reg: Registry, extra: tuple[str, ...]) -> list[dict]:
    if not isinstance(items, list) or not items:
        raise SuiteError(src, field_, f"must be a non-empty list, got {items!r}.",
                         f"list at least one {reg.kind}, e.g. '{field_}: [{reg.names()[0]}]'.")
    out = []
    for i, item in enumerate(items):
        where = f"{field_}[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise SuiteError(src, where, f"must be a name or a mapping with 'name', got {item!r}.",
                             f"write '- {reg.names()[0]}' or '- {{name: {reg.names()[0]}}}'.")
        allowed = {"name", "label", "params", *extra}
        for k in item:
            if k not in allowed:
                raise SuiteError(src, f"{where}.{k}", f"is not a field of a {reg.kind} entry."
                                 f"{close_matches(k, allowed)}", f"use: {', '.join(sorted(allowed))}.")
        name = item["name"]
        if name not in reg:
            raise SuiteError(src, f"{where}.name", f"unknown {reg.kind} {name!r}."
                             f"{close_matches(name, reg.names())}",
                             f"use one of: {', '.join(reg.names())} (see 'bench list').")
        entry = reg.entry(name)
        params = _check_params(src, f"{where}.params", item.get("params"), entry.params(),
                               f"{reg.kind} '{name}'")
        out.append({"name": name, "label": str(item.get("label") or name), "params": params,
                    **{k: item[k] for k in extra if k in item}})
    labels = [o["label"] for o in out]
    dup = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dup:
        raise SuiteError(src, field_, f"has entries with the same label {dup}.",
                         "give each a distinct 'label:'.")
    return out


def validate(data: dict[str, Any], source: str) -> Suite:
    """Check every field; raise SuiteError naming the field, the bad value and the fix."""
    load_all()
    for k in data:
        if k not in TOP_LEVEL:
            raise SuiteError(source, k, f"is not a suite field.{close_matches(k, TOP_LEVEL)}",
                             f"use: {', '.join(TOP_LEVEL)}.")
    for k in REQUIRED:
        if k not in data:
            raise SuiteError(source, k, "is missing (required).",
                             f"add '{k}:' ({TOP_LEVEL[k]}).")
    d = {**DEFAULTS, **data}
    name = d["name"]
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_" for c in name):
        raise SuiteError(source, "name", f"must be letters, digits, '-' or '_', got {name!r}.",
                         "e.g. 'name: my-suite'.")
    _check_int(source, "seed", d["seed"], 0)
    _check_int(source, "samples", d["samples"])
    _check_int(source, "batch_size", d["batch_size"])
    if d["shard_size"] is not None:
        _check_int(source, "shard_size", d["shard_size"])
    if d["device"] not in ("cpu", "cuda", "auto") and not str(d["device"]).startswith("cuda:"):
        raise SuiteError(source, "device", f"is {d['device']!r}.", "use cpu, cuda or auto.")
    if d["nfe_rounding"] not in ("error", "down", "up"):
        raise SuiteError(source, "nfe_rounding", f"is {d['nfe_rounding']!r}.",
                         "use error (default), down or up.")
    nfe = d["nfe"]
    if isinstance(nfe, int) and not isinstance(nfe, bool):
        nfe = [nfe]
    if not isinstance(nfe, list) or not nfe:
        raise SuiteError(source, "nfe", f"must be a list of integers, got {nfe!r}.",
                         "write e.g. 'nfe: [5, 10, 20]'.")
    for i, v in enumerate(nfe):
        _check_int(source, f"nfe[{i}]", v)
    d["nfe"] = nfe
    for k in ("executor", "report"):
        if not isinstance(d[k], dict):
            raise SuiteError(source, k, f"must be a mapping, got {d[k]!r}.", f"write '{k}: {{}}'.")
    suite = Suite(name, source, d)
    suite.models = _entries(source, "models", d["models"], MODELS, ())
    suite.samplers = _entries(source, "samplers", d["samplers"], SAMPLERS, ("grid",))
    suite.evals = _entries(source, "evals", d["evals"], EVALS, ())
    for i, m in enumerate(suite.models):  # adapters that check their folder/config cheaply
        cls = MODELS.get(m["name"])
        if getattr(cls, "validate_early", False):
            try:
                cls(**m["params"])
            except BenchError as exc:
                raise SuiteError(source, f"models[{i}].params", str(exc),
                                 "fix the model's parameters (see 'bench list models').") from None
    for i, s in enumerate(suite.samplers):
        s["grid"] = _grid(source, f"samplers[{i}].grid", s)
    return suite


def _grid(src: str, where: str, sampler: dict[str, Any]) -> dict[str, Any]:
    """Effective grid: the sampler's default grid, then the user's ``grid:``, then the sampler
    params its grid depends on (``grid_params``, e.g. dpm_solver_fast's order), stated once."""
    from bench.samplers.base import GridParamConflict, sampler_grid

    user = sampler.get("grid")
    if isinstance(user, str):
        user = {"name": user}
    if user is not None and not isinstance(user, dict):
        raise SuiteError(src, where, f"must be a grid name or mapping, got {user!r}.",
                         f"e.g. 'grid: {{name: karras, rho: 7}}' (grids: {', '.join(GRIDS.names())}).")
    try:
        g = sampler_grid(sampler["name"], sampler.get("params") or {}, user)
    except GridParamConflict as exc:
        raise SuiteError(src, f"{where}.{exc.key}", f"is {exc.grid_value!r}, but sampler "
                         f"'{exc.sampler}' uses {exc.key}={exc.value!r} "
                         f"({'its params' if exc.in_params else 'its default'}); the grid takes "
                         f"{exc.key} from the sampler's params.",
                         f"state it once, in params: write 'params: {{{exc.key}: ...}}' with the "
                         f"value you mean and drop '{exc.key}' from grid.") from None
    if g.get("name") not in GRIDS:
        raise SuiteError(src, f"{where}.name", f"unknown grid {g.get('name')!r}."
                         f"{close_matches(str(g.get('name')), GRIDS.names())}",
                         f"use one of: {', '.join(GRIDS.names())}.")
    _check_params(src, where, {k: v for k, v in g.items() if k != "name"},
                  GRIDS.entry(g["name"]).params(), f"grid '{g['name']}'")
    return g


def load_suite(path: str | Path, sets: list[str] | None = None) -> Suite:
    data = apply_sets(load_raw(path), sets or [])
    return validate(data, str(path))


# -------------------------------------------------------------------------------- planning
#: Source that determines the numbers a cell produces; edits elsewhere (CLI, reports,
#: dispatch, storage) do not invalidate finished cells.
COMPUTE_SOURCES = ("models", "samplers", "metrics", "evals", "data", "noise.py", "denoiser.py",
                   "guidance.py")


@lru_cache(maxsize=1)
def code_hash() -> str:
    """Hash of the package source that computes results: changing it invalidates cached cells."""
    h = hashlib.sha256()
    root = Path(bench.__file__).parent
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root)
        if rel.parts[0] not in COMPUTE_SOURCES:
            continue
        h.update(str(rel).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def content_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


@dataclass(eq=False)
class Cell:
    """One unit of work: (model, sampler, NFE, eval, shard [start, stop))."""

    suite: str
    model: dict[str, Any]
    sampler: dict[str, Any]
    nfe: int
    steps: int
    eval: dict[str, Any]
    seed: int
    start: int
    stop: int
    samples: int
    batch_size: int
    device: str
    key: str = ""    # content hash of this shard's computation
    group: str = ""  # content hash of the result rows this shard contributes to

    def label(self) -> str:
        return (f"{self.model['label']}/{self.sampler['label']}/nfe={self.nfe}/"
                f"{self.eval['name']}[{self.start}:{self.stop}]")


def plan(suite: Suite) -> list[Cell]:
    """Cross the suite's lists into Cells; NFEs a sampler cannot reach raise or round."""
    from bench.samplers import sampler_info, steps_for_nfe
    from bench.samplers.schedules import grid_final_zero

    d = suite.data
    n, shard = d["samples"], d["shard_size"] or d["samples"]
    cells: list[Cell] = []
    for s_i, smp in enumerate(suite.samplers):
        info = sampler_info(smp["name"])
        fz = grid_final_zero(smp["grid"])
        for n_i, nfe in enumerate(d["nfe"]):
            try:
                steps, used = steps_for_nfe(info.evals_per_step, nfe, fz, d["nfe_rounding"])
            except BenchError as exc:
                raise SuiteError(suite.source, f"nfe[{n_i}]", f"sampler '{smp['label']}' "
                                 f"(grid {smp['grid']['name']}): {exc}",
                                 "change the NFE list or nfe_rounding.") from None
            for model in suite.models:
                for ev in suite.evals:
                    compute = {"model": {k: model[k] for k in ("name", "params")},
                               "sampler": {k: smp[k] for k in ("name", "params", "grid")},
                               "steps": steps, "eval": ev, "seed": d["seed"], "code": code_hash()}
                    group = content_hash({**compute, "suite": suite.name, "nfe": nfe,
                                          "samples": n, "labels": [model["label"], smp["label"]]})
                    for start in range(0, n, shard):
                        stop = min(start + shard, n)
                        cells.append(Cell(suite.name, model, smp, nfe, steps, ev, d["seed"], start,
                                          stop, n, d["batch_size"], d["device"],
                                          key=content_hash({**compute, "range": [start, stop]}),
                                          group=group))
    return cells


def rounding_notes(suite: Suite, cells: list[Cell]) -> list[str]:
    """Human-readable notes for every NFE that was rounded explicitly."""
    from bench.samplers import nfe_for_steps, sampler_info
    from bench.samplers.schedules import grid_final_zero

    notes = set()
    for c in cells:
        used = nfe_for_steps(sampler_info(c.sampler["name"]).evals_per_step, c.steps,
                             grid_final_zero(c.sampler["grid"]))
        if used != c.nfe:
            notes.add(f"{c.sampler['label']}: NFE {c.nfe} rounded {suite['nfe_rounding']} to {used} "
                      f"({c.steps} steps)")
    return sorted(notes)
