"""Classifier-free guidance at the Denoiser layer (Ho & Salimans 2022, eq. 6).

``D_w(x; s, c) = D(x; s, None) + w (D(x; s, c) - D(x; s, None))`` in the x0 parameterisation,
which equals the paper's ``(1 + w') eps(x, c) - w' eps(x)`` with ``w = 1 + w'`` since
``eps = (x - D) / s`` is affine in ``D``. Samplers see one denoiser; they never know about
guidance.

Counting convention (as papers count): one guided evaluation is **one NFE per sample**, whether
the conditional and unconditional passes are batched together or not. ``network_calls`` counts
forward passes of the underlying network: 1 per guided evaluation when batched (one pass on a
batch of 2B rows), 2 when not. Results carry both columns (``nfe_counted``, ``network_calls``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from bench.denoiser import Cond


class GuidedDenoiser:
    """Wrap a conditional denoiser ``inner(x, s, cond)`` with classifier-free guidance.

    ``uncond`` is the null condition the inner model understands; when the inner model takes a
    per-row condition tensor (class indices with ``uncond`` as the null token), ``batched=True``
    evaluates both halves in one call on ``[x; x]``. ``scale = 1`` is plain conditional
    sampling, ``scale = 0`` unconditional.
    """

    def __init__(self, inner: Any, *, scale: float, cond: Any, uncond: Any = None,
                 batched: bool = True) -> None:
        self.inner, self.scale, self.cond, self.uncond = inner, float(scale), cond, uncond
        self.batched = bool(batched)
        self.schedule = inner.schedule
        self.network_calls = 0

    def __getattr__(self, name: str) -> Any:  # sample_data, cache_key, ... of the inner model
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def cache_key(self) -> str:
        return f"{getattr(self.inner, 'cache_key', id(self.inner))}|cfg:{self.scale}:{self.cond}"

    def __call__(self, x: Tensor, sigma: Tensor, cond: Any | None = None) -> Tensor:
        """``cond`` a :class:`bench.denoiser.Cond` (its ``null`` rows are the unconditional
        branch), else a condition the inner model takes (default: the one given at construction)
        with ``uncond`` as the unconditional branch."""
        if isinstance(cond, Cond):
            if cond.null is None:
                raise ValueError("guidance needs the unconditional rows (Cond.null) of the batch")
            c, u = cond.rows, cond.null
        else:
            c, u = (self.cond if cond is None else cond), self.uncond
            if self.batched and u is None and self.scale != 1.0:
                raise ValueError("GuidedDenoiser: batched=True needs an explicit null condition "
                                 "uncond=... that the model accepts per row (or a Cond with null "
                                 "rows); or set batched=False.")
        if self.scale == 1.0:
            self.network_calls += 1
            return self.inner(x, sigma, c)
        if self.batched:
            n = x.shape[0]
            rows = torch.cat([_per_row(c, n, x.device), _per_row(u, n, x.device)])
            both = self.inner(torch.cat([x, x]), torch.cat([sigma, sigma]), rows)
            d_c, d_u = both[:n], both[n:]
            self.network_calls += 1
        else:
            d_c, d_u = self.inner(x, sigma, c), self.inner(x, sigma, u)
            self.network_calls += 2
        return d_u + self.scale * (d_c - d_u)


def _per_row(c: Any, n: int, device: torch.device) -> Tensor:
    """Class labels (a scalar or ``[n]``) or encoder states (``[n, T, D]``) as ``n`` rows."""
    if isinstance(c, Tensor) and c.is_floating_point():
        return c.to(device)
    t = torch.as_tensor(c, device=device, dtype=torch.long).reshape(-1)
    return t.expand(n) if t.numel() == 1 else t
