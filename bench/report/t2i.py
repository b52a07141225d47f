"""Text-to-image sections of a sampled eval's report (fidelity): the guidance trade-off and the
per-prompt view.

The CLIPScore metric names ``t2i_sections`` as its ``report_sections``, so
``sections.sampled_sections`` puts them first when the eval's rows hold the prompt-agreement
metric (``AGREEMENT``); a report without it is unchanged.

Models are grouped into *bases*: the rows' ``model_name`` and ``model_params`` without
``guidance.scale`` (JSON, as the suite wrote them). The members of a base differ only in the
guidance scale, read from ``model_params``, never from the label: an entry swept with
``guidance: {scale: [1, 2, 4]}`` and entries written one by one with different scales group
alike; a member without a scale ran without guidance ("none"). Per base:

* **trade-off curve** (needs ``FIDELITY``, FID, too): one panel per requested NFE, one line per
  sampler through its guidance scales, x = CLIPScore, y = FID, each with its interval as error
  bars, each point labelled with its scale (``plots.tradeoff_plot``);
* **by guidance scale** (bases with two or more members): per sampler and NFE, rows = guidance
  scales, columns = CLIPScore, FID, then the eval's other metrics (e.g. KID); the best value of
  each column is marked by that metric's direction (``Metric.outputs``);
* **per category / per prompt** (rows ``category=<c>`` / ``prompt=<id>`` of ``slices``), at one
  cell: the highest requested NFE and the sampler whose best CLIPScore there is best. Categories
  are columns and guidance scales rows (the column's mark: the scale that maximises CLIPScore
  for that category). Prompts are rows with their text and category (from the cell's
  per-sample table) and a column per guidance scale; the HTML page has all of them (sortable),
  Markdown and LaTeX the top and bottom ``EDGE`` by CLIPScore at the best scale.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from bench.metrics.base import MEAN_CI
from bench.report.blocks import Block, Figure, Heading, Table, Text, Value, mark_best
from bench.report.sections import ReportContext, direction, interval_caption

#: the prompt-agreement metric: the curve's x axis and the metric of the per-prompt tables
AGREEMENT = "clipscore"
#: the fidelity metric: the curve's y axis
FIDELITY = "fid"
#: Markdown and LaTeX show the top and bottom EDGE prompts (HTML all of them) when there are
#: more than 2 * EDGE + 2
EDGE = 5
#: the slice prefixes of per-prompt and per-category rows (``bench.evals.sampled.slice_rows``)
PROMPT, CATEGORY = "prompt=", "category="


# ------------------------------------------------------------------------- guidance scale
def guidance_scale(model_params: Any) -> float | None:
    """``guidance.scale`` of a row's ``model_params`` (JSON); None without one."""
    try:
        params = json.loads(model_params) if isinstance(model_params, str) else {}
    except ValueError:
        return None
    g = params.get("guidance") if isinstance(params, dict) else None
    s = g.get("scale") if isinstance(g, dict) else None
    return float(s) if isinstance(s, (int, float)) and not isinstance(s, bool) else None


def base_params(model_params: Any) -> str:
    """``model_params`` without ``guidance.scale`` (canonical JSON): what the members share."""
    try:
        params = json.loads(model_params) if isinstance(model_params, str) else {}
    except ValueError:
        return str(model_params)
    if not isinstance(params, dict):
        return json.dumps(params, sort_keys=True)
    g = params.get("guidance")
    if isinstance(g, dict):
        rest = {k: v for k, v in g.items() if k != "scale"}
        params = {**params, "guidance": rest} if rest else \
            {k: v for k, v in params.items() if k != "guidance"}
    return json.dumps(params, sort_keys=True)


def scale_text(s: float | None) -> str:
    return "none" if s is None or (isinstance(s, float) and math.isnan(s)) else f"{s:g}"


def with_bases(sdf: pd.DataFrame) -> pd.DataFrame:
    """The rows with ``_scale`` (float, NaN: no guidance) and ``_base`` (the base's name: the
    model name, with the other parameters where two bases share it)."""
    scale = sdf["model_params"].map(guidance_scale)
    rest = sdf["model_params"].map(base_params)
    keys = pd.Series(list(zip(sdf["model_name"].astype(str), rest)), index=sdf.index)
    names: dict[tuple[str, str], str] = {}
    for name, r in sorted(set(keys)):
        shared = sum(1 for n, _ in set(keys) if n == name) > 1
        names[(name, r)] = f"{name} {r}" if shared and r != "{}" else name
    return sdf.assign(_scale=scale.astype(float), _base=keys.map(names))


