"""Sampler registration and NFE accounting.

Every sampler is a plain function with one signature::

    fn(model: Denoiser, x: Tensor, sigmas: Tensor, *, cond: Any = None,
       noise: NoiseSource | None = None, callback: Callable | None = None, **params) -> Tensor

``x`` is the initial batch at ``sigmas[0]`` (``sigmas[0] * z`` for fresh noise), in the
data-scaled frame; the return value is the batch at ``sigmas[-1]``. ``cond`` is the condition
(e.g. class labels) passed as the third argument of every model call, ``model(x, s, cond)``, as in
k-diffusion / EDM; ``None`` leaves it to the model. The time grid is chosen separately
(``bench.samplers.schedules``) as in k-diffusion; a sampler whose grid depends on one of its
params (``grid_params``) states it once, in params, and the suite forwards it to the grid.
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
    #: sampler params that the default grid takes too (same name): forwarded from params
    grid_params: tuple[str, ...] = ()
    #: per-sample extras it returns besides the images (e.g. BayesDiff's ``uncertainty``)
    extras: tuple[str, ...] = ()
    #: network passes per sample beyond the counted NFE, from (params with defaults, steps,
    #: grid ends at 0) (e.g. BayesDiff's Monte Carlo draws); None: none
    extra_passes: Callable[[dict[str, Any], int, bool], int] | None = None

    def passes_beyond_nfe(self, params: dict[str, Any], steps: int, final_zero: bool) -> int:
        return 0 if self.extra_passes is None else int(self.extra_passes(params, steps,
                                                                         final_zero))

    def order_for(self, params: dict[str, Any]) -> int | None:
        """Theoretical ODE order for these params; None for stochastic samplers (their error
        against the ODE solution does not vanish with the step size)."""
        if self.stochastic:
            return None
        return self.order(params) if callable(self.order) else self.order


def register_sampler(name: str, *, evals_per_step: int, grid: dict[str, Any], paper: str,
                     order: int | Callable[[dict[str, Any]], int | None] | None = None,
                     stochastic: bool = False, grid_params: tuple[str, ...] = (),
                     extras: tuple[str, ...] = (),
                     extra_passes: Callable[[dict[str, Any], int, bool], int] | None = None,
                     description: str = "") -> Callable:
    """Register a sampler with its cost per step, default grid and the paper it implements.

    ``grid_params`` names sampler params that the default grid depends on as well (e.g.
    DPM-Solver-fast's ``order``): a suite states them once, in the sampler's params, and its grid
    (when it is the default grid) gets the same values (``grid_values``).

    A step that ends at s = 0 is a single denoising evaluation for every sampler (as in
    EDM's Heun and k-diffusion's DPM-2), so on a grid ending at 0 the NFE of ``n`` steps is
    ``k (n - 1) + 1`` and otherwise ``k n``, with ``k = evals_per_step``. ``extras`` names the
    per-sample values it returns besides the images (metrics that read one run only on cells of
    samplers that declare it); ``extra_passes(params, steps, final_zero)`` its network passes
    per sample beyond the counted NFE (``bench plan``'s budget).
    """
    info = SamplerInfo(evals_per_step, dict(grid), stochastic, paper, order, tuple(grid_params),
                       tuple(extras), extra_passes)
    return SAMPLERS.register(name, description, info=info)


def sampler_info(name: str) -> SamplerInfo:
    return SAMPLERS.entry(name).meta["info"]


def grid_values(name: str, params: dict[str, Any], grid_name: str | None = None) -> dict[str, Any]:
    """The sampler's ``grid_params`` as its grid must get them: the value in ``params``, else the
    sampler's default (a None value means unset: the grid gets no such key).

    Empty when ``grid_name`` is not the sampler's default grid (other grids do not take them).
    """
    info = sampler_info(name)
    if not info.grid_params or (grid_name is not None and grid_name != info.grid["name"]):
        return {}
    defaults = SAMPLERS.entry(name).params()
    return {k: params.get(k, defaults.get(k)) for k in info.grid_params}


def sampler_grid(name: str, params: dict[str, Any], grid: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    """The grid a sampler runs on with these params: the default grid's fields, then ``grid``
    (if given), then the sampler's ``grid_params`` from ``params``. A ``grid_params`` key that
    ``grid`` sets to another value raises BenchError (state it once, in params)."""
    default = sampler_info(name).grid
    user = dict(grid or {})
    g = {**(default if user.get("name", default["name"]) == default["name"] else {}), **user}
    for k, v in grid_values(name, params, g.get("name")).items():
        if k in user and user[k] != v:
            raise GridParamConflict(name, k, user[k], v, k in params)
        if v is not None:
            g[k] = v
    return g


class GridParamConflict(BenchError):
    """A grid sets one of the sampler's ``grid_params`` to another value than the sampler uses."""

    def __init__(self, sampler: str, key: str, grid_value: Any, value: Any, in_params: bool) -> None:
        self.sampler, self.key, self.grid_value, self.value = sampler, key, grid_value, value
        self.in_params = in_params
        super().__init__(f"{sampler}: grid {key}={grid_value!r} differs from the sampler's "
                         f"{key}={value!r} ({'params' if in_params else 'default'}); state it "
                         f"once, in the sampler's params.")


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
