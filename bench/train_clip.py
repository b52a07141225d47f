"""``bench train`` for ``kind: clip``: a small CLIP trained contrastively on captioned Fashion-MNIST.

CLIP (Radford et al., 2021, "Learning Transferable Visual Models From Natural Language
Supervision"): a ViT image encoder and a Transformer text encoder trained with the symmetric
InfoNCE loss over a batch, with a learned temperature. Captions come from
:mod:`bench.data.captions` (class nouns with synonyms and attributes measured from the pixels);
step ``s`` of epoch ``e`` gives image ``i`` its ``e``-th caption, so every epoch sees new text.
The tokenizer is a CLIP-layout byte-level BPE learned on the training captions
(:mod:`bench.tokenizer`).

The model is saved as a ``transformers`` ``CLIPModel`` folder with its tokenizer and a
``CLIPImageProcessor`` (grayscale repeated to RGB, no resize at 28x28, the data set's mean and
std), so ``CLIPModel.from_pretrained(folder)`` and torchmetrics' ``CLIPScore(model_name_or_path=
folder)`` load it offline. Determinism and resumption follow :mod:`bench.train`: every draw of
step ``k`` comes from a generator seeded by ``(seed, k)``; ``state.pt`` resumes.
"""

from __future__ import annotations

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
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from bench.errors import BenchError
from bench.hashing import file_sha256
from bench.train import load_state, read_config, step_batch

#: the Fashion-MNIST training set's pixel mean and std (of x / 255), used by the image processor
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530
#: captions per training image in the tokenizer's corpus
TOKENIZER_CAPTIONS = 4


@dataclass
class ClipTrainConfig:
    """Fields of a ``kind: clip`` training YAML (see bench/train_configs/fmnist-clip.yaml)."""

    name: str
    kind: str = "clip"
    dataset: str = "fmnist-train"
    eval_dataset: str = "fmnist-test"
    out: str = ""
    limit: int = 0  # use only the first `limit` images of each data set (tests); 0: all
    caption_seed: int = 0
    caption_perturb: float = 0.0  # share of training captions changed by one perturbation rule
    perturb_rules: list[str] = field(default_factory=lambda: ["typo", "glyph", "phonetic"])
    n_merges: int = 400
    context_length: int = 77
    projection_dim: int = 64
    patch_size: int = 4
    vision_width: int = 128
    vision_layers: int = 4
    text_width: int = 128
    text_layers: int = 3
    heads: int = 4
    batch_size: int = 256
    max_steps: int = 2000
    lr: float = 5e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    seed: int = 0
    threads: int = 0
    checkpoint_every: int = 200
    log_every: int = 10

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> "ClipTrainConfig":
        return read_config(cls, path, overrides)

    def validate(self, where: str) -> None:
        def bad(fld: str, val: Any, fix: str) -> None:
            raise BenchError(f"{where}: field '{fld}' = {val!r}: {fix}")

        if self.kind != "clip":
            bad("kind", self.kind, "use 'clip'.")
        if 28 % self.patch_size:
            bad("patch_size", self.patch_size, "use a divisor of 28 (2, 4, 7, 14).")
        if self.precision not in ("bf16", "fp32"):
            bad("precision", self.precision, "use 'bf16' or 'fp32'.")
        for fld in ("vision_width", "text_width"):
            if getattr(self, fld) % self.heads:
                bad(fld, getattr(self, fld), f"use a multiple of heads ({self.heads}).")
        if self.limit and self.limit < self.batch_size:
            bad("limit", self.limit, f"use 0 (all images) or at least batch_size ({self.batch_size}).")
        check_perturb(self, where)
        if self.max_steps < 1 or self.batch_size < 2:
            bad("max_steps/batch_size", (self.max_steps, self.batch_size),
                "use max_steps >= 1 and batch_size >= 2 (the loss contrasts samples in a batch).")

    @property
    def out_dir(self) -> Path:
        return Path(self.out or f"checkpoints/{self.name}")


def check_perturb(cfg: Any, where: str) -> None:
    """``caption_perturb`` (a share in [0, 1]) and ``perturb_rules`` (known rule names)."""
    from bench.attacks.perturb import RULES

    f = cfg.caption_perturb
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f <= 1:
        raise BenchError(f"{where}: field 'caption_perturb' = {f!r}: use a share of captions in "
                         f"[0, 1] (0.3: 30% perturbed; 0: none).")
    rules = cfg.perturb_rules
    if not isinstance(rules, list) or not rules or any(r not in RULES for r in rules):
        raise BenchError(f"{where}: field 'perturb_rules' = {rules!r}: give a non-empty list of "
                         f"{', '.join(RULES)}.")


