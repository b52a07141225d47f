"""Conditions as data: class labels or prompts, resolved per model, one per sample index.

A suite's ``conditions:`` block (or none) becomes a :class:`Conditions`: an ordered tuple of
:class:`Condition` records. Sample ``i`` gets condition ``i mod K`` (so the first K samples of
every cell cover every condition, and ``images_per_prompt: n`` makes ``K n`` samples). Prompts
come inline or from a file: ``.txt`` (one per line), CSV / TSV with a header (a text column,
optional id and category columns: PartiPrompts' TSV and DrawBench's CSV load as they are), or
JSONL (one object per line). The resolved records are part of a cell's key.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from bench.errors import BenchError, close_matches

#: the fields of a suite's ``conditions:`` block
FIELDS = {
    "classes": "balanced (every class of the model), one label, or a list of labels",
    "prompts": "a list of prompts, or a prompt file (.txt, .csv, .tsv, .jsonl)",
    "text_column": "prompt file: the column holding the text (default: prompt, text or caption)",
    "id_column": "prompt file: the column holding a prompt id (default: id; else the row number)",
    "category_column": "prompt file: the column holding a category (default: category)",
    "images_per_prompt": "samples per condition: samples = conditions x images_per_prompt",
    "negative_prompt": "text of the unconditional branch of classifier-free guidance",
}
TEXT_COLUMNS = ("prompt", "prompts", "text", "caption")


@dataclass(frozen=True)
class Condition:
    """One condition: a class label or a prompt, with a stable id and an optional category."""

    id: str
    label: int | None = None
    text: str | None = None
    category: str = ""


@dataclass(frozen=True)
class Conditions:
    """The conditions of a cell; sample ``i`` gets ``items[i % len(items)]``."""

    kind: str = "none"  # none | classes | prompts
    items: tuple[Condition, ...] = ()
    negative_prompt: str = ""
    images_per_prompt: int | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def for_indices(self, indices: Sequence[int]) -> list[Condition] | None:
        if not self.items:
            return None
        k = len(self.items)
        return [self.items[int(i) % k] for i in indices]

    def describe(self) -> dict[str, Any]:
        """JSON-able and complete: what the cell key hashes."""
        return {"kind": self.kind, "items": [asdict(c) for c in self.items],
                "negative_prompt": self.negative_prompt}

    def digest(self) -> str:
        if self.kind == "none":
            return ""
        return hashlib.sha256(json.dumps(self.describe(), sort_keys=True).encode()).hexdigest()[:16]

    def summary(self) -> str:
        """A short human description for result rows and reports."""
        if self.kind == "none":
            return ""
        what = "class" if self.kind == "classes" else "prompt"
        src = f" from {self.source}" if self.source else ""
        return f"{len(self.items)} {what}(s){src} [{self.digest()}]"


NONE = Conditions()


def check_block(block: Any) -> dict[str, Any]:
    """Validate the shape of a suite's ``conditions:`` block (not yet resolved against a model)."""
    if block is None:
        return {}
    if not isinstance(block, dict):
        raise BenchError(f"field 'conditions' must be a mapping, got {block!r}; write e.g. "
                         f"'conditions: {{classes: balanced}}' or 'conditions: {{prompts: FILE}}'.")
    for k in block:
        if k not in FIELDS:
            raise BenchError(f"field 'conditions.{k}' is not a conditions field."
                             f"{close_matches(k, FIELDS)} Use: {', '.join(FIELDS)}.")
    if "classes" in block and "prompts" in block:
        raise BenchError("field 'conditions': give either 'classes' or 'prompts', not both.")
    ipp = block.get("images_per_prompt")
    if ipp is not None and (isinstance(ipp, bool) or not isinstance(ipp, int) or ipp < 1):
        raise BenchError(f"field 'conditions.images_per_prompt' = {ipp!r}; use a whole number >= 1.")
    if "negative_prompt" in block and not isinstance(block["negative_prompt"], str):
        raise BenchError(f"field 'conditions.negative_prompt' = {block['negative_prompt']!r}; "
                         f"use a string.")
    return dict(block)


