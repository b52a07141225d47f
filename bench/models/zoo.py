"""The models this repository trains and ships (``bench/checkpoints``, diffusers format), their
class names and the training configs that reproduce them (``bench/train_configs``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.models.diffusers_adapter import DiffusersAdapter
from bench.registry import MODELS

PACKAGE = Path(__file__).resolve().parent.parent
CHECKPOINTS = PACKAGE / "checkpoints"
TRAIN_CONFIGS = PACKAGE / "train_configs"
FMNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                  "Sneaker", "Bag", "Ankle boot"]


def shipped(name: str) -> Path:
    """The shipped checkpoint folder of a zoo model."""
    folder = CHECKPOINTS / name / "model"
    if not (folder / "model_index.json").is_file():
        raise BenchError(f"model '{name}': the shipped checkpoint '{folder}' is missing; reinstall "
                         f"the package from the repository, or retrain it with 'bench train "
                         f"{name} --out {CHECKPOINTS / name}'.")
    return folder


def _relative(adapter: DiffusersAdapter) -> DiffusersAdapter:
    """Record a shipped model's path relative to the package (no machine paths in results),
    and name its training set (the ``dataset:`` of its training config; the default data of a
    suite's ``calibrate:``)."""
    adapter.params["path"] = str(adapter.path.relative_to(PACKAGE.parent))
    adapter.training_data = training_dataset(adapter.name)
    return adapter


def training_dataset(name: str) -> str | None:
    """The data set a zoo model was trained on, from ``bench/train_configs/<name>.yaml``."""
    import yaml

    try:
        cfg = yaml.safe_load((TRAIN_CONFIGS / f"{name}.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    ds = cfg.get("dataset") if isinstance(cfg, dict) else None
    return ds if isinstance(ds, str) else None


@MODELS.register("fmnist-cond", "Class-conditional DDPM (eps) trained here on Fashion-MNIST 28x28, "
                 "10 classes + null class; shipped in diffusers format (bench/checkpoints)")
def fmnist_cond(*, guidance: Any = None, block: int = 16, dtype: str = "float32") -> DiffusersAdapter:
    return _relative(DiffusersAdapter(path=str(shipped("fmnist-cond")), guidance=guidance,
                                      block=block, dtype=dtype, name="fmnist-cond",
                                      class_names=FMNIST_CLASSES))


@MODELS.register("fmnist-v", "Unconditional v-prediction DDPM trained here on Fashion-MNIST 28x28; "
                 "shipped in diffusers format (bench/checkpoints)")
def fmnist_v(*, block: int = 16, dtype: str = "float32") -> DiffusersAdapter:
    return _relative(DiffusersAdapter(path=str(shipped("fmnist-v")), block=block, dtype=dtype,
                                      name="fmnist-v"))


def _shipped_t2i(name: str, description: str) -> Any:
    """Register the shipped StableDiffusion-style folder ``name``; decoded 32x32 images are
    cropped to the 28x28 of the data (``crop``)."""

    def model(*, guidance: Any = None, block: int = 16, dtype: str = "float32",
              crop: int | None = 28) -> DiffusersAdapter:
        return _relative(DiffusersAdapter(path=str(shipped(name)), guidance=guidance,
                                          block=block, dtype=dtype, name=name, crop=crop))

    return MODELS.register(name, description)(model)


fmnist_t2i = _shipped_t2i(
    "fmnist-t2i", "Latent text-to-image model trained here on captioned Fashion-MNIST "
    "(AutoencoderKL + CLIP text encoder + UNet2DConditionModel, StableDiffusion-style folder); "
    "decoded 32x32 images are cropped to the 28x28 of the data")
fmnist_t2i_robust = _shipped_t2i(
    "fmnist-t2i-robust", "The robustness-trained twin of fmnist-t2i: the same recipe with 30% of "
    "the training captions perturbed by the attack rules (typo, glyph, phonetic), for "
    "suites/fmnist-robustness.yaml")

#: CLIP models trained here that score images (never a generator's own text encoder)
SHIPPED_CLIPS = ("fmnist-clip",)


def shipped_clip(name: str) -> Path | None:
    """The folder of a shipped scoring CLIP, or None if ``name`` is not one."""
    folder = CHECKPOINTS / name / "model"
    return folder if name in SHIPPED_CLIPS and (folder / "config.json").is_file() else None
