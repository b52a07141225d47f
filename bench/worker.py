"""The body of a job: compute the shards it was given, each written atomically when done.

A shard that raises records its traceback (``_failed/<key>.json``) and the job goes on with the
next one; nothing raises out of here, so no executor drops into a debugger or loses the rest.

Preemption and time limits (Slurm's signal, relayed by submitit as USR2): ``ShardRunner`` is
submitit-checkpointable; its ``checkpoint`` saves the interrupted shard's folded state of the
finished batches and the next sample index to ``_partial/<key>.npz`` and requeues the same call.
The requeued job skips finished shards and resumes the interrupted one from there.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import traceback
from typing import Any

import submitit

from bench.registry import EVALS, load_all
from bench.store import HEARTBEAT_S, ResultStore
from bench.evals.base import Models
from bench.suite import Shard


class Progress:
    """The latest consistent snapshot of the shard being computed, and its running marker (kept
    fresh for `bench status` and for other runs deciding whether the shard is held)."""

    def __init__(self, store: ResultStore, key: str, marker: dict[str, Any] | None = None) -> None:
        self.store, self.key, self.marker = store, key, marker
        self.snapshot: tuple[int, dict, dict] | None = None
        self._marked = 0.0

    def resume(self) -> tuple[int, dict, dict] | None:
        saved = self.store.read_partial(self.key)
        if saved is None:
            return None
        next_index, flat, meta = saved
        state: dict[str, dict] = {}
        for k, v in flat.items():
            name, field = k.split("/", 1)
            state.setdefault(name, {})[field] = v
        return next_index, state, meta

    def update(self, next_index: int, state: dict[str, dict], meta: dict[str, Any]) -> None:
        self.snapshot = (next_index, state, meta)
        if time.time() - self._marked > 0.5:
            self.beat()

    def beat(self) -> None:
        """Rewrite the running marker (with the progress so far and the time)."""
        if self.marker is None:
            return
        self._marked = time.time()
        snap = self.snapshot
        info = {**self.marker, **({"next_index": snap[0]} if snap is not None else {})}
        try:
            self.store.mark_running(self.key, info)
        except OSError:
            pass

    def save(self) -> None:
        snap = self.snapshot
        if snap is not None:
            next_index, state, meta = snap
            flat = {f"{name}/{k}": v for name, st in state.items() for k, v in st.items()}
            self.store.write_partial(self.key, next_index, flat, meta)


class Heartbeat:
    """A daemon thread that calls ``progress.beat()`` every HEARTBEAT_S while a shard runs, so a
    marker of a live job on another host never looks stale, however long one batch takes."""

    def __init__(self, progress: Progress) -> None:
        self.progress, self.stop = progress, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            self.progress.beat()

    def __enter__(self) -> "Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()  # no beat may rewrite the marker after the shard is stored


def _run_one(shard: Shard, store: ResultStore, models: Models,
             runner: "ShardRunner | None") -> dict[str, Any]:
    if store.has_shard(shard.key):
        return {"key": shard.key, "status": "done", "cached": True}
    t0 = time.time()
    marker = {"pid": os.getpid(), "host": socket.gethostname(), "started": t0, "shard": shard.label(),
              "slurm_job_id": os.environ.get("SLURM_JOB_ID", "")}
    holder = store.claim(shard.key, marker)
    if holder is not None:  # another live run computes it: its result will be read, not redone
        return {"key": shard.key, "status": "held", "holder": holder}
    if store.has_shard(shard.key):  # finished by another run between the check and the claim
        store.running_path(shard.key).unlink(missing_ok=True)
        return {"key": shard.key, "status": "done", "cached": True}
    progress = Progress(store, shard.key, marker)
    if runner is not None:
        runner.active = progress
    try:
        with Heartbeat(progress):
            ev = EVALS.get(shard.eval["name"])(**shard.eval["params"])
            state, meta = ev.run_shard(shard, models, cache_dir=store.cache, progress=progress)
        meta.update(host=socket.gethostname(), pid=os.getpid(),
                    slurm_job_id=os.environ.get("SLURM_JOB_ID", ""))
        store.write_shard(shard.key, state, meta)
        return {"key": shard.key, "status": "done", "cached": False}
    except Exception as exc:  # recorded, not raised: the other shards go on
        info = {"key": shard.key, "shard": shard.label(), "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(), "elapsed_s": time.time() - t0,
                "host": socket.gethostname(), "slurm_job_id": os.environ.get("SLURM_JOB_ID", "")}
        store.write_failure(shard.key, info)
        return {"key": shard.key, "status": "failed", "error": info["error"]}
    finally:
        if runner is not None:
            runner.active = None


def run_shards(shards: list[Shard], results_dir: str, threads: int | None = None,
               runner: "ShardRunner | None" = None) -> list[dict[str, Any]]:
    """Run every shard not already stored; return one status dict per shard."""
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    load_all()
    store = ResultStore(results_dir)
    models = Models(store.cache)  # the job's loaded model, kept for its next shard
    return [_run_one(shard, store, models, runner) for shard in shards]


class ShardRunner(submitit.helpers.Checkpointable):
    """The job callable: run_shards, checkpointed and requeued on preemption / time limit."""

    def __init__(self) -> None:
        self.active: Progress | None = None

    def __call__(self, shards: list[Shard], results_dir: str,
                 threads: int | None = None) -> list[dict[str, Any]]:
        return run_shards(shards, results_dir, threads, runner=self)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        if self.active is not None:
            self.active.save()
            self.active.store.running_path(self.active.key).unlink(missing_ok=True)
        return submitit.helpers.DelayedSubmission(ShardRunner(), *args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        return {"active": None}  # progress lives on disk, not in the pickle
