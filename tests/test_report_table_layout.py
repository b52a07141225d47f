"""``bench report --table ROW,COL``: a metric's value tables laid out by any two of model,
sampler, NFE and slice, one table per value of the other axes, the best of each column marked
by the metric's direction; bad layouts refused before anything is written.

The rows are fake (two models, two samplers, two NFEs, two class slices), written through the
store with the row schema, so every table cell's value is known."""

from __future__ import annotations

import pytest
import yaml

from bench.report.blocks import Heading, Table, Value
from conftest import small_suite
from support.latex import compile_input, log_errors, pdflatex_reason
from test_report_t2i import SUITE, row

MODELS = ("m-a", "m-b")
SAMPLERS = ("ddim", "heun")
NFES = (10, 20)


def value(model: str, sampler: str, nfe: int, metric: str, slice_: str = "all") -> float:
    """Distinct, known values: m-b is better at FID for ddim only, heun at NFE 20 only."""
    base = {"fid": 50.0, "precision": 0.5}[metric]
    step = {"fid": -1.0, "precision": 0.01}[metric]
    v = base + step * (MODELS.index(model) * (1 if sampler == "ddim" else -1)
                       + 3 * (nfe == 20) * (1 if sampler == "heun" else -1))
    return v + (0.0 if slice_ == "all" else step * (1 + int(slice_[-1])))


def write_fake(results):
    from bench.store import ResultStore

    store = ResultStore(results)
    for m in MODELS:
        for s in SAMPLERS:
            for n in NFES:
                key = f"{m}-{s}-{n}"
                rows = [row(m, {}, s, n, metric, value(m, s, n, metric, sl), 0.1, slice_=sl, key=key)
                        for metric in ("fid", "precision")
                        for sl in ("all", "class 0", "class 1")]
                store.write_rows(SUITE, key, rows)


def document(results, out, table):
    from bench.registry import load_all
    from bench.report import _slug, load_results, suite_document
    from bench.report.sections import ReportContext, parse_table

    load_all()
    out.mkdir(parents=True, exist_ok=True)
    return suite_document(load_results(results, SUITE),
                          ReportContext(results, out, SUITE, 0, _slug, table=parse_table(table)))


def all_tables(doc) -> list[Table]:
    return [b for b in doc.blocks if isinstance(b, Table)]


def cell(t: Table, first: str, column: str) -> Value:
    r = next(r for r in t.rows if r[0] == first)
    return r[t.columns.index(column)]


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    results = tmp_path_factory.mktemp("layout") / "results"
    write_fake(results)
    return results


def test_sampler_by_model_one_table_per_nfe(fake, tmp_path):
    doc = document(fake, tmp_path / "out", "sampler,model")
    heads = [b.text for b in doc.blocks if isinstance(b, Heading)]
    fid = heads.index("fid: sampler × model")
    assert heads[fid + 1:fid + 3] == ["NFE 10", "NFE 20"]  # each table says which NFE it holds
    from bench.report.render_latex import render_latex
    from bench.report.render_md import render_md

    assert "### NFE 10" in render_md(doc)  # Markdown shows no captions: a heading says it
    tex = render_latex(doc)  # LaTeX floats tables away from headings: the caption says it
    assert "{NFE 10}" not in tex and "NFE 10. fid (lower is better)" in tex
    for metric, hib in (("fid", False), ("precision", True)):
        chosen = [t for t in all_tables(doc) if t.key.startswith(f"{metric}-sampler-model-")]
        assert [t.caption.split(".")[0] for t in chosen] == ["NFE 10", "NFE 20"]
        for t, n in zip(chosen, NFES):
            assert t.columns == ["sampler", *MODELS] and [r[0] for r in t.rows] == list(SAMPLERS)
            for s in SAMPLERS:
                for m in MODELS:
                    assert cell(t, s, m).value == pytest.approx(value(m, s, n, metric))
            for m in MODELS:  # the best of each column by the metric's direction
                col = {s: cell(t, s, m) for s in SAMPLERS}
                best = (max if hib else min)(col, key=lambda s: col[s].value)
                assert col[best].mark == "best"
                assert all(col[s].mark != "best" for s in SAMPLERS if s != best)
    # the per-model sections keep their sampler x NFE tables
    fid_a = next(t for t in all_tables(doc) if t.key == "fid" and
                 cell(t, "ddim", "NFE 10").value == value("m-a", "ddim", 10, "fid"))
    assert fid_a.columns == ["sampler", "NFE 10", "NFE 20"]


