"""Model adapter ``diffusers``: UNets and pipelines in diffusers format, from a local folder.

The folder (``bench.models.diffusers_folder``) is a DDPM/DDIM pipeline, a
StableDiffusion-style pipeline (latents decoded by its ``AutoencoderKL``) or a bare UNet; every
component is loaded offline by the library and class its index names. The network becomes the
Denoiser of ``bench.models.unet_denoiser``.

Conditions are data (the suite's ``conditions:`` block, ``bench.conditions``), not parameters
of the model: ``encode`` turns per-sample conditions into what the network takes, class
labels for class-conditional UNets, the text encoder's hidden states for text-conditional ones,
rows of an ``embeddings`` file for a bare ``UNet2DConditionModel``. ``guidance: {scale: w}``
wraps the denoiser in classifier-free guidance (``bench.guidance``) with the null class /
negative prompt as the unconditional branch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from bench.conditions import Condition
from bench.errors import BenchError
from bench.hashing import file_sha256
from bench.models.base import ModelAdapter
from bench.models.diffusers_folder import find_components, load_component, read_json, schedule_from_config
from bench.models.unet_denoiser import UNetDenoiser, encode_prompts, load_embeddings
from bench.registry import MODELS

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@MODELS.register("diffusers", "A diffusers UNet2DModel / UNet2DConditionModel or pipeline folder "
                 "(DDPM/DDIM, StableDiffusion-style) loaded offline; eps / v / sample prediction")
class DiffusersAdapter(ModelAdapter):
    """See the module docstring. ``path`` is a pipeline or UNet folder."""

    def __init__(self, *, path: str, scheduler: str | None = None, guidance: Any = None,
                 null_class: int | None = None, prediction_type: str | None = None,
                 dtype: str = "float32", block: int = 16, name: str | None = None,
                 class_names: list[str] | None = None, embeddings: str | None = None,
                 null_embedding: int | None = None, crop: int | None = None) -> None:
        self.path = Path(path)
        self._class_names = list(class_names) if class_names else None
        self.name = name or "diffusers"
        if not self.path.is_dir():
            raise BenchError(f"diffusers: field 'path' = '{path}' is not a folder. Give the folder "
                             f"that holds model_index.json (a pipeline) or a UNet's config.json; "
                             f"save one with .save_pretrained(folder).")
        if dtype not in DTYPES:
            raise BenchError(f"diffusers: field 'dtype' = {dtype!r}; use one of {', '.join(DTYPES)}.")
        if int(block) < 0:
            raise BenchError(f"diffusers: field 'block' = {block}; use rows per network call "
                             f"(e.g. 16) or 0 for whole batches.")
        if crop is not None and (isinstance(crop, bool) or not isinstance(crop, int) or crop < 1):
            raise BenchError(f"diffusers: field 'crop' = {crop!r}; use a whole number of pixels "
                             f"(the centre square of the decoded images to keep, e.g. 28 for a "
                             f"model trained on 28x28 images padded to 32x32), or leave it out.")
        self.torch_dtype, self.block, self.crop = DTYPES[dtype], int(block), crop
        self.folder = find_components(self.path, scheduler)
        self.components = self.folder.components
        self.kind = self.folder.kind
        unet_cfg = read_json(self.components["unet"][0] / "config.json", "UNet config")
        self.unet_class = self.folder.unet_class
        sched_file = self.folder.scheduler_file
        sched_cfg = read_json(sched_file, "scheduler config")
        self.schedule = schedule_from_config(sched_cfg, str(sched_file))
        ptype = prediction_type or sched_cfg.get("prediction_type", "epsilon")
        if ptype not in PREDICTION_TYPES:
            raise BenchError(f"diffusers: prediction_type {ptype!r} (from "
                             f"{'the suite' if prediction_type else sched_file}) cannot "
                             f"be handled; supported: {', '.join(PREDICTION_TYPES)}.")
        self.prediction_type = ptype
        size = unet_cfg.get("sample_size", 32)
        size = (size, size) if isinstance(size, int) else tuple(size)
        self.shape = (int(unet_cfg.get("in_channels", 3)), *map(int, size))
        self.latent = "vae" in self.components
        self.params: dict[str, Any] = {"path": str(path), "unet": self.unet_class,
                                       "prediction_type": ptype, "schedule": self.schedule.describe()}
        if crop is not None:
            self.params["crop"] = crop
        self._set_conditioning(unet_cfg.get("num_class_embeds"), null_class, embeddings,
                               null_embedding)
        self.guidance = self._check_guidance(guidance)
        if self.guidance is not None:
            self.params["guidance"] = self.guidance
        self._hash: str | None = None
        self.loaded: dict[str, Any] = {}
        #: the data set it was trained on, if known (the zoo names it; bench.calibration)
        self.training_data: str | None = None

    def label(self) -> str:
        return f"'{self.name}' ({self.path})" if self.name == "diffusers" else f"'{self.name}'"

    # ------------------------------------------------------------- conditioning
    def _set_conditioning(self, num_class_embeds: int | None, null_class: int | None,
                          embeddings: str | None, null_embedding: int | None) -> None:
        """What the model is conditioned on: ``conditioning`` None | classes | prompts."""
        self.conditioning: str | None = None
        self.null: int | None = None
        self.embeddings: Tensor | None = None
        self.n_classes = 0
        if self.unet_class == "UNet2DConditionModel" and embeddings is not None:
            self.embeddings = load_embeddings(embeddings)
            k = self.embeddings.shape[0]
            self.null = None if null_embedding is None else int(null_embedding)
            if self.null is not None and not 0 <= self.null < k:
                raise BenchError(f"diffusers: field 'null_embedding' = {null_embedding}; the "
                                 f"embeddings file has rows 0..{k - 1}.")
            self.conditioning, self.n_classes = "classes", k
            self.params.update(embeddings=Path(embeddings).name, null_embedding=self.null,
                               embeddings_sha256=file_sha256(embeddings))
            return
        if self.unet_class == "UNet2DConditionModel":
            if "text_encoder" not in self.components:
                raise BenchError(f"diffusers: '{self.path}' is a text-conditional "
                                 f"UNet2DConditionModel without a text encoder; give a "
                                 f"StableDiffusion-style pipeline folder, or 'embeddings: FILE' "
                                 f"(encoder hidden states, K x tokens x dim) whose rows the "
                                 f"suite's 'conditions: {{classes: ...}}' pick.")
            self.conditioning = "prompts"
            return
        k = num_class_embeds
        if not k:
            return
        self.null = (k - 1) if null_class is None else int(null_class)
        if not 0 <= self.null < k:
            raise BenchError(f"diffusers: field 'null_class' = {null_class}; the UNet has {k} class "
                             f"embeddings (0..{k - 1}).")
        self.conditioning, self.n_classes = "classes", k
        self.params.update(null_class=self.null)

    def class_labels(self, spec: Any) -> list[int]:
        """The labels ``conditions: {classes: ...}`` names: balanced, one label, or a list."""
        real = [c for c in range(self.n_classes) if c != self.null]
        if spec in ("balanced", None):
            return real
        lst = [spec] if isinstance(spec, int) and not isinstance(spec, bool) else spec
        if not isinstance(lst, list) or not lst:
            raise BenchError(f"field 'conditions.classes' = {spec!r}; use 'balanced', one label, "
                             f"or a list of labels.")
        for c in lst:
            if isinstance(c, bool) or not isinstance(c, int) or c not in real:
                raise BenchError(f"field 'conditions.classes': label {c!r} is out of range: model "
                                 f"{self.label()} has {self.n_classes} class embeddings, labels "
                                 f"{real[0]}..{real[-1]}"
                                 + (f" (null class {self.null})" if self.null is not None else "")
                                 + ". Use 'balanced', one label, or a list of labels.")
        return list(lst)

    def class_names(self) -> dict[int, str] | None:
        if self._class_names is None:
            return None
        return {i: n for i, n in enumerate(self._class_names)}

    def _check_guidance(self, g: Any) -> dict[str, Any] | None:
        if g is None:
            return None
        if isinstance(g, (int, float)) and not isinstance(g, bool):
            g = {"scale": float(g)}
        if not isinstance(g, dict) or "scale" not in g or set(g) - {"scale", "batched"}:
            raise BenchError(f"diffusers: field 'guidance' = {g!r}; write 'guidance: {{scale: 2.0}}' "
                             f"(optional batched: false for two network passes).")
        if self.conditioning is None or (self.conditioning == "classes" and self.null is None):
            raise BenchError(f"diffusers: field 'guidance' needs a conditional model with an "
                             f"unconditional branch (null class, negative prompt or "
                             f"null_embedding); '{self.path}' has none.")
        return {"scale": float(g["scale"]), "batched": bool(g.get("batched", True))}

    def encode(self, conditions: Sequence[Condition], negative_prompt: str = ""
               ) -> tuple[Tensor, Tensor | None]:
        """(rows, null rows) the network takes for these conditions, one each."""
        n = len(conditions)
        if self.conditioning == "prompts":
            if "text_encoder" not in self.loaded:
                raise RuntimeError("diffusers: encode() before load()")
            device = next(self.loaded["text_encoder"].parameters()).device
            states = encode_prompts(self.loaded["tokenizer"], self.loaded["text_encoder"],
                                    [str(c.text) for c in conditions] + [negative_prompt], device)
            return states[:n], states[n:].expand(n, *states.shape[1:])
        labels = torch.tensor([int(c.label) for c in conditions], dtype=torch.long)  # type: ignore[arg-type]
        if self.embeddings is not None:
            null = None if self.null is None else self.embeddings[self.null].expand(
                n, *self.embeddings.shape[1:])
            return self.embeddings[labels], null
        return labels, None if self.null is None else torch.full((n,), self.null, dtype=torch.long)

    # ------------------------------------------------------------------ loading
    def sample_shape(self) -> tuple[int, ...]:
        return self.shape  # the UNet's sample shape (latents for a VAE pipeline)

    def weights_hash(self) -> str:
        if self._hash is None:
            self._hash = self.folder.weights_hash()
        return self._hash

    def describe(self) -> dict[str, Any]:
        return {"type": self.name, "kind": self.kind, **self.params, "weights_hash": self.weights_hash()}

    def load(self, device: torch.device | str = "cpu") -> Any:
        device = torch.device(device)
        loaded = {}
        for name, (folder, lib, cls) in self.components.items():
            if name == "scheduler":
                continue
            obj = load_component(folder, lib, cls, self.torch_dtype if name != "tokenizer" else None)
            if hasattr(obj, "to") and name != "tokenizer":
                obj = obj.to(device).eval()
                obj.requires_grad_(False)
            loaded[name] = obj
        self.loaded = loaded  # vae (decode), text_encoder and tokenizer (encode)
        den = UNetDenoiser(loaded["unet"], self.schedule, self.prediction_type, device,
                           self.torch_dtype, self.block, null=self.null if self.conditioning ==
                           "classes" and self.embeddings is None else None,
                           key=f"diffusers:{self.weights_hash()}")
        if self.guidance is None:
            return den
        from bench.guidance import GuidedDenoiser

        return GuidedDenoiser(den, scale=self.guidance["scale"], cond=self.null, uncond=self.null,
                              batched=self.guidance["batched"])

    def encode_images(self, images: Tensor) -> Tensor:
        if self.latent:
            raise BenchError(f"diffusers: model {self.label()} is a latent model; mapping images "
                             f"to its latents (the VAE's encoder) is not supported yet.")
        return super().encode_images(images)

    def decode(self, x0: Tensor) -> Tensor:
        if self.latent:
            vae = self.loaded.get("vae")
            if vae is None:
                raise RuntimeError("diffusers: decode() before load()")
            sf = float(getattr(vae.config, "scaling_factor", 0.18215))
            with torch.no_grad():
                x0 = torch.cat([vae.decode((z[None] / sf).to(vae.dtype)).sample
                                for z in x0])  # one row at a time: batch-size invariant
        if self.crop is not None:  # the centre crop x crop square (e.g. 28x28 of a padded 32x32)
            h, w = x0.shape[-2:]
            if self.crop > min(h, w):
                raise BenchError(f"diffusers: field 'crop' = {self.crop} is larger than the decoded "
                                 f"images ({h}x{w}); use at most {min(h, w)}.")
            top, left = (h - self.crop) // 2, (w - self.crop) // 2
            x0 = x0[..., top:top + self.crop, left:left + self.crop]
        return ((x0.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
