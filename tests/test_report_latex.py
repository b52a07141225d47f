"""The LaTeX renderer: best/tie marks in both directions, escaping, and real pdflatex compiles
(pdflatex and poppler are installed with apt-get when missing; see ``support.latex``)."""

from __future__ import annotations

import pytest

from bench.report.blocks import (Document, Figure, Heading, Table, Text, Value, figure_heading,
                                 format_value, mark_best)
from bench.report.render_latex import code, escape, inline, render_latex
from conftest import small_suite
from support.latex import (compile_input, first_page_png, is_blank, log_errors, pdf_text,
                           pdflatex_reason, pdftotext_reason, rasterizer_reason)


def need_pdflatex() -> None:
    reason = pdflatex_reason()
    if reason:
        pytest.skip(reason)


def direction_tables() -> tuple[Table, Table]:
    """FID-like (lower is better) and IS/precision-like (higher is better) tables: per column a
    best value, a runner-up whose interval overlaps it and one whose interval does not."""
    fid = mark_best(Table(["sampler", "FID"], [
        ["ddim", Value(12.0, 11.0, 13.0)],     # best (lowest)
        ["euler", Value(12.6, 11.8, 13.4)],    # overlaps the best: tie
        ["heun", Value(20.0, 19.0, 21.0)],     # does not overlap: plain
    ], caption="fid (lower is better): 95% CI: jackknife", higher_is_better=False, key="fid"))
    isc = mark_best(Table(["sampler", "IS", "precision"], [
        ["ddim", Value(8.0, 7.6, 8.4), Value(0.70, 0.66, 0.74)],    # best IS; plain precision
        ["euler", Value(7.7, 7.4, 8.0), Value(0.80, 0.77, 0.83)],   # IS tie; best precision
        ["heun", Value(5.0, 4.8, 5.2), Value(0.78, 0.75, 0.81)],    # IS plain; precision tie
    ], caption="isc (higher is better): mean -/+ std over splits", higher_is_better=True,
        key="isc_prc"))
    return fid, isc


@pytest.mark.parametrize("style", ["brackets", "pm"])
def test_best_is_bold_overlap_underlined_in_both_directions(style):
    fid, isc = direction_tables()
    assert [r[1].mark for r in fid.rows] == ["best", "tie", ""]
    assert [r[1].mark for r in isc.rows] == ["best", "tie", ""]
    assert [r[2].mark for r in isc.rows] == ["", "best", "tie"]
    tex = render_latex(Document("Directions", {}, [Heading("FID"), fid, Heading("IS"), isc]), style)

    def cell(v: Value) -> str:
        return escape(format_value(v, style))

    for t in (fid, isc):
        for row in t.rows:
            for v in row[1:]:
                wrapped = {"best": rf"\textbf{{{cell(v)}}}", "tie": rf"\underline{{{cell(v)}}}"}
                want = wrapped.get(v.mark, cell(v))
                assert f"& {want}" in tex, (v, want)
                if not v.mark:  # a plain value is neither bold nor underlined
                    assert rf"\textbf{{{cell(v)}}}" not in tex and rf"\underline{{{cell(v)}}}" not in tex
    assert rf"\textbf{{{cell(Value(12.0, 11.0, 13.0))}}}" in tex      # lowest FID
    assert rf"\textbf{{{cell(Value(8.0, 7.6, 8.4))}}}" in tex         # highest IS
    if style == "pm":
        assert r"12.0 $\pm$ 1.0" in tex
    else:
        assert "12.0 [11.0, 13.0]" in tex
    assert "Bold: best in its column (lower is better); underlined: interval overlaps the best." in tex
    assert "Bold: best in its column (higher is better); underlined: interval overlaps the best." in tex
    assert r"\caption{fid (lower is better): 95\% CI: jackknife." in tex
    assert r"\label{tab:fid}" in tex and r"\label{tab:isc_prc}" not in tex  # '_' made safe
    assert r"\label{tab:isc-prc}" in tex
    assert r"\subsection*{FID}" in tex and r"\begin{tabular}{@{}lr@{}}" in tex
    assert tex.count(r"\toprule") == tex.count(r"\midrule") == tex.count(r"\bottomrule") == 2
    assert tex.splitlines()[0].startswith("%") and "booktabs,graphicx" in tex.splitlines()[0]
    assert tex.isascii()


def test_escaping_and_non_ascii():
    assert escape("a & b % c $ d # e _ f { g } h ~ i ^ j \\ k") == (
        r"a \& b \% c \$ d \# e \_ f \{ g \} h \textasciitilde{} i \textasciicircum{} j "
        r"\textbackslash{} k")
    assert escape("10–20 — ± ∓ é ü σ … ×") == (
        r"10--20 --- $\pm$ $\mp$ \'{e} \"{u} $\sigma$ \ldots{} $\times$")
    assert escape("--ci") == "-{}-ci"  # no en dash ligature from two hyphens
    assert escape("β̃ − β") == r"$\tilde{\beta}$ $-$ $\beta$"  # a combining accent on math
    assert escape("☃").isascii()
    assert inline("use `var_min` here") == r"use \texttt{var{\char95}min} here"
    # code keeps the typewriter font's own ASCII glyphs and plain spaces
    assert code('{"a": 1}') == r'{\char123}"a":\ 1{\char125}'
    assert code("a\\b ~^ <|> --é") == (
        r"a{\char92}b\ {\char126}{\char94}\ {\char60}{\char124}{\char62}\ -{}-\'{e}")
    assert inline("odd ` tick") == r"odd \textasciigrave{} tick"
    # a paragraph whose code has spaces (which do not stretch in typewriter) is set ragged right
    ragged = render_latex(Document("t", {}, [Text("params `{\"a\": 1}`"), Text("metric `fid`")]))
    assert r"{\rightskip=0pt plus 1fil\relax params \texttt{" in ragged
    assert "\nmetric \\texttt{fid}\n" in ragged


