"""Sampler registration and NFE accounting.

Every sampler is a plain function with one signature::

    fn(model: Denoiser, x: Tensor, sigmas: Tensor, *, noise: NoiseSource | None = None,
       callback: Callable | None = None, **params) -> Tensor

``x`` is the initial batch at ``sigmas[0]`` (``sigmas[0] * z`` for fresh noise), in the
data-scaled frame; the return value is the batch at ``sigmas[-1]``. The time grid is chosen
separately (``bench.samplers.schedules``) as in k-diffusion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from bench.errors import BenchError
from bench.registry import SAMPLERS


@dataclass(frozen=True)
class SamplerInfo:
    evals_per_step: int
    grid: dict[str, Any]
    stochastic: bool
    paper: str
    #: order of accuracy in the step size as the paper states, or a function of the params
    order: int | Callable[[dict[str, Any]], int | None] | None = None

    def order_for(self, params: dict[str, Any]) -> int | None:
        """Theoretical ODE order for these params; None for stochastic samplers (their error
        against the ODE solution does not vanish with the step size)."""
        if self.stochastic:
            return None
        return self.order(params) if callable(self.order) else self.order


def register_sampler(name: str, *, evals_per_step: int, grid: dict[str, Any], paper: str,
                     order: int | Callable[[dict[str, Any]], int | None] | None = None,
                     stochastic: bool = False,
                     description: str = "") -> Callable:
    """Register a sampler with its cost per step, default grid and the paper it implements.

    A step that ends at s = 0 is a single denoising evaluation for every sampler (as in
    EDM's Heun and k-diffusion's DPM-2), so on a grid ending at 0 the NFE of ``n`` steps is
    ``k (n - 1) + 1`` and otherwise ``k n``, with ``k = evals_per_step``.
    """
    info = SamplerInfo(evals_per_step, dict(grid), stochastic, paper, order)
    return SAMPLERS.register(name, description, info=info)


def sampler_info(name: str) -> SamplerInfo:
    return SAMPLERS.entry(name).meta["info"]


def nfe_for_steps(evals_per_step: int, steps: int, final_zero: bool) -> int:
    return evals_per_step * (steps - 1) + 1 if final_zero else evals_per_step * steps


def steps_for_nfe(evals_per_step: int, nfe: int, final_zero: bool,
                  rounding: str = "error") -> tuple[int, int]:
    """(steps, nfe actually used) for a requested NFE; rounding in error | down | up.

    Raises BenchError when the NFE cannot be hit exactly and rounding is 'error'.
    """
    k, fz = evals_per_step, int(final_zero)
    exact, rem = divmod(nfe - fz, k)
    steps = exact + fz
    if rem == 0 and steps >= 1:
        return steps, nfe
    down = max(steps, 1) if nfe - fz >= 0 else 1
    lo = nfe_for_steps(k, down, final_zero)
    hi_steps = down + 1 if lo <= nfe else down
    hi = nfe_for_steps(k, hi_steps, final_zero)
    if rounding == "down" and lo <= nfe:
        return down, lo
    if rounding == "up":
        return (down, lo) if lo >= nfe else (hi_steps, hi)
    form = f"{k}n" if not fz else f"{k}(n-1)+1"
    choices = sorted({v for v in (lo, hi) if v >= 1})
    raise BenchError(
        f"NFE {nfe} cannot be reached exactly: this sampler on this grid uses {form} "
        f"evaluations for n steps (reachable nearby: {', '.join(map(str, choices))}). "
        f"Use one of those, or set nfe_rounding: down|up to round explicitly.")
