"""Error against a high-accuracy solve of the same model's probability-flow ODE (any model).

The oracle's ``oracle_rmse`` measures a sampler against the exact ODE solution of the true
data distribution; a trained network has no closed form, and FID cannot tell solver error from
model error. ``ref_rmse`` therefore compares each sample with a *reference solution of the
same network's PF-ODE* from the same initial noise and condition: a high-order deterministic
sampler (default DPM-Solver-3 singlestep, Lu et al. 2022, at NFE 999) between the batch grid's
first level and its last positive one (a final step to 0 is the denoising step there, as every
sampler takes it). The slope of ``ref_rmse`` against NFE is the solver's convergence order on
that network.

The default reference grid is uniform in the schedule's time, i.e. in the network's timestep
input, not in log-SNR: a network trained on integer timesteps can be strongly curved in the
timestep on the scale of single timesteps (fmnist-cond's noise prediction is), and a log-SNR
grid crosses tens of timesteps per step at high noise, so its solutions did not converge
(DPM-Solver-3 on fmnist-cond, 4 samples: 120..480 NFE differ from 960 NFE by 3e-3 to 6e-3 RMSE,
erratically), while time-uniform ones do (7e-4, 1.8e-4, 6e-5 at 333, 666, 1332 NFE against
2664).

The reference is cached per sample under ``CACHE/refsolve/`` by (model description with its
weights hash, condition rows, levels, reference sampler, its NFE and parameters, the sample's
noise stream), so every sampler and NFE of a suite shares one solve per sample. Its own error
is measured by putting the reference sampler at a lower NFE into the suite (its ``ref_rmse``
is then the reference's self-convergence).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bench.denoiser import Cond
from bench.errors import FieldError
from bench.integrity import checked, load_npz, npz_ok, save_npz
from bench.metrics.base import MEAN_CI, Output
from bench.metrics.oracle import SolutionRMSE
from bench.registry import METRICS

DEFAULT_SAMPLER = "dpm_solver_3"
DEFAULT_NFE = 999
GRIDS = ("time_uniform", "logsnr")


def reference_grid(sigmas: Tensor, steps: int, schedule: Any = None, kind: str = "time_uniform"
                   ) -> Tensor:
    """``steps`` intervals from ``sigmas[0]`` to the last positive level of ``sigmas``, uniform
    in the schedule's time (``time_uniform``) or in half-log-SNR (``logsnr``), with the trailing
    0 of a grid that ends in a denoising step."""
    s0, final_zero = float(sigmas[0]), float(sigmas[-1]) == 0.0
    s1 = float(sigmas[-2]) if final_zero else float(sigmas[-1])
    if kind == "logsnr":
        grid = torch.exp(-torch.linspace(-np.log(s0), -np.log(s1), steps + 1, dtype=torch.float64))
    else:
        ends = schedule.t_of_s(torch.tensor([s0, s1], dtype=torch.float64))
        grid = schedule.s_of_t(torch.linspace(float(ends[0]), float(ends[1]), steps + 1,
                                              dtype=torch.float64))
    grid[0], grid[-1] = s0, s1  # exact end points (the cache key holds them)
    if final_zero:
        grid = torch.cat([grid, grid.new_zeros(1)])
    return grid


@METRICS.register("ref_rmse", "RMSE per dimension between each sample and a high-accuracy "
                  "solve of the same model's PF-ODE from the same initial noise (any model; "
                  "params: ref_sampler, ref_nfe, ref_params); cached per sample")
class ReferenceRMSE(SolutionRMSE):
    row = "ref_rmse"
    outputs = {"ref_rmse": Output(False, MEAN_CI, "RMSE per dimension against a reference solve "
                                  "of the model's own PF-ODE", convergence=True)}
    param_defaults = {"ref_sampler": DEFAULT_SAMPLER, "ref_nfe": DEFAULT_NFE, "ref_params": {},
                      "ref_grid": "time_uniform"}

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        super().check_params(params)
        from bench.samplers import sampler_info
        from bench.registry import SAMPLERS

        name = params.get("ref_sampler", DEFAULT_SAMPLER)
        if name not in SAMPLERS:
            raise FieldError("ref_sampler", f"= {name!r} is not a sampler.",
                             "use a deterministic high-order one, e.g. dpm_solver_3 or heun.")
        info = sampler_info(name)
        if info.stochastic or info.order_for(params.get("ref_params") or {}) is None:
            raise FieldError("ref_sampler", f"= {name!r} has no ODE order (stochastic or not an "
                             f"ODE solver), so it does not converge to the ODE solution.",
                             "use a deterministic high-order one, e.g. dpm_solver_3 or heun.")
        nfe = params.get("ref_nfe", DEFAULT_NFE)
        if isinstance(nfe, bool) or not isinstance(nfe, int) or not \
                info.evals_per_step <= nfe <= 100_000:
            raise FieldError("ref_nfe", f"= {nfe!r}.", f"use a whole number of evaluations from "
                             f"{info.evals_per_step} ({name} takes {info.evals_per_step} a step) "
                             f"to 100000, well above the NFE measured (e.g. 300).")
        if params.get("ref_grid", "time_uniform") not in GRIDS:
            raise FieldError("ref_grid", f"= {params['ref_grid']!r}.",
                             f"use one of: {', '.join(GRIDS)}.")
        if not isinstance(params.get("ref_params") or {}, dict):
            raise FieldError("ref_params", f"= {params['ref_params']!r} is not a mapping.",
                             "write 'ref_params: {key: value}' (the reference sampler's params).")

    def __init__(self, ctx) -> None:  # type: ignore[no-untyped-def]
        super().__init__(ctx)
        p = {**self.param_defaults, **(ctx.params or {})}
        self.check_params(p)
        if ctx.model is None:
            raise ValueError("ref_rmse solves the model's ODE: it needs the loaded model "
                             "(MetricContext.model), which only sampling evals give")
        from bench.samplers import sampler_info

        self.sampler, self.sampler_params = p["ref_sampler"], dict(p["ref_params"] or {})
        self.steps = max(1, int(p["ref_nfe"]) // sampler_info(self.sampler).evals_per_step)
        self.grid = p["ref_grid"]
        self.settings = {"ref_sampler": self.sampler, "ref_nfe": int(p["ref_nfe"]),
                         "ref_params": self.sampler_params, "ref_grid": self.grid}
        self.reset()

    @staticmethod
    def _levels(sigmas: Tensor) -> list[float]:
        """The levels a reference solve spans: the batch grid's first and last level, and the
        last positive one of a grid that ends in a denoising step at 0; to 12 significant
        digits, as grids of different samplers meet at the same levels up to their last bits."""
        ends = (sigmas[0], sigmas[-2], sigmas[-1]) if float(sigmas[-1]) == 0 else \
            (sigmas[0], sigmas[-1])
        return [float(f"{float(v):.12g}") for v in ends]

    def _keys(self, gen: Any) -> list[str]:
        """Per sample: model, settings, levels, the sample's noise stream and its condition."""
        base = json.dumps([self.ctx.adapter.describe(), self.settings, self._levels(gen.sigmas)],
                          sort_keys=True, default=str).encode()
        keys = []
        for i in range(len(gen)):
            h = hashlib.sha256(base)
            h.update(str(int(gen.seeds[i])).encode())
            if gen.cond is not None:
                h.update(gen.cond.rows[i].detach().cpu().numpy().tobytes())
                if gen.cond.null is not None:
                    h.update(gen.cond.null[i].detach().cpu().numpy().tobytes())
            keys.append(h.hexdigest()[:32])
        return keys

    def solve(self, seeds: np.ndarray, cond: Cond | None, levels: list[float]) -> Tensor:
        """The reference solutions of the samples whose noise streams are ``seeds``: each
        initial noise is redrawn from its stream at the rounded first level (as ``generate``
        draws it), so a solve depends on its key alone, not on which grid asked first."""
        from bench.generate import solve_from
        from bench.noise import NoiseSource

        adapter, model = self.ctx.adapter, self.ctx.model
        sigmas = torch.tensor(levels, dtype=torch.float64)
        s0 = sigmas[0]
        x = NoiseSource.of_streams(seeds, model.device, adapter.dtype).randn(
            adapter.sample_shape()) * s0.to(adapter.dtype)
        return solve_from(model, self.sampler, self.sampler_params, x,
                          reference_grid(sigmas, self.steps, model.denoiser.schedule, self.grid),
                          cond)

    def reference(self, gen: Any) -> Tensor:
        cache = self.ctx.cache_dir
        keys = self._keys(gen)
        out = torch.empty_like(gen.samples)
        paths = [None if cache is None else cache / "refsolve" / f"{k}.npz" for k in keys]
        missing = []
        for i, path in enumerate(paths):
            if path is not None and checked(path, cache.parent, npz_ok):
                out[i] = torch.from_numpy(load_npz(path)["x"]).to(out)
            else:
                missing.append(i)
        if missing:
            m = torch.tensor(missing, device=gen.x_start.device)
            cond = None if gen.cond is None else Cond(
                gen.cond.rows[m], None if gen.cond.null is None else gen.cond.null[m])
            solved = self.solve(gen.seeds[missing], cond, self._levels(gen.sigmas))
            for j, i in enumerate(missing):
                out[i] = solved[j].to(out)
                if paths[i] is not None:
                    save_npz(paths[i], {"x": solved[j].detach().cpu().numpy()})
        return out

    def target(self, gen: Any) -> Tensor:
        return self.reference(gen)
