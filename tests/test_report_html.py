"""The HTML report: one self-contained page (no network, figures inlined, provenance header,
best/tie marks), checked as text and in a real headless Chromium (no console messages, a
non-blank screenshot, tables that sort when a header is clicked).

Chromium is Debian's ``chromium`` package, installed with apt-get when missing
(``support.debian.ensure_packages``); without root or apt the browser tests are skipped with the
reason. The browser is driven with its own command-line flags only: ``--screenshot``,
``--dump-dom``, and ``--enable-logging=stderr``, which writes each console message (console
calls, uncaught exceptions, Content-Security-Policy violations) to stderr as a ``CONSOLE`` line.
That line does not carry the message's level, so the tests fail on any console message: the page
writes none. A control page with a deliberate error proves the capture works. The sort is driven
by the page's ``#sort=T,C[,desc]`` fragment, which clicks the header in the browser.
"""

from __future__ import annotations

import base64
import math
import re
import subprocess
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from bench.report.blocks import Document, Table, Text, Value
from bench.report.render_html import render_html
from conftest import small_suite
from support.debian import ensure_packages, which

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


# ------------------------------------------------------------------------------- helpers
def report(cli, write_suite, tmp_path: Path, *extra: str) -> tuple[Path, Path]:
    """Run the tiny suite and render its HTML report; (results folder, tiny.html)."""
    res, out = tmp_path / "results", tmp_path / "report"
    if not res.exists():
        code, _, err = cli("run", write_suite(small_suite()), "--results", res)
        assert code == 0, err
    code, stdout, err = cli("report", res, "--out", out, "--format", "html", *extra)
    assert code == 0, err
    page = out / "tiny.html"
    assert str(page) in stdout and not list(out.glob("*.md")) and not list(out.glob("*.tex"))
    return res, page


