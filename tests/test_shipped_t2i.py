"""The shipped text-to-image models: the scorer ``fmnist-clip``, the generator ``fmnist-t2i`` and its
robustness-trained twin ``fmnist-t2i-robust`` (float16 weights on disk, VAE linked to the shared
``fmnist-vae``).

Controls a CLIPScore must pass (Hessel et al. 2021 use the same idea): images scored with their
own prompts beat the same images scored with another prompt, with bootstrap CIs over prompts that
do not overlap; and the shipped StableDiffusion-style folder gives, through diffusers'
``StableDiffusionPipeline``, the images the harness's DDIM gives from the same latents."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bench.models  # noqa: F401  (registration)
from bench.conditions import Condition
from bench.generate import Generation
from bench.metrics.base import MetricContext
from bench.metrics.clipscore import ClipScore
from bench.models.zoo import CHECKPOINTS

MODELS_T2I = ["fmnist-t2i", "fmnist-t2i-robust"]


def score(images: torch.Tensor, texts: list[str], ids: list[str]) -> tuple[float, float, float]:
    """clipscore (torchmetrics convention) of images with prompts, through the metric."""
    m = ClipScore(MetricContext(None, torch.device("cpu"), None, params={"clip": "fmnist-clip"}))
    g = Generation.of_images(np.arange(len(images)), images)
    g.conditions = [Condition(id=i, text=t) for i, t in zip(ids, texts)]
    m.update(g)
    return ClipScore.compute(m.state())["clipscore"]


def own_vs_other(images: torch.Tensor, texts: list[str], ids: list[str]) -> None:
    own = score(images, texts, ids)
    # each image scored with the next prompt's text (another class: the prompt list cycles classes)
    other = score(images, texts[1:] + texts[:1], ids[1:] + ids[:1])
    assert own[1] > other[2], (own, other)  # own CI entirely above the other's
    assert own[0] - other[0] > 5, (own, other)


def test_clipscore_of_test_images_with_their_own_captions_beats_other_captions(fmnist):
    from bench.data.captions import HELD_OUT_TEMPLATES, render
    from bench.train_clip import load_captioned

    data = load_captioned("fmnist-test", 1000)
    # 100 images in class order 0..9, 0..9, ... so the next caption is always another class
    idx = np.concatenate([np.flatnonzero(data.labels == c)[:10] for c in range(10)]).reshape(10, 10).T.ravel()
    from bench.data.captions import CLASS_NAMES

    tpl = list(HELD_OUT_TEMPLATES)
    texts = [render(tpl[k % len(tpl)], CLASS_NAMES[data.labels[i]], data.attributes[i].words())
             for k, i in enumerate(idx)]
    images = torch.from_numpy(data.images[idx]).unsqueeze(1)
    own_vs_other(images, texts, [f"i{k}" for k in range(len(idx))])


def t2i_generation(prompts: list[dict], steps: int, scale: float, name: str = "fmnist-t2i"):
    import bench.samplers  # noqa: F401  (registration)
    from bench.conditions import resolve
    from bench.generate import LoadedModel, SamplerSpec, generate
    from bench.registry import MODELS

    adapter = MODELS.get(name)(guidance={"scale": scale})
    model = LoadedModel(adapter, adapter.load(), torch.device("cpu"))
    conds = resolve({"prompts": [p["prompt"] for p in prompts]}, adapter)
    cfg = {"clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}
    spec = SamplerSpec("ddim", {}, {"name": "diffusers", "scheduler": "DDIMScheduler", "config": cfg}, steps)
    idx = list(range(len(prompts)))
    return generate(model, spec, idx, 0, conds.for_indices(idx), decode=True)


@pytest.mark.parametrize("name", MODELS_T2I)
def test_pipeline_and_harness_ddim_agree_on_the_shipped_model(name: str):
    from diffusers import StableDiffusionPipeline

    prompts = [{"prompt": "a dark coat"}, {"prompt": "a pair of light trousers"},
               {"prompt": "an ankle boot"}]
    gen = t2i_generation(prompts, 8, 4.0, name)
    assert gen.images.shape == (3, 1, 28, 28)  # decoded 32x32, centre 28x28 kept (zoo crop)
    latents = (gen.x_start.double() / torch.sqrt(1 + gen.sigmas[0].double() ** 2)).float()
    # the folder as a user would load it: float16 weights and a linked VAE load as they are
    pipe = StableDiffusionPipeline.from_pretrained(CHECKPOINTS / name / "model", safety_checker=None,
                                                   dtype=torch.float32)
    ref = pipe([p["prompt"] for p in prompts], num_inference_steps=8, guidance_scale=4.0,
               latents=latents.clone(), output_type="np").images
    ref_u8 = np.rint(ref[:, 2:30, 2:30, :] * 255).astype(np.int64)
    ours = gen.images.permute(0, 2, 3, 1).numpy().astype(np.int64)
    assert np.abs(ours - ref_u8).max() <= 1
    assert ours.std() > 10  # not a blank image


@pytest.mark.parametrize("name", MODELS_T2I)
def test_generated_images_score_higher_with_their_own_prompts(name: str):
    from bench.data.captions import eval_prompts

    prompts = eval_prompts()
    gen = t2i_generation(prompts, 10, 4.0, name)
    own_vs_other(gen.images, [p["prompt"] for p in prompts], [p["id"] for p in prompts])


def test_crop_is_checked():
    from bench.errors import BenchError
    from bench.registry import MODELS

    with pytest.raises(BenchError, match="field 'crop'"):
        MODELS.get("fmnist-t2i")(crop=True)
    adapter = MODELS.get("fmnist-t2i")(crop=40)
    adapter.load()
    with pytest.raises(BenchError, match="larger than the decoded images"):
        adapter.decode(torch.zeros(1, *adapter.sample_shape()))
    full = MODELS.get("fmnist-t2i")(crop=None)
    full.load()
    assert full.decode(torch.zeros(1, *full.sample_shape())).shape[-2:] == (32, 32)


def test_the_robust_twin_ships_half_precision_weights_and_links_the_shared_vae():
    from safetensors import safe_open

    folder = CHECKPOINTS / "fmnist-t2i-robust" / "model"
    with safe_open(folder / "unet" / "diffusion_pytorch_model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    vae = folder / "vae"
    assert vae.is_symlink() and vae.resolve() == (CHECKPOINTS / "fmnist-vae" / "model").resolve()
