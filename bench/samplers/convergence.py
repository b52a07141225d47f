"""Order of accuracy of every deterministic sampler against the exact single-Gaussian oracle.

``measure_order`` runs a sampler at several NFEs from the same initial noise, measures the RMSE
against the closed-form PF-ODE solution (``GMMOracle.ode_solution``) and fits the slope of
log error vs log NFE. ``ORDER_CASES`` lists each sampler with the order its paper states; all
run on one grid, ``time_quadratic`` (t_i = (linspace(sqrt(T), sqrt(t_eps)))^2 under the discrete
1000-step schedule), over NFEs where discretisation error dominates.

Run ``python -m bench.samplers.convergence [OUT.md]`` to print (or write) the table;
tests/test_samplers_order.py asserts each fitted slope is within 0.3 of theory.

Notes on the cases:

* multistep samplers run with ``lower_order_final: false``: the default (as in dpm-solver,
  UniPC and diffusers) finishes with a first-order step, whose O(h^2) local error caps the
  asymptotic order at 2 (it is there for stability at very few steps);
* UniPC with predictor order p has order p + 1 (Zhao et al. 2023, Sec. 3.3: UniC raises the
  order by one); ``corrector: false`` is plain UniP-p (order p);
* DPM-Solver-fast uses NFE = 2 (mod 3) so that its order schedule ends with an order-2 step;
* ``dpmpp_3m`` with ``d2: half`` (the dpm-solver / k-diffusion / diffusers coefficient) is
  listed with the order 2 it attains; see ``bench.samplers.dpm_solver_pp``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from bench.generate import LoadedModel, SamplerSpec, generate

ORACLE = {"shape": (1, 8, 8), "cov": "full", "var_min": 0.01}
GRID = {"name": "time_quadratic"}
FIRST = (24, 48, 96, 192)
HIGHER = (48, 96, 192, 384)


@dataclass(frozen=True)
class OrderCase:
    label: str
    sampler: str
    theory: int
    params: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, Any] = field(default_factory=lambda: dict(GRID))
    nfes: tuple[int, ...] = HIGHER
    source: str = ""

    def run_grid(self) -> dict[str, Any]:
        """``grid`` with the sampler params it depends on (e.g. dpm_solver_fast's order)."""
        from bench.samplers.base import sampler_grid

        return sampler_grid(self.sampler, self.params, self.grid)


ORDER_CASES: list[OrderCase] = [
    OrderCase("ddim", "ddim", 1, nfes=FIRST, source="Song et al. 2021"),
    OrderCase("euler", "euler", 1, nfes=FIRST, source="Karras et al. 2022"),
    OrderCase("dpm_solver_1", "dpm_solver_1", 1, nfes=FIRST, source="Lu et al. 2022, Thm 3.2"),
    OrderCase("heun", "heun", 2, source="Karras et al. 2022"),
    OrderCase("dpm_solver_2", "dpm_solver_2", 2, source="Lu et al. 2022, Thm 3.2"),
    OrderCase("dpmpp_2s", "dpmpp_2s", 2, source="Lu et al. 2022b"),
    OrderCase("dpmpp_2m", "dpmpp_2m", 2, {"lower_order_final": False}, source="Lu et al. 2022b"),
    OrderCase("dpm_solver_3", "dpm_solver_3", 3, source="Lu et al. 2022, Thm 3.2"),
    OrderCase("dpm_solver_fast", "dpm_solver_fast", 3,
              grid={"name": "dpm_fast", "skip": "time_quadratic"},
              nfes=(47, 95, 191, 383), source="Lu et al. 2022 (order-3 schedule)"),
    OrderCase("dpmpp_3m", "dpmpp_3m", 3, {"lower_order_final": False}, source="Lu et al. 2022b"),
    OrderCase("dpmpp_3m d2=half", "dpmpp_3m", 2, {"lower_order_final": False, "d2": "half"},
              grid={"name": "logsnr"}, nfes=(40, 80, 160, 320),
              source="dpm-solver/k-diffusion/diffusers code (measured)"),
    OrderCase("unipc bh1 p=2", "unipc", 3, {"order": 2, "variant": "bh1", "lower_order_final": False},
              source="Zhao et al. 2023 (p+1)"),
    OrderCase("unipc bh2 p=2", "unipc", 3, {"order": 2, "variant": "bh2", "lower_order_final": False},
              source="Zhao et al. 2023 (p+1)"),
    OrderCase("unipc bh1 p=3", "unipc", 4, {"order": 3, "variant": "bh1", "lower_order_final": False},
              source="Zhao et al. 2023 (p+1)"),
    OrderCase("unipc bh2 p=3", "unipc", 4, {"order": 3, "variant": "bh2", "lower_order_final": False},
              source="Zhao et al. 2023 (p+1)"),
    OrderCase("unip p=2 (no corrector)", "unipc", 2,
              {"order": 2, "corrector": False, "lower_order_final": False},
              source="Zhao et al. 2023 (UniP-p: p)"),
    OrderCase("unip p=3 (no corrector)", "unipc", 3,
              {"order": 3, "corrector": False, "lower_order_final": False},
              source="Zhao et al. 2023 (UniP-p: p)"),
]


@dataclass
class OrderResult:
    case: OrderCase
    nfes: list[int]
    errors: list[float]
    slope: float


def measure_order(case: OrderCase, samples: int = 16, seed: int = 0) -> OrderResult:
    """RMSE against the exact ODE solution at each NFE, and the fitted log-log slope (negated)."""
    from bench.models.gmm import GMMOracle
    from bench.samplers import sampler_info, steps_for_nfe
    from bench.samplers.schedules import grid_final_zero

    oracle = GMMOracle(**ORACLE)
    model = LoadedModel(oracle, oracle.load(), torch.device("cpu"))
    info = sampler_info(case.sampler)
    grid = case.run_grid()
    nfes, errors = [], []
    for nfe in case.nfes:
        steps, used = steps_for_nfe(info.evals_per_step, nfe, grid_final_zero(grid))
        gen = generate(model, SamplerSpec(case.sampler, dict(case.params), grid, steps),
                       range(samples), seed)
        if gen.nfe != used:
            raise RuntimeError(f"{case.label}: counted NFE {gen.nfe} != {used}")
        truth = oracle.ode_solution(gen.x_start, float(gen.sigmas[0]), float(gen.sigmas[-1]))
        errors.append(float((gen.samples - truth).flatten(1).pow(2).mean(1).sqrt().mean()))
        nfes.append(used)
    slope = -float(np.polyfit(np.log(nfes), np.log(errors), 1)[0])
    return OrderResult(case, nfes, errors, slope)


def markdown(results: list[OrderResult]) -> str:
    lines = ["| sampler | params | grid | NFE | RMSE at min / max NFE | fitted order | theory | source |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        c = r.case
        params = ", ".join(f"{k}={v}" for k, v in c.params.items()) or "–"
        g = c.run_grid()
        grid = ", ".join(f"{k}={v}" for k, v in g.items() if k != "name")
        grid = g["name"] + (f" ({grid})" if grid else "")
        lines.append(f"| {c.sampler} | {params} | {grid} | {r.nfes[0]}–{r.nfes[-1]} | "
                     f"{r.errors[0]:.2e} / {r.errors[-1]:.2e} | {r.slope:.2f} | {c.theory} | "
                     f"{c.source} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    torch.set_num_threads(1)
    import bench.samplers  # noqa: F401  (registration)

    header = (f"## Order of accuracy\n\nSlope of log RMSE vs log NFE against the exact PF-ODE "
              f"solution of a single anisotropic Gaussian (gmm {ORACLE}, discrete 1000-step "
              f"schedule, 16 samples, float64). Reproduce: `python -m bench.samplers.convergence`."
              f"\n\n")
    text = header + markdown([measure_order(c) for c in ORDER_CASES]) + "\n"
    if argv:
        with open(argv[0], "w") as f:
            f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