# ------------------------------------------------------------------------------------ data
@dataclass
class CaptionedData:
    images: np.ndarray       # uint8 (N, 28, 28)
    labels: np.ndarray       # int64 (N,)
    attributes: list[Any]    # bench.data.captions.Attributes per image
    content_hash: str


def load_captioned(dataset: str, limit: int = 0) -> CaptionedData:
    """The first ``limit`` images (0: all) with labels, measured attributes and the content hash
    of exactly those images. Attributes are a pure function of each image and its label
    (:func:`bench.data.captions.measure`), so a subset gets the captions it has in the full set."""
    from bench.data.captions import measure
    from bench.train_latent import load_images

    imgs, labels, content_hash = load_images(dataset, limit)
    return CaptionedData(imgs, labels, measure(imgs, labels), content_hash)


def captions_for(data: CaptionedData, idx: np.ndarray, seed: int, k: int, perturb: float = 0.0,
                 rules: Sequence[str] = ()) -> list[str]:
    """The ``k``-th caption of each image ``idx``; with ``perturb`` > 0 that share of them
    changed by one of ``rules`` (``perturb_caption``)."""
    from bench.data.captions import training_caption

    caps = [training_caption(data.attributes[i], int(data.labels[i]), int(i), seed, k).text
            for i in idx]
    if perturb > 0:
        caps = [perturb_caption(c, int(i), seed, k, perturb, rules) for c, i in zip(caps, idx)]
    return caps


def perturb_caption(text: str, index: int, seed: int, k: int, fraction: float,
                    rules: Sequence[str]) -> str:
    """Robustness training (the defence Gao et al. 2023 evaluate against their attack): caption
    ``k`` of image ``index`` is perturbed with probability ``fraction`` by one of ``rules``
    (``bench.attacks.perturb``: one word, at most 10% of the characters: the attack's default
    budget), rule and perturbation drawn from (seed, index, k); otherwise kept."""
    import hashlib

    from bench.attacks.perturb import Budget, random_perturbation

    digest = hashlib.sha256(f"bench.caption-perturb|{seed}|{index}|{k}".encode()).digest()
    u, r, s = (int.from_bytes(digest[i:i + 8], "big") for i in (0, 8, 16))
    if u / 2.0 ** 64 >= fraction:
        return text
    p = random_perturbation(text, rules[r % len(rules)], Budget(), seed=s % 2 ** 31)
    return text if p is None else p.perturbed


def pixel_values(images: np.ndarray | Tensor) -> Tensor:
    """uint8 (N, 28, 28) -> the processor's normalised (N, 3, 28, 28) float tensor."""
    x = torch.as_tensor(np.asarray(images), dtype=torch.float32) / 255.0
    x = (x - FMNIST_MEAN) / FMNIST_STD
    return x.reshape(-1, 1, 28, 28).expand(-1, 3, -1, -1).contiguous()


# ------------------------------------------------------------------------------------ model
def build_tokenizer(cfg: ClipTrainConfig, data: CaptionedData, folder: Path) -> Any:
    from transformers import CLIPTokenizerFast

    from bench.tokenizer import save_clip_tokenizer, train_clip_bpe

    corpus = (t for k in range(TOKENIZER_CAPTIONS)
              for t in captions_for(data, np.arange(len(data.labels)), cfg.caption_seed, k))
    vocab, merges = train_clip_bpe(corpus, cfg.n_merges)
    save_clip_tokenizer(folder, vocab, merges, model_max_length=cfg.context_length)
    return CLIPTokenizerFast.from_pretrained(folder)


def build_model(cfg: ClipTrainConfig, tokenizer: Any) -> Any:
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

    text = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=cfg.text_width,
                          intermediate_size=4 * cfg.text_width, num_hidden_layers=cfg.text_layers,
                          num_attention_heads=cfg.heads, max_position_embeddings=cfg.context_length,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id, projection_dim=cfg.projection_dim)
    vision = CLIPVisionConfig(image_size=28, patch_size=cfg.patch_size, num_channels=3,
                              hidden_size=cfg.vision_width, intermediate_size=4 * cfg.vision_width,
                              num_hidden_layers=cfg.vision_layers, num_attention_heads=cfg.heads,
                              projection_dim=cfg.projection_dim)
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                        projection_dim=cfg.projection_dim)
    return CLIPModel(config)


