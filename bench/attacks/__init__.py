"""Prompt-robustness attacks on text-to-image models (Gao et al. 2023, arXiv 2306.13103)."""
