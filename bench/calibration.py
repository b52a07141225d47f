"""Calibrated diffusion models (Zheng, Pang, Du et al. 2023, "On Calibrating Diffusion
Probabilistic Models", NeurIPS 2023).

For the optimal noise predictor ``eps*(x_t, t) = E[eps | x_t]`` the data average vanishes:
``E_q(x_t)[eps*(x_t, t)] = E[eps] = 0`` at every t. A trained model's average
``m(t) = E_q(x_t)[eps_theta(x_t, t)]`` (one vector over the sample's dimensions per t) need not
be 0; the calibrated model ``eps_cal = eps_theta - m(t)`` does not increase the score-matching
loss (its loss is lower by exactly ``||m(t)||^2`` per t: ``m`` is the optimal constant shift) and
so tightens the likelihood bounds that are built from it. The calibration is a property of
the model, estimated once from data, not part of sampling.

In this repository's frame (``x = x_0 + s eps``, ``D(x; s) -> x0``, ``eps_hat = (x - D) / s``):

* :func:`estimate_eps_mean` estimates ``m(s)`` at given levels from data ``x0`` and
  ``eps_hat(x0 + s eps, s)``, one ``eps`` per data sample shared by every level (common random
  numbers), drawn from a ``torch.Generator`` seeded ``seed`` in fixed blocks (the draws do not
  depend on the batch size), accumulated in float64: the plain mean of ``eps_hat`` (the
  paper's estimate), or by default that mean minus its regression on the drawn ``eps``, whose
  mean is exactly 0 (a control variate: same expectation, far less noise at high noise levels,
  where ``eps_hat`` is mostly ``eps``);
* :class:`CalibratedDenoiser` is the calibrated Denoiser ``D_cal(x; s) = D(x; s) + s m(s)``
  (i.e. ``eps_cal = eps_hat - m(s)``), with ``m`` linearly interpolated in ``log s`` between
  the grid levels and constant beyond its ends.

The grid (:func:`calibration_levels`) is ``points`` levels uniform in the schedule's time t in
``[t_eps, T]``; the paper estimates ``m`` on the training timesteps, which ``points`` = N gives
exactly for a discrete N-step schedule (t_n = n / N). A suite's model entry turns it on with
``calibrate: true`` or ``calibrate: {data, samples, points, seed, estimator}``
(:func:`check_settings`);
``bench.generate.LoadedModel.load`` applies it (:func:`apply`) and caches the estimate in
``CACHE/calibration/<key>.npz`` keyed by the model's description (weights hash included), the
settings and the data's content hash. The model passes of the estimate are not counted as
sampling NFE (``LoadedModel.load`` runs them before any sampler sees the model).

Class-conditional models get one term per class, ``m(s, c) = E_q(x_t | c)[eps_theta(x_t, t,
c)]`` (zero for the optimal predictor of each class, by the same argument), estimated from the
data samples of class c (about ``samples / C`` of them, the labels of the seeded subset) with
noise seeded from (seed, c); the calibrated model subtracts each row's own class term.

Not supported yet (refused with an explanation by :func:`check_settings`): latent models (the
data would have to go through the VAE encoder), text-conditional models and classifier-free
guidance (the term would be per prompt and per branch), consistency models (their output is not
a denoiser's).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from bench.errors import BenchError, FieldError, close_matches

#: the fields of a model entry's ``calibrate:`` block, with their meaning
FIELDS = {
    "data": "data set name (bench list datasets), image folder or .npz/.npy file; default: the "
            "model's training set, or the oracle's own samples (sample_data)",
    "samples": "data samples the mean is estimated from (a seeded random subset of the data)",
    "points": "noise levels, uniform in the schedule's time t in [t_eps, T]",
    "seed": "seed of the noise draws (and of the data subset)",
    "estimator": "control_variate (default: the mean of eps_hat minus its regression on the "
                 "drawn noise, whose mean is 0) or plain (the mean of eps_hat)",
}
DEFAULTS: dict[str, Any] = {"samples": 1000, "points": 100, "seed": 0,
                            "estimator": "control_variate"}
#: the settings a calibration is keyed by, in order
SETTINGS = ("data", "samples", "points", "seed", "estimator")
#: how the mean is estimated (``estimate_eps_mean``)
ESTIMATORS = ("control_variate", "plain")
#: ``data:`` value meaning the model's own ``sample_data`` (the gmm oracle)
SAMPLE_DATA = "sample_data"
#: rows of noise drawn per generator call (the draws do not depend on the batch size)
_BLOCK = 256
#: bump when the estimate's meaning changes: cached files of other versions are not used
CACHE_VERSION = 1
MAX_SEED = 2**63 - 1


# ------------------------------------------------------------------------------- settings
def _whole(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def check_settings(value: Any, adapter: Any, base: Path | None = None) -> dict[str, Any] | None:
    """A model entry's ``calibrate:`` value, checked against its adapter and completed with the
    defaults: ``{data, samples, points, seed, estimator}``, or None when calibration is off
    (``false`` or absent). Raises FieldError (field relative to ``calibrate``, '' for the block itself)
    before any work. ``base`` is the suite's folder: a relative data path is looked up there
    when it does not exist relative to the working directory."""
    if value is None or value is False:
        return None
    if value is True:
        value = {}
    if not isinstance(value, dict):
        raise FieldError("", f"must be true, false or a mapping, got {value!r}.",
                         "write 'calibrate: true' (defaults) or 'calibrate: {samples: 1000, "
                         "points: 100}'.")
    for k in value:
        if k not in FIELDS:
            raise FieldError(str(k), f"is not a calibration setting."
                             f"{close_matches(str(k), FIELDS)}", f"use: {', '.join(FIELDS)}.")
    out = {**DEFAULTS, **{k: v for k, v in value.items() if k != "data"}}
    if out["estimator"] not in ESTIMATORS:
        est = out["estimator"]
        raise FieldError("estimator", f"is {est!r}.{close_matches(str(est), ESTIMATORS)}",
                         f"use one of: {', '.join(ESTIMATORS)}.")
    for k, lo in (("samples", 2), ("points", 2), ("seed", 0)):
        v = out[k]
        if not _whole(v) or v < lo or (k == "seed" and v > MAX_SEED):
            rng = f"in [0, {MAX_SEED}]" if k == "seed" else f">= {lo}"
            why = " (a mean and its Monte Carlo error need two)" if k == "samples" else (
                " (interpolation in log s needs two levels)" if k == "points" else "")
            raise FieldError(k, f"must be a whole number {rng}{why}, got {v!r}.",
                             f"use e.g. {k}: {DEFAULTS[k]}.")
        out[k] = int(v)
    _check_model(adapter)
    out["data"] = _check_data(value.get("data"), adapter, out["samples"], base)
    return {k: out[k] for k in SETTINGS}


def _check_model(adapter: Any) -> None:
    what = adapter.label() if hasattr(adapter, "label") else repr(adapter)
    if getattr(adapter, "schedule", None) is None:
        raise FieldError("", f"model {what} has no noise schedule (the levels of the estimate "
                         f"are uniform in the schedule's time).",
                         "calibrate a diffusion model with a VP schedule, or remove 'calibrate:'.")
    if getattr(adapter, "latent", False):
        raise FieldError("", f"model {what} is a latent model: calibration of latent models is "
                         f"not supported yet (the data would have to be encoded by its VAE).",
                         "remove 'calibrate:' from this model, or calibrate a pixel-space model.")
    if getattr(adapter, "conditioning", None) not in (None, "classes"):
        raise FieldError("", f"model {what} is conditional ({adapter.conditioning}): calibration "
                         f"of text-conditional models is not supported yet (the calibration "
                         f"term is per prompt, E over x_t of prompt c of eps(x_t, t, c)).",
                         "remove 'calibrate:' from this model, or calibrate an unconditional or "
                         "class-conditional model (e.g. fmnist-v, fmnist-cond, gmm).")
    if getattr(adapter, "guidance", None) is not None:
        raise FieldError("", f"model {what} uses classifier-free guidance: calibrating a guided "
                         f"model is not supported yet (each branch needs its own term).",
                         "remove 'calibrate:' or the model's 'guidance:'.")
    if getattr(adapter, "parameterisation", "x0") != "x0":
        raise FieldError("", f"model {what} has parameterisation "
                         f"{adapter.parameterisation!r}: its output is not a denoiser's, so "
                         f"eps = (x - D) / s means nothing.",
                         "remove 'calibrate:' from this model.")


def _check_data(data: Any, adapter: Any, samples: int, base: Path | None) -> str:
    from bench.registry import DATASETS

    if data is None:
        data = getattr(adapter, "training_data", None) or (
            SAMPLE_DATA if callable(getattr(adapter, "sample_data", None)) else None)
        if data is None:
            raise FieldError("data", f"has no default for model {adapter.label()}: it names no "
                             f"training set and cannot sample its data.",
                             f"give 'calibrate: {{data: NAME}}' with a data set "
                             f"({', '.join(DATASETS.names())}), an image folder or a .npz/.npy "
                             f"file of the model's training data.")
    if not isinstance(data, str) or not data:
        raise FieldError("data", f"must be a data set name or a path, got {data!r}.",
                         f"use one of: {', '.join(DATASETS.names())}, a folder of images or a "
                         f".npz/.npy file.")
    if data == SAMPLE_DATA:
        if not callable(getattr(adapter, "sample_data", None)):
            raise FieldError("data", f"is '{SAMPLE_DATA}', but model {adapter.label()} cannot "
                             f"sample its data.", f"give a data set "
                             f"({', '.join(DATASETS.names())}), an image folder or a .npz/.npy "
                             f"file.")
        return data
    if data not in DATASETS:
        p = Path(data)
        if not p.exists() and base is not None and not p.is_absolute() and (base / p).exists():
            data = str(base / p)
        elif not p.exists():
            raise FieldError("data", f"{data!r} is not a data set, an image folder or a .npz/.npy "
                             f"file.{close_matches(data, DATASETS.names())}",
                             f"use one of: {', '.join(DATASETS.names())}, a folder of images or an "
                             f"array file (relative paths: from the working directory or the "
                             f"suite's folder).")
    ds = _open(data)
    if samples > len(ds):
        raise FieldError("samples", f"is {samples}, but data {data!r} has only {len(ds)} images.",
                         f"use samples <= {len(ds)}, or more data.")
    if getattr(adapter, "conditioning", None) == "classes" and getattr(ds, "labels", None) is None:
        raise FieldError("data", f"{data!r} has no class labels, but model {adapter.label()} is "
                         f"class-conditional (its calibration term is per class).",
                         "give labelled data (a registered data set such as fmnist-train).")
    shape = tuple(ds.images(0, 1).shape[1:])
    want = tuple(adapter.sample_shape())
    if shape != want:
        raise FieldError("data", f"{data!r} holds images of shape {list(shape)}, but model "
                         f"{adapter.label()} makes samples of shape {list(want)}.",
                         "give the model's training data (same channels and size).")
    return data


def _open(data: str) -> Any:
    from bench.data import open_dataset

    try:
        return open_dataset(data)
    except FieldError:
        raise
    except BenchError as exc:
        raise FieldError("data", f"{data!r} cannot be read: {exc}",
                         "fix or replace the data, or give another 'data:'.") from None


# --------------------------------------------------------------------------------- levels
def calibration_levels(schedule: Any, points: int) -> Tensor:
    """``points`` data-scaled levels ``s = schedule.s_of_t(t)``, t uniform in [t_eps, T],
    ascending (float64)."""
    t = torch.linspace(float(schedule.t_eps), float(schedule.T), int(points), dtype=torch.float64)
    return schedule.s_of_t(t).to(torch.float64)


# ------------------------------------------------------------------------------- estimate
class _NoiseRows:
    """Standard normal rows from one generator, drawn in blocks of ``_BLOCK`` rows, so row i
    is the same whatever batches the rows are asked for in."""

    def __init__(self, seed: int, shape: tuple[int, ...]) -> None:
        self.gen = torch.Generator().manual_seed(int(seed))
        self.shape, self.buf = shape, torch.empty((0, *shape), dtype=torch.float64)

    def take(self, n: int) -> Tensor:
        while self.buf.shape[0] < n:
            block = torch.randn((_BLOCK, *self.shape), generator=self.gen, dtype=torch.float64)
            self.buf = torch.cat([self.buf, block])
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def _chunks(data: Tensor | Iterable[Tensor], batch_size: int
            ) -> tuple[Iterator[Tensor], int | None]:
    if isinstance(data, Tensor):
        n = data.shape[0]
        return (data[i:i + batch_size] for i in range(0, n, batch_size)), -(-n // batch_size)

    def gen() -> Iterator[Tensor]:
        for batch in data:
            batch = torch.as_tensor(batch)
            for i in range(0, batch.shape[0], batch_size):
                yield batch[i:i + batch_size]

    return gen(), None


@torch.no_grad()
def estimate_eps_mean(denoiser: Any, levels: Tensor, data: Tensor | Iterable[Tensor], *,
                      seed: int, batch_size: int = 256, cond: Any = None,
                      dtype: torch.dtype | None = None, estimator: str = "control_variate",
                      return_std: bool = False, desc: str = "calibration"
                      ) -> Tensor | tuple[Tensor, Tensor]:
    """``m(s) = E over data x0 of eps_hat(x0 + s eps, s)`` for each level, ``[L, *shape]``
    float64 (see the module doc). ``data`` is a ``[N, *shape]`` tensor in the model's sample
    space or an iterable of such batches (read once); the denoiser is evaluated on at most
    ``batch_size`` rows at a time, in ``dtype`` (default: the data's floating dtype), on the
    data's device, with ``cond`` (or ``cond(rows)``, a callable giving a chunk's conditioning).

    ``estimator``: ``plain`` is the sample mean of ``eps_hat`` (the paper's Monte Carlo
    estimate); ``control_variate`` (default) subtracts ``c * mean(eps)``, whose expectation is
    exactly 0, with the regression coefficient ``c = cov(eps_hat, eps) / var(eps)`` per level
    and element estimated from the same draws. Same expectation; the variance drops where
    ``eps_hat`` follows ``eps`` (high noise, where ``eps_hat ~ eps`` and the plain mean is
    mostly the draw's own ``mean(eps)``, shared by every level) and never rises by more than
    O(1/N). ``return_std``: also the per-element standard deviation of the averaged terms
    (``eps_hat``, or its residual after the regression): ``std / sqrt(N)`` is the Monte Carlo
    error of the estimate."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"calibration: estimator={estimator!r}; use one of "
                         f"{', '.join(ESTIMATORS)}")
    levels = torch.as_tensor(levels, dtype=torch.float64).reshape(-1).cpu()
    if not len(levels) or not bool(torch.isfinite(levels).all()) or bool((levels <= 0).any()):
        raise ValueError(f"calibration: levels must be finite and > 0, got {levels.tolist()}")
    chunks, n_chunks = _chunks(data, int(batch_size))
    noise: _NoiseRows | None = None
    sums: dict[str, Tensor] = {}  # float64 sums of e, e^2, e z per level; of z, z^2
    n = 0
    bar = tqdm(total=None if n_chunks is None else n_chunks * len(levels), desc=desc,
               leave=False, disable=None)
    try:
        for x0 in chunks:
            b = int(x0.shape[0])
            if not b:
                continue
            if noise is None:
                noise = _NoiseRows(seed, tuple(x0.shape[1:]))
                per_level = torch.zeros((len(levels), *x0.shape[1:]), dtype=torch.float64,
                                        device=x0.device)
                sums = {"e": per_level, "ee": per_level.clone(), "ez": per_level.clone(),
                        "z": per_level[0].clone(), "zz": per_level[0].clone()}
            in_dtype = dtype or (x0.dtype if x0.is_floating_point() else torch.float32)
            z = noise.take(b).to(x0.device)
            sums["z"] += z.sum(0)
            sums["zz"] += (z * z).sum(0)
            x0d = x0.to(torch.float64)
            for j, s in enumerate(levels.tolist()):
                x = (x0d + s * z).to(in_dtype)
                sig = torch.full((b,), s, dtype=in_dtype, device=x.device)
                c = cond(b) if callable(cond) else cond
                e = (x.to(torch.float64) - denoiser(x, sig, c).to(torch.float64)) / s
                sums["e"][j] += e.sum(0)
                sums["ee"][j] += (e * e).sum(0)
                sums["ez"][j] += (e * z).sum(0)
                bar.update(1)
            n += b
    finally:
        bar.close()
    if n < 2:
        raise ValueError(f"calibration: {n} data sample(s); the estimate needs at least 2")
    mean_e, mean_z = sums["e"] / n, sums["z"] / n
    var_e = ((sums["ee"] - n * mean_e**2) / (n - 1)).clamp(min=0.0)
    if estimator == "plain":
        return (mean_e, var_e.sqrt()) if return_std else mean_e
    var_z = ((sums["zz"] - n * mean_z**2) / (n - 1)).clamp(min=1e-300)
    cov = (sums["ez"] - n * mean_e * mean_z) / (n - 1)
    c = cov / var_z
    mean = mean_e - c * mean_z
    if not return_std:
        return mean
    resid = ((var_e - c * cov) * (n - 1) / max(n - 2, 1)).clamp(min=0.0)
    return mean, resid.sqrt()