def image_processor() -> Any:
    """The processor the images were trained with: RGB, no resize at 28x28, fmnist mean/std."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(do_resize=True, size={"shortest_edge": 28}, do_center_crop=True,
                              crop_size={"height": 28, "width": 28}, do_rescale=True,
                              rescale_factor=1 / 255, do_normalize=True,
                              image_mean=[FMNIST_MEAN] * 3, image_std=[FMNIST_STD] * 3,
                              do_convert_rgb=True)


def loss_at(cfg: ClipTrainConfig, model: Any, tok: Any, data: CaptionedData, step: int) -> Tensor:
    idx = step_batch(cfg, step, len(data.labels)).numpy()
    epoch = step // (len(data.labels) // cfg.batch_size)
    enc = tok(captions_for(data, idx, cfg.caption_seed, epoch, cfg.caption_perturb, cfg.perturb_rules),
              padding=True, return_tensors="pt")
    device = next(model.parameters()).device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
        out = model(input_ids=enc.input_ids.to(device), attention_mask=enc.attention_mask.to(device),
                    pixel_values=pixel_values(data.images[idx]).to(device), return_loss=True)
    return out.loss.float()


def lr_at(cfg: ClipTrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to zero at max_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))


# ------------------------------------------------------------------------------------ loop
def train(cfg: ClipTrainConfig, command: str | None = None, device: str | None = None,
          progress: bool = True, stop_after: int | None = None) -> dict[str, Any]:
    """Train (or resume) to ``cfg.max_steps``, then evaluate and export the model folder."""
    from tqdm.auto import tqdm

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
    data = load_captioned(cfg.dataset, cfg.limit)
    tok = build_tokenizer(cfg, data, out / "tokenizer")
    vocab_hash = file_sha256(out / "tokenizer" / "vocab.json")
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, tok).to(dev)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    state_path, log_path = out / "state.pt", out / "losses.jsonl"
    step = 0
    if state_path.exists():
        st = load_state(state_path, dev, frozenset({"model", "opt", "step", "config", "vocab"}))
        keep = {"max_steps", "checkpoint_every", "log_every", "threads", "out"}
        diff = {k: (st["config"].get(k), v) for k, v in asdict(cfg).items()
                if st["config"].get(k) != v and k not in keep}
        if diff or st["vocab"] != vocab_hash:
            raise BenchError(f"{state_path} was written with another config or tokenizer (differs "
                             f"in {diff or 'vocab'}); use another 'out' folder or delete it.")
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step = int(st["step"])
    kept = []
    if log_path.exists():
        kept = [ln for ln in log_path.read_text().splitlines() if ln and json.loads(ln)["step"] < step]
    log_path.write_text("".join(ln + "\n" for ln in kept))

    def save_state() -> None:
        tmp = state_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                    "config": asdict(cfg), "vocab": vocab_hash}, tmp)
        os.replace(tmp, state_path)

    end = cfg.max_steps if stop_after is None else min(cfg.max_steps, step + stop_after)
    bar = tqdm(total=cfg.max_steps, initial=step, desc=f"train {cfg.name}", unit="step",
               disable=not progress)
    losses: list[float] = []
    t0 = time.time()
    model.train()
    with log_path.open("a") as log:
        while step < end:
            for gp in opt.param_groups:
                gp["lr"] = lr_at(cfg, step)
            loss = loss_at(cfg, model, tok, data, step)
            if not math.isfinite(loss.item()):
                raise BenchError(f"training '{cfg.name}' diverged at step {step} (loss "
                                 f"{loss.item()}); lower lr (now {cfg.lr}) or raise warmup_steps.")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            with torch.no_grad():  # CLIP clamps the temperature at 100
                model.logit_scale.clamp_(0, math.log(100))
            losses.append(loss.item())
            log.write(json.dumps({"step": step, "loss": loss.item(),
                                  "logit_scale": float(model.logit_scale.detach().exp())}) + "\n")
            step += 1
            if step % cfg.log_every == 0:
                log.flush()
                bar.set_postfix(loss=f"{np.mean(losses[-cfg.log_every:]):.3f}")
            bar.update(1)
            if step % cfg.checkpoint_every == 0 or step == end:
                log.flush()
                save_state()
    bar.close()
    summary: dict[str, Any] = {"step": step, "seconds": time.time() - t0, "data_hash": data.content_hash}
    if step >= cfg.max_steps:
        model.eval()
        scores = evaluate(model.cpu(), tok, cfg)
        summary["eval"] = scores
        summary["export"] = str(export(cfg, model, tok, data, scores, log_path, command))
    return summary


# ------------------------------------------------------------------------------------ eval
def class_prompts(label: int) -> list[str]:
    """Every attribute-free training caption of a class (each synonym in each template)."""
    from bench.data.captions import SYNONYMS, TRAINING_TEMPLATES, render

    return [render(t, noun, {}) for t, (_, needs) in TRAINING_TEMPLATES.items() if not needs
            for noun in SYNONYMS[label]]


@torch.no_grad()
def embed_images(model: Any, images: np.ndarray, batch: int = 500) -> Tensor:
    out = [model.get_image_features(pixel_values=pixel_values(images[i:i + batch]))
           for i in range(0, len(images), batch)]
    return torch.nn.functional.normalize(torch.cat([getattr(o, "pooler_output", o) for o in out]), dim=-1)


@torch.no_grad()
def embed_texts(model: Any, tok: Any, texts: list[str], batch: int = 500) -> Tensor:
    out = []
    for i in range(0, len(texts), batch):
        enc = tok(texts[i:i + batch], padding=True, return_tensors="pt")
        o = model.get_text_features(input_ids=enc.input_ids, attention_mask=enc.attention_mask)
        out.append(getattr(o, "pooler_output", o))
    return torch.nn.functional.normalize(torch.cat(out), dim=-1)


def evaluate(model: Any, tok: Any, cfg: ClipTrainConfig, n_retrieval: int = 1000) -> dict[str, Any]:
    """Zero-shot class accuracy on the whole evaluation set (class prompts averaged over the
    training templates, as CLIP's prompt ensembling), attribute accuracy (low vs high word with
    the true noun, on images whose attribute is measured at an extreme), and caption retrieval
    R@1 / R@5 both ways on the first ``n_retrieval`` evaluation images with their own captions (a
    retrieved caption counts when its text equals the image's caption: Fashion-MNIST captions
    repeat)."""
    from bench.data.captions import ATTRIBUTES, CLASS_NAMES, WORDS

    data = load_captioned(cfg.eval_dataset, cfg.limit)
    img = embed_images(model, data.images)
    cls_emb = torch.stack([embed_texts(model, tok, class_prompts(c)).mean(0) for c in range(len(CLASS_NAMES))])
    cls_emb = torch.nn.functional.normalize(cls_emb, dim=-1)
    pred = (img @ cls_emb.T).argmax(1).numpy()
    scores: dict[str, Any] = {"zero_shot_accuracy": float((pred == data.labels).mean()),
                              "n_eval": int(len(data.labels)), "eval_dataset": cfg.eval_dataset}
    for attr in ATTRIBUTES:
        lo_w, hi_w = WORDS[attr]
        sel = [i for i, a in enumerate(data.attributes) if getattr(a, attr)]
        lo = embed_texts(model, tok, [f"a {lo_w} {CLASS_NAMES[data.labels[i]]}" for i in sel])
        hi = embed_texts(model, tok, [f"a {hi_w} {CLASS_NAMES[data.labels[i]]}" for i in sel])
        says_hi = ((img[sel] * hi).sum(1) > (img[sel] * lo).sum(1)).numpy()
        truth = np.array([getattr(data.attributes[i], attr) == hi_w for i in sel])
        scores[f"{attr}_accuracy"] = float((says_hi == truth).mean())
    n = min(n_retrieval, len(data.labels))
    caps = captions_for(data, np.arange(n), cfg.caption_seed + 1, 0)
    txt = embed_texts(model, tok, caps)
    same = np.array([[a == b for b in caps] for a in caps])
    sim = (img[:n] @ txt.T).numpy()
    for name, s in (("image_to_text", sim), ("text_to_image", sim.T)):
        top = np.argsort(-s, axis=1, kind="stable")[:, :5]
        hits = np.take_along_axis(same, top, axis=1)
        scores[f"{name}_R@1"] = float(hits[:, 0].mean())
        scores[f"{name}_R@5"] = float(hits.any(1).mean())
    scores["n_retrieval"] = n
    return scores


# ------------------------------------------------------------------------------------ export
def export(cfg: ClipTrainConfig, model: Any, tok: Any, data: CaptionedData, scores: dict[str, Any],
           log_path: Path, command: str | None) -> Path:
    """The CLIPModel folder (safetensors), its tokenizer and image processor, and a model card."""
    from transformers import CLIPProcessor

    folder = cfg.out_dir / "model"
    model.cpu().save_pretrained(folder, safe_serialization=True)
    CLIPProcessor(image_processor=image_processor(), tokenizer=tok).save_pretrained(folder)
    image_processor().save_pretrained(folder)  # preprocessor_config.json, as older readers expect
    for name in ("vocab.json", "merges.txt"):  # CLIP's own tokenizer files beside tokenizer.json
        shutil.copyfile(cfg.out_dir / "tokenizer" / name, folder / name)
    logs = [json.loads(ln) for ln in log_path.read_text().splitlines() if ln]
    losses = [r["loss"] for r in logs]
    meta = {"name": cfg.name, "config": asdict(cfg), "data": cfg.dataset,
            "data_sha256": data.content_hash, "n_data": len(data.labels), "steps": cfg.max_steps,
            "seed": cfg.seed, "final_loss_last100": float(np.mean(losses[-100:])),
            "first_losses": losses[:20], "logit_scale": logs[-1]["logit_scale"], "eval": scores,
            "weights_sha256": file_sha256(folder / "model.safetensors"),
            "parameters": sum(p.numel() for p in model.parameters()),
            "command": command or f"bench train {cfg.name}", "torch": torch.__version__,
            "platform": platform.machine()}
    (folder / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
    (folder / "README.md").write_text(model_card(meta))
    return folder


def model_card(meta: dict[str, Any]) -> str:
    cfg, ev = meta["config"], meta["eval"]
    return f"""# {meta['name']}

