"""The ``diffusers`` model adapter on small randomly initialised models saved with the real
``save_pretrained`` code to temp folders (no network): the x0 it returns equals what diffusers'
own schedulers compute from the same network output (epsilon, v_prediction, sample); DDIM on
the adapter equals diffusers' DDIMPipeline and a StableDiffusion-style pipeline (text encoder,
classifier-free guidance, AutoencoderKL decode) from the same initial latents; bad folders and
bad parameters fail with errors naming the problem."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import bench.samplers  # noqa: F401  (registration)
from bench.conditions import Condition, resolve
from bench.denoiser import Cond, CountingDenoiser
from bench.errors import BenchError
from bench.generate import LoadedModel, SamplerSpec, generate
from bench.models.diffusers_adapter import DiffusersAdapter
from bench.registry import SAMPLERS
from bench.samplers.schedules import make_grid

import diffusers  # noqa: E402  (a core dependency)


def tiny_unet(num_class_embeds: int | None = 11, size: int = 8) -> "diffusers.UNet2DModel":
    torch.manual_seed(0)
    return diffusers.UNet2DModel(sample_size=size, in_channels=1, out_channels=1,
                                 block_out_channels=(8, 16), down_block_types=("DownBlock2D",) * 2,
                                 up_block_types=("UpBlock2D",) * 2, layers_per_block=1,
                                 norm_num_groups=4, num_class_embeds=num_class_embeds)


def save_ddpm(folder: Path, prediction_type: str = "epsilon", classes: int | None = 11) -> Path:
    sched = diffusers.DDPMScheduler(prediction_type=prediction_type, clip_sample=False)
    diffusers.DDPMPipeline(unet=tiny_unet(classes), scheduler=sched).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("ptype", ["epsilon", "v_prediction", "sample"])
def test_x0_equals_diffusers_scheduler_pred_original_sample(tmp_path, ptype) -> None:
    folder = save_ddpm(tmp_path / "p", ptype)
    adapter = DiffusersAdapter(path=str(folder))
    den = adapter.load()
    sched = diffusers.DDPMScheduler.from_pretrained(folder / "scheduler")
    unet = den.unet
    abar = sched.alphas_cumprod.to(torch.float64)
    g = torch.Generator().manual_seed(1)
    for t in (0, 17, 500, 999):
        xt = torch.randn(4, 1, 8, 8, generator=g)
        labels = torch.tensor([0, 3, 9, 10])
        with torch.no_grad():
            out = unet(xt, torch.full((4,), t), class_labels=labels).sample
        ref = sched.step(out, t, xt).pred_original_sample.to(torch.float64)
        s = torch.sqrt((1 - abar[t]) / abar[t])
        ours = den(xt.to(torch.float64) / abar[t].sqrt(), s.expand(4), labels).to(torch.float64)
        assert float(den.timesteps(s.reshape(1))) == t  # the level maps back to the integer step
        assert torch.allclose(ours, ref, atol=2e-5, rtol=1e-5), (ptype, t, (ours - ref).abs().max())


@pytest.mark.parametrize("ptype", ["epsilon", "v_prediction"])
def test_ddim_equals_diffusers_ddim_pipeline(tmp_path, ptype) -> None:
    folder = save_ddpm(tmp_path / "p", ptype, classes=None)  # DDIMPipeline has no class labels
    adapter = DiffusersAdapter(path=str(folder))
    model = CountingDenoiser(adapter.load())
    cfg = {"clip_sample": False, "set_alpha_to_one": True}
    pipe = diffusers.DDIMPipeline(unet=model.inner.unet,
                                  scheduler=diffusers.DDIMScheduler.from_pretrained(
                                      folder / "scheduler", **cfg))
    ref = pipe(batch_size=3, generator=torch.Generator().manual_seed(0), num_inference_steps=10,
               eta=0.0, output_type="np").images  # NHWC in [0, 1]
    noise = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    sigmas = make_grid({"name": "diffusers", "scheduler": "DDIMScheduler", "config": cfg},
                       model.schedule, 10)
    x = noise.to(torch.float64) * torch.sqrt(1 + sigmas[0] ** 2)  # x_T / alpha_T
    out = SAMPLERS.get("ddim")(model, x.float(), sigmas)
    assert model.nfe == 10
    ours = (out.double() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert np.abs(ours - ref).max() < 1e-4, np.abs(ours - ref).max()


def test_batch_size_does_not_change_samples(tmp_path) -> None:
    adapter = DiffusersAdapter(path=str(save_ddpm(tmp_path / "p")), guidance={"scale": 2.0})
    model = LoadedModel(adapter, adapter.load(), torch.device("cpu"))
    conds = resolve(None, adapter)  # a class-conditional model: every class, balanced
    spec = SamplerSpec("dpm_solver_2", {}, {"name": "time_uniform"}, 5)
    runs = {}
    for bs in (1, 5, 12):
        parts = []
        for b0 in range(0, 12, bs):
            idx = np.arange(b0, min(b0 + bs, 12))
            parts.append(generate(model, spec, idx, 3, conds.for_indices(idx)).samples)
        runs[bs] = torch.cat(parts)
    assert torch.equal(runs[1], runs[5]) and torch.equal(runs[1], runs[12])
    assert [c.label for c in conds.for_indices(range(12))] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    # the condition reaches the network: other labels give other samples
    other = generate(model, spec, np.arange(12), 3, [Condition("class=0", label=0)] * 12).samples
    assert not torch.equal(other[1:10], runs[12][1:10])


def test_guidance_scale_changes_samples_and_unit_scale_is_conditional(tmp_path) -> None:
    folder = save_ddpm(tmp_path / "p")
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 10
    s = torch.full((4,), 10.0, dtype=torch.float64)
    c = torch.tensor([1, 2, 3, 4])
    plain = DiffusersAdapter(path=str(folder)).load()
    d1 = DiffusersAdapter(path=str(folder), guidance=1.0).load()(x, s, c)
    d3 = DiffusersAdapter(path=str(folder), guidance=3.0).load()(x, s, c)
    cond, uncond = plain(x, s, c), plain(x, s, None)
    assert torch.equal(d1, cond)
    assert torch.allclose(d3, uncond + 3 * (cond - uncond), atol=1e-5)
    assert not torch.allclose(d3, cond, atol=1e-4)


# ------------------------------------------------------------------ StableDiffusion-style
def tiny_tokenizer(folder: Path) -> "object":
    from transformers import CLIPTokenizer

    chars = "abcdefghijklmnopqrstuvwxyz"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in chars:
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=8)


def tiny_cond_unet(channels: int) -> "diffusers.UNet2DConditionModel":
    """A randomly initialised cross-attention UNet (8x8, text dim 16)."""
    torch.manual_seed(0)
    return diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=channels, out_channels=channels, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4)


def save_sd(folder: Path) -> Path:
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = tiny_cond_unet(channels=4)
    vae = diffusers.AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                                  block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4,
                                  sample_size=16)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=60, hidden_size=16, intermediate_size=32,
                                        num_hidden_layers=2, num_attention_heads=2,
                                        max_position_embeddings=8, bos_token_id=0, eos_token_id=1,
                                        pad_token_id=1))
    sched = diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                                    beta_end=0.012, clip_sample=False, set_alpha_to_one=False,
                                    steps_offset=1)
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=text, tokenizer=tiny_tokenizer(folder.parent / "tok"), unet=unet,
        scheduler=sched, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


def test_stable_diffusion_style_pipeline_equals_diffusers(tmp_path) -> None:
    folder = save_sd(tmp_path / "sd")
    prompts = ["a shoe", "a bag"]
    adapter = DiffusersAdapter(path=str(folder), guidance=3.0)
    assert adapter.sample_shape() == (4, 8, 8) and adapter.describe()["kind"] == "StableDiffusionPipeline"
    model = LoadedModel(adapter, adapter.load(), torch.device("cpu"))
    conds = resolve({"prompts": prompts}, adapter)
    cfg = {"clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}
    spec = SamplerSpec("ddim", {}, {"name": "diffusers", "scheduler": "DDIMScheduler", "config": cfg}, 5)
    gen = generate(model, spec, [0, 1], 0, conds.for_indices([0, 1]), decode=True)
    ours = gen.images.permute(0, 2, 3, 1)
    # the pipeline starts from the same initial noise, as latents (x_T = latents / alpha_T)
    latents = (gen.x_start.double() / torch.sqrt(1 + gen.sigmas[0].double() ** 2)).float()

    pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder, safety_checker=None,
                                                             requires_safety_checker=False)
    ref = pipe(prompts, num_inference_steps=5, guidance_scale=3.0, latents=latents.clone(),
               output_type="np", height=16, width=16).images
    ref_u8 = np.rint(ref * 255).astype(np.int64)
    assert ours.shape == (2, 16, 16, 3)
    assert np.abs(ours.numpy().astype(np.int64) - ref_u8).max() <= 1


# ------------------------------------------------------------------------------ errors
def test_errors_name_the_problem(tmp_path) -> None:
    with pytest.raises(BenchError, match="is not a folder"):
        DiffusersAdapter(path=str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchError, match="neither model_index.json .* nor config.json"):
        DiffusersAdapter(path=str(tmp_path / "empty"))

    folder = save_ddpm(tmp_path / "p")
    with pytest.raises(BenchError, match="'conditions.classes': label 11 is out of range.*"
                                         "labels 0..9 \\(null class 10\\)"):
        resolve({"classes": [3, 11]}, DiffusersAdapter(path=str(folder)))
    with pytest.raises(BenchError, match="prediction_type 'flow' .* cannot be handled; supported: "
                                         "epsilon, v_prediction, sample"):
        DiffusersAdapter(path=str(folder), prediction_type="flow")

    cfg_path = folder / "scheduler" / "scheduler_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "prediction_type": "flow_prediction"}))
    with pytest.raises(BenchError, match="'flow_prediction' .*scheduler_config.json"):
        DiffusersAdapter(path=str(folder))
    cfg_path.write_text(json.dumps(cfg))

    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(BenchError, match="no weights in .*unet"):
        DiffusersAdapter(path=str(folder))

    unc = save_ddpm(tmp_path / "u", classes=None)
    with pytest.raises(BenchError, match="needs a conditional model"):
        DiffusersAdapter(path=str(unc), guidance=2.0)
    with pytest.raises(BenchError, match="is unconditional"):
        resolve({"classes": [1]}, DiffusersAdapter(path=str(unc)))
    import shutil

    shutil.rmtree(unc / "scheduler")
    with pytest.raises(BenchError, match="component 'scheduler' .* is missing"):
        DiffusersAdapter(path=str(unc))


def test_suite_reports_adapter_errors_at_plan_time(tmp_path) -> None:
    from bench.errors import SuiteError
    from bench.suite import validate

    folder = save_ddpm(tmp_path / "p")
    suite = {"name": "x", "nfe": [5], "samplers": ["ddim"], "evals": ["nfe_curve"],
             "conditions": {"classes": [12]},
             "models": [{"name": "diffusers", "params": {"path": str(folder)}}]}
    with pytest.raises(SuiteError, match=r"field 'conditions': .*label 12 is out of range"):
        validate(suite, "s.yaml")
    suite["conditions"] = {"classes": [1]}
    suite["models"][0]["params"]["prediction_type"] = "flow"
    with pytest.raises(SuiteError, match=r"field 'models\[0\].params': .*prediction_type 'flow'"):
        validate(suite, "s.yaml")


# ------------------------------------------------------------------- suites and galleries
def test_suite_on_a_diffusers_folder_keeps_galleries_only_when_asked(cli, write_suite, tmp_path) -> None:
    import test_fidelity_support  # noqa: F401  (registers the cheap test_proj extractor)

    folder = save_ddpm(tmp_path / "p")
    ref = tmp_path / "ref.npz"
    np.savez(ref, images=np.random.default_rng(0).integers(0, 256, (40, 1, 8, 8), dtype=np.uint8))
    fid = {"name": "fidelity", "params": {"metrics": ["fid"], "ref": str(ref), "extractor": "test_proj",
                                          "refstats_dir": str(tmp_path / "refs"), "gallery": 12}}
    suite = {"name": "tiny-real", "seed": 0, "samples": 24, "batch_size": 8, "nfe": [4],
             "samplers": ["ddim"], "evals": [fid],
             "models": [{"name": "diffusers", "label": "tiny",
                         "params": {"path": str(folder), "guidance": {"scale": 1.5}}}]}
    results = tmp_path / "results"
    code, out, err = cli("run", str(write_suite(suite)), "--results", str(results))
    assert code == 0, err
    import pandas as pd

    row = pd.read_parquet(results).iloc[0]
    assert row["metric"] == "fid" and np.isfinite(row["value"]) and row["nfe_counted"] == 4
    assert '"guidance": {"batched": true, "scale": 1.5}' in row["model_params"] or "1.5" in row["model_params"]
    from bench.report.galleries import load_gallery

    images, cond, names = load_gallery(results / "_gallery" / "tiny-real" / "tiny__ddim__nfe4")
    assert images.shape == (12, 1, 8, 8) and images.dtype == np.uint8
    assert cond.tolist() == [i % 10 for i in range(12)]  # balanced labels, recorded per image
    code, out, err = cli("report", str(results), "--out", str(tmp_path / "rep"))
    md = (tmp_path / "rep" / "tiny-real.md").read_text()
    assert code == 0 and "## Samples" in md and (tmp_path / "rep" / "tiny-real_gallery_tiny__ddim__nfe4.png").is_file()

    fid["params"].pop("gallery")  # no gallery asked: no image written
    suite["name"] = "tiny-real-2"
    code, out, err = cli("run", str(write_suite(suite, "b.yaml")), "--results", str(results))
    assert code == 0, err
    assert not (results / "_gallery" / "tiny-real-2").exists()


def test_bare_unet2dcondition_folder_with_embeddings_file(tmp_path) -> None:
    unet = tiny_cond_unet(channels=1)
    unet.save_pretrained(tmp_path / "ckpt" / "unet")
    diffusers.DDPMScheduler().save_pretrained(tmp_path / "ckpt" / "scheduler")
    emb = torch.randn(3, 5, 16)
    torch.save(emb, tmp_path / "emb.pt")
    with pytest.raises(BenchError, match="without a text encoder.*'embeddings: FILE'"):
        DiffusersAdapter(path=str(tmp_path / "ckpt" / "unet"))
    a = DiffusersAdapter(path=str(tmp_path / "ckpt" / "unet"), embeddings=str(tmp_path / "emb.pt"),
                         null_embedding=2, guidance=2.0)
    conds = resolve(None, a)
    assert [c.label for c in conds.for_indices(range(5))] == [0, 1, 0, 1, 0]  # row 2 is the null
    rows, null = a.encode([Condition("class=1", label=1), Condition("class=0", label=0)])
    assert torch.equal(rows, emb[[1, 0]]) and torch.equal(null, emb[[2, 2]])
    den = a.load().inner
    x, s = torch.randn(2, 1, 8, 8), torch.full((2,), 3.0, dtype=torch.float64)
    t = den.timesteps(s).float()
    with torch.no_grad():
        eps = unet(x / (1 + 9.0) ** 0.5, t, encoder_hidden_states=emb[[1, 0]]).sample
    ref = x.double() - 3.0 * eps.double()
    assert torch.allclose(den(x, s, Cond(rows, null)).double(), ref, atol=1e-5)


def test_model_index_cannot_make_the_adapter_import_any_module(tmp_path, monkeypatch) -> None:
    folder = save_ddpm(tmp_path / "p")
    marker = tmp_path / "imported"
    mod = tmp_path / "mods"
    mod.mkdir()
    (mod / "evil_component_lib.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\nclass Thing: pass\n")
    monkeypatch.syspath_prepend(str(mod))
    index = json.loads((folder / "model_index.json").read_text())
    index["extra"] = ["evil_component_lib", "Thing"]
    (folder / "model_index.json").write_text(json.dumps(index))
    (folder / "extra").mkdir()
    monkeypatch.delenv("BENCH_ALLOWED_LIBRARIES", raising=False)
    with pytest.raises(BenchError, match="component 'extra' .*library 'evil_component_lib'.*"
                                         "BENCH_ALLOWED_LIBRARIES"):
        DiffusersAdapter(path=str(folder))
    assert not marker.exists()
    monkeypatch.setenv("BENCH_ALLOWED_LIBRARIES", "evil_component_lib")  # the user's explicit choice
    DiffusersAdapter(path=str(folder))  # validates; loading would import it
