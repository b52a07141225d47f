"""Report sections of the ``likelihood`` eval: the bound per (model, K) under each reverse
variance (Bao et al. 2022, Table 1's layout), the paired gains of the analytic variance, the ODE
likelihood, the paired effect of calibration (Zheng et al. 2023) per route, and a plot of the
bound against K with the ODE likelihood beside it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.report.blocks import Block, Figure, Heading, Table, Text, Value
from bench.report.sections import ReportContext, interval_caption

NAMES = {"beta": "β", "beta_tilde": "β̃", "analytic": "analytic"}


def _value(r: pd.DataFrame) -> Value | str:
    if r.empty:
        return "–"
    return Value(float(r["value"].iloc[0]), float(r["ci_low"].iloc[0]), float(r["ci_high"].iloc[0]))


def _calibrated(params: str) -> bool:
    try:
        return "calibrate" in json.loads(params) or "calibration" in json.loads(params)
    except (TypeError, ValueError):
        return False


def likelihood_sections(sdf: pd.DataFrame, ctx: ReportContext) -> list[Block]:
    nll = sdf[sdf["metric"] == "nll_bpd"]
    if nll.empty:
        return []
    bound = nll[nll["slice"].str.startswith("variance=")]
    ode = nll[nll["slice"] == "all"]
    out: list[Block] = [Heading("Likelihood (bits per dimension)")]
    out.append(Text(
        "Negative log-likelihood of held-out data in bits per dimension (8-bit images: per 8-bit "
        "value), lower is better. The bound is the DDPM variational bound (Ho et al. 2020) over "
        "K steps uniform in the timestep, with the reverse variance β, β̃ or Analytic-DPM's "
        "optimum (Bao et al. 2022), the discretised decoder for 8-bit data; the three variances "
        "share the same draws and network passes, so their differences are paired per image. "
        "The ODE likelihood is the probability-flow ODE's (Song et al. 2021; RK4 in log s, "
        "Hutchinson divergence for images, uniform dequantisation). Class-conditional models are "
        "scored with each image's label. " + interval_caption("nll_bpd") + "."))
    if not bound.empty:
        params = json.loads(bound["eval_params"].iloc[0])
        variances = [v for v in ("beta", "beta_tilde", "analytic")
                     if f"variance={v}" in set(bound["slice"])]
        rows: list[list[Any]] = []
        for model in sorted(bound["model"].unique()):
            g = bound[bound["model"] == model]
            for k in sorted(g["nfe"].unique()):
                rows.append([str(model), str(int(k))] + [
                    _value(g[(g["nfe"] == k) & (g["slice"] == f"variance={v}")])
                    for v in variances])
        n = int(bound["n_samples"].iloc[0])
        out += [Heading("The bound at K steps", 3),
                Table(["model", "K"] + [NAMES[v] for v in variances], rows,
                      key="likelihood-bound",
                      caption=f"Bound on the NLL (bits/dim) of {n} images; mean [95% CI] over "
                              f"images. Analytic-DPM's Gamma from {params.get('gamma_samples')} "
                              f"training images.")]
        out += _gain_table(sdf)
    if not ode.empty:
        rows = [[str(m), str(int(g["steps"].iloc[0])), _value(g)]
                for m, g in ode.groupby("model", sort=True)]
        p = json.loads(ode["eval_params"].iloc[0])
        out += [Heading("Probability-flow ODE likelihood", 3),
                Table(["model", "RK4 steps", "NLL (bits/dim)"], rows, key="likelihood-ode",
                      caption=f"{int(ode['n_samples'].iloc[0])} images; divergence "
                              f"{p.get('divergence', 'auto')} (auto: exact up to 64 dimensions, "
                              f"else Hutchinson with {p.get('probes', 1)} probe(s) per image, "
                              f"whose noise the interval covers with the images' spread).")]
    out += _calibration_table(sdf, ctx)
    fig = _bound_plot(bound, ode, ctx.out / f"{ctx.slug('likelihood-bound')}.png")
    if fig is not None:
        out.append(Figure(fig, "The bound against K (log scale) for each reverse variance, with "
                               "95% CI bands; dotted: the ODE likelihood. The scale is set by β and "
                               "the analytic variance: β̃ runs off it where it is far larger (the "
                               "table has its values)."))
    return out


def _gain_table(sdf: pd.DataFrame) -> list[Block]:
    """The paired differences β − analytic and β̃ − analytic (positive: analytic is tighter)."""
    diff = sdf[sdf["metric"] == "nll_bpd_diff"]
    want = {"variance=beta,minus=analytic": "β − analytic",
            "variance=beta_tilde,minus=analytic": "β̃ − analytic"}
    diff = diff[diff["slice"].isin(want)]
    if diff.empty:
        return []
    cols = [c for c in want if c in set(diff["slice"])]
    rows = []
    for model in sorted(diff["model"].unique()):
        g = diff[diff["model"] == model]
        for k in sorted(g["nfe"].unique()):
            rows.append([str(model), str(int(k))] + [
                _value(g[(g["nfe"] == k) & (g["slice"] == c)]) for c in cols])
    return [Table(["model", "K"] + [want[c] for c in cols], rows, key="likelihood-gain",
                  caption="Paired differences of the bound (bits/dim; same images, draws and "
                          "network passes): positive means the analytic variance gives the "
                          "tighter bound. " + interval_caption("nll_bpd_diff") + ".")]


def _calibration_table(sdf: pd.DataFrame, ctx: ReportContext) -> list[Block]:
    """Calibrated minus plain, per image (same images and draws), for each route and K."""
    from bench.metrics.base import mean_ci
    from bench.store import read_samples

    models = sdf.drop_duplicates("model")[["model", "model_name", "model_params"]]
    pairs = []
    for name, g in models.groupby("model_name", sort=True):
        plain = [m for m, p in zip(g["model"], g["model_params"]) if not _calibrated(p)]
        cal = [m for m, p in zip(g["model"], g["model_params"]) if _calibrated(p)]
        if len(plain) == 1:  # each calibration of a model against the plain model
            pairs.extend((plain[0], c) for c in cal)
    if not pairs:
        return []
    table = read_samples(ctx.results, ctx.suite)
    table = table[table["config_hash"].isin(set(sdf["config_hash"]))]
    columns = [("ODE", "bpd")] + [(NAMES[v], f"bpd_{v}") for v in ("beta", "beta_tilde", "analytic")
                                 if f"bpd_{v}" in table]
    rows: list[list[Any]] = []
    for plain, cal in pairs:
        for (sampler, nfe), g in table[table["model"].isin([plain, cal])].groupby(
                ["sampler", "nfe"], sort=True):
            a = g[g["model"] == plain].set_index("index")
            b = g[g["model"] == cal].set_index("index")
            common = a.index.intersection(b.index)
            if not len(common):
                continue
            label = "ODE" if a["bpd"].notna().any() else f"bound K={int(nfe)}"
            cells: list[Any] = [f"{cal} − {plain}", label]
            for _, col in columns:
                if col not in a or not a[col].notna().any():
                    cells.append("–")
                    continue
                d = (b.loc[common, col] - a.loc[common, col]).to_numpy(np.float64)
                cells.append(Value(*mean_ci(d)))
            rows.append(cells)
    if not rows:
        return []
    return [Heading("Calibration", 3),
            Table(["models", "route"] + [c for c, _ in columns], rows, key="likelihood-calibration",
                  caption="Calibrated minus plain model (Zheng et al. 2023), per image on the same "
                          "images and draws (bits/dim): negative means calibration lowers the NLL. "
                          "Mean [95% CI] over images (paired, Student t).")]


def _bound_plot(bound: pd.DataFrame, ode: pd.DataFrame, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if bound.empty:
        return None
    models = sorted(bound["model"].unique())
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.8), dpi=120,
                             squeeze=False, sharey=True)
    # the y range of beta and analytic (beta~ can be orders of magnitude above at small K)
    finite = bound[bound["slice"] != "variance=beta_tilde"]
    top = float(np.nanmax(finite["ci_high"])) if len(finite) else None
    colours = {"beta": "tab:blue", "beta_tilde": "tab:orange", "analytic": "tab:green"}
    for ax, model in zip(axes[0], models):
        g = bound[bound["model"] == model]
        for v, c in colours.items():
            s = g[g["slice"] == f"variance={v}"].sort_values("nfe")
            if s.empty:
                continue
            ax.plot(s["nfe"], s["value"], "o-", color=c, label=NAMES[v], ms=4)
            ax.fill_between(s["nfe"], s["ci_low"], s["ci_high"], color=c, alpha=0.15)
        o = ode[ode["model"] == model]
        if len(o):
            ax.axhline(float(o["value"].iloc[0]), color="k", ls=":", label="ODE")
        ax.set_xscale("log")
        ax.set_title(str(model), fontsize=9)
        ax.set_xlabel("K (steps of the bound)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("NLL (bits/dim)")
    if top is not None:
        low = float(np.nanmin(pd.concat([bound["ci_low"], ode["ci_low"]])))
        axes[0][0].set_ylim(low - 0.1 * (top - low), top + 0.5 * (top - low))
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
