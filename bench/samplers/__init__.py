"""Samplers (one file per solver family) and the grids they step along."""

from bench.samplers import (  # noqa: F401  (registration)
    analytic_dpm, ancestral, bayesdiff, consistency, ddim, ddpm, diffusers_bridge, dpm_solver, dpm_solver_pp, edm,
    schedules, unipc,
)
from bench.samplers.base import nfe_for_steps, register_sampler, sampler_info, steps_for_nfe

__all__ = ["nfe_for_steps", "register_sampler", "sampler_info", "steps_for_nfe"]
