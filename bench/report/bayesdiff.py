"""The uncertainty-filtering section of a sampled eval's report (BayesDiff, Kou et al., ICLR
2024): one table of the filter's rows (``bench.metrics.uncertainty_filter``) per model, a row
per (sampler, NFE) cell that has them.

The filter metric names ``filter_sections`` as its ``report_sections`` (and sets
``report_tables = False``), so ``sections.sampled_sections`` puts it first when the rows hold
the filter's metrics and leaves those metrics out of its per-metric tables (a filter row is one
number per cell, not a curve over NFE). Columns: the rule and how many samples it kept; the cell's FID over all samples (the
``fid`` row, when the eval measured it); FID of the kept set; the mean FID of random subsets of
as many samples with their 2.5-97.5% spread; the differences kept minus random of FID,
precision and recall with their 2.5-97.5% bands; Spearman's rho of the uncertainty with the
distance to the k-th nearest real feature, with its 95% CI. A difference whose band excludes 0
is marked: the filter did better (``best``) or worse than a random choice beyond the spread of
random choices.
"""

from __future__ import annotations

import json
import math

import pandas as pd

from bench.report.blocks import Block, Heading, Table, Text, Value
from bench.report.sections import ReportContext

def filter_metrics() -> tuple[str, ...]:
    """The rows the filter emits (its declared outputs)."""
    from bench.metrics.uncertainty_filter import UncertaintyFilter

    return tuple(UncertaintyFilter.outputs)


#: (column, metric, higher is better) of the differences: marked when their band excludes 0
DIFFS = (("ΔFID", "filter_fid_diff", False), ("Δprecision", "filter_precision_diff", True),
         ("Δrecall", "filter_recall_diff", True))


def _value(g: pd.DataFrame, metric: str) -> Value | str:
    r = g[g["metric"] == metric]
    if r.empty:
        return "–"
    r = r.iloc[0]
    return Value(float(r["value"]), float(r["ci_low"]), float(r["ci_high"]))


def _rule(g: pd.DataFrame) -> str:
    """The filter's rule from the row's metric parameters (``eval_params``)."""
    from bench.metrics.uncertainty_filter import UncertaintyFilter

    try:
        metrics = json.loads(g["eval_params"].iloc[0]).get("metrics", [])
    except (KeyError, ValueError, AttributeError):
        return "?"
    for m in metrics:
        if isinstance(m, dict) and m.get("name") == "uncertainty_filter":
            p = m.get("params", {})
            if p.get("drop_above_std") is not None:
                return f"drop > mean + {p['drop_above_std']:g} std"
            keep = p.get("keep", UncertaintyFilter.extra_params["keep"])
            return f"keep lowest {100 * float(keep):g}%"
    return "?"


def filter_sections(sdf: pd.DataFrame, ctx: ReportContext) -> list[Block]:
    rows = sdf[(sdf["slice"] == "all") & sdf["metric"].isin(filter_metrics())]
    if rows.empty:
        return []
    out: list[Block] = []
    everything = sdf[sdf["slice"] == "all"]
    for model, m in rows.groupby("model", sort=True):
        table_rows = []
        for (sampler, nfe), g in m.groupby(["sampler", "nfe"], sort=True):
            cell = everything[(everything["model"] == model) & (everything["sampler"] == sampler)
                              & (everything["nfe"] == nfe)]
            kept = g[g["metric"] == "filter_kept"]
            n = int(g["n_samples"].iloc[0]) if "n_samples" in g else 0
            kept_s = f"{int(kept['value'].iloc[0])} / {n}" if len(kept) else "–"
            diffs = []
            for _, metric, better in DIFFS:
                v = _value(g, metric)
                if isinstance(v, Value) and math.isfinite(v.lo) and math.isfinite(v.hi):
                    if (v.hi < 0) if not better else (v.lo > 0):
                        v.mark = "best"
                diffs.append(v)
            table_rows.append([str(sampler), str(int(nfe)), _rule(g), kept_s,
                               _value(cell, "fid"), _value(g, "filter_fid_kept"),
                               _value(g, "filter_fid_random"), *diffs,
                               _value(g, "spearman_uncertainty_knn")])
        out += [Heading(f"{model} — uncertainty filtering"),
                Text("BayesDiff's filtering (Kou et al., ICLR 2024): each cell's samples ranked "
                     "by their uncertainty (summed final variance), the kept set against random "
                     "subsets of as many of the same samples, all from the same Inception "
                     "features (no regeneration). A difference is marked when its 2.5-97.5% band "
                     "over the random subsets excludes 0 in the better direction."),
                Table(["sampler", "NFE", "rule", "kept", "FID (all)", "FID kept",
                       "FID random", *[c for c, _, _ in DIFFS], "ρ(uncertainty, k-NN dist.)"],
                      table_rows, key=f"{ctx.slug(str(model))}-filter",
                      caption="FID random: mean over the random subsets [2.5, 97.5 percentiles]; "
                              "Δ: kept minus random (mean) [2.5, 97.5 percentiles of kept minus "
                              "each subset]; lower ΔFID and higher Δprecision / Δrecall favour "
                              "the filter; ρ: Spearman's rank correlation of uncertainty with the "
                              "distance to the k-th nearest real feature [95% CI, Fisher z] "
                              "(positive: the more uncertain samples lie farther from real "
                              "data).")]
    return out
