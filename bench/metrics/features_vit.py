"""Optional feature extractors ``clip`` (open_clip image embedding) and ``dinov2`` (DINOv2 CLS
token), behind the same :class:`~bench.metrics.features.FeatureExtractor` interface as
``inception``. Neither downloads anything: weights come from a local path.

``clip``    ``pip install 'bench[clip]'`` (open_clip_torch). ``weights`` (or ``$BENCH_CLIP_WEIGHTS``)
            is an open_clip checkpoint file for architecture ``arch`` (default ``ViT-B-32``;
            e.g. ``open_clip_pytorch_model.bin`` of ``laion/CLIP-ViT-B-32-laion2B-s34B-b79K``), or
            a folder in open_clip's hub layout (``open_clip_config.json`` + weights), whose
            config then defines the architecture. Features: ``encode_image`` (not normalised).
            Preprocessing: open_clip's own eval transform for the model (PIL resize with its
            interpolation and resize mode, centre crop, RGB, its mean/std), recorded in
            ``describe()['preprocess']``.
``dinov2``  ``transformers``. ``weights`` (or ``$BENCH_DINOV2_WEIGHTS``) is a folder in Hugging Face
            format (``config.json`` + ``model.safetensors``, e.g. a snapshot of
            ``facebook/dinov2-base``), loaded with ``Dinov2Model.from_pretrained(path,
            local_files_only=True)`` (no torch.hub). Features: the CLS token after the final layer
            norm (``pooler_output``). Preprocessing: the folder's ``preprocessor_config.json``
            (slow ``BitImageProcessor``) if present, else DINOv2's published one (shortest edge
            256 bicubic, centre crop 224, ImageNet mean/std).

Both record the sha256 of the weights file used.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from bench.errors import BenchError
from bench.metrics.features import FeatureExtractor, file_sha256
from bench.metrics.preprocess import to_rgb
from bench.registry import FEATURES

CLIP_ENV = "BENCH_CLIP_WEIGHTS"
DINOV2_ENV = "BENCH_DINOV2_WEIGHTS"
#: open_clip's checkpoint names in a hub folder, preferred first (as open_clip itself prefers).
CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
              "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth")
DINOV2_FILES = ("model.safetensors", "pytorch_model.bin")


def how_to_provide(name: str) -> str:
    if name == "clip":
        return ("Provide open_clip weights in one of these ways (nothing is downloaded): (1) the "
                "'weights' parameter (suite) or --weights (CLI): an open_clip checkpoint file for "
                "the architecture given by 'arch' (default ViT-B-32; CLI --arch), e.g. "
                "open_clip_pytorch_model.bin from laion/CLIP-ViT-B-32-laion2B-s34B-b79K, or a folder "
                "in open_clip's hub layout (open_clip_config.json + open_clip_pytorch_model.bin / "
                f"open_clip_model.safetensors); (2) set ${CLIP_ENV} to such a file or folder. On an "
                "online machine: 'huggingface-cli download laion/CLIP-ViT-B-32-laion2B-s34B-b79K "
                "--local-dir DIR', then copy DIR here. open_clip itself: pip install 'bench[clip]'.")
    return ("Provide DINOv2 weights in one of these ways (nothing is downloaded, torch.hub is not "
            "used): (1) the 'weights' parameter (suite) or --weights (CLI): a folder in Hugging Face "
            "transformers format (config.json + model.safetensors or pytorch_model.bin, and "
            "optionally preprocessor_config.json); (2) set "
            f"${DINOV2_ENV} to such a folder. On an online machine: 'huggingface-cli download "
            "facebook/dinov2-base --local-dir DIR', then copy DIR here.")


def resolve_local(name: str, given: str | os.PathLike | None, env: str) -> tuple[Path, str]:
    """(path, source) from the parameter, then the environment variable; else a BenchError."""
    for value, source in ((given, "explicit"), (os.environ.get(env) or None, "env")):
        if value:
            p = Path(value).expanduser()
            if not p.exists():
                where = "the 'weights' parameter" if source == "explicit" else f"${env}"
                raise BenchError(f"{name} weights '{p}' (from {where}) do not exist. "
                                 + how_to_provide(name))
            return p, source
    raise BenchError(f"no {name} weights given (no 'weights' parameter, ${env} unset). "
                     + how_to_provide(name))


def pick_file(folder: Path, names: tuple[str, ...], what: str) -> Path:
    for n in names:
        if (folder / n).is_file():
            return folder / n
    raise BenchError(f"{what} folder '{folder}' holds none of {', '.join(names)}. " + how_to_provide(what))


def import_optional(module: str, extra: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise BenchError(f"the '{extra}' feature extractor needs the Python package '{module}': "
                         f"pip install 'bench[{extra}]'.") from None


@contextlib.contextmanager
def quiet_logging() -> Iterator[None]:
    """Silence library log warnings and transformers' progress bars while loading."""
    logging.disable(logging.WARNING)
    bars = None
    try:
        from transformers.utils import logging as tlog

        bars = tlog.is_progress_bar_enabled()
        tlog.disable_progress_bar()
    except ImportError:
        pass
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
        if bars:
            tlog.enable_progress_bar()


