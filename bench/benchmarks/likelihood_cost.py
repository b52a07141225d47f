"""Cost of the likelihood routes against one sampling pass at the same NFE, side by side.

    python -m bench.benchmarks.likelihood_cost [--model fmnist-v] [--images 16] [--steps 10 25]

For each RK4 step count S, on the same ``--images`` Fashion-MNIST test images (labels as
conditions for a class-conditional model), in one process and alternating ``--repeats`` times:

* the PF-ODE likelihood (``bench.likelihood.ode_nll``: RK4, 4 S forward passes, one Hutchinson
  probe, so 4 S backward passes too);
* one DDIM sampling pass at NFE 4 S (``bench.generate.generate``, no decoding);
* the DDPM bound at K = 4 S with the beta, beta~ and analytic variances from one set of passes
  (``vlb_variances``; the analytic variance's Gamma given, so not timed).

Prints seconds per image (best of the repeats), network passes, and the ratios to sampling.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="fmnist-v")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 25])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    from bench.conditions import Condition
    from bench.data import open_dataset
    from bench.generate import LoadedModel, SamplerSpec, generate
    from bench.likelihood import dequantize, ode_nll, vlb_variances
    from bench.noise import NoiseSource
    from bench.registry import load_all
    from bench.samplers import sampler_info

    load_all()
    model = LoadedModel.load({"name": args.model, "params": {}}, torch.device("cpu"))
    ds = open_dataset("fmnist-test")
    n = args.images
    images = torch.from_numpy(np.array(ds.images(0, n), copy=True))
    conds = None
    if getattr(model.adapter, "conditioning", None) == "classes":
        conds = [Condition(id=f"class={int(y)}", label=int(y)) for y in ds.labels[:n]]
    cond = model.encode(conds)
    idx = np.arange(n)
    sched = model.denoiser.schedule
    print(f"{args.model}: {n} test images, {torch.get_num_threads()} thread(s); seconds per image "
          f"(best of {args.repeats})")
    print(f"{'RK4 steps':>9} {'NFE':>5} | {'sampling':>9} | {'ODE NLL':>9} {'ratio':>6} "
          f"{'passes':>12} | {'bound x3':>9} {'ratio':>6}")
    for steps in args.steps:
        nfe = 4 * steps
        best = {"sample": np.inf, "ode": np.inf, "bound": np.inf}
        passes = {}
        for _ in range(args.repeats):
            spec = SamplerSpec("ddim", {}, dict(sampler_info("ddim").grid), nfe)
            t0 = time.perf_counter()
            gen = generate(model, spec, idx, 0, conds)
            best["sample"] = min(best["sample"], (time.perf_counter() - t0) / n)
            passes["sample"] = gen.nfe
            noise = NoiseSource(0, idx)
            x = dequantize(images, noise)
            t0 = time.perf_counter()
            r = ode_nll(model.denoiser, sched, x, method="hutchinson", probes=1, steps=steps,
                        noise=noise, cond=cond)
            best["ode"] = min(best["ode"], (time.perf_counter() - t0) / n)
            passes["ode"] = int(r["nfe"])
            x0 = model.adapter.encode_images(images)
            t0 = time.perf_counter()
            with torch.no_grad():
                vlb_variances(model.denoiser, sched, x0, steps=nfe, variances=("beta", "beta_tilde",
                                                                       "analytic"),
                              noise=NoiseSource(0, idx), cond=cond, decoder="discretized",
                              gamma=lambda lv: torch.full_like(lv, 0.5))
            best["bound"] = min(best["bound"], (time.perf_counter() - t0) / n)
        print(f"{steps:>9} {nfe:>5} | {best['sample']:>9.4f} | {best['ode']:>9.4f} "
              f"{best['ode'] / best['sample']:>5.2f}x {passes['ode']:>4} fwd+bwd | "
              f"{best['bound']:>9.4f} {best['bound'] / best['sample']:>5.2f}x")
    print("ratio: time per image over one DDIM sampling pass at the same NFE; the ODE's passes "
          "are forward passes, each followed by one vector-Jacobian product (1 probe).")


if __name__ == "__main__":
    main()