def by_scale(g: pd.DataFrame) -> pd.DataFrame:
    """Rows ordered by guidance scale (no guidance first), then model label."""
    return g.assign(_s=g["_scale"].fillna(-math.inf)).sort_values(["_s", "model"]).drop(columns="_s")


def member_names(members: pd.DataFrame) -> dict[str, str]:
    """Model label -> how a table names it: its guidance scale, with the label where two
    members share a scale."""
    texts = {str(m): scale_text(s) for m, s in zip(members["model"], members["_scale"])}
    counts = pd.Series(list(texts.values())).value_counts()
    return {m: t if counts[t] == 1 else f"{t} ({m})" for m, t in texts.items()}


def value_of(r: pd.Series) -> Value:
    return Value(float(r["value"]), float(r["ci_low"]), float(r["ci_high"]))


def nfe_words(g: pd.DataFrame, nfe: int) -> str:
    """'NFE 10', or 'NFE 10 (counted 9)' where the sampler counted another NFE."""
    counted = sorted({int(c) for c in g["nfe_counted"].dropna()} - {int(nfe)})
    return f"NFE {nfe}" + (f" (counted {', '.join(map(str, counted))})" if counted else "")


# ---------------------------------------------------------------------------- sections
def t2i_sections(sdf: pd.DataFrame, ctx: ReportContext) -> list[Block]:
    if not (sdf["metric"] == AGREEMENT).any():
        return []
    rows = with_bases(sdf)
    out: list[Block] = []
    for base, b in rows.groupby("_base", sort=True):
        allrows = b[b["slice"] == "all"]
        if not (allrows["metric"] == AGREEMENT).any():
            continue
        members = allrows[["model", "_scale"]].drop_duplicates()
        swept = len(members) > 1
        shown = " and ".join(m for m in (AGREEMENT, FIDELITY) if (allrows["metric"] == m).any())
        out.append(Heading(f"{base} — {'guidance: ' if swept else ''}{shown}"))
        out += [Text(f"Guidance scales (from each row's `model_params`, `guidance.scale`; "
                     f"none: no guidance): "
                     f"{', '.join(member_names(by_scale(members)).values())}.")]
        out += curve_blocks(allrows, str(base), ctx)
        if swept:
            out += scale_tables(allrows, str(base))
        out += slice_blocks(b, str(base), ctx)
    return out


def curve_blocks(allrows: pd.DataFrame, base: str, ctx: ReportContext) -> list[Block]:
    """The trade-off figure of one base (none without both metrics)."""
    from bench.report.plots import tradeoff_plot

    x = allrows[allrows["metric"] == AGREEMENT]
    y = allrows[allrows["metric"] == FIDELITY]
    if x.empty or y.empty:
        return []
    keys = ["model", "sampler", "nfe"]
    pts = x.merge(y, on=keys, suffixes=("_x", "_y"))
    pts = pts.assign(_scale=pts["_scale_x"], label=pts["_scale_x"].map(scale_text))
    finite = np.isfinite(pts["value_x"].to_numpy(float)) & np.isfinite(pts["value_y"].to_numpy(float))
    out: list[Block] = []
    if not finite.all():
        bad = pts[~finite]
        out.append(Text(f"{len(bad)} point(s) without a finite {AGREEMENT} or {FIDELITY} are not "
                        f"drawn (" + ", ".join(f"{r['sampler']} NFE {int(r['nfe'])} guidance "
                                               f"{r['label']}" for _, r in bad.iterrows())
                        + "); the tables show their values."))
    pts = pts[finite]
    if pts.empty:
        return out
    better = {True: " (higher is better)", False: " (lower is better)", None: ""}
    png = tradeoff_plot(pts, f"{ctx.suite}: {base}: {FIDELITY} against {AGREEMENT} across "
                             f"guidance scales (numbers: scale)",
                        AGREEMENT + better[direction(AGREEMENT)], FIDELITY + better[direction(FIDELITY)],
                        ctx.out / f"{ctx.slug(ctx.suite)}_{ctx.slug(base)}_{AGREEMENT}_{FIDELITY}.png")
    what = lambda m: interval_caption(m).split(": ", 1)[-1]  # noqa: E731
    out.append(Figure(png, f"{FIDELITY} against {AGREEMENT}, one panel per requested NFE, one "
                           f"line per sampler through the guidance scales (the number beside each "
                           f"point). Error bars: {AGREEMENT}: {what(AGREEMENT)}; {FIDELITY}: "
                           f"{what(FIDELITY)}."))
    return out


