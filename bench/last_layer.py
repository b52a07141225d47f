"""Last-layer Laplace approximation of a noise predictor, as BayesDiff builds it (Kou et al.,
ICLR 2024, Sec. 3.1; code karrykkk/BayesDiff ``custom_model.py``): the network's final
convolution (diffusers ``conv_out``) gets a diagonal Gaussian posterior, the rest of the network
is a fixed feature map.

* :func:`fit_conv_laplace` fits ``laplace-torch``'s ``DiagLaplace`` (regression, empirical Fisher
  through BackPACK; noise 1, prior precision 1, temperature 1 by default, as BayesDiff) on
  (features, target) pairs and returns the posterior variance of the layer's weight and bias;
* :class:`ConvPosterior` is that posterior with its predictive: the layer is linear in its
  weights, so the output variance is exact, ``Var[out] = conv2d(f^2, Var[W]) + Var[b]`` for
  features ``f`` (laplace-torch's ``glm`` predictive restricted to the diagonal, without its
  ``[outputs x outputs]`` covariance; BayesDiff's code samples 100 weight draws instead).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

@dataclass
class ConvPosterior:
    """Diagonal Gaussian posterior of a ``Conv2d``: its MAP layer and parameter variances."""

    layer: nn.Conv2d
    weight_var: Tensor  # same shape as layer.weight
    bias_var: Tensor | None  # [out_channels] or None

    def moments(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, variance) of the layer's output for input ``features``, elementwise."""
        return self.layer(features), self.variance(features)

    def variance(self, features: Tensor) -> Tensor:
        """The output's elementwise variance for input ``features``."""
        layer = self.layer
        var = nn.functional.conv2d(features * features, self.weight_var.to(features), None,
                                   layer.stride, layer.padding, layer.dilation, layer.groups)
        if self.bias_var is not None:
            var = var + self.bias_var.to(features).view(1, -1, 1, 1)
        return var


def fit_conv_laplace(layer: nn.Conv2d, features: Tensor, targets: Tensor, *,
                     batch_size: int = 32, sigma_noise: float = 1.0,
                     prior_precision: float = 1.0, temperature: float = 1.0) -> ConvPosterior:
    """Fit a diagonal last-layer Laplace posterior of ``layer`` on ``features`` ``[N, C, H, W]``
    (the layer's inputs) and regression ``targets`` (its desired outputs), with laplace-torch
    (``DiagLaplace``, ``BackPackEF``). The layer is copied; the original is not modified."""
    from laplace import DiagLaplace
    from laplace.curvature import BackPackEF
    from torch.utils.data import DataLoader, TensorDataset

    if not isinstance(layer, nn.Conv2d):
        raise TypeError(f"last-layer Laplace: the last layer must be a Conv2d, got "
                        f"{type(layer).__name__}.")
    if features.shape[0] != targets.shape[0] or features.shape[0] < 2:
        raise ValueError(f"last-layer Laplace: {features.shape[0]} features for "
                         f"{targets.shape[0]} targets; give at least 2 matching pairs.")
    import copy

    conv = copy.deepcopy(layer).to(torch.float32)
    for p in conv.parameters():
        p.requires_grad_(True)
    model = nn.Sequential(conv, nn.Flatten(1, -1))
    la = DiagLaplace(model, "regression", sigma_noise=sigma_noise,
                     prior_precision=prior_precision, temperature=temperature,
                     backend=BackPackEF)
    data = TensorDataset(features.detach().to(torch.float32),
                         targets.detach().to(torch.float32).flatten(1))
    la.fit(DataLoader(data, batch_size=batch_size, shuffle=False))
    var = la.posterior_variance.detach()
    n_w = conv.weight.numel()
    weight_var = var[:n_w].view_as(conv.weight).clone()
    bias_var = var[n_w:].clone() if conv.bias is not None else None
    for p in conv.parameters():
        p.requires_grad_(False)
    return ConvPosterior(conv.eval(), weight_var, bias_var)


__all__ = ["ConvPosterior", "fit_conv_laplace"]


# ------------------------------------------------------------------- diffusers UNet models
def _unet_of(denoiser: Any) -> Any:
    """The diffusers UNet behind a loaded denoiser, or a clear error."""
    from bench.models.unet_denoiser import UNetDenoiser

    if not isinstance(denoiser, UNetDenoiser):
        raise ValueError(f"last-layer Laplace: needs a diffusers UNet model (its final "
                         f"convolution conv_out is the Bayesian layer); this model's denoiser is "
                         f"{type(denoiser).__name__} (guided, calibrated and oracle models are "
                         f"not supported). Use an unguided diffusers model, e.g. fmnist-cond.")
    if not isinstance(getattr(denoiser.unet, "conv_out", None), nn.Conv2d):
        raise ValueError(f"last-layer Laplace: the UNet ({type(denoiser.unet).__name__}) has no "
                         f"final convolution 'conv_out' (nn.Conv2d) to make Bayesian.")
    return denoiser.unet


