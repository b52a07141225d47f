"""Report sections: the blocks each eval kind contributes (``Eval.report_sections`` names one of
these functions, or a function of the eval's own module), and the shared provenance header.

A section gets the suite's newest rows of one eval and a :class:`ReportContext`, and returns
blocks (``bench.report.blocks``); it writes its figures into ``ctx.out``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from bench.errors import BenchError
from bench.report.blocks import (Block, Figure, Heading, Table, Text, Value, figure_heading,
                                 mark_best)
from bench.report.tables import fmt, fmt_value, nonfinite_rows, slopes

#: the row columns a metric's value table can be laid out by (``bench report --table ROW,COL``)
TABLE_AXES = ("model", "sampler", "nfe", "slice")
#: the default layout: per model, sampler x requested NFE
DEFAULT_TABLE = ("sampler", "nfe")


def is_table(parts: Any) -> bool:
    """Whether ``parts`` is a layout: a list or tuple of two different names of ``TABLE_AXES``."""
    return (isinstance(parts, (list, tuple)) and len(parts) == 2 and parts[0] != parts[1]
            and all(isinstance(p, str) and p in TABLE_AXES for p in parts))


def parse_table(spec: str | tuple[str, str] | None) -> tuple[str, str]:
    """``'ROW,COL'`` -> (ROW, COL): two different names of ``TABLE_AXES`` (None: the default)."""
    if spec is None:
        return DEFAULT_TABLE
    parts = [p.strip() for p in (spec.split(",") if isinstance(spec, str) else spec)]
    if not is_table(parts):
        shown = spec if isinstance(spec, str) else ",".join(spec)
        raise BenchError(f"--table {shown!r}: give two different columns, the table's rows then "
                         f"its columns, from {', '.join(TABLE_AXES)} (e.g. --table sampler,nfe, "
                         f"the default, or --table sampler,model).")
    return parts[0], parts[1]


def axis_name(axis: str) -> str:
    return "NFE" if axis == "nfe" else axis


def axis_value(axis: str, v: Any) -> str:
    """A column header of a value table: 'NFE 20' for an NFE, the value itself otherwise."""
    return f"NFE {v}" if axis == "nfe" else str(v)


@dataclass
class ReportContext:
    results: Path
    out: Path
    suite: str
    fit_min_nfe: int
    slug: Callable[[str], str]
    #: the suite's ``report: {galleries: [...]}``: cell patterns whose galleries are shown (all if empty)
    galleries: tuple[str, ...] = ()
    #: the (rows, columns) of the metrics' value tables (``bench report --table``)
    table: tuple[str, str] = DEFAULT_TABLE


def direction(metric: str) -> bool | None:
    from bench.metrics.base import find_output

    out = find_output(metric)
    return None if out is None else out.higher_is_better


def interval_caption(metric: str) -> str:
    """What a metric's bracket is, as the metric declares it (``Metric.outputs``)."""
    from bench.metrics.base import find_output

    out = find_output(metric)
    if out is None:
        return f"{metric}: [ci_low, ci_high] as recorded"
    better = {True: "higher is better", False: "lower is better", None: "no direction"}
    return f"{metric} ({better[out.higher_is_better]}): {out.interval}"


def provenance(sdf: pd.DataFrame) -> dict[str, str]:
    """What made the rows: runs, versions, revisions, code hashes, devices, weights, references."""
    def vals(col: str) -> str:
        if col not in sdf:
            return "–"
        v = sorted({str(x) for x in sdf[col].dropna().unique() if str(x)})
        return ", ".join(v) or "–"

    return {"rows": str(len(sdf)), "runs": vals("run_id"), "bench": vals("bench_version"),
            "git revision": vals("git_revision"), "torch": vals("torch_version"),
            "python": vals("python_version"), "device": vals("device"),
            "code hash": vals("code_hash"), "model weights": vals("model_hash"),
            "feature extractor weights": vals("weights_sha256"), "reference statistics": vals("ref_id")}