# ------------------------------------------------------------------------------- denoiser
class CalibratedDenoiser:
    """``D_cal(x; s) = D(x; s) + s m(s)``: ``eps_cal = eps_hat - m(s)`` (see the module doc).

    ``levels`` ``[L]`` (> 0) and ``means`` ``[L, *shape]``; ``m`` is linear in ``log s`` between
    levels and constant beyond the ends (at ``s = 0`` the correction ``s m`` vanishes). A
    class-conditional model has one term per class: ``classes`` ``[C]`` (the labels, ascending)
    and ``means`` ``[C, L, *shape]``; each row then takes its class's term, from the ``Cond``
    rows (class labels) it is called with. Same call signature and ``schedule`` as the inner
    denoiser; other attributes (``network_calls``, ``sample_data``, ``parameterisation``) are
    the inner one's. ``tag`` names the calibration in ``cache_key`` (precomputations cached per
    model, e.g. Analytic-DPM's Gamma, then do not mix calibrated and plain models).
    """

    def __init__(self, inner: Any, levels: Tensor, means: Tensor, *, tag: str = "",
                 classes: Tensor | None = None) -> None:
        levels = torch.as_tensor(levels, dtype=torch.float64).reshape(-1).cpu()
        means = torch.as_tensor(means, dtype=torch.float64).cpu()
        if classes is not None:
            classes = torch.as_tensor(classes, dtype=torch.long).reshape(-1).cpu()
            if not len(classes) or bool((classes[1:] <= classes[:-1]).any()) or \
                    means.shape[:1] != classes.shape:
                raise ValueError(f"CalibratedDenoiser: classes {classes.tolist()} must ascend and "
                                 f"match the means' first dimension {tuple(means.shape)}")
        per_class = means if classes is not None else means[None]
        if not len(levels) or per_class.shape[1:2] != levels.shape:
            raise ValueError(f"CalibratedDenoiser: {len(levels)} levels but means of shape "
                             f"{tuple(means.shape)} (want [L, *sample_shape], or [C, L, "
                             f"*sample_shape] with classes)")
        if not bool(torch.isfinite(levels).all()) or bool((levels <= 0).any()) or \
                bool((levels[1:] <= levels[:-1]).any()):
            raise ValueError("CalibratedDenoiser: levels must be finite, > 0 and increasing")
        if not bool(torch.isfinite(means).all()):
            raise ValueError("CalibratedDenoiser: the means are not all finite")
        self.inner, self.schedule = inner, inner.schedule
        self.levels, self.means, self.tag, self.classes = levels, means, str(tag), classes
        self._per_class = per_class
        self._on: dict[str, tuple[Tensor, Tensor]] = {}

    def __getattr__(self, name: str) -> Any:  # network_calls, sample_data, ... of the inner one
        if name in ("inner", "_on", "levels", "means", "tag", "classes", "_per_class"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def cache_key(self) -> str:
        return f"{getattr(self.inner, 'cache_key', id(self.inner))}|calibrated:{self.tag}"

    def _class_index(self, cond: Any, n: int, device: torch.device) -> Tensor:
        """Each row's index into ``classes`` (zeros for an unconditional model)."""
        if self.classes is None:
            return torch.zeros(n, dtype=torch.long, device=device)
        rows = getattr(cond, "rows", None)
        if rows is None or rows.ndim != 1 or rows.dtype != torch.long or len(rows) != n:
            raise ValueError("CalibratedDenoiser: this calibration is per class; call the model "
                             "with a Cond of class labels, one per row (an unconditional call "
                             "has no class term).")
        classes = self.classes.to(rows.device)
        at = torch.searchsorted(classes, rows.contiguous()).clamp(max=len(classes) - 1)
        if not bool((classes[at] == rows).all()):
            raise ValueError(f"CalibratedDenoiser: labels {sorted(set(rows.tolist()))} include "
                             f"classes without a term (calibrated on {self.classes.tolist()}).")
        return at.to(device)

    def offset(self, sigma: Tensor, cond: Any = None) -> Tensor:
        """``m(s)`` (of each row's class) per row: ``[B, *shape]`` float64 on ``sigma``'s
        device."""
        dev = sigma.device
        if str(dev) not in self._on:
            self._on[str(dev)] = (self.levels.log().to(dev), self._per_class.to(dev))
        log_levels, means = self._on[str(dev)]
        s = sigma.to(torch.float64).reshape(-1)
        c = self._class_index(cond, len(s), dev)
        ls = torch.log(s.clamp(min=float(self.levels[0]), max=float(self.levels[-1])))
        if len(log_levels) == 1:
            return means[c, 0]
        hi = torch.searchsorted(log_levels, ls).clamp(1, len(log_levels) - 1)
        lo = hi - 1
        w = ((ls - log_levels[lo]) / (log_levels[hi] - log_levels[lo])).clamp(0.0, 1.0)
        w = w.view(-1, *([1] * (means.ndim - 2)))
        return means[c, lo] * (1.0 - w) + means[c, hi] * w

    def __call__(self, x: Tensor, sigma: Tensor, cond: Any | None = None) -> Tensor:
        d = self.inner(x, sigma, cond)
        n = x.shape[0]
        s = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).reshape(-1).expand(n)
        shift = s.view(-1, *([1] * (x.ndim - 1))) * self.offset(s, cond).reshape(x.shape)
        return (d.to(torch.float64) + shift).to(d.dtype)


