"""Result store: Parquet metric rows plus per-shard state, all written atomically.

Layout of a results folder (``pandas.read_parquet(DIR)`` sees only the metric rows, because
pyarrow skips names starting with ``_`` or ``.``)::

    DIR/<suite>/<group>.parquet    metric rows of one (model, sampler, NFE, eval) cell
    DIR/_shards/<key>.npz          finished shard: metric state arrays + JSON meta
    DIR/_partial/<key>.npz         progress of an interrupted shard (state + next sample index)
    DIR/_running/<key>.json        marker of a shard being computed (pid, host, Slurm job id)
    DIR/_failed/<key>.json         traceback of a shard that raised
    DIR/_runs/<run_id>.json        manifest of one `bench run`
    DIR/_cache/                    content-keyed caches (e.g. oracle ground truth)
    DIR/_jobs/                     submitit job folders and logs

Every file is written to a dot-prefixed temporary name in its final folder and renamed into
place, so a killed writer never leaves a partial file that a reader picks up.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a hidden temporary path next to ``path``, then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class ResultStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # ------------------------------------------------------------------------- folders
    @property
    def shards(self) -> Path:
        return self.root / "_shards"

    @property
    def cache(self) -> Path:
        return self.root / "_cache"

    @property
    def jobs(self) -> Path:
        return self.root / "_jobs"

    # -------------------------------------------------------------------------- shards
    def shard_path(self, key: str) -> Path:
        return self.shards / f"{key}.npz"

    def has_shard(self, key: str) -> bool:
        return self.shard_path(key).is_file()

    def write_shard(self, key: str, state: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **state, __meta__=np.array(json.dumps(meta)))

        atomic_write(self.shard_path(key), write)
        for p in (self.failure_path(key), self.partial_path(key), self.running_path(key)):
            p.unlink(missing_ok=True)

    def read_shard(self, key: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        with np.load(self.shard_path(key), allow_pickle=False) as z:
            state = {k: z[k] for k in z.files if k != "__meta__"}
            meta = json.loads(str(z["__meta__"]))
        return state, meta

    # ------------------------------------------------------------------ partial progress
    def partial_path(self, key: str) -> Path:
        return self.root / "_partial" / f"{key}.npz"

    def write_partial(self, key: str, next_index: int, state: dict[str, np.ndarray],
                      meta: dict[str, Any]) -> None:
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **state, __meta__=np.array(json.dumps({**meta, "next_index": next_index})))

        atomic_write(self.partial_path(key), write)

    def read_partial(self, key: str) -> tuple[int, dict[str, np.ndarray], dict[str, Any]] | None:
        p = self.partial_path(key)
        if not p.is_file():
            return None
        with np.load(p, allow_pickle=False) as z:
            state = {k: z[k] for k in z.files if k != "__meta__"}
            meta = json.loads(str(z["__meta__"]))
        return int(meta.pop("next_index")), state, meta

    # ------------------------------------------------------------------- running markers
    def running_path(self, key: str) -> Path:
        return self.root / "_running" / f"{key}.json"

    def mark_running(self, key: str, info: dict[str, Any]) -> None:
        atomic_write(self.running_path(key), lambda tmp: tmp.write_text(json.dumps(info)))

    def read_running(self, key: str) -> dict[str, Any] | None:
        p = self.running_path(key)
        try:
            return json.loads(p.read_text()) if p.is_file() else None
        except (OSError, ValueError):
            return None

    # ------------------------------------------------------------------------ failures
    def failure_path(self, key: str) -> Path:
        return self.root / "_failed" / f"{key}.json"

    def write_failure(self, key: str, info: dict[str, Any]) -> None:
        atomic_write(self.failure_path(key), lambda tmp: tmp.write_text(json.dumps(info, indent=1)))
        self.running_path(key).unlink(missing_ok=True)

    def read_failure(self, key: str) -> dict[str, Any] | None:
        p = self.failure_path(key)
        return json.loads(p.read_text()) if p.is_file() else None

    # ---------------------------------------------------------------------------- rows
    def rows_path(self, suite: str, group: str) -> Path:
        return self.root / suite / f"{group}.parquet"

    def has_rows(self, suite: str, group: str) -> bool:
        return self.rows_path(suite, group).is_file()

    def write_rows(self, suite: str, group: str, rows: list[dict[str, Any]]) -> None:
        import pandas as pd

        df = pd.DataFrame(rows)
        atomic_write(self.rows_path(suite, group), lambda tmp: df.to_parquet(tmp, index=False))

    # ---------------------------------------------------------------------------- runs
    def run_path(self, run_id: str) -> Path:
        return self.root / "_runs" / f"{run_id}.json"

    def write_run(self, run_id: str, manifest: dict[str, Any]) -> None:
        atomic_write(self.run_path(run_id),
                     lambda tmp: tmp.write_text(json.dumps(manifest, indent=1, default=str)))

    def read_run(self, run_id: str) -> dict[str, Any]:
        """A run manifest by id; 'latest' means the newest run in this folder."""
        runs = sorted((self.root / "_runs").glob("*.json")) if (self.root / "_runs").is_dir() else []
        if run_id == "latest" and runs:
            return json.loads(runs[-1].read_text())
        p = self.run_path(run_id)
        if not p.is_file():
            from bench.errors import BenchError

            known = ", ".join(r.stem for r in runs[-5:]) or "none"
            raise BenchError(f"no run {run_id!r} in '{self.root}' (recent runs: {known}); "
                             "pass a run id from 'bench run' output, or 'latest'.")
        return json.loads(p.read_text())
