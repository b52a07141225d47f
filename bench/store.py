"""Result store: Parquet metric rows, a per-sample table, and per-shard state, written atomically.

Layout of a results folder (``pandas.read_parquet(DIR)`` sees only the aggregate rows, because
pyarrow skips names starting with ``_`` or ``.``)::

    DIR/<suite>/<cell_key>.parquet          aggregate rows of one cell, ROW_SCHEMA (all files)
    DIR/_samples/<suite>/<cell_key>.parquet one row per generated sample of that cell
    DIR/_shards/<key>.npz          finished shard: metric state arrays + JSON meta
    DIR/_partial/<key>.npz         progress of an interrupted shard (state + next sample index)
    DIR/_running/<key>.json        marker of a shard being computed (pid, host, Slurm job id);
                                   <key>.json.takeover: held while a dead one is moved aside
    DIR/_failed/<key>.json         traceback of a shard that raised
    DIR/_runs/<run_id>.json        manifest of one `bench run`
    DIR/_cache/                    content-keyed caches (e.g. oracle ground truth)
    DIR/_gallery/                  decoded images of the first samples of cells (``gallery: N``)
    DIR/_attacks/                  original-vs-adversarial images of robustness attacks
    DIR/_jobs/                     submitit job folders and logs
    DIR/_corrupt/                  files that failed their check, moved aside (``bench.integrity``)

Every file is written to a dot-prefixed temporary name in its final folder and renamed into
place, so a killed writer never leaves a partial file that a reader picks up. Shards, partial
states and result tables carry a content digest verified on read: a corrupt one is moved to
``_corrupt/`` with a warning naming it, and the next run recomputes it.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from bench.integrity import CorruptFile, checked, load_npz, npz_ok, quarantine, read_table, \
    save_npz, table_ok, write_table

#: The one schema of aggregate result rows: every result file has exactly these columns, so a
#: folder shared by suites and evals reads back as one table (``pandas.read_parquet(DIR)``).
ROW_SCHEMA = pa.schema([
    # what the number is
    ("suite", pa.string()), ("model", pa.string()), ("sampler", pa.string()), ("nfe", pa.int64()),
    ("eval", pa.string()), ("slice", pa.string()), ("step", pa.int64()), ("metric", pa.string()),
    ("value", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()),
    ("n_samples", pa.int64()), ("n_nonfinite", pa.int64()),
    # how it was made
    ("model_name", pa.string()), ("model_params", pa.string()), ("model_hash", pa.string()),
    ("sampler_name", pa.string()), ("sampler_params", pa.string()), ("grid", pa.string()),
    ("steps", pa.int64()), ("nfe_counted", pa.int64()), ("network_calls", pa.int64()),
    ("eval_params", pa.string()), ("conditions", pa.string()), ("seed", pa.int64()),
    ("shards", pa.int64()), ("sigma_start", pa.float64()), ("sigma_end", pa.float64()),
    # what it was measured against
    ("feature_extractor", pa.string()), ("weights_sha256", pa.string()),
    ("weights_source", pa.string()), ("resize", pa.string()), ("ref_id", pa.string()),
    # cost
    ("wall_s", pa.float64()), ("sample_s", pa.float64()), ("model_s", pa.float64()),
    ("load_s", pa.float64()), ("metric_s", pa.float64()), ("samples_per_s", pa.float64()),
    # provenance
    ("run_id", pa.string()), ("executor", pa.string()), ("device", pa.string()),
    ("config_hash", pa.string()), ("code_hash", pa.string()), ("code_versions", pa.string()),
    ("bench_version", pa.string()), ("git_revision", pa.string()), ("python_version", pa.string()),
    ("torch_version", pa.string()), ("numpy_version", pa.string()), ("submitted_from", pa.string()),
    ("created_at", pa.string()),
])
#: identify a cell's result row: reports and compare keep the newest row per key
ROW_KEY = ["suite", "model", "sampler", "nfe", "eval", "slice", "step", "metric"]
#: leading columns of the per-sample table (then per-sample metric values and sampler extras)
SAMPLE_COLUMNS = ["suite", "model", "sampler", "nfe", "eval", "config_hash", "run_id", "index",
                  "seed", "finite", "cond_id", "cond_text", "category"]


#: what a shard key and a run id look like; anything else read from disk is refused, so a
#: crafted manifest cannot make a command touch paths outside the results folder
KEY_RE = re.compile(r"^[0-9a-f]{20}$")
RUN_ID_RE = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")


#: a running marker on another host whose heartbeat is older than this is stale (seconds); the
#: worker rewrites its markers every HEARTBEAT_S
HEARTBEAT_S = 30.0
STALE_S = 300.0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid > 0


def holder_alive(marker: dict[str, Any], stale_s: float | None = None) -> bool:
    """Whether the process a running marker names may still be computing: on this host, its pid
    is alive (and is not this process); elsewhere, its heartbeat is more recent than ``stale_s``
    (default STALE_S)."""
    try:
        pid = int(marker.get("pid", 0))
    except (TypeError, ValueError):
        return False
    job = os.environ.get("SLURM_JOB_ID", "")
    if job and str(marker.get("slurm_job_id", "")) == job:
        return False  # this job's own earlier attempt (requeued after preemption)
    if marker.get("host") == socket.gethostname():
        return pid > 0 and pid != os.getpid() and pid_alive(pid)
    try:
        return time.time() - float(marker.get("beat", 0)) < (STALE_S if stale_s is None else stale_s)
    except (TypeError, ValueError):
        return False


def check_key(key: Any) -> str:
    if not isinstance(key, str) or not KEY_RE.match(key):
        from bench.errors import BenchError

        raise BenchError(f"shard key {key!r} is not a content hash (20 hex digits); the run "
                         f"manifest or marker that named it was not written by bench. Remove it.")
    return key


def check_run_id(run_id: Any) -> str:
    if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id):
        from bench.errors import BenchError

        raise BenchError(f"run id {run_id!r} is not of the form YYYYMMDD-HHMMSS-xxxxxx; pass a run "
                         f"id printed by 'bench run', or 'latest'.")
    return run_id


def rows_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows as a table of exactly ROW_SCHEMA (absent columns null); an unknown column is a bug."""
    unknown = sorted({k for r in rows for k in r} - set(ROW_SCHEMA.names))
    if unknown:
        raise ValueError(f"result rows have columns outside ROW_SCHEMA: {unknown}; add them to "
                         f"bench.store.ROW_SCHEMA")
    cols = {}
    for f in ROW_SCHEMA:
        vals = [r.get(f.name) for r in rows]
        if pa.types.is_integer(f.type):
            vals = [None if v is None or (isinstance(v, float) and v != v) else int(v) for v in vals]
        elif pa.types.is_floating(f.type):
            vals = [None if v is None else float(v) for v in vals]
        elif pa.types.is_string(f.type):
            vals = [None if v is None else str(v) for v in vals]
        cols[f.name] = pa.array(vals, type=f.type)
    return pa.table(cols, schema=ROW_SCHEMA)


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