def test_transposed_layout_stays_per_model(fake, tmp_path):
    doc = document(fake, tmp_path / "out", "nfe,sampler")
    fid = [t for t in all_tables(doc) if t.key == "fid"]
    assert len(fid) == 2 and not any("-nfe-sampler-" in t.key for t in all_tables(doc))
    for t, m in zip(fid, MODELS):
        assert t.columns == ["NFE", *SAMPLERS] and [r[0] for r in t.rows] == ["10", "20"]
        assert cell(t, "20", "heun").value == pytest.approx(value(m, "heun", 20, "fid"))


def test_slices_as_columns(fake, tmp_path):
    doc = document(fake, tmp_path / "out", "sampler,slice")
    chosen = [t for t in all_tables(doc) if t.key.startswith("precision-sampler-slice-")]
    assert [t.caption.split(".")[0] for t in chosen] == [
        f"model {m}, NFE {n}" for m in MODELS for n in NFES]
    t = chosen[3]  # m-b, NFE 20
    assert t.columns == ["sampler", "all", "class 0", "class 1"]
    assert cell(t, "heun", "class 1").value == pytest.approx(value("m-b", "heun", 20, "precision",
                                                                    "class 1"))


@pytest.mark.parametrize("spec", ["sampler", "sampler,sampler", "sampler,guidance", "a,b,c", ""])
def test_bad_layouts_are_refused_before_writing(cli, fake, tmp_path, spec):
    out = tmp_path / "out"
    code, _, err = cli("report", fake, "--suite", SUITE, "--out", out, "--table", spec)
    assert code == 2 and err.startswith(f"error: --table {spec!r}"), err
    assert "model, sampler, nfe, slice" in err and not out.exists()


def test_cli_layout_in_all_formats_and_latex_compiles(cli, write_suite, tmp_path):
    suite = write_suite(small_suite(samplers=["ddim", "heun"]))
    res, out = tmp_path / "res", tmp_path / "rep"
    assert cli("run", suite, "--results", res)[0] == 0
    code, _, err = cli("report", res, "--out", out, "--table", "nfe,sampler")
    assert code == 0, err
    md = (out / "tiny.md").read_text()
    assert "| NFE | ddim | heun |" in md and "| sampler | NFE 10 | NFE 20 |" not in md
    assert "<th" in (out / "tiny.html").read_text()
    tex = (out / "tiny.tex").read_text()
    assert r"NFE & ddim & heun \\" in tex
    if pdflatex_reason() is None:
        r, pdf = compile_input(out, "tiny.tex")
        assert r.returncode == 0, log_errors(r)


def test_the_suite_can_choose_its_layout(cli, write_suite, tmp_path):
    suite = write_suite(small_suite(samplers=["ddim", "heun"], report={"table": ["nfe", "sampler"]}))
    res = tmp_path / "res"
    assert cli("run", suite, "--results", res)[0] == 0
    code, _, err = cli("report", res, "--out", tmp_path / "own", "--format", "md")
    assert code == 0, err
    assert "| NFE | ddim | heun |" in (tmp_path / "own" / "tiny.md").read_text()
    code, _, err = cli("report", res, "--out", tmp_path / "over", "--format", "md",
                       "--table", "sampler,nfe")  # the option overrides the suite's choice
    assert code == 0, err
    assert "| sampler | NFE 10 | NFE 20 |" in (tmp_path / "over" / "tiny.md").read_text()


@pytest.mark.parametrize("bad", [["nfe"], ["nfe", "nfe"], ["nfe", "guidance"], "sampler,nfe"])
def test_a_bad_suite_layout_is_a_plan_error(cli, write_suite, tmp_path, bad):
    suite = write_suite(small_suite(report={"table": bad}))
    code, _, err = cli("plan", suite)
    assert code == 2 and "report.table" in err and "model, sampler, nfe, slice" in err, err
