"""A loaded model made Bayesian in its last layer, as BayesDiff does (Kou, Gan, Wang, Li, Deng,
ICLR 2024, Sec. 3.1): a diagonal Laplace posterior of the network's final convolution
(``bench.last_layer``), fitted once on training pairs and cached, and a denoiser that gives the
noise prediction's elementwise mean and variance besides its usual output.

A suite's model entry turns it on with ``laplace: true`` or ``laplace: {data, samples, seed,
sigma_noise, prior_precision, temperature}`` (:func:`check_settings`);
``bench.generate.LoadedModel.load`` applies it (:func:`apply`): the posterior variances are
read from ``CACHE/laplace/<key>.npz``, keyed by the model's description (weights hash
included), the settings and the fit data's content hash, or fitted and written there. The fit
uses one random training timestep and noise per data image (``training_pairs``), with each
image's label for a class-conditional model. Its network passes are not sampling NFE.

:class:`BayesianDenoiser` is the MAP model for samplers (``__call__``) with ``eps_moments(x,
sigma, cond) -> (mu, v)`` for BayesDiff's samplers (``bench.samplers.bayesdiff``). Under
classifier-free guidance with scale ``w`` the mean is the guided ``(1 - w) mu_u + w mu_c`` and
the variance ``(1 - w)^2 v_u + w^2 v_c`` (the branches' last layers taken as independent, as
BayesDiff's guided sampler does). ``network_calls`` counts every forward pass of the network.

Supported: diffusers UNet models in pixel space, unconditional or class-conditional, guided or
not. Refused before any work, with the reason: other model families (no final convolution to
make Bayesian), latent models (the fit data would go through the VAE encoder),
text-conditional models (the fit needs a prompt per image), calibrated models.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bench.errors import BenchError, FieldError, close_matches

#: the fields of a model entry's ``laplace:`` block, with their meaning
FIELDS = {
    "data": "training data of the fit (data set name, image folder or .npz/.npy file); default: "
            "the model's training set",
    "samples": "data images of the fit, one random timestep and noise each (a seeded subset)",
    "seed": "seed of the data subset, the timesteps and the noise",
    "sigma_noise": "observation noise of the Gaussian likelihood (laplace-torch sigma_noise)",
    "prior_precision": "precision of the Gaussian prior on the last layer's parameters",
    "temperature": "temperature of the likelihood",
}
DEFAULTS: dict[str, Any] = {"samples": 1000, "seed": 0, "sigma_noise": 1.0,
                            "prior_precision": 1.0, "temperature": 1.0}
#: the settings a fit is keyed by, in order
SETTINGS = ("data", "samples", "seed", "sigma_noise", "prior_precision", "temperature")
#: bump when the fit's meaning changes: cached files of other versions are not used
CACHE_VERSION = 1


# ------------------------------------------------------------------------------- settings
def check_settings(value: Any, adapter: Any, base: Path | None = None) -> dict[str, Any] | None:
    """A model entry's ``laplace:`` value checked against its adapter and completed with the
    defaults, or None when off (``false`` or absent). Raises FieldError (field relative to
    ``laplace``, '' for the block itself) before any work."""
    from bench.calibration import _check_data

    if value is None or value is False:
        return None
    if value is True:
        value = {}
    if not isinstance(value, dict):
        raise FieldError("", f"must be true, false or a mapping, got {value!r}.",
                         "write 'laplace: true' (defaults) or 'laplace: {samples: 1000}'.")
    for k in value:
        if k not in FIELDS:
            raise FieldError(str(k), f"is not a last-layer Laplace setting."
                             f"{close_matches(str(k), FIELDS)}", f"use: {', '.join(FIELDS)}.")
    out = {**DEFAULTS, **{k: v for k, v in value.items() if k != "data"}}
    for k, lo in (("samples", 2), ("seed", 0)):
        v = out[k]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            why = " (a fit needs at least two images)" if k == "samples" else ""
            raise FieldError(k, f"must be a whole number >= {lo}{why}, got {v!r}.",
                             f"use e.g. {k}: {DEFAULTS[k]}.")
        out[k] = int(v)
    for k in ("sigma_noise", "prior_precision", "temperature"):
        v = out[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v <= 0:
            raise FieldError(k, f"must be a number > 0, got {v!r}.", f"use e.g. {k}: 1.0.")
        out[k] = float(v)
    _check_model(adapter)
    out["data"] = _check_data(value.get("data"), adapter, out["samples"], base)
    return {k: out[k] for k in SETTINGS}


def _check_model(adapter: Any) -> None:
    from bench.models.diffusers_adapter import DiffusersAdapter

    what = adapter.label() if hasattr(adapter, "label") else repr(adapter)
    if not isinstance(adapter, DiffusersAdapter):
        raise FieldError("", f"model {what} ({type(adapter).__name__}) is not a diffusers UNet "
                         f"model: it has no final convolution (conv_out) to make Bayesian.",
                         "use 'laplace:' with a diffusers UNet model (e.g. fmnist-cond, "
                         "fmnist-v, or a model folder), or remove it.")
    if getattr(adapter, "latent", False):
        raise FieldError("", f"model {what} is a latent model: its Laplace fit is not supported "
                         f"yet (the fit data would have to be encoded by its VAE).",
                         "remove 'laplace:' from this model, or use a pixel-space model.")
    if getattr(adapter, "conditioning", None) not in (None, "classes"):
        raise FieldError("", f"model {what} is {adapter.conditioning}-conditional: its Laplace "
                         f"fit is not supported yet (it needs a prompt for every training image).",
                         "remove 'laplace:' from this model, or use an unconditional or "
                         "class-conditional model.")


# --------------------------------------------------------------------------------- model
class BayesianAdapter:
    """A model adapter whose ``describe()`` names its Laplace fit; everything else is the
    wrapped adapter's (caches keyed by the description keep Bayesian and plain models apart)."""

    def __init__(self, inner: Any, laplace: dict[str, Any]) -> None:
        self.inner, self.laplace = inner, dict(laplace)

    def __getattr__(self, name: str) -> Any:
        if name in ("inner", "laplace"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "laplace": self.laplace}


