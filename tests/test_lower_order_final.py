"""The lower-order-final rule of the multistep solvers, as their reference implementations: DPM-
Solver++ multistep lowers the order of its last steps only on grids of fewer than 15 steps
(diffusers' DPMSolverMultistepScheduler; dpm-solver uses 10: ``lower_order_below: 10``), UniPC at
any step count (UniPC's code and diffusers' UniPCMultistepScheduler)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.generate import LoadedModel, SamplerSpec, generate

ORACLE = {"name": "gmm", "params": {"shape": [4], "cov": "full", "var_min": 0.05, "components": 2}}


def sample(name: str, steps: int, **params) -> torch.Tensor:
    lm = LoadedModel.load(ORACLE, torch.device("cpu"))
    return generate(lm, SamplerSpec(name, params, {"name": "logsnr"}, steps), np.arange(6), 0).samples


@pytest.mark.parametrize("name", ["dpmpp_2m", "dpmpp_3m"])
def test_dpm_solver_pp_lowers_its_final_order_only_below_15_steps(name):
    for steps, lowers in ((14, True), (15, False), (25, False)):
        default = sample(name, steps)
        on, off = sample(name, steps, lower_order_below=None), sample(name, steps, lower_order_final=False)
        assert not torch.equal(on, off)  # the rule matters at this step count
        assert torch.equal(default, on if lowers else off), (steps, lowers)
    assert torch.equal(sample(name, 12, lower_order_below=10), sample(name, 12, lower_order_final=False))


def test_unipc_lowers_its_final_order_at_any_step_count():
    for steps in (10, 25):
        assert torch.equal(sample("unipc", steps), sample("unipc", steps, lower_order_below=None))
        assert not torch.equal(sample("unipc", steps), sample("unipc", steps, lower_order_final=False))
    assert torch.equal(sample("unipc", 25, lower_order_below=15),
                       sample("unipc", 25, lower_order_final=False))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "15"])
def test_bad_threshold_is_refused(bad):
    with pytest.raises(ValueError, match="lower_order_below"):
        sample("dpmpp_2m", 10, lower_order_below=bad)
