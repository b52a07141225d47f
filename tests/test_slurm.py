"""Against a real single-node Slurm cluster (see tests/support/slurm_local.py): same numbers as
the local executor, job arrays, preemption + requeue resuming mid-shard, hard kills, failing
cells."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import small_suite
from support.slurm_local import SlurmCluster, unavailable_reason

REASON = unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=str(REASON))
KEY = ["model", "sampler", "nfe"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    old = os.environ.get("SLURM_CONF")
    try:
        c.start()
        os.environ["SLURM_CONF"] = c.env["SLURM_CONF"]
        yield c
    finally:
        c.stop()
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old


def _sorted(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path).sort_values(KEY).reset_index(drop=True)


SLURM = {"name": "slurm", "partition": "debug", "cpus_per_task": 1, "timeout_min": 10}


def _bench(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.cli", *map(str, args)], capture_output=True,
                          text=True, check=check, timeout=600)


def test_slurm_job_array_gives_the_same_numbers_as_local(cluster, cli, write_suite, tmp_path):
    suite = write_suite(small_suite(executor=SLURM, samples=16, shard_size=8, nfe=[10]))  # 8 shards
    code, out, err = cli("run", suite, "--results", tmp_path / "slurm")
    assert code == 0, out + err
    assert "8 computed" in out
    manifest = json.loads(next((tmp_path / "slurm" / "_runs").glob("*.json")).read_text())
    ids = [j["job_id"] for j in manifest["jobs"]]
    assert len(ids) == 8 and len({i.split("_")[0] for i in ids}) == 1  # one array of 8 tasks
    assert all("_" in i for i in ids)
    end = time.time() + 60  # accounting lags the jobs' end by a few seconds
    while True:
        sacct = cluster.run("sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j",
                            ids[0].split("_")[0]).stdout
        if sacct.count("COMPLETED") == 8 or time.time() > end:
            break
        time.sleep(1)
    assert sacct.count("COMPLETED") == 8, sacct

    assert cli("run", suite, "--results", tmp_path / "local", "--executor", "local")[0] == 0
    a, b = _sorted(tmp_path / "slurm"), _sorted(tmp_path / "local")
    assert (a["executor"] == "slurm").all() and (b["executor"] == "local").all()
    for col in ("value", "ci_low", "ci_high", "nfe_counted", "n_samples"):
        np.testing.assert_array_equal(a[col].to_numpy(), b[col].to_numpy())


def _slow_suite(write_suite, name: str):
    # one shard of 24 batches (~0.1 s each on an idle core): the signal lands well before its end
    return write_suite(small_suite(
        name=name, executor=SLURM, samples=192, batch_size=8, nfe=[80], samplers=["heun"],
        models=[{"name": "gmm", "params": {"shape": [3, 16, 16], "cov": "full"}}]), name=f"{name}.yaml")


def _wait_running(res: Path, at_sample: int = 16, deadline: float = 90, min_nfe: int = 0) -> dict:
    """The marker of a shard (of NFE >= `min_nfe`) that has finished at least `at_sample` samples."""
    end = time.time() + deadline
    while time.time() < end:
        for p in (res / "_running").glob("*.json") if (res / "_running").is_dir() else []:
            try:
                info = json.loads(p.read_text())
            except (OSError, ValueError):
                continue
            nfe = re.search(r"/nfe=(\d+)/", info.get("shard", ""))
            if (info.get("slurm_job_id") and info.get("next_index", 0) >= at_sample
                    and nfe and int(nfe.group(1)) >= min_nfe):
                return info
        time.sleep(0.2)
    raise TimeoutError("no shard started running")


def test_preempted_job_resumes_mid_shard_with_identical_numbers(cluster, write_suite, tmp_path):
    suite = _slow_suite(write_suite, "preempt")
    res = tmp_path / "res"
    driver = subprocess.Popen([sys.executable, "-m", "bench.cli", "run", str(suite), "--results",
                               str(res)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    info = _wait_running(res)  # two batches in, 22 to go
    # what Slurm sends before preemption / the time limit (submitit's --signal=USR2@...)
    cluster.run("scancel", "--signal=USR2", info["slurm_job_id"])
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, out + err
    assert "1 computed" in out
    shard = next((res / "_shards").glob("*.npz"))
    meta = json.loads(str(np.load(shard)["__meta__"]))
    assert meta["attempts"] == 2  # it was interrupted once and resumed from its partial state
    assert not list((res / "_partial").glob("*.npz"))
    state = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-D", "-j",
                            info["slurm_job_id"]], capture_output=True, text=True, env=cluster.env).stdout
    assert "REQUEUED" in state or "PREEMPTED" in state or state.count("\n") >= 2, state

    clean = tmp_path / "clean"
    assert _bench("run", suite, "--results", clean, "--executor", "debug").returncode == 0
    a, b = _sorted(res), _sorted(clean)
    np.testing.assert_array_equal(a["value"].to_numpy(), b["value"].to_numpy())  # bitwise
    np.testing.assert_array_equal(a["ci_high"].to_numpy(), b["ci_high"].to_numpy())


def test_hard_kill_leaves_no_partial_result_and_rerun_completes_missing(cluster, write_suite, tmp_path):
    # an NFE-160 shard takes ~13 s on one core (96 batches): once one is past its first batch,
    # `bench cancel` has >10 s to kill it (at 192 samples, ~3 s, it lost that race on an idle CPU)
    data = small_suite(name="kill", executor=SLURM, samples=768, batch_size=8, nfe=[10, 160],
                       samplers=["euler", "heun"],
                       models=[{"name": "gmm", "params": {"shape": [3, 16, 16], "cov": "full"}}])
    suite = write_suite(data, name="kill.yaml")
    res = tmp_path / "res"
    driver = subprocess.Popen([sys.executable, "-m", "bench.cli", "run", str(suite), "--results",
                               str(res)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_running(res, at_sample=8, min_nfe=100)
    cancel = _bench("cancel", "latest", "--results", res)  # scancel: SIGTERM, SIGKILL, no requeue
    assert "cancelled: slurm job" in cancel.stdout
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 1, out + err  # the killed shards are reported failed
    done = len(list((res / "_shards").glob("*.npz")))
    assert done < 4
    rows = pd.read_parquet(res) if any(res.glob("kill/*.parquet")) else pd.DataFrame()
    assert len(rows) == done  # rows only for complete cells; nothing partial is readable
    status = _bench("status", "latest", "--results", res, check=False).stdout
    assert "failed" in status and "died" in status
    again = _bench("run", suite, "--results", res)
    assert f"{4 - done} computed, {done} already done, 0 failed" in again.stdout
    assert len(pd.read_parquet(res)) == 4


def test_failing_cell_shows_traceback_in_status_and_others_finish(cluster, write_suite, tmp_path):
    suite = write_suite(small_suite(name="fail", executor=SLURM, samples=8, nfe=[10],
                                    samplers=["euler", "consistency"]))  # fails in the job
    res = tmp_path / "res"
    run = _bench("run", suite, "--results", res, check=False)
    assert run.returncode == 1 and "1 computed" in run.stdout and "failed: " in run.stdout
    status = _bench("status", "latest", "--results", res, check=False)
    assert status.returncode == 1
    assert "1 done, 1 failed" in status.stdout.replace("0 pending, 0 running, ", "")
    assert "Traceback (most recent call last)" in status.stdout and "not consistency-parameterised" in status.stdout
    assert list(pd.read_parquet(res)["sampler"]) == ["euler"]
