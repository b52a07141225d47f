"""Order of accuracy on the exact single-Gaussian oracle: fitted slope within 0.3 of theory.

One test per sampler configuration (bench.samplers.convergence.ORDER_CASES); errors are RMSE
against the closed-form PF-ODE solution from the same initial noise, float64.
"""

from __future__ import annotations

import pytest

from bench.samplers.convergence import ORDER_CASES, OrderCase, measure_order


@pytest.mark.parametrize("case", ORDER_CASES, ids=[c.label.replace(" ", "_") for c in ORDER_CASES])
def test_fitted_order_matches_theory(case: OrderCase) -> None:
    r = measure_order(case)
    assert all(a > b for a, b in zip(r.errors, r.errors[1:])), (case.label, r.errors)
    assert abs(r.slope - case.theory) <= 0.3, (case.label, r.slope, r.errors)


def test_dpmpp_3m_taylor_d2_integrates_quadratics_exactly_and_half_does_not() -> None:
    """The third-order multistep update against the exact integral for x0(lambda) = lambda^2."""
    import math

    import torch
    from scipy.integrate import quad

    from bench.samplers.dpm_solver_pp import _multistep_update

    lam0, h = 0.3, 0.2
    lams = [lam0 - 0.45, lam0 - 0.2, lam0]          # unequal previous steps
    hist = [(torch.tensor(math.exp(-l), dtype=torch.float64), torch.tensor(l * l, dtype=torch.float64))
            for l in lams]
    s, t = hist[-1][0], torch.tensor(math.exp(-lam0 - h), dtype=torch.float64)
    x = torch.tensor(0.7, dtype=torch.float64)
    exact = float(t) * (0.7 / float(s) + quad(lambda l: math.exp(l) * l * l, lam0, lam0 + h)[0])
    taylor = float(_multistep_update(x, s, t, hist, 3, "dpmsolver", "taylor"))
    half = float(_multistep_update(x, s, t, hist, 3, "dpmsolver", "half"))
    assert abs(taylor - exact) < 1e-12
    assert abs(half - exact) > 1e-4
