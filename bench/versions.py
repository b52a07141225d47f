"""Code versions per registry entry: a hash of the source of the modules an entry uses.

An entry's modules are the module that defines it and, transitively, every ``bench`` module it
imports by name (read from the source with ``ast``, function-level imports included). A
package's ``__init__`` is followed only when it is imported by name, not as the parent of a
submodule, so adding a sampler module (and its import line in ``bench/samplers/__init__.py``)
leaves the versions of the other samplers, models, metrics and evals unchanged, and editing
``ddim.py`` changes only what uses ddim. An entry registered with ``version=...`` uses that
string instead.

Modules that move results around without computing them (the CLI, dispatch, the store, reports)
are not followed: editing them invalidates nothing.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

import bench

PACKAGE_ROOT = Path(bench.__file__).resolve().parent
#: modules never part of a version (they store, dispatch or present results)
NOT_COMPUTING = ("bench.cli", "bench.cli_fidelity", "bench.dispatch", "bench.worker", "bench.store",
                 "bench.report", "bench.compare", "bench.suite", "bench.provenance",
                 "bench.benchmarks", "bench.registry", "bench.errors")


def module_file(module: str, root: Path) -> Path | None:
    if not module.startswith("bench."):
        return None
    rel = Path(*module.split(".")[1:])
    for cand in (root / rel.with_suffix(".py"), root / rel / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _skipped(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in NOT_COMPUTING)


def imported_modules(module: str, root: Path) -> set[str]:
    """``bench.*`` modules that ``module``'s source imports by name."""
    path = module_file(module, root)
    if path is None:
        return set()
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("bench."))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                parts = module.split(".")
                parts = parts[: len(parts) - node.level + (1 if is_pkg else 0)]
                base = ".".join(parts + ([base] if base else []))
            if not (base == "bench" or base.startswith("bench.")):
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.add(sub if module_file(sub, root) is not None else base)
    return {m for m in out if m != "bench" and not _skipped(m)}


def closure(module: str, root: Path) -> list[str]:
    """The module and every bench module it uses, transitively, sorted."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        m = todo.pop()
        if m in seen or module_file(m, root) is None:
            continue
        seen.add(m)
        todo.extend(imported_modules(m, root) - seen)
    return sorted(seen)


def modules_version(modules: tuple[str, ...], root: Path | None = None) -> str:
    """Hash of the source files of ``modules`` and everything they use (``root``: the package
    folder, default the installed one)."""
    return _modules_version(modules, root or PACKAGE_ROOT)


@lru_cache(maxsize=None)
def _modules_version(modules: tuple[str, ...], root: Path) -> str:
    files: set[str] = set()
    for m in modules:
        files.update(closure(m, root))
    h = hashlib.sha256()
    for m in sorted(files):
        p = module_file(m, root)
        assert p is not None
        h.update(m.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def entry_module(entry: object) -> str:
    """The module defining a registry entry (lazy entries: their target's module)."""
    target = getattr(entry, "target", None)
    if target:
        return target.split(":")[0]
    obj = entry.load()  # type: ignore[attr-defined]
    return obj.__module__


def entry_version(entry: object, root: Path | None = None) -> str:
    """An entry's explicit ``version=`` or the hash of the modules it uses (an entry registered
    from outside the package: the hash of its module's file)."""
    explicit = getattr(entry, "meta", {}).get("version")
    if explicit:
        return str(explicit)
    module = entry_module(entry)
    if not module.startswith("bench."):
        import importlib
        import inspect

        src = inspect.getsourcefile(importlib.import_module(module))
        return hashlib.sha256(Path(src).read_bytes()).hexdigest()[:16] if src else module
    return modules_version((module,), root)


#: the sampling loop every eval runs (its modules are part of every cell's version)
GENERATE_MODULES = ("bench.generate", "bench.conditions")
