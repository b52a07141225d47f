"""Number formatting, Markdown tables and convergence-slope fits from result rows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def fmt(v: float, nan: str = "–") -> str:
    """A number in 3 significant digits (``blocks.sig``); ``nan`` for NaN/None (a missing
    interval shows '–'), 'inf' / '-inf' for infinities."""
    from bench.report.blocks import sig

    if v is None or (isinstance(v, float) and math.isnan(v)):
        return nan
    return sig(v)


def fmt_value(v: float) -> str:
    """A measured value: NaN shows as 'NaN' (the metric was not a number), not as missing."""
    return fmt(v, nan="NaN")


def nonfinite_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows whose value is NaN or +-inf (tables show them; plots and fits leave them out)."""
    return df[~np.isfinite(df["value"].to_numpy(float))]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def fit_slope(nfe: np.ndarray, value: np.ndarray) -> float:
    """Least-squares slope of log(value) against log(NFE)."""
    ok = (nfe > 0) & (value > 0) & np.isfinite(value)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(nfe[ok]), np.log(value[ok]), 1)[0])


def slopes(df: pd.DataFrame, min_nfe: int = 0) -> pd.DataFrame:
    """Per sampler: fitted slope of log value vs log counted NFE (NFE >= min_nfe)."""
    out = []
    for sampler, g in df.groupby("sampler", sort=True):
        g = g[g["nfe_counted"] >= min_nfe].sort_values("nfe_counted")
        g = g[np.isfinite(g["value"].to_numpy(float))]  # NaN / inf values are not fitted
        out.append({"sampler": sampler, "sampler_name": g["sampler_name"].iloc[0] if len(g) else "",
                    "slope": fit_slope(g["nfe_counted"].to_numpy(float), g["value"].to_numpy(float)),
                    "nfe_min": int(g["nfe_counted"].min()) if len(g) else 0,
                    "nfe_max": int(g["nfe_counted"].max()) if len(g) else 0, "points": len(g)})
    return pd.DataFrame(out)
