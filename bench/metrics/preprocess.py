"""Image preprocessing for the FID Inception network, as a named and recorded choice.

Every mode takes uint8 NCHW images (1 or 3 channels; grayscale is repeated to 3 channels, as
``PIL.Image.convert('RGB')`` does in the reference libraries) and returns the float32
299x299 tensor the network's first convolution sees. The modes reproduce, operation for
operation, what the reference implementations do:

``tf1_bilinear``   torch-fidelity (and torchmetrics with antialias=False, and TF FID): TensorFlow-1.x
                   bilinear resize on float32 pixel values, then ``(x - 128) / 128``.
``clean``          clean-fid ``mode="clean"``: PIL bicubic resize of each channel as a float32
                   image (no quantisation), clipped to [0, 255], then ``(x - 128) / 128``.
``legacy_pytorch`` clean-fid ``mode="legacy_pytorch"`` (pytorch-fid's network input):
                   ``F.interpolate(bilinear, align_corners=False)``, clipped to [0, 255], then
                   ``2 * (x / 255) - 1``.
``torchmetrics``   torchmetrics >= 1.x default (``antialias=True``): ``F.interpolate(bilinear,
                   align_corners=False, antialias=True)``, then ``(x - 128) / 128``.
                   (``antialias=False`` in torchmetrics is ``tf1_bilinear``.)
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bench.errors import BenchError, close_matches

SIZE = 299


def to_rgb(images: Tensor) -> Tensor:
    """uint8 NCHW with 1 or 3 channels -> uint8 N3HW (grayscale repeated)."""
    if images.dtype != torch.uint8:
        raise BenchError(f"feature extraction expects uint8 images in [0, 255], got {images.dtype}; "
                         f"decode samples with the model adapter's decode() first.")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise BenchError(f"feature extraction expects NCHW images with 1 or 3 channels, got shape "
                         f"{tuple(images.shape)}.")
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def _tf1_bilinear(images: Tensor) -> Tensor:
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    x = to_rgb(images).to(torch.float32)
    x = interpolate_bilinear_2d_like_tensorflow1x(x, size=(SIZE, SIZE), align_corners=False)
    return (x - 128) / 128


def _pil_bicubic_channel(ch: np.ndarray) -> np.ndarray:
    from PIL import Image

    img = Image.fromarray(ch.astype(np.float32))  # mode 'F': resampled without quantisation
    img = img.resize((SIZE, SIZE), resample=Image.Resampling.BICUBIC)
    return np.asarray(img).clip(0, 255)


def _clean(images: Tensor) -> Tensor:
    x = images.detach().cpu().numpy()
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1] not in (1, 3):
        to_rgb(images)  # raises the explanatory error
    out = np.empty((len(x), 3, SIZE, SIZE), dtype=np.float32)
    for i, img in enumerate(x):
        if img.shape[0] == 1:  # the three identical channels resize identically: do it once
            out[i] = _pil_bicubic_channel(img[0])[None]
        else:
            for c in range(3):
                out[i, c] = _pil_bicubic_channel(img[c])
    t = torch.from_numpy(out).to(images.device)
    return (t - 128) / 128


def _legacy_pytorch(images: Tensor) -> Tensor:
    x = to_rgb(images).to(torch.float32)
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False).clamp(0, 255)
    return 2 * (x / 255) - 1


def _torchmetrics(images: Tensor) -> Tensor:
    x = to_rgb(images).to(torch.float32)
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=True)
    return (x - 128) / 128


MODES: dict[str, tuple[Callable[[Tensor], Tensor], str]] = {
    "tf1_bilinear": (_tf1_bilinear, "torch-fidelity / TF FID: TF1.x bilinear "
                     "resize, (x-128)/128"),
    "clean": (_clean, "clean-fid 'clean': PIL bicubic on float32 per channel, clip, (x-128)/128"),
    "legacy_pytorch": (_legacy_pytorch, "clean-fid 'legacy_pytorch' / pytorch-fid: torch bilinear "
                       "(align_corners=False), clip, 2x/255-1"),
    "torchmetrics": (_torchmetrics, "torchmetrics default (antialias=True): torch bilinear with "
                     "antialias, (x-128)/128"),
}
ALIASES = {"tf1": "tf1_bilinear", "torch_fidelity": "tf1_bilinear", "torch-fidelity": "tf1_bilinear",
           "legacy-pytorch": "legacy_pytorch", "pytorch_fid": "legacy_pytorch"}


def check_mode(mode: str) -> str:
    mode = ALIASES.get(mode, mode)
    if mode not in MODES:
        raise BenchError(f"unknown resize/preprocessing mode {mode!r}.{close_matches(mode, MODES)} "
                         f"Known: {', '.join(MODES)}.")
    return mode


def preprocess(images: Tensor, mode: str) -> Tensor:
    """uint8 NCHW images -> float32 N x 3 x 299 x 299 network input for ``mode``."""
    return MODES[check_mode(mode)][0](images)
