"""Evals: what a suite computes."""

from bench.evals import (fidelity, likelihood, nfe_curve, nfe_to_target,  # noqa: F401
                         robustness)  # (registration)
from bench.evals.base import Eval

__all__ = ["Eval"]