def value_table(g: pd.DataFrame, metric: str, rows: str = "sampler", cols: str = "nfe",
                key: str | None = None) -> Table:
    """ROWS x COLS of one metric (default: sampler x requested NFE), values with their
    intervals, the best of each column marked. ``g`` holds at most one row per (ROWS, COLS)."""
    col_values = sorted(g[cols].unique())
    out: list[list[Any]] = []
    for rv, s in g.groupby(rows, sort=True):
        cells: list[Any] = [str(rv)]
        for cv in col_values:
            r = s[s[cols] == cv]
            if r.empty:
                cells.append("–")
                continue
            r = r.iloc[0]
            note = (f"(NFE {int(r['nfe_counted'])})"
                    if int(r["nfe_counted"]) != int(r["nfe"]) else "")
            cells.append(Value(float(r["value"]), float(r["ci_low"]), float(r["ci_high"]), note))
        out.append(cells)
    return mark_best(Table([axis_name(rows)] + [axis_value(cols, c) for c in col_values], out,
                           caption=interval_caption(metric), higher_is_better=direction(metric),
                           key=key or metric))


def chosen_tables(df: pd.DataFrame, table: tuple[str, str], slug: Callable[[str], str]
                  ) -> list[Block]:
    """Per metric, ROWS x COLS tables (``bench report --table ROW,COL`` with a row or column
    that is not a model's sampler or NFE: model or slice), one per value of the other axes
    (the slice is 'all' unless it is one of the two)."""
    rows_ax, cols_ax = table
    rest = [a for a in TABLE_AXES if a not in table and a != "slice"]
    if "slice" not in table:
        df = df[df["slice"] == "all"]
    out: list[Block] = []
    for metric, g in df.groupby("metric", sort=True):
        out += [Heading(f"{metric}: {axis_name(rows_ax)} × {axis_name(cols_ax)}"),
                Text(f"One table per {' and '.join(axis_name(a) for a in rest)}"
                     f"{'' if 'slice' in table else ', slice all'} (`bench report --table "
                     f"{rows_ax},{cols_ax}`); {interval_caption(metric)}.")]
        for vals, h in g.groupby(rest, sort=True):
            vals = vals if isinstance(vals, tuple) else (vals,)
            where = ", ".join(f"{axis_name(a)} {v}" for a, v in zip(rest, vals))
            t = value_table(h, metric, rows_ax, cols_ax,
                            key=slug(f"{metric}-{rows_ax}-{cols_ax}-{where}"))
            t.caption = f"{where}. {t.caption}"
            out += [Heading(where, 3, formats=("md",)), t]  # elsewhere the caption says it
    return out


def model_params_text(params: str) -> str:
    """A model's parameters (its row's JSON) for the prose: as code, so the JSON's straight
    quotes survive LaTeX's text fonts; ' (default parameters)' when it sets none."""
    return " (default parameters)" if params in ("", "{}") else f", parameters `{params}`"


def cost_table(g: pd.DataFrame) -> Table:
    rows = []
    for _, r in g.sort_values(["sampler", "nfe"]).iterrows():
        share = r["model_s"] / r["wall_s"] if r["wall_s"] else float("nan")
        rows.append([str(r["sampler"]), str(int(r["nfe"])), str(int(r["nfe_counted"])),
                     str(int(r["n_samples"])), fmt(r["wall_s"]), fmt(r["samples_per_s"]),
                     f"{100 * share:.0f}%" if math.isfinite(share) else "–"])
    return Table(["sampler", "NFE", "counted NFE", "samples", "wall s", "samples/s",
                  "time in model"], rows, key="cost",
                 caption="Cost of each cell. wall s: the wall times of its shards, summed (shards "
                         "that ran side by side each count in full); samples/s: samples / wall s; "
                         "time in model: the share of wall s spent in the network.")


