"""The one contract every sampler sees, and the wrapper that counts its evaluations.

A denoiser maps a data-scaled noisy batch ``x = x_0 + s * eps`` and per-sample noise levels
``s`` to the estimate of ``x_0`` (the ``D(x; sigma)`` of Karras et al. 2022). Adapters hide
eps / v / x0 parameterisations, discrete vs continuous time and guidance behind it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import Tensor

if TYPE_CHECKING:
    from bench.samplers.schedules import VPSchedule


@dataclass(frozen=True)
class Cond:
    """What a conditional network is given, one row per sample: ``rows`` are class labels
    ``[B]`` (long) or encoder hidden states ``[B, T, D]``; ``null`` the matching rows of the
    unconditional branch (null class, negative prompt) that classifier-free guidance uses."""

    rows: Tensor
    null: Tensor | None = None

    def __len__(self) -> int:
        return int(self.rows.shape[0])


@runtime_checkable
class Denoiser(Protocol):
    schedule: "VPSchedule"

    def __call__(self, x: Tensor, sigma: Tensor, cond: Any | None = None) -> Tensor: ...


class CountingDenoiser:
    """Counts evaluations (NFE) and the wall time spent inside the model.

    ``nfe`` counts denoiser evaluations per sample, as papers count them: one call on a batch
    is one evaluation for each sample in it (a classifier-free guided evaluation counts once).
    ``network_calls`` counts raw forward passes of the underlying network since the last
    ``reset()`` (differs from ``nfe`` only for guidance that is not batched; see
    ``bench.guidance``). The condition is an argument of every call, as samplers pass it.
    Other attributes (``sample_data``, ``cache_key``, ``parameterisation``)
    are those of the wrapped denoiser; ``uncounted`` is the wrapped denoiser itself, for
    precomputations that are not part of sampling (e.g. Analytic-DPM's Gamma estimate).
    """

    def __init__(self, inner: Denoiser) -> None:
        self.inner = inner
        self.schedule = inner.schedule
        self.nfe = 0
        self.model_s = 0.0
        self._calls0 = self._inner_calls()

    def __getattr__(self, name: str) -> Any:
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def uncounted(self) -> Denoiser:
        return self.inner

    def _inner_calls(self) -> int | None:
        calls = getattr(self.inner, "network_calls", None)
        return None if calls is None else int(calls)

    @property
    def network_calls(self) -> int:
        calls = self._inner_calls()
        return self.nfe if calls is None else calls - (self._calls0 or 0)

    def __call__(self, x: Tensor, sigma: Tensor, cond: Any | None = None) -> Tensor:
        return self._counted(self.inner, x, sigma, cond)

    def eps_moments(self, x: Tensor, sigma: Tensor, cond: Any | None = None
                    ) -> tuple[Tensor, Tensor]:
        """A Bayesian model's noise mean and variance (``bench.bayesian_model``), counted as
        one evaluation: BayesDiff's samplers step their trajectory with it."""
        return self._counted(self.inner.eps_moments, x, sigma, cond)

    def _counted(self, fn: Any, x: Tensor, sigma: Tensor, cond: Any) -> Any:
        sync = x.device.type == "cuda"
        if sync:
            torch.cuda.synchronize(x.device)
        t0 = time.perf_counter()
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        out = fn(x, sigma, cond)
        if sync:
            torch.cuda.synchronize(x.device)
        self.model_s += time.perf_counter() - t0
        self.nfe += 1
        return out

    def reset(self) -> None:
        self.nfe, self.model_s = 0, 0.0
        self._calls0 = self._inner_calls()