def load_prompts(spec: Any, base: Path | None = None, text_column: str | None = None,
                 id_column: str | None = None, category_column: str | None = None
                 ) -> tuple[list[Condition], str]:
    """(prompts, source name) from an inline list or a prompt file."""
    if isinstance(spec, list):
        if not spec:
            raise BenchError("field 'conditions.prompts' is an empty list; give at least one prompt.")
        out = []
        for i, p in enumerate(spec):
            if not isinstance(p, str) or not p.strip():
                raise BenchError(f"field 'conditions.prompts[{i}]' = {p!r}; every prompt must be "
                                 f"a non-empty string.")
            out.append(Condition(id=f"p{i:04d}", text=p))
        return out, ""
    if not isinstance(spec, str):
        raise BenchError(f"field 'conditions.prompts' = {spec!r}; give a list of prompts or a "
                         f"prompt file (.txt, .csv, .tsv, .jsonl).")
    path = Path(spec)
    if not path.is_absolute() and base is not None and not path.is_file():
        path = base / path
    if not path.is_file():
        raise BenchError(f"field 'conditions.prompts' = '{spec}' is not a file (relative paths are "
                         f"read from the suite's folder); give a .txt, .csv, .tsv or .jsonl file "
                         f"or an inline list.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise BenchError(f"prompt file '{spec}' is not UTF-8 text; save it as UTF-8.") from None
    suffix = path.suffix.lower()
    if suffix == ".txt":
        rows = [{"prompt": line} for line in text.splitlines()]
        text_column = "prompt"
    elif suffix in (".csv", ".tsv"):
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ",")
        rows = list(reader)
        header = reader.fieldnames or []
        text_column = _column(spec, header, text_column, TEXT_COLUMNS, "text_column", required=True)
    elif suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                raise BenchError(f"prompt file '{spec}', line {n}: empty line; remove it.")
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BenchError(f"prompt file '{spec}', line {n}: not JSON ({exc.msg}).") from None
            if not isinstance(obj, dict):
                raise BenchError(f"prompt file '{spec}', line {n}: must be a JSON object.")
            rows.append(obj)
        header = sorted({k for r in rows for k in r})
        text_column = _column(spec, header, text_column, TEXT_COLUMNS, "text_column", required=True)
    else:
        raise BenchError(f"prompt file '{spec}': unknown type '{suffix}'; use .txt (one prompt per "
                         f"line), .csv, .tsv (with a header) or .jsonl.")
    if not rows:
        raise BenchError(f"prompt file '{spec}' holds no prompts.")
    header = list(rows[0])
    id_col = _column(spec, header, id_column, ("id",), "id_column", required=False)
    cat_col = _column(spec, header, category_column, ("category",), "category_column",
                      required=False)
    out, seen = [], set()
    for n, row in enumerate(rows):
        line = n + (2 if suffix in (".csv", ".tsv") else 1)
        value = row.get(text_column)
        if not isinstance(value, str) or not value.strip():
            raise BenchError(f"prompt file '{spec}', line {line}: empty prompt in column "
                             f"'{text_column}'; remove the line or fill it in.")
        pid = str(row[id_col]).strip() if id_col and str(row.get(id_col) or "").strip() else f"p{n:04d}"
        if pid in seen:
            raise BenchError(f"prompt file '{spec}', line {line}: id '{pid}' appears twice; ids "
                             f"must be unique.")
        seen.add(pid)
        out.append(Condition(id=pid, text=value.strip(),
                             category=str(row.get(cat_col) or "").strip() if cat_col else ""))
    return out, path.name


def _column(spec: str, header: Sequence[str], given: str | None, defaults: Sequence[str],
            field_: str, required: bool) -> str | None:
    if given is not None:
        if given not in header:
            raise BenchError(f"prompt file '{spec}': field 'conditions.{field_}' = '{given}' is not "
                             f"a column.{close_matches(given, header)} Columns: {', '.join(header)}.")
        return given
    lower = {h.lower(): h for h in header}
    for d in defaults:
        if d in lower:
            return lower[d]
    if required:
        raise BenchError(f"prompt file '{spec}' has no text column (looked for "
                         f"{', '.join(defaults)}; columns: {', '.join(header) or 'none'}); name it "
                         f"with 'conditions: {{{field_}: COLUMN}}'.")
    return None


def resolve(block: dict[str, Any] | None, adapter: Any, base: Path | None = None) -> Conditions:
    """The conditions of ``block`` for a model: class labels checked against the model's classes,
    prompts only for text-conditional models. No block: a class-conditional model gets every
    class (balanced), an unconditional one none, a text-conditional one an error."""
    block = check_block(block)
    kind = getattr(adapter, "conditioning", None)  # None | "classes" | "prompts"
    ipp = block.get("images_per_prompt")
    neg = block.get("negative_prompt", "")
    if "prompts" in block:
        if kind != "prompts":
            raise BenchError(f"field 'conditions.prompts': model {adapter.label()} is not "
                             f"text-conditional; use 'conditions: {{classes: ...}}' or none.")
        items, source = load_prompts(block["prompts"], base, block.get("text_column"),
                                     block.get("id_column"), block.get("category_column"))
        return Conditions("prompts", tuple(items), neg, ipp, source)
    if kind == "prompts":
        raise BenchError(f"model {adapter.label()} is text-conditional: give the suite "
                         f"'conditions: {{prompts: [\"a photo of ...\"]}}' or a prompt file.")
    if kind is None:
        if "classes" in block:
            raise BenchError(f"field 'conditions.classes': model {adapter.label()} is "
                             f"unconditional; remove the conditions block.")
        return NONE
    labels = adapter.class_labels(block.get("classes", "balanced"))
    names = adapter.class_names() or {}
    items = tuple(Condition(id=f"class={c}", label=c, text=names.get(c), category=names.get(c, ""))
                  for c in labels)
    return Conditions("classes", items, neg, ipp)
