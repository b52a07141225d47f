"""Model adapter ``diffusers``: UNets and pipelines in diffusers format, from a local folder.

Folders it loads (offline, ``from_pretrained`` on local paths only):

* a pipeline folder (``model_index.json``): ``DDPMPipeline`` / ``DDIMPipeline`` (unet +
  scheduler), or ``StableDiffusionPipeline``-style (unet + scheduler + text_encoder + tokenizer
  + vae, latents decoded by the ``AutoencoderKL``); every component is loaded by the library and
  class that ``model_index.json`` names;
* a ``UNet2DModel`` / ``UNet2DConditionModel`` folder (``config.json``), with the scheduler
  config from ``scheduler`` (a folder or ``scheduler_config.json``), else ``../scheduler``.

The network becomes the harness's Denoiser ``D(x; s) -> x0`` in the data-scaled frame
``x = x0 + s eps`` (Karras et al. 2022): the scheduler config's betas define the discrete VP
schedule (DDPM, Ho et al. 2020; t_n = (n+1)/N as in DPM-Solver, Lu et al. 2022), a level ``s``
maps to the (possibly fractional) training timestep by that schedule, the network sees
``x_t = alpha_s x``, and its output is turned into x0 by its ``prediction_type``: ``epsilon``
(x0 = x - s eps), ``v_prediction`` (Salimans & Ho 2022: x0 = alpha x_t - sigma v) or ``sample``.

Conditioning is per sample: class labels (``classes: balanced`` gives sample i class i mod K;
an int or a list cycles likewise) for class-conditional UNets, prompts for text-conditional ones
(or, for a bare ``UNet2DConditionModel``, rows of an ``embeddings`` file, cycled likewise).
``guidance: {scale: w}`` wraps the denoiser in classifier-free guidance (``bench.guidance``)
with the null class / negative prompt as the unconditional branch.

Rows go through the network in fixed blocks of ``block`` rows (the last one zero-padded), so a
sample's value does not depend on the batch size it was drawn in.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bench.errors import BenchError
from bench.models.base import ModelAdapter
from bench.registry import MODELS
from bench.samplers.schedules import DiscreteVP

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
UNET_CLASSES = ("UNet2DModel", "UNet2DConditionModel")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"
FMNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                  "Sneaker", "Bag", "Ankle boot"]


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BenchError(f"diffusers: {what} '{path}' is missing.") from None
    except json.JSONDecodeError as exc:
        raise BenchError(f"diffusers: {what} '{path}' is not valid JSON ({exc}).") from None


def schedule_from_config(cfg: dict[str, Any], where: str) -> DiscreteVP:
    """The discrete VP schedule a diffusers scheduler config trains with."""
    if cfg.get("rescale_betas_zero_snr"):
        raise BenchError(f"diffusers: {where}: rescale_betas_zero_snr=true gives zero terminal SNR "
                         f"(infinite noise level), which the data-scaled Denoiser cannot represent.")
    n = int(cfg.get("num_train_timesteps", 1000))
    kind = cfg.get("beta_schedule", "linear")
    b0, b1 = float(cfg.get("beta_start", 1e-4)), float(cfg.get("beta_end", 0.02))
    if cfg.get("trained_betas") is not None:
        return DiscreteVP(betas=list(cfg["trained_betas"]), kind="trained")
    if kind == "linear":
        return DiscreteVP(beta_start=b0, beta_end=b1, num_steps=n)
    if kind == "scaled_linear":
        betas = torch.linspace(b0 ** 0.5, b1 ** 0.5, n, dtype=torch.float64) ** 2
        return DiscreteVP(betas=betas.tolist(), kind="scaled_linear")
    if kind == "squaredcos_cap_v2":
        return DiscreteVP(num_steps=n, kind="cosine")
    raise BenchError(f"diffusers: {where}: beta_schedule={kind!r} is not supported; supported: "
                     f"linear, scaled_linear, squaredcos_cap_v2, or trained_betas.")


def _load_component(folder: Path, library: str, class_name: str, dtype: torch.dtype | None) -> Any:
    try:
        cls = getattr(importlib.import_module(library), class_name)
    except (ImportError, AttributeError):
        raise BenchError(f"diffusers: component '{folder.name}' needs {library}.{class_name}, which "
                         f"is not importable here; install '{library}'.") from None
    kwargs: dict[str, Any] = {"local_files_only": True}
    if library == "diffusers" and not class_name.endswith("Scheduler"):
        kwargs["low_cpu_mem_usage"] = False  # no 'accelerate' needed (nor its warning)
    if dtype is not None and hasattr(cls, "dtype"):
        kwargs["torch_dtype"] = dtype
    try:
        return cls.from_pretrained(folder, **kwargs)
    except (OSError, ValueError, EnvironmentError) as exc:
        raise BenchError(f"diffusers: cannot load {class_name} from '{folder}': {exc}") from None


@MODELS.register("diffusers", "A diffusers UNet2DModel / UNet2DConditionModel or pipeline folder "
                 "(DDPM/DDIM, StableDiffusion-style) loaded offline; eps / v / sample prediction")
class DiffusersAdapter(ModelAdapter):
    """See the module docstring. ``path`` is a pipeline or UNet folder."""

    validate_early = True

    def __init__(self, *, path: str, scheduler: str | None = None, classes: Any = "balanced",
                 prompts: Any = None, negative_prompt: str = "", guidance: Any = None,
                 null_class: int | None = None, prediction_type: str | None = None,
                 dtype: str = "float32", block: int = 16, name: str | None = None,
                 class_names: list[str] | None = None, embeddings: str | None = None,
                 null_embedding: int | None = None) -> None:
        self.path = Path(path)
        self.class_names = list(class_names) if class_names else None
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
        self.torch_dtype, self.block = DTYPES[dtype], int(block)
        self.components = self._find_components(scheduler)
        unet_cfg = _read_json(self.components["unet"][0] / "config.json", "UNet config")
        self.unet_class = self.components["unet"][2]
        sched_cfg = _read_json(self._scheduler_file(), "scheduler config")
        self.schedule = schedule_from_config(sched_cfg, str(self._scheduler_file()))
        ptype = prediction_type or sched_cfg.get("prediction_type", "epsilon")
        if ptype not in PREDICTION_TYPES:
            raise BenchError(f"diffusers: prediction_type {ptype!r} (from "
                             f"{'the suite' if prediction_type else self._scheduler_file()}) cannot "
                             f"be handled; supported: {', '.join(PREDICTION_TYPES)}.")
        self.prediction_type = ptype
        size = unet_cfg.get("sample_size", 32)
        size = (size, size) if isinstance(size, int) else tuple(size)
        self.shape = (int(unet_cfg.get("in_channels", 3)), *map(int, size))
        self.latent = "vae" in self.components
        self.num_class_embeds = unet_cfg.get("num_class_embeds")
        self.params: dict[str, Any] = {"path": str(path), "unet": self.unet_class,
                                       "prediction_type": ptype, "schedule": self.schedule.describe()}
        self._set_conditioning(classes, prompts, negative_prompt, null_class, embeddings,
                               null_embedding)
        self.guidance = self._check_guidance(guidance)
        if self.guidance is not None:
            self.params["guidance"] = self.guidance
        self._hash: str | None = None

    # ------------------------------------------------------------------ folders
    def _find_components(self, scheduler: str | None) -> dict[str, tuple[Path, str, str]]:
        """name -> (folder, library, class) of every component to load."""
        p = self.path
        if (p / "model_index.json").is_file():
            index = _read_json(p / "model_index.json", "pipeline index")
            comps = {k: v for k, v in index.items() if not k.startswith("_") and isinstance(v, list)
                     and len(v) == 2 and v[0] is not None}
            for need in ("unet", "scheduler"):
                if need not in comps:
                    raise BenchError(f"diffusers: '{p / 'model_index.json'}' ({index.get('_class_name')}) "
                                     f"has no '{need}' component; the adapter needs a UNet and a scheduler.")
            out = {}
            for k, (lib, cls) in comps.items():
                if k in ("safety_checker", "feature_extractor", "image_encoder"):
                    continue
                if not (p / k).is_dir():
                    raise BenchError(f"diffusers: component '{k}' ({cls}) listed in "
                                     f"'{p / 'model_index.json'}' is missing: no folder '{p / k}'.")
                out[k] = (p / k, lib, cls)
            if "text_encoder" in out and "tokenizer" not in out:
                raise BenchError(f"diffusers: '{p}' has a text_encoder but no tokenizer.")
            self.kind = str(index.get("_class_name", "pipeline"))
        elif (p / "config.json").is_file():
            cfg = _read_json(p / "config.json", "model config")
            cls = cfg.get("_class_name")
            if cls not in UNET_CLASSES:
                raise BenchError(f"diffusers: '{p / 'config.json'}' describes {cls!r}; the adapter "
                                 f"loads {' or '.join(UNET_CLASSES)} folders or pipeline folders.")
            out = {"unet": (p, "diffusers", cls)}
            self.kind = cls
        else:
            raise BenchError(f"diffusers: '{p}' holds neither model_index.json (a pipeline folder) "
                             f"nor config.json (a UNet folder); point 'path' at the folder written "
                             f"by save_pretrained.")
        unet_dir = out["unet"][0]
        if out["unet"][2] not in UNET_CLASSES:
            raise BenchError(f"diffusers: the pipeline's unet is {out['unet'][2]}; supported: "
                             f"{', '.join(UNET_CLASSES)}.")
        if not any(unet_dir.glob("diffusion_pytorch_model*.safetensors")) and \
                not any(unet_dir.glob("diffusion_pytorch_model*.bin")):
            raise BenchError(f"diffusers: no weights in '{unet_dir}' (expected "
                             f"diffusion_pytorch_model.safetensors or .bin).")
        if scheduler is not None:
            s = Path(scheduler)
            out["scheduler"] = (s if s.is_dir() else s.parent, "diffusers", "")
            self._sched_file = s / "scheduler_config.json" if s.is_dir() else s
        elif "scheduler" in out:
            self._sched_file = out["scheduler"][0] / "scheduler_config.json"
        else:
            for cand in (p.parent / "scheduler" / "scheduler_config.json", p / "scheduler_config.json"):
                if cand.is_file():
                    self._sched_file = cand
                    break
            else:
                raise BenchError(f"diffusers: no scheduler config for the UNet in '{p}': looked for "
                                 f"'{p.parent / 'scheduler'}' and '{p / 'scheduler_config.json'}'. "
                                 f"Give 'scheduler: FOLDER_OR_JSON' (the config it was trained with).")
        return out

    def _scheduler_file(self) -> Path:
        return self._sched_file

    # ------------------------------------------------------------- conditioning
    def _set_conditioning(self, classes: Any, prompts: Any, negative_prompt: str,
                          null_class: int | None, embeddings: str | None = None,
                          null_embedding: int | None = None) -> None:
        self.prompts: list[str] | None = None
        self.class_list: list[int] | None = None
        self.null: int | None = None
        self.embeddings: Tensor | None = None
        if self.unet_class == "UNet2DConditionModel" and embeddings is not None:
            if prompts is not None:
                raise BenchError("diffusers: give either 'prompts' or 'embeddings', not both.")
            self.embeddings = load_embeddings(embeddings)
            k = self.embeddings.shape[0]
            self.null = None if null_embedding is None else int(null_embedding)
            if self.null is not None and not 0 <= self.null < k:
                raise BenchError(f"diffusers: field 'null_embedding' = {null_embedding}; the "
                                 f"embeddings file has rows 0..{k - 1}.")
            self.embedding_rows = [i for i in range(k) if i != self.null]
            import hashlib

            self.params.update(embeddings=Path(embeddings).name, null_embedding=self.null,
                               embeddings_sha256=hashlib.sha256(Path(embeddings).read_bytes()).hexdigest())
            return
        if self.unet_class == "UNet2DConditionModel":
            if prompts is None:
                raise BenchError(f"diffusers: '{self.path}' is a text-conditional "
                                 f"UNet2DConditionModel; give 'prompts: [\"a photo of ...\"]' "
                                 f"(with a text encoder in the folder) or 'embeddings: FILE' "
                                 f"(encoder hidden states, K x tokens x dim).")
            if "text_encoder" not in self.components:
                raise BenchError(f"diffusers: prompts need a text encoder, and '{self.path}' has "
                                 f"none; give a StableDiffusion-style pipeline folder.")
            self.prompts = [prompts] if isinstance(prompts, str) else [str(p) for p in prompts]
            if not self.prompts:
                raise BenchError("diffusers: field 'prompts' is empty; give at least one prompt.")
            self.negative_prompt = str(negative_prompt)
            self.null = len(self.prompts)  # row of the negative prompt in the embedding table
            self.params.update(prompts=self.prompts, negative_prompt=self.negative_prompt)
            return
        if prompts is not None:
            raise BenchError(f"diffusers: field 'prompts' given, but '{self.path}' has a "
                             f"{self.unet_class} without text conditioning.")
        k = self.num_class_embeds
        if not k:
            if classes not in ("balanced", None):
                raise BenchError(f"diffusers: field 'classes' = {classes!r}, but the UNet in "
                                 f"'{self.path}' is unconditional (no num_class_embeds).")
            return
        self.null = (k - 1) if null_class is None else int(null_class)
        if not 0 <= self.null < k:
            raise BenchError(f"diffusers: field 'null_class' = {null_class}; the UNet has {k} class "
                             f"embeddings (0..{k - 1}).")
        n_real = [c for c in range(k) if c != self.null]
        if classes in ("balanced", None):
            self.class_list = n_real
        else:
            lst = [classes] if isinstance(classes, int) else list(classes)
            for c in lst:
                if isinstance(c, bool) or not isinstance(c, int) or c not in n_real:
                    raise BenchError(f"diffusers: class label {c!r} in field 'classes' is out of "
                                     f"range: the UNet has {k} class embeddings, labels "
                                     f"{n_real[0]}..{n_real[-1]} (null class {self.null}). Use "
                                     f"'balanced', one label, or a list of labels.")
            self.class_list = lst
        self.params.update(classes="balanced" if classes in ("balanced", None) else self.class_list,
                           null_class=self.null)

    def _check_guidance(self, g: Any) -> dict[str, Any] | None:
        if g is None:
            return None
        if isinstance(g, (int, float)) and not isinstance(g, bool):
            g = {"scale": float(g)}
        if not isinstance(g, dict) or "scale" not in g or set(g) - {"scale", "batched"}:
            raise BenchError(f"diffusers: field 'guidance' = {g!r}; write 'guidance: {{scale: 2.0}}' "
                             f"(optional batched: false for two network passes).")
        if self.null is None:
            raise BenchError(f"diffusers: field 'guidance' needs a conditional model; '{self.path}' "
                             f"is unconditional.")
        return {"scale": float(g["scale"]), "batched": bool(g.get("batched", True))}

    def batch_cond(self, idx: Tensor) -> Tensor | None:
        """Per-sample condition indices for sample indices ``idx`` (None: unconditional)."""
        if self.class_list is not None:
            table = torch.tensor(self.class_list, dtype=torch.long)
        elif self.prompts is not None:
            table = torch.arange(len(self.prompts))
        elif self.embeddings is not None:
            table = torch.tensor(self.embedding_rows, dtype=torch.long)
        else:
            return None
        return table[torch.as_tensor(idx, dtype=torch.long) % len(table)]

    def cond_names(self) -> dict[int, str] | None:
        """Condition index -> human name (class names, prompts), for galleries."""
        if self.class_list is not None:
            names = self.class_names or {}
            return {c: f"{c}: {names[c]}" if c < len(names) else str(c) for c in self.class_list}
        if self.prompts is not None:
            return dict(enumerate(self.prompts))
        return None

    # ------------------------------------------------------------------ loading
    def sample_shape(self) -> tuple[int, ...]:
        return self.shape  # the UNet's sample shape (latents for a VAE pipeline)

    def weights_hash(self) -> str:
        from bench.metrics.features import file_sha256
        import hashlib

        if self._hash is None:
            h = hashlib.sha256()
            for name in sorted(self.components):
                folder = self.components[name][0]
                files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
                for f in files:
                    h.update(f"{name}/{f.name}:{file_sha256(f)}".encode())
            h.update(self._scheduler_file().read_bytes())
            self._hash = h.hexdigest()
        return self._hash

    def describe(self) -> dict[str, Any]:
        return {"type": self.name, "kind": self.kind, **self.params, "weights_hash": self.weights_hash()}

    def load(self, device: torch.device | str = "cpu") -> Any:
        device = torch.device(device)
        loaded = {}
        for name, (folder, lib, cls) in self.components.items():
            if name == "scheduler":
                continue
            obj = _load_component(folder, lib, cls, self.torch_dtype if name != "tokenizer" else None)
            if hasattr(obj, "to") and name != "tokenizer":
                obj = obj.to(device).eval()
                obj.requires_grad_(False)
            loaded[name] = obj
        self.vae = loaded.get("vae")
        table = None
        if self.prompts is not None:
            table = encode_prompts(loaded["tokenizer"], loaded["text_encoder"],
                                   [*self.prompts, self.negative_prompt], device)
        elif self.embeddings is not None:
            table = self.embeddings.to(device, self.torch_dtype)
        den = UNetDenoiser(loaded["unet"], self.schedule, self.prediction_type, device,
                           self.torch_dtype, self.block, null=self.null, prompt_table=table,
                           key=f"diffusers:{self.weights_hash()}")
        if self.guidance is None:
            return den
        from bench.guidance import GuidedDenoiser

        return GuidedDenoiser(den, scale=self.guidance["scale"], cond=self.null, uncond=self.null,
                              batched=self.guidance["batched"])

    def decode(self, x0: Tensor) -> Tensor:
        if self.latent:
            if getattr(self, "vae", None) is None:
                raise RuntimeError("diffusers: decode() before load()")
            sf = float(getattr(self.vae.config, "scaling_factor", 0.18215))
            with torch.no_grad():
                x0 = torch.cat([self.vae.decode((z[None] / sf).to(self.vae.dtype)).sample
                                for z in x0])  # one row at a time: batch-size invariant
        return ((x0.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def load_embeddings(path: str) -> Tensor:
    """A K x tokens x dim tensor of encoder hidden states from .pt, .npy or .safetensors."""
    p = Path(path)
    if not p.is_file():
        raise BenchError(f"diffusers: field 'embeddings' = '{path}' is not a file; give a .pt, .npy "
                         f"or .safetensors holding a K x tokens x dim tensor.")
    if p.suffix == ".npy":
        import numpy as np

        t = torch.from_numpy(np.load(p))
    elif p.suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(str(p))
        t = next(iter(tensors.values())) if len(tensors) == 1 else tensors.get("embeddings")
    else:
        t = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(t, Tensor) or t.ndim != 3:
        raise BenchError(f"diffusers: '{path}' must hold one K x tokens x dim tensor, got "
                         f"{getattr(t, 'shape', type(t).__name__)}.")
    return t.float()


def encode_prompts(tokenizer: Any, text_encoder: Any, prompts: list[str], device: torch.device) -> Tensor:
    """Text-encoder hidden states of each prompt (as StableDiffusionPipeline.encode_prompt)."""
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids.to(device)
    with torch.no_grad():
        return text_encoder(ids)[0]


class UNetDenoiser:
    """D(x; s, cond) -> x0 for a diffusers UNet trained on a discrete VP schedule."""

    def __init__(self, unet: Any, schedule: DiscreteVP, prediction_type: str, device: torch.device,
                 dtype: torch.dtype, block: int, null: int | None, prompt_table: Tensor | None,
                 key: str) -> None:
        self.unet, self.schedule, self.prediction_type = unet, schedule, prediction_type
        self.device, self.dtype, self.block, self.null = device, dtype, block, null
        self.prompt_table, self.cache_key = prompt_table, key
        self.network_calls = 0

    def timesteps(self, s: Tensor) -> Tensor:
        """Training timestep (fractional between grid points) of data-scaled level s."""
        t = self.schedule.t_of_s(s.to(torch.float64)) * self.schedule.N - 1.0
        r = torch.round(t)
        return torch.where((t - r).abs() < 1e-3, r, t)  # float32 schedules: snap

    def __call__(self, x: Tensor, sigma: Tensor, cond: Any | None = None) -> Tensor:
        self.network_calls += 1
        n = x.shape[0]
        s = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).reshape(-1).expand(n)
        if cond is None:
            c = None if self.null is None else torch.full((n,), self.null, dtype=torch.long)
        else:
            c = torch.as_tensor(cond, dtype=torch.long).reshape(-1).to(x.device)
            c = c.expand(n) if c.numel() == 1 else c
        alpha = (1.0 + s * s).rsqrt()
        shape = (n,) + (1,) * (x.ndim - 1)
        a, sv = alpha.view(shape), (s * alpha).view(shape)
        xt = (x.to(torch.float64) * a)
        out = self._net(xt, self.timesteps(s), c).to(torch.float64)
        if self.prediction_type == "epsilon":
            x0 = x.to(torch.float64) - s.view(shape) * out
        elif self.prediction_type == "v_prediction":
            x0 = a * xt - sv * out
        else:
            x0 = out
        return x0.to(x.dtype)

    @torch.no_grad()
    def _net(self, xt: Tensor, t: Tensor, c: Tensor | None) -> Tensor:
        n = xt.shape[0]
        block = self.block or n
        outs = []
        for b0 in range(0, n, block):
            sl = slice(b0, min(b0 + block, n))
            m = sl.stop - sl.start
            pad = block - m if self.block else 0
            xb, tb = xt[sl], t[sl]
            cb = None if c is None else c[sl]
            if pad:
                xb = torch.cat([xb, xb.new_zeros((pad,) + xb.shape[1:])])
                tb = torch.cat([tb, tb[-1:].expand(pad)])
                cb = None if cb is None else torch.cat([cb, cb[-1:].expand(pad)])
            kw: dict[str, Any] = {}
            if self.prompt_table is not None:
                kw["encoder_hidden_states"] = self.prompt_table[cb.to(self.prompt_table.device)]
            elif cb is not None:
                kw["class_labels"] = cb.to(self.device)
            out = self.unet(xb.to(self.device, self.dtype), tb.to(self.device, torch.float32),
                            **kw).sample
            outs.append(out[:m])
        return torch.cat(outs)


# ------------------------------------------------------------------ shipped models
def _shipped(name: str) -> Path:
    folder = CHECKPOINTS / name / "model"
    if not (folder / "model_index.json").is_file():
        raise BenchError(f"model '{name}': the shipped checkpoint '{folder}' is missing; reinstall "
                         f"the package from the repository, or retrain it with 'bench train "
                         f"{name} --out {CHECKPOINTS / name}'.")
    return folder


@MODELS.register("fmnist-cond", "Class-conditional DDPM (eps) trained here on Fashion-MNIST 28x28, "
                 "10 classes + null class; shipped in diffusers format (bench/checkpoints)")
def fmnist_cond(*, classes: Any = "balanced", guidance: Any = None, block: int = 16,
                dtype: str = "float32") -> DiffusersAdapter:
    return _relative(DiffusersAdapter(path=str(_shipped("fmnist-cond")), classes=classes,
                                      guidance=guidance, block=block, dtype=dtype, name="fmnist-cond",
                                      class_names=FMNIST_CLASSES))


@MODELS.register("fmnist-v", "Unconditional v-prediction DDPM trained here on Fashion-MNIST 28x28; "
                 "shipped in diffusers format (bench/checkpoints)")
def fmnist_v(*, block: int = 16, dtype: str = "float32") -> DiffusersAdapter:
    return _relative(DiffusersAdapter(path=str(_shipped("fmnist-v")), block=block, dtype=dtype,
                                      name="fmnist-v"))


fmnist_cond.validate_early = fmnist_v.validate_early = True  # type: ignore[attr-defined]


def _relative(adapter: DiffusersAdapter) -> DiffusersAdapter:
    """Record a shipped model's path relative to the package (no machine paths in results)."""
    adapter.params["path"] = str(adapter.path.relative_to(CHECKPOINTS.parent.parent))
    return adapter