class BayesianDenoiser:
    """The loaded (possibly guided) denoiser with its last-layer posterior (module doc)."""

    def __init__(self, inner: Any, posterior: Any, tag: str = "") -> None:
        from bench.guidance import GuidedDenoiser
        from bench.last_layer import LaplaceEps

        self.inner, self.tag = inner, tag
        self.guided = inner if isinstance(inner, GuidedDenoiser) else None
        base = inner.inner if self.guided is not None else inner
        self.moments_of = LaplaceEps(base, posterior)
        self.schedule = inner.schedule
        self.network_calls = 0

    def __getattr__(self, name: str) -> Any:  # sample_data, prediction_type, ... of the model
        if name in ("inner", "guided", "moments_of"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def cache_key(self) -> str:
        return f"{getattr(self.inner, 'cache_key', id(self.inner))}|laplace:{self.tag}"

    def __call__(self, x: Tensor, sigma: Tensor, cond: Any | None = None) -> Tensor:
        before = getattr(self.inner, "network_calls", None)
        out = self.inner(x, sigma, cond)
        after = getattr(self.inner, "network_calls", None)
        self.network_calls += 1 if before is None else int(after) - int(before)
        return out

    @torch.no_grad()
    def eps_moments(self, x: Tensor, sigma: Tensor, cond: Any | None = None
                    ) -> tuple[Tensor, Tensor]:
        """The noise prediction's elementwise (mean, variance) at ``x``, data-scaled frame."""
        from bench.denoiser import Cond
        from bench.guidance import _per_row

        g = self.guided
        if g is None or g.scale == 1.0:
            self.network_calls += 1
            c = cond.rows if g is not None and isinstance(cond, Cond) else cond
            return self.moments_of(x, sigma, g.cond if g is not None and c is None else c)
        if isinstance(cond, Cond):
            if cond.null is None:
                raise ValueError("guidance needs the unconditional rows (Cond.null) of the batch")
            c, u = cond.rows, cond.null
        else:
            c, u = (g.cond if cond is None else cond), g.uncond
        n, w = x.shape[0], g.scale
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(n)
        rows = torch.cat([_per_row(c, n, x.device), _per_row(u, n, x.device)])
        mu, v = self.moments_of(torch.cat([x, x]), torch.cat([sigma, sigma]), rows)
        self.network_calls += 1
        mean = mu[n:] + w * (mu[:n] - mu[n:])
        var = (1 - w) ** 2 * v[n:] + w * w * v[:n]
        return mean, var


# --------------------------------------------------------------------------------- apply
def cache_key(adapter: Any, settings: dict[str, Any], data_hash: str) -> str:
    """sha256 of the model's description (weights hash included), the settings and the fit
    data's content hash."""
    blob = json.dumps([CACHE_VERSION, adapter.describe(), settings, data_hash], sort_keys=True,
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def fit(adapter: Any, denoiser: Any, settings: dict[str, Any], x0: Tensor) -> Any:
    """The last-layer posterior of a loaded model fitted as ``settings`` say on the data
    samples ``x0`` (``bench.calibration.load_data``'s subset, in the model's sample space)."""
    from bench.calibration import subset_labels
    from bench.denoiser import Cond
    from bench.guidance import GuidedDenoiser
    from bench.last_layer import _unet_of, fit_conv_laplace, training_pairs

    base = denoiser.inner if isinstance(denoiser, GuidedDenoiser) else denoiser
    unet = _unet_of(base)  # a clear error before any work for a model without conv_out
    cond = None
    if getattr(adapter, "conditioning", None) == "classes":
        labels = subset_labels(settings["data"], settings["samples"], settings["seed"])
        if labels is None:
            raise BenchError(f"laplace: data {settings['data']!r} has no class labels; a "
                             f"class-conditional model is fitted on each image's label.")
        cond = Cond(torch.from_numpy(labels).long().to(x0.device))
    features, targets = training_pairs(base, x0, cond, seed=settings["seed"])
    return fit_conv_laplace(unet.conv_out, features, targets,
                            sigma_noise=settings["sigma_noise"],
                            prior_precision=settings["prior_precision"],
                            temperature=settings["temperature"])


def apply(adapter: Any, denoiser: Any, settings: dict[str, Any], device: torch.device | str,
          cache_dir: Path | None = None) -> tuple[BayesianAdapter, BayesianDenoiser]:
    """The Bayesian (adapter, denoiser) of a loaded model: the posterior variances come from
    ``cache_dir/laplace/<key>.npz`` if it is there and verifies (a corrupt file is moved aside
    and refitted), else are fitted and written there (without ``cache_dir``: in memory)."""
    from bench.calibration import load_data
    from bench.guidance import GuidedDenoiser
    from bench.integrity import CorruptFile, checked, load_npz, save_npz
    from bench.last_layer import ConvPosterior, _unet_of

    if any(k not in settings for k in SETTINGS):  # not from a suite: complete and check
        settings = check_settings(dict(settings), adapter) or {}
    settings = {k: settings[k] for k in SETTINGS}
    base = denoiser.inner if isinstance(denoiser, GuidedDenoiser) else denoiser
    conv = _unet_of(base).conv_out
    x0, data_hash = load_data(adapter, settings, device)  # read once: hashed, and fitted on
    key = cache_key(adapter, settings, data_hash)
    path = None if cache_dir is None else Path(cache_dir) / "laplace" / f"{key}.npz"
    found: dict[str, np.ndarray] = {}

    def read(p: Path) -> bool:
        arrays = load_npz(p)
        if tuple(arrays.get("weight_var", np.zeros(0)).shape) != tuple(conv.weight.shape):
            raise CorruptFile(p, f"it does not hold the posterior of this model's conv_out "
                              f"(weight {list(conv.weight.shape)})")
        found.update(arrays)
        return True

    if path is not None and checked(path, Path(cache_dir).parent, read):  # type: ignore[arg-type]
        import copy

        layer = copy.deepcopy(conv).to(torch.float32).eval()
        bias = found.get("bias_var")
        posterior = ConvPosterior(layer, torch.from_numpy(found["weight_var"]),
                                  None if bias is None or not bias.size else torch.from_numpy(bias))
    else:
        posterior = fit(adapter, denoiser, settings, x0)
        if path is not None:
            bias = posterior.bias_var
            save_npz(path, {"weight_var": posterior.weight_var.cpu().numpy(),
                            "bias_var": np.zeros(0, np.float32) if bias is None
                            else bias.cpu().numpy()})
    info = {**settings, "key": key}
    return BayesianAdapter(adapter, info), BayesianDenoiser(denoiser, posterior, tag=key)


__all__ = ["BayesianAdapter", "BayesianDenoiser", "DEFAULTS", "FIELDS", "SETTINGS", "apply",
           "check_settings", "fit"]
