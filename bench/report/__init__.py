"""Render reports (Markdown + PNG plots) from a results folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from bench.errors import BenchError
from bench.store import ROW_KEY
from bench.report.galleries import render_galleries
from bench.report.plots import nfe_plot
from bench.report.tables import fmt, markdown_table, slopes, value_table, cost_table


def load_results(results: str | Path, suite: str | None = None) -> pd.DataFrame:
    path = Path(results)
    if not path.exists():
        raise BenchError(f"results folder '{path}' does not exist; run 'bench run SUITE "
                         f"--results {path}' first.")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # empty folder, no parquet files
        raise BenchError(f"no result rows in '{path}' ({type(exc).__name__}); run a suite first.") from None
    if suite:
        df = df[df["suite"] == suite]
        if df.empty:
            raise BenchError(f"no rows for suite {suite!r} in '{path}'.")
    return latest_rows(df)


def latest_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Keep the newest row of each key (``bench.store.ROW_KEY``: suite, model, sampler, NFE,
    eval, slice, step, metric).

    A suite rerun after its code or settings changed (another ``config_hash``) writes new rows
    beside the old ones; a report shows the newest and says how many it left out
    (``df.attrs['superseded']``: suite -> rows left out).
    """
    when = pd.to_datetime(df["created_at"], utc=True, format="ISO8601")
    order = df.assign(_when=when).sort_values("_when", kind="stable").drop(columns="_when")
    newest = order.drop_duplicates(ROW_KEY, keep="last").sort_index()
    dropped = df["suite"].value_counts().sub(newest["suite"].value_counts(), fill_value=0)
    newest.attrs["superseded"] = {str(k): int(v) for k, v in dropped.items() if v}
    return newest


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-")


def suite_report_options(results: str | Path, suite: str) -> dict:
    """The ``report:`` block of the newest run of this suite in the results folder."""
    import json

    runs = sorted((Path(results) / "_runs").glob("*.json"))
    for p in reversed(runs):
        m = json.loads(p.read_text())
        if m.get("suite") == suite:
            return dict(m.get("report") or {})
    return {}


def interval_caption(metric: str) -> str:
    """What a metric's bracket is, as the metric declares it (``Metric.outputs``): FID a
    jackknife/bootstrap CI, KID and IS mean -/+ std, per-sample means a t-CI."""
    from bench.metrics.base import find_output

    out = find_output(metric)
    if out is None:
        return f"{metric}: [ci_low, ci_high] as recorded"
    better = {True: "higher is better", False: "lower is better", None: "no direction"}
    return f"{metric} ({better[out.higher_is_better]}): {out.interval}"


def nfe_to_target_section(df: pd.DataFrame) -> list[str]:
    """The loop eval's results: the NFE found per (model, sampler) and how many probes it took."""
    rows = df[(df["eval"] == "nfe_to_target") & (df["metric"] == "nfe_to_target")]
    if rows.empty:
        return []
    out = []
    for _, r in rows.sort_values(["model", "sampler"]).iterrows():
        params = json.loads(r["eval_params"])
        probes = df[(df["eval"] == "nfe_to_target") & (df["config_hash"] == r["config_hash"])
                    & (df["metric"] != "nfe_to_target")].sort_values("step")
        found = "not reached" if pd.isna(r["value"]) else f"{int(r['value'])}"
        trail = ", ".join(f"{int(p['nfe'])}: {fmt(p['value'])}" for _, p in probes.iterrows())
        out.append([str(r["model"]), str(r["sampler"]),
                    f"{params['metric']['name']} {params['output']} "
                    f"to {params['target']:g}",
                    found, trail])
    return ["## NFE to reach a target", "",
            "Smallest NFE (bisection over the sampler's step counts in [nfe_min, nfe_max]) at which "
            "the metric reached the target; probes in order (NFE: value).", "",
            markdown_table(["model", "sampler", "target", "NFE", "probes"], out), ""]