A small CLIP (Radford et al., 2021) trained contrastively by this repository on Fashion-MNIST
with generated captions (`bench/data/captions.py`: class nouns with synonyms, and brightness /
size / pattern words measured from the pixels). Saved as a `transformers` `CLIPModel` folder
with its tokenizer (a CLIP-layout byte-level BPE learned on the training captions) and image
processor (grayscale repeated to RGB, 28x28, no resize, mean {FMNIST_MEAN} / std {FMNIST_STD}).
`CLIPModel.from_pretrained(folder)`, torchmetrics' `CLIPScore(model_name_or_path=folder)` and the
harness's `clipscore` metric (`clip: {meta['name']}` or the folder's path) load it offline.

| field | value |
|---|---|
| training command | `{meta['command']}` |
| data | `{meta['data']}` ({meta['n_data']} images), caption seed {cfg['caption_seed']} |
| data sha256 (decoded pixels) | `{meta['data_sha256']}` |
| image encoder | ViT, patch {cfg['patch_size']}, width {cfg['vision_width']}, {cfg['vision_layers']} layers, {cfg['heads']} heads |
| text encoder | Transformer, width {cfg['text_width']}, {cfg['text_layers']} layers, context {cfg['context_length']}, BPE with {cfg['n_merges']} merges |
| embedding | {cfg['projection_dim']} dims; learned temperature, final logit scale {meta['logit_scale']:.1f} |
| parameters | {meta['parameters'] / 1e6:.2f} M |
| optimiser | AdamW lr {cfg['lr']} (warm-up {cfg['warmup_steps']}, cosine), weight decay {cfg['weight_decay']}, batch {cfg['batch_size']}, {cfg['precision']} |
| steps | {meta['steps']} (seed {meta['seed']}) |
| final loss (mean of last 100 steps) | {meta['final_loss_last100']:.4f} |
| weights sha256 | `{meta['weights_sha256']}` |
| trained with | torch {meta['torch']} on {meta['platform']} |

