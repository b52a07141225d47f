"""Diffusers bridge: any diffusers scheduler class, named in YAML with its config, as a sampler
(diffusers: von Platen et al. 2022, each scheduler implementing its own paper).

```yaml
samplers:
  - name: diffusers
    label: diffusers-unipc
    params: {scheduler: UniPCMultistepScheduler, config: {solver_order: 2}}
```

The scheduler is built with ``cls.from_config({...model schedule..., **config})``: the training
schedule (``num_train_timesteps``, ``beta_schedule``/``beta_start``/``beta_end`` or
``trained_betas``) is filled in from the model's discrete schedule unless the config sets it.
It runs on its own time grid (``set_timesteps(steps)``), as in a diffusers pipeline; grid
``diffusers`` (the sampler's default; a suite fills in its scheduler and config from the
sampler's params, so they are stated once) returns exactly those noise levels in the data-scaled
frame, so the harness's start/end levels, oracle truth and NFE accounting agree with what the
scheduler does. The sampler checks that the grid it is given is that grid.

Each model call follows the diffusers pipeline loop: ``inp = scale_model_input(latents, t)`` is
the VP-frame sample ``alpha_t x`` at level ``s`` (``s = sigmas[step_index]`` for schedulers that
keep data-scaled sigmas, else ``sqrt((1 - abar_t) / abar_t)``); the harness denoiser gives
``x0 = D(inp / alpha, s)`` and the scheduler receives it converted to its ``prediction_type``
(epsilon, sample or v_prediction). NFE is counted by the harness as for every sampler (one
entry of ``timesteps`` = one model call; schedulers that call the model more than once per
inference step, such as HeunDiscreteScheduler with 2n - 1 calls, run at the NFE they can reach). Stochastic schedulers (DDPM,
EulerAncestral, ...) get one generator per sample (``generator=[...]``), so their noise, too, is
independent of the batch size. The initial latents are the harness's ``x`` at ``sigmas[0]``
expressed in the scheduler's frame (``alpha_T x`` for VP schedulers, ``x`` for sigma-scaled
ones) rather than ``randn * init_noise_sigma``, which would drop the factor ``sigma_T ~ 1``.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from torch import Tensor

from bench.denoiser import Denoiser
from bench.errors import close_matches
from bench.noise import NoiseSource
from bench.registry import GRIDS
from bench.samplers.base import register_sampler
from bench.samplers.schedules import DiscreteVP, VPSchedule


def _scheduler_class(name: str) -> type:
    import diffusers

    cls = getattr(diffusers, str(name), None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, diffusers.SchedulerMixin):
        names = [n for n in dir(diffusers) if n.endswith("Scheduler") and not n.startswith("Flax")]
        raise ValueError(f"diffusers: scheduler={name!r} is not a diffusers scheduler class."
                         f"{close_matches(str(name), names)} Use one of: {', '.join(sorted(names))}.")
    return cls


def schedule_config(schedule: VPSchedule) -> dict[str, Any]:
    """The diffusers training-schedule config equal to a harness discrete schedule."""
    if not isinstance(schedule, DiscreteVP):
        raise ValueError("diffusers: schedulers are discrete-time; the model's schedule is "
                         f"{schedule.describe()}; use a model with schedule: discrete.")
    cfg: dict[str, Any] = {"num_train_timesteps": schedule.N}
    if schedule.kind == "linear":
        cfg.update(beta_schedule="linear", beta_start=schedule.beta_start, beta_end=schedule.beta_end)
    elif schedule.kind == "cosine":
        cfg.update(beta_schedule="squaredcos_cap_v2")
    else:
        cfg.update(trained_betas=schedule.betas.tolist())
    return cfg


def build_scheduler(name: str, config: dict[str, Any] | None, schedule: VPSchedule) -> Any:
    """A fresh scheduler instance (schedulers are stateful: one per sampling run)."""
    if config is not None and not isinstance(config, dict):
        raise ValueError(f"diffusers: config={config!r} must be a mapping of scheduler options, "
                         f"e.g. {{solver_order: 2}}.")
    cfg = {**schedule_config(schedule), **(config or {})}
    return _scheduler_class(name).from_config(cfg)


def _is_sigma_scaled(sched: Any, t: Any) -> bool:
    """True for k-diffusion-style schedulers whose latents are data-scaled (x0 + sigma eps)."""
    probe = torch.ones(1, dtype=torch.float64)
    return not torch.equal(sched.scale_model_input(probe, t).to(torch.float64), probe)


def _s_of_abar(abar: Tensor) -> Tensor:
    abar = abar.to(torch.float64)
    return torch.sqrt((1 - abar) / abar)


def _level(sched: Any, t: Any, sigma_scaled: bool) -> Tensor:
    """Data-scaled noise level s of the model call at timestep t."""
    idx = getattr(sched, "step_index", None)
    if sigma_scaled and idx is not None and hasattr(sched, "sigmas"):
        return sched.sigmas[idx].to(torch.float64)
    tt = float(t)
    abar = sched.alphas_cumprod.to(torch.float64)
    if tt == int(tt):
        return _s_of_abar(abar[int(tt)])
    lo = int(tt)
    w = tt - lo
    return _s_of_abar(torch.exp((1 - w) * abar[lo].log() + w * abar[lo + 1].log()))


def scheduler_levels(sched: Any) -> Tensor:
    """The data-scaled levels of every model call of a set-up scheduler, then the final level."""
    ts = list(sched.timesteps)
    sigma_scaled = _is_sigma_scaled(sched, ts[0])
    if hasattr(sched, "sigmas") and len(sched.sigmas) == len(ts) + 1:
        sig = sched.sigmas.to(torch.float64)
        if sigma_scaled:
            return sig.clone()
        return torch.cat([torch.stack([_level(sched, t, False) for t in ts]), sig[-1:]])
    calls = [_level(sched, t, sigma_scaled) for t in ts]
    final = getattr(sched, "final_alpha_cumprod", None)
    end = _s_of_abar(torch.as_tensor(final)) if final is not None else torch.zeros((), dtype=torch.float64)
    return torch.stack(calls + [end.reshape(())])


def _prepared(scheduler: str, config: dict | None, schedule: VPSchedule, calls: int,
              device: Any = "cpu") -> Any:
    """A scheduler set up so that it makes exactly ``calls`` model calls.

    One-call-per-step schedulers use ``set_timesteps(calls)``; schedulers that call the model
    more than once per inference step (HeunDiscrete: 2n - 1 calls for n steps, KDPM2, ...) list
    every call in ``timesteps``, so the number of inference steps giving ``calls`` entries is
    searched for. Each entry of ``timesteps`` is one model call, counted as one NFE.
    """
    sched = build_scheduler(scheduler, config, schedule)
    seen = []
    for n in range(1, calls + 1):
        sched.set_timesteps(n, device=device)
        seen.append(len(sched.timesteps))
        if seen[-1] == calls:
            return sched
        if seen[-1] > calls:
            break
    reachable = sorted({v for v in seen if abs(v - calls) <= 4})
    raise ValueError(f"diffusers: {scheduler} cannot make exactly {calls} model calls (NFE); "
                     f"its steps give {', '.join(map(str, reachable)) or seen} calls nearby. "
                     f"Use one of those NFE values.")


@GRIDS.register("diffusers", "The noise levels a diffusers scheduler visits with set_timesteps(steps) "
                "(params: scheduler, config), then its final level")
def diffusers_grid(schedule: VPSchedule, steps: int, *, scheduler: str | None = None,
                   config: dict | None = None) -> Tensor:
    if scheduler is None:
        raise ValueError("grid diffusers: needs scheduler: <class name> (and the sampler's config); "
                         "in a suite, give the sampler params: {scheduler: DDIMScheduler} and the "
                         "grid takes it from there.")
    return scheduler_levels(_prepared(scheduler, config, schedule, steps))


@register_sampler("diffusers", evals_per_step=1, grid={"name": "diffusers"}, order=None,
                  grid_params=("scheduler", "config"),
                  paper="the diffusers scheduler named in params (von Platen et al., diffusers)",
                  description="Bridge: any diffusers scheduler class with its config "
                              "(params: scheduler, config); NFE = model calls")
def sample_diffusers(model: Denoiser, x: Tensor, sigmas: Tensor, *, cond: Any = None,
                     noise: NoiseSource | None = None,
                     callback: Callable | None = None, scheduler: str | None = None,
                     config: dict | None = None) -> Tensor:
    if scheduler is None:
        raise ValueError("diffusers: needs scheduler=<diffusers scheduler class name>, e.g. "
                         "params: {scheduler: DPMSolverMultistepScheduler, config: {solver_order: 2}}.")
    steps = len(sigmas) - 1  # model calls
    sched = _prepared(scheduler, config, model.schedule, steps, x.device)
    levels = scheduler_levels(sched)
    if not torch.allclose(levels.to(sigmas), sigmas, rtol=1e-6, atol=1e-12):
        raise ValueError(f"diffusers: the grid does not match {scheduler}'s own noise levels "
                         f"(grid {float(sigmas[0]):.4g}..{float(sigmas[-1]):.4g}, scheduler "
                         f"{float(levels[0]):.4g}..{float(levels[-1]):.4g}); use grid: {{name: "
                         f"diffusers, scheduler: {scheduler}}} with the sampler's config.")
    sched = _prepared(scheduler, config, model.schedule, steps, x.device)  # fresh state
    ts = list(sched.timesteps)
    sigma_scaled = _is_sigma_scaled(sched, ts[0])  # (idempotent: sets the first step index)
    s0 = sigmas[0]
    lat = x if sigma_scaled else x * torch.rsqrt(1 + s0**2)
    pred = sched.config.get("prediction_type", "epsilon")
    gens = None if noise is None else list(noise.generators)
    ones = x.new_ones(x.shape[0])
    for i, t in enumerate(ts):
        inp = sched.scale_model_input(lat, t)
        s = _level(sched, t, sigma_scaled).to(x)
        alpha = torch.rsqrt(1 + s**2)
        x_ve = inp / alpha
        x0 = model(x_ve, s * ones, cond)
        if pred == "epsilon":
            out = (x_ve - x0) / s
        elif pred == "sample":
            out = x0
        elif pred == "v_prediction":
            out = alpha * (x_ve - x0) / s - s * alpha * x0
        else:
            raise ValueError(f"diffusers: prediction_type={pred!r} is not supported by the bridge; "
                             f"use epsilon, sample or v_prediction.")
        kwargs = {"generator": gens} if gens is not None and _takes_generator(sched) else {}
        lat = sched.step(out, t, lat, **kwargs).prev_sample
        if callback is not None:
            callback({"i": i, "x": lat, "sigma": s, "denoised": x0})
    end = sigmas[-1]
    return lat if sigma_scaled else lat * torch.sqrt(1 + end**2)


def _takes_generator(sched: Any) -> bool:
    return "generator" in inspect.signature(sched.step).parameters
