"""Concurrent runs and killed controllers: two identical runs share the work (no shard computed
twice); a run whose controller was killed -9 shows as stale, and a rerun waits for the shards
its surviving jobs still compute instead of redoing them; results equal a clean run's."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd

from conftest import small_suite


def slow_suite(**over) -> dict:
    """A few tenths of a second per shard: long enough for the runs to overlap."""
    return small_suite(**{"samples": 32, "batch_size": 8, "shard_size": 8, "nfe": [40, 80],
                          "samplers": ["ddim", "euler"],
                          "models": [{"name": "gmm", "params": {"shape": [3, 8, 8], "cov": "full"}}],
                          **over})


def values(res) -> np.ndarray:
    df = pd.read_parquet(res).sort_values(["sampler", "nfe", "metric"])
    return df[["value", "ci_low", "ci_high"]].to_numpy()


def computed(out: str) -> tuple[int, int]:
    m = re.search(r"(\d+) computed, (\d+) already done(?:, (\d+) computed by another run)?", out)
    assert m, out
    return int(m.group(1)), int(m.group(3) or 0)


def bench(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench", *map(str, args)]


def test_two_identical_runs_started_together_compute_each_shard_once(write_suite, tmp_path):
    suite = write_suite(slow_suite())
    res = tmp_path / "res"
    procs = [subprocess.Popen(bench("run", suite, "--results", res), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    counts = [computed(o) for o, _ in outs]
    assert sum(c for c, _ in counts) == 16, counts  # 2 samplers x 2 NFE x 4 shards, once each
    assert all(w > 0 for _, w in counts), counts    # each waited for shards the other computed
    subprocess.run(bench("run", suite, "--results", tmp_path / "clean"), check=True,
                   capture_output=True)
    np.testing.assert_array_equal(values(res), values(tmp_path / "clean"))


def test_killed_controller_is_stale_and_a_rerun_waits_for_its_live_jobs(write_suite, tmp_path):
    # 4 shards of a few seconds each, in 2 local jobs: still running when the controller dies
    suite = write_suite(slow_suite(samples=64, shard_size=32, nfe=[400], models=[
        {"name": "gmm", "params": {"shape": [3, 16, 16], "cov": "full"}}]))
    res = tmp_path / "res"
    ctl = subprocess.Popen(bench("run", suite, "--results", res, "--executor", "local", "--jobs", "2"),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not any((res / "_running").glob("*.json")):
        time.sleep(0.05)
    ctl.send_signal(signal.SIGKILL)  # the controller only: its two local jobs compute on
    ctl.wait()
    (killed,) = [p.stem for p in (res / "_runs").glob("*.json")]
    rerun = subprocess.Popen(bench("run", suite, "--results", res), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    status = subprocess.run(bench("status", killed, "--results", res), capture_output=True,
                            text=True)
    out, err = rerun.communicate(timeout=600)
    assert "STALE" in status.stdout and f"pid {ctl.pid}" in status.stdout, status.stdout
    assert re.search(r"[1-9]\d* running", status.stdout), status.stdout
    assert rerun.returncode == 0, err
    mine, waited = computed(out)
    assert waited >= 1 and mine + waited <= 4, out  # nothing held was redone
    subprocess.run(bench("run", suite, "--results", tmp_path / "clean"), check=True,
                   capture_output=True)
    np.testing.assert_array_equal(values(res), values(tmp_path / "clean"))
    again = subprocess.run(bench("status", "latest", "--results", res), capture_output=True, text=True)
    assert "STALE" not in again.stdout and "0 pending" in again.stdout


def test_a_shard_finished_between_the_check_and_the_claim_is_not_recomputed(tmp_path):
    """The race behind a shard computed twice by two runs on a loaded machine: run A checks the
    shard (not done), run B writes it and drops its marker, run A claims it. The claim must be
    followed by a second look, which finds the result and lets the marker go."""
    from types import SimpleNamespace

    from bench.store import ResultStore
    from bench.worker import _run_one

    store = ResultStore(tmp_path)
    looks = iter([False, True])  # not done at the first look, done right after the claim
    store.has_shard = lambda key: next(looks)
    shard = SimpleNamespace(key="0" * 20, label=lambda: "m/s/nfe=1/e[0:1]",
                            eval={"name": "no-such-eval", "params": {}})
    out = _run_one(shard, store, models=None, runner=None)
    assert out == {"key": "0" * 20, "status": "done", "cached": True}
    assert not store.running_path("0" * 20).exists()
