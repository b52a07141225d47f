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
import time
import traceback
from typing import Any

import submitit

from bench.registry import EVALS, load_all
from bench.store import ResultStore
from bench.evals.base import Models
from bench.suite import Shard


class Progress:
    """The latest consistent snapshot of the shard being computed."""

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
        if self.marker is not None and time.time() - self._marked > 0.5:  # for `bench status`
            self._marked = time.time()
            self.store.mark_running(self.key, {**self.marker, "next_index": next_index})

    def save(self) -> None:
        snap = self.snapshot
        if snap is not None:
            next_index, state, meta = snap
            flat = {f"{name}/{k}": v for name, st in state.items() for k, v in st.items()}
            self.store.write_partial(self.key, next_index, flat, meta)


def _run_one(shard: Shard, store: ResultStore, models: Models,
             runner: "ShardRunner | None") -> dict[str, Any]:
    if store.has_shard(shard.key):
        return {"key": shard.key, "status": "done", "cached": True}
    t0 = time.time()
    marker = {"pid": os.getpid(), "host": socket.gethostname(), "started": t0, "shard": shard.label(),
              "slurm_job_id": os.environ.get("SLURM_JOB_ID", "")}
    store.mark_running(shard.key, marker)
    progress = Progress(store, shard.key, marker)
    if runner is not None:
        runner.active = progress
    try:
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
    models = Models()  # the job's loaded model, kept for its next shard
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
        return submitit.helpers.DelayedSubmission(ShardRunner(), *args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        return {"active": None}  # progress lives on disk, not in the pickle
