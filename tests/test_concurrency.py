"""Concurrent runs and killed controllers: two identical runs share the work (no shard computed
twice); a run whose controller was killed -9 shows as stale, and a rerun waits for the shards
its surviving jobs still compute instead of redoing them; results equal a clean run's."""

from __future__ import annotations

import os
import re
import signal
import socket
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


def _claim_all(root: str, keys: list[str], start, out) -> None:
    """Claim every key once, all claimers released together; report the keys this one won."""
    from bench.store import ResultStore

    store = ResultStore(root)
    start.wait()
    won = [k for k in keys if store.claim(k, {"pid": os.getpid(), "host": socket.gethostname()})
           is None]
    out.put((os.getpid(), won))


def _claim_race(tmp_path, dead_markers: bool) -> list[list[str]]:
    import multiprocessing as mp

    from bench.store import ResultStore

    keys = [f"{i:020x}" for i in range(300)]
    store = ResultStore(tmp_path)
    if dead_markers:  # every shard held by a process that is gone
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
        for k in keys:
            store.mark_running(k, {"pid": int(gone.stdout), "host": socket.gethostname()})
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_claim_all, args=(str(tmp_path), keys, start, out))
             for _ in range(4)]
    for p in procs:
        p.start()
    won = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert sorted(k for _, w in won for k in w) == keys, "a shard was claimed twice or not at all"
    for pid, w in won:  # each marker names the process that won it
        assert all(store.read_running(k)["pid"] == pid for k in w)
    return [w for _, w in won]


def test_claimers_started_together_win_each_shard_once(tmp_path):
    """Four processes claim the same 300 shards at once: each shard has exactly one winner, whose
    marker stands (an exclusive create must never show a rival an empty, 'dead' marker)."""
    _claim_race(tmp_path, dead_markers=False)


def test_claimers_taking_over_dead_markers_win_each_shard_once(tmp_path):
    """Four processes find the same 300 markers of a killed process and take them over at once:
    still exactly one winner per shard."""
    _claim_race(tmp_path, dead_markers=True)


def test_an_unreadable_marker_or_a_dead_takeover_lock_does_not_block_a_claim(tmp_path):
    """A marker that does not parse (a crash of an older writer) and a takeover lock left by a
    process killed while holding it are moved aside: the claim wins, in well under its wait."""
    from bench.store import ResultStore

    store = ResultStore(tmp_path)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    bad, locked = "a" * 20, "b" * 20
    store.running_path(bad).parent.mkdir(parents=True)
    store.running_path(bad).write_text("")
    store.mark_running(locked, {"pid": int(gone.stdout), "host": socket.gethostname()})
    lock = store.running_path(locked).with_name(f"{locked}.json.takeover")
    lock.write_text(f'{{"pid": {int(gone.stdout)}, "host": "{socket.gethostname()}", "beat": 0}}')
    t0 = time.monotonic()
    assert store.claim(bad, me, wait_s=20) is None
    assert store.claim(locked, me, wait_s=20) is None
    assert time.monotonic() - t0 < 10
    assert store.read_running(bad)["pid"] == os.getpid() == store.read_running(locked)["pid"]
    assert not lock.exists()
    # a live holder's marker still wins over this claim
    store.mark_running(bad, {"pid": os.getppid(), "host": socket.gethostname()})
    assert store.claim(bad, me, wait_s=1)["pid"] == os.getppid()


def test_a_claim_works_where_the_file_system_has_no_hard_links(tmp_path, monkeypatch):
    from bench.store import ResultStore

    def no_links(src, dst):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    store = ResultStore(tmp_path)
    parent = {"pid": os.getppid(), "host": socket.gethostname()}  # a live process, not this one
    assert store.claim("c" * 20, parent) is None
    assert store.read_running("c" * 20)["pid"] == os.getppid()
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    assert store.claim("c" * 20, me)["pid"] == os.getppid()  # held: not claimed twice
    assert not [p for p in store.running_path("c" * 20).parent.iterdir() if p.name.startswith(".")]
