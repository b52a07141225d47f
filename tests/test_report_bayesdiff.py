"""The uncertainty-filtering view of a fidelity report (``bench.report.bayesdiff``) and the
lowest / highest samples by a per-sample extra (``extremes:``): one table of the filter's rows
per model with the rule from the eval's parameters, a difference marked only when its band
excludes 0 in the better direction, the filter's rows left out of the per-metric tables, and the
extremes figure drawn from the per-batch files.

The rows are fake, written through the store with the row schema, as ``suites/fmnist-bayesdiff``
writes them; the values are chosen so which difference is marked is known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_report_t2i import document, row, tables

SUITE = "t2i-fake"  # the helpers of test_report_t2i write and read this suite
MODEL = "fmnist-cond-laplace"
EVAL_PARAMS = json.dumps({"metrics": [{"name": "fid", "params": {}}, {
    "name": "uncertainty_filter", "params": {"keep": 0.8}}]})
#: per sampler: metric -> (value, lo, hi). ddim: the filter lowers FID beyond the random spread
#: and raises precision; dpm: every band contains 0 (no mark), recall worse (no mark either)
VALUES = {
    "bayesdiff_ddim": {"fid": (60.0, 58.0, 62.0), "filter_fid_kept": (57.0, 57.0, 57.0),
                       "filter_fid_random": (59.5, 58.8, 60.1),
                       "filter_fid_diff": (-2.5, -3.1, -1.8),
                       "filter_precision_diff": (0.02, 0.01, 0.03),
                       "filter_recall_diff": (-0.01, -0.03, 0.01), "filter_kept": (80, 80, 80),
                       "spearman_uncertainty_knn": (0.3, 0.24, 0.36)},
    "bayesdiff_dpm_solver_2": {"fid": (64.0, 62.0, 66.0), "filter_fid_kept": (64.2, 64.2, 64.2),
                               "filter_fid_random": (64.0, 63.5, 64.6),
                               "filter_fid_diff": (0.2, -0.4, 0.7),
                               "filter_precision_diff": (0.0, -0.01, 0.01),
                               "filter_recall_diff": (-0.03, -0.05, -0.01),
                               "filter_kept": (80, 80, 80),
                               "spearman_uncertainty_knn": (0.05, -0.02, 0.12)},
}


def write_fake(results):
    from bench.evals.gallery import EXTREMES_DIR, gallery_dir
    from bench.integrity import save_npz
    from bench.store import ResultStore

    store = ResultStore(results)
    for sampler, vals in VALUES.items():
        key = f"{sampler}-key"
        rows = []
        for metric, (v, lo, hi) in vals.items():
            r = row(MODEL, {}, sampler, 50, metric, v, 0.0, n=100, key=key)
            rows.append({**r, "ci_low": lo, "ci_high": hi, "eval_params": EVAL_PARAMS})
        store.write_rows(SUITE, key, rows)
        folder = gallery_dir(results, SUITE, MODEL, sampler, 50, EXTREMES_DIR)
        folder.mkdir(parents=True, exist_ok=True)
        for b in range(2):  # two batches of 4: each kept its lowest and highest 2 of 10
            idx = np.array([0, 1, 8, 9], np.int64) + 10 * b
            images = np.zeros((4, 1, 28, 28), np.uint8)
            images[:, 0, 10:18, 10:18] = 60 * (idx % 4 + 1)[:, None, None]
            save_npz(folder / f"{10 * b:08d}.npz", {
                "images": images, "idx": idx, "value": (idx * 1.5 + 1).astype(np.float64),
                "cond": idx % 10, "by": np.array("uncertainty"),
                "names": np.array(json.dumps({str(i): f"class {i}" for i in range(10)}))})


@pytest.fixture
def fake(tmp_path):
    results = tmp_path / "results"
    write_fake(results)
    return results


def test_filter_table_rule_marks_and_no_per_metric_tables(fake, tmp_path):
    from bench.report.bayesdiff import filter_metrics

    doc = document(fake, tmp_path / "out")
    t = tables(doc)
    table = t[f"{MODEL}-filter"]
    rows = {r[0]: r for r in table.rows}
    assert set(rows) == set(VALUES)
    col = {c: i for i, c in enumerate(table.columns)}
    ddim, dpm = rows["bayesdiff_ddim"], rows["bayesdiff_dpm_solver_2"]
    assert ddim[col["rule"]] == "keep lowest 80%" and ddim[col["kept"]] == "80 / 100"
    assert ddim[col["FID (all)"]].value == 60.0 and dpm[col["FID kept"]].value == 64.2
    assert ddim[col["ΔFID"]].mark == "best" and ddim[col["Δprecision"]].mark == "best"
    assert ddim[col["Δrecall"]].mark == "" and dpm[col["Δrecall"]].mark == ""  # worse: no mark
    assert all(dpm[col[c]].mark == "" for c in ("ΔFID", "Δprecision"))
    assert ddim[col["ρ(uncertainty, k-NN dist.)"]].lo == 0.24
    assert "fid" in t and not set(t) & set(filter_metrics())  # FID keeps its own table


def test_extremes_are_the_lowest_and_highest_over_all_batches(fake, tmp_path, cli):
    from bench.evals.gallery import EXTREMES_DIR, gallery_dir
    from bench.report.galleries import load_extremes

    ext = load_extremes(gallery_dir(fake, SUITE, MODEL, "bayesdiff_ddim", 50, EXTREMES_DIR))
    assert ext["low"][1].tolist() == [0, 1] and ext["high"][1].tolist() == [19, 18]
    assert ext["low"][2].tolist() == [1.0, 2.5] and ext["high"][3].tolist() == [9, 8]
    assert load_extremes(gallery_dir(fake, SUITE, MODEL, "x", 50, EXTREMES_DIR)) is None
    out = tmp_path / "rep"
    code, stdout, err = cli("report", fake, "--out", out, "--format", "md")
    assert code == 0, stdout + err
    md = next(out.glob("*.md")).read_text()
    assert "uncertainty filtering" in md and "Lowest and highest samples" in md
    pngs = sorted(p.name for p in out.glob("*_extremes_*.png"))
    assert len(pngs) == 2 and all(MODEL in p for p in pngs)
    assert "**-2.5" in md  # the marked difference is bold in Markdown
