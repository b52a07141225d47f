"""``bench train CONFIG``: train a small DDPM on an image data set and export it in diffusers format.

DDPM (Ho et al., 2020, "Denoising Diffusion Probabilistic Models"): 1000-step linear betas,
``epsilon`` or ``v_prediction`` targets (v: Salimans & Ho, 2022, "Progressive Distillation"),
a diffusers ``UNet2DModel``, an EMA of the weights, and optional class conditioning with a null
class and label dropout so that classifier-free guidance works (Ho & Salimans, 2022).

Determinism and resumption: every random draw of step ``k`` (the batch's images, its timesteps,
noise and label dropout) comes from a generator seeded by ``(seed, k)`` and the epoch's data
order from ``(seed, epoch)``, so a run resumed from any checkpoint takes exactly the steps an
uninterrupted run takes. ``state.pt`` in the output folder holds model, EMA, optimiser and step;
rerunning the same command resumes from it. The final EMA weights are saved with
``save_pretrained`` (safetensors + scheduler config) together with a model card.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor

from bench.errors import BenchError, close_matches
from bench.hashing import file_sha256
from bench.suite import safe_load
from bench.models.zoo import TRAIN_CONFIGS as CONFIG_DIR
#: config fields that may change between a run and its resumption (they do not change the steps)
RESUMABLE_CHANGES = {"max_steps", "checkpoint_every", "log_every", "threads", "out"}


def _read_config(p: Path) -> dict[str, Any]:
    """A training YAML as a mapping; unreadable, non-UTF-8 or invalid YAML is a BenchError."""
    try:
        text = p.read_text()
    except UnicodeDecodeError:
        raise BenchError(f"{p}: field '(file)': is not UTF-8 text. Fix: save it as UTF-8.") from None
    except OSError as exc:
        raise BenchError(f"{p}: field '(file)': cannot be read ({exc.strerror or exc}). Fix: "
                         f"check the path and its permissions.") from None
    try:
        raw = safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise BenchError(f"{p}: field '(file)': is not valid YAML{where}: "
                         f"{getattr(exc, 'problem', None) or exc}. Fix: correct the YAML syntax.") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise BenchError(f"{p}: field '(file)': must be a mapping of fields, got a "
                         f"{type(raw).__name__}. Fix: write 'key: value' lines.")
    return raw


def _check_type(p: Path, name: str, value: Any, annotation: str) -> None:
    """A field's value against its annotation (int, float, str, list[int])."""
    def whole(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    ok = {"int": whole(value), "float": number(value), "str": isinstance(value, str),
          "list[int]": isinstance(value, list) and all(whole(v) for v in value)}.get(annotation, True)
    if not ok:
        want = {"int": "a whole number", "float": "a number", "str": "a string",
                "list[int]": "a list of whole numbers"}[annotation]
        hint = "see bench/train_configs/*.yaml"
        if annotation == "float" and isinstance(value, str):
            try:
                if math.isfinite(float(value)):
                    hint = f"write {float(value)!r} (YAML reads {value!r} without a '.' as text)"
            except ValueError:
                pass
        raise BenchError(f"{p}: field '{name}' must be {want}, got {value!r} "
                         f"({type(value).__name__}). Fix: {hint}.")


def config_path(path: str | Path) -> Path:
    """A training YAML given as a file or as the name of one in bench/train_configs."""
    p = Path(path)
    if p.is_file():
        return p
    named = CONFIG_DIR / f"{path}.yaml"
    if named.is_file():
        return named
    known = sorted(q.stem for q in CONFIG_DIR.glob("*.yaml"))
    raise BenchError(f"training config '{path}' not found: give a YAML file or one of "
                     f"{', '.join(known)}.{close_matches(str(path), known)}")


def read_config(cls: Any, path: str | Path, overrides: list[str] | None = None) -> Any:
    """A training YAML (plus ``--set`` overrides) as the config dataclass ``cls``: unknown,
    missing and mistyped fields are BenchErrors naming the field."""
    p = config_path(path)
    raw = _read_config(p)
    for o in overrides or []:
        if "=" not in o:
            raise BenchError(f"--set {o!r}: expected KEY=VALUE, e.g. --set max_steps=100")
        k, v = o.split("=", 1)
        try:
            raw[k.strip()] = safe_load(v)
        except yaml.YAMLError:
            raw[k.strip()] = v
    names = {f.name for f in fields(cls)}
    for k in raw:
        if k not in names:
            raise BenchError(f"{p}: field '{k}' is not a training option.{close_matches(k, names)} "
                             f"Known: {', '.join(sorted(names))}.")
    for f in fields(cls):
        if f.name not in raw:
            if f.default is MISSING and f.default_factory is MISSING:
                raise BenchError(f"{p}: field '{f.name}' is missing (required); add "
                                 f"'{f.name}: ...' (see bench/train_configs/*.yaml).")
            continue
        _check_type(p, f.name, raw[f.name], str(f.type))
    cfg = cls(**raw)
    cfg.validate(str(p))
    return cfg


@dataclass
class TrainConfig:
    """Fields of a training YAML (see bench/train_configs/*.yaml)."""

    name: str
    dataset: str = "fmnist-train"
    out: str = ""  # output folder; default checkpoints/<name>
    resolution: int = 28  # 28 (native) or 32 (zero-padded, as -1 after scaling)
    prediction_type: str = "epsilon"  # epsilon | v_prediction
    num_classes: int = 0  # 0: unconditional; else classes + 1 null class (index num_classes)
    label_dropout: float = 0.1
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    attention_levels: list[int] = field(default_factory=lambda: [2])  # levels with self-attention
    layers_per_block: int = 1
    norm_num_groups: int = 8
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    batch_size: int = 128
    max_steps: int = 2000
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_max_decay: float = 0.9995
    ema_power: float = 2 / 3
    precision: str = "bf16"  # bf16 (autocast) | fp32
    seed: int = 0
    threads: int = 0  # torch CPU threads; 0 = torch default
    checkpoint_every: int = 200
    log_every: int = 10

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> "TrainConfig":
        return read_config(cls, path, overrides)

    def validate(self, where: str) -> None:
        def bad(fld: str, val: Any, fix: str) -> None:
            raise BenchError(f"{where}: field '{fld}' = {val!r}: {fix}")

        if self.prediction_type not in ("epsilon", "v_prediction"):
            bad("prediction_type", self.prediction_type, "use 'epsilon' or 'v_prediction'.")
        if self.resolution not in (28, 32):
            bad("resolution", self.resolution, "use 28 (native) or 32 (zero-padded).")
        if self.precision not in ("bf16", "fp32"):
            bad("precision", self.precision, "use 'bf16' or 'fp32'.")
        if not 0 <= self.label_dropout < 1:
            bad("label_dropout", self.label_dropout, "use a probability in [0, 1).")
        if self.max_steps < 1 or self.batch_size < 1:
            bad("max_steps/batch_size", (self.max_steps, self.batch_size), "use positive integers.")
        levels = len(self.block_out_channels)
        if self.resolution % (2 ** (levels - 1)):
            bad("block_out_channels", self.block_out_channels,
                f"{levels} levels halve {self.resolution} {levels - 1} times; use fewer levels.")

    @property
    def out_dir(self) -> Path:
        return Path(self.out or f"checkpoints/{self.name}")


# ------------------------------------------------------------------------------------ pieces
def build_unet(cfg: TrainConfig) -> Any:
    from diffusers import UNet2DModel

    n = len(cfg.block_out_channels)
    down = tuple("AttnDownBlock2D" if i in cfg.attention_levels else "DownBlock2D" for i in range(n))
    up = tuple("AttnUpBlock2D" if i in cfg.attention_levels else "UpBlock2D"
               for i in reversed(range(n)))
    return UNet2DModel(sample_size=cfg.resolution, in_channels=1, out_channels=1,
                       block_out_channels=tuple(cfg.block_out_channels), down_block_types=down,
                       up_block_types=up, layers_per_block=cfg.layers_per_block,
                       norm_num_groups=cfg.norm_num_groups,
                       num_class_embeds=(cfg.num_classes + 1) if cfg.num_classes else None)


def build_scheduler(cfg: TrainConfig) -> Any:
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule="linear",
                         beta_start=cfg.beta_start, beta_end=cfg.beta_end,
                         prediction_type=cfg.prediction_type, clip_sample=True)


