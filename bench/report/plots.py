"""Log-log plots of a metric against counted NFE, one line per sampler with its interval as a
shaded band."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def nfe_plot(df: pd.DataFrame, title: str, ylabel: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = df["sampler"].nunique()
    cols = 1 if n <= 12 else 2
    fig, ax = plt.subplots(figsize=(6 + 2.2 * cols, 4.2 + 0.08 * max(0, n - 12)), dpi=120)
    styles = ["-", "--", ":", "-."]
    markers = ["o", "s", "^", "D"]
    for i, (sampler, g) in enumerate(df.groupby("sampler", sort=True)):
        g = g.sort_values("nfe_counted")
        g = g[np.isfinite(g["value"].to_numpy(float))]  # NaN / inf: in the table, not the plot
        x, y = g["nfe_counted"].to_numpy(float), g["value"].to_numpy(float)
        # the interval as a band; a missing or infinite bound (or one <= 0 on the log axis)
        # draws the band to the value on that side
        lo, hi = g["ci_low"].to_numpy(float), g["ci_high"].to_numpy(float)
        lo = np.where(np.isfinite(lo) & (lo > 0) & (lo <= y), lo, y)
        hi = np.where(np.isfinite(hi) & (hi >= y), hi, y)
        (line,) = ax.plot(x, y, marker=markers[i // 10 % 4], ms=4, ls=styles[i // 10 % 4],
                          label=str(sampler))
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("NFE (counted)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=cols, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def tradeoff_plot(pts: pd.DataFrame, title: str, xlabel: str, ylabel: str, path: Path) -> Path:
    """One panel per requested NFE (shared axes), one line per sampler through its points in
    guidance-scale order; x and y with their intervals as error bars, each point labelled.

    ``pts``: one row per point with ``sampler``, ``nfe``, ``_scale`` (the order along a line;
    NaN first), ``label`` (the text beside the point), and ``value``, ``ci_low``, ``ci_high``
    suffixed ``_x`` and ``_y``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nfes = sorted(int(n) for n in pts["nfe"].unique())
    samplers = sorted(pts["sampler"].astype(str).unique())
    ncol = min(len(nfes), 3)
    nrow = -(-len(nfes) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol + 1.6, 4.0 * nrow), dpi=120,
                             sharex=True, sharey=True, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = ["o", "s", "^", "D", "v", "P"]

    def err(v: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """[below, above] lengths; a missing or inverted bound draws no bar on that side."""
        below = np.where(np.isfinite(lo) & (lo <= v), v - lo, 0.0)
        above = np.where(np.isfinite(hi) & (hi >= v), hi - v, 0.0)
        return np.vstack([below, above])

    for k, nfe in enumerate(nfes):
        ax = axes[k // ncol][k % ncol]
        for i, sampler in enumerate(samplers):
            g = pts[(pts["nfe"] == nfe) & (pts["sampler"].astype(str) == sampler)]
            if g.empty:
                continue
            g = g.assign(_o=g["_scale"].astype(float).fillna(-np.inf)).sort_values("_o")
            x, y = g["value_x"].to_numpy(float), g["value_y"].to_numpy(float)
            ax.errorbar(x, y, xerr=err(x, g["ci_low_x"].to_numpy(float), g["ci_high_x"].to_numpy(float)),
                        yerr=err(y, g["ci_low_y"].to_numpy(float), g["ci_high_y"].to_numpy(float)),
                        color=colors[i % len(colors)], marker=markers[i // len(colors) % len(markers)],
                        ms=4, lw=1.2, elinewidth=0.8, capsize=2, alpha=0.9,
                        label=sampler if k == 0 else None)
            for xi, yi, text in zip(x, y, g["label"].astype(str)):
                ax.annotate(text, (xi, yi), xytext=(4, 3), textcoords="offset points", fontsize=7,
                            color=colors[i % len(colors)])
        ax.set_title(f"NFE {nfe}", fontsize=10)
        ax.grid(True, alpha=0.3)
        if k % ncol == 0:
            ax.set_ylabel(ylabel)
        if k // ncol == nrow - 1:
            ax.set_xlabel(xlabel)
    for k in range(len(nfes), nrow * ncol):
        axes[k // ncol][k % ncol].set_visible(False)
    fig.suptitle(title, fontsize=10)
    fig.legend(title="sampler", fontsize=8, title_fontsize=8, loc="upper left",
               bbox_to_anchor=(1.0 - 1.5 / fig.get_figwidth(), 0.9))
    fig.tight_layout(rect=(0, 0, 1.0 - 1.6 / fig.get_figwidth(), 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
