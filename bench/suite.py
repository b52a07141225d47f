"""Suites: YAML files with ``include:`` and ``--set`` overrides, validated and planned.

A suite crosses models x samplers x NFE list x evals under one set of conditions. A **cell** is
one result: (model, sampler, NFE, eval, conditions); ``plan()`` splits each cell's sample
indices into **shards**, the unit of work. Keys are content hashes of everything that
determines the numbers: the configuration, the resolved conditions, the model's weights hash
and the code version of each registry entry the cell uses (``bench.versions``), so a finished
shard is never recomputed, a killed one is simply run again, and adding an unrelated sampler or
metric invalidates nothing.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.budget import MAX_NFE, MAX_SEED
from bench.conditions import Conditions, check_block
from bench.conditions import resolve as resolve_conditions
from bench.errors import BenchError, FieldError, SuiteError, close_matches
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
    "models": "list of model names or {name, label, params, calibrate, laplace}",
    "samplers": "list of sampler names or {name, label, params, grid}",
    "evals": "list of eval names or {name, params}",
    "conditions": "{classes: balanced|N|[..]} or {prompts: [..]|FILE, images_per_prompt, "
                  "negative_prompt, text_column, id_column, category_column}",
    "executor": "{name: debug|local|slurm, ...} default executor and its parameters",
    "report": "{fit_min_nfe: N, galleries: [PATTERN, ...], table: [ROW, COL]} options for bench report",
}
REQUIRED = ("name", "models", "samplers", "evals")
#: a model entry's transforms: field -> (the module that checks and applies it, label suffix)
MODEL_TRANSFORMS: dict[str, tuple[str, str]] = {"calibrate": ("bench.calibration", "calibrated"),
                                                "laplace": ("bench.bayesian_model", "laplace")}
DEFAULTS: dict[str, Any] = {"seed": 0, "samples": 64, "batch_size": 64, "shard_size": None,
                            "device": "auto", "nfe_rounding": "error", "executor": {},
                            "report": {}, "description": "", "conditions": None}


# ------------------------------------------------------------------------------ loading
#: YAML aliases (``*name``) a suite may use: each can stand for a whole subtree, so a small
#: file with nested aliases expands to billions of values when the suite is copied or hashed
MAX_ALIASES = 100


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses documents with more than MAX_ALIASES aliases."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_ALIASES} aliases (*name); an alias can "
                                     f"stand for a whole subtree, so this is refused")
        return super().compose_node(parent, index)


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` with a bound on aliases (no alias bombs)."""
    loader = BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _read_yaml(path: Path, origin: str) -> dict[str, Any]:
    if path.is_dir():
        raise SuiteError(str(path), "(file)", "is a folder, not a suite file.",
                         f"give a suite YAML file, e.g. '{path / 'NAME.yaml'}' or one of suites/.")
    if not path.is_file():
        raise SuiteError(origin, "include" if origin != str(path) else "(file)",
                         f"file '{path}' does not exist.", "check the path (relative paths in "
                         "include: are resolved from the including file).")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise SuiteError(str(path), "(file)", f"cannot be read ({exc.strerror or exc}).",
                         "check the file's permissions.") from None
    except UnicodeDecodeError:
        raise SuiteError(str(path), "(file)", "is not UTF-8 text.",
                         "save the suite as UTF-8.") from None
    if not text.strip():
        raise SuiteError(str(path), "(file)", "is empty.",
                         "write the suite's fields, at least name, models, samplers and evals "
                         "(see suites/ for examples).")
    try:
        data = safe_load(text)
    except UnicodeDecodeError:
        raise SuiteError(str(path), "(file)", "is not UTF-8 text.",
                         "save the suite as UTF-8.") from None
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


#: suite files one suite may read through ``include:`` (a file including the next one twice,
#: 30 levels deep, would otherwise stand for 2^30 reads)
MAX_INCLUDES = 50


def load_raw(path: str | Path, _seen: tuple[Path, ...] = (), _reads: list[int] | None = None
             ) -> dict[str, Any]:
    """Read a suite file, resolving ``include:`` (a path or a list) recursively."""
    path = Path(path)
    if path.resolve() in _seen:
        raise SuiteError(str(path), "include", "includes itself (a cycle).", "remove the cycle.")
    _reads = [0] if _reads is None else _reads
    _reads[0] += 1
    if _reads[0] > MAX_INCLUDES:
        raise SuiteError(str(path), "include", f"the includes read more than {MAX_INCLUDES} suite "
                         f"files (a file included many times over?).",
                         "include each base file once, and keep include chains short.")
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
        merged = _merge(merged, load_raw(path.parent / i, _seen + (path.resolve(),), _reads))
    return _merge(merged, data)


