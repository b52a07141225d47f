"""Error against an oracle model's exact probability-flow ODE solution."""

from __future__ import annotations

import hashlib
import json
from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch

from bench.integrity import checked, load_npz, npz_ok, save_npz
from bench.metrics.base import MEAN_CI, Metric, Output, Values, mean_ci, merge_per_sample
from bench.registry import METRICS


class SolutionRMSE(Metric):
    """RMSE per dimension between each sample and a solution of the ODE from the same start
    (``target``): one per-sample value named ``row``, mean and 95% Student-t CI over samples."""

    row: ClassVar[str] = "rmse"

    def reset(self) -> None:
        self.index: list[np.ndarray] = []
        self.rmse: list[np.ndarray] = []

    @abstractmethod
    def target(self, gen: Any) -> torch.Tensor:
        """The solution each sample of ``gen`` is compared with."""

    def update(self, gen: Any) -> None:
        diff = (gen.samples.to(torch.float64) - self.target(gen).to(torch.float64)).flatten(1)
        self.rmse.append(diff.pow(2).mean(1).sqrt().cpu().numpy())
        self.index.append(np.asarray(gen.indices, dtype=np.int64))

    def state(self) -> dict[str, np.ndarray]:
        return {"index": np.concatenate(self.index), self.row: np.concatenate(self.rmse)}

    @staticmethod
    def merge(states: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        return merge_per_sample(states)

    @classmethod
    def compute(cls, state: dict[str, np.ndarray]) -> Values:  # type: ignore[override]
        return {cls.row: mean_ci(state[cls.row])}

    @classmethod
    def per_sample(cls, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # type: ignore[override]
        return {cls.row: state[cls.row]}


@METRICS.register("oracle_rmse", "RMSE per dimension between each sample and the exact PF-ODE "
                  "solution from the same initial noise (oracle models); mean and 95% t-CI")
class OracleRMSE(SolutionRMSE):
    outputs = {"rmse": Output(False, MEAN_CI, "RMSE per dimension against the exact ODE solution",
                                 convergence=True)}

    def __init__(self, ctx) -> None:  # type: ignore[no-untyped-def]
        super().__init__(ctx)
        if not ctx.adapter.is_oracle:
            raise ValueError(f"oracle_rmse needs an oracle model (e.g. gmm), not "
                             f"{type(ctx.adapter).__name__}; use a sample-quality metric instead")
        self.reset()

    def truth(self, batch: Any) -> torch.Tensor:
        s0, s1 = float(batch.sigmas[0]), float(batch.sigmas[-1])
        adapter, cache = self.ctx.adapter, self.ctx.cache_dir
        if getattr(adapter, "truth_is_cheap", False) or cache is None:
            return adapter.ode_solution(batch.x_start, s0, s1)
        h = hashlib.sha256(json.dumps([adapter.describe(), s0, s1], sort_keys=True).encode())
        h.update(batch.x_start.detach().cpu().numpy().tobytes())
        path = cache / "truth" / f"{h.hexdigest()[:24]}.npz"
        if checked(path, cache.parent, npz_ok):  # a corrupt file is moved aside and recomputed
            return torch.from_numpy(load_npz(path)["truth"]).to(batch.x_start)
        out = adapter.ode_solution(batch.x_start, s0, s1)
        save_npz(path, {"truth": out.detach().cpu().numpy()})
        return out

    def target(self, gen: Any) -> torch.Tensor:
        return self.truth(gen)
