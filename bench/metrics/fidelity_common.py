"""Shared machinery of the fidelity metrics (FID, KID, IS, precision/recall, density/coverage).

Generated batches go straight to features on the model's device; only features (or their
float64 sums) are kept. Non-finite samples are counted and dropped before decoding, never fed
to the extractor. Metric parameters come from ``MetricContext.params`` (see README, "Fidelity
metrics"; the ``fidelity`` eval passes its shared ones to every metric): ``ref`` (refstats id, data set or stats file), ``extractor`` (default inception),
``weights``, ``arch`` (clip), ``resize`` (inception: tf1_bilinear (default) | clean |
legacy_pytorch; clip/dinov2 use their model's own preprocessing), ``refstats_dir``,
``ref_limit``, ``batch_size``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bench.errors import BenchError
from bench.metrics.base import Metric, MetricContext, merge_per_sample
from bench.models.base import ModelAdapter

EXTRACTOR_PARAMS = ("extractor", "weights", "arch", "resize", "batch_size")
#: ``resize``/``arch`` None: the extractor's own default (inception: tf1_bilinear)
COMMON_PARAMS = {"ref": None, "extractor": "inception", "weights": None, "arch": None, "resize": None,
                 "refstats_dir": None, "ref_limit": None, "batch_size": 64}

_EXTRACTORS: dict[str, Any] = {}


def get_extractor(params: dict[str, Any], device: torch.device | str) -> Any:
    """One extractor instance per (config, device) in this process."""
    from bench.metrics.features import make_extractor

    cfg = {k: params.get(k, COMMON_PARAMS[k]) for k in EXTRACTOR_PARAMS}
    key = json.dumps([cfg, str(device)], sort_keys=True, default=str)
    if key not in _EXTRACTORS:
        kw = {k: v for k, v in cfg.items() if k != "extractor" and v is not None}
        _EXTRACTORS[key] = make_extractor(cfg["extractor"], device=device, **kw)
    return _EXTRACTORS[key]


def batch_features(gen: Any, extractor: Any, logits: bool = False
                   ) -> tuple[np.ndarray, dict[str, Tensor], int]:
    """(indices kept, features, count of non-finite samples dropped) of a Generation's decoded
    images, memoised on the generation so several metrics on one batch run the extractor once."""
    key = ("features", json.dumps(extractor.key(), sort_keys=True), logits)
    if key not in gen.cache:
        have = gen.cache.get(key[:2] + (True,))
        if have is not None:
            gen.cache[key] = have
        else:
            if gen.images is None:
                raise RuntimeError("fidelity metrics need decoded images (generate(decode=True))")
            mask = np.ones(len(gen), bool) if gen.finite is None else np.asarray(gen.finite)
            n_bad = int((~mask).sum())
            idx = np.asarray(gen.indices, dtype=np.int64)[mask]
            images = gen.images[torch.from_numpy(mask).to(gen.images.device)] if mask.any() else \
                torch.zeros((0, 3, 8, 8), dtype=torch.uint8)
            gen.cache[key] = (idx, extractor(images, logits=logits), n_bad)
    return gen.cache[key]


def check_decodes(adapter: ModelAdapter, metric: str) -> None:
    if not adapter.produces_images:
        raise BenchError(f"metric '{metric}' measures images, and model {type(adapter).__name__} "
                         f"does not produce images (no decode()); use it with an image model, or "
                         f"an oracle metric such as oracle_rmse.")


class FidelityMetric(Metric):
    """Base: resolves extractor + reference from ``ctx.params``; config travels in the state."""

    name = ""
    needs_ref = True
    needs_ref_features = False
    needs_images = True
    logits = False
    extra_params: dict[str, Any] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls.param_defaults = {**{k: v for k, v in COMMON_PARAMS.items()
                                 if cls.needs_ref or k not in ("ref", "ref_limit")}, **cls.extra_params}

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """Names, the extractor and the reference, checked before any work."""
        from bench.errors import FieldError, close_matches
        from bench.registry import DATASETS, FEATURES

        super().check_params(params)
        ext = params.get("extractor", "inception")
        if ext not in FEATURES:
            raise FieldError("extractor", f"unknown feature extractor {ext!r}."
                             f"{close_matches(str(ext), FEATURES.names())}",
                             f"use one of: {', '.join(FEATURES.names())} (see 'bench list features').")
        if cls.needs_ref:
            ref = params.get("ref")
            if not ref:
                raise FieldError("ref", f"metric '{cls.name}' needs a reference.",
                                 "give params {ref: fmnist-test} (a data set, a refstats id from "
                                 "'bench refstats list', or a stats .npz).")
            from bench.metrics import refstats

            ref = str(ref)
            known = ref in DATASETS or Path(ref).exists() or refstats.ref_path(
                ref, params.get("refstats_dir")).is_file()
            if not known:
                raise FieldError("ref", f"{ref!r} is not a data set, not a file or folder, and not a "
                                 f"refstats id (reference statistics).{close_matches(ref, DATASETS.names())}",
                                 f"use a data set ({', '.join(DATASETS.names())}), a folder of "
                                 f"images, an .npz/.npy file, or an id from 'bench refstats list'.")

    def __init__(self, ctx: MetricContext) -> None:
        super().__init__(ctx)
        params = dict(ctx.params or {})
        try:
            self.check_params(params)
        except BenchError as exc:
            raise BenchError(f"metric '{self.name}': {exc}") from None
        self.params = {**COMMON_PARAMS, **self.extra_params, **params}
        if ctx.adapter is not None:  # None: images that come from no model (bench fid)
            check_decodes(ctx.adapter, self.name)
        self.extractor = get_extractor(self.params, ctx.device)
        if self.logits and not getattr(self.extractor, "has_logits", False):
            raise BenchError(self.extractor.logits_unavailable())
        self.ref_id = ""
        if self.needs_ref:
            if not self.params["ref"]:
                raise BenchError(
                    f"metric '{self.name}' needs a reference: give params "
                    f"{{ref: fmnist-test}} (a data set, a refstats id from 'bench refstats list', or "
                    f"a stats .npz), e.g. evals: [{{name: fidelity, params: {{ref: fmnist-test, "
                    f"metrics: [{self.name}]}}}}].")
            from bench.metrics import refstats

            ref = refstats.resolve(str(self.params["ref"]), self.extractor,
                                   root=self.params["refstats_dir"], limit=self.params["ref_limit"],
                                   keep_features=True)
            problems = refstats.check_compatible(ref, self.extractor.describe())
            if problems:
                raise BenchError(f"reference '{ref.id}' was computed differently from the generated "
                                 f"features ({'; '.join(problems)}); build a reference with the same "
                                 f"extractor, weights and resize.")
            if self.needs_ref_features:
                ref.require_features(self.name)
            self.ref_id = ref.id
        self.reset()

    def reset(self) -> None:
        self.n_nonfinite = 0

    def config(self) -> dict[str, Any]:
        root = self.params["refstats_dir"]
        return {"metric": self.name, "ref": self.ref_id,
                "refstats_dir": str(root) if root else None,
                "extractor": self.extractor.describe(),
                "params": {k: self.params[k] for k in self.extra_params}}

    def features(self, gen: Any) -> tuple[np.ndarray, dict[str, Tensor]]:
        idx, feats, n_bad = batch_features(gen, self.extractor, self.logits)
        self.n_nonfinite += n_bad
        return idx, feats

    def update(self, gen: Any) -> None:
        self.add_features(*self.features(gen))

    def add_features(self, idx: np.ndarray, feats: dict[str, Tensor]) -> None:
        """Fold the features of the samples ``idx`` into the state."""
        raise NotImplementedError

    @staticmethod
    def describe(state: dict[str, np.ndarray]) -> dict[str, Any]:
        return describe_state(state)

    def common_state(self) -> dict[str, np.ndarray]:
        return {"config": np.array(json.dumps(self.config(), sort_keys=True)),
                "n_nonfinite": np.array([self.n_nonfinite], dtype=np.int64)}


def split_common(states: list[dict[str, np.ndarray]]) -> tuple[dict[str, Any], int, list[dict]]:
    """(config, total non-finite count, states without the common entries); configs must agree."""
    def essential(c: dict[str, Any]) -> str:  # where the same weights file came from may differ
        ext = {k: v for k, v in c.get("extractor", {}).items() if k not in ("weights_source", "weights_file")}
        return json.dumps({**c, "extractor": ext}, sort_keys=True)

    configs = [json.loads(str(s["config"])) for s in states]
    if len({essential(c) for c in configs}) != 1:
        raise ValueError(f"merging shards computed with different fidelity configs: "
                         f"{sorted({essential(c) for c in configs})}")
    n_bad = int(sum(int(np.sum(s["n_nonfinite"])) for s in states))
    rest = [{k: v for k, v in s.items() if k not in ("config", "n_nonfinite")} for s in states]
    return configs[0], n_bad, rest


def join_common(config: dict[str, Any], n_bad: int, state: dict[str, np.ndarray]) -> dict:
    return {**state, "config": np.array(json.dumps(config, sort_keys=True)),
            "n_nonfinite": np.array([n_bad], dtype=np.int64)}


def merge_features(states: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    config, n_bad, rest = split_common(states)
    return join_common(config, n_bad, merge_per_sample(rest))


def read_config(state: dict[str, np.ndarray]) -> tuple[dict[str, Any], int]:
    return json.loads(str(state["config"])), int(np.sum(state["n_nonfinite"]))


def load_ref(config: dict[str, Any]) -> Any:
    from bench.metrics import refstats

    return refstats.load(config["ref"], config.get("refstats_dir"))


def nonfinite_values(name: str, n_bad: int) -> dict[str, tuple[float, float, float]]:
    if n_bad:
        warnings.warn(f"{name}: {n_bad} generated samples had NaN/Inf values; they were counted "
                      f"and left out (not fed to the feature extractor).", stacklevel=2)
        return {f"{name}_nonfinite": (float(n_bad), float("nan"), float("nan"))}
    return {}


def describe_state(state: dict[str, np.ndarray]) -> dict[str, Any]:
    """Result-row columns naming what a fidelity number was computed against."""
    config, n_bad = read_config(state)
    ext = config.get("extractor", {})
    return {"feature_extractor": ext.get("extractor", ""), "weights_sha256": ext.get("weights_sha256", ""),
            "weights_source": ext.get("weights_source", ""), "resize": ext.get("resize", ""),
            "ref_id": config.get("ref", ""), "n_nonfinite": n_bad}


def list_params(cls: type) -> None:
    """Show a fidelity metric's parameters in ``bench list metrics``."""
    from bench.registry import METRICS

    METRICS.entry(cls.name).meta["params"] = dict(cls.param_defaults)  # type: ignore[attr-defined]


class PoolFeatureMetric(FidelityMetric):
    """State = per-sample pool features (for k-NN and kernel metrics: KID, PR, DC)."""

    needs_ref_features = True

    def reset(self) -> None:
        super().reset()
        self.index: list[np.ndarray] = []
        self.feats: list[np.ndarray] = []

    def add_features(self, idx: np.ndarray, feats: dict[str, Any]) -> None:
        self.index.append(idx)
        self.feats.append(feats["pool"].numpy())

    def state(self) -> dict[str, np.ndarray]:
        return {"index": np.concatenate(self.index) if self.index else np.zeros(0, np.int64),
                "features": np.concatenate(self.feats) if self.feats
                else np.zeros((0, self.extractor.dim), np.float32), **self.common_state()}

    @staticmethod
    def merge(states: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        return merge_features(states)
