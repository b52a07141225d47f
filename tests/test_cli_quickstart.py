"""The quickstart through the CLI (debug and local executors), resuming, determinism, reports."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.report.tables import slopes
from conftest import ROOT, small_suite

QUICKSTART = ROOT / "suites" / "quickstart.yaml"
# The quickstart itself, smaller: fewer samples and an 8x8 instead of 3x16x16 Gaussian.
SMALL = ["--set", "samples=48", "--set", "batch_size=16", "--set", "models.0.params.shape=[1,8,8]"]
REQUIRED = ("run_id suite model sampler sampler_params nfe nfe_counted metric value ci_low ci_high "
            "n_samples seed wall_s bench_version git_revision torch_version python_version device "
            "config_hash code_hash model_hash grid steps samples_per_s").split()
THEORY = {"ddim": -1, "euler": -1, "heun": -2, "dpm_solver_2": -2}


@pytest.mark.parametrize("executor", ["debug", "local"])
def test_quickstart_runs_reports_and_reruns_nothing(cli, tmp_path, executor):
    res = tmp_path / "results"
    code, out, err = cli("run", QUICKSTART, "--executor", executor, "--results", res, *SMALL)
    assert code == 0, err
    assert "16 computed, 0 already done, 0 failed; 16 cell(s) written" in out
    assert "heun: NFE 20 rounded down to 19" in err  # explicit, never silent

    df = pd.read_parquet(res)
    assert len(df) == 16 and set(REQUIRED) <= set(df.columns)
    assert (df["metric"] == "rmse").all() and (df["n_samples"] == 48).all()
    assert (df["ci_low"] < df["value"]).all() and (df["value"] < df["ci_high"]).all()
    heun = df[df["sampler"] == "heun"]
    assert (heun["nfe_counted"] == heun["nfe"] - 1).all()
    other = df[df["sampler"] != "heun"]
    assert (other["nfe_counted"] == other["nfe"]).all()

    fits = slopes(df).set_index("sampler")["slope"]
    for sampler, theory in THEORY.items():
        assert abs(fits[sampler] - theory) < 0.3, (sampler, fits[sampler])

    code, out, _ = cli("report", res, "--suite", "quickstart", "--out", tmp_path / "rep")
    assert code == 0
    md = (tmp_path / "rep" / "quickstart.md").read_text()
    png = tmp_path / "rep" / "quickstart_gauss-aniso_rmse.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for sampler in THEORY:
        assert f"| {sampler} | {fits[sampler]:.2f} | {THEORY[sampler]} |" in md
    assert "(NFE 19)" in md and "[" in md

    code, out, _ = cli("run", QUICKSTART, "--executor", executor, "--results", res, *SMALL)
    assert code == 0 and "0 computed, 16 already done" in out and "0 cell(s) written" in out
    assert pd.read_parquet(res).equals(df)


def test_same_numbers_whatever_batch_size_shards_or_executor(cli, write_suite, tmp_path):
    a = write_suite(small_suite(), name="a.yaml")
    b = write_suite(small_suite(batch_size=5, shard_size=7), name="b.yaml")
    assert cli("run", a, "--results", tmp_path / "ra")[0] == 0
    assert cli("run", b, "--results", tmp_path / "rb", "--executor", "local")[0] == 0
    key = ["sampler", "nfe"]
    da = pd.read_parquet(tmp_path / "ra").sort_values(key).reset_index(drop=True)
    db = pd.read_parquet(tmp_path / "rb").sort_values(key).reset_index(drop=True)
    assert (db["shards"] == 4).all() and (da["shards"] == 1).all()
    for col in ("value", "ci_low", "ci_high", "nfe_counted"):
        np.testing.assert_array_equal(da[col].to_numpy(), db[col].to_numpy())  # bitwise


def test_killed_run_resumes_with_only_the_missing_shards(write_suite, tmp_path):
    suite = write_suite(small_suite(samples=64, batch_size=16, shard_size=16, nfe=[40, 80],
                                    models=[{"name": "gmm", "params": {"shape": [3, 16, 16],
                                                                       "cov": "full"}}]))
    res = tmp_path / "res"
    cmd = [sys.executable, "-m", "bench.cli", "run", str(suite), "--results", str(res)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    shards = res / "_shards"
    while time.time() < deadline and len(list(shards.glob("*.npz"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(shards.glob("*.npz")))
    assert 3 <= done < 32, done
    visible = [p for p in res.rglob("*") if p.is_file() and not any(
        part.startswith((".", "_")) for part in p.relative_to(res).parts)]
    assert visible == []  # no rows yet: nothing partial for a reader
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert f"{32 - done} computed, {done} already done, 0 failed" in out
    resumed = pd.read_parquet(res).sort_values(["sampler", "nfe"]).reset_index(drop=True)

    fresh = tmp_path / "fresh"
    subprocess.run(cmd[:-1] + [str(fresh)], capture_output=True, check=True)
    clean = pd.read_parquet(fresh).sort_values(["sampler", "nfe"]).reset_index(drop=True)
    np.testing.assert_array_equal(resumed["value"].to_numpy(), clean["value"].to_numpy())


def test_failing_cell_records_traceback_and_others_finish(cli, write_suite, tmp_path):
    # the consistency sampler asks the loaded network whether it is consistency-parameterised:
    # the plan's dry run stops at that first use of the network, so only the job can fail
    suite = write_suite(small_suite(samplers=["euler", "consistency"]))
    code, out, _ = cli("plan", suite, "--results", tmp_path / "r")
    assert code == 0
    code, out, _ = cli("run", suite, "--results", tmp_path / "r")
    assert code == 1 and "2 computed" in out and out.count("failed: ") == 2
    key = out.split("failed: ")[1].split(":")[0]
    info = json.loads((tmp_path / "r" / "_failed" / f"{key}.json").read_text())
    assert "not consistency-parameterised" in info["traceback"] and "Traceback" in info["traceback"]
    assert set(pd.read_parquet(tmp_path / "r")["sampler"]) == {"euler"}


def test_bad_sampler_param_value_fails_at_plan(cli, write_suite, tmp_path):
    # eta < 0 is a number (passes the names check) but ddim refuses it before its first
    # network call: the plan's dry run finds it, naming the field, sampler, model and NFE
    suite = write_suite(small_suite(samplers=["euler", {"name": "ddim", "params": {"eta": -1}}]))
    for cmd in ("plan", "run"):
        code, out, err = cli(cmd, suite, "--results", tmp_path / "r")
        assert code == 2 and out == "" and err.startswith("error: "), (cmd, out, err)
        assert "samplers[1].params" in err and "eta must be >= 0, got -1" in err
        assert "sampler 'ddim' on model 'g' at NFE 10" in err
    assert not (tmp_path / "r").exists()


def test_list_prints_every_entry_with_params(cli):
    code, out, _ = cli("list")
    assert code == 0
    for name in ("gmm", "ddim", "euler", "heun", "dpm_solver_2", "karras", "logsnr",
                 "nfe_curve", "oracle_rmse"):
        assert f"  {name} " in out
    assert "eta=0.0" in out and "rho=7.0" in out and "cov='diag'" in out
    code, out, _ = cli("list", "samplers")
    assert "gmm" not in out and "ddim" in out


def test_output_piped_into_a_reader_that_leaves_early_ends_quietly():
    """`bench list | head -1`: the closed pipe ends the command without a traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "bench", "list"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first line is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
