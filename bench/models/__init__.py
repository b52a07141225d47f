"""Model adapters; heavy ones are registered lazily."""

from bench.models import diffusers_adapter, gmm, keyword_gmm, zoo  # noqa: F401  (registration)
from bench.models.base import ModelAdapter

__all__ = ["ModelAdapter"]
