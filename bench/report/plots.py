"""Log-log plots of a metric against counted NFE, one line per sampler."""

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
        y = g["value"].to_numpy(float)
        # a missing or infinite interval bound draws no bar on that side
        err = [np.nan_to_num(np.clip(y - g["ci_low"].to_numpy(float), 0, None), nan=0, posinf=0),
               np.nan_to_num(np.clip(g["ci_high"].to_numpy(float) - y, 0, None), nan=0, posinf=0)]
        ax.errorbar(g["nfe_counted"], y, yerr=err, marker=markers[i // 10 % 4], ms=4,
                    ls=styles[i // 10 % 4], capsize=3, label=str(sampler))
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
