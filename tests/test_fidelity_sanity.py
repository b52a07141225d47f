"""Sanity of FID with the real Inception on Fashion-MNIST: FID(test, test) is about 0, and FID
rises monotonically with added Gaussian noise and with blur on the test images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import test_fidelity_support as S
from bench.metrics.fid import frechet_distance
from bench.metrics.refstats import Moments

N, M = S.PARITY_N, 24  # reference: test[0:N]; distorted: test[0:M]
MODE = "tf1_bilinear"


def _stats(f: np.ndarray):
    m = Moments(f.shape[1])
    m.update(torch.from_numpy(f))
    return m.mean_cov()


@pytest.fixture(scope="module")
def ref():
    S.need_fmnist()
    S.inception_weights()
    return _stats(S.features("test", 0, N, MODE))


def _fid(images: torch.Tensor, ref) -> float:
    f = S.extractor(MODE)(images)["pool"].numpy()
    return frechet_distance(*_stats(f), *ref)


def test_fid_of_a_set_with_itself_is_zero(ref):
    assert abs(frechet_distance(*ref, *ref)) < 1e-2


def test_fid_rises_with_gaussian_noise(ref):
    x = S.images("test", 0, M)
    g = torch.Generator().manual_seed(0)
    fids = [frechet_distance(*_stats(S.features("test", 0, N, MODE)[:M]), *ref)]
    for sigma in (10.0, 30.0, 80.0):
        noisy = (x.double() + sigma * torch.randn(x.shape, generator=g, dtype=torch.float64))
        fids.append(_fid(noisy.round().clamp(0, 255).to(torch.uint8), ref))
    print("FID vs Gaussian noise sigma (0, 10, 30, 80 grey levels):", [round(f, 2) for f in fids])
    assert all(a < b for a, b in zip(fids, fids[1:])), fids


def test_fid_rises_with_blur(ref):
    from PIL import Image, ImageFilter

    x = S.images("test", 0, M).numpy()
    fids = [frechet_distance(*_stats(S.features("test", 0, N, MODE)[:M]), *ref)]
    for radius in (0.7, 1.5, 3.0):
        blurred = np.stack([np.asarray(Image.fromarray(img[0]).filter(ImageFilter.GaussianBlur(radius)))
                            for img in x])[:, None]
        fids.append(_fid(torch.from_numpy(blurred), ref))
    print("FID vs Gaussian blur radius (0, 0.7, 1.5, 3 px):", [round(f, 2) for f in fids])
    assert all(a < b for a, b in zip(fids, fids[1:])), fids