class CalibratedAdapter:
    """A model adapter whose ``describe()`` names its calibration; everything else is the
    wrapped adapter's. Metrics that cache per model description (reference solutions of the
    model's ODE) then keep calibrated and plain models apart."""

    def __init__(self, inner: Any, calibration: dict[str, Any]) -> None:
        self.inner, self.calibration = inner, dict(calibration)

    def __getattr__(self, name: str) -> Any:
        if name in ("inner", "calibration"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "calibration": self.calibration}


# ---------------------------------------------------------------------------------- data
def derived_seed(seed: int, what: str) -> int:
    """A 63-bit seed for ``what`` (the data subset, the oracle's data draw) from ``seed``, so
    they are independent of the noise draws seeded ``seed``."""
    h = hashlib.sha256(f"{int(seed)}:{what}".encode()).digest()
    return int.from_bytes(h[:8], "big") >> 1


def subset_indices(size: int, samples: int, seed: int) -> np.ndarray:
    """The sorted indices of the seeded random subset of ``samples`` of ``size`` data items."""
    return np.sort(np.random.default_rng(derived_seed(seed, "subset")).choice(size, samples,
                                                                              replace=False))


def subset_labels(data: str, samples: int, seed: int) -> np.ndarray | None:
    """The labels of ``load_data``'s subset of data set ``data`` (None: it has no labels)."""
    ds = _open(data)
    labels = getattr(ds, "labels", None)
    return None if labels is None else np.asarray(labels)[subset_indices(len(ds), samples, seed)]


