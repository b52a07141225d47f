"""Non-finite results: samples with NaN / inf are counted in the rows, a NaN or inf value makes
`bench run` exit 1 naming the cell (also on a rerun that computes nothing), and compare fails it."""

from __future__ import annotations

import pandas as pd
import torch

from bench.models.gmm import GMMDenoiser
from conftest import small_suite


def test_nan_samples_are_counted_flagged_and_fail_the_run(cli, write_suite, tmp_path, monkeypatch):
    real = GMMDenoiser.__call__

    def poisoned(self, x, sigma, cond=None):  # samples 0 and 5 of every batch of 8 turn NaN
        out = real(self, x, sigma, cond)
        out[[0, 5]] = torch.nan
        return out

    monkeypatch.setattr(GMMDenoiser, "__call__", poisoned)
    suite = write_suite(small_suite(samplers=["ddim", "euler"], nfe=[4], samples=16, batch_size=8))
    res = tmp_path / "res"
    code, out, err = cli("run", suite, "--results", res)
    assert code == 1, (out, err)
    lines = [ln for ln in out.splitlines() if ln.startswith("non-finite: ")]
    assert len(lines) == 2 and "g/ddim/nfe=4/nfe_curve rmse (all) = nan (4 of 16 samples" in out
    rows = pd.read_parquet(res)
    assert (rows["n_nonfinite"] == 4).all() and rows["value"].isna().all()
    code, out, _ = cli("run", suite, "--results", res)  # nothing computed: still reported
    assert code == 1 and "0 computed" in out and out.count("non-finite: ") == 2
    code, out, _ = cli("compare", res, res)
    assert code == 1 and "NON-FINITE" in out


def test_finite_results_exit_zero_with_a_zero_count(cli, write_suite, tmp_path):
    suite = write_suite(small_suite(samplers=["ddim"], nfe=[4], samples=8))
    code, out, _ = cli("run", suite, "--results", tmp_path / "res")
    assert code == 0 and "non-finite" not in out
    assert (pd.read_parquet(tmp_path / "res")["n_nonfinite"] == 0).all()
