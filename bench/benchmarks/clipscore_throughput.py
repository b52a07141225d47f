"""Images/s of the harness's ``clipscore`` metric vs torchmetrics' ``CLIPScore`` on the same
images, prompts and weights, measured side by side (alternating, best of ``--repeats``) in one
process.

    python -m bench.benchmarks.clipscore_throughput [--clip PATH] [--n 128] [--prompts 32]
        [--batch-size 32] [--size 256] [--repeats 3] [--device cpu]

Without ``--clip`` both score a small randomly initialised transformers ``CLIPModel`` (ViT at
224 px, patch 32, width 64, 2 layers; written to a temporary folder: nothing is downloaded).
``--clip`` takes a transformers CLIPModel folder (torchmetrics only loads that kind). Both get
uint8 images of ``--size`` px and ``--n / --prompts`` images per prompt in batches of
``--batch-size``: torchmetrics ``update(images, prompts)`` per batch, the harness one
``Generation`` per batch through ``update / state / reset`` and the left fold, as a suite runs
it. Model loading is outside the timings. Prints both rates, their ratio and both values (equal
within 1e-4: every prompt has the same number of images). torchmetrics 1.9 needs transformers'
features unwrapped (``BaseModelOutputWithPooling``, torchmetrics issue #3407) and a callable to
load a local folder; see tests/test_clipscore.py.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def tiny_clip(folder: Path) -> Path:
    """A random transformers CLIPModel with a byte-level CLIP vocabulary, saved to ``folder``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    chars = [chr(b) for b in bs] + [chr(256 + i) for i in range(256 - len(bs))]
    vocab = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    text = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                  image_size=224, patch_size=32)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)).save_pretrained(folder)
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tok).save_pretrained(folder)
    return folder


def torchmetrics_metric(folder: Path, device: str):
    from torchmetrics.multimodal.clip_score import CLIPScore
    from transformers import CLIPModel, CLIPProcessor

    from bench.clip import PooledFeatures

    def load():
        return (PooledFeatures(CLIPModel.from_pretrained(str(folder), local_files_only=True)),
                CLIPProcessor.from_pretrained(str(folder), local_files_only=True))

    return CLIPScore(model_name_or_path=load).to(device)


def run_torchmetrics(tm, x: torch.Tensor, texts: list[str], bs: int) -> tuple[float, float]:
    """(CLIPScore, the mean of 100 cos before its clamp at 0)."""
    tm.reset()
    for b0 in range(0, len(x), bs):
        tm.update(x[b0:b0 + bs], texts[b0:b0 + bs])
    out = float(tm.compute()), float(tm.score / tm.n_samples)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return out


def run_harness(folder: Path, x: torch.Tensor, texts: list[str], bs: int, device: str
                ) -> tuple[float, float]:
    """(clipscore, the mean of 100 cos before the clamp at 0)."""
    from bench.conditions import Condition
    from bench.generate import Generation
    from bench.metrics.base import MetricContext
    from bench.metrics.clipscore import ClipScore

    m = ClipScore(MetricContext(None, torch.device(device), None,
                                params={"clip": str(folder), "batch_size": bs}))
    acc = None
    for b0 in range(0, len(x), bs):
        gen = Generation.of_images(np.arange(b0, min(b0 + bs, len(x))), x[b0:b0 + bs])
        gen.conditions = [Condition(id=t, text=t) for t in texts[b0:b0 + bs]]
        m.update(gen)
        s = m.state()
        m.reset()
        acc = s if acc is None else ClipScore.merge([acc, s])
    return ClipScore.compute(acc)["clipscore"][0], float(100 * np.mean(acc["cos"]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", default=None, help="a transformers CLIPModel folder (default: tiny random)")
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    import warnings

    warnings.filterwarnings("ignore")
    words = ["red", "green", "small", "large", "cat", "dog", "house", "tree", "under", "the", "sky",
             "a photo of", "painting", "river"]
    rng = np.random.default_rng(0)
    prompts = [" ".join(rng.choice(words, size=6)) for _ in range(a.prompts)]
    texts = [prompts[i % a.prompts] for i in range(a.n)]
    x = torch.from_numpy(rng.integers(0, 256, size=(a.n, 3, a.size, a.size), dtype=np.uint8))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(a.clip) if a.clip else tiny_clip(Path(tmp))
        tm = torchmetrics_metric(folder, a.device)
        run_harness(folder, x[:4], texts[:4], a.batch_size, a.device)  # warm up (load, allocator)
        run_torchmetrics(tm, x[:4].to(a.device), texts[:4], a.batch_size)
        best = {"torchmetrics": float("inf"), "harness": float("inf")}
        vals = {}
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            vals["torchmetrics"] = run_torchmetrics(tm, x.to(a.device), texts, a.batch_size)
            best["torchmetrics"] = min(best["torchmetrics"], time.perf_counter() - t0)
            t0 = time.perf_counter()
            vals["harness"] = run_harness(folder, x, texts, a.batch_size, a.device)
            best["harness"] = min(best["harness"], time.perf_counter() - t0)
    rate = {k: a.n / v for k, v in best.items()}
    for k in best:
        print(f"{k:13s} {rate[k]:9.1f} images/s  ({best[k]:.3f} s for {a.n} images, "
              f"clipscore {vals[k][0]:.6f}, mean 100 cos before the clamp {vals[k][1]:.6f})")
    print(f"ratio harness / torchmetrics: {rate['harness'] / rate['torchmetrics']:.2f}x "
          f"({'tiny random CLIP' if not a.clip else a.clip}, {a.size} px, batch {a.batch_size}, "
          f"{a.n // a.prompts} images per prompt, {a.device}); |difference| "
          f"{abs(vals['harness'][1] - vals['torchmetrics'][1]):.2e} (before the clamp)")


if __name__ == "__main__":
    main()
