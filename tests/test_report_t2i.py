"""The text-to-image views of a fidelity report (``bench.report.t2i``): the FID-vs-CLIPScore
curve through the guidance scales, the table of guidance scales with per-column best marks, the
per-category and per-prompt tables, and prompt galleries labelled by prompt; and reports without
CLIPScore unchanged.

The results are fake: rows written through the store (``ResultStore.write_rows``: the row schema,
digests, per-sample tables) and gallery files, shaped as ``suites/fmnist-t2i.yaml`` writes them
(a model swept over ``guidance.scale``, labels ``fmnist-t2i[guidance.scale=W]``), with values
chosen so the best of each column is known."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.report.blocks import Table, Value, better_words, mark_best
from bench.report.t2i import EDGE, base_params, guidance_scale

SUITE = "t2i-fake"
SCALES = [1, 2, 4, 7.5]
SAMPLERS = ["ddim", "euler"]
NFES = [10, 25]
CATEGORIES = ["class", "size", "composite"]
#: clipscore (higher is better) per scale: best at 4; 7.5's interval overlaps it (a tie)
CLIP = {1: 20.0, 2: 24.0, 4: 27.0, 7.5: 26.6, None: 18.0}  # None: a model without guidance
#: fid (lower is better) per scale: best at 2
FID = {1: 40.0, 2: 30.0, 4: 35.0, 7.5: 50.0, None: 45.0}
KID = {1: 0.030, 2: 0.020, 4: 0.025, 7.5: 0.040, None: 0.035}


def prompts(n: int) -> pd.DataFrame:
    """n prompts in len(CATEGORIES) categories of equal size, in category order."""
    per = n // len(CATEGORIES)
    rows = [{"id": f"p{i:03d}", "category": CATEGORIES[i // per],
             "text": f"a {CATEGORIES[i // per]} prompt number {i} & 5% more"} for i in range(n)]
    return pd.DataFrame(rows)


def cell_values(sampler: str, nfe: int, scale: float) -> dict[str, tuple[float, float]]:
    """metric -> (value, half-width); the other cells are worse than ddim at NFE 25."""
    off = (0 if sampler == "ddim" else 1.0) + (0 if nfe == 25 else 2.0)
    return {"clipscore": (CLIP[scale] - off, 0.3), "fid": (FID[scale] + 3 * off, 2.0),
            "kid": (KID[scale] + 0.001 * off, 0.002)}


def row(model: str, params: dict, sampler: str, nfe: int, metric: str, value: float, half: float,
        slice_: str = "all", n: int = 60, key: str = "") -> dict:
    return {"suite": SUITE, "model": model, "sampler": sampler, "nfe": nfe, "eval": "fidelity",
            "slice": slice_, "step": 0, "metric": metric, "value": value,
            "ci_low": value - half, "ci_high": value + half, "n_samples": n, "n_nonfinite": 0,
            "model_name": "fmnist-t2i", "model_params": json.dumps(params, sort_keys=True),
            "sampler_name": sampler, "sampler_params": "{}", "grid": "{}", "steps": nfe,
            "nfe_counted": nfe, "network_calls": nfe, "eval_params": "{}",
            "conditions": "fake prompts", "seed": 0, "shards": 1, "wall_s": 2.0,
            "sample_s": 1.5, "model_s": 1.0, "load_s": 0.1, "metric_s": 0.4,
            "samples_per_s": n / 2.0, "run_id": "20250101-000000-abcdef", "config_hash": key,
            "code_hash": "c0de", "created_at": "2025-01-01T00:00:00+00:00", "device": "cpu"}


def write_fake(results: Path, n_prompts: int = 15, metrics=("clipscore", "fid", "kid"),
               models: list[tuple[str, dict]] | None = None, gallery: bool = True) -> pd.DataFrame:
    """Write the fake suite's rows, per-sample tables and galleries; return the prompts."""
    from bench.evals.gallery import gallery_dir
    from bench.integrity import save_npz
    from bench.store import ResultStore

    store = ResultStore(results)
    pr = prompts(n_prompts)
    if models is None:
        models = [(f"fmnist-t2i[guidance.scale={s:g}]", {"guidance": {"scale": s}}) for s in SCALES]
    rng = np.random.default_rng(0)
    for label, params in models:
        scale = guidance_scale(json.dumps(params))
        for sampler in SAMPLERS:
            for nfe in NFES:
                key = hashlib.sha256(f"{label}/{sampler}/{nfe}".encode()).hexdigest()[:20]
                vals = cell_values(sampler, nfe, scale)
                rows = [row(label, params, sampler, nfe, m, *vals[m], key=key) for m in metrics]
                if "clipscore" in metrics:
                    base = vals["clipscore"][0]
                    for i, p in pr.iterrows():  # prompt i scores base + (i - mid) / 4: p000 lowest
                        v = base + (i - (len(pr) - 1) / 2) / 4 + 0.2 * (scale or 0) * (p["category"] == "size")
                        rows.append(row(label, params, sampler, nfe, "clipscore", v, 1.5,
                                        f"prompt={p['id']}", 1, key))
                    for j, c in enumerate(CATEGORIES):  # 'size' gains most from guidance
                        v = base - j + (2 * (scale or 0) if c == "size" else 0)
                        rows.append(row(label, params, sampler, nfe, "clipscore", v, 0.8,
                                        f"category={c}", n_prompts // len(CATEGORIES), key))
                samples = pd.DataFrame({
                    "suite": SUITE, "model": label, "sampler": sampler, "nfe": nfe,
                    "eval": "fidelity", "config_hash": key, "run_id": "20250101-000000-abcdef",
                    "index": np.arange(n_prompts, dtype=np.int64), "seed": 0, "finite": True,
                    "cond_id": pr["id"], "cond_text": pr["text"], "category": pr["category"]})
                store.write_rows(SUITE, key, rows, samples)
                if gallery:
                    folder = gallery_dir(results, SUITE, label, sampler, nfe)
                    folder.mkdir(parents=True, exist_ok=True)
                    images = np.zeros((n_prompts, 1, 28, 28), np.uint8)
                    for i in range(n_prompts):  # a bright square whose size follows the prompt
                        s = 4 + i % 10 * 2
                        images[i, 0, 14 - s // 2:14 + s // 2, 14 - s // 2:14 + s // 2] = 200
                        images[i, 0] += rng.integers(0, 30, (28, 28), dtype=np.uint8)
                    names = {str(i): t for i, t in enumerate(pr["text"])}
                    save_npz(folder / "00000000.npz", {
                        "images": images, "idx": np.arange(n_prompts, dtype=np.int64),
                        "cond": np.arange(n_prompts, dtype=np.int64),
                        "names": np.array(json.dumps(names))})
    return pr


def document(results: Path, out: Path):
    from bench.registry import load_all
    from bench.report import _slug, load_results, suite_document
    from bench.report.sections import ReportContext

    load_all()
    out.mkdir(parents=True, exist_ok=True)
    sdf = load_results(results, SUITE)
    return suite_document(sdf, ReportContext(results, out, SUITE, 0, _slug))


def tables(doc) -> dict[str, Table]:
    return {b.key: b for b in doc.blocks if isinstance(b, Table)}


def by_first(t: Table) -> dict[str, list]:
    return {str(r[0]): r for r in t.rows}


@pytest.fixture
def fake(tmp_path):
    results = tmp_path / "results"
    pr = write_fake(results)
    return results, pr


# ---------------------------------------------------------------------------------- units
def test_guidance_scale_comes_from_model_params_not_the_label():
    assert guidance_scale('{"guidance": {"scale": 7.5}}') == 7.5
    assert guidance_scale('{"guidance": {"batched": true, "scale": 2}}') == 2.0
    assert guidance_scale('{"block": 16}') is None and guidance_scale("not json") is None
    assert guidance_scale('{"guidance": {"scale": true}}') is None
    assert base_params('{"guidance": {"scale": 2}, "block": 16}') == '{"block": 16}'
    assert base_params('{"guidance": {"batched": false, "scale": 2}}') == \
        '{"guidance": {"batched": false}}'


def test_mixed_direction_table_marks_each_column_by_its_own_direction():
    t = mark_best(Table(["w", "clipscore", "fid"], [
        ["1", Value(20.0, 19.9, 20.1), Value(30.0, 29.0, 31.0)],
        ["2", Value(25.0, 24.9, 25.1), Value(40.0, 39.0, 41.0)]],
        directions=[None, True, False]))
    assert [r[1].mark for r in t.rows] == ["", "best"]   # higher clipscore
    assert [r[2].mark for r in t.rows] == ["best", ""]   # lower fid
    assert better_words(t) == "higher is better for clipscore; lower is better for fid"
    assert better_words(Table(["a", "b"], [], higher_is_better=False)) == "lower is better"
    assert better_words(Table(["a", "b", "c"], [], directions=[None, True, True])) == \
        "higher is better"
    assert better_words(Table(["a", "b"], [])) == ""


# ------------------------------------------------------------------------------- sections
def test_guidance_table_marks_max_clipscore_and_min_fid(fake, tmp_path):
    results, _ = fake
    doc = document(results, tmp_path / "out")
    ts = tables(doc)
    for sampler in SAMPLERS:
        for nfe in NFES:
            t = ts[f"fmnist-t2i-{sampler}-nfe{nfe}-guidance"]
            assert t.columns == ["guidance scale", "clipscore", "fid", "kid"]
            rows = by_first(t)
            assert list(rows) == ["1", "2", "4", "7.5"]  # in scale order, read from model_params
            assert rows["4"][1].mark == "best" and rows["7.5"][1].mark == "tie"
            assert rows["1"][1].mark == rows["2"][1].mark == ""
            assert rows["2"][2].mark == "best" and rows["2"][3].mark == "best"
            assert all(rows[s][2].mark == "" for s in ("1", "4", "7.5"))  # intervals apart
            assert rows["4"][1].value == pytest.approx(cell_values(sampler, nfe, 4)["clipscore"][0])


def test_report_files_figure_and_marks_in_every_format(fake, tmp_path, cli):
    results, _ = fake
    out = tmp_path / "rep"
    code, stdout, err = cli("report", results, "--out", out)
    assert code == 0, err
    png = out / f"{SUITE}_fmnist-t2i_clipscore_fid.png"
    assert png.is_file() and str(png) in stdout
    from PIL import Image

    with Image.open(png) as im:
        lo, hi = im.convert("L").getextrema()
        assert im.size[0] > 800 and hi - lo > 100  # drawn, not blank
    md = (out / f"{SUITE}.md").read_text()
    assert "![fid against clipscore" in md and f"({png.name})" in md
    assert "## fmnist-t2i — guidance: clipscore and fid" in md
    assert "higher is better for clipscore; lower is better for fid, kid" in md
    ddim25 = md.split("\n`ddim`, NFE 25:\n")[1].split("NFE 10:")[0]
    line = lambda w: next(l for l in ddim25.splitlines() if l.startswith(f"| {w} |"))  # noqa: E731
    assert line("4").split("|")[2].strip().startswith("**27.0")       # max clipscore bold
    assert line("7.5").split("|")[2].strip().startswith("_26.6")      # overlapping: italic
    assert line("2").split("|")[3].strip().startswith("**30.0")       # min fid bold
    html = (out / f"{SUITE}.html").read_text()
    assert html.count("data:image/png;base64,") >= 1 + 4  # the curve + per-model plots inline
    assert "<strong>27.0 [26.7, 27.3]</strong>" in html and "<strong>30.0 [28.0, 32.0]</strong>" in html
    tex = (out / f"{SUITE}.tex").read_text()
    assert rf"\includegraphics[width=\linewidth]{{{png.name}}}" in tex
    assert r"\textbf{27.0 [26.7, 27.3]}" in tex and r"\underline{26.6 [26.3, 26.9]}" in tex


def test_per_category_and_per_prompt_tables(fake, tmp_path, cli):
    results, pr = fake
    doc = document(results, tmp_path / "out")
    ts = tables(doc)
    cat = ts["fmnist-t2i-clipscore-categories"]
    assert cat.columns == ["guidance scale", "all prompts", *CATEGORIES]  # file order
    rows = by_first(cat)
    assert list(rows) == ["1", "2", "4", "7.5"]
    assert rows["7.5"][3].mark == "best"  # 'size' gains most from guidance: best at 7.5
    assert rows["4"][1].mark == "best"    # the aggregate: best at 4
    # the chosen cell: highest NFE, best sampler (ddim), named in the caption
    assert "`ddim` at NFE 25" in cat.caption
    assert rows["1"][2].value == pytest.approx(CLIP[1] - 0)  # category 'class' = base - 0

    full, edges = ts["fmnist-t2i-clipscore-prompts"], ts["fmnist-t2i-clipscore-prompts-edges"]
    assert full.formats == ("html",) and edges.formats == ("md", "latex")
    assert full.columns == ["prompt", "text", "category", "guidance 1", "guidance 2",
                            "guidance 4", "guidance 7.5", "best guidance"]
    assert [r[0] for r in full.rows] == list(pr["id"])
    assert full.rows[0][1] == pr["text"][0] and full.rows[0][2] == "class"
    assert len(edges.rows) == 2 * EDGE + 1 and edges.rows[EDGE][0] == "…"
    last = pr["id"].iloc[-1]
    assert edges.rows[0][0] == last and edges.rows[-1][0] == "p000"  # highest first
    assert {r[-1] for r in full.rows} == {"4", "7.5"}  # best guidance per prompt

    out = tmp_path / "rep"
    assert cli("report", results, "--out", out)[0] == 0
    html, md = (out / f"{SUITE}.html").read_text(), (out / f"{SUITE}.md").read_text()
    tex = (out / f"{SUITE}.tex").read_text()
    for pid in pr["id"]:  # every prompt in the HTML page, only the edges in md and LaTeX
        assert f"<td>{pid}</td>" in html
    assert sum(f"| {pid} |" in md for pid in pr["id"]) == 2 * EDGE
    assert "size" in md and "composite" in md and "all prompts" in md
    assert "the HTML report lists all of them" in md and "lists all of them" not in html
    assert r"\& 5\% more" in tex  # prompt text escaped


def test_prompt_gallery_is_a_captioned_grid_by_category(fake, tmp_path, cli):
    results, pr = fake
    out = tmp_path / "rep"
    assert cli("report", results, "--out", out, "--format", "md")[0] == 0
    md = (out / f"{SUITE}.md").read_text()
    assert "each image captioned with its condition's id" in md
    png = out / f"{SUITE}_gallery_fmnist-t2i-guidance.scale=2__ddim__nfe10.png"
    assert png.is_file()
    from PIL import Image

    with Image.open(png) as im:
        w, h = im.size
    assert w > h  # 3 category rows x 5 prompts, not 15 rows of one image


def test_few_conditions_keep_one_row_per_condition(tmp_path):
    from bench.report.galleries import ROWS_MAX, render_galleries

    results = tmp_path / "results"
    write_fake(results, n_prompts=6, models=[("m", {"guidance": {"scale": 2}})])
    out = tmp_path / "o"
    out.mkdir()
    got = render_galleries(results, SUITE, out, lambda s: re.sub(r"[^A-Za-z0-9_.=-]+", "-", s))
    assert got and not any(grid for _, _, grid in got) and 6 <= ROWS_MAX


def test_unswept_entries_with_different_guidance_group_by_params(tmp_path):
    """Entries written one by one (labels that say nothing about guidance) form one base; their
    scales come from model_params; an entry without guidance is 'none'."""
    results = tmp_path / "results"
    models = [("low", {"guidance": {"scale": 4}}), ("high", {"guidance": {"scale": 1}}),
              ("plain", {})]
    write_fake(results, models=models, gallery=False)
    doc = document(results, tmp_path / "out")
    t = tables(doc)["fmnist-t2i-ddim-nfe25-guidance"]
    assert [r[0] for r in t.rows] == ["none", "1", "4"]
    assert by_first(t)["4"][1].mark == "best" and by_first(t)["none"][1].mark == ""
    assert "`guidance.scale`; none: no guidance): none, 1, 4." in "\n".join(
        b.text for b in doc.blocks if type(b).__name__ == "Text")


def test_no_fid_no_curve_and_no_clipscore_no_t2i_sections(tmp_path):
    results = tmp_path / "a"
    write_fake(results, metrics=("clipscore",), gallery=False)
    doc = document(results, tmp_path / "oa")
    assert not list((tmp_path / "oa").glob("*_clipscore_fid.png"))
    assert "fmnist-t2i-clipscore-categories" in tables(doc)  # the per-prompt views stay

    results = tmp_path / "b"
    write_fake(results, metrics=("fid", "kid"), gallery=False)
    doc = document(results, tmp_path / "ob")
    assert not any("guidance" in k or "prompts" in k for k in tables(doc))
    assert not list((tmp_path / "ob").glob("*_clipscore_fid.png"))
    heads = [b.text for b in doc.blocks if hasattr(b, "level")]  # as before: per (model, metric)
    assert heads and all(" — fid" in h or " — kid" in h for h in heads)


def test_latex_report_compiles(fake, tmp_path, cli):
    from support.latex import compile_input, log_errors, pdflatex_reason

    reason = pdflatex_reason()
    if reason:
        pytest.skip(reason)
    results, _ = fake
    out = tmp_path / "rep"
    assert cli("report", results, "--out", out, "--format", "latex")[0] == 0
    r, pdf = compile_input(out, f"{SUITE}.tex")
    assert r.returncode == 0, log_errors(r)
    assert pdf.is_file()


def test_members_sharing_a_scale_are_told_apart():
    from bench.report.t2i import member_names

    members = pd.DataFrame({"model": ["a", "b", "c"], "_scale": [2.0, 2.0, float("nan")]})
    assert member_names(members) == {"a": "2 (a)", "b": "2 (b)", "c": "none"}


def test_prompt_gallery_without_per_sample_tables_uses_the_gallery_names(fake, tmp_path):
    import shutil

    from bench.report.galleries import render_galleries

    results, _ = fake
    shutil.rmtree(results / "_samples")
    out = tmp_path / "o"
    out.mkdir()
    got = render_galleries(results, SUITE, out, lambda s: re.sub(r"[^A-Za-z0-9_.=-]+", "-", s))
    assert got and all(grid and png.is_file() for _, png, grid in got)


def test_gallery_patterns_select_cells_and_galleries_are_grayscale(fake, tmp_path):
    from PIL import Image

    from bench.report.galleries import render_galleries

    results, _ = fake
    slug = lambda s: re.sub(r"[^A-Za-z0-9_.=-]+", "-", s)  # noqa: E731
    out = tmp_path / "o"
    out.mkdir()
    every = render_galleries(results, SUITE, out, slug)
    some = render_galleries(results, SUITE, out, slug, ["*guidance.scale=2/*"])
    assert len(every) > len(some) >= 1
    assert all("guidance.scale=2 /" in name for name, _, _ in some)
    assert render_galleries(results, SUITE, out, slug, ["*/no-such-sampler/*"]) == []
    with Image.open(some[0][1]) as im:
        assert im.mode == "L"  # no colour in a gallery: 8-bit grayscale, not RGBA
