"""The size of a suite, counted from its lists before any shard exists, and the bounds on it.

``bench plan`` (and ``bench run`` before it dispatches anything) states what a suite will do:
cells, shards, samples, network evaluations ((NFE + a sampler's passes beyond it, such as
BayesDiff's Monte Carlo draws) x samples, summed over cells; a loop eval such
as ``nfe_to_target`` is counted at its ``nfe_max`` for each sample, the cost of one probe, as
the dispatcher weighs shards) and an estimate of the peak memory of one job. ``plan()`` refuses
a suite (SuiteError, exit 2) before it materialises a single shard when

* it has more than ``MAX_SHARDS`` shards (counted arithmetically: ``ceil(samples / shard_size)``
  per cell), so a suite whose lists multiply to 10^9 shards is answered at once;
* one job would need more memory than the executor's ``mem_gb`` or, without it, than this
  machine's RAM (``/proc/meminfo``; no check where it cannot be read).

A job holds one shard at a time. Its estimate is the largest, over the suite's (model, eval)
pairs, of

* the model: the tensors and arrays the adapter keeps (the gmm oracle's means, variances and
  eigenvectors) and the weight files of a diffusers folder (the loaded network);
* one batch: ``min(batch_size, shard samples) x prod(sample_shape) x element size x
  SAMPLER_STATE_FACTOR`` (the batch, its denoised estimate and noise, a multistep solver's
  history, the float64 draws of the noise streams and the oracle's float64 truth);
* the shard's eval state: the per-sample record (``RECORD_BYTES`` a sample) and each metric's
  state; a fidelity metric (FID, KID, IS, precision/recall, density/coverage) keeps
  ``FEATURE_DIM`` float32 features per sample, held twice while a batch is folded in (so 8
  bytes a feature), and FID's float64 sums of outer products and the reference's statistics
  (``2 x FEATURE_DIM^2`` float64); ``oracle_rmse`` keeps an index and a value per sample.

It is an estimate: the activations of a network and the reference features of a fidelity
metric are not counted, so it refuses only work that cannot fit, never promises that the rest
will. Seeds (``[0, MAX_SEED]``, the int64 seed column of the results) and NFEs
(``<= MAX_NFE``) are checked by ``bench.suite.validate``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import SuiteError

#: most shards a suite may have: the plan, the run manifest and the progress bar hold one
#: entry per shard, and more than this many jobs' worth of bookkeeping means a setting is off
MAX_SHARDS = 100_000
#: largest NFE a suite may ask for (nfe list, nfe_to_target's nfe_max): a grid of that many
#: steps is built at plan time for every sampler
MAX_NFE = 100_000
#: largest seed: results store it in an int64 column (bench.store), bench.noise takes any >= 0
MAX_SEED = 2**63 - 1
#: copies of a batch a sampler step holds at once (see module doc)
SAMPLER_STATE_FACTOR = 8
#: per-sample feature width assumed for fidelity metrics (Inception pool3; wider than the
#: logits IS keeps and than CLIP/DINOv2-base embeddings)
FEATURE_DIM = 2048
#: per-sample record of a shard: index, seed, finite flag, condition id/text/category
RECORD_BYTES = 64
#: per-sample state of a metric this module knows nothing about
OTHER_METRIC_BYTES = 64


@dataclass
class Budget:
    """What a suite will compute, and the largest job's memory estimate."""

    cells: int
    shards: int
    samples: int
    evaluations: int          # network passes: (NFE + a sampler's extra passes) x samples
    peak_bytes: int           # largest per-job estimate
    parts: dict[str, int]     # its parts: model, batch, state
    where: dict[str, Any]     # what the largest job is: model label, batch, shard samples
    limit_bytes: int | None   # what one job may use (None: unknown, not checked)
    limit_source: str

    def lines(self) -> list[str]:
        w, p = self.where, self.parts
        mem = (f"memory: about {size(self.peak_bytes)} per job at most (model {w['model']} "
               f"{size(p['model'])} + batch of {w['batch']} sample(s) {size(p['batch'])} + "
               f"eval state of a {w['shard']}-sample shard {size(p['state'])})")
        mem += (f"; limit {size(self.limit_bytes)} ({self.limit_source})" if self.limit_bytes
                else "; no memory limit known (no executor.mem_gb, /proc/meminfo unreadable)")
        return [f"work: {self.cells:,} cell(s) in {self.shards:,} shard(s), {self.samples:,} "
                f"samples, {self.evaluations:,} network evaluations ((NFE + extra passes such as "
                f"BayesDiff's Monte Carlo draws) x samples; loop evals at their nfe_max)", mem]


