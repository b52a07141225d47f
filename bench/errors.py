"""User-facing errors: each names where, what and how to fix it."""

from __future__ import annotations

import difflib
from typing import Iterable


class BenchError(Exception):
    """An error caused by user input; the CLI prints it as one paragraph and exits 2."""


class SuiteError(BenchError):
    """A suite file (or a --set override) is invalid."""

    def __init__(self, source: str, field: str, problem: str, fix: str) -> None:
        self.source, self.field, self.problem, self.fix = source, field, problem, fix
        super().__init__(f"{source}: field '{field}': {problem} Fix: {fix}")


class FieldError(BenchError):
    """A bad parameter inside an entry (a metric's, an eval's); the suite adds where it is."""

    def __init__(self, field: str, problem: str, fix: str) -> None:
        self.field, self.problem, self.fix = field, problem, fix
        super().__init__(f"field '{field}': {problem} Fix: {fix}")


def close_matches(name: str, choices: Iterable[str]) -> str:
    """' Did you mean X?' for a misspelt name, or '' when nothing is close."""
    hits = difflib.get_close_matches(str(name), sorted(choices), n=3, cutoff=0.5)
    return f" Did you mean {' or '.join(repr(h) for h in hits)}?" if hits else ""
