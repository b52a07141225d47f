"""Cost of BayesDiff sampling against the plain sampler at the same NFE, side by side.

    python -m bench.benchmarks.bayesdiff_cost [--samples 8] [--nfe 50] [--fit 200]

On fmnist-cond with a last-layer Laplace posterior (fitted on ``--fit`` training images, not
timed), for DDIM and singlestep DPM-Solver-2 at ``--nfe``: the plain sampler on the model's MAP
network, then BayesDiff with the variance updated every k-th step (k in ``--every``, default
1 2 5) and S Monte Carlo draws (S in ``--mc``, default 1 10), all on the same ``--samples``
noises and labels, in one process, best of ``--repeats``. Prints seconds per sample, network
passes per sample (the counted NFE stays the plain sampler's) and the ratios to the plain
sampler. BayesDiff's paper reports its Skip variant (k = 5, S = 10 in its code) under 2x.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--nfe", type=int, default=50)
    ap.add_argument("--fit", type=int, default=200)
    ap.add_argument("--every", type=int, nargs="+", default=[1, 2, 5])
    ap.add_argument("--mc", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()

    from bench.conditions import Condition
    from bench.generate import LoadedModel, SamplerSpec, generate
    from bench.registry import load_all
    from bench.samplers import sampler_info
    from bench.samplers.base import steps_for_nfe
    from bench.samplers.schedules import grid_final_zero

    load_all()
    model = LoadedModel.load({"name": "fmnist-cond", "params": {},
                              "laplace": {"samples": args.fit}}, torch.device("cpu"))
    n = args.samples
    idx = np.arange(n)
    conds = [Condition(id=f"class={i % 10}", label=i % 10) for i in range(n)]
    print(f"fmnist-cond-laplace: {n} samples, NFE {args.nfe}, {torch.get_num_threads()} "
          f"thread(s); seconds per sample (best of {args.repeats})")
    print(f"{'sampler':>24} {'k':>3} {'S':>3} | {'s/sample':>9} {'ratio':>6} | {'passes':>6} "
          f"{'ratio':>6}")
    for plain in ("ddim", "dpm_solver_2"):
        info = sampler_info(plain)
        steps, _ = steps_for_nfe(info.evals_per_step, args.nfe, grid_final_zero(info.grid))

        def timed(name: str, params: dict) -> tuple[float, int, int]:
            spec = SamplerSpec(name, params, dict(info.grid), steps)
            best, gen = np.inf, None
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                gen = generate(model, spec, idx, 0, conds)
                best = min(best, (time.perf_counter() - t0) / n)
            return best, gen.nfe, gen.network_calls

        base_t, base_nfe, base_calls = timed(plain, {})
        print(f"{plain:>24} {'-':>3} {'-':>3} | {base_t:>9.4f} {1.0:>5.2f}x | {base_calls:>6} "
              f"{1.0:>5.2f}x")
        for every in args.every:
            for mc in args.mc:
                t, nfe, calls = timed(f"bayesdiff_{plain}", {"every": every, "mc": mc})
                assert nfe == base_nfe, (nfe, base_nfe)
                print(f"{'bayesdiff_' + plain:>24} {every:>3} {mc:>3} | {t:>9.4f} "
                      f"{t / base_t:>5.2f}x | {calls:>6} {calls / base_calls:>5.2f}x")
    print("ratio: over the plain sampler at the same NFE on the same noises; passes: network "
          "forward passes per sample (the counted NFE is the plain sampler's in every row).")


if __name__ == "__main__":
    main()
