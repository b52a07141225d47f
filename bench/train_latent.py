"""``bench train`` for ``kind: vae`` and ``kind: t2i``: a StableDiffusion-style latent
text-to-image model on captioned Fashion-MNIST, in two stages.

Latent diffusion (Rombach et al., 2022, "High-Resolution Image Synthesis with Latent Diffusion
Models"): an autoencoder maps images to a smaller latent space once, and the diffusion model
learns there.

* ``kind: vae``: a diffusers ``AutoencoderKL`` (the variational autoencoder of Kingma & Welling,
  2014, "Auto-Encoding Variational Bayes"), 1 channel in and out, 32x32 images (Fashion-MNIST's
  28x28 zero-padded by 2 with the background value -1 after scaling to [-1, 1]: the pipeline
  needs sizes divisible by 8). Loss: the mean absolute reconstruction error (L1, as LDM's
  autoencoders, which add a perceptual and an adversarial loss that are left out here) plus
  ``kl_weight`` times the KL divergence to N(0, I), both per image summed over pixels / latent
  elements as in LDM, then divided by the pixel count (so ``kl_weight`` has LDM's units: its
  kl-f4 autoencoder used 1e-6). The decoder sees a posterior sample (reparameterisation).
  After training, ``scaling_factor`` is set to 1 / std of the training latents, as Stable
  Diffusion's 0.18215 was chosen, and the test set's reconstruction PSNR goes into the card.
* ``kind: t2i``: a diffusers ``UNet2DConditionModel`` on the VAE's latents with cross-attention
  to a frozen CLIP text encoder's last hidden states, epsilon prediction on Stable Diffusion's
  ``scaled_linear`` betas, an EMA of the weights, and caption dropout to the empty prompt for
  classifier-free guidance (Ho & Salimans, 2022, "Classifier-Free Diffusion Guidance"). Text is
  encoded exactly as ``StableDiffusionPipeline.encode_prompt`` does (padding to the tokenizer's
  ``model_max_length``, no attention mask unless the encoder's config asks for one), so
  training and sampling condition on the same tensors. The text encoder and the VAE are frozen:
  text states are cached per distinct caption, and the VAE posterior (mean and std) of every
  training image once (in the bench cache folder, keyed by VAE weights and data); each step
  draws its latent sample from the step's generator.

The export is a ``StableDiffusionPipeline`` folder (unet/, vae/, text_encoder/ as
``CLIPTextModel``, tokenizer/, scheduler/ as ``DDIMScheduler``, no safety checker) that
``StableDiffusionPipeline.from_pretrained(folder)`` and the harness's ``diffusers`` adapter open
offline. Determinism and resumption follow :mod:`bench.train`: every random draw of step ``k``
comes from a generator seeded by ``(seed, k)``, the epoch order from ``(seed, epoch)``, and
``state.pt`` resumes a run; a state written with another config or other frozen inputs is
refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from bench.errors import BenchError
from bench.hashing import cache_file, file_sha256
from bench.train import _gen, load_state, read_config, step_batch

#: the repository root: relative ``vae`` / ``text_encoder`` paths are read from here
ROOT = Path(__file__).resolve().parents[1]
#: config fields that may change between a run and its resumption (they do not change the steps)
RESUMABLE_CHANGES = {"max_steps", "checkpoint_every", "log_every", "threads", "out"}
#: image side the VAE works at: Fashion-MNIST's 28 padded by 2 (pipelines need multiples of 8)
IMAGE_SIZE, PAD = 32, 2
#: rows per VAE / text-encoder call when caching or evaluating: fixed, so results are the same
CHUNK = 256


# ------------------------------------------------------------------------------------ configs
def _bad(where: str, fld: str, val: Any, fix: str) -> BenchError:
    return BenchError(f"{where}: field '{fld}' = {val!r}: {fix}")


def _check_common(cfg: Any, where: str, kind: str) -> None:
    if cfg.kind != kind:
        raise _bad(where, "kind", cfg.kind, f"this config class trains kind '{kind}'.")
    if cfg.max_steps < 1 or cfg.batch_size < 1:
        raise _bad(where, "max_steps/batch_size", (cfg.max_steps, cfg.batch_size),
                   "use positive integers.")
    if cfg.limit < 0:
        raise _bad(where, "limit", cfg.limit, "use 0 (all images) or a positive number.")
    if cfg.limit and cfg.limit < cfg.batch_size:
        raise _bad(where, "limit", cfg.limit, f"use at least batch_size ({cfg.batch_size}) images.")
    if cfg.lr_schedule not in ("constant", "cosine"):
        raise _bad(where, "lr_schedule", cfg.lr_schedule, "use 'constant' or 'cosine'.")
    if not cfg.block_out_channels or min(cfg.block_out_channels) < 1:
        raise _bad(where, "block_out_channels", cfg.block_out_channels,
                   "give one positive channel count per level.")
    odd = [c for c in cfg.block_out_channels if c % cfg.norm_num_groups]
    if cfg.norm_num_groups < 1 or odd:
        raise _bad(where, "norm_num_groups", cfg.norm_num_groups,
                   f"must divide every entry of block_out_channels {cfg.block_out_channels}.")


@dataclass
class VaeTrainConfig:
    """Fields of a ``kind: vae`` training YAML (see bench/train_configs/fmnist-vae.yaml)."""

    name: str
    kind: str = "vae"
    dataset: str = "fmnist-train"
    eval_dataset: str = "fmnist-test"
    out: str = ""
    limit: int = 0  # train on the first `limit` images (0: all); for tests and quick checks
    eval_limit: int = 0  # PSNR on the first `eval_limit` evaluation images (0: all)
    scale_images: int = 10000  # training images whose latents set scaling_factor (0: all)
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    layers_per_block: int = 1
    norm_num_groups: int = 8
    latent_channels: int = 4
    recon_loss: str = "l1"  # l1 | mse
    kl_weight: float = 1e-6  # LDM units: per-image sums (see module doc)
    batch_size: int = 32
    max_steps: int = 1000
    lr: float = 1e-3
    lr_schedule: str = "cosine"  # constant | cosine (after warm-up)
    warmup_steps: int = 50
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    threads: int = 0
    checkpoint_every: int = 100
    log_every: int = 10

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> "VaeTrainConfig":
        return read_config(cls, path, overrides)

    def validate(self, where: str) -> None:
        _check_common(self, where, "vae")
        levels = len(self.block_out_channels)
        if IMAGE_SIZE % 2 ** (levels - 1) or levels > 4:
            raise _bad(where, "block_out_channels", self.block_out_channels,
                       f"{levels} levels downsample {IMAGE_SIZE}x{IMAGE_SIZE} by "
                       f"{2 ** (levels - 1)}; use 1 to 4 levels (3 gives 8x8 latents).")
        if self.latent_channels < 1:
            raise _bad(where, "latent_channels", self.latent_channels, "use a positive integer.")
        if self.recon_loss not in ("l1", "mse"):
            raise _bad(where, "recon_loss", self.recon_loss, "use 'l1' or 'mse'.")
        if self.kl_weight < 0:
            raise _bad(where, "kl_weight", self.kl_weight, "use a weight >= 0.")
        for fld in ("eval_limit", "scale_images"):
            if getattr(self, fld) < 0:
                raise _bad(where, fld, getattr(self, fld), "use 0 (all) or a positive number.")

    @property
    def out_dir(self) -> Path:
        return Path(self.out or f"checkpoints/{self.name}")


@dataclass
class T2ITrainConfig:
    """Fields of a ``kind: t2i`` training YAML (see bench/train_configs/fmnist-t2i.yaml)."""

    name: str
    vae: str  # an AutoencoderKL folder (a kind: vae export), relative to the repository root
    text_encoder: str  # a transformers CLIPModel (or CLIPTextModel) folder with its tokenizer
    kind: str = "t2i"
    dataset: str = "fmnist-train"
    out: str = ""
    limit: int = 0  # train on the first `limit` images (0: all); for tests and quick checks
    caption_seed: int = 0
    caption_perturb: float = 0.0  # share of training captions changed by one perturbation rule
    perturb_rules: list[str] = field(default_factory=lambda: ["typo", "glyph", "phonetic"])
    caption_dropout: float = 0.1  # share of captions replaced by "" (classifier-free guidance)
    latents: str = "sample"  # sample (posterior sample per step) | mean (posterior mean)
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 96])
    cross_attention_levels: list[int] = field(default_factory=lambda: [0, 1])  # + the mid block
    layers_per_block: int = 1
    attention_heads: int = 4  # diffusers' `attention_head_dim`, which it uses as the head count
    norm_num_groups: int = 16
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    batch_size: int = 128
    max_steps: int = 2000
    lr: float = 1e-3
    lr_schedule: str = "constant"  # constant | cosine (after warm-up)
    warmup_steps: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_max_decay: float = 0.9995
    ema_power: float = 2 / 3
    seed: int = 0
    threads: int = 0
    checkpoint_every: int = 100
    log_every: int = 10
    save_dtype: str = "float32"  # float32 | float16: the exported UNet's and text encoder's weights
    link_vae: bool = False  # export vae/ as a relative link to the (identical) VAE folder it came from

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> "T2ITrainConfig":
        return read_config(cls, path, overrides)

    def validate(self, where: str) -> None:
        _check_common(self, where, "t2i")
        n = len(self.block_out_channels)
        bad_levels = [i for i in self.cross_attention_levels if not 0 <= i < n]
        if bad_levels:
            raise _bad(where, "cross_attention_levels", self.cross_attention_levels,
                       f"levels are 0..{n - 1} (one per block_out_channels entry).")
        if self.attention_heads < 1 or any(c % self.attention_heads for c in self.block_out_channels):
            raise _bad(where, "attention_heads", self.attention_heads,
                       f"must divide every entry of block_out_channels {self.block_out_channels}.")
        from bench.train_clip import check_perturb

        check_perturb(self, where)
        if not 0 <= self.caption_dropout < 1:
            raise _bad(where, "caption_dropout", self.caption_dropout, "use a probability in [0, 1).")
        if self.save_dtype not in ("float32", "float16"):
            raise _bad(where, "save_dtype", self.save_dtype, "use 'float32' or 'float16' (half "
                       "the size on disk; loaders upcast to their dtype).")
        if self.latents not in ("sample", "mean"):
            raise _bad(where, "latents", self.latents, "use 'sample' or 'mean'.")
        if not 0 < self.beta_start < self.beta_end < 1 or self.num_train_timesteps < 2:
            raise _bad(where, "beta_start/beta_end/num_train_timesteps",
                       (self.beta_start, self.beta_end, self.num_train_timesteps),
                       "use 0 < beta_start < beta_end < 1 and at least 2 steps.")
        for fld in ("vae", "text_encoder"):
            if not getattr(self, fld):
                raise _bad(where, fld, getattr(self, fld), "name a folder.")

    @property
    def out_dir(self) -> Path:
        return Path(self.out or f"checkpoints/{self.name}")


def lr_at(cfg: Any, step: int) -> float:
    """Linear warm-up, then constant or cosine decay to zero at max_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    frac = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))