def load_data(adapter: Any, settings: dict[str, Any], device: torch.device | str = "cpu"
              ) -> tuple[Tensor, str]:
    """The ``samples`` data samples of ``settings['data']`` in the model's sample space (float,
    on ``device``) and their content hash (sha256 of the samples' bytes). A data set gives a
    random subset (seeded by ``seed``, in index order) of its uint8 images, mapped by the
    adapter (``encode_images``); ``sample_data`` the oracle's own draw."""
    n, seed, data = int(settings["samples"]), int(settings["seed"]), settings["data"]
    if data == SAMPLE_DATA:
        gen = torch.Generator().manual_seed(derived_seed(seed, "data"))
        x = adapter.sample_data(n, gen).to(torch.float64).cpu()
        h = hashlib.sha256(f"{SAMPLE_DATA}:{x.dtype}:{tuple(x.shape)}".encode())
        h.update(x.numpy().tobytes())
        return x.to(device=device, dtype=adapter.dtype), h.hexdigest()
    ds = _open(data)
    if n > len(ds):
        raise BenchError(f"calibrate: samples = {n}, but data {data!r} has only {len(ds)} images; "
                         f"use samples <= {len(ds)}.")
    idx = subset_indices(len(ds), n, seed)
    images = np.concatenate([ds.images(int(i), int(i) + 1) for i in idx])
    h = hashlib.sha256(f"{images.dtype.str}:{images.shape}".encode())
    h.update(np.ascontiguousarray(images).tobytes())
    x = adapter.encode_images(torch.from_numpy(np.array(images, copy=True)))
    return x.to(device), h.hexdigest()


