"""Per-sample random streams: sample i is the same whatever the batch size or shard split.

As in EDM's ``StackedRandomGenerator`` (Karras et al. 2022, ``generate.py``): one generator
per sample index, seeded from ``(seed, index)``. The first draw of a stream is the initial
noise; stochastic samplers draw their step noise from the same stream afterwards. Draws are
made in float64 on the CPU and then moved, so they do not depend on device or dtype.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor


def sample_seed(seed: int, index: int) -> int:
    """A 63-bit seed for sample ``index`` of a run seeded with ``seed``."""
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


class NoiseSource:
    """Stacked per-sample generators for a batch of sample indices."""

    def __init__(self, seed: int, indices: Sequence[int], device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float64) -> None:
        self.seed, self.indices = int(seed), [int(i) for i in indices]
        self.device, self.dtype = torch.device(device), dtype
        self.seeds = [sample_seed(seed, i) for i in self.indices]
        self.generators = [torch.Generator().manual_seed(s) for s in self.seeds]

    @classmethod
    def of_streams(cls, stream_seeds: Sequence[int], device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float64) -> "NoiseSource":
        """The streams of known per-sample seeds (``Generation.seeds``), e.g. to redraw a
        sample's initial noise exactly."""
        out = cls(0, [], device, dtype)
        out.seeds = [int(s) for s in stream_seeds]
        out.generators = [torch.Generator().manual_seed(s) for s in out.seeds]
        return out

    def randn(self, shape: Sequence[int]) -> Tensor:
        """A [batch, *shape] standard normal draw, one row per sample stream."""
        out = torch.empty((len(self.generators), *shape), dtype=torch.float64)
        for row, g in zip(out, self.generators):
            torch.randn(tuple(shape), generator=g, dtype=torch.float64, out=row)
        return out.to(device=self.device, dtype=self.dtype)

    def randn_like(self, x: Tensor) -> Tensor:
        if x.shape[0] != len(self.generators):
            raise ValueError(f"batch of {x.shape[0]} but {len(self.generators)} sample streams")
        return self.randn(x.shape[1:])
