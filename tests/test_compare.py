"""bench compare: exit 1 on a planted regression, 0 within tolerance."""

import pandas as pd
import pytest

from bench.compare import compare
from conftest import small_suite


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    from bench.cli import main
    import yaml

    d = tmp_path_factory.mktemp("cmp")
    (d / "s.yaml").write_text(yaml.safe_dump(small_suite(name="nightly-test", nfe=[10])))
    assert main(["run", str(d / "s.yaml"), "--results", str(d / "base")]) == 0
    return d


def _plant(src, dst, factor, sampler="heun"):
    df = pd.read_parquet(src)
    m = df["sampler"] == sampler
    for col in ("value", "ci_low", "ci_high"):
        df.loc[m, col] *= factor
    dst.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(dst)


def test_identical_runs_pass(cli, baseline):
    base = baseline / "base"
    code, out, _ = cli("compare", base, base)
    assert code == 0 and "0 regression(s) in 4 compared metric(s)" in out


def test_planted_regression_fails_and_is_named(cli, baseline):
    _plant(baseline / "base", baseline / "worse" / "rows.parquet", 1.5)
    code, out, _ = cli("compare", baseline / "base", baseline / "worse")
    assert code == 1
    line = next(l for l in out.splitlines() if "| heun |" in l)
    assert "REGRESSION" in line and "+50.00%" in line
    assert "1 regression(s) in 4" in out


def test_within_tolerance_and_improvements_pass(cli, baseline):
    _plant(baseline / "base", baseline / "slight" / "rows.parquet", 1.03)
    assert cli("compare", baseline / "base", baseline / "slight")[0] == 0  # default rel:0.05
    assert cli("compare", baseline / "base", baseline / "slight", "--tol", "rmse=rel:0.01")[0] == 1
    _plant(baseline / "base", baseline / "better" / "rows.parquet", 0.5)
    code, out, _ = cli("compare", baseline / "base", baseline / "better")
    assert code == 0 and "improved" in out


def test_ci_and_abs_tolerances(baseline):
    base = pd.read_parquet(baseline / "base")
    shifted = base.copy()
    width = (base["ci_high"] - base["ci_low"]).max()
    for col in ("value", "ci_low", "ci_high"):
        shifted[col] = base[col] + 3 * width  # worse, intervals no longer overlap
    assert compare(base, shifted, {"rmse": "ci"})[0]["regressed"].all()
    assert not compare(base, shifted, {"rmse": f"abs:{4 * width}"})[0]["regressed"].any()


def test_missing_metric_in_current_is_a_regression(baseline):
    base = pd.read_parquet(baseline / "base")
    table, md = compare(base, base[base["sampler"] != "euler"], {})
    assert table["regressed"].sum() == 1 and "only in baseline" in md


def test_run_ids_resolve_and_bad_tolerance_errors(cli, baseline):
    code, out, _ = cli("compare", "latest", "latest", "--results", baseline / "base")
    assert code == 0
    code, _, err = cli("compare", "latest", "nope", "--results", baseline / "base")
    assert code == 2 and "no run 'nope'" in err
    code, _, err = cli("compare", baseline / "base", baseline / "base", "--tol", "rmse=5%")
    assert code == 2 and "abs:X, rel:X or ci" in err


def test_non_finite_current_values_fail_even_against_nan(cli, tmp_path):
    import pyarrow.parquet as pq

    from bench.store import rows_table

    key = {"suite": "s", "model": "m", "sampler": "ddim", "nfe": 10, "eval": "nfe_curve",
           "slice": "all", "step": 0, "metric": "rmse", "created_at": "2026-01-01T00:00:00+00:00"}
    for name, v in (("nan", float("nan")), ("inf", float("inf")), ("ok", 0.5)):
        (tmp_path / name).mkdir()
        pq.write_table(rows_table([{**key, "value": v}]), tmp_path / name / "r.parquet")
    for base, cur in (("nan", "nan"), ("ok", "nan"), ("ok", "inf")):
        code, out, _ = cli("compare", tmp_path / base, tmp_path / cur)
        assert code == 1 and "NON-FINITE" in out, (base, cur, out)
    code, out, _ = cli("compare", tmp_path / "nan", tmp_path / "ok")
    assert code == 0