def load_training_data(cfg: TrainConfig) -> tuple[Tensor, Tensor, str]:
    """All training images as float32 in [-1, 1] (N,1,R,R), labels, and the data's content hash."""
    from bench.registry import DATASETS
    import bench.data  # noqa: F401  (registration)

    ds = DATASETS.get(cfg.dataset)()
    imgs = torch.from_numpy(np.array(ds.images(0, len(ds)), copy=True)).float() / 127.5 - 1.0
    if imgs.shape[1] != 1:
        raise BenchError(f"dataset '{cfg.dataset}': training expects 1-channel images, "
                         f"got {tuple(imgs.shape[1:])}.")
    pad = (cfg.resolution - imgs.shape[-1]) // 2
    if pad > 0:
        imgs = torch.nn.functional.pad(imgs, (pad, pad, pad, pad), value=-1.0)
    labels = torch.as_tensor(np.asarray(getattr(ds, "labels", np.zeros(len(ds))), dtype=np.int64))
    if cfg.num_classes and int(labels.max()) >= cfg.num_classes:
        raise BenchError(f"dataset '{cfg.dataset}' has label {int(labels.max())} but num_classes = "
                         f"{cfg.num_classes}; raise num_classes.")
    return imgs, labels, ds.content_hash()


def _gen(*key: int) -> torch.Generator:
    seed = int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "little") >> 1
    return torch.Generator().manual_seed(seed)