def _features(unet: Any, call: Any) -> tuple[Tensor, Tensor]:
    """(conv_out's inputs, the result of ``call()``), by a forward hook (concatenated over the
    network calls ``call`` makes: the denoiser runs the network in blocks of rows)."""
    got: list[Tensor] = []

    def hook(_module: Any, args: tuple[Tensor, ...]) -> None:
        got.append(args[0].detach())

    handle = unet.conv_out.register_forward_pre_hook(hook)
    try:
        out = call()
    finally:
        handle.remove()
    return torch.cat(got)[: out.shape[0]], out


@torch.no_grad()
def training_pairs(denoiser: Any, x0: Tensor, cond: Any, *, seed: int, batch_size: int = 64
                   ) -> tuple[Tensor, Tensor]:
    """BayesDiff's fit data: per image one training timestep t ~ U{0..N-1} and noise eps
    (generator seeded ``seed``), ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``, run through
    the model as it samples (``D(x_t / sqrt(abar_t), s_t, cond)``); returns (conv_out's input
    features, the training target: eps, or v = sqrt(abar) eps - sqrt(1 - abar) x0). ``cond``:
    None or a ``Cond`` with one row per image."""
    from bench.denoiser import Cond

    unet = _unet_of(denoiser)
    if denoiser.prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"last-layer Laplace: prediction type {denoiser.prediction_type!r}; "
                         f"BayesDiff needs a noise (or v) predictor.")
    sched = denoiser.schedule
    gen = torch.Generator().manual_seed(int(seed))
    n = x0.shape[0]
    t = torch.randint(0, sched.N, (n,), generator=gen)
    eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    abar = torch.cumprod(1.0 - sched.betas.to(torch.float64), 0)[t]
    a, sg = abar.sqrt().view(-1, 1, 1, 1), (1 - abar).sqrt().view(-1, 1, 1, 1)
    x0d = x0.to(torch.float64).cpu()
    level = ((1 - abar) / abar).sqrt()
    x = x0d + level.view(-1, 1, 1, 1) * eps  # x_t / sqrt(abar): the data-scaled frame
    target = eps if denoiser.prediction_type == "epsilon" else a * eps - sg * x0d
    feats = []
    for b0 in range(0, n, batch_size):
        sl = slice(b0, min(b0 + batch_size, n))
        c = None if cond is None else Cond(cond.rows[sl], None if cond.null is None
                                           else cond.null[sl])
        xb = x[sl].to(denoiser.dtype)
        f, _ = _features(unet, lambda: denoiser(xb, level[sl].to(xb.dtype), c))
        feats.append(f.cpu())
    return torch.cat(feats), target.to(torch.float32)


class LaplaceEps:
    """A loaded UNet model with a last-layer Laplace posterior: ``eps_moments(x, sigma, cond)``
    gives the noise prediction's elementwise mean and variance in the data-scaled frame (the
    ``bench.bayesdiff`` contract). The mean is the model's own (MAP) prediction ``(x - D) / s``;
    the variance is the posterior's, through the prediction type (v: ``eps = alpha v + sigma
    x_t``, so ``Var[eps] = alpha^2 Var[v]``)."""

    def __init__(self, denoiser: Any, posterior: ConvPosterior) -> None:
        self.denoiser, self.posterior = denoiser, posterior
        self.unet = _unet_of(denoiser)

    @torch.no_grad()
    def __call__(self, x: Tensor, sigma: Tensor, cond: Any = None) -> tuple[Tensor, Tensor]:
        n = x.shape[0]
        s = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).reshape(-1).expand(n)
        f, x0 = _features(self.unet, lambda: self.denoiser(x, sigma, cond))
        shape = (n,) + (1,) * (x.ndim - 1)
        mean = (x.to(torch.float64) - x0.to(torch.float64)) / s.view(shape)
        var = self.posterior.variance(f.to(torch.float32)).to(torch.float64)
        if self.denoiser.prediction_type == "v_prediction":
            var = var / (1.0 + s * s).view(shape)  # alpha^2 = 1 / (1 + s^2)
        return mean.to(x.dtype), var.to(x.dtype)
