"""The body of a job: compute the shards it was given, each written atomically when done.

A shard that raises records its traceback (``_failed/<key>.json``) and the job goes on with the
next one; nothing raises out of here, so no executor drops into a debugger or loses the rest.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any

from bench.registry import EVALS, load_all
from bench.store import ResultStore
from bench.suite import Cell


def run_cells(cells: list[Cell], results_dir: str, threads: int | None = None) -> list[dict[str, Any]]:
    """Run every shard not already stored; return one status dict per shard."""
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    load_all()
    store = ResultStore(results_dir)
    statuses = []
    for cell in cells:
        if store.has_shard(cell.key):
            statuses.append({"key": cell.key, "status": "done", "cached": True})
            continue
        t0 = time.time()
        try:
            ev = EVALS.get(cell.eval["name"])(**cell.eval["params"])
            state, meta = ev.run_shard(cell, cache_dir=store.cache)
            meta.update(host=socket.gethostname(), pid=os.getpid(),
                        slurm_job_id=os.environ.get("SLURM_JOB_ID", ""))
            store.write_shard(cell.key, state, meta)
            statuses.append({"key": cell.key, "status": "done", "cached": False})
        except Exception as exc:  # recorded, not raised: the other shards go on
            info = {"key": cell.key, "cell": cell.label(), "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(), "elapsed_s": time.time() - t0}
            store.write_failure(cell.key, info)
            statuses.append({"key": cell.key, "status": "failed", "error": info["error"]})
    return statuses


def results_dir_of(path: str | Path) -> str:
    return str(Path(path).resolve())