@lru_cache(maxsize=None)
def code_version(dist: str) -> str:
    """This file's hash and the library version (part of cache keys)."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(importlib.metadata.version(dist).encode())
    return h.hexdigest()[:16]


class PILFeatureExtractor(FeatureExtractor):
    """Common path: uint8 NCHW -> PIL RGB images -> the model's own transform -> network."""

    resize = ""
    dist = ""
    device: torch.device
    batch_size: int
    weights_path: Path
    weights_source: str
    weights_sha256: str

    def _check_resize(self, resize: str | None) -> None:
        if resize not in (None, self.resize):
            raise BenchError(f"the {self.name} extractor uses its model's own preprocessing "
                             f"(resize {self.resize!r}, see describe()['preprocess']); got resize "
                             f"{resize!r}, which is for the inception extractor. Leave resize unset.")

    def transform_images(self, images: Tensor) -> Tensor:
        from PIL import Image

        x = to_rgb(images).permute(0, 2, 3, 1).cpu().numpy()
        return torch.stack([self.transform(Image.fromarray(np.ascontiguousarray(a))) for a in x])

    transform: Callable[[Any], Tensor]
    preprocess_cfg: dict[str, Any]

    def embed(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    @torch.inference_mode()
    def __call__(self, images: Tensor, logits: bool = False) -> dict[str, Tensor]:
        if logits:
            raise BenchError(self.logits_unavailable())
        out = [torch.empty(0, self.dim)]
        for b0 in range(0, len(images), self.batch_size):
            x = self.transform_images(images[b0:b0 + self.batch_size]).to(self.device)
            out.append(self.embed(x).float().cpu())
        return {"pool": torch.cat(out)}

    def logits_unavailable(self) -> str:
        return (f"the Inception Score needs the Inception network's logits; the {self.name} "
                f"extractor has none (use extractor inception with torch-fidelity's weights).")

    def describe(self) -> dict[str, Any]:
        return {"extractor": self.name, "weights_sha256": self.weights_sha256,
                "weights_source": self.weights_source, "weights_file": self.weights_path.name,
                "weights_format": self.weights_path.suffix.lstrip("."), "resize": self.resize,
                "preprocess": self.preprocess_cfg, "dim": self.dim, "has_logits": False,
                "code": code_version(self.dist)}

    def key(self) -> dict[str, Any]:
        return {**super().key(), "preprocess": self.preprocess_cfg}


@FEATURES.register("clip", "open_clip image embedding (default ViT-B-32); local weights only: "
                   "path/$BENCH_CLIP_WEIGHTS (checkpoint file for 'arch', or an open_clip hub folder)")
class CLIPExtractor(PILFeatureExtractor):
    name = "clip"
    resize = "open_clip"
    dist = "open_clip_torch"

    def __init__(self, *, weights: str | None = None, arch: str = "ViT-B-32",
                 resize: str | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 64) -> None:
        self._check_resize(resize)
        path, self.weights_source = resolve_local("clip", weights, CLIP_ENV)
        open_clip = import_optional("open_clip", "clip")
        from open_clip.transform import PreprocessCfg, image_transform_v2

        self.device, self.batch_size = torch.device(device), int(batch_size)
        if path.is_dir():
            self.weights_path = pick_file(path, CLIP_FILES, "clip")
            cfg = json.loads((path / "open_clip_config.json").read_text()) \
                if (path / "open_clip_config.json").is_file() else None
            if not cfg or "model_cfg" not in cfg:
                raise BenchError(f"clip folder '{path}' has no open_clip_config.json with "
                                 f"'model_cfg'. " + how_to_provide("clip"))
            self.arch = str(cfg.get("model_cfg", {}).get("arch", path.name))
            with quiet_logging():  # open_clip warns "initialized randomly" before we load
                model = open_clip.create_model(f"local-dir:{path}", load_weights=False)
        else:
            self.weights_path, self.arch = path, arch
            if open_clip.get_model_config(arch) is None:
                raise BenchError(f"unknown open_clip architecture {arch!r}; use one of "
                                 f"open_clip.list_models() (e.g. ViT-B-32, ViT-L-14), or give an "
                                 f"open_clip hub folder whose open_clip_config.json defines it.")
            with quiet_logging():
                model = open_clip.create_model(arch, pretrained=None)
        try:
            open_clip.load_checkpoint(model, str(self.weights_path), strict=True)
        except Exception as exc:
            raise BenchError(f"cannot load open_clip weights '{self.weights_path}' into "
                             f"architecture {self.arch!r}: {type(exc).__name__}: "
                             f"{str(exc)[:300]}. " + how_to_provide("clip")) from None
        self.weights_sha256 = file_sha256(self.weights_path)
        pp = PreprocessCfg(**model.visual.preprocess_cfg)
        self.transform = image_transform_v2(pp, is_train=False)
        self.preprocess_cfg = {"size": list(pp.input_size[1:]), "interpolation": pp.interpolation,
                               "resize_mode": pp.resize_mode, "mean": list(pp.mean),
                               "std": list(pp.std), "arch": self.arch,
                               "transform": "open_clip image_transform_v2(is_train=False) on PIL RGB"}
        self.model = model.eval().requires_grad_(False).to(self.device)
        with torch.inference_mode():
            probe = torch.zeros((1, *pp.input_size), device=self.device)
            self.dim = int(self.model.encode_image(probe).shape[-1])

    def embed(self, x: Tensor) -> Tensor:
        return self.model.encode_image(x)


DINOV2_PREPROCESS = {"size": {"shortest_edge": 256}, "crop_size": {"height": 224, "width": 224},
                     "do_center_crop": True, "resample": 3, "image_mean": [0.485, 0.456, 0.406],
                     "image_std": [0.229, 0.224, 0.225], "do_convert_rgb": True}


@FEATURES.register("dinov2", "DINOv2 CLS token (transformers Dinov2Model); local folder only: "
                   "path/$BENCH_DINOV2_WEIGHTS (Hugging Face format)")
class DINOv2Extractor(PILFeatureExtractor):
    name = "dinov2"
    resize = "dinov2"
    dist = "transformers"

    def __init__(self, *, weights: str | None = None, resize: str | None = None,
                 device: str | torch.device = "cpu", batch_size: int = 64) -> None:
        self._check_resize(resize)
        path, self.weights_source = resolve_local("dinov2", weights, DINOV2_ENV)
        if not path.is_dir():
            raise BenchError(f"dinov2 weights '{path}' must be a folder in Hugging Face format, not "
                             f"a file. " + how_to_provide("dinov2"))
        self.weights_path = pick_file(path, DINOV2_FILES, "dinov2")
        import_optional("transformers", "dinov2")
        from transformers import BitImageProcessor, Dinov2Model

        self.device, self.batch_size = torch.device(device), int(batch_size)
        try:
            with quiet_logging():
                model = Dinov2Model.from_pretrained(str(path), local_files_only=True)
        except Exception as exc:
            raise BenchError(f"cannot load DINOv2 from '{path}': {type(exc).__name__}: "
                             f"{str(exc)[:300]}. " + how_to_provide("dinov2")) from None
        pp_file = path / "preprocessor_config.json"
        cfg = DINOV2_PREPROCESS
        if pp_file.is_file():
            own = json.loads(pp_file.read_text())
            cfg = {k: own[k] for k in DINOV2_PREPROCESS if k in own}
        processor = BitImageProcessor(**cfg)
        self.transform = lambda img: processor(img, return_tensors="pt")["pixel_values"][0]
        self.preprocess_cfg = {**cfg, "source": "preprocessor_config.json" if pp_file.is_file()
                               else "DINOv2 defaults", "transform": "transformers BitImageProcessor (PIL)"}
        self.weights_sha256 = file_sha256(self.weights_path)
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.dim = int(model.config.hidden_size)

    def embed(self, x: Tensor) -> Tensor:
        return self.model(pixel_values=x).pooler_output
