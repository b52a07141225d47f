"""One small registry type for models, samplers, evals and metrics.

Entries are registered with a decorator next to their implementation. Heavy adapters can be
registered lazily (``register_lazy``) so that importing the registry stays cheap.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, TypeVar

from bench.errors import BenchError, close_matches

T = TypeVar("T")


@dataclass
class Entry(Generic[T]):
    name: str
    obj: T | None
    description: str
    meta: dict[str, Any] = field(default_factory=dict)
    target: str | None = None  # "module:attr" for lazy entries

    def load(self) -> T:
        if self.obj is None:
            assert self.target is not None
            module, attr = self.target.split(":")
            self.obj = getattr(importlib.import_module(module), attr)
        return self.obj

    def params(self) -> dict[str, Any]:
        """Parameters with defaults: from ``meta['params']`` or the object's signature."""
        if "params" in self.meta:
            return dict(self.meta["params"])
        obj = self.load()
        return signature_params(obj)


def signature_params(obj: Any) -> dict[str, Any]:
    """Keyword-only parameters (functions) or __init__ parameters (classes) with defaults."""
    target = obj.__init__ if inspect.isclass(obj) else obj
    out: dict[str, Any] = {}
    for p in inspect.signature(target).parameters.values():
        if p.kind is p.KEYWORD_ONLY or (inspect.isclass(obj) and p.name != "self"
                                         and p.kind is p.POSITIONAL_OR_KEYWORD):
            if p.name in {"noise", "callback", "cond", "ctx"}:
                continue
            out[p.name] = None if p.default is p.empty else p.default
    return out


class Registry(Generic[T]):
    """Name -> entry map with decorator registration and close-match errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, description: str = "", **meta: Any) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            doc = description or (inspect.getdoc(obj) or "").split("\n")[0]
            self._entries[name] = Entry(name, obj, doc, dict(meta))
            return obj

        return deco

    def register_lazy(self, name: str, target: str, description: str, **meta: Any) -> None:
        self._entries[name] = Entry(name, None, description, dict(meta), target)

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise BenchError(
                f"unknown {self.kind} {name!r}.{close_matches(name, self._entries)} "
                f"Known {self.kind}s: {', '.join(sorted(self._entries))}."
            ) from None

    def get(self, name: str) -> T:
        return self.entry(name).load()

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def names(self) -> list[str]:
        return sorted(self._entries)


MODELS: Registry[Any] = Registry("model")
SAMPLERS: Registry[Any] = Registry("sampler")
GRIDS: Registry[Any] = Registry("grid")
EVALS: Registry[Any] = Registry("eval")
METRICS: Registry[Any] = Registry("metric")
FEATURES: Registry[Any] = Registry("feature extractor")
DATASETS: Registry[Any] = Registry("dataset")


def load_all() -> None:
    """Import the modules that register the built-in entries."""
    for mod in ("bench.models", "bench.samplers", "bench.evals", "bench.metrics", "bench.data"):
        importlib.import_module(mod)