#: a takeover lock (held for the moment of moving a dead holder's marker aside) older than this
#: whose owner is on another host is stale (seconds)
TAKEOVER_STALE_S = 30.0


def _link_new(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text`` if it does not exist, atomically and whole (written under a
    temporary name, then hard-linked into place); False if it exists. On a file system without
    hard links, an exclusive create followed by the write (whole only once written)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS):
            raise
    finally:
        os.unlink(tmp)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return True


def _move_aside(path: Path) -> None:
    """Remove ``path`` by renaming it to a unique hidden name first (atomic: of two processes
    removing it, one does; a later file at ``path`` is never the one removed)."""
    aside = path.parent / f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.gone"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    aside.unlink(missing_ok=True)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        out = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return out if isinstance(out, dict) else None


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
        return self.shards / f"{check_key(key)}.npz"

    def has_shard(self, key: str) -> bool:
        """The shard is stored and verifies; a corrupt one is moved aside (and so recomputed)."""
        return checked(self.shard_path(key), self.root, npz_ok)

    def shard_problem(self, key: str) -> str | None:
        """None if the shard is stored and verifies, else why not (nothing is moved)."""
        try:
            npz_ok(self.shard_path(key))
            return None if self.shard_path(key).is_file() else "missing"
        except CorruptFile as exc:
            return exc.reason
        except FileNotFoundError:
            return "missing"

    def write_shard(self, key: str, state: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        save_npz(self.shard_path(key), {**state, "__meta__": np.array(json.dumps(meta))})
        for p in (self.failure_path(key), self.partial_path(key), self.running_path(key)):
            p.unlink(missing_ok=True)

    def read_shard(self, key: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """State and meta of a stored shard; CorruptFile if it does not verify."""
        state = load_npz(self.shard_path(key))
        meta = json.loads(str(state.pop("__meta__")))
        return state, meta

    # ------------------------------------------------------------------ partial progress
    def partial_path(self, key: str) -> Path:
        return self.root / "_partial" / f"{check_key(key)}.npz"

    def write_partial(self, key: str, next_index: int, state: dict[str, np.ndarray],
                      meta: dict[str, Any]) -> None:
        save_npz(self.partial_path(key),
                 {**state, "__meta__": np.array(json.dumps({**meta, "next_index": next_index}))})

    def read_partial(self, key: str) -> tuple[int, dict[str, np.ndarray], dict[str, Any]] | None:
        """(next sample index, state, meta) of an interrupted shard; None if there is none or it
        is corrupt (moved aside: the shard restarts from its first sample)."""
        p = self.partial_path(key)
        if not p.is_file():
            return None
        try:
            state = load_npz(p)
        except CorruptFile as exc:
            quarantine(p, self.root, exc.reason)
            return None
        except FileNotFoundError:
            return None
        meta = json.loads(str(state.pop("__meta__")))
        return int(meta.pop("next_index")), state, meta

    # ------------------------------------------------------------------- running markers
    def running_path(self, key: str) -> Path:
        return self.root / "_running" / f"{check_key(key)}.json"

    def mark_running(self, key: str, info: dict[str, Any]) -> None:
        atomic_write(self.running_path(key),
                     lambda tmp: tmp.write_text(json.dumps({**info, "beat": time.time()})))

    def claim(self, key: str, info: dict[str, Any], wait_s: float = 60.0) -> dict[str, Any] | None:
        """Mark the shard as being computed by this process, unless another live process holds
        it: then return that holder's marker and write nothing. A marker whose holder is gone
        (killed process, stopped heartbeat) is moved aside and the claim tried again.

        A marker appears whole: it is written under a temporary name and hard-linked into place,
        which fails if one exists (an exclusive create that, unlike ``O_EXCL`` followed by a
        write, never shows a rival claimer an empty file it would take for a dead holder's). A
        dead holder's marker is moved aside only under the key's takeover lock (another such
        exclusive file), so of several processes taking it over at once exactly one wins."""
        path = self.running_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = path.with_name(path.name + ".takeover")
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        holder: dict[str, Any] | None = None
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if _link_new(path, json.dumps({**info, "beat": time.time()})):
                return None
            holder = self.read_running(key)
            if holder is not None and holder_alive(holder):
                return holder
            if _link_new(lock, json.dumps({**me, "beat": time.time()})):
                try:  # only the lock's owner moves a marker aside: a dead one, read again now
                    # (a missing one is left alone: a rival may be creating it this moment)
                    if path.exists() and not holder_alive(self.read_running(key) or {}):
                        _move_aside(path)
                finally:
                    lock.unlink(missing_ok=True)
                continue
            owner = _read_json(lock)
            if owner is not None and not holder_alive(owner, TAKEOVER_STALE_S):
                _move_aside(lock)  # its owner died in the moment it held it
            time.sleep(0.005)
        # contended past the deadline: report it held; the run waits for the holder and claims
        # the shard again in its next round if it was not stored
        return holder if holder is not None else {**info, "pid": 0}

    def read_running(self, key: str) -> dict[str, Any] | None:
        p = self.running_path(key)
        try:
            return json.loads(p.read_text()) if p.is_file() else None
        except (OSError, ValueError):
            return None

    # ------------------------------------------------------------------------ failures
    def failure_path(self, key: str) -> Path:
        return self.root / "_failed" / f"{check_key(key)}.json"

    def write_failure(self, key: str, info: dict[str, Any]) -> None:
        atomic_write(self.failure_path(key), lambda tmp: tmp.write_text(json.dumps(info, indent=1)))
        self.running_path(key).unlink(missing_ok=True)

    def read_failure(self, key: str) -> dict[str, Any] | None:
        p = self.failure_path(key)
        try:
            info = json.loads(p.read_text()) if p.is_file() else None
        except (OSError, ValueError):
            info = None
        if p.is_file() and not isinstance(info, dict):
            quarantine(p, self.root, "not a JSON failure record")
            return None
        return info

    # ---------------------------------------------------------------------------- rows
    def rows_path(self, suite: str, cell_key: str) -> Path:
        return self.root / suite / f"{cell_key}.parquet"

    def samples_path(self, suite: str, cell_key: str) -> Path:
        return self.root / "_samples" / suite / f"{cell_key}.parquet"

    def has_rows(self, suite: str, cell_key: str) -> bool:
        """The cell's rows (and its per-sample table, if any) are stored and verify; if either
        is corrupt, both are moved aside, so the cell is written again."""
        rows, samples = self.rows_path(suite, cell_key), self.samples_path(suite, cell_key)
        ok = checked(rows, self.root, lambda p: table_ok(p, ROW_SCHEMA))
        if not ok or not samples.is_file():
            return ok
        if checked(samples, self.root, table_ok):
            return True
        quarantine(rows, self.root, f"its per-sample table '{samples}' is corrupt")
        return False

    def rows_stored(self, suite: str, cell_key: str) -> bool:
        """Whether the cell's rows (and per-sample table, if any) are stored and verify, read
        only: nothing is moved (``bench status``)."""
        try:
            return table_ok(self.rows_path(suite, cell_key), ROW_SCHEMA) and (
                not self.samples_path(suite, cell_key).is_file()
                or table_ok(self.samples_path(suite, cell_key)))
        except (CorruptFile, FileNotFoundError):
            return False

    def read_rows(self, suite: str, cell_key: str) -> list[dict[str, Any]]:
        return read_table(self.rows_path(suite, cell_key), ROW_SCHEMA).to_pylist()

    def write_rows(self, suite: str, cell_key: str, rows: list[dict[str, Any]],
                   samples: Any = None) -> None:
        """The cell's aggregate rows (ROW_SCHEMA) and its per-sample table; the rows file is
        written last, so its presence means both are complete."""
        if samples is not None:
            write_table(self.samples_path(suite, cell_key),
                        pa.Table.from_pandas(samples, preserve_index=False))
        write_table(self.rows_path(suite, cell_key), rows_table(rows))

    # ---------------------------------------------------------------------------- runs
    def run_path(self, run_id: str) -> Path:
        return self.root / "_runs" / f"{check_run_id(run_id)}.json"

    def write_run(self, run_id: str, manifest: dict[str, Any]) -> None:
        """The manifest with a digest of its content (``manifest_digest``), checked on read."""
        m = json.loads(json.dumps({k: v for k, v in manifest.items() if k != "digest"}, default=str))
        atomic_write(self.run_path(run_id), lambda tmp: tmp.write_text(
            json.dumps({**m, "digest": manifest_digest(m)}, indent=1)))

    def read_run(self, run_id: str) -> dict[str, Any]:
        """A run manifest by id; 'latest' means the newest readable run in this folder (an
        unreadable manifest is moved aside with a warning)."""
        from bench.errors import BenchError

        folder = self.root / "_runs"
        runs = sorted(folder.glob("*.json")) if folder.is_dir() else []
        if run_id == "latest":
            for p in reversed(runs):
                try:
                    return self._checked_manifest(p)
                except CorruptFile as exc:
                    quarantine(p, self.root, exc.reason)
        if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id) or not self.run_path(run_id).is_file():
            known = ", ".join(r.stem for r in runs[-5:]) or "none"
            raise BenchError(f"no run {run_id!r} in '{self.root}' (run ids are of the form "
                             f"YYYYMMDD-HHMMSS-xxxxxx; recent runs: {known}); pass a run id from "
                             "'bench run' output, or 'latest'.")
        p = self.run_path(run_id)
        try:
            return self._checked_manifest(p)
        except CorruptFile as exc:
            moved = quarantine(p, self.root, exc.reason)
            raise BenchError(f"run manifest '{p}' is corrupt ({exc.reason}); it was moved to "
                             f"'{moved}'. Its results are not affected: rerun the suite to see "
                             f"their state.") from None

    @staticmethod
    def _checked_manifest(path: Path) -> dict[str, Any]:
        """A manifest whose ids and keys are what bench writes (it is read from disk: trust
        nothing that names a path or a process)."""
        from bench.errors import BenchError

        try:
            m = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CorruptFile(path, f"it is not JSON ({type(exc).__name__})") from None
        if not isinstance(m, dict) or m.get("run_id") != path.stem:
            raise BenchError(f"run manifest '{path}' does not name its own run id; it was not "
                             f"written by bench: remove it.")
        stored = m.pop("digest", None)
        check_run_id(m["run_id"])
        for s in m.get("shards", []):
            check_key(s.get("key"))
        for job in m.get("jobs", []):
            for k in job.get("keys", []):
                check_key(k)
            if not re.match(r"^([0-9]+(_[0-9]+)?|DEBUG_[0-9]+)$", str(job.get("job_id", ""))):
                raise BenchError(f"run manifest '{path}': job id {job.get('job_id')!r} is not a "
                                 f"Slurm job id, process id or debug job id; remove the manifest.")
        if stored is not None and stored != manifest_digest(m):  # none: written before digests
            raise CorruptFile(path, "its content does not match its digest (changed since written)")
        return m


def manifest_digest(m: dict[str, Any]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(m, sort_keys=True).encode()).hexdigest()


def read_samples(root: str | Path, suite: str | None = None) -> Any:
    """Every per-sample table under ``root/_samples`` as one DataFrame (columns unioned: evals
    with different per-sample metrics leave the others' columns empty)."""
    import pandas as pd

    folder = Path(root) / "_samples" / (suite or "")
    files = sorted(folder.rglob("*.parquet")) if folder.is_dir() else []
    tables = []
    for f in files:
        try:
            tables.append(read_table(f).to_pandas())
        except CorruptFile as exc:  # reported, left in place: `bench run` moves it and rewrites it
            import sys

            print(f"warning: skipped {exc}", file=sys.stderr)
    if not tables:
        return pd.DataFrame(columns=SAMPLE_COLUMNS)
    return pd.concat(tables, ignore_index=True)
