"""Eval ``nfe_to_target``: the smallest NFE at which a sampler reaches a target value of a metric
("NFE to reach FID X"), by bisection over the sampler's reachable step counts.

A loop eval: one shard per (model, sampler), which generates the suite's ``samples`` at each
probed NFE (``bench.generate``, the same per-sample noise at every probe), measures the metric,
and checkpoints the probes so far to the results folder after each one, so a killed or
preempted run resumes where it stopped and ends with identical rows. The search assumes the
metric improves monotonically with NFE over ``[nfe_min, nfe_max]``: it first probes ``nfe_max``
(not reached there: the result is NaN), then bisects ``steps`` (lo, hi) keeping ``hi`` reached.
Rows: one per probe (``step`` = probe number, ``nfe`` = the probed NFE, ``metric`` = the
metric's row) and the result (``metric = nfe_to_target``, ``value`` = the NFE found,
``step`` = the number of probes).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any


import numpy as np

from bench.errors import FieldError
from bench.evals.base import Eval, Models, ShardResult
from bench.evals.sampled import parse_metrics, sample_batches
from bench.generate import SamplerSpec
from bench.metrics.base import MetricContext, Output
from bench.registry import EVALS, METRICS

if TYPE_CHECKING:
    import pandas as pd

OUTPUTS = {"nfe_to_target": Output(False, "none (the smallest reachable NFE that met the target; "
                                          "NaN if nfe_max did not)",
                                   nan_means="the target was not reached by nfe_max")}


@EVALS.register("nfe_to_target", "Smallest NFE at which a sampler reaches a target metric value, by "
                "bisection (params: metric, output, target, nfe_min, nfe_max)")
class NFEToTarget(Eval):
    shape = "loop"
    report_sections = "bench.report.sections:nfe_to_target_sections"
    outputs = OUTPUTS

    def __init__(self, *, metric: Any = "oracle_rmse", target: float | None = None,
                 output: str | None = None, nfe_min: int = 1, nfe_max: int | None = None) -> None:
        spec = parse_metrics([metric], "metric")[0]
        METRICS.get(spec.name).check_params(spec.params)
        outs = METRICS.get(spec.name).outputs
        output = output or next(iter(outs), None)
        if output not in outs:
            raise FieldError("output", f"{output!r} is not a row of metric '{spec.name}'.",
                             f"use one of: {', '.join(outs)}.")
        if outs[output].higher_is_better is None:
            raise FieldError("output", f"row {output!r} has no direction to reach a target in.",
                             f"use one of: {', '.join(k for k, o in outs.items() if o.higher_is_better is not None)}.")
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not math.isfinite(target):
            raise FieldError("target", f"= {target!r}.", "give the metric value to reach, e.g. "
                             "'target: 0.01'.")
        for name, v in (("nfe_min", nfe_min), ("nfe_max", nfe_max)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise FieldError(name, f"= {v!r}.", "use a whole number >= 1.")
        if nfe_max < nfe_min:  # type: ignore[operator]
            raise FieldError("nfe_max", f"= {nfe_max} is below nfe_min = {nfe_min}.",
                             "give nfe_min <= nfe_max.")
        self.spec, self.output, self.target = spec, output, float(target)
        self.higher = bool(outs[output].higher_is_better)
        self.nfe_min, self.nfe_max = int(nfe_min), int(nfe_max)  # type: ignore[arg-type]
        super().__init__(metric={"name": spec.name, "params": spec.params}, output=output,
                         target=self.target, nfe_min=self.nfe_min, nfe_max=self.nfe_max)

    def metric_specs(self) -> list[tuple[str, dict[str, Any]]]:
        return [(self.spec.name, self.spec.params)]

    def reached(self, value: float) -> bool:
        return value >= self.target if self.higher else value <= self.target

    def points(self, sampler: dict[str, Any]) -> list[tuple[int, int]]:
        """One cell per sampler, at nfe_max and the most steps it probes."""
        return [(self.nfe_max, self.step_range(sampler)[1])]

    def probe_steps(self, sampler: dict[str, Any]) -> list[tuple[int, int]]:
        """The bisection probes down to the smallest step count."""
        from bench.samplers import nfe_for_steps, sampler_info
        from bench.samplers.schedules import grid_final_zero

        lo = self.step_range(sampler)[0]
        return [(nfe_for_steps(sampler_info(sampler["name"]).evals_per_step, lo,
                               grid_final_zero(sampler["grid"])), lo)]

    def step_range(self, sampler: dict[str, Any]) -> tuple[int, int]:
        """Smallest and largest step counts whose NFE lies in [nfe_min, nfe_max]."""
        from bench.samplers import nfe_for_steps, sampler_info
        from bench.samplers.schedules import grid_final_zero

        k = sampler_info(sampler["name"]).evals_per_step
        fz = grid_final_zero(sampler["grid"])
        steps = [n for n in range(1, self.nfe_max + 1)
                 if self.nfe_min <= nfe_for_steps(k, n, fz) <= self.nfe_max]
        if not steps:
            raise FieldError("nfe_min", f"no step count of sampler '{sampler['label']}' has an NFE "
                             f"in [{self.nfe_min}, {self.nfe_max}].", "widen the NFE range.")
        return steps[0], steps[-1]

    def run_shard(self, shard: Any, models: Models, cache_dir: Any = None,
                  progress: Any = None) -> ShardResult:
        t_start = time.perf_counter()
        loaded = models.get(shard.model, shard.device)
        cls = METRICS.get(self.spec.name)
        saved = progress.resume() if progress is not None else None
        probes: dict[str, np.ndarray] = saved[1]["probes"] if saved else {
            k: np.zeros(0, dtype) for k, dtype in (("steps", np.int64), ("nfe", np.int64),
                                                  ("value", float), ("ci_low", float),
                                                  ("ci_high", float), ("wall_s", float))}
        meta: dict[str, Any] = saved[2] if saved else {"network_calls": 0, "sample_s": 0.0,
                                                      "model_s": 0.0, "attempts": 0}
        meta["attempts"] += 1
        known = {int(s): float(v) for s, v in zip(probes["steps"], probes["value"])}

        def probe(steps: int) -> bool:
            nonlocal probes
            if steps not in known:
                t0 = time.perf_counter()
                spec = SamplerSpec.from_dict(shard.sampler, steps)
                metric = cls(MetricContext(loaded.adapter, loaded.device, cache_dir, self.spec.params,
                                            model=loaded))
                acc, nfe = None, 0
                for gen in sample_batches(loaded, spec, shard.start, shard.stop, shard.batch_size,
                                          shard.seed, shard.conditions, cls.needs_images,
                                          f"{shard.label()} steps={steps}"):
                    metric.update(gen)
                    st = metric.state()
                    metric.reset()
                    acc = st if acc is None else cls.merge([acc, st])
                    nfe = gen.nfe
                    meta["network_calls"] = max(meta["network_calls"], gen.network_calls)
                    meta["sample_s"] += gen.timings["sample_s"]
                    meta["model_s"] += gen.timings["model_s"]
                value, lo, hi = cls.compute(acc)[self.output]
                row = {"steps": steps, "nfe": nfe, "value": value, "ci_low": lo, "ci_high": hi,
                       "wall_s": time.perf_counter() - t0}
                probes = {k: np.append(v, row[k]).astype(v.dtype) for k, v in probes.items()}
                known[steps] = float(value)
                if progress is not None:  # the loop's own checkpoint, after every probe
                    progress.update(len(probes["steps"]), {"probes": probes}, meta)
                    progress.save()
            return self.reached(known[steps])

        lo, hi = self.step_range(shard.sampler)
        if probe(hi):
            while lo < hi:
                mid = (lo + hi) // 2
                if probe(mid):
                    hi = mid
                else:
                    lo = mid + 1
            found = hi
        else:
            found = -1
        meta.update(found_steps=found, wall_s=meta.get("wall_s", 0.0) + time.perf_counter() - t_start,
                    n_samples=shard.stop - shard.start, device=models.device_name(loaded))
        return {f"probes/{k}": v for k, v in probes.items()}, meta

    def finalize(self, shards: list[Any], results: list[ShardResult]
                 ) -> tuple[list[dict[str, Any]], pd.DataFrame | None]:
        state, meta = results[0]
        p = {k.split("/", 1)[1]: v for k, v in state.items() if k.startswith("probes/")}
        common = {"n_samples": meta["n_samples"], "network_calls": meta["network_calls"],
                  "sample_s": meta["sample_s"], "model_s": meta["model_s"], "wall_s": meta["wall_s"],
                  "device": meta["device"], "slice": "all"}
        rows = [{**common, "step": i, "nfe": int(p["nfe"][i]), "nfe_counted": int(p["nfe"][i]),
                 "steps": int(p["steps"][i]), "metric": self.output, "value": float(p["value"][i]),
                 "ci_low": float(p["ci_low"][i]), "ci_high": float(p["ci_high"][i])}
                for i in range(len(p["steps"]))]
        found = int(meta["found_steps"])
        nfe = next((int(n) for s, n in zip(p["steps"], p["nfe"]) if int(s) == found), None)
        rows.append({**common, "step": len(rows), "metric": "nfe_to_target",
                     "value": float(nfe) if nfe is not None else float("nan"),
                     "nfe": nfe if nfe is not None else self.nfe_max,
                     "nfe_counted": nfe if nfe is not None else -1,
                     "steps": found, "ci_low": float("nan"), "ci_high": float("nan")})
        return rows, None