class Tables(HTMLParser):
    """The ``table.data`` tables of a page: header texts and attributes, and rows of
    (cell text, cell attributes, the cell's inner HTML tags)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[dict] = []
        self._cell: dict | None = None
        self._in = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and "data" in (a.get("class") or "").split():
            self.tables.append({"head": [], "rows": [], "id": a.get("id")})
            self._in = True
        elif not self._in:
            return
        elif tag == "tr":
            self._row: list = []
        elif tag in ("th", "td"):
            self._cell = {"tag": tag, "attrs": a, "text": "", "inner": []}
        elif self._cell is not None:
            self._cell["inner"].append(tag)

    def handle_endtag(self, tag):
        if not self._in:
            return
        if tag in ("th", "td") and self._cell is not None:
            self._cell["text"] = self._cell["text"].strip()
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr":
            t = self.tables[-1]
            if self._row and self._row[0]["tag"] == "th":
                t["head"] = self._row
            else:
                t["rows"].append(self._row)
        elif tag == "table":
            self._in = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data


def tables_of(page: str) -> list[dict]:
    p = Tables()
    p.feed(page)
    return p.tables


def column(table: dict, j: int) -> list[str]:
    return [r[j]["text"] for r in table["rows"]]


def browser() -> str:
    """A Chromium binary (installed with apt-get if there is none), else skip."""
    found = next((which(b) for b in BROWSERS if which(b)), None)
    if found:
        return found
    reason = ensure_packages("chromium", "chromium")
    if reason:
        pytest.skip(reason)
    return which("chromium")


def headless(exe: str, target: str, work: Path, *flags: str) -> tuple[str, list[str]]:
    """Open ``target`` in headless Chromium with ``flags``; (stdout, console messages)."""
    work.mkdir(parents=True, exist_ok=True)
    profile = work / f"profile-{len(list(work.glob('profile-*')))}"
    cmd = [exe, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
           "--no-default-browser-check", "--disable-extensions", "--disable-dev-shm-usage",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *flags, target]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}: {r.stderr[-2000:]}"
    return r.stdout, [line for line in r.stderr.splitlines() if re.search(r":CONSOLE\b", line)]


# ------------------------------------------------------------------------- static checks
def test_html_report_is_one_self_contained_page(cli, write_suite, tmp_path):
    res, page = report(cli, write_suite, tmp_path)
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")

    # nothing is fetched: every src/href is a data: URI or an in-page anchor, no URL anywhere
    refs = re.findall(r"""\b(?:src|href)\s*=\s*["']?([^"'\s>]*)""", html, flags=re.I)
    assert refs and all(r.startswith(("data:", "#")) for r in refs), refs
    assert not re.search(r"https?://|\bsrc\s*=\s*[\"']?//|\bhref\s*=\s*[\"']?//|@import", html, re.I)
    assert all(u.startswith("data:") for u in re.findall(r"url\(\s*['\"]?([^)'\"]*)", html))
    assert "Content-Security-Policy" in html and "default-src 'none'" in html

    # the figures are inlined PNGs, byte for byte the files the report wrote beside the page
    imgs = re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", html)
    pngs = sorted(page.parent.glob("*.png"))
    assert imgs and len(imgs) == len(pngs)
    assert all(s.startswith("data:image/png;base64,") for s in imgs)
    blobs = {base64.b64decode(s.split(",", 1)[1], validate=True) for s in imgs}
    assert blobs == {p.read_bytes() for p in pngs}

    # the provenance header names what made the rows
    rows = pd.read_parquet(res)
    header = re.search(r'<header class="provenance">(.*?)</header>', html, re.S)
    assert header, "no provenance header"
    for col in ("run_id", "git_revision", "code_hash", "device", "torch_version"):
        for v in rows[col].dropna().unique():
            assert escape(str(v)) in header.group(1), (col, v)
    for label in ("runs", "git revision", "code hash", "device", "model weights",
                  "feature extractor weights", "reference statistics"):
        assert f"<dt>{label}</dt>" in header.group(1)

    # tables: a caption each, sortable headers, Values carry their raw number
    tables = tables_of(html)
    assert len(tables) == html.count("<caption>") >= 3
    assert all(t["head"] and t["rows"] for t in tables)
    values = tables[0]
    assert [h["text"] for h in values["head"]] == ["sampler", "NFE 10", "NFE 20"]
    assert column(values, 0) == sorted(rows["sampler"].unique())
    for r in values["rows"]:
        for j, nfe in ((1, 10), (2, 20)):
            want = rows[(rows["sampler"] == r[0]["text"]) & (rows["nfe"] == nfe)]["value"].iloc[0]
            assert math.isclose(float(r[j]["attrs"]["data-value"]), want, rel_tol=1e-12)

    # best (lowest rmse) in <strong>, overlapping intervals in <u>, and a legend that says so
    for j, nfe in ((1, 10), (2, 20)):
        cells = {r[0]["text"]: r[j] for r in values["rows"]}
        g = rows[rows["nfe"] == nfe].set_index("sampler")
        best = g["value"].idxmin()
        assert cells[best]["inner"] == ["strong"]
        for s, c in cells.items():
            if s != best:
                lo, hi = g.loc[s, "ci_low"], g.loc[s, "ci_high"]
                tie = lo <= g.loc[best, "ci_high"] and g.loc[best, "ci_low"] <= hi
                assert c["inner"] == (["u"] if tie else []), (s, nfe)
    assert "<strong>Bold</strong>: the best value in its column (lower is better)" in html
    assert "<u>underlined</u>: its interval overlaps the best one's" in html
    assert "<code>lower_order_final</code>" in html  # `code` spans

    # --ci pm writes value ± half-width
    assert "±" not in html
    assert cli("report", res, "--out", tmp_path / "pm", "--format", "html", "--ci", "pm")[0] == 0
    pm = (tmp_path / "pm" / "tiny.html").read_text()
    assert "±" in pm and "Cells: value ± half-width of the interval" in pm


def test_html_escapes_text_and_marks_numeric_columns():
    doc = Document("a <b> & 'c'", {"runs": "<r1>", "git revision": "abc&def"}, [
        Text("see `x<y>` and <i>not italic</i>"),
        Table(["name", "score", "wall s"],
              [["<script>alert(1)</script>", Value(1.5, 1.0, 2.0, mark="best"), "0.5"],
               ["b&c", Value(math.nan), "–"]], caption="cap <tag>", higher_is_better=True)])
    html = render_html(doc)
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<title>a &lt;b&gt; &amp; &#x27;c&#x27;</title>" in html
    assert "<dd>&lt;r1&gt;</dd>" in html and "<dd>abc&amp;def</dd>" in html
    assert "<code>x&lt;y&gt;</code> and &lt;i&gt;not italic&lt;/i&gt;" in html
    assert "<caption>cap &lt;tag&gt;</caption>" in html
    (t,) = tables_of(html)
    assert "data-value" not in t["rows"][0][0]["attrs"]  # a text column sorts as text
    assert [r[1]["attrs"]["data-value"] for r in t["rows"]] == ["1.5", "NaN"]
    assert [r[2]["attrs"]["data-value"] for r in t["rows"]] == ["0.5", "NaN"]  # numbers as text
    assert t["rows"][0][1]["inner"] == ["strong"]


# ------------------------------------------------------------------------ in a browser
def test_html_report_in_headless_chromium(cli, write_suite, tmp_path, capsys):
    exe = browser()
    res, page = report(cli, write_suite, tmp_path)
    work = tmp_path / "chromium"

    # the capture sees console errors and uncaught exceptions (else the checks below prove nothing)
    control = tmp_path / "control.html"
    control.write_text("<!DOCTYPE html><title>c</title><script>console.error('deliberate-error');"
                       "no_such_function();</script>")
    _, console = headless(exe, control.as_uri(), work, "--dump-dom")
    assert any("deliberate-error" in c for c in console), console
    assert any("no_such_function" in c for c in console), console

    # the page as a reader opens it: no console message, a screenshot that is not blank
    shot = tmp_path / "tiny.png"
    _, console = headless(exe, page.as_uri(), work, "--window-size=1200,1600", f"--screenshot={shot}")
    assert console == []
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1200, 1600)
        rgb = im.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 16, f"blank screenshot: {colours}"
        dark = sum(n for n, c in (colours or []) if sum(c) < 200)
        assert colours is None or dark > 500, "no text drawn"
    with capsys.disabled():
        print(f"\nscreenshot of the HTML report: {shot}")

    # a click on a header sorts the table in the browser: NFE 20 descending, then the samplers
    # column of the cost table (its last table) back to front
    before = tables_of(page.read_text())
    last = len(before) - 1
    dom, console = headless(exe, page.as_uri() + f"#sort=0,2,desc;{last},1,desc", work, "--dump-dom")
    assert console == []
    after = tables_of(dom)
    rows = pd.read_parquet(res)
    at20 = rows[rows["nfe"] == 20].set_index("sampler")["value"]
    want = sorted(at20.index, key=lambda s: (-at20[s], s))  # ties keep the page's order
    assert column(after[0], 0) == want != column(before[0], 0)
    assert [h["attrs"].get("aria-sort") for h in after[0]["head"]] == [None, None, "descending"]
    nfe_col = [int(x) for x in column(after[last], 1)]
    assert nfe_col == sorted(nfe_col, reverse=True) != [int(x) for x in column(before[last], 1)]
    for t0, t1 in zip(before[1:last], after[1:last]):  # the other tables are left as they were
        assert [[c["text"] for c in r] for r in t0["rows"]] == [[c["text"] for c in r] for r in t1["rows"]]