def size(n: int | float | None) -> str:
    if n is None:
        return "?"
    for unit, k in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= k:
            return f"{n / k:.1f} {unit}"
    return f"{int(n)} B"


def machine_ram_bytes() -> int | None:
    """This machine's total RAM (``MemTotal`` of /proc/meminfo), None where unreadable."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_limit(suite: Any) -> tuple[int | None, str]:
    """(bytes one job may use, where that comes from): executor.mem_gb, else this machine's RAM."""
    mem_gb = suite["executor"].get("mem_gb")
    if mem_gb is not None:
        if isinstance(mem_gb, bool) or not isinstance(mem_gb, (int, float)) or not mem_gb > 0 \
                or not math.isfinite(mem_gb):
            raise SuiteError(suite.source, "executor.mem_gb", f"must be a positive number of GB, "
                             f"got {mem_gb!r}.", "write e.g. 'executor: {mem_gb: 16}'.")
        return int(mem_gb * 2**30), "executor.mem_gb"
    ram = machine_ram_bytes()
    return ram, "this machine's RAM" if ram else ""


def model_bytes(adapter: Any) -> int:
    """Tensors and arrays the adapter holds, plus the weight files it loads (see module doc)."""
    import numpy as np
    import torch

    total = 0
    for v in vars(adapter).values():
        if isinstance(v, torch.Tensor):
            total += v.numel() * v.element_size()
        elif isinstance(v, np.ndarray):
            total += v.nbytes
    folder = getattr(adapter, "folder", None)
    for comp in getattr(folder, "components", {}).values():
        for pattern in ("*.safetensors", "*.bin"):
            total += sum(f.stat().st_size for f in Path(comp[0]).glob(pattern))
    return total


def state_bytes(eval_obj: Any, samples: int) -> int:
    """The eval state one shard of ``samples`` samples keeps (see module doc)."""
    from bench.metrics.fidelity_common import FidelityMetric
    from bench.registry import METRICS

    per, fixed = RECORD_BYTES, 0
    for name, _ in eval_obj.metric_specs():
        cls = METRICS.get(name)
        if issubclass(cls, FidelityMetric):
            per += FEATURE_DIM * 8
            fixed += 2 * FEATURE_DIM * FEATURE_DIM * 8
        elif name == "oracle_rmse":
            per += 16
        else:
            per += OTHER_METRIC_BYTES
    return samples * per + fixed


