"""Report sections of the ``robustness`` eval (``bench.evals.robustness``): attack success rates
by rule and search per model (Wilson intervals; lower is a more robust model), the objective
reached per attack, and galleries of original against adversarial prompts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.report.blocks import (Block, Figure, Heading, Table, Text, Value, figure_heading,
                                 mark_best)
from bench.report.sections import ReportContext, interval_caption

#: successful attacks shown per cell in the galleries (greedy first, then by p-value)
GALLERY_ATTACKS = 8


def _cell_tables(ctx: ReportContext, keys: list[str]) -> pd.DataFrame:
    """The per-query tables of the cells ``keys`` (config hashes), concatenated."""
    from bench.store import read_samples

    table = read_samples(ctx.results, ctx.suite)
    return table[table["config_hash"].isin(keys)] if "config_hash" in table else table.iloc[:0]


def _level_text(params: dict[str, Any]) -> str:
    from bench.evals.robustness import success_level

    correction = params.get("correction", "none")
    level = success_level(params["alpha"], params["queries"], correction)
    if correction == "bonferroni":
        return (f"{level:.3g} ({params['alpha']:g} / {params['queries']} queries: Bonferroni, so a "
                f"model that ignores the change fails each attack with probability >= "
                f"{1 - params['alpha']:g})")
    return f"{level:g} (uncorrected for the {params['queries']} queries per attack)"


def robustness_sections(sdf: pd.DataFrame, ctx: ReportContext) -> list[Block]:
    rates = sdf[sdf["metric"] == "attack_success_rate"]
    if rates.empty:
        return []
    params = json.loads(rates["eval_params"].iloc[0])
    b = params["budget"]
    cells = rates.drop_duplicates("config_hash")
    out: list[Block] = [
        Heading("Prompt-robustness attacks"),
        Text(f"Each prompt is attacked by each rule ({', '.join(params['rules'])}) with each search "
             f"({', '.join(params['searches'])}; Gao et al. 2023): at most {params['queries']} "
             f"generated sets of {params['images']} images per attack (greedy's word-importance "
             f"ablations count), at most {b['max_words']} word(s) changed and "
             f"{100 * b['max_edit_fraction']:g}% of the prompt's characters edited. The search "
             f"maximises `{params['objective']}`; an attack succeeds when the `{params['test']}` "
             f"test's p-value is below {_level_text(params)}. Images of every prompt come from the "
             f"same initial noises (common random numbers). "
             + interval_caption("attack_success_rate") + ".")]
    within = rates[rates["slice"].str.contains(",within=", regex=False)]
    rates = rates.drop(within.index)
    slices = list(dict.fromkeys(s for s in rates["slice"] if s.startswith("rule=")))
    slices += [s for s in dict.fromkeys(rates["slice"]) if s.startswith("search=")]
    labels = [sl.replace("rule=", "").replace(",search=", " / ").replace("search=", "all rules / ")
              for sl in slices]
    for (sampler, nfe), g in rates.groupby(["sampler", "nfe"], sort=True):
        rows: list[list[Any]] = []
        for m in sorted(g["model"].unique()):
            cells_: list[Any] = [str(m)]
            for sl in slices:
                r = g[(g["model"] == m) & (g["slice"] == sl)]
                cells_.append(Value(float(r["value"].iloc[0]), float(r["ci_low"].iloc[0]),
                                    float(r["ci_high"].iloc[0]), f"(n={int(r['n_samples'].iloc[0])})")
                              if len(r) else "–")
            rows.append(cells_)
        out += [Heading(f"Attack success rate — {sampler}, NFE {int(nfe)}", 3),
                mark_best(Table(["model"] + labels, rows, key=f"attack-success-{sampler}-{nfe}",
                                higher_is_better=False,
                                caption="Share of prompts whose attack succeeded, per rule / "
                                        "search (columns) and model (rows); lower: a more "
                                        "robust model."))]
    out += _within_blocks(within, ctx)
    table = _cell_tables(ctx, [str(k) for k in cells["config_hash"]])
    if not table.empty and "phase" in table:
        res = table[table["phase"] == "result"]
        out += _objective_blocks(res, params, ctx)
        out += _query_table(res)
    out += _gallery_blocks(ctx)
    return out


def _within_blocks(within: pd.DataFrame, ctx: ReportContext) -> list[Block]:
    """Success rate within the first q queries: a table at a few budgets and the curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if within.empty:
        return []
    w = within.assign(search=within["slice"].str.extract(r"search=([^,]+)")[0],
                      q=within["slice"].str.extract(r"within=(\d+)")[0].astype(int))
    qmax = int(w["q"].max())
    shown = sorted({q for q in (1, 2, 3, 5, qmax) if q <= qmax})
    out: list[Block] = []
    for (sampler, nfe), g in w.groupby(["sampler", "nfe"], sort=True):
        rows: list[list[Any]] = []
        fig, ax = plt.subplots(figsize=(6.0, 3.6))
        for (model, search), h in g.groupby(["model", "search"], sort=True):
            h = h.sort_values("q")
            cells_: list[Any] = [str(model), str(search)]
            for q in shown:
                r = h[h["q"] == q].iloc[0]
                cells_.append(Value(float(r["value"]), float(r["ci_low"]), float(r["ci_high"])))
            rows.append(cells_)
            line, = ax.plot(h["q"], h["value"], marker="o", ms=3, label=f"{model} / {search}")
            ax.fill_between(h["q"], h["ci_low"], h["ci_high"], color=line.get_color(), alpha=0.12)
        ax.set_xlabel("query budget q (generated sets)")
        ax.set_ylabel("attack success rate")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{ctx.suite}: success within q queries ({sampler}, NFE {int(nfe)})")
        ax.legend(fontsize=7)
        fig.tight_layout()
        png = ctx.out / f"{ctx.slug(ctx.suite)}_attack_budget_{ctx.slug(str(sampler))}_nfe{int(nfe)}.png"
        fig.savefig(png, dpi=110)
        plt.close(fig)
        out += [Heading(f"Success within a query budget — {sampler}, NFE {int(nfe)}", 3),
                Table(["model", "search"] + [f"q = {q}" for q in shown], rows,
                      key=f"attack-within-{sampler}-{nfe}",
                      caption="Share of attacks (all rules) whose first success came within "
                              "the first q generated sets, with Wilson 95% intervals: the "
                              "success rate at a smaller budget, read off the same attacks "
                              "and judged at the full budget's success level (with the "
                              "Bonferroni correction, stricter than a q-query attack's own)."),
                Figure(png, "Success rate within the first q queries, per model and search "
                            "(bands: Wilson 95% intervals)")]
    return out