def apply_sets(data: dict[str, Any], sets: list[str], source: str = "the suite") -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (value parsed as YAML; list items by index), then
    refuse a result that expands to more than 100,000 values: the loader bounds the number of
    YAML aliases, but ten nested lists of ten aliases still stand for 10^10 values, which
    validation, hashing or writing the run manifest would expand (deep copies keep aliases
    shared, so nothing is expanded before this check)."""
    max_values = 100_000

    def check_size(tree: dict[str, Any]) -> None:
        count, stack = 0, list(tree.items())
        while stack:
            where, node = stack.pop()
            count += 1
            if count > max_values:
                raise SuiteError(source, str(where), f"expands to more than {max_values:,} values "
                                 f"once its YAML aliases (*name) are followed.",
                                 "write the values out, without nested aliases.")
            if isinstance(node, dict):
                stack.extend((where, v) for v in node.values())
            elif isinstance(node, list):
                stack.extend((where, v) for v in node)

    data = copy.deepcopy(data)
    for item in sets:
        if "=" not in item:
            raise SuiteError("--set", item, "is not of the form key=value.",
                             "write e.g. --set samples=128 or --set nfe=[5,10].")
        key, raw = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        if not key or any(not p.strip() for p in parts):
            raise SuiteError("--set", key, f"in {item!r}: the key has an empty part.",
                             "write dot-separated field names, e.g. --set models.0.params.cov=diag.")
        parts = [p.strip() for p in parts]
        try:
            value = safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node: Any = data
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
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if node.get(part) is None:
                        node[part] = {}
                    node = node[part]
            else:
                parent = ".".join(parts[:j])
                shown = repr(node) if len(repr(node)) <= 60 else repr(node)[:57] + "..."
                raise SuiteError("--set", key, f"'{parent}' is {shown} "
                                 f"({type(node).__name__}), which has no field '{part}'.",
                                 f"set '{parent}' itself (e.g. --set {parent}=VALUE), or a "
                                 f"field of a mapping or list.")
    check_size(data)
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
    #: per model: its adapter, its resolved conditions and its samples per cell
    adapters: list[Any] = field(default_factory=list)
    conditions: list[Conditions] = field(default_factory=list)
    sample_counts: list[int] = field(default_factory=list)
    eval_objects: list[Any] = field(default_factory=list)
    #: set by plan(): what the suite computes and the largest job's memory (bench.budget)
    budget: Any = None
    #: (model, sampler, steps) already dry-run by plan() (bench run plans twice)
    dry_run_done: set = field(default_factory=set)
    #: swept entries: {field, label, axes: {path: [values]}, labels} per entry written with a
    #: sweep (``bench plan`` prints them, ``sweep_lines``)
    sweeps: list[dict[str, Any]] = field(default_factory=list)
    #: per model / sampler: the index of the entry written in the suite (a sweep expands one
    #: written entry into several), for errors that name the field
    model_origin: list[int] = field(default_factory=list)
    sampler_origin: list[int] = field(default_factory=list)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]


def _check_int(src: str, field_: str, value: Any, minimum: int = 1, maximum: int | None = None,
               why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SuiteError(src, field_, f"must be an integer, got {value!r} "
                         f"({type(value).__name__}).", f"write a whole number >= {minimum}.")
    if value < minimum:
        raise SuiteError(src, field_, f"must be >= {minimum}, got {value}.",
                         f"use a value >= {minimum}.")
    if maximum is not None and value > maximum:
        raise SuiteError(src, field_, f"must be <= {maximum}{why}, got {value}.",
                         f"use a value in [{minimum}, {maximum}].")
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


# -------------------------------------------------------------------------------- sweeps
#: entries one ``models:`` or ``samplers:`` list may expand to through sweeps: every entry is
#: crossed with every other list, so a few swept values multiply quickly
MAX_SWEEP_ENTRIES = 1000
#: parameters that take a mapping of fields known to take one value each: a plain list at one
#: of these fields is a sweep, as at a scalar parameter (``guidance: {scale: [1, 2, 4]}``)
NESTED_SCALARS: dict[str, tuple[str, ...]] = {"guidance": ("scale", "cond", "batched")}
_SCALAR_TYPES = {"int", "float", "str", "bool"}
_LIST_TYPES = {"list", "tuple", "Sequence", "List", "Tuple", "MutableSequence"}


def param_kinds(entry: Any) -> dict[str, str]:
    """Per parameter of a registry entry: ``scalar`` (takes one int/float/str/bool value),
    ``list`` (takes a list) or ``other`` (a mapping, ``Any``: a plain list there is a value).
    From the annotation (``float | None``, ``Sequence[int]``), else from the default."""
    import inspect

    defaults = entry.params()
    notes: dict[str, str] = {}
    if "params" not in entry.meta:
        obj = entry.load()
        try:
            sig = inspect.signature(obj.__init__ if inspect.isclass(obj) else obj)
            notes = {p.name: str(p.annotation) for p in sig.parameters.values()
                     if p.annotation is not p.empty}
        except (TypeError, ValueError):
            notes = {}
    out = {}
    for name, default in defaults.items():
        bases = {t.split("[")[0].strip().split(".")[-1]  # 'typing.Sequence[int]' -> Sequence
                 for t in notes.get(name, "").split("|") if t.strip()} - {"None", "NoneType"}
        scalar_default = isinstance(default, (bool, int, float, str))
        if bases & _LIST_TYPES or (not bases and isinstance(default, (list, tuple))):
            out[name] = "list"
        elif bases and bases <= _SCALAR_TYPES:
            out[name] = "scalar"
        elif scalar_default and "Any" not in bases:  # e.g. 'str | dict': a list is no value
            out[name] = "scalar"
        else:
            out[name] = "other"
    return out


def _is_sweep(node: Any) -> bool:
    return isinstance(node, dict) and "sweep" in node


def _show(value: Any) -> str:
    """A swept value as it appears in a label: 2, 7.5, midpoint, true, [1,2]."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def _same_key(value: Any) -> str:
    """Equal for values a parameter cannot tell apart (2 and 2.0; not True and 1)."""
    def norm(v: Any) -> Any:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        if isinstance(v, dict):
            return {str(k): norm(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [norm(x) for x in v]
        return v
    return json.dumps(norm(value), sort_keys=True, default=str)


def _path_text(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def _check_no_sweep(src: str, where: str, node: Any, why: str, fix: str) -> None:
    """Refuse a ``{sweep: [..]}`` anywhere in ``node`` (a field that cannot be swept)."""
    stack = [(where, node)]
    while stack:
        at, n = stack.pop()
        if _is_sweep(n):
            raise SuiteError(src, at, f"is {_short(n)}, a sweep, but {why}", fix)
        if isinstance(n, dict):
            stack.extend((f"{at}.{k}", v) for k, v in n.items())
        elif isinstance(n, list):
            stack.extend((f"{at}.{j}", v) for j, v in enumerate(n))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _sweep_axes(src: str, where: str, params: dict[str, Any], kinds: dict[str, str],
                what: str) -> list[tuple[tuple, list]]:
    """The swept parameters of one entry's ``params``: [(path, values)], in the order written.
    ``where`` is the entry's ``...params`` field. Errors name the field, the value and the fix."""
    axes: list[tuple[tuple, list]] = []

    def add(path: tuple, values: Any, marker: bool) -> None:
        at = f"{where}.{_path_text(path)}"
        name = _path_text(path)
        if marker and (set(values) != {"sweep"}):
            raise SuiteError(src, at, f"is {_short(values)}: a sweep is a mapping with the one "
                             f"key 'sweep', got also {sorted(set(values) - {'sweep'})}.",
                             f"write '{path[-1]}: {{sweep: [v1, v2]}}' alone.")
        vals = values["sweep"] if marker else values
        if not isinstance(vals, list):
            raise SuiteError(src, at, f"is {_short(values)}: 'sweep' must list the values, got "
                             f"{_short(vals)}.", f"write '{path[-1]}: {{sweep: [v1, v2]}}'.")
        if not vals:
            problem = f"is an empty sweep ({_short(values)}): it lists no values." if marker else \
                (f"is an empty list: '{name}' takes one value, so a list there is a sweep (one "
                 f"entry per value), and this one lists none.")
            raise SuiteError(src, at, problem, f"list at least one value (e.g. '{path[-1]}: "
                             f"{'{sweep: [1, 2]}' if marker else '[1, 2]'}'), or write a single "
                             f"value.")
        seen: dict[str, Any] = {}
        for v in vals:
            if _is_sweep(v):
                raise SuiteError(src, at, f"has a sweep inside a sweep ({_short(v)}).",
                                 "list plain values; to cross two parameters, sweep each one "
                                 "(entries are the product).")
            k = _same_key(v)
            if k in seen:
                same = f"{v!r} twice" if repr(seen[k]) == repr(v) else \
                    f"{seen[k]!r} and {v!r}, the same value,"
                raise SuiteError(src, at, f"lists {same} in a sweep of {name}: each value "
                                 f"makes one entry, so both would compute the same cells.",
                                 "list each value once.")
            seen[k] = v
        axes.append((path, list(vals)))

    def walk(node: Any, path: tuple, plain: bool, nested: tuple[str, ...]) -> None:
        if _is_sweep(node):
            add(path, node, True)
        elif isinstance(node, list):
            if plain:
                add(path, node, False)
            else:
                for j, x in enumerate(node):
                    walk(x, path + (j,), False, ())
        elif isinstance(node, dict):
            for k, v in node.items():
                if nested and k not in nested and (_is_sweep(v) or isinstance(v, list)):
                    raise SuiteError(src, f"{where}.{_path_text(path + (k,))}",
                                     f"is {_short(v)}, a sweep, but '{k}' is not a field of "
                                     f"{path[0]}.{close_matches(str(k), nested)}",
                                     "sweep one of: " + ", ".join(f"{path[0]}.{n}" for n in nested)
                                     + ".")
                walk(v, path + (k,), k in nested, ())

    for k, v in params.items():
        kind = kinds.get(k, "other")
        if kind == "list":
            _check_no_sweep(src, f"{where}.{k}", v, f"{what} takes a list for '{k}' (the whole "
                            f"list is its value), so '{k}' cannot be swept.",
                            f"give '{k}' one list, and write one {what.split()[0]} entry per "
                            f"value, each with its own 'label:'.")
            continue
        walk(v, (k,), kind == "scalar", NESTED_SCALARS.get(k, ()) if kind == "other" else ())
    return axes


def _set_path(tree: Any, path: tuple, value: Any) -> None:
    node = tree
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


Variants = list[tuple[Any, list[tuple[str, Any]]]]


def _expand(src: str, where: str, params: Any, entry: Any, what: str, room: int
            ) -> tuple[Variants, dict[str, list]]:
    """One entry's params -> ([(params, [(swept path, value), ...])], {swept path: values}):
    one variant per combination of the swept values (the product, in the order written), and
    ``[(params, [])]`` when nothing is swept. ``room``: how many more entries the list may take
    (MAX_SWEEP_ENTRIES)."""
    if not isinstance(params, dict):
        return [(params, [])], {}  # _check_params says what is wrong
    allowed = entry.params()
    for k, v in params.items():
        if k not in allowed and (_is_sweep(v) or isinstance(v, list)):
            raise SuiteError(src, f"{where}.{k}", f"is {_short(v)}, a sweep, but '{k}' is not a "
                             f"parameter of {what}, so it cannot be swept."
                             f"{close_matches(str(k), allowed)}",
                             f"sweep one of: {', '.join(sorted(allowed)) or '(none)'}.")
    _check_params(src, where, params, allowed, what)
    axes = _sweep_axes(src, where, params, param_kinds(entry), what)
    if not axes:
        return [(params, [])], {}
    total = 1
    for _, values in axes:
        total *= len(values)
    if total > room:
        sizes = " x ".join(f"{_path_text(p)} {len(v)}" for p, v in axes)
        before = "" if room == MAX_SWEEP_ENTRIES else \
            f", and the entries before it to {MAX_SWEEP_ENTRIES - room:,}"
        raise SuiteError(src, where, f"sweeps expand to {total:,} entries ({sizes} values; a "
                         f"list at a parameter that takes one value is a sweep){before}"
                         f"; at most {MAX_SWEEP_ENTRIES:,} entries are allowed per list.",
                         "sweep fewer values, or split the sweep over several suites.")
    out = []
    for combo in itertools.product(*(values for _, values in axes)):
        p = copy.deepcopy(params)
        for (path, _), value in zip(axes, combo):
            _set_path(p, path, value)
        out.append((p, [(_path_text(path), value) for (path, _), value in zip(axes, combo)]))
    return out, {_path_text(path): values for path, values in axes}


def _entries(src: str, field_: str, items: Any, reg: Registry, extra: tuple[str, ...],
             sweeps: list[dict[str, Any]] | None = None, origins: list[int] | None = None
             ) -> list[dict]:
    """The entries of a ``models:``/``samplers:``/``evals:`` list, checked. With ``sweeps`` (a
    list to fill: models and samplers), swept params expand an entry into one entry per
    combination of values (``_expand``), each labelled ``LABEL[path=value,...]``, and each
    swept entry is recorded in ``sweeps``; ``origins`` (a list to fill) gets, per entry, the
    index of the entry written in the suite."""
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
        what = f"{reg.kind} '{name}'"
        for k in extra:  # grid:, calibrate: are not swept
            _check_no_sweep(src, f"{where}.{k}", item.get(k), f"only the params of models and "
                            f"samplers are swept, not '{k}'.", f"write one {reg.kind} entry per "
                            f"value, each with its own 'label:'.")
        if sweeps is None:
            _check_no_sweep(src, f"{where}.params", item.get("params"), f"only the params of "
                            f"models and samplers are swept, not those of {reg.kind}s.",
                            f"write one {reg.kind} entry per value.")
            variants, axes = [(item.get("params"), [])], {}
        else:
            variants, axes = _expand(src, f"{where}.params", item.get("params"), entry, what,
                               MAX_SWEEP_ENTRIES - len(out))
        on = [t for t in MODEL_TRANSFORMS if item.get(t) not in (None, False)]
        label = str(item.get("label") or "-".join([name] + [MODEL_TRANSFORMS[t][1] for t in on]))
        for raw, swept in variants:
            params = _check_params(src, f"{where}.params", raw, entry.params(), what)
            shown = f"{label}[{','.join(f'{p}={_show(v)}' for p, v in swept)}]" if swept else label
            out.append({"name": name, "label": shown, "params": params,
                        **{k: copy.deepcopy(item[k]) if swept else item[k]
                           for k in extra if k in item}})
            if origins is not None:
                origins.append(i)
        if sweeps is not None and axes:
            sweeps.append({"field": where, "label": label, "axes": axes,
                           "labels": [o["label"] for o in out[-len(variants):]]})
    labels = [o["label"] for o in out]
    dup = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dup:
        raise SuiteError(src, field_, f"has entries with the same label {dup}.",
                         "give each a distinct 'label:'" + (" (a swept entry is labelled "
                         "LABEL[param=value])." if sweeps else "."))
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
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}", name):
        # ASCII only (report file names keep every character) and no leading '_' or '-'
        # (readers skip folders starting with '_': the rows would be invisible)
        raise SuiteError(source, "name", f"must be at most 100 ASCII letters, digits, '-' or '_', "
                         f"starting with a letter or digit, got {name!r}.", "e.g. 'name: my-suite'.")
    _check_int(source, "seed", d["seed"], 0, MAX_SEED, " (results store it as a 64-bit integer)")
    _check_int(source, "samples", d["samples"])
    _check_int(source, "batch_size", d["batch_size"])
    if d["shard_size"] is not None:
        _check_int(source, "shard_size", d["shard_size"])
    if d["device"] not in ("cpu", "cuda", "auto") and not re.fullmatch(r"cuda:[0-9]+", str(d["device"])):
        raise SuiteError(source, "device", f"is {d['device']!r}.", "use cpu, cuda, cuda:N (a device index) or auto.")
    if d["nfe_rounding"] not in ("error", "down", "up"):
        raise SuiteError(source, "nfe_rounding", f"is {d['nfe_rounding']!r}.",
                         "use error (default), down or up.")
    for k in ("executor", "report"):
        if not isinstance(d[k], dict):
            raise SuiteError(source, k, f"must be a mapping, got {d[k]!r}.", f"write '{k}: {{}}'.")
    for k, v in d["report"].items():
        if k == "galleries":
            if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
                raise SuiteError(source, "report.galleries", f"is {v!r}.",
                                 "give a list of cell patterns MODEL/SAMPLER/nfeN with * "
                                 "wildcards, e.g. ['*/dpmpp_2m/nfe25'].")
            continue
        if k == "table":
            from bench.report.sections import TABLE_AXES, is_table

            if not isinstance(v, list) or not is_table(v):
                raise SuiteError(source, "report.table", f"is {v!r}.",
                                 f"give the value tables' rows and columns, two different names "
                                 f"of {', '.join(TABLE_AXES)}, e.g. [sampler, model].")
            continue
        if k != "fit_min_nfe":
            raise SuiteError(source, f"report.{k}", "is not a report option.",
                             "use: fit_min_nfe (fit convergence slopes over NFE >= this), "
                             "galleries (the cells whose sample galleries the report shows), "
                             "table (the rows and columns of the value tables).")
        _check_int(source, "report.fit_min_nfe", v, 0)
    suite = Suite(name, source, d)
    suite.models = _entries(source, "models", d["models"], MODELS, tuple(MODEL_TRANSFORMS),
                            suite.sweeps, suite.model_origin)
    suite.samplers = _entries(source, "samplers", d["samplers"], SAMPLERS, ("grid",),
                              suite.sweeps, suite.sampler_origin)
    suite.evals = _entries(source, "evals", d["evals"], EVALS, ())
    for i, s in zip(suite.sampler_origin, suite.samplers):
        s["grid"] = _grid(source, f"samplers[{i}].grid", s)
    suite.eval_objects = [_eval(source, i, e) for i, e in enumerate(suite.evals)]
    from bench.evals.base import Eval

    # sharded evals that cross the suite's NFE list with the samplers (not their own points)
    sharded = any(ev.shape == "sharded" and type(ev).points is Eval.points
                  for ev in suite.eval_objects)
    if sharded and "nfe" not in d:
        raise SuiteError(source, "nfe", "is missing (required by the sharded evals).",
                         f"add 'nfe:' ({TOP_LEVEL['nfe']}).")
    nfe = d.get("nfe", [])
    if isinstance(nfe, int) and not isinstance(nfe, bool):
        nfe = [nfe]
    if not isinstance(nfe, list) or (sharded and not nfe):
        raise SuiteError(source, "nfe", f"must be a list of integers, got {nfe!r}.",
                         "write e.g. 'nfe: [5, 10, 20]'.")
    for i, v in enumerate(nfe):
        _check_int(source, f"nfe[{i}]", v, 1, MAX_NFE, " (a grid of that many steps is built "
                   "per sampler)")
    for i, ev_obj in enumerate(suite.eval_objects):
        _check_extras(source, i, ev_obj, suite)
        nfe_max = getattr(ev_obj, "nfe_max", None)
        if isinstance(nfe_max, int) and nfe_max > MAX_NFE:
            raise SuiteError(source, f"evals[{i}].params.nfe_max", f"must be <= {MAX_NFE}, got "
                             f"{nfe_max}.", f"use an nfe_max in [nfe_min, {MAX_NFE}].")
    d["nfe"] = nfe
    try:
        block = check_block(d["conditions"])
    except BenchError as exc:
        raise SuiteError(source, "conditions", str(exc), "see README, 'Suite files'.") from None
    base = Path(source).parent
    swept = {s["field"] for s in suite.sweeps}
    for i, m in zip(suite.model_origin, suite.models):
        try:
            adapter = MODELS.get(m["name"])(**m["params"])
        except BenchError as exc:
            entry = f"swept entry '{m['label']}': " if f"models[{i}]" in swept else ""
            raise SuiteError(source, f"models[{i}].params", f"{entry}{exc}",
                             "fix the model's parameters (see 'bench list models').") from None
        _transforms(source, i, m, adapter, base)
        _check_posterior(source, i, m, suite)
        try:
            conds = resolve_conditions(block, adapter, base)
        except BenchError as exc:
            raise SuiteError(source, "conditions", str(exc),
                             "see README, 'Suite files' (conditions).") from None
        n = d["samples"]
        if conds.images_per_prompt:
            n = len(conds.items) * conds.images_per_prompt
            if "samples" in data and data["samples"] != n:
                raise SuiteError(source, "samples", f"is {data['samples']}, but the conditions "
                                 f"give {len(conds.items)} x images_per_prompt "
                                 f"{conds.images_per_prompt} = {n}.",
                                 "drop 'samples:' or 'images_per_prompt:'.")
        suite.adapters.append(adapter)
        suite.conditions.append(conds)
        suite.sample_counts.append(n)
    return suite


def _transforms(src: str, i: int, model: dict[str, Any], adapter: Any, base: Path) -> None:
    """Check a model entry's transforms (``calibrate:``, ``laplace:``; MODEL_TRANSFORMS) against
    its adapter and store their complete settings (or drop a field that is off)."""
    import importlib

    for field_, (module, _) in MODEL_TRANSFORMS.items():
        if field_ not in model:
            continue
        mod = importlib.import_module(module)
        try:
            settings = mod.check_settings(model[field_], adapter, base)
        except FieldError as exc:
            where = f"models[{i}].{field_}" + (f".{exc.field}" if exc.field else "")
            raise SuiteError(src, where, exc.problem, exc.fix) from None
        except BenchError as exc:
            raise SuiteError(src, f"models[{i}].{field_}", str(exc),
                             f"fix the settings ({', '.join(mod.FIELDS)}).") from None
        if settings is None:
            del model[field_]
        else:
            model[field_] = settings
    on = [t for t in MODEL_TRANSFORMS if t in model]
    if len(on) > 1:
        raise SuiteError(src, f"models[{i}]", f"has both {' and '.join(on)}: a calibrated model "
                         f"has no last-layer posterior of its own.",
                         "use one of them per model entry (two entries, each with a label).")


def _check_posterior(src: str, i: int, model: dict[str, Any], suite: "Suite") -> None:
    """A sampler that needs a last-layer posterior (BayesDiff's) on a model without one is a
    plan error, not a failed job."""
    from bench.samplers.bayesdiff import NEEDS_POSTERIOR

    if "laplace" in model:
        return
    needs = [s["label"] for s in suite.samplers if s["name"] in NEEDS_POSTERIOR]
    if needs:
        raise SuiteError(src, f"models[{i}]", f"'{model['label']}' has no last-layer posterior, "
                         f"but sampler(s) {needs} need one (BayesDiff's uncertainty).",
                         "give the model entry 'laplace: true' (its plain samplers then run on "
                         "its MAP network, the same model), or move these samplers to a suite "
                         "of their own.")


def _check_extras(src: str, i: int, ev_obj: Any, suite: "Suite") -> None:
    """A metric (or ``extremes``) that reads a per-sample sampler extra no sampler of the suite
    gives is a plan error (with some sampler giving it, it runs in those samplers' cells)."""
    from bench.samplers import sampler_info

    needed = getattr(ev_obj, "extras_needed", dict)()
    given = {x for s in suite.samplers for x in sampler_info(s["name"]).extras}
    for where, extra in needed.items():
        if extra not in given:
            from bench.registry import SAMPLERS

            has = sorted(n for n in SAMPLERS.names() if extra in sampler_info(n).extras)
            raise SuiteError(src, f"evals[{i}].params.{where}", f"reads the per-sample '{extra}' "
                             f"of the sampler, which none of the suite's samplers "
                             f"({', '.join(s['label'] for s in suite.samplers)}) gives.",
                             f"add a sampler that gives it ({', '.join(has) or 'none registered'}"
                             f"), or remove it.")


def _eval(src: str, i: int, ev: dict[str, Any]) -> Any:
    """The eval object (its constructor checks nested names: metrics, their parameters,
    extractors, references), with errors placed at ``evals[i].params.<field>``."""
    try:
        return EVALS.get(ev["name"])(**ev["params"])
    except FieldError as exc:
        raise SuiteError(src, f"evals[{i}].params.{exc.field}", exc.problem, exc.fix) from None
    except BenchError as exc:
        raise SuiteError(src, f"evals[{i}].params", str(exc),
                         "see 'bench list evals' and 'bench list metrics'.") from None


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
    data = apply_sets(load_raw(path), sets or [], str(path))
    return validate(data, str(path))



def sweep_lines(suite: Suite) -> list[str]:
    """What each swept entry expanded to (``bench plan`` prints these lines)."""
    out = []
    for s in suite.sweeps:
        axes = " x ".join(f"{p} in [{', '.join(_show(v) for v in vals)}]"
                          for p, vals in s["axes"].items())
        out.append(f"sweep {s['field']} ({s['label']}): {axes} -> {len(s['labels'])} "
                   f"entr{'y' if len(s['labels']) == 1 else 'ies'}: {', '.join(s['labels'])}")
    return out

# -------------------------------------------------------------------------------- planning
def content_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cell_code_version(model: str, sampler: str, grid: str, eval_: Any, eval_name: str,
                      calibrated: bool = False, laplace: bool = False) -> dict[str, str]:
    """Code version of each registry entry a cell uses (``bench.versions``), and of the loop
    (and of the model transform's module: ``bench.calibration`` for a calibrated model,
    ``bench.bayesian_model`` for one with a last-layer posterior)."""
    from bench.registry import METRICS
    from bench.versions import GENERATE_MODULES, entry_version, modules_version

    out = {"generate": modules_version(GENERATE_MODULES), "model": entry_version(MODELS.entry(model)),
           "sampler": entry_version(SAMPLERS.entry(sampler)), "grid": entry_version(GRIDS.entry(grid)),
           "eval": entry_version(EVALS.entry(eval_name))}
    if calibrated:
        out["calibration"] = modules_version((MODEL_TRANSFORMS["calibrate"][0],))
    if laplace:
        out["laplace"] = modules_version((MODEL_TRANSFORMS["laplace"][0],))
    from bench.registry import FEATURES

    for m, params in eval_.metric_specs():
        cls = METRICS.get(m)
        out[f"metric:{m}"] = entry_version(METRICS.entry(m))
        ext = params.get("extractor", cls.param_defaults.get("extractor"))
        if ext in FEATURES:  # the feature extractor's code computes the number too
            out[f"features:{ext}"] = entry_version(FEATURES.entry(ext))
    return out


def code_hash(versions: dict[str, str]) -> str:
    """One short hash of a cell's code versions (a result-row column)."""
    return content_hash(versions)[:16]


@dataclass(eq=False)
class Shard:
    """One unit of work: samples [start, stop) of a cell (model, sampler, NFE, eval, conditions)."""

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
    conditions: Conditions = field(default_factory=Conditions)
    model_hash: str = ""
    code: dict[str, str] = field(default_factory=dict)
    key: str = ""       # content hash of this shard's computation
    cell_key: str = ""  # content hash of the cell (its result rows) this shard contributes to

    def label(self) -> str:
        return (f"{self.model['label']}/{self.sampler['label']}/nfe={self.nfe}/"
                f"{self.eval['name']}[{self.start}:{self.stop}]")


def model_hash(adapter: Any) -> str:
    """The weights hash an adapter reports (shipped checkpoints and user folders alike)."""
    desc = adapter.describe()
    return str(desc.get("weights_hash") or content_hash(desc))


Points = list[tuple[int, dict[str, Any], dict[str, Any], Any, list[tuple[int, int]]]]


def plan_points(suite: Suite) -> Points:
    """Per (sampler, eval): (sampler index, sampler, eval, eval object, [(nfe, steps), ...]).
    NFEs a sampler cannot reach raise or round; an eval with points of its own
    (``Eval.points``: nfe_to_target's one point at nfe_max) uses those. Cheap: nothing per
    sample or per shard."""
    from bench.samplers import sampler_info, steps_for_nfe
    from bench.samplers.schedules import grid_final_zero

    d = suite.data
    out: Points = []
    for si, smp in enumerate(suite.samplers):
        info = sampler_info(smp["name"])
        fz = grid_final_zero(smp["grid"])
        for ev, ev_obj in zip(suite.evals, suite.eval_objects):
            own = ev_obj.points(smp)
            if own is not None:
                points = own
            else:
                points = []
                for n_i, nfe in enumerate(d["nfe"]):
                    try:
                        steps, _ = steps_for_nfe(info.evals_per_step, nfe, fz, d["nfe_rounding"])
                    except BenchError as exc:
                        raise SuiteError(suite.source, f"nfe[{n_i}]", f"sampler '{smp['label']}' "
                                         f"(grid {smp['grid']['name']}): {exc}",
                                         "change the NFE list or nfe_rounding.") from None
                    points.append((nfe, steps))
            out.append((si, smp, ev, ev_obj, points))
    for i, ev_obj in enumerate(suite.eval_objects):
        if not any(pts for _, _, _, e, pts in out if e is ev_obj):
            raise SuiteError(suite.source, f"evals[{i}]", f"eval '{suite.evals[i]['name']}' has "
                             f"no cells: {ev_obj.no_points()}.",
                             "add the sampler it needs, or drop the eval.")
    return out


def dry_run(suite: Suite, points: Points) -> None:
    """Build each grid and start each sampler, for every model and number of steps the plan
    uses, on a one-sample batch with a stand-in network: a parameter value that fails before
    the first network call (``ddim`` with ``eta: -1``, a grid's ``t_end`` out of range, a
    diffusers scheduler that cannot make the NFE) is a SuiteError now, not in every job.
    Errors other than ValueError, TypeError and BenchError are left to the job."""
    from bench.generate import start_sampler
    from bench.samplers import sampler_info
    from bench.samplers.schedules import make_grid

    runs: dict[tuple[int, int], dict[int, int]] = {}  # (sampler, model) -> steps -> an NFE
    for si, smp, _, ev_obj, pts in points:
        pts = list(pts)
        pts += ev_obj.probe_steps(smp)  # e.g. the bisection's smallest step count
        for mi in range(len(suite.adapters)):
            for nfe, steps in pts:
                runs.setdefault((si, mi), {}).setdefault(steps, nfe)
    for (si, mi), by_steps in runs.items():
        smp, adapter, model = suite.samplers[si], suite.adapters[mi], suite.models[mi]
        schedule = getattr(adapter, "schedule", None)
        if schedule is None:  # an adapter that knows its schedule only once loaded
            continue
        for steps, nfe in sorted(by_steps.items()):
            key = (si, mi, steps)
            if key in suite.dry_run_done:
                continue
            where = "grid"
            try:
                sigmas = make_grid(smp["grid"], schedule, steps)
                where = "params"
                start_sampler(adapter, schedule, smp["name"], smp["params"], sigmas, suite["seed"])
            except (ValueError, TypeError, BenchError) as exc:
                what = "its grid" if where == "grid" else "the sampler"
                # a grid value forwarded from the sampler's params (grid_params) is stated there
                if where == "grid" and any(f"{k}=" in str(exc) for k in sampler_info(
                        smp["name"]).grid_params if k in smp["params"]):
                    where = "params"
                at = f"samplers[{suite.sampler_origin[si]}].{where}"
                raise SuiteError(suite.source, at,
                                 f"sampler '{smp['label']}' on model '{model['label']}' at NFE "
                                 f"{nfe} ({steps} steps): {what} fails before the first network "
                                 f"call: {exc}",
                                 f"change {at} (see 'bench list samplers' and "
                                 f"'bench list grids'), or the NFE list if only some NFEs "
                                 f"fail.") from None
            suite.dry_run_done.add(key)


def plan(suite: Suite) -> list[Shard]:
    """Cross the suite's lists into cells and split them into shards; NFEs a sampler cannot
    reach raise or round. Loop evals get one shard per (model, sampler) over all samples.

    Before any shard exists, the shards are counted and the largest job's memory estimated
    from the lists (``bench.budget``, stored in ``suite.budget``; a suite over the bounds is a
    SuiteError), and every sampler is dry-run on every grid the plan uses (``dry_run``)."""
    from bench.budget import check, estimate

    d = suite.data
    points = plan_points(suite)
    suite.budget = estimate(suite, points)
    check(suite, suite.budget)
    dry_run(suite, points)
    shards: list[Shard] = []
    hashes = [model_hash(a) for a in suite.adapters]  # once per model, not per cell
    for _, smp, ev, ev_obj, points_ in points:
        codes = [cell_code_version(m["name"], smp["name"], smp["grid"]["name"], ev_obj, ev["name"],
                                   calibrated="calibrate" in m, laplace="laplace" in m)
                 for m in suite.models]
        for nfe, steps in points_:
            for model, mhash, code, conds, n_suite in zip(suite.models, hashes, codes,
                                                          suite.conditions, suite.sample_counts):
                n = ev_obj.sample_count(n_suite)
                compute = {"model": {k: model[k] for k in ("name", "params", *MODEL_TRANSFORMS)
                                     if k in model}, "model_hash": mhash,
                           "sampler": {k: smp[k] for k in ("name", "params", "grid")},
                           "steps": steps, "eval": ev, "seed": d["seed"], "code": code,
                           "conditions": conds.describe() if conds.kind != "none" else None}
                cell_key = content_hash({**compute, "suite": suite.name, "nfe": nfe,
                                         "samples": n, "labels": [model["label"], smp["label"]]})
                shard = n if ev_obj.shape == "loop" else (d["shard_size"] or n)
                for start in range(0, n, shard):
                    stop = min(start + shard, n)
                    shards.append(Shard(suite.name, model, smp, nfe, steps, ev, d["seed"], start,
                                        stop, n, d["batch_size"], d["device"], conds, mhash, code,
                                        key=content_hash({**compute, "range": [start, stop]}),
                                        cell_key=cell_key))
    return shards


def rounding_notes(suite: Suite, shards: list[Shard]) -> list[str]:
    """Human-readable notes for every NFE that was rounded explicitly."""
    from bench.evals.base import Eval
    from bench.samplers import nfe_for_steps, sampler_info
    from bench.samplers.schedules import grid_final_zero

    notes = set()
    for c in shards:
        if EVALS.get(c.eval["name"]).points is not Eval.points:
            continue  # the eval's own points (nfe_to_target), not a rounded NFE list
        used = nfe_for_steps(sampler_info(c.sampler["name"]).evals_per_step, c.steps,
                             grid_final_zero(c.sampler["grid"]))
        if used != c.nfe:
            notes.add(f"{c.sampler['label']}: NFE {c.nfe} rounded {suite['nfe_rounding']} to {used} "
                      f"({c.steps} steps)")
    return sorted(notes)
