"""One CLIP loader for everything CLIP-space: the ``clipscore`` metric and the ``clip`` feature
extractor. Nothing is downloaded; weights come from a local path (or ``$BENCH_CLIP_WEIGHTS``).

``load_clip(spec, arch=..., device=...)`` accepts

- a Hugging Face ``transformers`` ``CLIPModel`` folder: ``config.json`` (model_type ``clip``) +
  ``model.safetensors`` (or ``pytorch_model.bin``, or a sharded ``model.safetensors.index.json``)
  + tokenizer files (``vocab.json``/``merges.txt`` or ``tokenizer.json``) + the image processor
  (``preprocessor_config.json`` or ``processor_config.json``). Loaded with
  ``CLIPModel.from_pretrained(path, local_files_only=True)``, ``CLIPTokenizer`` and
  ``CLIPImageProcessor`` from the same folder;
- an open_clip checkpoint file for architecture ``arch`` (default ``ViT-B-32``);
- an open_clip hub folder (``open_clip_config.json`` + ``open_clip_*`` weights), whose config
  defines the architecture. A folder holding both layouts (laion's hub repos do) loads as
  open_clip unless ``kind="transformers"`` is given.

:class:`ClipModel` gives unnormalised embeddings: ``encode_images`` (uint8 NCHW, 1 or 3 channels,
grayscale repeated to RGB, preprocessed by the model's own processor: transformers'
``CLIPImageProcessor`` on uint8 tensors, or open_clip's eval transform on PIL images) and
``encode_text``.

Long prompts. CLIP's text encoder reads at most ``context_length`` tokens (77), counting the
start and end tokens, and its sentence embedding is the hidden state at the end token
(transformers: the first ``eos_token_id`` of the ids, or the argmax of the ids for configs with
the legacy ``eos_token_id == 2``; open_clip: the argmax of the ids, the end token having the
largest id). ``long="error"`` refuses a longer prompt; ``long="truncate"`` keeps its first
``context_length - 1`` tokens followed by the end token (what open_clip's tokenizer and OpenAI's
``clip.tokenize(truncate=True)`` do), so the embedding is still taken at an end token. Cutting
the ids at ``context_length`` instead (torchmetrics' ``CLIPScore``, issue #2883) drops the end
token: transformers then pools at position 0 (the start token, the same for every prompt) or,
with a legacy config, at the largest token id of the prompt. Every batch is checked: the
position the model pools at must be our end token.

Shapes are fixed so that a sample's embedding never depends on which other samples share its
batch: text ids are padded to the text's own length rounded up to a multiple of 16 (transformers;
open_clip's text tower takes ``context_length`` ids only), and with ``rows=R`` every network
call gets exactly R rows (the last chunk padded by repeating its last row). On a CPU a row's result
then does not depend on the other rows (checked in ``tests/test_clipscore.py``); without fixed
shapes BLAS kernels change with the batch size and embeddings differ in the last bits.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from bench.errors import BenchError

CLIP_ENV = "BENCH_CLIP_WEIGHTS"
#: open_clip's checkpoint names in a hub folder, preferred first (as open_clip itself prefers).
OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                   "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth")
#: transformers' weight files, preferred first
HF_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
HF_TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json")
LONG_MODES = ("error", "truncate")
#: text is encoded padded to its own length rounded up to a multiple of this (or the context)
BUCKET = 16
KINDS = ("transformers", "open_clip")


def _features_vit() -> Any:
    from bench.metrics import features_vit  # the weight-resolution helpers live there

    return features_vit


def shorten(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[:n - 3] + "..."


def _combined_sha256(paths: Sequence[Path]) -> str:
    """sha256 of one file, or of the names and sha256s of several (a sharded checkpoint)."""
    from bench.hashing import file_sha256

    if len(paths) == 1:
        return file_sha256(paths[0])
    h = hashlib.sha256()
    for p in paths:
        h.update(f"{p.name}:{file_sha256(p)}\n".encode())
    return h.hexdigest()


def _jsonable(v: Any) -> Any:
    """An image processor setting as JSON (SizeDict dataclasses -> their set fields)."""
    import dataclasses
    import enum

    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _jsonable(getattr(v, f.name)) for f in dataclasses.fields(v)
                if getattr(v, f.name) is not None}
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, enum.Enum):
        return _jsonable(v.value)
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def detect_kind(path: Path, kind: str | None = None) -> str:
    """``transformers`` or ``open_clip`` for a weights path (file: open_clip checkpoint)."""
    if kind is not None:
        if kind not in KINDS:
            raise BenchError(f"CLIP kind {kind!r} is not one of {', '.join(KINDS)}.")
        return kind
    if path.is_file():
        return "open_clip"
    if (path / "open_clip_config.json").is_file() and any((path / f).is_file() for f in OPEN_CLIP_FILES):
        return "open_clip"
    if (path / "config.json").is_file():
        return "transformers"
    if (path / "open_clip_config.json").is_file():
        return "open_clip"  # reports the weights it lacks
    raise BenchError(f"clip folder '{path}' holds none of {', '.join(OPEN_CLIP_FILES)} (an open_clip "
                     f"hub folder, with open_clip_config.json) and no config.json (a transformers "
                     f"CLIPModel folder). " + _features_vit().how_to_provide("clip"))


def _fixed_rows(fn: Callable[[Tensor], Tensor], x: Tensor, rows: int | None, batch: int) -> Tensor:
    """``fn`` over ``x`` in chunks: of exactly ``rows`` rows (the last chunk padded by repeating
    its last row, the padding dropped), or of at most ``batch`` rows when ``rows`` is None."""
    size = rows or batch
    out = []
    for b0 in range(0, len(x), size):
        chunk = x[b0:b0 + size]
        n = len(chunk)
        if rows and n < rows:
            chunk = torch.cat([chunk, chunk[-1:].expand(rows - n, *chunk.shape[1:])])
        out.append(fn(chunk)[:n].float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


class ClipModel(ABC):
    """A loaded CLIP: image and text towers, the model's own preprocessing and tokenizer."""

    kind: str = ""
    #: tag of the preprocessing (the ``resize`` column of result rows)
    resize: str = ""
    #: the distribution whose version is part of cache keys
    dist: str = ""
    arch: str
    device: torch.device
    weights_path: Path
    weights_files: list[Path]
    weights_source: str
    weights_sha256: str
    context_length: int
    dim: int
    preprocess_cfg: dict[str, Any]
    tokenizer_cfg: dict[str, Any]
    #: the text tower takes ids shorter than the context (else they are padded to it)
    any_length: bool = False

    def logit_scale(self) -> float:
        """CLIP's learned temperature exp(t): logits = exp(t) cos(image, text) (transformers'
        CLIPModel and open_clip's models both keep t as ``logit_scale``)."""
        return float(self.model.logit_scale.detach().exp())

    # ---------------------------------------------------------------- images
    @abstractmethod
    def preprocess(self, images: Tensor) -> Tensor:
        """uint8 NCHW (1 or 3 channels) -> float pixel values (N, 3, H, W) on the CPU."""

    @abstractmethod
    def embed_pixels(self, pixels: Tensor) -> Tensor:
        """Preprocessed pixels (on the device) -> image embeddings (N, D), unnormalised."""

    @torch.inference_mode()
    def encode_images(self, images: Tensor, *, batch_size: int = 64, rows: int | None = None
                      ) -> Tensor:
        """uint8 NCHW images -> float32 (N, D) image embeddings on the CPU (unnormalised)."""
        from bench.metrics.preprocess import to_rgb

        images = to_rgb(images)
        out = [torch.zeros(0, self.dim)]
        size = rows or batch_size
        for b0 in range(0, len(images), size):
            px = self.preprocess(images[b0:b0 + size]).to(self.device)
            out.append(_fixed_rows(self.embed_pixels, px, rows, size))
        return torch.cat(out)

    # ---------------------------------------------------------------- text
    @abstractmethod
    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's ids with the start and end tokens, not truncated."""

    @property
    @abstractmethod
    def end_token_id(self) -> int: ...

    @property
    @abstractmethod
    def pad_token_id(self) -> int: ...

    @abstractmethod
    def pool_positions(self, ids: Tensor) -> Tensor:
        """The position of each row of ``ids`` whose hidden state the model pools."""

    @abstractmethod
    def embed_tokens(self, ids: Tensor, mask: Tensor) -> Tensor:
        """(N, context_length) ids and attention mask on the device -> text embeddings (N, D)."""

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text, counting the start and end tokens."""
        return [len(t) for t in self.token_ids(texts)]

    def check_long(self, texts: Sequence[str], long: str = "error",
                   counts: Sequence[int] | None = None) -> list[bool]:
        """Which texts are longer than the context; a BenchError for the first with ``error``."""
        if long not in LONG_MODES:
            raise BenchError(f"long_prompts = {long!r}; use error (refuse prompts longer than the "
                             f"context) or truncate (keep the first tokens and the end token).")
        counts = self.token_counts(texts) if counts is None else counts
        over = [n > self.context_length for n in counts]
        if long == "error" and any(over):
            i = over.index(True)
            raise BenchError(
                f"prompt {shorten(texts[i])!r} has {counts[i]} tokens (counting the start and end "
                f"tokens), more than the CLIP text encoder's context length "
                f"{self.context_length}. Fix: shorten it, or set long_prompts: truncate (bench "
                f"clipscore --long-prompts truncate) to keep its first {self.context_length - 1} "
                f"tokens and the end token.")
        return over

    def tokenize(self, texts: Sequence[str], long: str = "error") -> tuple[Tensor, Tensor]:
        """(ids, attention mask), both (N, context_length): start token, the text's tokens, end
        token, padding. A text longer than the context raises (``long="error"``) or keeps its
        first ``context_length - 1`` tokens and then the end token (``long="truncate"``)."""
        rows = self.token_ids(texts)
        self.check_long(texts, long, [len(r) for r in rows])
        L, eot = self.context_length, self.end_token_id
        ids = torch.full((len(texts), L), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(texts), L), dtype=torch.long)
        for i, row in enumerate(rows):
            if len(row) > L:
                row = [*row[:L - 1], eot]
            ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, :len(row)] = 1
        ends = mask.sum(1) - 1
        pooled = self.pool_positions(ids)
        bad = (pooled != ends).nonzero().flatten().tolist()
        if bad:
            i = bad[0]
            raise BenchError(
                f"the CLIP text encoder pools prompt {shorten(texts[i])!r} at position "
                f"{int(pooled[i])}, not at its end token (position {int(ends[i])}, id {eot}): "
                f"{self.pooling_note()}. Fix: use a CLIP folder whose config and tokenizer agree "
                f"on the end token (text_config.eos_token_id = the tokenizer's eos_token_id).")
        return ids, mask

    def pooling_note(self) -> str:
        return ""

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str], long: str = "error", *, batch_size: int = 64,
                    rows: int | None = None) -> Tensor:
        """Prompts -> float32 (N, D) text embeddings on the CPU (unnormalised)."""
        ids, mask = self.tokenize(list(texts), long)
        out = torch.zeros(len(ids), self.dim)
        if not len(ids):
            return out
        both = torch.stack([ids, mask], 1).to(self.device)
        # each text's length, rounded up to a multiple of BUCKET: the shape a text is encoded
        # with depends on that text alone (models that take any length; open_clip takes 77)
        L = self.context_length
        lengths = mask.sum(1)
        width = torch.clamp((lengths + BUCKET - 1) // BUCKET * BUCKET, max=L) \
            if self.any_length else torch.full_like(lengths, L)
        for w in sorted(set(width.tolist())):
            sel = (width == w).nonzero().flatten()
            out[sel] = _fixed_rows(lambda b: self.embed_tokens(b[:, 0], b[:, 1]),
                                   both[sel.to(self.device), :, :w], rows, batch_size)
        return out

    # ---------------------------------------------------------------- identity
    def describe(self) -> dict[str, Any]:
        """JSON-able: kind, architecture, weights (sha256, source, file), preprocessing, tokenizer."""
        return {"kind": self.kind, "arch": self.arch, "weights_sha256": self.weights_sha256,
                "weights_source": self.weights_source, "weights_file": self.weights_path.name,
                "resize": self.resize, "preprocess": self.preprocess_cfg,
                "tokenizer": self.tokenizer_cfg, "dim": self.dim}


# ============================================================================ transformers
class HFClip(ClipModel):
    """A transformers ``CLIPModel`` folder."""

    kind = "transformers"
    resize = "transformers"
    dist = "transformers"
    any_length = True

    def __init__(self, path: Path, source: str, device: torch.device) -> None:
        fv = _features_vit()
        fv.import_optional("transformers", "clip")
        from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

        if not (path / "config.json").is_file():
            raise BenchError(f"'{path}' is not a transformers CLIPModel folder (no config.json). "
                             + fv.how_to_provide("clip"))
        cfg = json.loads((path / "config.json").read_text())
        if cfg.get("model_type") != "clip":
            raise BenchError(f"'{path}' holds a transformers model of type "
                             f"{cfg.get('model_type')!r}, not a CLIPModel (model_type 'clip'). "
                             + fv.how_to_provide("clip"))
        self.weights_path = fv.pick_file(path, HF_FILES, "clip")
        if self.weights_path.name.endswith(".index.json"):
            shards = sorted(set(json.loads(self.weights_path.read_text())["weight_map"].values()))
            self.weights_files = [path / s for s in shards]
        else:
            self.weights_files = [self.weights_path]
        self.weights_source, self.device, self.arch = source, device, path.name
        try:
            with fv.quiet_logging():
                model = CLIPModel.from_pretrained(str(path), local_files_only=True)
        except Exception as exc:
            raise BenchError(f"cannot load a transformers CLIPModel from '{path}': "
                             f"{type(exc).__name__}: {str(exc)[:300]}. " + fv.how_to_provide("clip")) from None
        missing = [f for f in ("tokenizer", "image processor")
                   if (f == "tokenizer" and not ((path / "vocab.json").is_file() or (path / "tokenizer.json").is_file()))
                   or (f == "image processor" and not ((path / "preprocessor_config.json").is_file()
                                                       or (path / "processor_config.json").is_file()))]
        if missing:
            raise BenchError(f"CLIP folder '{path}' has no {' and no '.join(missing)} files "
                             f"(vocab.json + merges.txt or tokenizer.json; preprocessor_config.json "
                             f"or processor_config.json). Fix: save them into the folder with "
                             f"CLIPProcessor.save_pretrained(folder), or copy the whole snapshot.")
        try:
            with fv.quiet_logging():
                self.tokenizer = CLIPTokenizer.from_pretrained(str(path), local_files_only=True)
                self.processor = CLIPImageProcessor.from_pretrained(str(path), local_files_only=True)
        except Exception as exc:
            raise BenchError(f"cannot load the tokenizer / image processor of '{path}': "
                             f"{type(exc).__name__}: {str(exc)[:300]}. Fix: save them with "
                             f"CLIPProcessor.save_pretrained(folder).") from None
        self.model = model.eval().requires_grad_(False).to(device)
        tc = model.config.text_config
        self.context_length = int(tc.max_position_embeddings)
        self.config_eos = int(tc.eos_token_id) if tc.eos_token_id is not None else 2
        self.dim = int(model.config.projection_dim)
        self.weights_sha256 = _combined_sha256(self.weights_files)
        keys = ("do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale",
                "rescale_factor", "do_normalize", "image_mean", "image_std", "do_convert_rgb")
        pp = {k: _jsonable(getattr(self.processor, k, None)) for k in keys}
        self.preprocess_cfg = {**pp, "processor": type(self.processor).__name__,
                               "transform": "transformers image processor on uint8 RGB tensors"}
        tok_files = [path / f for f in HF_TOKENIZER_FILES if (path / f).is_file()]
        self.tokenizer_cfg = {"class": type(self.tokenizer).__name__,
                              "context_length": self.context_length,
                              "end_token_id": self.end_token_id, "pad_token_id": self.pad_token_id,
                              "pooling": "argmax of ids (legacy eos_token_id 2)" if self.config_eos == 2
                              else f"first eos_token_id {self.config_eos}",
                              "sha256": _combined_sha256(tok_files)[:16] if tok_files else ""}

    @property
    def end_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(self.end_token_id if pad is None else pad)

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        with _features_vit().quiet_logging():  # "longer than the maximum" warnings: checked here
            return [list(r) for r in self.tokenizer(list(texts), add_special_tokens=True,
                                                    truncation=False)["input_ids"]]

    def pool_positions(self, ids: Tensor) -> Tensor:
        # transformers' CLIPTextTransformer: argmax of the ids for the legacy eos_token_id == 2,
        # else the first position of eos_token_id
        if self.config_eos == 2:
            return ids.argmax(dim=-1)
        return (ids == self.config_eos).int().argmax(dim=-1)

    def pooling_note(self) -> str:
        return (f"its config pools at the {self.tokenizer_cfg['pooling']}, the tokenizer's end "
                f"token is {self.end_token_id}")

    def embed_tokens(self, ids: Tensor, mask: Tensor) -> Tensor:
        out = self.model.get_text_features(input_ids=ids, attention_mask=mask)
        return out if isinstance(out, Tensor) else out.pooler_output  # transformers >= 5: an output

    def preprocess(self, images: Tensor) -> Tensor:
        from bench.metrics.preprocess import to_rgb

        x = to_rgb(images).cpu()
        if not len(x):
            return torch.zeros(0, 3, 1, 1)
        return self.processor(images=list(x), return_tensors="pt")["pixel_values"].float()

    def embed_pixels(self, pixels: Tensor) -> Tensor:
        out = self.model.get_image_features(pixel_values=pixels)
        return out if isinstance(out, Tensor) else out.pooler_output


# ============================================================================ open_clip
class OpenClip(ClipModel):
    """An open_clip checkpoint file for ``arch``, or an open_clip hub folder."""

    kind = "open_clip"
    resize = "open_clip"
    dist = "open_clip_torch"

    def __init__(self, path: Path, source: str, arch: str, device: torch.device) -> None:
        fv = _features_vit()
        open_clip = fv.import_optional("open_clip", "clip")
        from open_clip.transform import PreprocessCfg, image_transform_v2

        self.device, self.weights_source = device, source
        if path.is_dir():
            self.weights_path = fv.pick_file(path, OPEN_CLIP_FILES, "clip")
            cfg = json.loads((path / "open_clip_config.json").read_text()) \
                if (path / "open_clip_config.json").is_file() else None
            if not cfg or "model_cfg" not in cfg:
                raise BenchError(f"clip folder '{path}' has no open_clip_config.json with "
                                 f"'model_cfg'. " + fv.how_to_provide("clip"))
            self.arch = str(cfg.get("model_cfg", {}).get("arch", path.name))
            name = f"local-dir:{path}"
            with fv.quiet_logging():  # open_clip warns "initialized randomly" before we load
                model = open_clip.create_model(name, load_weights=False)
        else:
            self.weights_path, self.arch, name = path, arch, arch
            if open_clip.get_model_config(arch) is None:
                raise BenchError(f"unknown open_clip architecture {arch!r}; use one of "
                                 f"open_clip.list_models() (e.g. ViT-B-32, ViT-L-14), or give an "
                                 f"open_clip hub folder whose open_clip_config.json defines it.")
            with fv.quiet_logging():
                model = open_clip.create_model(arch, pretrained=None)
        try:
            open_clip.load_checkpoint(model, str(self.weights_path), strict=True)
        except Exception as exc:
            raise BenchError(f"cannot load open_clip weights '{self.weights_path}' into "
                             f"architecture {self.arch!r}: {type(exc).__name__}: "
                             f"{str(exc)[:300]}. " + fv.how_to_provide("clip")) from None
        self.weights_files = [self.weights_path]
        self.weights_sha256 = _combined_sha256(self.weights_files)
        pp = PreprocessCfg(**model.visual.preprocess_cfg)
        self.transform = image_transform_v2(pp, is_train=False)
        self.preprocess_cfg = {"size": list(pp.input_size[1:]), "interpolation": pp.interpolation,
                               "resize_mode": pp.resize_mode, "mean": list(pp.mean),
                               "std": list(pp.std), "arch": self.arch,
                               "transform": "open_clip image_transform_v2(is_train=False) on PIL RGB"}
        self.model = model.eval().requires_grad_(False).to(device)
        self._name = name
        self._tokenizer: Any = None
        with torch.inference_mode():
            probe = torch.zeros((1, *pp.input_size), device=device)
            self.dim = int(self.model.encode_image(probe).shape[-1])
        self.pool_type = str(getattr(self.model, "text_pool_type", "argmax"))
        self.context_length = int(getattr(self.model, "context_length", 0) or 77)
        self.vocab_size = int(getattr(self.model, "vocab_size", 0) or 0)

    @property
    def tokenizer(self) -> Any:
        """open_clip's tokenizer for the model (loaded on first use: image features need none)."""
        if self._tokenizer is None:
            import open_clip

            with _features_vit().quiet_logging():
                self._tokenizer = open_clip.get_tokenizer(self._name,
                                                          context_length=self.context_length)
            self.simple = hasattr(self._tokenizer, "encode") and \
                getattr(self._tokenizer, "reduction_fn", None) is None and \
                hasattr(self._tokenizer, "sot_token_id")
        return self._tokenizer

    @property
    def tokenizer_cfg(self) -> dict[str, Any]:  # type: ignore[override]
        import importlib.metadata

        tok = self.tokenizer
        return {"class": type(tok).__name__, "context_length": self.context_length,
                "end_token_id": self.end_token_id, "pooling": self.pool_type,
                "source": f"open_clip_torch {importlib.metadata.version('open_clip_torch')}"}

    @property
    def end_token_id(self) -> int:
        tok = self.tokenizer
        return int(tok.eot_token_id if self.simple else tok.tokenizer.eos_token_id)

    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        if self.simple:
            return 0  # open_clip pads with zeros
        pad = tok.tokenizer.pad_token_id
        return int(0 if pad is None else pad)

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        tok = self.tokenizer
        if self.simple:  # exactly what SimpleTokenizer.__call__ builds before truncating
            rows = [[tok.sot_token_id, *tok.encode(t), tok.eot_token_id] for t in texts]
        else:
            clean = getattr(tok, "clean_fn", lambda s: s)
            rows = [list(tok.tokenizer(clean(t))["input_ids"]) for t in texts]
        if self.vocab_size and any(max(r) >= self.vocab_size for r in rows if r):
            raise BenchError(f"the open_clip tokenizer ({type(tok).__name__}) gives token ids up to "
                             f"{max(max(r) for r in rows if r)}, beyond the text encoder's vocabulary "
                             f"of {self.vocab_size}: the model's text tower does not match its "
                             f"tokenizer. Fix: use the weights with the tokenizer they were trained with.")
        return rows

    def pool_positions(self, ids: Tensor) -> Tensor:
        if self.pool_type == "argmax":
            return ids.argmax(dim=-1)
        if self.pool_type == "eos":
            return (ids == self.end_token_id).int().argmax(dim=-1)
        if self.pool_type == "last":
            return torch.full((len(ids),), ids.shape[1] - 1)
        return (ids != self.pad_token_id).sum(1) - 1  # other pooling: not checked

    def pooling_note(self) -> str:
        return f"open_clip text pooling '{self.pool_type}'"

    def embed_tokens(self, ids: Tensor, mask: Tensor) -> Tensor:
        return self.model.encode_text(ids)

    def preprocess(self, images: Tensor) -> Tensor:
        from PIL import Image

        from bench.metrics.preprocess import to_rgb

        x = to_rgb(images).permute(0, 2, 3, 1).cpu().numpy()
        if not len(x):
            return torch.zeros(0, 3, 1, 1)
        return torch.stack([self.transform(Image.fromarray(np.ascontiguousarray(a))) for a in x])

    def embed_pixels(self, pixels: Tensor) -> Tensor:
        return self.model.encode_image(pixels)


