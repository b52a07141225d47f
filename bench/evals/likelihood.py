"""Eval ``likelihood``: the negative log-likelihood of held-out data in bits per dimension, by
the two classic routes of ``bench.likelihood``.

* ``route: bound``: the DDPM variational bound (Ho et al. 2020) over a K-step sub-sequence for
  each K of ``steps``, with the reverse variances ``beta``, ``beta_tilde`` and Analytic-DPM's
  optimum (Bao et al. 2022) computed from the same draws and network passes, so the three are
  paired per image. It measures the likelihood of DDPM's reverse chain, so its cells are the
  suite's ``ddpm`` sampler entries (its ``variance`` applies to its own sampling; the bound
  rows carry every variance); NFE = K.
* ``route: ode``: the probability-flow ODE likelihood (Song et al. 2021) by RK4 with
  ``steps`` steps uniform in log s, the exact divergence for d <= 64 or Hutchinson's
  estimator (``probes`` Rademacher vectors) otherwise. It is the likelihood of the model's
  PF-ODE, which the ``ddim`` sampler (eta 0) discretises: its cells are the suite's ``ddim``
  entries; NFE = 4 x steps (each a forward and a backward pass).

Data: ``data`` (default: the test split of the model's training set, ``fmnist-train`` ->
``fmnist-test``; the gmm oracle's own samples, seeded, for the oracle). A cell's ``samples``
are the data's first ``samples`` images (``images:`` overrides the suite's count for this eval).
8-bit images are mapped to [-1, 1] on 256 levels: the bound scores them with the discretised
decoder (Ho et al. eq. 13), the ODE after uniform dequantisation with the 7-bit offset of
``bench.likelihood.bpd_8bit``, so both are bits per 8-bit pixel value. Class-conditional models
are scored with each image's own label, ``-log p(x | y)``. Every random draw (the bound's
``x_tau``, the dequantisation, the probes) comes from the image's own stream (seed, index):
results do not depend on the batch size or the shard split, and cells of a calibrated and a
plain model see the same draws (their differences are paired).

Analytic-DPM's ``Gamma`` is estimated per cell at the K levels from ``gamma_samples`` images
of the model's training data (seed ``gamma_seed``), with the cell's model (calibrated when the
entry is): uncounted, like the samplers' precomputations. Its Monte Carlo error matters where
``1 - G`` is small (high noise): on a 3-d mixture at K = 5, 100 samples made the analytic bound
0.40 bits/dim worse than beta's, 1000 and 10000 samples 0.07 better (the default is 1000, as
the ``analytic_dpm`` sampler's).

Rows: ``nll_bpd`` (mean [95% t-CI] over images; slice ``variance=V`` for the bound, ``all``
for the ODE), ``nll_bpd_diff`` (bound: slice ``variance=A,minus=B``, the paired difference of
two variances). The per-sample table holds every image's terms.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.conditions import Condition
from bench.errors import BenchError, FieldError
from bench.evals.base import Eval, Models, ShardResult
from bench.evals.sampled import cost_columns
from bench.metrics.base import MEAN_CI, Output, mean_ci, merge_per_sample
from bench.noise import NoiseSource
from bench.registry import EVALS

if TYPE_CHECKING:
    import pandas as pd

ROUTES = {"bound": "ddpm", "ode": "ddim"}  # route -> the sampler whose cells it measures
DEFAULT_STEPS = {"bound": (10, 25, 50, 100, 1000), "ode": (100,)}
VARIANCES = ("beta", "beta_tilde", "analytic")
#: the data value that means the gmm oracle's own samples
SAMPLE_DATA = "sample_data"
OUTPUTS = {
    "nll_bpd": Output(False, MEAN_CI.replace("samples", "images"),
                      "negative log-likelihood of held-out data, bits per dimension (8-bit "
                      "images: per 8-bit value; the bound is an upper bound)"),
    "nll_bpd_diff": Output(None, MEAN_CI.replace("samples", "images (paired)"),
                           "bound of one reverse variance minus another's, same draws"),
}


def _whole(v: Any, lo: int) -> bool:
    return not isinstance(v, bool) and isinstance(v, int) and v >= lo


def default_data(adapter: Any) -> str:
    """The held-out data of a model: the oracle's own samples, or the test split of its
    training set (``fmnist-train`` -> ``fmnist-test``)."""
    from bench.data import DATASETS

    if hasattr(adapter, "sample_data"):
        return SAMPLE_DATA
    train = getattr(adapter, "training_data", None)
    test = train[: -len("-train")] + "-test" if isinstance(train, str) and train.endswith(
        "-train") else None
    if test is None or test not in DATASETS:
        raise BenchError(f"likelihood: model {getattr(adapter, 'name', adapter)!r} names no "
                         f"held-out data set (its training data: {train!r}); give the eval "
                         f"'data: NAME' (bench list datasets), an image folder or a .npz file.")
    return test


@EVALS.register("likelihood", "Negative log-likelihood of held-out data in bits/dim: the DDPM "
                "bound at K steps with beta / beta~ / analytic variances (ddpm cells) or the "
                "PF-ODE likelihood (ddim cells) (params: route, steps, variances, decoder, "
                "probes, data, images, gamma_samples, gamma_seed)")
class Likelihood(Eval):
    shape = "sharded"
    report_sections = "bench.report.likelihood:likelihood_sections"
    outputs = OUTPUTS

    def __init__(self, *, route: str = "bound", steps: Any = None, variances: Any = VARIANCES,
                 decoder: str = "discretized", probes: int = 1, data: str | None = None,
                 images: int | None = None, gamma_samples: int = 1000, gamma_seed: int = 0,
                 divergence: str = "auto") -> None:
        from bench.likelihood import DECODERS, EXACT_MAX_DIM, METHODS

        if route not in ROUTES:
            raise FieldError("route", f"= {route!r}.", f"use one of: {', '.join(ROUTES)}.")
        steps = list(DEFAULT_STEPS[route]) if steps is None else steps
        steps = [steps] if _whole(steps, 1) else steps
        lo = 2 if route == "bound" else 1
        if not isinstance(steps, (list, tuple)) or not steps or not all(_whole(k, lo) for k in steps) \
                or len(set(steps)) != len(steps):
            what = "numbers of steps K in [2, N] of the bound's sub-sequence" if route == "bound" \
                else "numbers of RK4 steps"
            raise FieldError("steps", f"= {steps!r}.", f"give a list of distinct {what}, e.g. "
                             f"'steps: {list(DEFAULT_STEPS[route])}'.")
        variances = [variances] if isinstance(variances, str) else variances
        if not isinstance(variances, (list, tuple)) or not variances or \
                any(v not in VARIANCES for v in variances):
            raise FieldError("variances", f"= {variances!r}.", f"give a list of: "
                             f"{', '.join(VARIANCES)}.")
        if decoder not in DECODERS:
            raise FieldError("decoder", f"= {decoder!r}.", f"use one of: {', '.join(DECODERS)} "
                             f"(discretized: 8-bit images; gaussian: continuous data).")
        if divergence not in ("auto", *METHODS):
            raise FieldError("divergence", f"= {divergence!r}.", f"use auto (exact for d <= "
                             f"{EXACT_MAX_DIM}, else hutchinson) or one of: {', '.join(METHODS)}.")
        for name, v, least in (("probes", probes, 1), ("gamma_samples", gamma_samples, 2),
                               ("gamma_seed", gamma_seed, 0)):
            if not _whole(v, least):
                raise FieldError(name, f"= {v!r}.", f"use a whole number >= {least}.")
        if images is not None and not _whole(images, 1):
            raise FieldError("images", f"= {images!r}.", "use a number of data images >= 1, or "
                             "leave it out (the suite's samples).")
        if data is not None and (not isinstance(data, str) or not data):
            raise FieldError("data", f"= {data!r}.", "give a data set name (bench list datasets), "
                             "an image folder, a .npz/.npy file, or 'sample_data' (the oracle).")
        self.route, self.steps = route, [int(k) for k in steps]
        self.variances, self.decoder, self.probes = list(variances), decoder, probes
        self.data, self.images, self.divergence = data, images, divergence
        self.gamma_samples, self.gamma_seed = gamma_samples, gamma_seed
        params: dict[str, Any] = {"route": route, "steps": self.steps}
        if route == "bound":
            params.update(variances=self.variances, decoder=decoder)
            if "analytic" in self.variances:
                params.update(gamma_samples=gamma_samples, gamma_seed=gamma_seed)
        else:
            params.update(probes=probes, divergence=divergence)
        params.update({k: v for k, v in (("data", data), ("images", images)) if v is not None})
        super().__init__(**params)

    # ------------------------------------------------------------------ planning
    def points(self, sampler: dict[str, Any]) -> list[tuple[int, int]]:
        if sampler["name"] != ROUTES[self.route]:
            return []
        per = 1 if self.route == "bound" else 4
        return [(per * k, k) for k in self.steps]

    def no_points(self) -> str:
        return (f"route {self.route} measures the {ROUTES[self.route]} sampler's process, and "
                f"the suite has no '{ROUTES[self.route]}' sampler entry")

    def sample_count(self, n: int) -> int:
        return self.images or n

    # ------------------------------------------------------------------ one shard
    def _data(self, loaded: Any, seed: int, start: int, stop: int, total: int
              ) -> tuple[torch.Tensor, np.ndarray | None, bool, str]:
        """(x0 in the model's space for data items [start, stop) of the cell's ``total``,
        labels or None, whether the data are 8-bit images, the data's name)."""
        from bench.data import open_dataset

        adapter = loaded.adapter
        if getattr(adapter, "latent", False) or getattr(adapter, "conditioning", None) == "prompts":
            raise BenchError(f"likelihood: model {adapter.describe().get('type')} is a latent or "
                             f"text-conditional model; the likelihood eval scores pixel-space "
                             f"unconditional or class-conditional models.")
        name = self.data or default_data(adapter)
        if name == SAMPLE_DATA:
            if not hasattr(adapter, "sample_data"):
                raise BenchError("likelihood: data 'sample_data' needs a model that samples its "
                                 "own data (the gmm oracle).")
            from bench.calibration import derived_seed

            gen = torch.Generator().manual_seed(derived_seed(seed, "likelihood-data"))
            x = adapter.sample_data(total, gen)[start:stop].to(torch.float64)  # one draw per cell
            return x.to(loaded.device, adapter.dtype), None, False, name
        ds = open_dataset(name)
        if stop > len(ds):
            raise BenchError(f"likelihood: the cell scores {stop} images, but data {name!r} has "
                             f"{len(ds)}; lower the suite's samples or the eval's images.")
        images = torch.from_numpy(np.array(ds.images(start, stop), copy=True))
        labels = getattr(ds, "labels", None)
        labels = None if labels is None else np.asarray(labels[start:stop])
        return images.to(loaded.device), labels, True, name

    def _cond(self, loaded: Any, labels: np.ndarray | None) -> Any:
        if getattr(loaded.adapter, "conditioning", None) != "classes":
            return None
        if labels is None:
            raise BenchError("likelihood: the model is class-conditional but the data have no "
                             "labels; give labelled data (e.g. fmnist-test).")
        return loaded.encode([Condition(id=f"class={int(y)}", label=int(y)) for y in labels])

    def _gamma(self, loaded: Any, seed: int) -> Any:
        """``gamma(levels)`` for the analytic variance, from the model's training data."""
        from bench.calibration import derived_seed, load_data, subset_labels
        from bench.likelihood import gamma_from_data

        adapter = loaded.adapter
        if hasattr(adapter, "sample_data"):
            gen = torch.Generator().manual_seed(derived_seed(self.gamma_seed, "gamma-data"))
            x0, labels = adapter.sample_data(self.gamma_samples, gen).to(loaded.device), None
        else:
            train = getattr(adapter, "training_data", None)
            if not isinstance(train, str):
                raise BenchError("likelihood: the analytic variance estimates Gamma from the "
                                 "model's training data, and this model names none; drop "
                                 "'analytic' from variances.")
            x0, _ = load_data(adapter, {"data": train, "samples": self.gamma_samples,
                                        "seed": self.gamma_seed}, loaded.device)
            labels = subset_labels(train, self.gamma_samples, self.gamma_seed)
        cond = self._cond(loaded, labels)

        def gamma(levels: torch.Tensor) -> torch.Tensor:
            return gamma_from_data(loaded.denoiser, levels, x0.to(adapter.dtype), cond=cond,
                                   seed=derived_seed(self.gamma_seed, "gamma-noise"))
        return gamma

    def run_shard(self, shard: Any, models: Models, cache_dir: Any = None,
                  progress: Any = None) -> ShardResult:
        from bench.likelihood import (EXACT_MAX_DIM, bpd_8bit, dequantize, ode_nll,
                                      vlb_variances)

        t_start = time.perf_counter()
        loaded = models.get(shard.model, shard.device)
        schedule = loaded.denoiser.schedule
        k = shard.steps
        gamma = self._gamma(loaded, shard.seed) if (self.route == "bound" and
                                                   "analytic" in self.variances) else None
        gamma_cache: dict[str, torch.Tensor] = {}

        def cached_gamma(levels: torch.Tensor) -> torch.Tensor:  # once per shard
            if "g" not in gamma_cache:
                gamma_cache["g"] = gamma(levels)  # type: ignore[misc]
            return gamma_cache["g"]

        saved = progress.resume() if progress is not None else None
        fresh = {"nfe_counted": shard.nfe, "network_calls": 0, "sample_s": 0.0, "model_s": 0.0,
                 "metric_s": 0.0, "load_s": 0.0, "wall_s": 0.0, "attempts": 0}
        start, acc, meta = (saved[0], saved[1]["likelihood"], saved[2]) if saved else (
            shard.start, None, fresh)
        meta = {**meta, "load_s": meta["load_s"] + time.perf_counter() - t_start,
                "attempts": meta["attempts"] + 1}
        wall_before = meta["wall_s"]
        for b0 in tqdm(range(start, shard.stop, shard.batch_size), desc=shard.label(),
                       leave=False, disable=None):
            b1 = min(b0 + shard.batch_size, shard.stop)
            t1 = time.perf_counter()
            idx = np.arange(b0, b1, dtype=np.int64)
            noise = NoiseSource(shard.seed, idx, loaded.device, loaded.adapter.dtype)
            data, labels, eight_bit, _ = self._data(loaded, shard.seed, b0, b1, shard.samples)
            cond = self._cond(loaded, labels)
            part: dict[str, np.ndarray] = {"index": idx}
            if labels is not None:
                part["label"] = labels.astype(np.int64)
            if self.route == "bound":
                x0 = loaded.adapter.encode_images(data) if eight_bit else data
                decoder = self.decoder if eight_bit else "gaussian"
                with torch.no_grad():
                    out = vlb_variances(loaded.denoiser, schedule, x0, steps=k,
                                        variances=self.variances, noise=noise, cond=cond,
                                        gamma=cached_gamma if gamma else None, decoder=decoder)
                for v, terms in out.items():
                    for name in ("bpd", "prior", "kl", "decoder"):
                        t = terms[name] if name == "bpd" else terms[name] / (
                            x0[0].numel() * math.log(2))
                        part[f"{name}_{v}"] = t.cpu().numpy().astype(np.float64)
            else:
                x = dequantize(data, noise) if eight_bit else data
                d = x[0].numel()
                method = self.divergence if self.divergence != "auto" else (
                    "exact" if d <= EXACT_MAX_DIM else "hutchinson")
                out = ode_nll(loaded.denoiser, schedule, x, method=method, probes=self.probes,
                              steps=k, noise=noise, cond=cond)
                nll = out["nll"]
                bpd = bpd_8bit(nll, d) if eight_bit else nll / (d * math.log(2))
                part["bpd"] = bpd.cpu().numpy().astype(np.float64)
                part["delta_logp"] = out["delta_logp"].cpu().numpy().astype(np.float64)
                part["prior_logp"] = out["prior_logp"].cpu().numpy().astype(np.float64)
            acc = part if acc is None else merge_per_sample([acc, part])
            now = time.perf_counter()
            meta = {**meta, "sample_s": meta["sample_s"] + now - t1,
                    "model_s": meta["model_s"] + now - t1,
                    "network_calls": shard.nfe * (2 if self.route == "ode" else 1),
                    "wall_s": wall_before + now - t_start}
            if progress is not None:
                progress.update(b1, {"likelihood": acc}, meta)
        if acc is None:
            raise RuntimeError(f"shard {shard.label()} has no images")
        s_lo, s_hi = float(schedule.s_min), float(schedule.s_max)
        meta.update({"n_samples": shard.stop - shard.start, "device": models.device_name(loaded),
                     "sigma_start": s_hi, "sigma_end": s_lo})
        return {f"likelihood/{key}": v for key, v in acc.items()}, meta

    # ------------------------------------------------------------------ rows
    def finalize(self, shards: list[Any], results: list[ShardResult]
                 ) -> tuple[list[dict[str, Any]], pd.DataFrame]:
        import pandas as pd

        metas = [m for _, m in results]
        common = cost_columns(metas)
        states = [{k[len("likelihood/"):]: v for k, v in s.items()} for s, _ in results]
        table = pd.DataFrame(merge_per_sample(states))
        rows = []

        def row(metric: str, values: np.ndarray, slice_: str) -> None:
            value, lo, hi = mean_ci(values)
            rows.append({**common, "metric": metric, "value": value, "ci_low": lo,
                         "ci_high": hi, "slice": slice_, "step": 0, "n_nonfinite":
                         int((~np.isfinite(values)).sum())})

        if self.route == "bound":
            for v in self.variances:
                row("nll_bpd", table[f"bpd_{v}"].to_numpy(), f"variance={v}")
            for i, a in enumerate(self.variances):
                for b in self.variances[i + 1:]:
                    row("nll_bpd_diff", (table[f"bpd_{a}"] - table[f"bpd_{b}"]).to_numpy(),
                        f"variance={a},minus={b}")
        else:
            row("nll_bpd", table["bpd"].to_numpy(), "all")
        return rows, table

