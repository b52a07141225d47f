"""Nightly regression check: compare two sets of result rows metric by metric.

A current value that is NaN or infinite always fails. Rows are matched on ``bench.store.ROW_KEY`` (suite, model, sampler, nfe, eval, slice, step,
metric). A tolerance per metric is one of ``abs:X`` (|current - baseline| <= X), ``rel:X``
(<= X * |baseline|) or ``ci`` (the 95% intervals overlap). Only a change in the metric's bad
direction counts as a regression; the direction is the one the metric declares
(``Metric.outputs``); a row of unknown direction regresses on any change beyond its tolerance.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from bench.errors import BenchError
from bench.metrics.base import find_output
from bench.report import COMPARE_COLUMNS, latest_rows, read_rows
from bench.report.tables import fmt, markdown_table
from bench.store import ROW_KEY as KEY


def load_rows(spec: str, results: str | Path = "results", what: str = "result set") -> pd.DataFrame:
    """A Parquet file or folder (newest row of each cell), or a run id (or 'latest') in
    ``results``. ``what`` names the argument (baseline, current) in error messages."""
    from bench.store import RUN_ID_RE, ResultStore

    p = Path(spec)
    if p.exists():
        return latest_rows(read_rows(p, what, COMPARE_COLUMNS))
    if spec != "latest" and not RUN_ID_RE.match(str(spec)):
        raise BenchError(f"{what} '{spec}' does not exist as a file or folder, and there is no "
                         f"run '{spec}' in --results '{results}' (run ids look like "
                         f"YYYYMMDD-HHMMSS-xxxxxx, or 'latest'); give a Parquet file or results "
                         f"folder, or a run id of --results.")
    if not Path(results).is_dir():
        raise BenchError(f"{what} '{spec}' is a run id, but --results '{results}' is not a "
                         f"folder; pass --results DIR, the folder 'bench run' wrote.")
    store = ResultStore(results)
    manifest = store.read_run(spec)
    groups = sorted({c["cell_key"] for c in manifest["shards"]})
    files = [store.rows_path(manifest["suite"], g) for g in groups]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise BenchError(f"run {spec} is incomplete: {len(missing)} of {len(files)} cells have no "
                         f"result rows; rerun it ('bench run') before comparing.")
    if not files:
        raise BenchError(f"{what}: run {spec} has no cells; compare runs that computed results.")
    return pd.concat([read_rows(f, f"{what} (run {spec})", COMPARE_COLUMNS) for f in files],
                     ignore_index=True)


def parse_tol(spec: str) -> tuple[str, float]:
    """``abs:X`` / ``rel:X`` (X a finite number >= 0) or ``ci``."""
    kind, _, val = str(spec).partition(":")
    if kind == "ci" and not val:
        return "ci", 0.0
    if kind in ("abs", "rel"):
        try:
            x = float(val)
        except ValueError:
            x = float("nan")
        if math.isfinite(x) and x >= 0:
            return kind, x
    raise BenchError(f"tolerance {spec!r} is not abs:X, rel:X or ci (X a number >= 0); "
                     f"e.g. --tol rmse=rel:0.05.")


def direction(metric: str) -> int:
    """+1 if higher is worse, -1 if lower is worse, 0 if unknown (as the metric declares)."""
    out = find_output(metric)
    if out is None or out.higher_is_better is None:
        return 0
    return -1 if out.higher_is_better else 1


def compare(base: pd.DataFrame, cur: pd.DataFrame, tols: dict[str, str],
            default: str = "rel:0.05") -> tuple[pd.DataFrame, str]:
    """(table of differences, Markdown); the 'regressed' column marks failures."""
    merged = base[KEY + ["value", "ci_low", "ci_high"]].merge(
        cur[KEY + ["value", "ci_low", "ci_high"]], on=KEY, how="outer",
        suffixes=("_base", "_cur"), indicator=True)
    rows, out = [], []
    for _, r in merged.sort_values(KEY).iterrows():
        kind, x = parse_tol(tols.get(r["metric"], default))
        status, regressed = "ok", False
        if r["_merge"] != "both":
            status = "only in baseline" if r["_merge"] == "left_only" else "only in current"
            regressed = r["_merge"] == "left_only"  # a metric that disappeared is a failure
        else:
            b, c = float(r["value_base"]), float(r["value_cur"])
            diff = c - b
            if kind == "abs":
                beyond = abs(diff) > x
            elif kind == "rel":
                beyond = abs(diff) > x * abs(b)
            else:
                beyond = r["ci_high_cur"] < r["ci_low_base"] or r["ci_low_cur"] > r["ci_high_base"]
            worse = direction(r["metric"]) * diff > 0 or (direction(r["metric"]) == 0 and diff != 0)
            regressed = bool(beyond and worse)
            status = "REGRESSION" if regressed else ("improved" if beyond else "ok")
            outcome = getattr(find_output(str(r["metric"])), "nan_means", "")
            if math.isnan(c) and outcome:  # a declared outcome (e.g. target not reached)
                regressed = not math.isnan(b)
                status = f"REGRESSION ({outcome})" if regressed else f"ok ({outcome})"
            elif not math.isfinite(c):  # NaN / inf is never a pass, not even against NaN
                regressed, status = True, "NON-FINITE"
        tol_txt = f"{kind}:{x:g}" if kind != "ci" else "ci"
        out.append({**{k: r[k] for k in KEY}, "baseline": r["value_base"], "current": r["value_cur"],
                    "tolerance": tol_txt, "status": status, "regressed": regressed})
        rel = (float(r["value_cur"]) - float(r["value_base"])) / abs(float(r["value_base"])) \
            if r["_merge"] == "both" and float(r["value_base"]) != 0 else float("nan")
        rows.append([str(r["model"]), str(r["sampler"]), str(int(r["nfe"])), str(r["metric"]),
                     fmt(r["value_base"]), fmt(r["value_cur"]),
                     "–" if math.isnan(rel) else f"{100 * rel:+.2f}%", tol_txt, status])
    table = pd.DataFrame(out)
    md = markdown_table(["model", "sampler", "NFE", "metric", "baseline", "current", "change",
                         "tolerance", "status"], rows)
    n_bad = int(table["regressed"].sum()) if len(table) else 0
    md += f"\n\n{n_bad} regression(s) in {len(table)} compared metric(s).\n"
    return table, md
