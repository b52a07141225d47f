"""The one sampling loop: every eval, benchmark and script draws samples through ``generate``.

``generate(model, sampler, indices, seed, conditions)`` draws the initial noise of each sample
from its own stream (``bench.noise``, as EDM's ``StackedRandomGenerator``: sample i is the same
for any batch size or shard split), encodes the samples' conditions through the model's one
encoder (cached per condition), runs the sampler through an NFE-counting wrapper with the
condition as an explicit argument (k-diffusion / EDM style), decodes once if asked, and returns
a :class:`Generation`. A sampler may return ``(x, extras)`` with per-sample arrays (e.g. an
uncertainty per sample); they travel in ``Generation.extras``.
"""

from __future__ import annotations

import importlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from bench.conditions import Condition
from bench.denoiser import Cond, CountingDenoiser
from bench.noise import NoiseSource
from bench.registry import MODELS, SAMPLERS


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler by name with its parameters, grid and number of steps."""

    name: str
    params: dict[str, Any]
    grid: dict[str, Any]
    steps: int

    @classmethod
    def from_dict(cls, spec: dict[str, Any], steps: int) -> "SamplerSpec":
        return cls(spec["name"], dict(spec.get("params") or {}), dict(spec["grid"]), int(steps))


@dataclass
class LoadedModel:
    """A model adapter with its loaded denoiser on a device, and caches of what it computed once:
    encoded conditions (a new prompt list encodes only the new prompts) and sigma grids."""

    adapter: Any
    denoiser: Any
    device: torch.device
    _encoded: dict[Condition, tuple[Tensor, Tensor | None]] = field(default_factory=dict)
    _grids: dict[str, Tensor] = field(default_factory=dict)

    @classmethod
    def load(cls, spec: dict[str, Any], device: torch.device,
             cache_dir: str | Path | None = None) -> "LoadedModel":
        """The model of a suite's model entry ``{name, params[, calibrate | laplace]}`` on
        ``device``. ``calibrate`` (``bench.calibration``) wraps it in the calibrated model,
        ``laplace`` (``bench.bayesian_model``) in the model with a last-layer posterior; their
        estimates are cached under ``cache_dir`` (none: computed in memory)."""
        adapter = MODELS.get(spec["name"])(**spec.get("params", {}))
        denoiser = adapter.load(device)
        # imported by name at run time: a transform's code version is part of the keys of the
        # cells of its models only (bench.suite.cell_code_version), not of every cell
        for field_, module in (("calibrate", "bench.calibration"),
                               ("laplace", "bench.bayesian_model")):
            if spec.get(field_):
                adapter, denoiser = importlib.import_module(module).apply(
                    adapter, denoiser, spec[field_], device,
                    None if cache_dir is None else Path(cache_dir))
        return cls(adapter, denoiser, device)

    @property
    def produces_images(self) -> bool:
        return bool(getattr(self.adapter, "produces_images", False))

    def sigmas(self, sampler: SamplerSpec) -> Tensor:
        from bench.samplers.schedules import make_grid

        key = json.dumps([sampler.grid, sampler.steps], sort_keys=True, default=str)
        if key not in self._grids:
            self._grids[key] = make_grid(sampler.grid, self.denoiser.schedule, sampler.steps).to(self.device)
        return self._grids[key]

    def encode(self, conditions: Sequence[Condition] | None, negative_prompt: str = "") -> Cond | None:
        """The network's conditioning rows for these per-sample conditions (None: unconditional)."""
        if conditions is None:
            return None
        new = [c for c in dict.fromkeys(conditions) if (c, negative_prompt) not in self._encoded]
        if new:
            rows, null = self.adapter.encode(new, negative_prompt)
            for i, c in enumerate(new):
                self._encoded[(c, negative_prompt)] = (rows[i], None if null is None else null[i])
        got = [self._encoded[(c, negative_prompt)] for c in conditions]
        rows = torch.stack([r for r, _ in got]).to(self.device)
        null = None if got[0][1] is None else torch.stack([n for _, n in got]).to(self.device)
        return Cond(rows, null)


@dataclass
class Generation:
    """One generated batch and how it was made."""

    indices: np.ndarray            # int64 sample indices
    seeds: np.ndarray              # int64 seed of each sample's random stream
    conditions: list[Condition] | None
    x_start: Tensor                # the initial batch at sigmas[0] (data-scaled frame)
    samples: Tensor                # the sampler's output at sigmas[-1] (latents for latent models)
    sigmas: Tensor                 # the grid stepped along
    images: Tensor | None = None   # uint8 NCHW, decoded once (zeros where not finite)
    finite: np.ndarray | None = None  # per sample: every value of the output is finite
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    nfe: int = 0                   # counted evaluations per sample
    network_calls: int = 0         # forward passes of the network
    timings: dict[str, float] = field(default_factory=dict)  # sample_s, model_s, decode_s
    cache: dict[Any, Any] = field(default_factory=dict)  # per-batch memo shared by metrics
    cond: Cond | None = None       # the encoded conditions the network was given

    def __len__(self) -> int:
        return len(self.indices)

    @classmethod
    def of_samples(cls, adapter: Any, indices: np.ndarray, samples: Tensor) -> "Generation":
        """Samples drawn elsewhere, decoded once by ``adapter`` (tests, benchmarks)."""
        n = len(indices)
        finite = torch.isfinite(samples.reshape(n, -1)).all(1).cpu().numpy()
        return cls(np.asarray(indices, np.int64), np.zeros(n, np.int64), None, samples, samples,
                   torch.zeros(0), images=decode_finite(adapter, samples, finite), finite=finite)

    @classmethod
    def of_images(cls, indices: np.ndarray, images: Tensor) -> "Generation":
        """Images that come from no model (an image folder scored by ``bench fid``)."""
        n = len(indices)
        return cls(np.asarray(indices, np.int64), np.zeros(n, np.int64), None, images, images,
                   torch.zeros(0), images=images, finite=np.ones(n, bool))