def render(results: str | Path, out: str | Path, suite: str | None = None,
           fit_min_nfe: int | None = None) -> list[Path]:
    """Write ``out/<suite>.md`` and one PNG per (model, metric); return the written paths.

    ``fit_min_nfe`` defaults to the suite's ``report: {fit_min_nfe: N}``, else 0.
    """
    from bench.registry import load_all
    from bench.samplers import sampler_info

    load_all()
    df = load_results(results, suite)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for suite_name, sdf in df.groupby("suite", sort=True):
        min_nfe = fit_min_nfe if fit_min_nfe is not None else int(
            suite_report_options(results, suite_name).get("fit_min_nfe", 0))
        md = [f"# Report: {suite_name}", ""]
        runs = sorted(sdf["run_id"].unique())
        md += [f"{len(sdf)} result rows from run(s) {', '.join(runs)}; "
               + "; ".join(f"{label} {', '.join(sorted(sdf[col].astype(str).unique()))}"
                           for label, col in (("git", "git_revision"), ("torch", "torch_version"),
                                              ("device", "device"), ("code hash", "code_hash")))
               + ".", ""]
        if n_old := df.attrs.get("superseded", {}).get(suite_name):
            md += [f"{n_old} older row(s) of the same cells (an earlier run with other code or "
                   "settings) are left out; the newest row of each cell is shown.", ""]
        md += nfe_to_target_section(sdf)
        sampled = sdf[(sdf["slice"] == "all") & (sdf["eval"] != "nfe_to_target")]
        for (model, metric), g in sampled.groupby(["model", "metric"], sort=True):
            md += [f"## {model} — {metric}", "",
                   f"Model `{g['model_name'].iloc[0]}` {g['model_params'].iloc[0]}; "
                   f"{int(g['n_samples'].iloc[0])} samples per cell, seed {int(g['seed'].iloc[0])}; "
                   f"{interval_caption(metric)}.", "", value_table(g), ""]
            fits = slopes(g, min_nfe)
            params = dict(zip(g["sampler"], g["sampler_params"]))
            rows = []
            for _, f in fits.iterrows():
                order = (sampler_info(f["sampler_name"]).order_for(json.loads(params[f["sampler"]]))
                         if f["sampler_name"] else None)
                theory = f"{-order}" if (order and metric == "rmse") else "–"
                rows.append([f["sampler"], f"{f['slope']:.2f}", theory,
                             f"{f['nfe_min']}–{f['nfe_max']} ({f['points']} points)"])
            md += ["Fitted slope of log " + metric + " against log counted NFE"
                   + (f" (NFE >= {min_nfe})" if min_nfe else "") + ":", "",
                   markdown_table(["sampler", "slope", "theory", "NFE range"], rows), "",
                   "Theory is the solver's order of accuracy for these parameters; stochastic "
                   "samplers have none (their error against the ODE solution does not vanish). "
                   "`lower_order_final` (on by default for the multistep solvers) ends with "
                   "lower-order steps, which caps the observed slope near -2.", ""]
            png = nfe_plot(g, f"{suite_name}: {model}", metric,
                           out / f"{_slug(suite_name)}_{_slug(model)}_{_slug(metric)}.png")
            written.append(png)
            md += [f"![{metric} vs NFE]({png.name})", "", "Cost:", "", cost_table(g), ""]
        galleries = render_galleries(Path(results), suite_name, out, _slug)
        if galleries:
            md += ["## Samples", "", "The first samples of each cell (same initial noise across "
                   "samplers), one row per condition:", ""]
            for name, png in galleries:
                md += [f"### {name}", "", f"![samples {name}]({png.name})", ""]
                written.append(png)
        path = out / f"{_slug(suite_name)}.md"
        path.write_text("\n".join(md))
        written.insert(0, path)
    return written


__all__ = ["render", "load_results", "latest_rows", "fmt", "interval_caption"]