def test_awkward_document_compiles(tmp_path):
    """Specials, non-ASCII text, a wide table, a figure and repeated keys: pdflatex accepts it."""
    need_pdflatex()
    from PIL import Image

    Image.new("RGB", (40, 20), (200, 30, 30)).save(tmp_path / "fig_a.png")
    wide = Table([f"col {i}_x" for i in range(9)],
                 [["row & 1"] + [Value(1.0 + i, 0.5 + i, 1.5 + i) for i in range(8)],
                  ["row ~ 2"] + ["–"] * 8], caption="a wide table: 8 value columns ± 5 %",
                 higher_is_better=False, key="wide")
    doc = Document("Tricky: 100% & $5 #1 {x} ~ ^ \\ é — ±", {"hash": "a" * 64, "note": "x_y"}, [
        Heading("g — rmse"), Text("Model `gmm` {\"cov\": \"full\"}; 10–20 (NFE ≥ 3); σ ≈ 0.1; β̃ — ok"),
        Text("Code: `{\"k\": [1, 2]} a_b\\c ~^ <|> --x é σ 100% & $5 #1`."),
        mark_best(wide), Table(["a", "b"], [["1", "2"]], key="wide"), Heading("level 3", 3),
        Figure(tmp_path / "fig_a.png", "a figure: `fig_a.png {x_y: 1}`, 50% wider")])
    (tmp_path / "tricky.tex").write_text(render_latex(doc, "pm"))
    r, pdf = compile_input(tmp_path, "tricky.tex")
    assert r.returncode == 0, log_errors(r)
    assert pdf.is_file()
    tex = (tmp_path / "tricky.tex").read_text()
    assert r"\resizebox" in tex and r"\label{tab:wide-2}" in tex
    assert "multiply defined" not in r.stdout  # repeated keys get distinct labels
    if not pdftotext_reason():  # code is set in the typewriter font's own ASCII glyphs
        text = " ".join(pdf_text(pdf).split())
        assert '{"k": [1, 2]} a_b\\c ~^ <|> --x' in text, text


def test_floats_stay_in_their_section(tmp_path):
    """Tall figures that cannot all fit on the page of their heading are placed before the next
    section starts and before what follows the \\input, not after them; a heading that only
    names its figure is left to the figure's caption."""
    need_pdflatex()
    reason = pdftotext_reason()
    if reason:
        pytest.skip(reason)
    from PIL import Image

    Image.new("RGB", (40, 60), (30, 30, 200)).save(tmp_path / "tall.png")  # 1.5 x \linewidth high
    blocks = [Heading("Alpha section"), Text("alpha text")]
    for i in range(3):
        blocks += [figure_heading(f"gallery {i}"), Figure(tmp_path / "tall.png", f"alphafig{i}")]
    blocks += [Heading("Beta section"), Text("betatext"),
               Figure(tmp_path / "tall.png", "betafig")]
    (tmp_path / "floats.tex").write_text(render_latex(Document("Floats", {}, blocks)) +
                                         "\nafterinput\n")
    r, pdf = compile_input(tmp_path, "floats.tex")
    assert r.returncode == 0, log_errors(r)
    text = pdf_text(pdf)
    where = {w: text.find(w) for w in ("alphafig0", "alphafig1", "alphafig2", "Beta section",
                                       "betafig", "afterinput")}
    assert all(i >= 0 for i in where.values()), where
    assert max(where[f"alphafig{i}"] for i in range(3)) < where["Beta section"], where
    assert where["betafig"] < where["afterinput"], where
    assert "gallery 0" not in text  # the caption names the figure in LaTeX


def test_tiny_suite_report_compiles_to_a_non_blank_page(cli, write_suite, tmp_path):
    need_pdflatex()
    reason = rasterizer_reason()
    if reason:
        pytest.skip(reason)
    res, out = tmp_path / "results", tmp_path / "out"
    assert cli("run", write_suite(small_suite()), "--results", res)[0] == 0
    code, stdout, err = cli("report", res, "--out", out, "--format", "latex")
    assert code == 0, err
    tex = (out / "tiny.tex").read_text()
    assert not (out / "tiny.md").exists() and tex.isascii()
    assert r"\textbf{" in tex and r"\includegraphics[width=\linewidth]{tiny_g_rmse.png}" in tex
    r, pdf = compile_input(out, "tiny.tex")
    assert r.returncode == 0, log_errors(r)
    assert pdf.is_file() and pdf.stat().st_size > 0
    assert "Undefined control sequence" not in r.stdout
    assert "Overfull \\hbox" not in r.stdout, log_errors(r)  # nothing runs into the margin
    if not pdftotext_reason():  # the model's JSON parameters keep straight quotes (typewriter)
        text = " ".join(pdf_text(pdf).split())
        assert '{"cov": "full"' in text and "\u201d" not in text, text[:600]
    png = first_page_png(pdf, tmp_path / "tiny-page1.png")
    assert png.is_file() and not is_blank(png)
    print(f"page 1 of the tiny report: {png}")
