"""Requested NFE -> steps, and the explicit rounding of NFEs a sampler cannot reach."""

import pytest

from bench.errors import BenchError
from bench.samplers import nfe_for_steps, steps_for_nfe


@pytest.mark.parametrize("k, fz", [(1, False), (1, True), (2, False), (2, True), (3, True), (3, False)])
def test_steps_for_nfe_inverts_nfe_for_steps(k, fz):
    for steps in range(1, 30):
        nfe = nfe_for_steps(k, steps, fz)
        assert steps_for_nfe(k, nfe, fz) == (steps, nfe)


def test_heun_on_a_grid_ending_at_zero_uses_2n_minus_1():
    assert nfe_for_steps(2, 18, True) == 35  # EDM: 18 steps of Heun = 35 NFE
    with pytest.raises(BenchError, match=r"NFE 10 cannot be reached exactly.*9, 11.*nfe_rounding"):
        steps_for_nfe(2, 10, True)
    assert steps_for_nfe(2, 10, True, "down") == (5, 9)
    assert steps_for_nfe(2, 10, True, "up") == (6, 11)


def test_two_evals_per_step_without_final_zero_needs_even_nfe():
    with pytest.raises(BenchError, match="reachable nearby: 8, 10"):
        steps_for_nfe(2, 9, False)
    assert steps_for_nfe(2, 9, False, "down") == (4, 8)
    assert steps_for_nfe(2, 1, False, "up") == (1, 2)
