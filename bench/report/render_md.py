"""Markdown from report blocks (GitHub-flavoured tables; figures as relative PNG links)."""

from __future__ import annotations

from bench.report.blocks import (Document, Figure, Heading, Table, Text, Value, better_words,
                                 format_value, shown)


def cell_md(c: object, style: str) -> str:
    if not isinstance(c, Value):
        return str(c)
    txt = format_value(c, style)
    return {"best": f"**{txt}**", "tie": f"_{txt}_"}.get(c.mark, txt)


def table_md(t: Table, style: str = "brackets") -> str:
    lines = ["| " + " | ".join(t.columns) + " |", "|" + "|".join("---" for _ in t.columns) + "|"]
    lines += ["| " + " | ".join(cell_md(c, style) for c in r) + " |" for r in t.rows]
    return "\n".join(lines)


def render_md(doc: Document, style: str = "brackets") -> str:
    out = [f"# {doc.title}", ""]
    if doc.provenance:
        out += ["; ".join(f"{k}: {v}" for k, v in doc.provenance.items()) + ".", ""]
    for b in doc.blocks:
        if not shown(b, "md"):
            continue
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Text):
            out += [b.text, ""]
        elif isinstance(b, Table):
            out += [table_md(b, style), ""]
            words = better_words(b)
            if words:
                out += [f"Bold: the best value in its column ({words}); italic: its interval "
                        f"overlaps the best one's.", ""]
            elif b.caption:
                out += [b.caption, ""]
        elif isinstance(b, Figure):
            out += [f"![{b.caption}]({b.path.name})", ""]
    return "\n".join(out)