def scale_tables(allrows: pd.DataFrame, base: str) -> list[Block]:
    """Per sampler and NFE: guidance scale x (agreement, fidelity, the other metrics)."""
    others = sorted(set(allrows["metric"]) - {AGREEMENT, FIDELITY})
    metrics = [m for m in (AGREEMENT, FIDELITY) if m in set(allrows["metric"])] + others
    out: list[Block] = [
        Heading(f"Which guidance scale gives the best {AGREEMENT}, and how {FIDELITY} moves", 3),
        Text("Per sampler and NFE, one row per guidance scale; in each column the best value is "
             "marked by that metric's direction. " + "; ".join(interval_caption(m) for m in metrics)
             + ".")]
    for (sampler, nfe), g in allrows.groupby(["sampler", "nfe"], sort=True):
        rows = []
        members = by_scale(g[["model", "_scale"]].drop_duplicates())
        names = member_names(members)
        for _, m in members.iterrows():
            cells: list[Any] = [names[m["model"]]]
            for metric in metrics:
                r = g[(g["model"] == m["model"]) & (g["metric"] == metric)]
                cells.append(value_of(r.iloc[0]) if len(r) else "–")
            rows.append(cells)
        where = f"`{sampler}`, {nfe_words(g, int(nfe))}"
        # Markdown drops a marked table's caption (its legend takes the place): name the cell
        # there; HTML and LaTeX show the caption (a LaTeX heading would part from its float)
        out += [Text(f"{where}:", formats=("md",)),
                mark_best(Table(["guidance scale", *metrics], rows,
                                caption=f"{base}, {where}: {', '.join(metrics)} by guidance scale",
                                directions=[None, *(direction(m) for m in metrics)],
                                key=f"{base}-{sampler}-nfe{nfe}-guidance"))]
    return out


def chosen_cell(allrows: pd.DataFrame) -> tuple[str, int] | None:
    """(sampler, NFE) of the per-prompt views: the highest requested NFE with agreement rows,
    and there the sampler whose best agreement (over guidance scales) is best."""
    x = allrows[(allrows["metric"] == AGREEMENT) & np.isfinite(allrows["value"].to_numpy(float))]
    if x.empty:
        return None
    nfe = int(x["nfe"].max())
    at = x[x["nfe"] == nfe]
    hib = direction(AGREEMENT) is not False
    best = at.groupby("sampler")["value"].agg("max" if hib else "min")
    order = sorted(best.items(), key=lambda kv: ((-kv[1] if hib else kv[1]), kv[0]))
    return str(order[0][0]), nfe


def slice_blocks(b: pd.DataFrame, base: str, ctx: ReportContext) -> list[Block]:
    """Per-category and per-prompt tables of the agreement metric at the chosen cell."""
    allrows = b[b["slice"] == "all"]
    cell = chosen_cell(allrows)
    sliced = b[(b["metric"] == AGREEMENT) & b["slice"].str.startswith((PROMPT, CATEGORY))]
    if cell is None or sliced.empty:
        return []
    sampler, nfe = cell
    at = b[(b["sampler"] == sampler) & (b["nfe"] == nfe) & (b["metric"] == AGREEMENT)]
    members = by_scale(at[["model", "_scale"]].drop_duplicates())
    prompts = prompt_info(at, ctx)
    intro = (f"Per category and per prompt at one cell: `{sampler}` at {nfe_words(at, nfe)} (the "
             f"highest NFE, and there the sampler with the best {AGREEMENT} over the guidance "
             f"scales). Category and prompt values: {MEAN_CI}, over the images of the category "
             f"or prompt; all prompts: {interval_caption(AGREEMENT).split(': ', 1)[-1]}.")
    out: list[Block] = [Heading(f"{AGREEMENT} per category and per prompt", 3), Text(intro)]
    out += category_table(at, members, prompts, base, sampler, nfe)
    out += prompt_tables(at, members, prompts, base, sampler, nfe)
    return out


def prompt_info(at: pd.DataFrame, ctx: ReportContext) -> pd.DataFrame:
    """Per prompt id (in condition order): text and category, from the per-sample table of one
    of the cell's models (empty if there is none)."""
    from bench.integrity import CorruptFile, read_table
    from bench.store import ResultStore

    store = ResultStore(ctx.results)
    for key in at["config_hash"].dropna().unique():
        path = store.samples_path(ctx.suite, str(key))
        try:
            t = read_table(path).to_pandas()
        except (FileNotFoundError, CorruptFile, OSError):
            continue
        if not {"cond_id", "index"} <= set(t.columns):
            continue
        t = t.sort_values("index")
        cols = [c for c in ("cond_id", "cond_text", "category") if c in t]
        return t[cols].drop_duplicates("cond_id").set_index("cond_id")
    return pd.DataFrame(columns=["cond_text", "category"])