def metric_sections(sdf: pd.DataFrame) -> tuple[list[Callable[..., list[Block]]], set[str]]:
    """The section builders of the metrics whose rows ``sdf`` holds, in metric name order (a
    metric class's ``report_sections``, "module:function", called with the eval's rows and the
    context), and the row names the per-metric tables leave out (the outputs of a metric whose
    ``report_tables`` is False: its own section shows them)."""
    import importlib

    from bench.registry import METRICS

    present = set(sdf["metric"])
    builders, own_rows = [], set()
    for entry in METRICS:
        cls = entry.load()
        outputs = set(getattr(cls, "outputs", {}))
        if not outputs & present:
            continue
        target = getattr(cls, "report_sections", None)
        if target:
            module, attr = target.split(":")
            builders.append(getattr(importlib.import_module(module), attr))
        if not getattr(cls, "report_tables", True):
            own_rows |= outputs
    return builders, own_rows


def sampled_sections(sdf: pd.DataFrame, ctx: ReportContext) -> list[Block]:
    """Sharded evals (nfe_curve, fidelity): first the sections of the metrics that render their
    own (``metric_sections``: CLIPScore's text-to-image views, ``bench.report.t2i``; the
    uncertainty filter's table, ``bench.report.bayesdiff``), with a ``--table`` over
    models or slices those tables (``chosen_tables``), then per (model, metric) a sampler x NFE
    table (or the ``--table`` layout of sampler and NFE), the fitted convergence slopes, a
    log-log plot with interval bands, and the cost."""
    from bench.report.plots import nfe_plot
    from bench.samplers import sampler_info
    from bench.metrics.base import find_output

    builders, own_rows = metric_sections(sdf)
    out: list[Block] = [b for build in builders for b in build(sdf, ctx)]
    metrics = sdf[~sdf["metric"].isin(own_rows)]
    per_model = "model" not in ctx.table and "slice" not in ctx.table
    if not per_model:
        out += chosen_tables(metrics, ctx.table, ctx.slug)
    sampled = metrics[metrics["slice"] == "all"]
    for (model, metric), g in sampled.groupby(["model", "metric"], sort=True):
        out += [Heading(f"{model} — {metric}"),
                Text(f"Model `{g['model_name'].iloc[0]}`{model_params_text(g['model_params'].iloc[0])}; "
                     f"{int(g['n_samples'].iloc[0])} samples per cell, seed {int(g['seed'].iloc[0])}; "
                     f"{interval_caption(metric)}."),
                value_table(g, metric, *(ctx.table if per_model else DEFAULT_TABLE))]
        bad = nonfinite_rows(g)
        if len(bad):
            out.append(Text(f"{len(bad)} value(s) are not finite (NaN or inf: " + ", ".join(
                f"{r['sampler']} NFE {int(r['nfe'])} = {fmt_value(r['value'])}"
                for _, r in bad.sort_values(["sampler", "nfe"]).iterrows())
                + "); the table shows them, the plot and the slope fit leave them out."))
        fits = slopes(g, ctx.fit_min_nfe)
        params = dict(zip(g["sampler"], g["sampler_params"]))
        declared = find_output(metric)
        converges = declared is not None and declared.convergence
        rows = []
        for _, f in fits.iterrows():
            order = (sampler_info(f["sampler_name"]).order_for(json.loads(params[f["sampler"]]))
                     if f["sampler_name"] else None)
            theory = f"{-order}" if (order and converges) else "–"
            rows.append([f["sampler"], "–" if pd.isna(f["slope"]) else f"{f['slope']:.2f}", theory,
                         f"{f['nfe_min']}–{f['nfe_max']} ({f['points']} points)"])
        out += [Table(["sampler", "slope", "theory", "NFE range"], rows, key=f"{metric}-slopes",
                      caption="Fitted slope of log " + metric + " against log counted NFE"
                      + (f" (NFE >= {ctx.fit_min_nfe})" if ctx.fit_min_nfe else "") + "."
                      + (" Theory is the solver's order of accuracy for these parameters; "
                         "stochastic samplers have none. `lower_order_final` ends UniPC (at any "
                         "step count) and DPM-Solver++ multistep (below 15 steps) with "
                         "lower-order steps, which caps their observed slope near -2."
                         if converges else " The metric is not an error against an ODE "
                         "solution, so no order of accuracy applies."))]
        png = nfe_plot(g, f"{ctx.suite}: {model}", metric,
                       ctx.out / f"{ctx.slug(ctx.suite)}_{ctx.slug(model)}_{ctx.slug(metric)}.png")
        out += [Figure(png, f"{metric} against counted NFE (log-log); bands: "
                       f"{interval_caption(metric).split(': ', 1)[-1]}"), cost_table(g)]
    return out


