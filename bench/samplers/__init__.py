"""Samplers (one file per solver family) and the grids they step along."""

from bench.samplers import ddim, dpm_solver, edm, schedules  # noqa: F401  (registration)
from bench.samplers.base import nfe_for_steps, register_sampler, sampler_info, steps_for_nfe

__all__ = ["nfe_for_steps", "register_sampler", "sampler_info", "steps_for_nfe"]
