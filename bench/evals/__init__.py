"""Evals: what a suite computes."""

from bench.evals import fidelity, nfe_curve, nfe_to_target, robustness  # noqa: F401  (registration)
from bench.evals.base import Eval

__all__ = ["Eval"]