# ------------------------------------------------------------------------------------ data
def pad_images(images: np.ndarray | Tensor) -> Tensor:
    """uint8 (N, 28, 28) or (N, 1, 28, 28) -> float32 (N, 1, 32, 32) in [-1, 1], background -1."""
    x = torch.as_tensor(np.asarray(images)).reshape(-1, 1, 28, 28).float() / 127.5 - 1.0
    return torch.nn.functional.pad(x, (PAD, PAD, PAD, PAD), value=-1.0)


def load_images(dataset: str, limit: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """The first ``limit`` (0: all) images of a 1-channel 28x28 data set as uint8 (N, 28, 28),
    their labels (zeros if it has none), and the content hash of exactly those images."""
    from bench.data import open_dataset

    ds = open_dataset(dataset)
    n = min(limit, len(ds)) if limit else len(ds)
    imgs = np.array(ds.images(0, n), copy=True)
    if imgs.shape[1:] != (1, 28, 28):
        raise BenchError(f"dataset '{dataset}': the latent trainers expect 1 x 28 x 28 images, got "
                         f"{tuple(imgs.shape[1:])}.")
    labels = np.asarray(getattr(ds, "labels", np.zeros(len(ds))), dtype=np.int64)[:n]
    return imgs[:, 0], labels, ds.content_hash(limit=n if limit else None)


# ------------------------------------------------------------------------------------ VAE
def build_vae(cfg: VaeTrainConfig) -> Any:
    from diffusers import AutoencoderKL

    n = len(cfg.block_out_channels)
    return AutoencoderKL(in_channels=1, out_channels=1, latent_channels=cfg.latent_channels,
                         block_out_channels=tuple(cfg.block_out_channels),
                         down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n,
                         layers_per_block=cfg.layers_per_block, norm_num_groups=cfg.norm_num_groups,
                         sample_size=IMAGE_SIZE)


def vae_loss_at(cfg: VaeTrainConfig, vae: Any, imgs: Tensor, step: int) -> tuple[Tensor, dict[str, float]]:
    """Reconstruction + kl_weight * KL of step ``step``'s batch (see the module doc); the
    posterior sample's noise comes from generator (seed, 2, step)."""
    g = _gen(cfg.seed, 2, step)
    idx = step_batch(cfg, step, len(imgs))
    device = next(vae.parameters()).device
    x = imgs[idx].to(device)
    post = vae.encode(x).latent_dist
    eps = torch.randn(post.mean.shape, generator=g).to(device)
    rec = vae.decode(post.mean + post.std * eps).sample
    err = rec - x
    rec_loss = err.abs().mean() if cfg.recon_loss == "l1" else err.pow(2).mean()
    kl = post.kl().mean()  # summed over latent elements, mean over the batch
    loss = rec_loss + cfg.kl_weight * kl / x[0].numel()
    return loss, {"rec": rec_loss.item(), "kl": kl.item()}


@torch.no_grad()
def posterior(vae: Any, images: Tensor, batch: int = CHUNK) -> tuple[Tensor, Tensor]:
    """The VAE posterior's mean and std of float images (N, 1, 32, 32), in fixed chunks."""
    device = next(vae.parameters()).device
    means, stds = [], []
    for i in range(0, len(images), batch):
        d = vae.encode(images[i:i + batch].to(device, vae.dtype)).latent_dist
        means.append(d.mean.float().cpu())
        stds.append(d.std.float().cpu())
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def reconstruct(vae: Any, images_uint8: np.ndarray | Tensor, batch: int = CHUNK) -> np.ndarray | Tensor:
    """Reconstructions of uint8 images through the VAE (posterior mean, decoded), as uint8 of
    the input's shape and type: (N, 28, 28) / (N, 1, 28, 28) are padded to 32x32 and cropped
    back, (N, 1, 32, 32) are used as they are. Fixed chunks of ``batch``: the same images give
    the same bytes."""
    as_tensor = isinstance(images_uint8, Tensor)
    x = images_uint8.cpu().numpy() if as_tensor else np.asarray(images_uint8)
    if x.dtype != np.uint8:
        raise BenchError(f"reconstruct: expected uint8 images, got {x.dtype}.")
    side = x.shape[-1]
    if side not in (28, IMAGE_SIZE) or x.shape[-2] != side or (x.ndim == 4 and x.shape[1] != 1):
        raise BenchError(f"reconstruct: expected (N, 28, 28), (N, 1, 28, 28) or (N, 1, 32, 32) "
                         f"uint8 images, got {x.shape}.")
    vae.eval()
    device = next(vae.parameters()).device
    out = []
    for i in range(0, len(x), batch):
        part = x[i:i + batch]
        xf = pad_images(part) if side == 28 else torch.as_tensor(part).float() / 127.5 - 1.0
        z = vae.encode(xf.to(device, vae.dtype)).latent_dist.mean
        rec = vae.decode(z).sample.float().cpu()
        if side == 28:
            rec = rec[..., PAD:PAD + 28, PAD:PAD + 28]
        out.append(((rec.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))
    rec_all = torch.cat(out).reshape(x.shape) if out else torch.zeros(x.shape, dtype=torch.uint8)
    return rec_all if as_tensor else rec_all.numpy()


def psnr(ref_uint8: np.ndarray, rec_uint8: np.ndarray) -> dict[str, float]:
    """PSNR in dB of uint8 images: over the whole set's MSE, and the mean of per-image PSNRs
    (an image reconstructed exactly counts as 100 dB)."""
    err = (ref_uint8.astype(np.float64) - rec_uint8.astype(np.float64)) ** 2
    per_image = err.reshape(len(err), -1).mean(1)
    with np.errstate(divide="ignore"):
        each = np.where(per_image > 0, 10 * np.log10(255.0 ** 2 / np.maximum(per_image, 1e-300)), 100.0)
    return {"psnr": float(10 * np.log10(255.0 ** 2 / max(err.mean(), 1e-300))),
            "psnr_mean_per_image": float(each.mean())}


# ------------------------------------------------------------------------------------ loop
def run_loop(cfg: Any, parts: dict[str, Any], opt: torch.optim.Optimizer, params: list[Tensor],
             step_fn: Callable[[int], tuple[Tensor, dict[str, float]]], inputs: dict[str, str],
             dev: torch.device, progress: bool, stop_after: int | None,
             ema: Any = None) -> tuple[int, Path]:
    """The shared resumable loop: resume from ``out/state.pt`` (refusing one written with another
    config or other ``inputs``), take steps to max_steps (or ``stop_after`` more), log each loss
    to ``losses.jsonl`` and checkpoint every ``checkpoint_every`` steps. Returns (step, log path)."""
    from tqdm.auto import tqdm

    out = cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
    state_path, log_path = out / "state.pt", out / "losses.jsonl"
    saved = {**parts, "opt": opt, **({"ema": ema} if ema is not None else {})}
    step = 0
    if state_path.exists():
        st = load_state(state_path, dev, frozenset(saved) | {"step", "config", "inputs"})
        diff = {k: (st["config"].get(k), v) for k, v in asdict(cfg).items()
                if st["config"].get(k) != v and k not in RESUMABLE_CHANGES}
        diff.update({k: (st["inputs"].get(k), v) for k, v in inputs.items() if st["inputs"].get(k) != v})
        if diff:
            raise BenchError(f"{state_path} was written with another config or other inputs "
                             f"(differs in {diff}); use another 'out' folder or delete it to "
                             f"start over.")
        for k, obj in saved.items():
            obj.load_state_dict(st[k])
        step = int(st["step"])
    kept = []
    if log_path.exists():  # keep only lines of steps already taken (a crash may leave later ones)
        kept = [ln for ln in log_path.read_text().splitlines() if ln and json.loads(ln)["step"] < step]
    log_path.write_text("".join(ln + "\n" for ln in kept))

    def save_state() -> None:
        tmp = state_path.with_suffix(".tmp")
        torch.save({**{k: obj.state_dict() for k, obj in saved.items()}, "step": step,
                    "config": asdict(cfg), "inputs": inputs}, tmp)
        os.replace(tmp, state_path)

    end = cfg.max_steps if stop_after is None else min(cfg.max_steps, step + stop_after)
    bar = tqdm(total=cfg.max_steps, initial=step, desc=f"train {cfg.name}", unit="step",
               disable=not progress)
    recent: list[float] = []
    for m in parts.values():
        m.train()
    with log_path.open("a") as log:
        while step < end:
            for gp in opt.param_groups:
                gp["lr"] = lr_at(cfg, step)
            loss, extra = step_fn(step)
            if not math.isfinite(loss.item()):
                raise BenchError(f"training '{cfg.name}' diverged at step {step} (loss "
                                 f"{loss.item()}); lower lr (now {cfg.lr}) or raise warmup_steps.")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            if ema is not None:
                ema.step(params)
            recent.append(loss.item())
            log.write(json.dumps({"step": step, "loss": loss.item(), **extra}) + "\n")
            step += 1
            if step % cfg.log_every == 0:
                log.flush()
                bar.set_postfix(loss=f"{np.mean(recent[-cfg.log_every:]):.4f}")
            bar.update(1)
            if step % cfg.checkpoint_every == 0 or step == end:
                log.flush()
                save_state()
    bar.close()
    return step, log_path


def _setup(cfg: Any, device: str | None) -> torch.device:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _losses(log_path: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in log_path.read_text().splitlines() if ln]


def _command(cfg: Any, command: str | None) -> str:
    return command or f"bench train bench/train_configs/{cfg.name}.yaml"


def train_vae(cfg: VaeTrainConfig, command: str | None = None, device: str | None = None,
              progress: bool = True, stop_after: int | None = None) -> dict[str, Any]:
    """Train (or resume) the VAE to ``cfg.max_steps``, then set its scaling factor, evaluate
    PSNR and export. ``stop_after`` ends early without exporting (tests, interrupting)."""
    dev = _setup(cfg, device)
    imgs_u8, _, data_hash = load_images(cfg.dataset, cfg.limit)
    imgs = pad_images(imgs_u8)
    torch.manual_seed(cfg.seed)  # model init
    vae = build_vae(cfg).to(dev)
    params = list(vae.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    t0 = time.time()
    step, log_path = run_loop(cfg, {"vae": vae}, opt, params,
                              lambda k: vae_loss_at(cfg, vae, imgs, k), {"data": data_hash}, dev,
                              progress, stop_after)
    summary: dict[str, Any] = {"step": step, "seconds": time.time() - t0, "data_hash": data_hash}
    if step < cfg.max_steps:
        return summary
    vae.eval()
    n_scale = min(cfg.scale_images or len(imgs), len(imgs))
    mean, std = posterior(vae, imgs[:n_scale])
    z = mean + std * torch.randn(mean.shape, generator=_gen(cfg.seed, 3))
    stats = {"latent_mean": float(z.mean()), "latent_std": float(z.std()),
             "latent_rms": float(z.pow(2).mean().sqrt()), "posterior_std_mean": float(std.mean()),
             "n_scale_images": n_scale}
    vae.register_to_config(scaling_factor=1.0 / stats["latent_std"])
    ev_u8, _, ev_hash = load_images(cfg.eval_dataset, cfg.eval_limit)
    scores = {**psnr(ev_u8, reconstruct(vae, ev_u8)), "eval_dataset": cfg.eval_dataset,
              "n_eval": int(len(ev_u8)), "eval_sha256": ev_hash}
    summary.update(eval=scores, scaling_factor=vae.config.scaling_factor,
                   export=str(export_vae(cfg, vae, data_hash, len(imgs), stats, scores, log_path,
                                         command)))
    return summary


def export_vae(cfg: VaeTrainConfig, vae: Any, data_hash: str, n_data: int, stats: dict[str, Any],
               scores: dict[str, Any], log_path: Path, command: str | None) -> Path:
    """``save_pretrained`` (safetensors) + training.json + README model card."""
    folder = cfg.out_dir / "model"
    vae.cpu().save_pretrained(folder, safe_serialization=True)
    logs = _losses(log_path)
    losses = [r["loss"] for r in logs]
    meta = {"name": cfg.name, "config": asdict(cfg), "data": cfg.dataset, "data_sha256": data_hash,
            "n_data": n_data, "steps": cfg.max_steps, "seed": cfg.seed,
            "final_loss_last100": float(np.mean(losses[-100:])),
            "final_rec_last100": float(np.mean([r["rec"] for r in logs[-100:]])),
            "final_kl_last100": float(np.mean([r["kl"] for r in logs[-100:]])),
            "first_losses": losses[:20], "scaling_factor": vae.config.scaling_factor,
            "latents": stats, "eval": scores,
            "latent_shape": [cfg.latent_channels, *[IMAGE_SIZE // 2 ** (len(cfg.block_out_channels) - 1)] * 2],
            "parameters": sum(p.numel() for p in vae.parameters()),
            "weights_sha256": file_sha256(folder / "diffusion_pytorch_model.safetensors"),
            "command": _command(cfg, command), "torch": torch.__version__,
            "platform": platform.machine()}
    (folder / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
    (folder / "README.md").write_text(vae_card(meta))
    return folder


def vae_card(meta: dict[str, Any]) -> str:
    cfg, ev, lat = meta["config"], meta["eval"], meta["latents"]
    c, h, w = meta["latent_shape"]
    return f"""# {meta['name']}

The autoencoder of the latent text-to-image model `fmnist-t2i`: a diffusers `AutoencoderKL`
(Kingma & Welling, 2014; as in Rombach et al., 2022, latent diffusion) trained by this repository
on Fashion-MNIST, 1 channel, 32x32 (28x28 zero-padded by 2 with the background value -1 after
scaling pixels to [-1, 1]) -> latents {c}x{h}x{w}. Load with `AutoencoderKL.from_pretrained(folder)`;
`bench.train_latent.reconstruct(vae, images_uint8)` gives uint8 reconstructions (posterior mean).

| field | value |
|---|---|
| training command | `{meta['command']}` |
| data | `{meta['data']}` ({meta['n_data']} images) |
| data sha256 (decoded pixels) | `{meta['data_sha256']}` |
| network | channels {cfg['block_out_channels']}, {cfg['layers_per_block']} ResNet block(s) per level, {meta['parameters'] / 1e6:.2f} M parameters |
| loss | {cfg['recon_loss'].upper()} reconstruction (mean over pixels) + {cfg['kl_weight']:g} x KL (per-image sum, divided by the pixel count: LDM's units) |
| optimiser | AdamW lr {cfg['lr']} (warm-up {cfg['warmup_steps']}, {cfg['lr_schedule']}), batch {cfg['batch_size']}, grad clip {cfg['grad_clip']}, fp32 |
| steps | {meta['steps']} (seed {meta['seed']}) |
| final loss / reconstruction / KL (mean of last 100 steps) | {meta['final_loss_last100']:.5f} / {meta['final_rec_last100']:.5f} / {meta['final_kl_last100']:.1f} |
| scaling_factor | {meta['scaling_factor']:.6f} = 1 / std of posterior samples of the first {lat['n_scale_images']} training images (latent mean {lat['latent_mean']:.4f}, std {lat['latent_std']:.4f}; mean posterior std {lat['posterior_std_mean']:.2e}) |
| weights sha256 | `{meta['weights_sha256']}` |
| trained with | torch {meta['torch']} on {meta['platform']} |

Reconstruction on `{ev['eval_dataset']}` ({ev['n_eval']} images, posterior mean, 28x28 crop, uint8):
PSNR {ev['psnr']:.2f} dB over the set's mean squared error, {ev['psnr_mean_per_image']:.2f} dB
averaged per image. Reconstruction FID: `python -m bench.train_latent FOLDER {ev['eval_dataset']} rec.npz`,
then `bench fid rec.npz {ev['eval_dataset']} --resize clean` (Inception pool3 against the same set).

First losses (steps 0-19), reproducible from the same config and seed:
`{', '.join(f'{x:.6f}' for x in meta['first_losses'])}`
"""


# ------------------------------------------------------------------------------------ t2i
def _resolve(where: str, fld: str, value: str) -> Path:
    """A ``vae`` / ``text_encoder`` folder: absolute, or relative to the repository root."""
    p = Path(value)
    p = p if p.is_absolute() else ROOT / p
    if not p.is_dir():
        made_by = ("bench train bench/train_configs/fmnist-vae.yaml --out bench/checkpoints/fmnist-vae"
                   if fld == "vae" else
                   "bench train bench/train_configs/fmnist-t2i-text.yaml --out bench/checkpoints/fmnist-t2i-text")
        parts = Path(value).parts
        if len(parts) >= 3 and parts[-1] == "model" and (ROOT / "bench/train_configs" / f"{parts[-2]}.yaml").is_file():
            made_by = (f"bench train bench/train_configs/{parts[-2]}.yaml --out "
                       f"{Path(*parts[:-1])}")
        what = ("an AutoencoderKL folder (a 'kind: vae' export)" if fld == "vae" else
                "a transformers CLIPModel folder with its tokenizer (a 'kind: clip' export)")
        raise BenchError(f"{where}: field '{fld}' = {value!r}: no such folder ({p}). It must be "
                         f"{what}; make it with '{made_by}' (relative paths are read from the "
                         f"repository root, {ROOT}).")
    return p


def _folder_hash(folder: Path) -> str:
    """sha256 over a model folder's config, weights and tokenizer files."""
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        if f.is_file() and (f.suffix in (".safetensors", ".bin", ".txt") or f.name.endswith(".json")) \
                and f.name != "training.json":
            h.update(f"{f.name}:{file_sha256(f)}".encode())
    return h.hexdigest()


def load_vae(where: str, value: str, device: torch.device) -> tuple[Any, str]:
    """The frozen VAE of field ``vae`` and its folder hash; wrong kinds and sizes are refused."""
    p = _resolve(where, "vae", value)
    try:
        conf = json.loads((p / "config.json").read_text())
    except (OSError, ValueError):
        conf = {}
    if conf.get("_class_name") != "AutoencoderKL":
        what = conf.get("_class_name") or (conf.get("architectures") or [None])[0]
        raise BenchError(f"{where}: field 'vae' = {value!r}: {p / 'config.json'} describes "
                         f"{what!r}, not an AutoencoderKL; give the 'model' folder of a "
                         f"'kind: vae' training run.")
    if conf.get("in_channels") != 1 or conf.get("out_channels") != 1:
        raise BenchError(f"{where}: field 'vae' = {value!r}: the VAE maps "
                         f"{conf.get('in_channels')} -> {conf.get('out_channels')} channels; the "
                         f"t2i trainer works on 1-channel images (a 'kind: vae' export).")
    levels = len(conf.get("block_out_channels", []))
    if levels < 1 or IMAGE_SIZE % 2 ** (levels - 1):
        raise BenchError(f"{where}: field 'vae' = {value!r}: {levels} levels do not downsample "
                         f"{IMAGE_SIZE}x{IMAGE_SIZE} evenly.")
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(p, local_files_only=True, low_cpu_mem_usage=False)
    vae.requires_grad_(False)
    return vae.to(device).eval(), _folder_hash(p)


def load_text_encoder(where: str, value: str, device: torch.device) -> tuple[Any, Any, str]:
    """(CLIPTextModel, CLIPTokenizer, folder hash) of field ``text_encoder``: a CLIPModel
    folder's text tower (or a CLIPTextModel folder) and the tokenizer saved beside it."""
    p = _resolve(where, "text_encoder", value)
    try:
        kind = json.loads((p / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        kind = None
    if kind not in ("clip", "clip_text_model"):
        raise BenchError(f"{where}: field 'text_encoder' = {value!r}: {p / 'config.json'} has "
                         f"model_type {kind!r}; give a transformers CLIPModel folder (a 'kind: clip' "
                         f"export) or a CLIPTextModel folder, with its tokenizer.")
    from transformers import CLIPModel, CLIPTextModel, CLIPTokenizer

    try:
        tok = CLIPTokenizer.from_pretrained(p, local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise BenchError(f"{where}: field 'text_encoder' = {value!r}: no CLIP tokenizer in {p} "
                         f"({exc}).") from None
    if kind == "clip":
        clip = CLIPModel.from_pretrained(p, local_files_only=True)
        text = CLIPTextModel(clip.config.text_config)
        # transformers 5: clip.text_model is a CLIPTextModel; 4.x: the tower inside one
        getattr(text, "text_model", text).load_state_dict(clip.text_model.state_dict())
        del clip
    else:
        text = CLIPTextModel.from_pretrained(p, local_files_only=True)
    n_pos = text.config.max_position_embeddings
    if tok.model_max_length > n_pos:
        raise BenchError(f"{where}: field 'text_encoder' = {value!r}: the tokenizer pads to "
                         f"{tok.model_max_length} tokens but the encoder has {n_pos} positions.")
    text.requires_grad_(False)
    return text.to(device).eval(), tok, _folder_hash(p)


@torch.no_grad()
def encode_text(tokenizer: Any, text_encoder: Any, prompts: list[str]) -> Tensor:
    """Last hidden states of ``prompts`` exactly as ``StableDiffusionPipeline.encode_prompt``
    computes them: padding="max_length" to ``model_max_length``, truncation, and an attention
    mask only if the encoder's config sets ``use_attention_mask``."""
    device = next(text_encoder.parameters()).device
    enc = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt")
    mask = enc.attention_mask.to(device) if getattr(text_encoder.config, "use_attention_mask", False) else None
    return text_encoder(enc.input_ids.to(device), attention_mask=mask)[0].float().cpu()


class TextCache:
    """Text states per distinct caption string. The whole training caption space (and "") is
    encoded up front in sorted order and fixed chunks, anything else alone when first asked
    for, so a caption's states never depend on which other captions a run met first."""

    def __init__(self, tokenizer: Any, text_encoder: Any, known: list[str]) -> None:
        self.tok, self.enc = tokenizer, text_encoder
        texts = sorted(set(known) | {""})
        self.index = {t: i for i, t in enumerate(texts)}
        self.states = torch.cat([encode_text(tokenizer, text_encoder, texts[i:i + CHUNK])
                                 for i in range(0, len(texts), CHUNK)])

    def __call__(self, texts: list[str]) -> Tensor:
        new = [t for t in dict.fromkeys(texts) if t not in self.index]
        if new:
            extra = [encode_text(self.tok, self.enc, [t]) for t in new]
            self.states = torch.cat([self.states, *extra])
            self.index.update({t: len(self.index) + i for i, t in enumerate(new)})
        return self.states[[self.index[t] for t in texts]]


def cached_posterior(vae: Any, vae_hash: str, images_u8: np.ndarray, data_hash: str) -> tuple[Tensor, Tensor]:
    """The VAE posterior (mean, std) of every training image, computed once in fixed chunks and
    kept in the bench cache folder ($BENCH_CACHE_DIR, else ~/.cache/bench) under a key of the
    VAE's weights and the data's content (so it is never stale)."""
    key = hashlib.sha256(f"{vae_hash}|{data_hash}|{len(images_u8)}|{CHUNK}".encode()).hexdigest()[:32]
    path = cache_file().parent / "latents" / f"{key}.pt"
    if path.is_file():
        try:
            got = torch.load(path, map_location="cpu", weights_only=True)
            if got.get("key") == key:
                return got["mean"], got["std"]
        except Exception:  # unreadable cache: recompute it
            pass
    mean, std = posterior(vae, pad_images(images_u8))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save({"key": key, "mean": mean, "std": std}, tmp)
    os.replace(tmp, path)
    return mean, std


def build_unet(cfg: T2ITrainConfig, latent_channels: int, latent_size: int, text_dim: int) -> Any:
    from diffusers import UNet2DConditionModel

    n = len(cfg.block_out_channels)
    lv = set(cfg.cross_attention_levels)
    down = tuple("CrossAttnDownBlock2D" if i in lv else "DownBlock2D" for i in range(n))
    up = tuple("CrossAttnUpBlock2D" if i in lv else "UpBlock2D" for i in reversed(range(n)))
    return UNet2DConditionModel(sample_size=latent_size, in_channels=latent_channels,
                                out_channels=latent_channels,
                                block_out_channels=tuple(cfg.block_out_channels),
                                down_block_types=down, up_block_types=up,
                                layers_per_block=cfg.layers_per_block,
                                cross_attention_dim=text_dim, attention_head_dim=cfg.attention_heads,
                                norm_num_groups=cfg.norm_num_groups)


def build_scheduler(cfg: T2ITrainConfig) -> Any:
    """Stable Diffusion's DDIM configuration on the training betas: deterministic (eta 0),
    first-order, no clipping (latents are not bounded), ``steps_offset`` 1 as SD ships it."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_start=cfg.beta_start,
                         beta_end=cfg.beta_end, beta_schedule="scaled_linear",
                         prediction_type="epsilon", clip_sample=False, set_alpha_to_one=False,
                         steps_offset=1)


def t2i_loss_at(cfg: T2ITrainConfig, unet: Any, sched: Any, data: Any, latents: tuple[Tensor, Tensor],
                scale: float, text: TextCache, step: int) -> tuple[Tensor, dict[str, float]]:
    """The epsilon-prediction loss of step ``step``: batch from the epoch's permutation, image i's
    caption ``captions_for(data, [i], caption_seed, epoch, caption_perturb, perturb_rules)``; timesteps, noise, caption dropout
    and the latent sample from generator (seed, 2, step), drawn in that order."""
    from bench.train_clip import captions_for

    n = len(data.labels)
    idx = step_batch(cfg, step, n)
    epoch = step // (n // cfg.batch_size)
    caps = captions_for(data, idx.numpy(), cfg.caption_seed, epoch, cfg.caption_perturb,
                        cfg.perturb_rules)
    mean, std = latents[0][idx], latents[1][idx]
    g = _gen(cfg.seed, 2, step)
    b = len(idx)
    t = torch.randint(0, cfg.num_train_timesteps, (b,), generator=g)
    noise = torch.randn(mean.shape, generator=g)
    drop = (torch.rand(b, generator=g) < cfg.caption_dropout).tolist()
    eps = torch.randn(mean.shape, generator=g)
    z0 = (mean + std * eps if cfg.latents == "sample" else mean) * scale
    states = text(["" if d else c for d, c in zip(drop, caps)])
    device = next(unet.parameters()).device
    z0, t, noise = z0.to(device), t.to(device), noise.to(device)
    zt = sched.add_noise(z0, noise, t)
    pred = unet(zt, t, encoder_hidden_states=states.to(device)).sample
    return torch.nn.functional.mse_loss(pred.float(), noise), {"dropped": int(sum(drop))}


def train_t2i(cfg: T2ITrainConfig, command: str | None = None, device: str | None = None,
              progress: bool = True, stop_after: int | None = None) -> dict[str, Any]:
    """Train (or resume) the text-conditional UNet to ``cfg.max_steps`` and export the
    StableDiffusionPipeline folder. ``stop_after`` ends early without exporting."""
    from bench.data.captions import training_caption_space

    where = f"training config '{cfg.name}'"
    dev = _setup(cfg, device)
    vae, vae_hash = load_vae(where, cfg.vae, dev)
    text_encoder, tok, text_hash = load_text_encoder(where, cfg.text_encoder, dev)
    from bench.train_clip import load_captioned

    data = load_captioned(cfg.dataset, cfg.limit)
    if len(data.labels) < cfg.batch_size:
        raise BenchError(f"{where}: field 'batch_size' = {cfg.batch_size}: the data have only "
                         f"{len(data.labels)} images.")
    latents = cached_posterior(vae, vae_hash, data.images, data.content_hash)
    scale = float(vae.config.scaling_factor)
    text = TextCache(tok, text_encoder, sorted(training_caption_space()))
    latent_size = IMAGE_SIZE // 2 ** (len(vae.config.block_out_channels) - 1)
    from diffusers.training_utils import EMAModel

    torch.manual_seed(cfg.seed)  # model init
    unet = build_unet(cfg, int(vae.config.latent_channels), latent_size,
                      int(text_encoder.config.hidden_size)).to(dev)
    sched = build_scheduler(cfg)
    params = list(unet.parameters())
    ema = EMAModel(params, decay=cfg.ema_max_decay, use_ema_warmup=True, inv_gamma=1.0,
                   power=cfg.ema_power)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    inputs = {"data": data.content_hash, "vae": vae_hash, "text_encoder": text_hash}
    t0 = time.time()
    step, log_path = run_loop(cfg, {"unet": unet}, opt, params,
                              lambda k: t2i_loss_at(cfg, unet, sched, data, latents, scale, text, k),
                              inputs, dev, progress, stop_after, ema=ema)
    summary: dict[str, Any] = {"step": step, "seconds": time.time() - t0, "data_hash": data.content_hash}
    if step >= cfg.max_steps:
        ema.copy_to(unet.parameters())
        summary["export"] = str(export_t2i(cfg, unet, vae, text_encoder, tok, sched, inputs,
                                           len(data.labels), log_path, command))
    return summary


def export_t2i(cfg: T2ITrainConfig, unet: Any, vae: Any, text_encoder: Any, tok: Any, sched: Any,
               inputs: dict[str, str], n_data: int, log_path: Path, command: str | None) -> Path:
    """A StableDiffusionPipeline folder (EMA weights, safetensors) + training.json + README."""
    from diffusers import StableDiffusionPipeline

    folder = cfg.out_dir / "model"
    unet.eval()
    # from_pretrained records the folder it read as _name_or_path; a shipped config must not
    # carry this machine's path
    vae.register_to_config(_name_or_path="")
    dtype = getattr(torch, cfg.save_dtype)
    pipe = StableDiffusionPipeline(vae=vae.cpu(), text_encoder=text_encoder.cpu().to(dtype),
                                   tokenizer=tok, unet=unet.cpu().to(dtype), scheduler=sched,
                                   safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    unet.float()
    text_encoder.float()
    if cfg.link_vae:
        link_vae(folder, _resolve(f"training config '{cfg.name}'", "vae", cfg.vae))
    for sub, fld in (("vae", "vae"), ("text_encoder", "text_encoder")):  # the sources' cards
        if (folder / sub).is_symlink():
            continue
        src = _resolve(f"training config '{cfg.name}'", fld, getattr(cfg, fld))
        for name in ("README.md", "training.json"):
            if (src / name).is_file():
                shutil.copyfile(src / name, folder / sub / f"source_{name}")
        if sub == "text_encoder":  # CLIP's own tokenizer files beside tokenizer.json (older readers)
            for name in ("vocab.json", "merges.txt"):
                if (src / name).is_file() and not (folder / "tokenizer" / name).exists():
                    shutil.copyfile(src / name, folder / "tokenizer" / name)
    losses = [r["loss"] for r in _losses(log_path)]
    count = {k: sum(p.numel() for p in m.parameters())
             for k, m in (("unet", unet), ("vae", vae), ("text_encoder", text_encoder))}
    meta = {"name": cfg.name, "config": asdict(cfg), "data": cfg.dataset,
            "data_sha256": inputs["data"], "n_data": n_data, "steps": cfg.max_steps,
            "seed": cfg.seed, "final_loss_last100": float(np.mean(losses[-100:])),
            "first_losses": losses[:20], "parameters": count,
            "vae_sha256": inputs["vae"], "text_encoder_sha256": inputs["text_encoder"],
            "scaling_factor": float(vae.config.scaling_factor),
            "latent_shape": [int(unet.config.in_channels), int(unet.config.sample_size),
                             int(unet.config.sample_size)],
            "text": {"hidden_size": int(text_encoder.config.hidden_size),
                     "model_max_length": int(tok.model_max_length)},
            "weights_sha256": file_sha256(folder / "unet" / "diffusion_pytorch_model.safetensors"),
            "command": _command(cfg, command), "torch": torch.__version__,
            "platform": platform.machine()}
    (folder / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
    (folder / "README.md").write_text(t2i_card(meta))
    return folder


def link_vae(folder: Path, source: Path) -> None:
    """Replace the exported ``folder/vae`` by a relative link to ``source``, the VAE folder it
    was loaded from, after checking their weights are the same bytes (no second copy shipped)."""
    name = "diffusion_pytorch_model.safetensors"
    if file_sha256(folder / "vae" / name) != file_sha256(source / name):
        raise BenchError(f"link_vae: the exported VAE weights differ from '{source / name}'; "
                         f"export the VAE as a copy (link_vae: false).")
    shutil.rmtree(folder / "vae")
    (folder / "vae").symlink_to(os.path.relpath(source.resolve(), folder.resolve()),
                                target_is_directory=True)


def t2i_card(meta: dict[str, Any]) -> str:
    cfg, n = meta["config"], meta["parameters"]
    c, h, w = meta["latent_shape"]
    perturb = (f"\n| caption perturbation | {100 * cfg['caption_perturb']:g}% of training captions drawn "
               f"for one change by a rule of {cfg['perturb_rules']} (one word, <= 10% of the "
               f"characters; `bench.train_clip.perturb_caption`), robustness training against the "
               f"prompt attacks of Gao et al. 2023 |" if cfg.get("caption_perturb") else "")
    stored = (f"\n| weights stored | UNet and text encoder in {cfg['save_dtype']} (trained in fp32; "
              f"loaders upcast) |" if cfg.get("save_dtype", "float32") != "float32" else "")
    if cfg.get("link_vae"):
        stored += (f"\n| vae/ | a relative link to `{cfg['vae']}` (the same weights, shipped once; "
                   f"its card is that folder's README.md) |")
    return f"""# {meta['name']}

A small StableDiffusion-style latent text-to-image model (Rombach et al., 2022) trained by this
repository on Fashion-MNIST with generated captions (`bench/data/captions.py`): 32x32 grayscale
images (28x28 padded by 2 with the background). A diffusers `StableDiffusionPipeline` folder:
`unet/` (`UNet2DConditionModel`, EMA weights), `vae/` (`AutoencoderKL`, frozen), `text_encoder/`
(`CLIPTextModel`, the frozen text tower of a CLIP trained separately from the scorer
`fmnist-clip`), `tokenizer/`, `scheduler/` (`DDIMScheduler`, Stable Diffusion's settings on the
training betas), no safety checker. `vae/source_README.md` and `text_encoder/source_README.md`
are the cards of the folders those components were taken from (the VAE's reconstruction PSNR;
the whole CLIP's evaluation). Open it offline with
`StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)` (images 32x32, 1 channel)
or in a suite as `{{name: diffusers, params: {{path: FOLDER, guidance: {{scale: 3.0}}}}}}` with
`conditions: {{prompts: ...}}`.

| field | value |
|---|---|
| training command | `{meta['command']}` |
| data | `{meta['data']}` ({meta['n_data']} images), caption seed {cfg['caption_seed']} (image i in epoch e: its e-th caption) |
| data sha256 (decoded pixels) | `{meta['data_sha256']}` |{perturb}
| VAE | `{cfg['vae']}` (folder sha256 `{meta['vae_sha256'][:16]}...`), latents {c}x{h}x{w}, scaling_factor {meta['scaling_factor']:.6f}, {n['vae'] / 1e6:.2f} M parameters |
| text encoder | `{cfg['text_encoder']}` (folder sha256 `{meta['text_encoder_sha256'][:16]}...`), width {meta['text']['hidden_size']}, {meta['text']['model_max_length']} tokens, {n['text_encoder'] / 1e6:.2f} M parameters |
| conditioning | cross-attention to the last hidden states (as `encode_prompt`: padded to max length, no mask); captions replaced by "" with probability {cfg['caption_dropout']} for classifier-free guidance (Ho & Salimans, 2022) |
| latents | posterior {cfg['latents']} x scaling_factor |
| network | UNet2DConditionModel, channels {cfg['block_out_channels']}, cross-attention at levels {cfg['cross_attention_levels']} and the mid block, {cfg['attention_heads']} heads, {n['unet'] / 1e6:.2f} M parameters |
| objective | epsilon prediction, {cfg['num_train_timesteps']} steps, scaled_linear betas {cfg['beta_start']} to {cfg['beta_end']} |
| optimiser | AdamW lr {cfg['lr']} (warm-up {cfg['warmup_steps']}, {cfg['lr_schedule']}), batch {cfg['batch_size']}, grad clip {cfg['grad_clip']}, fp32 |
| EMA | warm-up power {cfg['ema_power']:.3g}, max decay {cfg['ema_max_decay']} (weights shipped are the EMA) |
| steps | {meta['steps']} (seed {meta['seed']}) |
| final loss (mean of last 100 steps) | {meta['final_loss_last100']:.5f} |
| UNet weights sha256 | `{meta['weights_sha256']}` |{stored}
| trained with | torch {meta['torch']} on {meta['platform']} |

First losses (steps 0-19), reproducible from the same config, seed, VAE and text encoder:
`{', '.join(f'{x:.6f}' for x in meta['first_losses'])}`

Intended use: tests and examples of the harness's text-to-image path offline (CLIPScore with the
separate `fmnist-clip`, held-out prompts in `suites/prompts/fmnist-t2i-eval.csv`). It knows ten
garment classes and three attributes at 32x32; it is not a general text-to-image model.
"""


# ------------------------------------------------------------------------------------ CLI
def main(args: Any, kind: str) -> int:
    cls, fn = {"vae": (VaeTrainConfig, train_vae), "t2i": (T2ITrainConfig, train_t2i)}[kind]
    cfg = cls.from_yaml(args.config, args.set)
    if args.out:
        cfg.out = args.out
    if args.max_steps is not None:
        cfg.max_steps = args.max_steps
    command = "bench train " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    summary = fn(cfg, command=command, device=args.device)
    print(json.dumps(summary))
    return 0


def reconstruct_main(argv: list[str] | None = None) -> int:
    """``python -m bench.train_latent VAE_FOLDER DATASET OUT.npz``: a data set's reconstructions
    through a VAE (posterior mean, uint8, key ``images``) and their PSNR; score them with
    ``bench fid OUT.npz DATASET --resize clean`` (the reconstruction FID of a model card)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m bench.train_latent", description=reconstruct_main.__doc__)
    ap.add_argument("vae", help="an AutoencoderKL folder (e.g. bench/checkpoints/fmnist-vae/model)")
    ap.add_argument("dataset", help="a registered data set (fmnist-test)")
    ap.add_argument("out", help="the .npz to write")
    ap.add_argument("--limit", type=int, default=0, help="first N images only (0: all)")
    a = ap.parse_args(argv)
    vae, vae_hash = load_vae("reconstruct", a.vae, torch.device("cpu"))
    images, _, data_hash = load_images(a.dataset, a.limit)
    rec = reconstruct(vae, images)
    np.savez(a.out, images=rec)
    print(json.dumps({"vae_sha256": vae_hash, "data_sha256": data_hash, "n": len(rec),
                      **psnr(images, rec), "out": a.out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(reconstruct_main())