def generate(model: LoadedModel, sampler: SamplerSpec, indices: Sequence[int], seed: int,
             conditions: Sequence[Condition] | None = None, *, negative_prompt: str = "",
             decode: bool = False) -> Generation:
    """Draw the samples ``indices`` of a run seeded ``seed`` with ``sampler`` (see module doc)."""
    idx = np.asarray(indices, dtype=np.int64)
    adapter, device = model.adapter, model.device
    if conditions is not None and len(conditions) != len(idx):
        raise ValueError(f"generate: {len(conditions)} conditions for {len(idx)} samples")
    sigmas = model.sigmas(sampler)
    noise = NoiseSource(seed, idx, device, adapter.dtype)
    x = noise.randn(adapter.sample_shape()) * sigmas[0].to(adapter.dtype)
    cond = model.encode(conditions, negative_prompt)
    counted = CountingDenoiser(model.denoiser)
    fn = SAMPLERS.get(sampler.name)
    t0 = time.perf_counter()
    out = fn(counted, x, sigmas, cond=cond, noise=noise, **sampler.params)
    extras: dict[str, np.ndarray] = {}
    if isinstance(out, tuple):
        out, raw = out
        for k, v in raw.items():
            arr = v.detach().cpu().numpy() if isinstance(v, Tensor) else np.asarray(v)
            if arr.shape[:1] != (len(idx),):
                raise ValueError(f"sampler {sampler.name}: extra '{k}' has shape {arr.shape}; "
                                 f"extras are per sample (first dimension {len(idx)})")
            extras[k] = arr
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t1 = time.perf_counter()
    gen = Generation(idx, np.array(noise.seeds, dtype=np.int64),
                     list(conditions) if conditions is not None else None, x, out, sigmas,
                     extras=extras, nfe=counted.nfe, network_calls=counted.network_calls,
                     timings={"sample_s": t1 - t0, "model_s": counted.model_s, "decode_s": 0.0},
                     cond=cond)
    gen.finite = torch.isfinite(out.reshape(len(idx), -1)).all(1).cpu().numpy()
    if decode:
        gen.images = decode_finite(adapter, out, gen.finite)
        gen.timings["decode_s"] = time.perf_counter() - t1
    return gen


def solve_from(model: LoadedModel, name: str, params: dict[str, Any], x: Tensor, sigmas: Tensor,
               cond: Cond | None = None) -> Tensor:
    """Deterministic sampler ``name`` from a given start ``x`` at ``sigmas[0]`` along ``sigmas``,
    uncounted and without a noise source: reference solutions of a model's ODE
    (``bench.metrics.reference``)."""
    with torch.no_grad():
        out = SAMPLERS.get(name)(model.denoiser, x, sigmas.to(x.device), cond=cond, noise=None,
                                 **params)
    return out[0] if isinstance(out, tuple) else out


def decode_finite(adapter: Any, samples: Tensor, finite: np.ndarray) -> Tensor:
    """uint8 images of the finite samples; rows of non-finite samples stay zero (never decoded)."""
    keep = torch.from_numpy(finite).to(samples.device)
    if bool(keep.all()):
        return adapter.decode(samples)
    if not bool(keep.any()):
        shape = adapter.decode(torch.zeros_like(samples[:1])).shape[1:]
        return torch.zeros((len(samples), *shape), dtype=torch.uint8)
    good = adapter.decode(samples[keep])
    images = torch.zeros((len(samples), *good.shape[1:]), dtype=torch.uint8, device=good.device)
    images[keep.to(good.device)] = good
    return images


class _DryRunStop(Exception):
    """Raised by the stand-in network of ``start_sampler`` at the sampler's first use of it."""


class _StandInModel:
    """A denoiser with a schedule that stops the dry run at any other use."""

    def __init__(self, schedule: Any) -> None:
        self.schedule = schedule

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise _DryRunStop

    def __getattr__(self, name: str) -> Any:  # only for attributes other than schedule
        raise _DryRunStop


def start_sampler(adapter: Any, schedule: Any, name: str, params: dict[str, Any], sigmas: Tensor,
                  seed: int) -> None:
    """Start sampler ``name`` on a one-sample batch of ``adapter``'s shape with a stand-in network
    that stops it at its first use: whatever the sampler raises before that (a parameter value
    it refuses) is raised here, without loading or running the model (``bench plan``)."""
    x = torch.zeros((1, *adapter.sample_shape()), dtype=adapter.dtype) * sigmas[0].to(adapter.dtype)
    noise = NoiseSource(seed, [0], "cpu", adapter.dtype)
    try:
        with torch.no_grad():
            SAMPLERS.get(name)(_StandInModel(schedule), x, sigmas, cond=None, noise=noise, **params)
    except _DryRunStop:
        pass
