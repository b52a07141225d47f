"""The report as data: format-neutral blocks that sections build and renderers write out.

A section (the code an eval registers, ``Eval.report_sections``) turns result rows into
:class:`Heading`, :class:`Text`, :class:`Table` and :class:`Figure` blocks; the Markdown, HTML
and LaTeX renderers (``bench.report.render_*``) only lay them out. Which value of a column is
best is decided here, once, from the metric's declared direction (``Metric.outputs``): the best
finite value is marked ``best``, and every other value whose interval overlaps the best one's is
marked ``tie`` (not distinguishable from it at the stated interval). A table whose columns are
different metrics gives each column its own direction (``Table.directions``).

A block may be meant for some formats only (``formats``; None: all): e.g. a table of 60 prompts
in full on the sortable HTML page, and its top and bottom rows in Markdown and LaTeX.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

#: how a value's interval is written: "brackets" -> 1.23 [1.10, 1.35]; "pm" -> 1.23 ± 0.13
CI_STYLES = ("brackets", "pm")


@dataclass
class Heading:
    text: str
    level: int = 2
    #: the formats that show it ("md", "html", "latex"); None: every format
    formats: tuple[str, ...] | None = None


@dataclass
class Text:
    """A paragraph; ``code`` spans are written between backticks."""

    text: str
    #: the formats that show it ("md", "html", "latex"); None: every format
    formats: tuple[str, ...] | None = None


@dataclass
class Figure:
    path: Path
    caption: str


@dataclass
class Value:
    """A measured number with its interval (NaN where there is none)."""

    value: float
    lo: float = math.nan
    hi: float = math.nan
    note: str = ""   # e.g. "(NFE 19)" when the counted NFE differs from the requested one
    mark: str = ""   # "best", "tie" or ""


Cell = Union[str, Value]


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    #: the direction of the Value columns (True: higher is better; None: no best is marked)
    higher_is_better: bool | None = None
    #: a short id (LaTeX label, HTML anchor, file name)
    key: str = ""
    #: per column, its direction (overrides ``higher_is_better``): for tables whose columns are
    #: different metrics; None for a column of labels
    directions: list[bool | None] | None = None
    #: the formats that show it ("md", "html", "latex"); None: every format
    formats: tuple[str, ...] | None = None


Block = Union[Heading, Text, Table, Figure]


@dataclass
class Document:
    title: str
    provenance: dict[str, str] = field(default_factory=dict)  # label -> text (header)
    blocks: list[Block] = field(default_factory=list)


def figure_heading(text: str) -> Heading:
    """A level-3 heading that only names the figure after it: Markdown and HTML show it; LaTeX
    does not, since it floats figures away from their headings (a page of headings with no
    figure under them) and the figure's caption names it there."""
    return Heading(text, 3, formats=("md", "html"))


def shown(block: Block, fmt: str) -> bool:
    """Whether the renderer of ``fmt`` writes the block (``formats``)."""
    formats = getattr(block, "formats", None)
    return formats is None or fmt in formats


def column_directions(table: Table) -> list[bool | None]:
    """The direction of each column: ``directions`` if given, else ``higher_is_better``."""
    if table.directions is not None:
        return list(table.directions) + [None] * (len(table.columns) - len(table.directions))
    return [table.higher_is_better] * len(table.columns)


def better_words(table: Table) -> str:
    """What is better in the table's marked columns: 'higher is better', 'lower is better', or,
    where the columns differ, per column ('higher is better for a; lower is better for b, c');
    '' if nothing is marked."""
    dirs = column_directions(table)
    found = {d for d in dirs if d is not None}
    if len(found) <= 1:
        return "" if not found else f"{'higher' if found.pop() else 'lower'} is better"
    parts = []
    for d in (True, False):
        cols = [c for c, x in zip(table.columns, dirs) if x is d]
        if cols:
            parts.append(f"{'higher' if d else 'lower'} is better for {', '.join(cols)}")
    return "; ".join(parts)


# ------------------------------------------------------------------------------ numbers
def finite(v: float | None) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def overlaps(a: Value, b: Value) -> bool:
    """Whether the intervals of two values overlap (a value without one is a point)."""
    alo, ahi = (a.lo, a.hi) if finite(a.lo) and finite(a.hi) else (a.value, a.value)
    blo, bhi = (b.lo, b.hi) if finite(b.lo) and finite(b.hi) else (b.value, b.value)
    return alo <= bhi and blo <= ahi


def mark_best(table: Table) -> Table:
    """Mark, per column, the best finite value by the column's direction (``column_directions``),
    and the values whose interval overlaps it (``tie``). Columns without Values or without a
    direction are left unmarked."""
    for j, hib in enumerate(column_directions(table)):
        if hib is None:
            continue
        vals = [r[j] for r in table.rows if isinstance(r[j], Value) and finite(r[j].value)]
        for v in vals:
            v.mark = ""
        if not vals:
            continue
        best = (max if hib else min)(vals, key=lambda v: v.value)
        best.mark = "best"
        for v in vals:
            if v is not best and overlaps(v, best):
                v.mark = "tie"
    return table


def sig(v: float, digits: int = 3) -> str:
    """``v`` in ``digits`` significant digits; 'NaN', 'inf', '-inf' for non-finite values."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "NaN"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0:
        return "0"
    if 1e-3 <= abs(v) < 1e4:  # keep trailing zeros: 0.0170, not 0.017
        return f"{v:#.{digits}g}".rstrip(".")
    return f"{v:.{digits - 1}e}"


def format_value(v: Value, style: str = "brackets", digits: int = 3) -> str:
    """``1.23 [1.10, 1.35]`` or ``1.23 ± 0.13`` (the half-width in 2 significant digits and the
    value rounded to the same decimal place: consistent digits down a column)."""
    if not finite(v.value):
        return sig(v.value) + (f" {v.note}" if v.note else "")
    has_ci = finite(v.lo) and finite(v.hi)
    if style == "pm" and has_ci:
        half = (v.hi - v.lo) / 2
        if half > 0:
            place = 1 - int(math.floor(math.log10(abs(half))))  # 2 significant digits of half
            dec = max(place, 0)
            txt = f"{round(v.value, place):.{dec}f} ± {round(half, place):.{dec}f}"
        else:
            txt = f"{sig(v.value, digits)} ± 0"
    elif has_ci:
        txt = f"{sig(v.value, digits)} [{sig(v.lo, digits)}, {sig(v.hi, digits)}]"
    else:
        txt = sig(v.value, digits)
    return txt + (f" {v.note}" if v.note else "")


def interval_words(style: str) -> str:
    return "value ± half-width of the interval" if style == "pm" else "value [interval low, high]"