class PooledFeatures(torch.nn.Module):
    """A transformers ``CLIPModel`` whose ``get_image_features`` / ``get_text_features`` return
    the projected embedding as a tensor, as before transformers 5 (which returns an output
    object). torchmetrics 1.9.0's ``CLIPScore`` needs this (torchmetrics issue #3407); the
    parity test and the throughput benchmark wrap the same weights with it."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.m, self.config = model, model.config

    def get_image_features(self, *a: Any, **k: Any) -> Tensor:
        out = self.m.get_image_features(*a, **k)
        return out if isinstance(out, Tensor) else out.pooler_output

    def get_text_features(self, *a: Any, **k: Any) -> Tensor:
        out = self.m.get_text_features(*a, **k)
        return out if isinstance(out, Tensor) else out.pooler_output


# ============================================================================ loading
_LOADED: dict[str, ClipModel] = {}


def load_clip(spec: str | Path | None, *, arch: str = "ViT-B-32", device: str | torch.device = "cpu",
              kind: str | None = None, param: str = "clip", cache: bool = True) -> ClipModel:
    """The CLIP model at ``spec`` (a local path; None: ``$BENCH_CLIP_WEIGHTS``) on ``device``.
    Raises a BenchError naming every way to provide weights when there are none. ``param``
    names the parameter the path came from in messages; ``cache`` keeps one instance per
    (path, arch, kind, device) in this process."""
    fv = _features_vit()
    path, source = fv.resolve_local("clip", None if spec is None else str(spec), CLIP_ENV, param)
    device = torch.device(device)
    key = json.dumps([str(path.resolve()), source, arch, kind, str(device)])
    if cache and key in _LOADED:
        return _LOADED[key]
    k = detect_kind(path, kind)
    model: ClipModel = HFClip(path, source, device) if k == "transformers" else \
        OpenClip(path, source, arch or "ViT-B-32", device)
    if cache:
        _LOADED[key] = model
    return model
