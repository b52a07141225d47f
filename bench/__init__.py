"""bench: a benchmark and evaluation harness for diffusion models."""

__version__ = "0.1.0"