def category_table(at: pd.DataFrame, members: pd.DataFrame, prompts: pd.DataFrame, base: str,
                   sampler: str, nfe: int) -> list[Block]:
    cats = at[at["slice"].str.startswith(CATEGORY)]
    if cats.empty:
        return []
    found = [s[len(CATEGORY):] for s in sorted(cats["slice"].unique())]
    order = [c for c in dict.fromkeys(prompts.get("category", pd.Series(dtype=str))) if c in found]
    order += [c for c in found if c not in order]
    rows = []
    names = member_names(members)
    for _, m in members.iterrows():
        mine = at[at["model"] == m["model"]]
        cells: list[Any] = [names[m["model"]]]
        for sl in ["all", *(CATEGORY + c for c in order)]:
            r = mine[mine["slice"] == sl]
            cells.append(value_of(r.iloc[0]) if len(r) else "–")
        rows.append(cells)
    hib = direction(AGREEMENT)
    return [mark_best(Table(
        ["guidance scale", "all prompts", *order], rows,
        caption=f"{base}, `{sampler}` at NFE {nfe}: {AGREEMENT} per prompt category (all prompts: "
                f"the aggregate row) by guidance scale; per column the best guidance scale is "
                f"marked",
        directions=[None] + [hib] * (len(order) + 1), key=f"{base}-{AGREEMENT}-categories"))]


def prompt_tables(at: pd.DataFrame, members: pd.DataFrame, prompts: pd.DataFrame, base: str,
                  sampler: str, nfe: int) -> list[Block]:
    per = at[at["slice"].str.startswith(PROMPT)]
    if per.empty:
        return []
    found = [s[len(PROMPT):] for s in per["slice"].unique()]
    ids = [i for i in prompts.index if i in set(found)] + sorted(set(found) - set(prompts.index))
    hib = direction(AGREEMENT) is not False
    names = member_names(members)
    labels = [f"guidance {names[m]}" for m in members["model"]]
    # the column the compact table is ordered by: the scale whose aggregate is best
    agg = at[(at["slice"] == "all")].set_index("model")["value"]
    vals = [agg.get(m, math.nan) for m in members["model"]]
    finite = [v for v in vals if math.isfinite(v)]
    best_col = vals.index((max if hib else min)(finite)) if finite else 0
    rows, keys = [], []
    for pid in ids:
        text = str(prompts["cond_text"].get(pid, "–")) if "cond_text" in prompts else "–"
        cat = str(prompts["category"].get(pid, "") or "–") if "category" in prompts else "–"
        cells: list[Any] = [pid, text, cat]
        got = []
        for model in members["model"]:
            r = per[(per["model"] == model) & (per["slice"] == PROMPT + pid)]
            v = value_of(r.iloc[0]) if len(r) else None
            cells.append(v if v is not None else "–")
            got.append(v.value if v is not None else math.nan)
        ok = [(g, names[m]) for g, m in zip(got, members["model"]) if math.isfinite(g)]
        cells.append((max if hib else min)(ok, key=lambda t: t[0])[1] if ok else "–")
        rows.append(cells)
        keys.append(got[best_col])
    columns = ["prompt", "text", "category", *labels, "best guidance"]
    caption = (f"{base}, `{sampler}` at NFE {nfe}: {AGREEMENT} of each prompt by guidance scale; "
               f"best guidance: the scale with the {'highest' if hib else 'lowest'} {AGREEMENT} "
               f"for that prompt")
    full = Table(columns, rows, caption=caption + " (click a column header to sort)",
                 key=f"{base}-{AGREEMENT}-prompts")
    if len(rows) <= 2 * EDGE + 2:
        full.caption = caption
        return [full]
    full.formats = ("html",)
    order = sorted(range(len(rows)), key=lambda i: (-keys[i] if hib else keys[i])
                   if math.isfinite(keys[i]) else math.inf)
    order = [i for i in order if math.isfinite(keys[i])]
    gap = ["…"] * len(columns)
    compact = [rows[i] for i in order[:EDGE]] + [gap] + [rows[i] for i in order[-EDGE:]]
    words = ("highest", "lowest") if hib else ("lowest", "highest")
    return [full, Table(columns, compact, key=f"{base}-{AGREEMENT}-prompts-edges",
                        formats=("md", "latex"),
                        caption=f"{caption}. The {EDGE} prompts with the {words[0]} and the "
                                f"{EDGE} with the {words[1]} {AGREEMENT} at {labels[best_col]} "
                                f"(the best aggregate) of {len(rows)}; the HTML report lists all "
                                f"of them.")]