def step_batch(cfg: TrainConfig, step: int, n_data: int) -> Tensor:
    """Indices of step ``step``'s batch: epoch-wise permutations seeded by (seed, epoch)."""
    per_epoch = n_data // cfg.batch_size
    epoch, pos = divmod(step, per_epoch)
    perm = torch.randperm(n_data, generator=_gen(cfg.seed, 1, epoch))
    return perm[pos * cfg.batch_size:(pos + 1) * cfg.batch_size]


def loss_at(cfg: TrainConfig, unet: Any, sched: Any, x0: Tensor, y: Tensor, step: int) -> Tensor:
    """The DDPM simple loss of one batch; every random draw from generator (seed, 2, step)."""
    g = _gen(cfg.seed, 2, step)
    b = x0.shape[0]
    t = torch.randint(0, cfg.num_train_timesteps, (b,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    class_labels = None
    if cfg.num_classes:
        drop = torch.rand(b, generator=g) < cfg.label_dropout
        class_labels = torch.where(drop, torch.full_like(y, cfg.num_classes), y)
    device = next(unet.parameters()).device
    x0, t, noise = x0.to(device), t.to(device), noise.to(device)
    xt = sched.add_noise(x0, noise, t)
    target = noise if cfg.prediction_type == "epsilon" else sched.get_velocity(x0, noise, t)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
        pred = unet(xt, t, class_labels=None if class_labels is None else class_labels.to(device)).sample
    return torch.nn.functional.mse_loss(pred.float(), target)


def lr_at(cfg: TrainConfig, step: int) -> float:
    return cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))


# ------------------------------------------------------------------------------------ loop
def load_state(path: Path, device: torch.device,
               need: frozenset[str] = frozenset({"unet", "ema", "opt", "step", "config"})) -> dict[str, Any]:
    """A training checkpoint, read without unpickling arbitrary objects (``weights_only``): a
    crafted ``state.pt`` in the output folder cannot run code."""
    try:
        st = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # UnpicklingError for anything but tensors and plain containers
        raise BenchError(f"{path} cannot be read as a training checkpoint of tensors and plain "
                         f"values ({type(exc).__name__}); it was not written by 'bench train' or is "
                         f"damaged. Delete it to start over, or use another 'out' folder.") from None
    if not isinstance(st, dict) or need - set(st):
        raise BenchError(f"{path} is not a 'bench train' checkpoint (needs {sorted(need)}); delete "
                         f"it to start over, or use another 'out' folder.")
    return st


