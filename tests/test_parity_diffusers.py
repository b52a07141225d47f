"""Agreement with diffusers schedulers on the same model, grid and initial noise (float64), and
the diffusers bridge (any scheduler class with its config as a sampler, NFE counted).

Conventions aligned (not tolerated): each scheduler runs on its own time grid
(``set_timesteps(n)``); our sampler gets exactly those levels through grid ``diffusers``.
DDIM/DDPM run with ``clip_sample: false`` (diffusers clips x0 to [-1, 1] by default; the oracle's
data are not in that box). DPMSolverMultistep lowers the order of the last steps only below 15
steps (``lower_order_final`` there), as ours do by default; UniPC bh1 with a final sigma of 0
returns NaN in diffusers (B(h) = h = -inf times a zero residual), and so does noise prediction (sigma_t = 0 times
e^h - 1 = inf), so those are compared with ``final_sigmas_type: sigma_min``. diffusers keeps
its schedule in float32, so agreement is ~1e-7, not 1e-15.
"""

from __future__ import annotations

import pytest
import torch

import bench.samplers  # noqa: F401  (registration)
from bench.denoiser import CountingDenoiser
from bench.models.gmm import GMMOracle
from bench.noise import NoiseSource
from bench.registry import SAMPLERS
from bench.samplers.schedules import make_grid

import diffusers  # noqa: E402  (a core dependency)

TOL = 1e-4
ORACLE = GMMOracle(shape=(1, 4, 4), cov="full", var_min=0.01, seed=2)  # closed-form truth
DEN = ORACLE.load()


def grid(scheduler: str, config: dict, steps: int) -> torch.Tensor:
    return make_grid({"name": "diffusers", "scheduler": scheduler, "config": config}, DEN.schedule,
                     steps)


def run(name: str, params: dict, sigmas: torch.Tensor, n: int = 8):
    noise = NoiseSource(4, range(n))
    x = noise.randn(ORACLE.sample_shape()) * sigmas[0]
    model = CountingDenoiser(DEN)
    return SAMPLERS.get(name)(model, x, sigmas, noise=noise, **params), model.nfe, x


CASES = [
    # (scheduler, config, our sampler, its params, steps)
    ("DDIMScheduler", {"clip_sample": False}, "ddim", {}, 10),
    ("DDIMScheduler", {"clip_sample": False, "timestep_spacing": "trailing"}, "ddim", {}, 25),
    ("DPMSolverMultistepScheduler", {}, "dpmpp_2m", {}, 10),
    ("DPMSolverMultistepScheduler", {}, "dpmpp_2m", {}, 25),
    ("DPMSolverMultistepScheduler", {"solver_order": 3}, "dpmpp_3m", {"d2": "half"}, 10),
    ("DPMSolverMultistepScheduler", {"solver_order": 3}, "dpmpp_3m", {"d2": "half"}, 25),
    ("UniPCMultistepScheduler", {}, "unipc", {}, 10),
    ("UniPCMultistepScheduler", {"solver_order": 3}, "unipc", {"order": 3}, 25),
    ("UniPCMultistepScheduler", {"solver_type": "bh1", "final_sigmas_type": "sigma_min"}, "unipc",
     {"variant": "bh1"}, 10),
    ("UniPCMultistepScheduler", {"solver_type": "bh1", "solver_order": 3,
                                 "final_sigmas_type": "sigma_min"}, "unipc",
     {"variant": "bh1", "order": 3}, 25),
    ("UniPCMultistepScheduler", {"predict_x0": False, "final_sigmas_type": "sigma_min"}, "unipc",
     {"prediction": "noise"}, 10),
    ("EulerDiscreteScheduler", {}, "euler", {}, 10),
    ("EulerDiscreteScheduler", {"use_karras_sigmas": True}, "euler", {}, 25),
    # stochastic: one generator per sample in both, so the noise is the same
    ("DDPMScheduler", {"clip_sample": False}, "ddpm", {}, 10),
    ("DDPMScheduler", {"clip_sample": False, "variance_type": "fixed_large"}, "ddpm",
     {"variance": "large"}, 10),
    ("EulerAncestralDiscreteScheduler", {}, "euler_ancestral", {}, 10),
]


@pytest.mark.parametrize("scheduler, config, ours, params, steps", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[4]}" for c in CASES])
def test_sampler_matches_diffusers_scheduler(scheduler, config, ours, params, steps) -> None:
    sigmas = grid(scheduler, config, steps)
    theirs, nfe, x = run("diffusers", {"scheduler": scheduler, "config": config}, sigmas)
    mine, my_nfe, _ = run(ours, params, sigmas)
    assert nfe == my_nfe == steps
    diff = float((theirs - mine).abs().max())
    assert diff <= TOL, diff
    truth = ORACLE.ode_solution(x, float(sigmas[0]), float(sigmas[-1]))
    assert float((mine - truth).abs().max()) > 10 * diff or "DDPM" in scheduler or "Ancestral" in scheduler


