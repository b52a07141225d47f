"""Per-step sampler overhead: time spent outside the model, for every registered sampler.

For a batch of 64 images of 3x32x32 (float32, CPU) each sampler runs on a stand-in model that
costs almost nothing (a scaled copy of its input: the sampler's own arithmetic, noise draws and
bookkeeping are what remains); the wall time minus the time inside the model, per step, is the
sampler's overhead. It is printed as a fraction of the model time of one step of a ~1M-parameter
UNet (DDPM-style: residual blocks, time embedding, one attention-free down/up path) measured on
this machine: ``overhead per step / (evals per step x UNet forward time)``. Target: < 2 %.

    python -m bench.benchmarks.sampler_overhead [--steps 20] [--repeats 3] [--threads N]

Analytic-DPM's Gamma estimate is a per-model precomputation (cached) and is done before timing.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import torch
from torch import Tensor, nn

SHAPE = (3, 32, 32)
BATCH = 64


# --------------------------------------------------------------------------- ~1M UNet
class _Res(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int) -> None:
        super().__init__()
        self.n1, self.c1 = nn.GroupNorm(8, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.t = nn.Linear(temb, cout)
        self.n2, self.c2 = nn.GroupNorm(8, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        h = self.c1(torch.nn.functional.silu(self.n1(x))) + self.t(t)[:, :, None, None]
        h = self.c2(torch.nn.functional.silu(self.n2(h)))
        return h + self.skip(x)


class TinyUNet(nn.Module):
    """A small DDPM-style UNet (about 1.06M parameters with ch=48)."""

    def __init__(self, ch: int = 48) -> None:
        super().__init__()
        temb = 4 * ch
        self.temb = nn.Sequential(nn.Linear(ch, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.ch = ch
        self.inp = nn.Conv2d(3, ch, 3, padding=1)
        self.d1, self.d2 = _Res(ch, ch, temb), _Res(ch, 2 * ch, temb)
        self.down = nn.Conv2d(2 * ch, 2 * ch, 3, stride=2, padding=1)
        self.mid = _Res(2 * ch, 2 * ch, temb)
        self.up = nn.ConvTranspose2d(2 * ch, 2 * ch, 4, stride=2, padding=1)
        self.u1, self.u2 = _Res(4 * ch, 2 * ch, temb), _Res(3 * ch, ch, temb)
        self.out = nn.Sequential(nn.GroupNorm(8, ch), nn.SiLU(), nn.Conv2d(ch, 3, 3, padding=1))

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        half = self.ch // 2
        freqs = torch.exp(-math.log(1e4) * torch.arange(half, dtype=x.dtype) / half)
        ang = torch.log(sigma.to(x.dtype))[:, None] * freqs[None]
        t = self.temb(torch.cat([ang.sin(), ang.cos()], 1))
        h0 = self.inp(x)
        h1 = self.d1(h0, t)
        h2 = self.d2(h1, t)
        m = self.mid(self.down(h2), t)
        u = self.u1(torch.cat([self.up(m), h2], 1), t)
        u = self.u2(torch.cat([u, h1], 1), t)
        return self.out(u)


# ----------------------------------------------------------------------- stand-in model
class NullDenoiser:
    """A near-free model with everything samplers may ask of a model."""

    parameterisation = "x0"
    consistency_sigma_min = 0.0
    cache_key = "null-denoiser"

    def __init__(self) -> None:
        from bench.samplers.schedules import DiscreteVP

        self.schedule = DiscreteVP()

    def __call__(self, x: Tensor, sigma: Tensor, cond: Any = None) -> Tensor:
        return x * (1.0 / (1.0 + sigma.to(x.dtype)[:, None, None, None] ** 2))

    def sample_data(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn((n, *SHAPE), generator=generator, dtype=torch.float64) * 0.5


class ConsistencyNull(NullDenoiser):
    parameterisation = "consistency"


def unet_forward_s(repeats: int) -> tuple[float, int]:
    net = TinyUNet().eval()
    params = sum(p.numel() for p in net.parameters())
    x = torch.randn(BATCH, *SHAPE)
    s = torch.full((BATCH,), 2.0)
    with torch.inference_mode():
        net(x, s)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            net(x, s)
            times.append(time.perf_counter() - t0)
    return min(times), params


class NullAdapter:
    """The model side of ``generate`` for a denoiser without a model folder."""

    dtype = torch.float32

    def sample_shape(self) -> tuple[int, ...]:
        return SHAPE


def sampler_overhead(name: str, params: dict, grid: dict, steps: int, repeats: int) -> tuple[float, int]:
    """(seconds outside the model per step, evals per step) for one sampler configuration,
    sampled through ``bench.generate`` (its timing covers the sampler call alone)."""
    from bench.generate import LoadedModel, SamplerSpec, generate
    from bench.samplers import sampler_info

    base = ConsistencyNull() if name == "consistency" else NullDenoiser()
    model = LoadedModel(NullAdapter(), base, torch.device("cpu"))
    spec = SamplerSpec(name, dict(params), dict(grid), steps)
    best = math.inf
    nfe = 0
    for r in range(repeats + 1):  # first run warms up (and fills caches such as Gamma)
        with torch.inference_mode():
            gen = generate(model, spec, range(BATCH), r)
        if r:
            best = min(best, (gen.timings["sample_s"] - gen.timings["model_s"]) / steps)
        nfe = gen.nfe
    return best, max(1, round(nfe / steps)) if sampler_info(name).evals_per_step > 1 else 1


CONFIGS: list[tuple[str, str, dict, dict | None]] = [
    # (label, sampler, params, grid or None for the sampler's default)
    ("ddim", "ddim", {}, None), ("ddim eta=1", "ddim", {"eta": 1.0}, None),
    ("ddpm", "ddpm", {}, None), ("analytic_dpm", "analytic_dpm", {}, None),
    ("dpm_solver_1", "dpm_solver_1", {}, None), ("dpm_solver_2", "dpm_solver_2", {}, None),
    ("dpm_solver_3", "dpm_solver_3", {}, None), ("dpm_solver_fast", "dpm_solver_fast", {}, None),
    ("dpmpp_2s", "dpmpp_2s", {}, None), ("dpmpp_2m", "dpmpp_2m", {}, None),
    ("dpmpp_3m", "dpmpp_3m", {}, None),
    ("unipc bh1 p=2", "unipc", {"variant": "bh1"}, None), ("unipc bh2 p=3", "unipc", {"order": 3}, None),
    ("euler", "euler", {}, None), ("heun", "heun", {}, None),
    ("euler churn", "euler", {"s_churn": 10.0}, None), ("heun churn", "heun", {"s_churn": 10.0}, None),
    ("euler_ancestral", "euler_ancestral", {}, None), ("consistency", "consistency", {}, None),
    ("diffusers DPMSolverMultistep", "diffusers", {"scheduler": "DPMSolverMultistepScheduler"}, None),
    ("diffusers UniPCMultistep", "diffusers", {"scheduler": "UniPCMultistepScheduler"}, None),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import bench.samplers  # noqa: F401  (registration)
    from bench.samplers import sampler_info
    from bench.samplers.base import sampler_grid

    unet_s, n_params = unet_forward_s(args.repeats + 2)
    print(f"UNet: {n_params / 1e6:.2f}M parameters, forward on {BATCH}x{'x'.join(map(str, SHAPE))} "
          f"float32: {1e3 * unet_s:.1f} ms ({torch.get_num_threads()} threads)")
    print(f"{'sampler':30s} {'evals/step':>10s} {'overhead/step':>14s} {'fraction of UNet step':>22s}")
    worst = 0.0
    for label, name, params, grid in CONFIGS:
        g = sampler_grid(name, params, grid)
        over, _ = sampler_overhead(name, params, g, args.steps, args.repeats)
        k = sampler_info(name).evals_per_step
        frac = over / (k * unet_s)
        worst = max(worst, frac)
        flag = "" if frac < 0.02 else "  > 2% target"
        print(f"{label:30s} {k:>10d} {1e3 * over:>11.3f} ms {100 * frac:>21.2f}%{flag}")
    print(f"worst: {100 * worst:.2f}% (target < 2%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