def test_sort_is_numeric_with_missing_values_last_in_chromium(tmp_path):
    exe = browser()
    rows = [["s10", Value(10.0), "10"], ["s9", Value(9.0), "9"], ["s100", Value(100.0), "100"],
            ["nan", Value(math.nan), "–"], ["dash", "–", "5%"], ["-inf", Value(-math.inf), "-1e3"],
            ["<b>&", Value(0.5), "0.5"]]
    table = Table(["name", "value", "text number"], rows, caption="t")
    doc = Document("sort", {"runs": "r"}, [table, Table(table.columns, rows, "t"),
                                           Table(table.columns, rows, "t")])
    page = tmp_path / "sort.html"
    page.write_text(render_html(doc))
    dom, console = headless(exe, page.as_uri() + "#sort=0,1;1,1,desc;2,2", tmp_path / "chromium",
                            "--dump-dom")
    assert console == []
    asc, desc, text_numbers = (column(t, 0) for t in tables_of(dom))
    assert asc == ["-inf", "<b>&", "s9", "s10", "s100", "nan", "dash"]
    assert desc == ["s100", "s10", "s9", "<b>&", "-inf", "nan", "dash"]
    assert text_numbers == ["-inf", "<b>&", "dash", "s9", "s10", "s100", "nan"]
