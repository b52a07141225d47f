"""Dispatch a suite's shards as submitit jobs (debug | local | slurm) and finalize results.

Pending shards are packed into a few jobs (longest first onto the least-loaded job); each job
writes every shard atomically as it finishes, so a killed run loses only shards in flight and a
rerun computes only what is missing. Cells whose shards are all present are merged into
Parquet rows (and a per-sample table) by the driver.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from bench.errors import BenchError
from bench.provenance import environment
from bench.registry import EVALS
from bench.samplers.schedules import make_grid  # noqa: F401  (keeps grids registered)
from bench.integrity import CorruptFile, quarantine
from bench.store import SAMPLE_COLUMNS, ResultStore, holder_alive, pid_alive
from bench.suite import MODEL_TRANSFORMS, Shard, Suite, code_hash, plan
from bench.worker import ShardRunner

EXECUTORS = ("debug", "local", "slurm")
SLURM_KEYS = {"partition": "slurm_partition", "account": "slurm_account", "qos": "slurm_qos",
              "gpus_per_node": "gpus_per_node", "cpus_per_task": "cpus_per_task",
              "mem_gb": "mem_gb", "timeout_min": "timeout_min",
              "array_parallelism": "slurm_array_parallelism",
              "additional_parameters": "slurm_additional_parameters"}


def check_executor(source: str, params: dict[str, Any], chosen: str | None) -> None:
    """The executor and its parameters (the suite's ``executor:`` block), checked before the run
    prints anything or writes a file; the dispatcher would only find them at submission."""
    from bench.errors import SuiteError, close_matches

    name = chosen or params.get("name") or "debug"
    if name not in EXECUTORS:
        raise SuiteError(source, "executor.name", f"unknown executor {name!r}."
                         f"{close_matches(name, EXECUTORS)}", f"use one of: {', '.join(EXECUTORS)}.")
    for k, lo in (("jobs", 1), ("timeout_min", 1), ("cpus_per_task", 1), ("gpus_per_node", 0)):
        v = params.get(k)  # (executor.mem_gb is checked by bench.budget)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < lo):
            raise SuiteError(source, f"executor.{k}", f"must be a whole number >= {lo}, got "
                             f"{v!r}.", f"write e.g. '{k}: 4', or drop it.")
    if name == "slurm":
        unknown = sorted(set(params) - set(SLURM_KEYS) - {"name", "jobs"})
        if unknown:
            raise SuiteError(source, f"executor.{unknown[0]}", "is not a slurm executor "
                             f"parameter.{close_matches(unknown[0], SLURM_KEYS)}",
                             f"use: {', '.join(sorted(SLURM_KEYS))}, jobs.")


@dataclass
class RunSummary:
    run_id: str
    cells: int
    computed: int = 0
    cached: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    waited: int = 0  # shards another live run was computing: waited for, not recomputed
    finalized: int = 0
    nonfinite: list[str] = field(default_factory=list)  # rows written with a NaN / inf value
    wall_s: float = 0.0

    def line(self) -> str:
        held = f", {self.waited} computed by another run" if self.waited else ""
        return (f"run {self.run_id}: {self.cells} shard(s): {self.computed} computed, "
                f"{self.cached} already done{held}, {len(self.failed)} failed; "
                f"{self.finalized} cell(s) written in {self.wall_s:.1f} s")


def new_run_id() -> str:
    return f"{datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def _interruptible_children() -> None:
    """Let local jobs be cancelled when this process was started in the background.

    A command started with ``&`` (or ``nohup``) from a non-interactive shell has SIGINT
    ignored, and ignored signals stay ignored in its children: submitit's local controller would
    then ignore the SIGINT by which ``bench cancel`` (like submitit's own ``cancel``) stops it.
    A handled signal is reset to its default in a child, so handling SIGINT here lets the
    controller install Python's KeyboardInterrupt handler again."""
    import signal
    import threading

    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) == signal.SIG_IGN):
        signal.signal(signal.SIGINT, signal.default_int_handler)


