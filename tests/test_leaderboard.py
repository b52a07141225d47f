"""bench leaderboard: entries of two results folders ranked by one metric at one NFE, ties by
overlapping intervals, clear errors, and LaTeX that compiles."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import yaml

from bench.cli import main
from bench.report.leaderboard import parse_at, rank_rows
from conftest import small_suite
from support.latex import compile_input, log_errors, pdflatex_reason


@pytest.fixture(scope="module")
def two_results(tmp_path_factory):
    """Suite 'a' (ddim, euler) and suite 'b' (heun) at NFE 10 and 20, in two results folders
    (run once for the module; the tests only read them)."""
    tmp = tmp_path_factory.mktemp("leaderboard-runs")
    res_a, res_b = tmp / "res_a", tmp / "res_b"
    for name, samplers, res in (("a", ["ddim", "euler"], res_a), ("b", ["heun"], res_b)):
        suite = tmp / f"{name}.yaml"
        suite.write_text(yaml.safe_dump(small_suite(name=name, samplers=samplers)))
        assert main(["run", str(suite), "--results", str(res)]) == 0
    return res_a, res_b


def md_rows(path) -> list[list[str]]:
    lines = [line for line in path.read_text().splitlines() if line.startswith("| ")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]


def test_ranks_entries_of_two_results_folders_by_value(cli, two_results, tmp_path):
    res_a, res_b = two_results
    out = tmp_path / "lb"
    code, stdout, err = cli("leaderboard", res_a, res_b, "--metric", "rmse", "--at", "nfe=20",
                            "--out", out, "--format", "md,latex")
    assert code == 0, err
    md, tex = out / "leaderboard-rmse-nfe20.md", out / "leaderboard-rmse-nfe20.tex"
    assert md.is_file() and tex.is_file() and not (out / "leaderboard-rmse-nfe20.html").exists()
    assert str(md) in stdout and "| rank | suite | model | sampler | NFE | samples | value |" in stdout

    rows = pd.concat([pd.read_parquet(res_a), pd.read_parquet(res_b)])
    rows = rows[(rows["metric"] == "rmse") & (rows["nfe"] == 20)].sort_values("value")
    want = [(r["suite"], r["sampler"]) for _, r in rows.iterrows()]
    table = md_rows(md)
    assert [(r[1], r[3]) for r in table] == want  # lower rmse first, across both suites
    assert {r[1] for r in table} == {"a", "b"} and len(table) == 3
    ranks = [int(r[0]) for r in table]
    assert ranks[0] == 1 and ranks == sorted(ranks)
    assert table[0][6].startswith("**")  # the best value is bold
    assert {r[5] for r in table} == {"24"}  # every entry's sample count, all equal here
    assert "(counted 19)" in next(r[4] for r in table if r[3] == "heun")  # heun: 2 NFE per step
    text = md.read_text()
    assert "Leaderboard: rmse at NFE 20" in text and "leads rank group 1" in text
    assert "different numbers of samples" not in text
    assert r"\textbf{" in tex.read_text() and r"\label{tab:leaderboard-rmse-nfe20}" in tex.read_text()

    if pdflatex_reason() is None:  # compiles (installed with apt-get where it can be)
        r, pdf = compile_input(out, tex.name)
        assert r.returncode == 0, log_errors(r)
        assert pdf.is_file()


def rows(*entries) -> pd.DataFrame:
    return pd.DataFrame([{"suite": "s", "model": "m", "sampler": name, "nfe": 20,
                          "nfe_counted": 20, "value": v, "ci_low": lo, "ci_high": hi}
                         for name, v, lo, hi in entries])


def test_overlapping_intervals_share_the_leaders_rank():
    ranked = rank_rows(rows(
        ("c", 1.30, 1.20, 1.40),   # not overlapping a: leads rank 3
        ("a", 1.00, 0.90, 1.10),   # best: rank 1
        ("nan", math.nan, math.nan, math.nan),
        ("e", 1.45, 1.41, 1.60),   # overlaps d but not c (the leader): rank 5
        ("b", 1.05, 1.00, 1.10),   # overlaps a: rank 1
        ("d", 1.35, 1.25, 1.50),   # overlaps c: rank 3
        ("f", 1.45, math.nan, math.nan),  # no interval (a point) inside e's: rank 5
    ), higher_is_better=False)
    assert [(e.sampler, e.rank) for e in ranked] == [
        ("a", 1), ("b", 1), ("c", 3), ("d", 3), ("e", 5), ("f", 5), ("nan", None)]


def test_higher_is_better_ranks_the_largest_first():
    ranked = rank_rows(rows(("low", 0.50, 0.45, 0.55), ("high", 0.80, 0.75, 0.85),
                            ("near", 0.74, 0.70, 0.76), ("same", 0.50, 0.50, 0.50)),
                       higher_is_better=True)
    assert [(e.sampler, e.rank) for e in ranked] == [("high", 1), ("near", 1), ("low", 3),
                                                     ("same", 3)]


def test_parse_at():
    assert parse_at("nfe=20") == {"nfe": 20}
    assert parse_at(" nfe = 8 , step=0") == {"nfe": 8, "step": 0}


@pytest.mark.parametrize("args, names", [
    (["--metric", "nosuch", "--at", "nfe=20"], "--metric 'nosuch'"),
    (["--metric", "fid", "--at", "nfe=20"], "--metric 'fid': no rows"),
    (["--metric", "rmse", "--at", "nfe=30"], "--at nfe=30: no rmse rows at this NFE"),
    (["--metric", "rmse", "--at", "nfe=x"], "--at 'nfe=x'"),
    (["--metric", "rmse", "--at", "step=1"], "--at 'step=1': no nfe"),
    (["--metric", "rmse", "--at", "nfe=0"], "--at 'nfe=0'"),
    (["--metric", "rmse", "--at", "n=3"], "--at 'n=3'"),
    (["--metric", "rmse", "--at", "nfe=20", "--slice", "cats"], "--slice 'cats'"),
    (["--metric", "rmse", "--at", "nfe=20", "--format", "md,pdf"], "--format 'md,pdf'"),
])
def test_errors_name_the_argument(cli, two_results, tmp_path, args, names):
    res_a, _ = two_results
    out = tmp_path / "lb-err"
    fmt = [] if "--format" in args else ["--format", "md,latex"]
    code, stdout, err = cli("leaderboard", res_a, *args, "--out", out, *fmt)
    assert code == 2
    assert err.startswith("error: " + names), err
    assert len(err.strip().splitlines()) == 1  # one paragraph
    assert not out.exists() or not any(out.iterdir())


def test_missing_results_folder(cli, tmp_path):
    code, _, err = cli("leaderboard", tmp_path / "nope", "--metric", "rmse", "--at", "nfe=20",
                       "--out", tmp_path / "lb", "--format", "md")
    assert code == 2 and "RESULTS" in err and "does not exist" in err


def test_html_leaderboard(cli, two_results, tmp_path):
    res_a, res_b = two_results
    code, _, err = cli("leaderboard", res_a, res_b, "--metric", "rmse", "--at", "nfe=10",
                       "--out", tmp_path / "lb", "--ci", "pm")
    assert code == 0, err
    for suffix in ("md", "html", "tex"):
        assert (tmp_path / "lb" / f"leaderboard-rmse-nfe10.{suffix}").is_file()


def test_an_entry_with_two_rows_at_the_nfe_asks_for_eval_or_step():
    from bench.errors import BenchError
    from bench.report.leaderboard import select

    df = rows(("ddim", 1.0, 0.9, 1.1), ("ddim", 1.2, 1.1, 1.3)).assign(
        metric="rmse", slice="all", step=0, eval=["nfe_curve", "nfe_to_target"])
    with pytest.raises(BenchError, match=r"s/m/ddim has 2 rmse rows .*--eval NAME"):
        select(df, "rmse", {"nfe": 20}, "all")
    assert len(select(df, "rmse", {"nfe": 20}, "all", "nfe_curve")) == 1
    with pytest.raises(BenchError, match=r"^--eval 'fid'"):
        select(df, "rmse", {"nfe": 20}, "all", "fid")


def test_sample_counts_are_shown_said_when_they_differ_and_can_be_chosen():
    from bench.errors import BenchError
    from bench.report.leaderboard import leaderboard_document, select

    df = rows(("ddim", 1.0, 0.9, 1.1), ("ddim", 0.8, 0.75, 0.85), ("heun", 1.1, 1.0, 1.2)).assign(
        metric="fid", slice="all", step=0, eval="fidelity", n_samples=[1000, 10000, 1000],
        suite=["s", "s10k", "s"])
    sel = select(df, "fid", {"nfe": 20}, "all")
    entries = rank_rows(sel, higher_is_better=False)
    assert [(e.suite, e.sampler, e.samples) for e in entries] == [
        ("s10k", "ddim", 10000), ("s", "ddim", 1000), ("s", "heun", 1000)]
    doc = leaderboard_document(entries, "fid", {"nfe": 20}, "all", ["r"], sel)
    table = doc.blocks[-1]
    assert table.columns[5] == "samples" and [r[5] for r in table.rows] == ["10000", "1000", "1000"]
    assert "different numbers of samples (1,000, 10,000)" in doc.blocks[0].text

    only = select(df, "fid", {"nfe": 20}, "all", samples=1000)
    assert sorted(only["sampler"]) == ["ddim", "heun"] and set(only["n_samples"]) == {1000}
    one = rank_rows(only, higher_is_better=False)
    doc1 = leaderboard_document(one, "fid", {"nfe": 20}, "all", ["r"], only)
    assert "different numbers of samples" not in doc1.blocks[0].text
    with pytest.raises(BenchError, match=r"^--samples 500: .*counts are: 1000, 10000"):
        select(df, "fid", {"nfe": 20}, "all", samples=500)


def test_samples_option_on_the_command_line(cli, two_results, tmp_path):
    res_a, res_b = two_results
    out = tmp_path / "lb-n"
    code, stdout, err = cli("leaderboard", res_a, res_b, "--metric", "rmse", "--at", "nfe=20",
                            "--samples", "24", "--out", out, "--format", "md")
    assert code == 0, err
    assert len(md_rows(out / "leaderboard-rmse-nfe20.md")) == 3
    code, _, err = cli("leaderboard", res_a, "--metric", "rmse", "--at", "nfe=20",
                       "--samples", "25", "--out", out / "none", "--format", "md")
    assert code == 2 and err.startswith("error: --samples 25: no rmse rows") and "24" in err
    assert not (out / "none").exists() or not any((out / "none").iterdir())
    code, _, err = cli("leaderboard", res_a, "--metric", "rmse", "--at", "nfe=20",
                       "--samples", "0", "--out", out / "zero", "--format", "md")
    assert code == 2 and err.startswith("error: --samples 0:")
