"""A suite rerun with other settings: the report shows each cell's newest row, not a stale one."""

from __future__ import annotations

import pandas as pd

from bench.report import load_results
from bench.report.tables import fmt
from conftest import small_suite


def test_report_shows_newest_row_of_each_cell_and_says_what_it_left_out(cli, write_suite, tmp_path):
    res = tmp_path / "results"
    one = dict(samplers=["ddim"], nfe=[10])
    assert cli("run", write_suite(small_suite(samples=16, **one), name="a.yaml"), "--results", res)[0] == 0
    assert cli("run", write_suite(small_suite(samples=24, **one), name="b.yaml"), "--results", res)[0] == 0

    raw = pd.read_parquet(res)
    assert sorted(raw["n_samples"]) == [16, 24]  # both runs' rows are on disk
    newest = raw[raw["n_samples"] == 24].iloc[0]
    stale = raw[raw["n_samples"] == 16].iloc[0]
    assert fmt(newest["value"]) != fmt(stale["value"])

    df = load_results(res, "tiny")
    assert list(df["n_samples"]) == [24] and df.attrs["superseded"] == {"tiny": 1}

    assert cli("report", res, "--suite", "tiny", "--out", tmp_path / "rep")[0] == 0
    md = (tmp_path / "rep" / "tiny.md").read_text()
    assert fmt(newest["value"]) in md and fmt(stale["value"]) not in md
    assert "1 older row(s) of the same cells" in md and "24 samples per cell" in md
