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
