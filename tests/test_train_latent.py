"""``bench train`` for ``kind: vae`` and ``kind: t2i`` (bench/train_latent.py) on tiny networks and
a 32-image subset: configs validate with errors naming the field, a resumed run is bitwise the
uninterrupted one, the text is encoded as StableDiffusionPipeline.encode_prompt encodes it, and
the exported folder opens offline both in diffusers' StableDiffusionPipeline and in the harness's
``diffusers`` adapter (which samples the same images as the pipeline)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.errors import BenchError
from bench.train_latent import (T2ITrainConfig, TextCache, VaeTrainConfig, encode_text,
                                load_text_encoder, psnr, reconstruct, train_t2i, train_vae)

TINY_VAE = {"block_out_channels": "[8, 16, 16]", "norm_num_groups": 4, "batch_size": 8,
            "limit": 32, "eval_limit": 16, "scale_images": 16, "max_steps": 4,
            "checkpoint_every": 2, "warmup_steps": 2, "threads": 1}
TINY_T2I = {"block_out_channels": "[8, 16]", "cross_attention_levels": "[0]", "norm_num_groups": 4,
            "attention_heads": 2, "batch_size": 8, "limit": 32, "max_steps": 4,
            "checkpoint_every": 2, "warmup_steps": 2, "caption_dropout": 0.25, "threads": 1}


def _set(over: dict) -> list[str]:
    return [f"{k}={v}" for k, v in over.items()]


def vae_cfg(out: Path, **over) -> VaeTrainConfig:
    cfg = VaeTrainConfig.from_yaml("fmnist-vae", _set({**TINY_VAE, **over}))
    cfg.out = str(out)
    return cfg


def t2i_cfg(out: Path, vae: Path, text: Path, **over) -> T2ITrainConfig:
    cfg = T2ITrainConfig.from_yaml("fmnist-t2i", _set({**TINY_T2I, "vae": str(vae),
                                                       "text_encoder": str(text), **over}))
    cfg.out = str(out)
    return cfg


def make_tiny_clip(folder: Path) -> Path:
    """A randomly initialised tiny transformers CLIPModel with a BPE learned on the captions."""
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTokenizer, CLIPVisionConfig

    from bench.data.captions import training_caption_space
    from bench.tokenizer import save_clip_tokenizer, train_clip_bpe

    vocab, merges = train_clip_bpe(sorted(training_caption_space()), 60)
    save_clip_tokenizer(folder, vocab, merges, model_max_length=16)
    tok = CLIPTokenizer.from_pretrained(folder)
    text = CLIPTextConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                          num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16,
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id, projection_dim=8)
    vision = CLIPVisionConfig(image_size=28, patch_size=14, num_channels=3, hidden_size=16,
                              intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              projection_dim=8)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                         projection_dim=8)).save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))  # latent cache per test
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> dict[str, Path]:
    """A tiny VAE (trained 4 steps), a tiny CLIP, and a t2i trained 4 steps on them."""
    import test_fidelity_support

    test_fidelity_support.need_fmnist()
    root = tmp_path_factory.mktemp("latent")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_CACHE_DIR", str(root / "cache"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        vae = Path(train_vae(vae_cfg(root / "vae"), progress=False)["export"])
        clip = make_tiny_clip(root / "clip")
        t2i = Path(train_t2i(t2i_cfg(root / "t2i", vae, clip), progress=False)["export"])
    return {"root": root, "vae": vae, "clip": clip, "t2i": t2i}


# ------------------------------------------------------------------------------------ configs
def test_configs_validate_and_errors_name_the_field(tmp_path) -> None:
    vae = VaeTrainConfig.from_yaml("fmnist-vae")
    assert vae.kind == "vae" and vae.block_out_channels == [32, 64, 64] and vae.latent_channels == 4
    t2i = T2ITrainConfig.from_yaml("fmnist-t2i")
    assert (t2i.beta_start, t2i.beta_end, t2i.num_train_timesteps) == (0.00085, 0.012, 1000)
    assert t2i.vae == "bench/checkpoints/fmnist-vae/model" and t2i.caption_dropout == 0.1
    cases = [
        (VaeTrainConfig, "fmnist-vae", ["kl_wieght=0.1"], "field 'kl_wieght' is not a training option. Did you mean 'kl_weight'"),
        (VaeTrainConfig, "fmnist-vae", ["recon_loss=huber"], "field 'recon_loss' = 'huber'"),
        (VaeTrainConfig, "fmnist-vae", ["kl_weight=-1.0"], "field 'kl_weight' = -1.0"),
        (VaeTrainConfig, "fmnist-vae", ["norm_num_groups=5"], "field 'norm_num_groups' = 5: must divide"),
        (VaeTrainConfig, "fmnist-vae", ["block_out_channels=[8, 8, 8, 8, 8]"], "field 'block_out_channels'"),
        (VaeTrainConfig, "fmnist-vae", ["limit=4"], "field 'limit' = 4: use at least batch_size"),
        (VaeTrainConfig, "fmnist-vae", ["lr=fast"], "field 'lr' must be a number"),
        (VaeTrainConfig, "fmnist-t2i", [], "field 'vae' is not a training option"),
        (T2ITrainConfig, "fmnist-t2i", ["caption_dropout=1.5"], "field 'caption_dropout' = 1.5"),
        (T2ITrainConfig, "fmnist-t2i", ["cross_attention_levels=[3]"], "field 'cross_attention_levels'"),
        (T2ITrainConfig, "fmnist-t2i", ["attention_heads=5"], "field 'attention_heads' = 5: must divide"),
        (T2ITrainConfig, "fmnist-t2i", ["latents=mode"], "field 'latents' = 'mode'"),
        (T2ITrainConfig, "fmnist-t2i", ["kind=vae"], "field 'kind' = 'vae'"),
        (T2ITrainConfig, "fmnist-t2i", ["beta_end=0.0001"], "field 'beta_start/beta_end"),
    ]
    for cls, name, over, msg in cases:
        with pytest.raises(BenchError, match=msg.replace("(", "\\(").replace("[", "\\[")):
            cls.from_yaml(name, over)
    no_vae = tmp_path / "t.yaml"
    no_vae.write_text("name: x\nkind: t2i\ntext_encoder: some/folder\n")
    with pytest.raises(BenchError, match="field 'vae' is missing"):
        T2ITrainConfig.from_yaml(no_vae)


def test_train_dispatches_on_kind(cli, tmp_path) -> None:
    bad = tmp_path / "gan.yaml"
    bad.write_text("name: x\nkind: gan\n")
    code, _, err = cli("train", str(bad))
    assert code == 2 and "field 'kind' = 'gan'" in err and "'vae'" in err and "'t2i'" in err
    # kind: t2i reaches the t2i trainer, which names the missing folder and the command making it
    code, _, err = cli("train", "fmnist-t2i", "--set", "vae=bench/checkpoints/no-such-vae/model",
                       "--out", str(tmp_path / "o"))
    assert code == 2 and "field 'vae' = 'bench/checkpoints/no-such-vae/model': no such folder" in err
    assert "bench train bench/train_configs/fmnist-vae.yaml" in err


# ------------------------------------------------------------------------------------ VAE
def test_vae_resumes_bitwise_and_exports_what_it_evaluated(tmp_path, parts) -> None:
    from diffusers import AutoencoderKL

    a = parts["vae"].parent  # the fixture's uninterrupted run, same config
    train_vae(vae_cfg(tmp_path / "b"), progress=False, stop_after=2)  # "crash" after step 2
    assert not (tmp_path / "b" / "model").exists()
    train_vae(vae_cfg(tmp_path / "b"), progress=False)  # rerun: resumes at step 2
    la, lb = ((d / "losses.jsonl").read_text() for d in (a, tmp_path / "b"))
    assert la == lb and len(la.splitlines()) == 4 and len({json.loads(x)["loss"] for x in la.splitlines()}) == 4
    for f in ("diffusion_pytorch_model.safetensors", "config.json"):
        assert (a / "model" / f).read_bytes() == (tmp_path / "b" / "model" / f).read_bytes()

    meta = json.loads((a / "model" / "training.json").read_text())
    vae = AutoencoderKL.from_pretrained(a / "model")
    assert vae.config.scaling_factor == pytest.approx(1 / meta["latents"]["latent_std"])
    assert vae.config.scaling_factor == meta["scaling_factor"] != 0.18215
    assert meta["latent_shape"] == [4, 8, 8] and meta["steps"] == 4

    from bench.train_latent import load_images

    ev, _, _ = load_images("fmnist-test", 16)
    rec = reconstruct(vae, ev)
    assert rec.dtype == np.uint8 and rec.shape == ev.shape == (16, 28, 28)
    assert psnr(ev, rec)["psnr"] == pytest.approx(meta["eval"]["psnr"], abs=1e-9)
    assert psnr(ev, ev)["psnr_mean_per_image"] == 100.0
    as_t = reconstruct(vae, torch.from_numpy(ev[:, None]))  # tensor in, tensor of its shape out
    assert isinstance(as_t, torch.Tensor) and as_t.shape == (16, 1, 28, 28)
    assert np.array_equal(as_t.numpy()[:, 0], rec)
    card = (a / "model" / "README.md").read_text()
    assert meta["data_sha256"] in card and f"{meta['eval']['psnr']:.2f} dB" in card
    with pytest.raises(BenchError, match="expected uint8"):
        reconstruct(vae, ev.astype(np.float32))


def test_vae_resume_refuses_another_config(tmp_path, fmnist) -> None:
    train_vae(vae_cfg(tmp_path / "a"), progress=False, stop_after=1)
    with pytest.raises(BenchError, match="written with another config .*'kl_weight'"):
        train_vae(vae_cfg(tmp_path / "a", kl_weight=0.01), progress=False)
    train_vae(vae_cfg(tmp_path / "a", max_steps=2), progress=False, stop_after=1)  # resumable change


# ------------------------------------------------------------------------------------ t2i
def test_t2i_resumes_bitwise(tmp_path, parts) -> None:
    a = parts["t2i"].parent
    cfg = lambda: t2i_cfg(tmp_path / "b", parts["vae"], parts["clip"])  # noqa: E731
    train_t2i(cfg(), progress=False, stop_after=2)
    assert not (tmp_path / "b" / "model").exists()
    train_t2i(cfg(), progress=False)
    la, lb = ((d / "losses.jsonl").read_text() for d in (a, tmp_path / "b"))
    assert la == lb and len(la.splitlines()) == 4
    assert sum(json.loads(x)["dropped"] for x in la.splitlines()) > 0  # caption dropout happens
    w = "unet/diffusion_pytorch_model.safetensors"
    assert (a / "model" / w).read_bytes() == (tmp_path / "b" / "model" / w).read_bytes()
    meta = json.loads((a / "model" / "training.json").read_text())
    assert meta["latent_shape"] == [4, 8, 8] and meta["steps"] == 4 and len(meta["first_losses"]) == 4
    assert meta["data_sha256"] in (a / "model" / "README.md").read_text()


def test_t2i_resume_refuses_another_config_or_vae(tmp_path, parts) -> None:
    vae = tmp_path / "vae"
    shutil.copytree(parts["vae"], vae)
    train_t2i(t2i_cfg(tmp_path / "o", vae, parts["clip"]), progress=False, stop_after=1)
    with pytest.raises(BenchError, match="written with another config .*'lr'"):
        train_t2i(t2i_cfg(tmp_path / "o", vae, parts["clip"], lr=0.5), progress=False)
    conf = json.loads((vae / "config.json").read_text())
    (vae / "config.json").write_text(json.dumps({**conf, "scaling_factor": 1.0}))
    with pytest.raises(BenchError, match="other inputs .*'vae'"):
        train_t2i(t2i_cfg(tmp_path / "o", vae, parts["clip"]), progress=False)


def test_t2i_refuses_wrong_folders(tmp_path, parts) -> None:
    import diffusers

    with pytest.raises(BenchError, match="field 'text_encoder' = .*model_type None.*CLIPModel"):
        train_t2i(t2i_cfg(tmp_path / "o", parts["vae"], parts["vae"]), progress=False)
    with pytest.raises(BenchError, match="field 'vae' = .*'CLIPModel', not an AutoencoderKL"):
        train_t2i(t2i_cfg(tmp_path / "o", parts["clip"], parts["clip"]), progress=False)
    rgb = tmp_path / "rgb"
    diffusers.AutoencoderKL(block_out_channels=(8,), norm_num_groups=4).save_pretrained(rgb)
    with pytest.raises(BenchError, match="field 'vae' .*maps 3 -> 3 channels"):
        train_t2i(t2i_cfg(tmp_path / "o", rgb, parts["clip"]), progress=False)
    with pytest.raises(BenchError, match="field 'text_encoder' = .*no such folder.*fmnist-t2i-text.yaml"):
        train_t2i(t2i_cfg(tmp_path / "o", parts["vae"], tmp_path / "nope"), progress=False)


def test_text_is_encoded_as_the_pipeline_encodes_it(parts) -> None:
    from diffusers import StableDiffusionPipeline

    from bench.data.captions import training_caption_space

    pipe = StableDiffusionPipeline.from_pretrained(parts["t2i"], safety_checker=None)
    prompts = sorted(training_caption_space())[:3] + ["a sweater nobody ever captioned so long and odd"]
    cond, uncond = pipe.encode_prompt(prompts, "cpu", 1, True)
    text, tok, _ = load_text_encoder("t", str(parts["clip"]), torch.device("cpu"))
    assert torch.equal(encode_text(tok, text, prompts), cond)  # same batch: bitwise
    assert torch.equal(encode_text(tok, text, [""] * 4), uncond)
    cache = TextCache(tok, text, sorted(training_caption_space()))
    assert torch.allclose(cache(prompts + [""]), torch.cat([cond, uncond[:1]]), atol=1e-5)
    assert cond.shape == (4, tok.model_max_length, 16)


def test_export_opens_in_stable_diffusion_pipeline_offline(parts) -> None:
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextModel

    folder = parts["t2i"]
    index = json.loads((folder / "model_index.json").read_text())
    assert index["requires_safety_checker"] is False
    for part in ("vae", "unet", "text_encoder"):  # no path of the training machine is shipped
        assert str(parts["root"]) not in (folder / part / "config.json").read_text(), part
    assert index["safety_checker"] == [None, None] and index["feature_extractor"] == [None, None]
    assert "PSNR" in (folder / "vae" / "source_README.md").read_text()  # the VAE's own card
    from transformers import CLIPTokenizer

    slow = CLIPTokenizer(str(folder / "tokenizer" / "vocab.json"), str(folder / "tokenizer" / "merges.txt"))
    fast = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    assert slow("a dark large coat").input_ids == fast("a dark large coat").input_ids
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    assert isinstance(pipe.scheduler, DDIMScheduler) and isinstance(pipe.text_encoder, CLIPTextModel)
    sc = pipe.scheduler.config
    assert (sc.beta_schedule, sc.beta_start, sc.beta_end, sc.prediction_type, sc.clip_sample) == \
        ("scaled_linear", 0.00085, 0.012, "epsilon", False)
    out = pipe(["a dark coat", "a pair of trousers"], num_inference_steps=3, guidance_scale=3.0,
               output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (2, 32, 32, 1) and np.isfinite(out).all() and 0 <= out.min() <= out.max() <= 1
    pil = pipe("a bag", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
    assert pil.size == (32, 32) and pil.mode == "L"


def test_harness_adapter_loads_the_export_and_matches_the_pipeline(parts) -> None:
    import bench.samplers  # noqa: F401  (registration)
    from diffusers import StableDiffusionPipeline

    from bench.conditions import resolve
    from bench.generate import LoadedModel, SamplerSpec, generate
    from bench.models.diffusers_adapter import DiffusersAdapter

    folder = parts["t2i"]
    prompts = ["a dark coat", "a bag"]
    adapter = DiffusersAdapter(path=str(folder), guidance=3.0)
    assert adapter.sample_shape() == (4, 8, 8) and adapter.describe()["kind"] == "StableDiffusionPipeline"
    model = LoadedModel(adapter, adapter.load(), torch.device("cpu"))
    conds = resolve({"prompts": prompts}, adapter)
    cfg = {"clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}
    spec = SamplerSpec("ddim", {}, {"name": "diffusers", "scheduler": "DDIMScheduler", "config": cfg}, 4)
    gen = generate(model, spec, [0, 1], 0, conds.for_indices([0, 1]), decode=True)
    assert gen.images.shape == (2, 1, 32, 32) and gen.images.dtype == torch.uint8
    latents = (gen.x_start.double() / torch.sqrt(1 + gen.sigmas[0].double() ** 2)).float()
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    ref = pipe(prompts, num_inference_steps=4, guidance_scale=3.0, latents=latents.clone(),
               output_type="np").images
    ref_u8 = np.rint(ref * 255).astype(np.int64)
    ours = gen.images.permute(0, 2, 3, 1).numpy().astype(np.int64)
    assert np.abs(ours - ref_u8).max() <= 1, np.abs(ours - ref_u8).max()


def test_half_precision_export_and_perturbed_captions(parts, tmp_path) -> None:
    """save_dtype float16 halves the shipped UNet and text encoder (loaders upcast);
    caption_perturb changes what the network is trained on (other losses, same noise draws)."""
    from safetensors import safe_open

    from bench.generate import LoadedModel, SamplerSpec, generate
    from bench.models.diffusers_adapter import DiffusersAdapter

    cfg = t2i_cfg(tmp_path / "h", parts["vae"], parts["clip"], save_dtype="float16",
                  caption_perturb=0.5, link_vae="true")
    out = Path(train_t2i(cfg, progress=False)["export"])
    link = out / "vae"
    assert link.is_symlink() and not Path(os.readlink(link)).is_absolute()
    assert link.resolve() == parts["vae"].resolve()
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(out, safety_checker=None)
    assert pipe.unet.dtype == torch.float32  # upcast on load
    for part, name in (("unet", "diffusion_pytorch_model.safetensors"), ("text_encoder", "model.safetensors")):
        with safe_open(str(out / part / name), "pt") as f:
            assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}, part
        ratio = (out / part / name).stat().st_size / (parts["t2i"] / part / name).stat().st_size
        assert 0.45 < ratio < 0.55, (part, ratio)
    card = (out / "README.md").read_text()
    assert "caption perturbation | 50%" in card and "in float16" in card and "relative link" in card
    plain = json.loads((parts["t2i"] / "training.json").read_text())["first_losses"]
    perturbed = json.loads((out / "training.json").read_text())["first_losses"]
    assert plain != perturbed
    adapter = DiffusersAdapter(path=str(out), guidance=2.0)
    model = LoadedModel(adapter, adapter.load(), torch.device("cpu"))
    from bench.conditions import resolve

    conds = resolve({"prompts": ["a dark coat"]}, adapter)
    spec = SamplerSpec("ddim", {}, {"name": "time_uniform"}, 3)
    gen = generate(model, spec, [0], 0, conds.for_indices([0]), decode=True)
    assert gen.samples.dtype == torch.float32 and gen.images.shape == (1, 1, 32, 32)


def test_reconstruct_command_writes_what_bench_fid_reads(parts, tmp_path, capsys) -> None:
    from bench.data import open_dataset
    from bench.train_latent import reconstruct_main

    out = tmp_path / "rec.npz"
    assert reconstruct_main([str(parts["vae"]), "fmnist-test", str(out), "--limit", "16"]) == 0
    printed = json.loads(capsys.readouterr().out)
    with np.load(out) as z:
        rec = z["images"]
    assert rec.shape == (16, 28, 28) and rec.dtype == np.uint8
    ds = open_dataset(str(out))  # the file bench fid takes as GENERATED
    assert len(ds) == 16
    ref = open_dataset("fmnist-test").images(0, 16).reshape(16, 28, 28)
    assert printed["psnr"] == pytest.approx(psnr(ref, rec)["psnr"])