def make_executor(name: str, folder: Path, params: dict[str, Any]):  # -> submitit.Executor
    import submitit

    if name == "debug":
        return submitit.DebugExecutor(folder)
    if name == "local":
        _interruptible_children()
        ex = submitit.LocalExecutor(folder)
        ex.update_parameters(timeout_min=int(params.get("timeout_min", 24 * 60)))
        return ex
    if name == "slurm":
        ex = submitit.AutoExecutor(folder, cluster="slurm")  # params: check_executor
        ex.update_parameters(**{SLURM_KEYS[k]: v for k, v in params.items() if k in SLURM_KEYS})
        return ex
    raise BenchError(f"executor: unknown executor {name!r}; use one of {', '.join(EXECUTORS)}.")


def _cost(shard: Shard) -> float:
    """Network evaluations of a shard (NFE x samples), not steps: a 2-evaluation-per-step
    solver costs what its NFE says. Per-image feature extraction is not counted."""
    return float(shard.nfe * (shard.stop - shard.start))


def pack(shards: list[Shard], n_jobs: int) -> list[list[Shard]]:
    """Longest-processing-time-first packing of shards into n_jobs lists."""
    n_jobs = max(1, min(n_jobs, len(shards)))
    bins: list[list[Shard]] = [[] for _ in range(n_jobs)]
    loads = [0.0] * n_jobs
    for c in sorted(shards, key=_cost, reverse=True):
        j = loads.index(min(loads))
        bins[j].append(c)
        loads[j] += _cost(c)
    return bins


def _wait(jobs: list[Any], chunks: list[list[Shard]], store: ResultStore, debug: bool) -> list[dict]:
    """Wait for the jobs with a progress bar; a job that died marks its unfinished shards failed."""
    statuses: list[dict] = []
    keys = [c.key for chunk in chunks for c in chunk]
    bar = tqdm(total=len(keys), desc="shards", unit="shard", disable=None)
    try:
        if debug:
            for job in jobs:
                statuses.extend(job.result())
                bar.update(sum(1 for k in keys if store.has_shard(k) or store.read_failure(k)) - bar.n)
        else:
            last_check = 0.0
            while True:
                # submitit's Slurm watcher backs off to minutes between sacct calls; refresh
                # every few seconds (one forced call refreshes the cached state of all jobs)
                force = time.time() - last_check > 3.0
                if force:
                    last_check = time.time()
                undone = [j for j in jobs if not j.done()]
                if undone and force:
                    undone = [j for j in undone if not j.done(force_check=j is undone[0])]
                if not undone:
                    break
                bar.update(sum(1 for k in keys if store.has_shard(k)) - bar.n)
                time.sleep(0.5)
            for job, chunk in zip(jobs, chunks):
                try:
                    statuses.extend(job.result())
                except Exception as exc:  # the job itself died (killed, OOM, timeout)
                    for key in (c.key for c in chunk):
                        if not store.has_shard(key):
                            info = {"key": key, "error": f"job {job.job_id} died: {exc}",
                                    "traceback": str(exc)}
                            store.write_failure(key, info)
                            statuses.append({"key": key, "status": "failed", "error": info["error"]})
            bar.update(sum(1 for k in keys if store.has_shard(k)) - bar.n)
    except KeyboardInterrupt:
        for job in jobs:
            try:
                job.cancel(check=False)
            except Exception:
                pass
        raise
    finally:
        bar.close()
    return statuses


def _job_count(name: str, params: dict[str, Any], jobs: int | None, pending: int) -> int:
    if jobs:
        return jobs
    if params.get("jobs"):
        return int(params["jobs"])
    if name == "local":
        return min(pending, os.cpu_count() or 1)
    return pending  # debug: one job per shard; slurm: one array task per shard