def _objective_blocks(res: pd.DataFrame, params: dict[str, Any], ctx: ReportContext) -> list[Block]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = res[np.isfinite(res["objective"].astype(float))]
    if res.empty:
        return []
    groups = list(res.groupby(["rule", "search", "model"], sort=True))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.95 * len(groups)), 3.8))
    data = [g["objective"].astype(float).to_numpy() for _, g in groups]
    ax.boxplot(data, showfliers=False)
    rng = np.random.default_rng(0)
    for i, d in enumerate(data, start=1):
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(d)), d, s=8, alpha=0.6)
    ax.set_xticks(range(1, len(groups) + 1))
    ax.set_xticklabels([f"{r}\n{s}\n{m}" for (r, s, m), _ in groups], fontsize=6.5)
    ax.set_ylabel(params["objective"])
    ax.set_title(f"{ctx.suite}: objective of the adversarial prompt per attack")
    fig.tight_layout()
    png = ctx.out / f"{ctx.slug(ctx.suite)}_attack_objectives.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return [Heading("Objective reached", 3),
            Figure(png, f"{params['objective']} of each attack's final prompt (box: quartiles; "
                        f"points: attacks), by rule, search and model")]


def _query_table(res: pd.DataFrame) -> list[Block]:
    rows = []
    for (model, rule, search), g in res.groupby(["model", "rule", "search"], sort=True):
        tried = g[g["note"] == ""]
        ed = tried["edit_distance"].astype(float)
        rows.append([str(model), str(rule), str(search), str(len(g)),
                     str(int((g["note"] != "").sum())),
                     f"{ed.mean():.2f}" if len(ed) else "–",
                     f"{float(np.median(tried['p_value'])):.3g}" if len(tried) else "–"])
    return [Table(["model", "rule", "search", "attacks", "no candidate", "mean edit distance",
                   "median p-value"], rows, key="attack-details",
                  caption="Per model, rule and search: attacks run, attacks with no candidate "
                          "(no perturbable word, or none within the budget), the mean "
                          "Levenshtein distance of the final prompt and the median p-value.")]


def _gallery_blocks(ctx: ReportContext) -> list[Block]:
    from bench.evals.robustness import ATTACKS_DIR
    from bench.integrity import CorruptFile, load_npz

    root = Path(ctx.results) / ATTACKS_DIR / ctx.slug(ctx.suite)
    if not root.is_dir():
        return []
    out: list[Block] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        items = []
        for f in sorted(folder.glob("*.npz")):
            try:
                z = load_npz(f)
            except CorruptFile:
                continue
            items.append((json.loads(str(z["info"])), z["original"], z["adversarial"]))
        shown = sorted((it for it in items if it[0]["success"]),
                       key=lambda it: (it[0]["search"] != "greedy", it[0]["p_value"]))[:GALLERY_ATTACKS]
        if not shown:
            continue
        png = ctx.out / f"{ctx.slug(ctx.suite)}_attacks_{folder.name}.png"
        pair_png(shown, f"{ctx.suite}: {folder.name.replace('__', ' / ')}", png)
        where = folder.name.replace("__", " / ")
        out += [figure_heading(f"Successful attacks — {where}"),
                Figure(png, f"successful attacks, {where}: each row the original prompt's images "
                            "(left) and the adversarial prompt's (right), from the same initial "
                            "noises")]
    return out


def visible(text: str) -> str:
    """``text`` with every non-ASCII character written as ``<U+XXXX>``: a glyph swap looks like
    the letter it replaces (or is missing from the plot's font), so it is named instead."""
    return "".join(c if ord(c) < 128 else f"<U+{ord(c):04X}>" for c in text)


def pair_png(items: list[tuple[dict[str, Any], np.ndarray, np.ndarray]], title: str, png: Path) -> Path:
    """Rows of [original images | adversarial images], each row titled with both prompts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = items[0][1].shape[0]
    fig, axes = plt.subplots(len(items), 2, figsize=(2 * max(2.4, 0.9 * n), 1.4 * len(items) + 0.5),
                             squeeze=False)
    for row, (info, orig, adv) in zip(axes, items):
        for ax, imgs, text in ((row[0], orig, info["original"]), (row[1], adv, info["adversarial"])):
            strip = np.concatenate([im.transpose(1, 2, 0) for im in imgs], axis=1)
            ax.imshow(strip.squeeze(-1) if strip.shape[-1] == 1 else strip, cmap="gray",
                      vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(visible(text) if ax is row[0] else
                         f"{visible(text)}\n[{info['rule']}/{info['search']}, "
                         f"p={info['p_value']:.2g}]", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


__all__ = ["robustness_sections", "pair_png"]
