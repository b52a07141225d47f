"""The loop eval ``nfe_to_target``: bisection over NFE finds what a dense ``nfe_curve`` grid
confirms, and a kill in the middle of its loop resumes to identical rows."""

from __future__ import annotations

import subprocess

import numpy as np
import pandas as pd

from conftest import ROOT, debug_run_cmd, kill_at_first_checkpoint, small_suite

ORACLE = {"name": "gmm", "label": "g", "params": {"shape": [1, 4, 4], "cov": "full", "var_min": 0.01}}
VALUES = ["metric", "nfe", "step", "value", "ci_low", "ci_high", "nfe_counted", "steps"]


def target_suite(target: float, **over) -> dict:
    ev = {"name": "nfe_to_target", "params": {"metric": "oracle_rmse", "target": target,
                                              "nfe_min": 2, "nfe_max": 40}}
    suite = small_suite(name="ntt", samples=24, models=[ORACLE], samplers=["ddim"], evals=[ev])
    suite.pop("nfe")
    suite.update(over)
    return suite


def test_bisection_finds_what_a_dense_grid_confirms(cli, write_suite, tmp_path):
    dense = small_suite(name="dense", samples=24, models=[ORACLE], samplers=["ddim"],
                        nfe=list(range(2, 41)))
    assert cli("run", write_suite(dense, "dense.yaml"), "--results", tmp_path / "d")[0] == 0
    curve = pd.read_parquet(tmp_path / "d").set_index("nfe")["value"].sort_index()
    assert (np.diff(curve.to_numpy()) < 0).all()  # DDIM's error falls monotonically here
    target = float((curve[13] + curve[14]) / 2)  # reached first at NFE 14

    code, out, err = cli("run", write_suite(target_suite(target)), "--results", tmp_path / "t")
    assert code == 0, err
    rows = pd.read_parquet(tmp_path / "t").sort_values("step")
    result = rows[rows["metric"] == "nfe_to_target"].iloc[0]
    assert result["value"] == 14 and result["nfe"] == 14
    probes = rows[rows["metric"] == "rmse"]
    assert len(probes) <= 7 and result["step"] == len(probes)  # bisection, not a scan
    for _, p in probes.iterrows():  # every probe is the dense curve's number, bitwise
        assert p["value"] == curve[int(p["nfe"])]

    code, out, err = cli("run", write_suite(target_suite(float(curve[40]) / 2), "far.yaml"),
                         "--results", tmp_path / "far")
    far = pd.read_parquet(tmp_path / "far")
    assert code == 0 and np.isnan(far[far["metric"] == "nfe_to_target"]["value"].iloc[0])


def test_bad_parameters_fail_plan(cli, write_suite):
    for params, field in (({"target": "low"}, "target"), ({"target": 0.1, "nfe_max": 0}, "nfe_max"),
                          ({"target": 0.1, "output": "fid"}, "output"),
                          ({"target": 0.1, "metric": "oracle_rmes"}, "metric[0]")):
        suite = target_suite(0.1)
        suite["evals"][0]["params"].update(params)
        code, _, err = cli("plan", write_suite(suite))
        assert code == 2 and f"evals[0].params.{field}" in err, err


def _rows(folder) -> pd.DataFrame:
    return pd.read_parquet(folder).sort_values(["step"])[VALUES].reset_index(drop=True)


def test_kill_mid_loop_resumes_to_identical_rows(tmp_path):
    # a slower oracle (3x16x16, 400 samples): each probe takes most of a second, so the kill
    # lands between the first checkpoint and the end
    big = {**ORACLE, "params": {"shape": [3, 16, 16], "cov": "full", "var_min": 0.01}}
    suite = target_suite(0.07, samples=400, batch_size=200, models=[big])
    cmd = debug_run_cmd(suite, tmp_path)
    assert subprocess.run(cmd + ["--results", str(tmp_path / "clean")], cwd=ROOT,
                          capture_output=True).returncode == 0
    clean = _rows(tmp_path / "clean")
    assert len(clean) >= 4  # several probes: there is a middle to kill in

    res = tmp_path / "killed"
    kill_at_first_checkpoint(cmd + ["--results", str(res)], res)
    assert not list(res.rglob("ntt/*.parquet"))  # killed in the middle of the loop
    with np.load(next((res / "_partial").glob("*.npz"))) as z:
        done = len(z["probes/steps"])
    assert 1 <= done < len(clean) - 1

    r = subprocess.run(cmd + ["--results", str(res)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    pd.testing.assert_frame_equal(_rows(res), clean)