def estimate(suite: Any, points: list[tuple[int, dict, dict, Any, list[tuple[int, int]]]]) -> Budget:
    """Count cells, shards, samples and evaluations from the lists (``bench.suite.plan_points``),
    without materialising shards, and estimate the largest job's memory."""
    import numpy as np

    from bench.registry import SAMPLERS
    from bench.samplers.base import sampler_info
    from bench.samplers.schedules import grid_final_zero

    d = suite.data
    cells = shards = samples = evaluations = 0
    peak: tuple[int, dict[str, int], dict[str, Any]] = (0, {"model": 0, "batch": 0, "state": 0},
                                                       {"model": "-", "batch": 0, "shard": 0,
                                                        "loop": False})
    models = [model_bytes(a) for a in suite.adapters]
    seen: set[tuple[int, int]] = set()
    for _, smp, ev, ev_obj, pts in points:
        loop = ev_obj.shape == "loop"
        counts = [ev_obj.sample_count(n) for n in suite.sample_counts]
        info = sampler_info(smp["name"])
        params = {**SAMPLERS.entry(smp["name"]).params(), **smp["params"]}
        for nfe, steps in pts:
            more = info.passes_beyond_nfe(params, steps, grid_final_zero(smp["grid"]))
            for n in counts:
                per = n if loop else (d["shard_size"] or n)
                cells += 1
                shards += -(-n // per)
                samples += n
                evaluations += (nfe + more) * n
        for mi, (adapter, n) in enumerate(zip(suite.adapters, counts)):
            if not pts or (mi, id(ev_obj)) in seen:
                continue
            seen.add((mi, id(ev_obj)))
            shard_n = n if loop else min(d["shard_size"] or n, n)
            batch = min(d["batch_size"], shard_n)
            try:
                elem = int(getattr(adapter.dtype, "itemsize", 4))
            except Exception:
                elem = 4
            parts = {"model": models[mi],
                     "batch": batch * int(np.prod(adapter.sample_shape(), dtype=object)) * elem
                     * SAMPLER_STATE_FACTOR,
                     "state": state_bytes(ev_obj, shard_n)}
            total = sum(parts.values())
            if total > peak[0]:
                peak = (total, parts, {"model": suite.models[mi]["label"], "model_index": mi,
                                       "batch": batch, "shard": shard_n, "loop": loop})
    limit, source = memory_limit(suite)
    return Budget(cells, shards, samples, evaluations, peak[0], peak[1], peak[2], limit, source)


def check(suite: Any, budget: Budget) -> None:
    """Refuse (SuiteError) a suite over MAX_SHARDS or over the memory limit (see module doc)."""
    d = suite.data
    if budget.shards > MAX_SHARDS:
        split = d["shard_size"] is not None and budget.shards > budget.cells
        per = f"up to {-(-max(suite.sample_counts) // d['shard_size']):,} shard(s) per cell " \
              f"(samples {max(suite.sample_counts):,} / shard_size {d['shard_size']:,})" if split \
            else "one shard per cell"
        raise SuiteError(
            suite.source, "shard_size" if split else "nfe",
            f"the suite has {budget.shards:,} shards ({budget.cells:,} cell(s) = models x "
            f"samplers x nfe list x evals, {per}); at most {MAX_SHARDS:,} are allowed.",
            "raise shard_size (or drop it: one shard per cell) or lower samples." if split else
            "shorten the nfe list, or split the samplers/models over several suites.")
    if budget.limit_bytes and budget.peak_bytes > budget.limit_bytes:
        p, w = budget.parts, budget.where
        biggest = max(p, key=p.get)  # type: ignore[arg-type]
        field_, fix = {
            "batch": ("batch_size", f"lower batch_size (now {d['batch_size']}; results do not "
                                    f"depend on it)"),
            "state": ("samples", "lower samples (a loop eval keeps all of them in one shard)")
                     if w["loop"] else
                     ("shard_size", f"set or lower shard_size (a shard of {w['shard']:,} samples "
                                    f"now; results do not depend on it)"),
            "model": (f"models[{w['model_index']}].params", "use a smaller model"),
        }[biggest]
        raise SuiteError(
            suite.source, field_,
            f"one job would need about {size(budget.peak_bytes)} (model {w['model']} "
            f"{size(p['model'])} + batch of {w['batch']:,} sample(s) {size(p['batch'])} + eval "
            f"state of a {w['shard']:,}-sample shard {size(p['state'])}), more than the "
            f"{size(budget.limit_bytes)} of {budget.limit_source}.",
            f"{fix}, or give the jobs more memory (executor: {{mem_gb: N}}, where the executor "
            f"takes it).")