def train(cfg: TrainConfig, command: str | None = None, device: str | None = None,
          progress: bool = True, stop_after: int | None = None) -> dict[str, Any]:
    """Train (or resume) to ``cfg.max_steps``; returns a summary. ``stop_after`` ends early
    (used by tests and for interrupting) without exporting."""
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(cfg.seed)  # model init
    unet = build_unet(cfg).to(dev)
    sched = build_scheduler(cfg)
    ema = EMAModel(unet.parameters(), decay=cfg.ema_max_decay, use_ema_warmup=True,
                   inv_gamma=1.0, power=cfg.ema_power)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    imgs, labels, data_hash = load_training_data(cfg)

    out = cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
    state_path, log_path = out / "state.pt", out / "losses.jsonl"
    step = 0
    if state_path.exists():
        st = load_state(state_path, dev)
        if st["config"] != asdict(cfg):
            diff = {k: (st["config"].get(k), v) for k, v in asdict(cfg).items()
                    if st["config"].get(k) != v and k not in RESUMABLE_CHANGES}
            if diff:
                raise BenchError(f"{state_path} was written with another config (differs in "
                                 f"{diff}); use another 'out' folder or delete it to start over.")
        unet.load_state_dict(st["unet"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["opt"])
        step = int(st["step"])
    # keep only log lines of steps already taken (a crash may have left later ones)
    kept = []
    if log_path.exists():
        kept = [ln for ln in log_path.read_text().splitlines() if ln and json.loads(ln)["step"] < step]
    log_path.write_text("".join(ln + "\n" for ln in kept))

    def save_state() -> None:
        tmp = state_path.with_suffix(".tmp")
        torch.save({"unet": unet.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                    "step": step, "config": asdict(cfg)}, tmp)
        os.replace(tmp, state_path)

    end = cfg.max_steps if stop_after is None else min(cfg.max_steps, step + stop_after)
    bar = tqdm(total=cfg.max_steps, initial=step, desc=f"train {cfg.name}", unit="step",
               disable=not progress)
    losses: list[float] = []
    t0 = time.time()
    unet.train()
    with log_path.open("a") as log:
        while step < end:
            idx = step_batch(cfg, step, len(imgs))
            for gp in opt.param_groups:
                gp["lr"] = lr_at(cfg, step)
            loss = loss_at(cfg, unet, sched, imgs[idx], labels[idx], step)
            if not math.isfinite(loss.item()):
                raise BenchError(f"training '{cfg.name}' diverged at step {step} (loss "
                                 f"{loss.item()}); lower lr (now {cfg.lr}) or raise warmup_steps.")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(unet.parameters(), cfg.grad_clip)
            opt.step()
            ema.step(unet.parameters())
            losses.append(loss.item())
            log.write(json.dumps({"step": step, "loss": loss.item()}) + "\n")
            step += 1
            if step % cfg.log_every == 0:
                log.flush()
                bar.set_postfix(loss=f"{np.mean(losses[-cfg.log_every:]):.4f}")
            bar.update(1)
            if step % cfg.checkpoint_every == 0 or step == end:
                log.flush()
                save_state()
    bar.close()
    summary: dict[str, Any] = {"step": step, "seconds": time.time() - t0, "data_hash": data_hash}
    if step >= cfg.max_steps:
        summary["export"] = str(export(cfg, unet, ema, sched, data_hash, log_path, command, len(imgs)))
    return summary


def export(cfg: TrainConfig, unet: Any, ema: Any, sched: Any, data_hash: str, log_path: Path,
           command: str | None, n_data: int) -> Path:
    """Save the EMA weights with save_pretrained (UNet + scheduler) and write the model card."""
    from diffusers import DDPMPipeline

    folder = cfg.out_dir / "model"
    ema.copy_to(unet.parameters())
    unet.eval()
    # a DDPMPipeline folder: model_index.json + unet/ (safetensors) + scheduler/
    DDPMPipeline(unet=unet.to("cpu"), scheduler=sched).save_pretrained(folder, safe_serialization=True)
    losses = [json.loads(ln)["loss"] for ln in log_path.read_text().splitlines() if ln]
    final = float(np.mean(losses[-100:])) if losses else float("nan")
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    meta = {"name": cfg.name, "config": asdict(cfg), "data": cfg.dataset, "data_sha256": data_hash,
            "n_data": n_data, "steps": cfg.max_steps, "seed": cfg.seed, "final_loss_last100": final,
            "first_losses": losses[:20], "weights_sha256": file_sha256(weights),
            "command": command or f"bench train {cfg.name}",
            "torch": torch.__version__, "platform": platform.machine()}
    (folder / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
    (folder / "README.md").write_text(model_card(meta, unet))
    return folder


def model_card(meta: dict[str, Any], unet: Any) -> str:
    cfg = meta["config"]
    n = sum(p.numel() for p in unet.parameters())
    cond = (f"class-conditional: {cfg['num_classes']} classes + null class {cfg['num_classes']} "
            f"(label dropout {cfg['label_dropout']}, for classifier-free guidance)"
            if cfg["num_classes"] else "unconditional")
    return f"""# {meta['name']}

A DDPM (Ho et al., 2020) trained by this repository on Fashion-MNIST, saved as a diffusers
`DDPMPipeline` folder (`unet/`: `UNet2DModel` safetensors, `scheduler/`: `DDPMScheduler` config).
Suites use it by name (model `{meta['name']}`); any folder like it loads with the `diffusers`
model adapter (`{{name: diffusers, params: {{path: FOLDER}}}}`) or with
`DDPMPipeline.from_pretrained(folder)`.

| field | value |
|---|---|
| training command | `{meta['command']}` |
| data | `{meta['data']}` at {cfg['resolution']}x{cfg['resolution']}, pixels scaled to [-1, 1] |
| data sha256 (decoded pixels) | `{meta['data_sha256']}` |
| prediction type | `{cfg['prediction_type']}` |
| conditioning | {cond} |
| noise schedule | {cfg['num_train_timesteps']} steps, linear betas {cfg['beta_start']} to {cfg['beta_end']} |
| network | UNet2DModel, channels {cfg['block_out_channels']}, attention at levels {cfg['attention_levels']}, {n / 1e6:.2f} M parameters |
| optimiser | AdamW lr {cfg['lr']} (warm-up {cfg['warmup_steps']} steps), batch {cfg['batch_size']}, grad clip {cfg['grad_clip']}, {cfg['precision']} autocast |
| EMA | warm-up power {cfg['ema_power']:.3g}, max decay {cfg['ema_max_decay']} (weights shipped are the EMA) |
| steps | {meta['steps']} |
| seed | {meta['seed']} |
| final loss (mean of last 100 steps) | {meta['final_loss_last100']:.5f} |
| weights sha256 | `{meta['weights_sha256']}` |
| trained with | torch {meta['torch']} on {meta['platform']} |

First losses (steps 0-19), which `tests/test_train.py` reproduces from the same config and seed:
`{', '.join(f'{x:.6f}' for x in meta['first_losses'])}`

Intended use: tests and examples of the harness on a real network. Not a strong generative model:
it saw {meta['steps'] * cfg['batch_size'] / meta['n_data']:.1f} epochs ({meta['steps']} steps of batch {cfg['batch_size']}).
"""


def main(args: Any) -> int:
    kind = _read_config(config_path(args.config)).get("kind", "ddpm")
    if kind == "clip":
        from bench.train_clip import main as clip_main

        return clip_main(args)
    if kind in ("vae", "t2i"):
        from bench.train_latent import main as latent_main

        return latent_main(args, kind)
    if kind != "ddpm":
        raise BenchError(f"{args.config}: field 'kind' = {kind!r}: use 'clip' (a CLIP model), "
                         f"'vae' (an AutoencoderKL), 't2i' (a latent text-to-image UNet) or "
                         f"leave it out (a DDPM).")
    cfg = TrainConfig.from_yaml(args.config, args.set)
    if args.out:
        cfg.out = args.out
    if args.max_steps is not None:
        cfg.max_steps = args.max_steps
    command = "bench train " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    summary = train(cfg, command=command, device=args.device)
    print(json.dumps(summary))
    return 0
