"""One self-contained HTML5 page from report blocks.

Nothing is fetched when the page is opened: the figures are inlined as ``data:`` URIs, the style
and the script are inline, and a Content-Security-Policy forbids any other source. Every table
sorts by a click on a column header (numbers numerically, from each cell's ``data-value``;
missing and NaN values last); the best value of a column is bold, a value whose interval overlaps
the best one's is underlined.

The page honours a fragment ``#sort=T,C`` (``,desc`` for descending; several joined by ``;``):
once loaded, it clicks header C of table T (both 0-based), as a reader would. Tests use it to
check the sort in a real browser; a reader can use it to link to a sorted table.
"""

from __future__ import annotations

import base64
import math
import re
from html import escape

from bench.report.blocks import (Document, Figure, Heading, Table, Text, Value, better_words,
                                 format_value, interval_words, shown)

CSS = """
:root { color-scheme: light; --line: #d0d4da; --head: #f2f4f7; --muted: #5b6470; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2329;
       max-width: 1100px; margin: 0 auto; padding: 1.5em 1.5em 4em; }
h1 { font-size: 1.6em; margin: 0 0 .4em; }
h2 { font-size: 1.3em; margin: 1.8em 0 .5em; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.1em; margin: 1.4em 0 .4em; }
code { font: .9em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
       background: var(--head); padding: 0 .25em; border-radius: 3px; }
header.provenance { border: 1px solid var(--line); border-radius: 6px; padding: .6em 1em;
                    background: #fafbfc; }
header.provenance dl { display: grid; grid-template-columns: max-content 1fr; gap: .15em 1em;
                       margin: 0; font-size: .9em; }
header.provenance dt { font-weight: 600; color: var(--muted); }
header.provenance dd { margin: 0; overflow-wrap: anywhere; }
div.scroll { overflow-x: auto; }
table.data { border-collapse: collapse; margin: .8em 0 .3em; font-size: .92em; }
table.data caption { caption-side: top; text-align: left; color: var(--muted); padding: .2em 0; }
table.data th, table.data td { border: 1px solid var(--line); padding: .25em .6em; }
table.data th { background: var(--head); cursor: pointer; user-select: none; white-space: nowrap; }
table.data th::after { content: " \\2195"; color: #a0a7b0; font-size: .8em; }
table.data th[aria-sort="ascending"]::after { content: " \\2191"; color: #1d2329; }
table.data th[aria-sort="descending"]::after { content: " \\2193"; color: #1d2329; }
table.data td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.data tbody tr:nth-child(even) { background: #fafbfc; }
p.legend { font-size: .85em; color: var(--muted); margin: 0 0 1em; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { font-size: .85em; color: var(--muted); }
p.missing { color: #b00020; }
"""

# Sort a table by the clicked header: by number when the column's cells carry data-value (missing
# and NaN last in both directions), else by text.
JS = r"""
(function () {
  "use strict";
  function key(td) {
    var raw = td.getAttribute("data-value");
    return { num: raw === null || raw === "" ? NaN : Number(raw), text: td.textContent.trim(),
             has: raw !== null };
  }
  function sortBy(table, col, dir) {
    var body = table.tBodies[0];
    if (!body) return;
    var rows = Array.prototype.slice.call(body.rows);
    var keys = rows.map(function (r) {
      return r.cells[col] ? key(r.cells[col]) : { num: NaN, text: "", has: false };
    });
    var numeric = keys.some(function (k) { return k.has; });
    var idx = rows.map(function (_, i) { return i; });
    idx.sort(function (a, b) {
      var ka = keys[a], kb = keys[b];
      if (numeric) {
        var na = isNaN(ka.num), nb = isNaN(kb.num);
        if (na || nb) return na === nb ? a - b : (na ? 1 : -1);
        if (ka.num === kb.num) return a - b;
        return (ka.num < kb.num ? -1 : 1) * dir;
      }
      var c = ka.text.localeCompare(kb.text, undefined, { numeric: true });
      return c === 0 ? a - b : c * dir;
    });
    idx.forEach(function (i) { body.appendChild(rows[i]); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, j) {
      if (j === col) th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    });
  }
  function init() {
    var tables = document.querySelectorAll("table.data");
    Array.prototype.forEach.call(tables, function (table) {
      if (!table.tHead) return;
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
        th.addEventListener("click", function () {
          var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
          sortBy(table, col, dir);
        });
        th.addEventListener("keydown", function (e) {
          if (e.key === "Enter" || e.key === " ") { e.preventDefault(); th.click(); }
        });
      });
    });
    var hash = window.location.hash;
    if (hash.indexOf("#sort=") !== 0) return;
    hash.slice(6).split(";").forEach(function (one) {
      var m = /^(\d+),(\d+)(,desc)?$/.exec(one);
      var table = m && tables[+m[1]];
      var th = table && table.tHead && table.tHead.rows[0].cells[+m[2]];
      if (th) {
        th.click();
        if (m[3]) th.click();
      }
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
"""

CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
       "script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'")


def inline(text: str) -> str:
    """Escaped text with ``code`` spans (between backticks) as ``<code>``."""
    parts = str(text).split("`")
    if len(parts) % 2 == 0:  # an unmatched backtick: no code spans
        return escape(str(text))
    return "".join(f"<code>{escape(p)}</code>" if i % 2 else escape(p) for i, p in enumerate(parts))


def _number(v: float) -> str:
    """A float as JavaScript's ``Number()`` reads it (NaN, Infinity, -Infinity, repr)."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return repr(float(v))


_NUMERIC = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?%?$")


#: text cells that stand for no value (they sort last in a numeric column)
_MISSING = {"", "–", "-", "NaN", "nan"}


def numeric_columns(t: Table) -> list[bool]:
    """Per column: whether its text cells are all numbers (or missing), so that they sort as
    numbers; Value cells always do."""
    out = []
    for j in range(len(t.columns)):
        texts = [str(r[j]).strip() for r in t.rows if j < len(r) and not isinstance(r[j], Value)]
        given = [s for s in texts if s not in _MISSING]
        out.append(all(_NUMERIC.match(s) for s in given))
    return out


def cell_html(c: object, style: str, numeric: bool = False) -> str:
    if isinstance(c, Value):
        txt = escape(format_value(c, style))
        txt = {"best": f"<strong>{txt}</strong>", "tie": f"<u>{txt}</u>"}.get(c.mark, txt)
        return f'<td class="num" data-value="{_number(c.value)}">{txt}</td>'
    s = str(c)
    if numeric:  # a column of plain numbers and percentages sorts as numbers
        v = s.strip()
        raw = _number(float(v.rstrip("%"))) if _NUMERIC.match(v) else "NaN"
        return f'<td class="num" data-value="{raw}">{escape(s)}</td>'
    return f"<td>{inline(s)}</td>"


def _anchor(key: str, used: set[str]) -> str:
    base = "t-" + (re.sub(r"[^A-Za-z0-9_-]+", "-", key).strip("-") or "table")
    name, n = base, 2
    while name in used:
        name, n = f"{base}-{n}", n + 1
    used.add(name)
    return name


def table_html(t: Table, style: str = "brackets", anchor: str = "") -> str:
    ident = f' id="{escape(anchor)}"' if anchor else ""
    out = ['<div class="scroll">', f'<table class="data"{ident}>']
    if t.caption:
        out.append(f"<caption>{inline(t.caption)}</caption>")
    out.append("<thead><tr>" + "".join(f'<th scope="col" tabindex="0" title="sort by {escape(c)}">'
                                       f"{escape(c)}</th>" for c in t.columns) + "</tr></thead>")
    out.append("<tbody>")
    numeric = numeric_columns(t)
    out += ["<tr>" + "".join(cell_html(c, style, j < len(numeric) and numeric[j])
                             for j, c in enumerate(r)) + "</tr>" for r in t.rows]
    out.append("</tbody></table></div>")
    words = better_words(t)
    if words:
        out.append(f'<p class="legend"><strong>Bold</strong>: the best value in its column '
                   f"({escape(words)}); "
                   f"<u>underlined</u>: its interval overlaps the best one's. "
                   f"Cells: {escape(interval_words(style))}. Click a column header to sort.</p>")
    return "\n".join(out)


def figure_html(f: Figure) -> str:
    try:
        data = base64.b64encode(f.path.read_bytes()).decode("ascii")
    except OSError as exc:  # shown in the page rather than dropped without a word
        return (f'<p class="missing">Figure {escape(f.path.name)} could not be read '
                f"({escape(type(exc).__name__)}): {inline(f.caption)}</p>")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{escape(f.caption)}">'
            f"<figcaption>{inline(f.caption)}</figcaption></figure>")


def render_html(doc: Document, style: str = "brackets") -> str:
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           '<link rel="icon" href="data:,">',  # no favicon request
           f"<title>{escape(doc.title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
           f"<h1>{escape(doc.title)}</h1>"]
    if doc.provenance:
        out.append('<header class="provenance"><dl>')
        out += [f"<dt>{escape(str(k))}</dt><dd>{escape(str(v))}</dd>"
                for k, v in doc.provenance.items()]
        out.append("</dl></header>")
    used: set[str] = set()
    for b in doc.blocks:
        if not shown(b, "html"):
            continue
        if isinstance(b, Heading):
            lvl = min(max(int(b.level), 2), 6)  # h1 is the title
            out.append(f"<h{lvl}>{inline(b.text)}</h{lvl}>")
        elif isinstance(b, Text):
            out.append(f"<p>{inline(b.text)}</p>")
        elif isinstance(b, Table):
            out.append(table_html(b, style, _anchor(b.key or "table", used)))
        elif isinstance(b, Figure):
            out.append(figure_html(b))
    out += [f"<script>{JS}</script>", "</body>", "</html>", ""]
    return "\n".join(out)
