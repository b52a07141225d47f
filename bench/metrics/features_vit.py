"""Optional feature extractors ``clip`` (CLIP image embedding) and ``dinov2`` (DINOv2 CLS
token), behind the same :class:`~bench.metrics.features.FeatureExtractor` interface as
``inception``. Neither downloads anything: weights come from a local path.

``clip``    ``weights`` (or ``$BENCH_CLIP_WEIGHTS``) is loaded by :func:`bench.clip.load_clip`: an
            open_clip checkpoint file for architecture ``arch`` (default ``ViT-B-32``; e.g.
            ``open_clip_pytorch_model.bin`` of ``laion/CLIP-ViT-B-32-laion2B-s34B-b79K``), a folder
            in open_clip's hub layout (``open_clip_config.json`` + weights), whose config then
            defines the architecture (``pip install 'bench[clip]'``), or a transformers
            ``CLIPModel`` folder (``config.json`` + ``model.safetensors`` + its image processor;
            ``transformers``). Features: open_clip's ``encode_image`` / transformers'
            ``get_image_features`` (projected, not normalised). Preprocessing: the model's own
            (open_clip's eval transform on PIL RGB: ``resize`` ``open_clip``; the folder's
            ``CLIPImageProcessor`` on uint8 tensors: ``resize`` ``transformers``), recorded in
            ``describe()['preprocess']``; ``describe()['clip_kind']`` names the kind.
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

from bench.clip import CLIP_ENV, OPEN_CLIP_FILES as CLIP_FILES  # noqa: F401  (re-exported)
from bench.errors import BenchError
from bench.metrics.features import FeatureExtractor, file_sha256
from bench.metrics.preprocess import to_rgb
from bench.registry import FEATURES

DINOV2_ENV = "BENCH_DINOV2_WEIGHTS"
DINOV2_FILES = ("model.safetensors", "pytorch_model.bin")


def shipped_clips() -> dict[str, Path]:
    """Scoring CLIPs this repository trains and ships, by name (``bench/checkpoints``)."""
    from bench.models.zoo import SHIPPED_CLIPS, shipped_clip

    return {n: p for n in SHIPPED_CLIPS if (p := shipped_clip(n)) is not None}


def how_to_provide(name: str) -> str:
    if name == "clip":
        return ("Provide CLIP weights in one of these ways (nothing is downloaded): (1) the "
                "'weights' parameter of the clip feature extractor (suite) or --weights (bench fid), "
                "or the 'clip' parameter of the clipscore metric (suite) or --clip (bench "
                "clipscore): (a) a transformers CLIPModel folder (config.json + model.safetensors "
                "+ tokenizer files vocab.json/merges.txt or tokenizer.json + "
                "preprocessor_config.json), e.g. a snapshot of openai/clip-vit-large-patch14; (b) "
                "an open_clip checkpoint file for the architecture given by 'arch' (default "
                "ViT-B-32; CLI --arch), e.g. open_clip_pytorch_model.bin from "
                "laion/CLIP-ViT-B-32-laion2B-s34B-b79K; (c) a folder in open_clip's hub layout "
                "(open_clip_config.json + open_clip_pytorch_model.bin / "
                "open_clip_model.safetensors); (d) the name of a CLIP shipped with this repository "
                f"({', '.join(shipped_clips())}); (2) set ${CLIP_ENV} to such a file, folder or name. On an "
                "online machine: 'huggingface-cli download openai/clip-vit-large-patch14 "
                "--local-dir DIR' (or laion/CLIP-ViT-B-32-laion2B-s34B-b79K), then copy DIR here. "
                "open_clip itself: pip install 'bench[clip]'; transformers: pip install "
                "'bench[dinov2]'.")
    return ("Provide DINOv2 weights in one of these ways (nothing is downloaded, torch.hub is not "
            "used): (1) the 'weights' parameter (suite) or --weights (CLI): a folder in Hugging Face "
            "transformers format (config.json + model.safetensors or pytorch_model.bin, and "
            "optionally preprocessor_config.json); (2) set "
            f"${DINOV2_ENV} to such a folder. On an online machine: 'huggingface-cli download "
            "facebook/dinov2-base --local-dir DIR', then copy DIR here.")


def resolve_local(name: str, given: str | os.PathLike | None, env: str, param: str = "weights"
                  ) -> tuple[Path, str]:
    """(path, source) from the parameter (named ``param`` in messages), then the environment
    variable; else a BenchError."""
    for value, source in ((given, "explicit"), (os.environ.get(env) or None, "env")):
        if value:
            p = Path(value).expanduser()
            if name == "clip" and not p.exists() and str(value) in shipped_clips():
                return shipped_clips()[str(value)], "shipped"
            if not p.exists():
                where = f"the '{param}' parameter" if source == "explicit" else f"${env}"
                raise BenchError(f"{name} weights '{p}' (from {where}) do not exist. "
                                 + how_to_provide(name))
            return p, source
    raise BenchError(f"no {name} weights given (no '{param}' parameter, ${env} unset). "
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
    """This file's and bench/clip.py's hash and the library version (part of cache keys)."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update((Path(__file__).parents[1] / "clip.py").read_bytes())
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


@FEATURES.register("clip", "CLIP image embedding (open_clip, default ViT-B-32, or a transformers "
                   "CLIPModel folder); local weights only: path/$BENCH_CLIP_WEIGHTS (checkpoint "
                   "file for 'arch', an open_clip hub folder, or a transformers folder)")
class CLIPExtractor(PILFeatureExtractor):
    name = "clip"
    resize = "open_clip"
    dist = "open_clip_torch"

    def __init__(self, *, weights: str | None = None, arch: str = "ViT-B-32",
                 resize: str | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 64) -> None:
        from bench.clip import load_clip

        self.device, self.batch_size = torch.device(device), int(batch_size)
        self.clip = load_clip(weights, arch=arch, device=self.device, param="weights")
        self.resize, self.dist = self.clip.resize, self.clip.dist  # open_clip | transformers
        self._check_resize(resize)
        self.arch, self.dim = self.clip.arch, self.clip.dim
        self.weights_path, self.weights_source = self.clip.weights_path, self.clip.weights_source
        self.weights_sha256 = self.clip.weights_sha256
        self.preprocess_cfg = self.clip.preprocess_cfg
        self.model = self.clip.model

    def transform_images(self, images: Tensor) -> Tensor:
        return self.clip.preprocess(images)

    def embed(self, x: Tensor) -> Tensor:
        return self.clip.embed_pixels(x)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "clip_kind": self.clip.kind}


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
