"""Evals: what a suite computes."""

from bench.evals import nfe_curve  # noqa: F401  (registration)
from bench.evals import fidelity  # noqa: F401  (registration)
from bench.evals.base import Eval

__all__ = ["Eval"]