def nfe_to_target_sections(sdf: pd.DataFrame, ctx: ReportContext) -> list[Block]:
    """The loop eval: the NFE found per (model, sampler) and the probes that found it."""
    rows = sdf[sdf["metric"] == "nfe_to_target"]
    if rows.empty:
        return []
    out = []
    for _, r in rows.sort_values(["model", "sampler"]).iterrows():
        params = json.loads(r["eval_params"])
        probes = sdf[(sdf["config_hash"] == r["config_hash"])
                     & (sdf["metric"] != "nfe_to_target")].sort_values("step")
        found = "not reached" if pd.isna(r["value"]) else f"{int(r['value'])}"
        trail = ", ".join(f"{int(p['nfe'])}: {fmt_value(p['value'])}" for _, p in probes.iterrows())
        out.append([str(r["model"]), str(r["sampler"]),
                    f"{params['metric']['name']} {params['output']} to {params['target']:g}",
                    found, trail])
    return [Heading("NFE to reach a target"),
            Table(["model", "sampler", "target", "NFE", "probes"], out, key="nfe-to-target",
                  caption="Smallest NFE (bisection over the sampler's step counts in [nfe_min, "
                          "nfe_max]) at which the metric reached the target; probes in order "
                          "(NFE: value).")]


def gallery_sections(ctx: ReportContext) -> list[Block]:
    from bench.report.galleries import render_galleries

    galleries = render_galleries(ctx.results, ctx.suite, ctx.out, ctx.slug, ctx.galleries)
    out = extremes_sections(ctx)
    if not galleries:
        return out
    from bench.report.galleries import GRID_COLUMNS, ROWS_MAX

    intro = ("The first samples of each cell (same initial noise across samplers), one row per "
             "condition.")
    if any(grid for _, _, grid in galleries):
        intro = (f"The first samples of each cell (same initial noise across samplers): up to "
                 f"{ROWS_MAX} conditions, one row per condition; more, a grid of {GRID_COLUMNS} "
                 f"conditions a row, one block of rows per category, each image captioned with "
                 f"its condition's id (as in the per-prompt table) and text.")
    head: list[Block] = [Heading("Samples"), Text(intro)]
    for name, png, grid in galleries:
        head += [figure_heading(name), Figure(png, f"samples: {name}" + (
            " (by category; caption: condition id and text)" if grid else ""))]
    return head + out


def extremes_sections(ctx: ReportContext) -> list[Block]:
    """The lowest and highest samples of each cell by a per-sample extra (``extremes:``)."""
    from bench.report.galleries import render_extremes

    shown = render_extremes(ctx.results, ctx.suite, ctx.out, ctx.slug)
    if not shown:
        return []
    out: list[Block] = [Heading("Lowest and highest samples"), Text(
        "Per cell, the samples with the lowest values of the sampler's per-sample extra (top "
        "block) and the highest (bottom block, highest first), from all of the cell's samples; "
        "each image is captioned with its condition and value.")]
    for name, png, by in shown:
        out += [figure_heading(name), Figure(png, f"lowest and highest {by}: {name}")]
    return out
