"""Last-layer Laplace (bench.last_layer) with laplace-torch: the closed-form predictive variance
of a Bayesian Conv2d equals laplace-torch's own GLM predictive and a Monte Carlo over weights; on
the trained UNets the moments' mean is the model's own noise prediction and the posterior
tightens with data; bad input is refused."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from bench.denoiser import Cond
from bench.last_layer import LaplaceEps, fit_conv_laplace, training_pairs


def _toy(seed: int = 0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(4, 2, 3, padding=1)
    f = torch.randn(40, 4, 5, 5)
    y = conv(f).detach() + 0.3 * torch.randn(40, 2, 5, 5)
    return conv, f, y


def test_conv_predictive_equals_laplace_torch_glm_and_monte_carlo():
    from laplace import DiagLaplace
    from laplace.curvature import BackPackEF
    from torch.utils.data import DataLoader, TensorDataset

    conv, f, y = _toy()
    post = fit_conv_laplace(conv, f, y, batch_size=7)
    ref = DiagLaplace(nn.Sequential(copy.deepcopy(conv), nn.Flatten(1, -1)), "regression",
                      sigma_noise=1.0, prior_precision=1.0, temperature=1.0, backend=BackPackEF)
    ref.fit(DataLoader(TensorDataset(f, y.flatten(1)), batch_size=7))
    x = torch.randn(3, 4, 5, 5)
    f_mean, f_cov = ref(x, pred_type="glm")
    mean, var = post.moments(x)
    torch.testing.assert_close(mean.flatten(1), f_mean, rtol=0, atol=1e-6)
    torch.testing.assert_close(var.flatten(1), torch.diagonal(f_cov, dim1=1, dim2=2),
                               rtol=1e-5, atol=1e-8)
    gen = torch.Generator().manual_seed(1)
    w, b = post.layer.weight, post.layer.bias
    draws = torch.stack([nn.functional.conv2d(
        x, w + post.weight_var.sqrt() * torch.randn(w.shape, generator=gen),
        b + post.bias_var.sqrt() * torch.randn(b.shape, generator=gen), padding=1)
        for _ in range(20000)])
    assert float((draws.var(0) / var - 1).abs().max()) < 0.06  # 20k draws: ~2% per element
    assert conv.weight.requires_grad  # the caller's layer is untouched


@pytest.mark.usefixtures("fmnist")
@pytest.mark.parametrize("name", ["fmnist-cond", "fmnist-v"])
def test_trained_unet_moments_and_the_posterior_tightening_with_data(name):
    from bench.calibration import load_data, subset_labels
    from bench.generate import LoadedModel

    lm = LoadedModel.load({"name": name, "params": {}}, torch.device("cpu"))
    den = lm.denoiser
    x0, _ = load_data(lm.adapter, {"data": "fmnist-train", "samples": 48, "seed": 0})
    labels = torch.from_numpy(subset_labels("fmnist-train", 48, 0)).long()
    cond = Cond(labels) if name == "fmnist-cond" else None
    f, y = training_pairs(den, x0, cond, seed=0)
    assert f.shape[0] == y.shape[0] == 48
    small = fit_conv_laplace(den.unet.conv_out, f[:12], y[:12])
    big = fit_conv_laplace(den.unet.conv_out, f, y)
    assert float(big.weight_var.mean()) < 0.5 * float(small.weight_var.mean())
    moments = LaplaceEps(den, big)
    x = torch.randn(3, 1, 28, 28) * 1.5
    s = torch.full((3,), 1.5)
    c = Cond(torch.tensor([0, 4, 9])) if name == "fmnist-cond" else None
    mean, var = moments(x, s, c)
    with torch.no_grad():
        eps = (x.double() - den(x, s, c).double()) / 1.5
    torch.testing.assert_close(mean.double(), eps, rtol=0, atol=1e-5)
    assert var.shape == x.shape and bool((var > 0).all()) and bool(torch.isfinite(var).all())


def test_bad_input_is_refused():
    from bench.generate import LoadedModel

    gmm = LoadedModel.load({"name": "gmm", "params": {"shape": [1, 4, 4]}}, torch.device("cpu"))
    with pytest.raises(ValueError, match="needs a diffusers UNet"):
        training_pairs(gmm.denoiser, torch.zeros(4, 1, 4, 4), None, seed=0)
    guided = LoadedModel.load({"name": "fmnist-cond", "params": {"guidance": {"scale": 2.0}}},
                              torch.device("cpu"))
    with pytest.raises(ValueError, match="guided"):
        LaplaceEps(guided.denoiser, None)
    conv, f, y = _toy()
    with pytest.raises(ValueError, match="at least 2 matching pairs"):
        fit_conv_laplace(conv, f[:1], y[:1])
    with pytest.raises(TypeError, match="Conv2d"):
        fit_conv_laplace(nn.Linear(3, 3), f, y)