def test_bridge_equals_a_plain_diffusers_pipeline_loop() -> None:
    """The bridge against the textbook loop: latents, scale_model_input, eps, step."""
    sched = diffusers.DDIMScheduler(clip_sample=False, set_alpha_to_one=False)
    sched.set_timesteps(12)
    abar = sched.alphas_cumprod.to(torch.float64)
    noise = NoiseSource(4, range(8))
    z = noise.randn(ORACLE.sample_shape())
    t0 = int(sched.timesteps[0])
    lat = z * (1 - abar[t0]).sqrt()  # = alpha_T x with x = s_T z
    for t in sched.timesteps:
        a, sg = abar[int(t)].sqrt(), (1 - abar[int(t)]).sqrt()
        x0 = DEN(lat / a, (sg / a).expand(8))
        lat = sched.step((lat - a * x0) / sg, t, lat).prev_sample
    x_end = lat / abar[0].sqrt()  # final level: alphas_cumprod[0]
    cfg = {"clip_sample": False, "set_alpha_to_one": False}
    sigmas = grid("DDIMScheduler", cfg, 12)
    assert torch.allclose(sigmas[-1], ((1 - abar[0]) / abar[0]).sqrt())
    out, nfe, x = run("diffusers", {"scheduler": "DDIMScheduler", "config": cfg}, sigmas)
    assert torch.allclose(x, z * sigmas[0])
    assert nfe == 12 and float((out - x_end).abs().max()) < 1e-10


def test_bridge_accepts_any_one_call_scheduler_and_counts_nfe() -> None:
    for name in ["LMSDiscreteScheduler", "DEISMultistepScheduler", "PNDMScheduler",
                 "DPMSolverSinglestepScheduler"]:
        cfg = {"skip_prk_steps": True} if name == "PNDMScheduler" else {}
        try:
            sigmas = grid(name, cfg, 12)
        except ValueError as exc:  # schedulers that call the model more than once per step
            assert "model calls" in str(exc)
            continue
        out, nfe, x = run("diffusers", {"scheduler": name, "config": cfg}, sigmas)
        truth = ORACLE.ode_solution(x, float(sigmas[0]), float(sigmas[-1]))
        assert nfe == 12, name
        assert float((out - truth).flatten(1).pow(2).mean(1).sqrt().mean()) < 0.2, name


@pytest.mark.parametrize("name", ["HeunDiscreteScheduler", "KDPM2DiscreteScheduler"])
def test_bridge_runs_multi_call_schedulers_and_counts_every_call(name) -> None:
    """Heun-type schedulers list every model call in `timesteps` (Heun: 2n - 1 for n steps)."""
    errors = []
    for calls in (9, 33):
        sigmas = grid(name, {}, calls)
        out, nfe, x = run("diffusers", {"scheduler": name}, sigmas)
        assert nfe == calls and len(sigmas) == calls + 1
        truth = ORACLE.ode_solution(x, float(sigmas[0]), float(sigmas[-1]))
        errors.append(float((out - truth).abs().max()))
    assert errors[1] < errors[0] / 4, errors  # a second-order method converges


def test_bridged_heun_equals_our_heun_on_its_levels() -> None:
    """diffusers HeunDiscreteScheduler (5 steps, 9 calls) == our heun on the same 5 noise levels."""
    sigmas = grid("HeunDiscreteScheduler", {}, 9)
    theirs, nfe, x = run("diffusers", {"scheduler": "HeunDiscreteScheduler"}, sigmas)
    levels = torch.unique_consecutive(sigmas)  # Heun revisits each inner level once
    ours, our_nfe, x2 = run("heun", {}, levels)
    assert torch.equal(x, x2) and nfe == our_nfe == 9
    assert float((theirs - ours).abs().max()) < TOL


def test_bridge_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match="scheduler='DDIMSchedular'.*DDIMScheduler"):
        grid("DDIMSchedular", {}, 5)
    with pytest.raises(ValueError, match="HeunDiscreteScheduler cannot make exactly 6 model calls.*5, 7"):
        grid("HeunDiscreteScheduler", {}, 6)
    sigmas = make_grid({"name": "karras"}, DEN.schedule, 5)
    with pytest.raises(ValueError, match="use grid: {name: diffusers, scheduler: DDIMScheduler}"):
        run("diffusers", {"scheduler": "DDIMScheduler"}, sigmas)


def test_cosine_discrete_schedule_equals_diffusers_squaredcos() -> None:
    from bench.samplers.schedules import DiscreteVP

    ours = DiscreteVP(kind="cosine")
    sched = diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2")
    theirs = sched.alphas_cumprod.to(torch.float64)
    n = torch.arange(1000, dtype=torch.float64)
    assert torch.allclose((2 * ours.log_alpha((n + 1) / 1000)).exp(), theirs, rtol=1e-5)