# --------------------------------------------------------------------------------- apply
def cache_key(adapter: Any, settings: dict[str, Any], data_hash: str) -> str:
    """sha256 of the model's description (weights hash included), the settings, the schedule
    and the data's content hash."""
    blob = json.dumps([CACHE_VERSION, adapter.describe(), settings, adapter.schedule.describe(),
                       data_hash], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def apply(adapter: Any, denoiser: Any, settings: dict[str, Any], device: torch.device | str,
          cache_dir: Path | None = None) -> tuple[CalibratedAdapter, CalibratedDenoiser]:
    """The calibrated (adapter, denoiser) of a loaded model: the means come from
    ``cache_dir/calibration/<key>.npz`` if it is there and verifies (a corrupt file is moved
    aside and recomputed), else are estimated with the uncounted ``denoiser`` and written
    there (without ``cache_dir``: estimated in memory)."""
    from bench.integrity import checked, load_npz, save_npz

    settings = {k: {**DEFAULTS, **settings}[k] for k in SETTINGS}  # as check_settings gives
    levels = calibration_levels(adapter.schedule, settings["points"])
    x0, data_hash = load_data(adapter, settings, device)
    labels = None
    if getattr(adapter, "conditioning", None) == "classes":
        labels = subset_labels(settings["data"], settings["samples"], settings["seed"])
        if labels is None:
            raise BenchError(f"calibrate: data {settings['data']!r} has no class labels; a "
                             f"class-conditional model is calibrated per class.")
    classes = None if labels is None else torch.from_numpy(np.unique(labels)).long()
    key = cache_key(adapter, settings, data_hash)
    shape = (*(() if classes is None else (len(classes),)), len(levels), *adapter.sample_shape())
    path = None if cache_dir is None else Path(cache_dir) / "calibration" / f"{key}.npz"

    found: dict[str, np.ndarray] = {}

    def read(p: Path) -> bool:
        from bench.integrity import CorruptFile

        arrays = load_npz(p)
        levels_ok = arrays.get("levels", np.zeros(0)).shape == levels.shape and np.allclose(
            arrays["levels"], levels.numpy(), rtol=1e-12, atol=0.0)
        classes_ok = classes is None or np.array_equal(arrays.get("classes"), classes.numpy())
        if tuple(arrays.get("means", np.zeros(0)).shape) != shape or not levels_ok or \
                not classes_ok:
            raise CorruptFile(p, f"it does not hold the means of this calibration (levels "
                              f"[{len(levels)}], means {list(shape)})")
        found.update(arrays)
        return True

    if path is not None and checked(path, Path(cache_dir).parent, read):  # type: ignore[arg-type]
        means = torch.from_numpy(found["means"])
    else:
        est = {"dtype": adapter.dtype, "estimator": settings["estimator"], "return_std": True}
        if classes is None:
            means, std = estimate_eps_mean(denoiser, levels, x0, seed=settings["seed"],
                                           desc=f"calibration ({settings['data']})", **est)
        else:  # one term per class, E over x_t of class c of eps(x_t, t, c)
            parts = [_estimate_class(adapter, denoiser, levels, x0, labels, int(c), settings,
                                     est) for c in classes.tolist()]
            means, std = torch.stack([m for m, _ in parts]), torch.stack([d for _, d in parts])
        means = means.cpu()
        if path is not None:
            extra = {} if classes is None else {"classes": classes.numpy()}
            save_npz(path, {"levels": levels.numpy(), "means": means.numpy(),
                            "std": std.cpu().numpy(), "n": np.int64(x0.shape[0]), **extra})
    info = {**settings, "key": key}
    return CalibratedAdapter(adapter, info), CalibratedDenoiser(denoiser, levels, means, tag=key,
                                                                classes=classes)


def _estimate_class(adapter: Any, denoiser: Any, levels: Tensor, x0: Tensor, labels: np.ndarray,
                    label: int, settings: dict[str, Any], est: dict[str, Any]
                    ) -> tuple[Tensor, Tensor]:
    """Class ``label``'s term from its data samples, its noise seeded from (seed, class)."""
    from bench.conditions import Condition
    from bench.denoiser import Cond

    rows, _ = adapter.encode([Condition(id=f"class={label}", label=label)])
    one = rows[:1].to(x0.device)
    mask = torch.from_numpy(labels == label).to(x0.device)
    return estimate_eps_mean(
        denoiser, levels, x0[mask], seed=derived_seed(settings["seed"], f"class={label}"),
        cond=lambda b: Cond(one.expand(b, *one.shape[1:])),
        desc=f"calibration ({settings['data']}, class {label})", **est)


__all__ = ["CalibratedAdapter", "CalibratedDenoiser", "apply", "calibration_levels",
           "check_settings", "estimate_eps_mean", "load_data"]
