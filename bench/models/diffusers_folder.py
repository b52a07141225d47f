"""Reading a diffusers folder offline: which components it holds, their classes, the training
schedule in its scheduler config, and a hash of its weights.

A folder is a pipeline (``model_index.json`` naming each component's library and class:
``DDPMPipeline`` / ``DDIMPipeline``, or ``StableDiffusionPipeline``-style with text_encoder,
tokenizer and vae) or a bare ``UNet2DModel`` / ``UNet2DConditionModel`` (``config.json``) whose
scheduler config is given or found in ``../scheduler``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.errors import BenchError
from bench.samplers.schedules import DiscreteVP

UNET_CLASSES = ("UNet2DModel", "UNet2DConditionModel")
SKIPPED = ("safety_checker", "feature_extractor", "image_encoder")
#: libraries whose classes a folder's model_index.json may name; a folder names the module to
#: import, so anything else is refused unless the user extends the list
LIBRARIES = ("diffusers", "transformers")
LIBRARIES_ENV = "BENCH_ALLOWED_LIBRARIES"


def allowed_libraries() -> tuple[str, ...]:
    extra = [x.strip() for x in os.environ.get(LIBRARIES_ENV, "").split(",") if x.strip()]
    return (*LIBRARIES, *extra)


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BenchError(f"diffusers: {what} '{path}' is missing.") from None
    except json.JSONDecodeError as exc:
        raise BenchError(f"diffusers: {what} '{path}' is not valid JSON ({exc}).") from None


@dataclass(frozen=True)
class Folder:
    """The components of a diffusers folder: name -> (folder, library, class)."""

    path: Path
    kind: str
    components: dict[str, tuple[Path, str, str]]
    scheduler_file: Path

    @property
    def unet_class(self) -> str:
        return self.components["unet"][2]

    def weights_hash(self) -> str:
        """sha256 over every component's weight files and the scheduler config."""
        from bench.hashing import file_sha256

        h = hashlib.sha256()
        for name in sorted(self.components):
            folder = self.components[name][0]
            for f in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
                h.update(f"{name}/{f.name}:{file_sha256(f)}".encode())
        h.update(self.scheduler_file.read_bytes())
        return h.hexdigest()


def find_components(p: Path, scheduler: str | None) -> Folder:
    """Every component to load, checked to exist, and the scheduler config to train-schedule by."""
    if (p / "model_index.json").is_file():
        index = read_json(p / "model_index.json", "pipeline index")
        comps = {k: v for k, v in index.items() if not k.startswith("_") and isinstance(v, list)
                 and len(v) == 2 and v[0] is not None}
        for need in ("unet", "scheduler"):
            if need not in comps:
                raise BenchError(f"diffusers: '{p / 'model_index.json'}' ({index.get('_class_name')}) "
                                 f"has no '{need}' component; the adapter needs a UNet and a scheduler.")
        out = {}
        for k, (lib, cls) in comps.items():
            if k in SKIPPED:
                continue
            if lib not in allowed_libraries() and k != "scheduler":
                raise BenchError(f"diffusers: component '{k}' in '{p / 'model_index.json'}' names "
                                 f"library {lib!r}; only classes of {', '.join(allowed_libraries())} "
                                 f"are loaded (a folder must not choose which module to import). "
                                 f"If you trust this folder, add the library to ${LIBRARIES_ENV} "
                                 f"(comma-separated).")
            if not (p / k).is_dir():
                raise BenchError(f"diffusers: component '{k}' ({cls}) listed in "
                                 f"'{p / 'model_index.json'}' is missing: no folder '{p / k}'.")
            out[k] = (p / k, lib, cls)
        if "text_encoder" in out and "tokenizer" not in out:
            raise BenchError(f"diffusers: '{p}' has a text_encoder but no tokenizer.")
        kind = str(index.get("_class_name", "pipeline"))
    elif (p / "config.json").is_file():
        cfg = read_json(p / "config.json", "model config")
        cls = cfg.get("_class_name")
        if cls not in UNET_CLASSES:
            raise BenchError(f"diffusers: '{p / 'config.json'}' describes {cls!r}; the adapter "
                             f"loads {' or '.join(UNET_CLASSES)} folders or pipeline folders.")
        out = {"unet": (p, "diffusers", cls)}
        kind = cls
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
        sched_file = s / "scheduler_config.json" if s.is_dir() else s
    elif "scheduler" in out:
        sched_file = out["scheduler"][0] / "scheduler_config.json"
    else:
        for cand in (p.parent / "scheduler" / "scheduler_config.json", p / "scheduler_config.json"):
            if cand.is_file():
                sched_file = cand
                break
        else:
            raise BenchError(f"diffusers: no scheduler config for the UNet in '{p}': looked for "
                             f"'{p.parent / 'scheduler'}' and '{p / 'scheduler_config.json'}'. "
                             f"Give 'scheduler: FOLDER_OR_JSON' (the config it was trained with).")
    return Folder(p, kind, out, sched_file)


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


def load_component(folder: Path, library: str, class_name: str, dtype: torch.dtype | None) -> Any:
    if library not in allowed_libraries():
        raise BenchError(f"diffusers: component '{folder.name}' names library {library!r}, which is "
                         f"not allowed (${LIBRARIES_ENV} extends {', '.join(LIBRARIES)}).")
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