Evaluation on `{ev['eval_dataset']}` ({ev['n_eval']} images):

| measure | value |
|---|---|
| zero-shot class accuracy (10 classes, prompt ensemble of the training templates) | {ev['zero_shot_accuracy']:.3f} |
| brightness word accuracy (dark vs light, images measured at an extreme) | {ev['brightness_accuracy']:.3f} |
| size word accuracy (small vs large) | {ev['size_accuracy']:.3f} |
| pattern word accuracy (plain vs patterned) | {ev['pattern_accuracy']:.3f} |
| image -> caption R@1 / R@5 ({ev['n_retrieval']} pairs; a hit is a caption with the same text) | {ev['image_to_text_R@1']:.3f} / {ev['image_to_text_R@5']:.3f} |
| caption -> image R@1 / R@5 | {ev['text_to_image_R@1']:.3f} / {ev['text_to_image_R@5']:.3f} |

First losses (steps 0-19), reproducible from the same config and seed:
`{', '.join(f'{x:.5f}' for x in meta['first_losses'])}`

Intended use: scoring and tests of the harness's text-to-image path offline. It knows ten garment
classes and three attributes, at 28x28; it is not a general image-text model.
"""


def main(args: Any) -> int:
    cfg = ClipTrainConfig.from_yaml(args.config, args.set)
    if args.out:
        cfg.out = args.out
    if args.max_steps is not None:
        cfg.max_steps = args.max_steps
    command = "bench train " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    summary = train(cfg, command=command, device=args.device)
    print(json.dumps(summary))
    return 0