def run_suite(suite: Suite, results: str | Path, executor: str | None = None,
              executor_params: dict[str, Any] | None = None, jobs: int | None = None,
              shards: list[Shard] | None = None) -> RunSummary:
    """Plan (unless ``shards``, the suite's plan, is given), compute the missing shards,
    finalize complete groups, write a run manifest."""
    t0 = time.perf_counter()
    params = {**suite["executor"], **(executor_params or {})}
    check_executor(suite.source, params, executor)
    name = executor or params.get("name") or "debug"
    params = {k: v for k, v in params.items() if k != "name"}
    cells = shards if shards is not None else plan(suite)
    store = ResultStore(results)
    run_id = new_run_id()
    summary = RunSummary(run_id, len(cells))
    # a cell whose rows are stored is done, even where its shard files were removed (they hold
    # features, which take room); the shards of other cells: corrupt ones are moved aside
    stored = {k for k in {c.cell_key for c in cells} if store.has_rows(suite.name, k)}
    pending = [c for c in cells if c.cell_key not in stored and not store.has_shard(c.key)]
    summary.cached = len(cells) - len(pending)
    manifest: dict[str, Any] = {
        "run_id": run_id, "suite": suite.name, "source": suite.source, "executor": name,
        "executor_params": params, "status": "running",
        "controller": {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()},
        "report": suite["report"],
        "jobs_folder": str((store.jobs / run_id).resolve()), "jobs": [],
        "shards": [{"key": c.key, "cell_key": c.cell_key, "shard": c.label()} for c in cells]}
    store.write_run(run_id, manifest)
    while pending:
        held = {c.key: h for c in pending if (h := store.read_running(c.key)) and holder_alive(h)}
        mine = [c for c in pending if c.key not in held]
        if mine:
            chunks = pack(mine, _job_count(name, params, jobs, len(mine)))
            threads = params.get("cpus_per_task") or (
                max(1, (os.cpu_count() or 1) // len(chunks)) if name == "local" else None)
            ex = make_executor(name, store.jobs / run_id,
                               {k: v for k, v in params.items() if k != "jobs"})
            root = str(Path(results).resolve())
            submitted = ex.map_array(ShardRunner(), chunks, [root] * len(chunks), [threads] * len(chunks))
            manifest["jobs"] += [{"job_id": str(j.job_id), "keys": [c.key for c in chunk]}
                                 for j, chunk in zip(submitted, chunks)]
            store.write_run(run_id, manifest)  # now `bench status` / `bench cancel` find the jobs
            try:
                statuses = _wait(submitted, chunks, store, debug=name == "debug")
            except KeyboardInterrupt:
                store.write_run(run_id, {**manifest, "status": "interrupted"})
                raise
            summary.computed += sum(1 for s in statuses if s["status"] == "done" and not s.get("cached"))
            # stored by another run between this run's check and its job reaching the shard
            summary.waited += sum(1 for s in statuses if s["status"] == "done" and s.get("cached"))
            summary.failed += [s for s in statuses if s["status"] == "failed"]
            failed = {s["key"] for s in statuses if s["status"] == "failed"}
            held.update({s["key"]: s["holder"] for s in statuses if s["status"] == "held"})
        else:
            failed = set()
        waiting = [c for c in pending if c.key in held and c.key not in failed]
        if waiting:
            summary.waited += len(waiting)
            _wait_for_holders(waiting, store)
        # what the holders did not finish (they died) is computed in the next round
        pending = [c for c in waiting if not store.has_shard(c.key) and not store.read_failure(c.key)]
    summary.finalized, summary.nonfinite = finalize(suite, cells, store, run_id, name)
    summary.wall_s = time.perf_counter() - t0
    store.write_run(run_id, {**manifest, "status": "finished", "summary": summary.__dict__})
    return summary


def _wait_for_holders(shards: list[Shard], store: ResultStore) -> None:
    """Wait while other live runs compute these shards (until each is stored or its holder is
    gone), with a progress bar."""
    bar = tqdm(total=len(shards), desc="shards held by another run", unit="shard", disable=None)
    try:
        while True:
            left = [c for c in shards if not store.has_shard(c.key) and not store.read_failure(c.key)]
            bar.update(len(shards) - len(left) - bar.n)
            live = [c for c in left if (h := store.read_running(c.key)) and holder_alive(h)]
            if not live:
                return
            time.sleep(1.0)
    finally:
        bar.close()


# ------------------------------------------------------------------------ status / cancel
def shard_states(store: ResultStore, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """pending / running / done / failed / corrupt for each shard of a run, with reasons
    (read-only: nothing is moved)."""
    out = []
    cells = {c.get("cell_key", "") for c in manifest["shards"]}
    stored = {k for k in cells if k and store.rows_stored(str(manifest.get("suite", "")), k)}
    for c in manifest["shards"]:
        row = {"shard": c["shard"], "key": c["key"], "state": "pending", "reason": ""}
        if c.get("cell_key") in stored:
            row["state"] = "done"
            if not store.shard_path(c["key"]).is_file():
                row["reason"] = "its cell's rows are stored (the shard file was removed)"
            out.append(row)
            continue
        problem = store.shard_problem(c["key"])
        failure = store.read_failure(c["key"])
        running = store.read_running(c["key"])
        if problem is None:
            row["state"] = "done"
        elif problem != "missing":
            row["state"] = "corrupt"
            row["reason"] = (f"'{store.shard_path(c['key'])}': {problem}; the next run moves it "
                             f"aside and recomputes it")
        elif running and holder_alive(running):
            row["state"] = "running"
            where = f"slurm job {running['slurm_job_id']}" if running.get("slurm_job_id") else \
                f"pid {running.get('pid')}"
            row["reason"] = f"on {running.get('host')} ({where})"
            if "next_index" in running:
                row["reason"] += f", at sample {running['next_index']}"
            partial = store.read_partial(c["key"])
            if partial:
                row["reason"] += f", resumed from sample {partial[0]}"
        elif failure:
            row["state"] = "failed"
            row["reason"] = failure.get("error", "")
            row["traceback"] = failure.get("traceback", "")
        elif running:
            row["reason"] = (f"its job (pid {running.get('pid')} on {running.get('host')}) is gone; "
                             f"rerun to compute it")
        elif store.read_partial(c["key"]):
            row["reason"] = f"interrupted at sample {store.read_partial(c['key'])[0]}; rerun resumes"
        out.append(row)
    return out


def run_liveness(manifest: dict[str, Any], states: list[dict[str, Any]]) -> str:
    """'' for a finished run; else whether its controller (the `bench run` process) still runs:
    a run marked running whose controller is gone is stale, whatever its workers still do."""
    if manifest.get("status") != "running":
        return ""
    ctl = manifest.get("controller") or {}
    running = sum(1 for r in states if r["state"] == "running")
    if ctl.get("host") != socket.gethostname():
        return (f"controller on {ctl.get('host', '?')} (pid {ctl.get('pid', '?')}): cannot be checked "
                f"from this host")
    if pid_alive(int(ctl.get("pid", 0))):
        return f"controller pid {ctl['pid']} is running"
    return (f"STALE: its controller (pid {ctl.get('pid')} on {ctl.get('host')}) is gone; "
            f"{running} shard(s) are still being computed by its jobs. Rerun the suite to finish "
            f"it: finished shards are kept and shards its live jobs hold are waited for, not redone")


def is_local_job_of(pid: int, jobs_folder: Path) -> bool:
    """Whether process ``pid`` is submitit's local job controller for this run's jobs folder
    (its command line says so): no other process is ever signalled."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    args = [a.decode(errors="replace") for a in argv]
    folders = {str(jobs_folder.absolute()), str(jobs_folder.resolve())}
    return "submitit.local._local" in args and any(a in folders for a in args)


def cancel_run(store: ResultStore, manifest: dict[str, Any]) -> list[str]:
    """Cancel the run's queued or running jobs; return what was cancelled."""
    import signal

    done = []
    name = manifest["executor"]
    for job in manifest.get("jobs", []):
        if all(store.has_shard(k) for k in job["keys"]):
            continue
        jid = job["job_id"]
        if name == "slurm":
            import subprocess

            subprocess.run(["scancel", jid], check=False)  # an array task id (123_4) or a job id
            done.append(f"slurm job {jid}")
        elif name == "local":
            if pid_alive(int(jid)) and is_local_job_of(int(jid), store.jobs / manifest["run_id"]):
                # as submitit's LocalJob.cancel: SIGINT makes the controller kill its tasks
                # (a task ignores SIGTERM: submitit bypasses it, as Slurm sends it before USR2)
                os.kill(int(jid), signal.SIGINT)
                done.append(f"local job {jid}")
    for key in (k for job in manifest.get("jobs", []) for k in job["keys"]):
        if not store.has_shard(key):
            store.running_path(key).unlink(missing_ok=True)
    store.write_run(manifest["run_id"], {**manifest, "status": "cancelled"})
    return done


def finalize(suite: Suite, shards: list[Shard], store: ResultStore, run_id: str, executor: str
             ) -> tuple[int, list[str]]:
    """Write the rows and per-sample table of every cell whose shards are all done and whose
    rows are not yet written; return how many cells were written and a line for each row
    written with a non-finite value."""
    cells: dict[str, list[Shard]] = defaultdict(list)
    for c in shards:
        cells[c.cell_key].append(c)
    env = None
    written = 0
    nonfinite: list[str] = []
    for cell_key, members in cells.items():
        if store.has_rows(suite.name, cell_key):
            try:
                nonfinite += nonfinite_rows(store.read_rows(suite.name, cell_key))
            except CorruptFile:
                pass  # changed since it was checked: the next run rewrites it
            continue
        if not all(store.has_shard(c.key) for c in members):
            continue
        env = env or environment()
        members = sorted(members, key=lambda c: c.start)
        c0 = members[0]
        ev = EVALS.get(c0.eval["name"])(**c0.eval["params"])
        try:
            results = [store.read_shard(c.key) for c in members]
        except CorruptFile as exc:  # changed since it was checked: the next run recomputes it
            quarantine(exc.path, store.root, exc.reason)
            continue
        base = {
            "run_id": run_id, "suite": suite.name, "model": c0.model["label"],
            "model_name": c0.model["name"],
            "model_params": json.dumps({**c0.model["params"], **{t: c0.model[t] for t in
                                        MODEL_TRANSFORMS if c0.model.get(t)}}, sort_keys=True),
            "model_hash": c0.model_hash,
            "sampler": c0.sampler["label"], "sampler_name": c0.sampler["name"],
            "sampler_params": json.dumps(c0.sampler["params"], sort_keys=True),
            "grid": json.dumps(c0.sampler["grid"], sort_keys=True), "nfe": c0.nfe, "steps": c0.steps,
            "eval": c0.eval["name"], "eval_params": json.dumps(ev.params, sort_keys=True, default=str),
            "conditions": c0.conditions.summary(), "seed": c0.seed, "shards": len(members),
            "executor": executor, "config_hash": cell_key, "code_hash": code_hash(c0.code),
            "code_versions": json.dumps(c0.code, sort_keys=True), **env,
        }
        rows, samples = ev.finalize(members, results)
        rows = [{**base, **r} for r in rows]
        if samples is not None:
            lead = {k: base[k] for k in ("suite", "model", "sampler", "nfe", "eval", "config_hash",
                                         "run_id")}
            samples = samples.assign(**lead)
            order = [c for c in SAMPLE_COLUMNS if c in samples] + \
                [c for c in samples if c not in SAMPLE_COLUMNS]
            samples = samples[order]
        store.write_rows(suite.name, cell_key, rows, samples)
        written += 1
        nonfinite += nonfinite_rows(rows)
    return written, nonfinite


def nonfinite_rows(rows: list[dict[str, Any]]) -> list[str]:
    """A line for each row whose value is NaN, inf or missing (a NaN that the row's declared
    output says is an outcome, e.g. a target not reached, excepted)."""
    from bench.metrics.base import find_output

    out = []
    for r in rows:
        v = r.get("value")
        if v is not None and math.isnan(float(v)) and getattr(find_output(r["metric"]), "nan_means", ""):
            continue
        if v is None or not math.isfinite(float(v)):
            out.append(f"{r['model']}/{r['sampler']}/nfe={r['nfe']}/{r['eval']} {r['metric']} "
                       f"({r['slice']}) = {v} ({r.get('n_nonfinite') or 0} of "
                       f"{r.get('n_samples')} samples non-finite)")
    return out
