"""``bench cancel`` and ``bench status`` trust nothing a run manifest says: they never signal
a process the harness did not start, never touch a path outside the results folder, and
refuse crafted ids; a real local run is still cancelled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, small_suite
from bench.store import manifest_digest

RUN = "20260101-000000-abcdef"
KEY = "0123456789abcdef0123"


def manifest(res: Path, **over) -> Path:
    m = {"run_id": RUN, "suite": "x", "executor": "local", "status": "running",
         "shards": [{"key": KEY, "cell_key": KEY, "shard": "m/s/nfe=1/e[0:1]"}],
         "jobs": [{"job_id": "1", "keys": [KEY]}], **over}
    p = res / "_runs" / f"{RUN}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    # crafted by someone who knows the format, digest included: the checks below must hold anyway
    p.write_text(json.dumps({**m, "digest": manifest_digest(m)}))
    return p


def test_cancel_never_signals_a_process_it_did_not_start(cli, tmp_path):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        res = tmp_path / "res"
        manifest(res, jobs=[{"job_id": str(other.pid), "keys": [KEY]}])
        code, out, err = cli("cancel", RUN, "--results", res)
        assert code == 0 and "nothing was queued or running" in out, err
        time.sleep(0.3)
        assert other.poll() is None  # still alive
    finally:
        other.kill()
        other.wait()


@pytest.mark.parametrize("over, what", [
    ({"shards": [{"key": "../../victim", "cell_key": KEY, "shard": "x"}]}, "shard key '../../victim'"),
    ({"jobs": [{"job_id": "1", "keys": ["../../victim"]}]}, "shard key '../../victim'"),
    ({"jobs": [{"job_id": "--user=root", "keys": [KEY]}], "executor": "slurm"}, "job id '--user=root'"),
    ({"run_id": "../../outside"}, "does not name its own run id"),
])
def test_crafted_manifests_are_refused_before_touching_anything(cli, tmp_path, over, what):
    res = tmp_path / "a" / "b" / "res"
    victim = tmp_path / "a" / "victim.json"
    victim.write_text("{}") if victim.parent.exists() else None
    victim.parent.mkdir(parents=True, exist_ok=True)
    victim.write_text("{}")
    manifest(res, **over)
    before = sorted(p for p in tmp_path.rglob("*"))
    for cmd in ("cancel", "status"):
        code, out, err = cli(cmd, RUN, "--results", res)
        assert code == 2 and what in err and "Traceback" not in err, (cmd, out, err)
    assert victim.read_text() == "{}" and sorted(p for p in tmp_path.rglob("*")) == before


def test_run_ids_on_the_command_line_are_checked(cli, tmp_path):
    code, _, err = cli("status", "../../x", "--results", tmp_path)
    assert code == 2 and "no run '../../x'" in err and "of the form" in err


@pytest.mark.parametrize("background", [False, True])
def test_a_real_local_run_is_still_cancelled(tmp_path, background):
    """Also when the run was started in the background (``bench run ... &`` from a script, or
    ``nohup``), which starts it with SIGINT ignored: the local jobs must not inherit that."""
    big = {"name": "gmm", "label": "g", "params": {"shape": [3, 16, 16], "cov": "full", "var_min": 0.01}}
    suite = small_suite(name="slow", samples=4000, batch_size=100, nfe=[200], samplers=["ddim"],
                        models=[big], executor={"name": "local"})
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(suite))
    res = tmp_path / "res"
    bench = [sys.executable, "-m", "bench"]
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if background else None
    driver = subprocess.Popen(bench + ["run", str(path), "--results", str(res)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True, preexec_fn=ignore)
    try:
        deadline = time.time() + 120
        while not (res / "_running").is_dir() or not list((res / "_running").glob("*.json")):
            assert time.time() < deadline and driver.poll() is None
            time.sleep(0.1)
        time.sleep(1.0)  # the task is computing (a started task ignores SIGTERM)
        cancel = subprocess.run(bench + ["cancel", "latest", "--results", str(res)], cwd=ROOT,
                                capture_output=True, text=True)
        assert cancel.returncode == 0 and "cancelled: local job" in cancel.stdout, cancel.stderr
        out, err = driver.communicate(timeout=120)
        assert driver.returncode == 1 and "0 computed" in out, out + err
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
