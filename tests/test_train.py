"""``bench train``: the shipped models reproduce from their cards' configs and seed (identical
first losses), a resumed run takes exactly the steps of an uninterrupted one, and bad configs
fail with errors that name the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.errors import BenchError
from bench.train import CONFIG_DIR, TrainConfig, train

pytest.importorskip("diffusers")
SHIPPED = Path(__file__).resolve().parent.parent / "bench" / "checkpoints"
K = 4  # first losses compared


@pytest.mark.parametrize("name", ["fmnist-cond", "fmnist-v"])
def test_shipped_model_reproduces_its_first_losses(tmp_path, name, fmnist) -> None:
    card = json.loads((SHIPPED / name / "model" / "training.json").read_text())
    cfg = TrainConfig.from_yaml(CONFIG_DIR / f"{name}.yaml")
    assert card["config"] == {**cfg.__dict__, "out": card["config"]["out"]}  # the same config
    cfg.out = str(tmp_path / name)
    summary = train(cfg, progress=False, stop_after=K)
    assert summary["data_hash"] == card["data_sha256"]
    losses = [json.loads(ln)["loss"] for ln in (tmp_path / name / "losses.jsonl").read_text().splitlines()]
    assert losses == pytest.approx(card["first_losses"][:K], rel=1e-6, abs=1e-7)


def tiny(tmp_path: Path, out: str, **over) -> TrainConfig:
    cfg = TrainConfig.from_yaml("fmnist-cond", [f"{k}={v}" for k, v in {
        "block_out_channels": "[8, 16]", "attention_levels": "[]", "batch_size": 8,
        "max_steps": 4, "checkpoint_every": 2, "norm_num_groups": 4, **over}.items()])
    cfg.out = str(tmp_path / out)
    return cfg


def test_resumed_training_equals_uninterrupted(tmp_path, fmnist) -> None:
    train(tiny(tmp_path, "a"), progress=False)
    train(tiny(tmp_path, "b"), progress=False, stop_after=2)  # "crash" after step 2
    assert not (tmp_path / "b" / "model").exists()
    train(tiny(tmp_path, "b"), progress=False)  # rerun: resumes at step 2
    la, lb = ((tmp_path / d / "losses.jsonl").read_text() for d in "ab")
    assert la == lb and len(la.splitlines()) == 4
    wa, wb = ((tmp_path / d / "model" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
              for d in "ab")
    assert wa == wb
    meta = json.loads((tmp_path / "a" / "model" / "training.json").read_text())
    assert meta["steps"] == 4 and len(meta["first_losses"]) == 4
    card = (tmp_path / "a" / "model" / "README.md").read_text()
    assert meta["data_sha256"] in card and "bench train" in card


def test_resume_refuses_another_config(tmp_path, fmnist) -> None:
    train(tiny(tmp_path, "a"), progress=False, stop_after=2)
    with pytest.raises(BenchError, match="written with another config .*'lr'"):
        train(tiny(tmp_path, "a", lr=0.5), progress=False)


def test_config_errors_name_the_field(tmp_path) -> None:
    with pytest.raises(BenchError, match="field 'lrate' is not a training option. Did you mean 'lr'"):
        TrainConfig.from_yaml("fmnist-cond", ["lrate=0.1"])
    with pytest.raises(BenchError, match="field 'prediction_type' = 'x0'.*epsilon"):
        TrainConfig.from_yaml("fmnist-cond", ["prediction_type=x0"])
    with pytest.raises(BenchError, match="training config 'fmnist-xyz' not found.*fmnist-cond"):
        TrainConfig.from_yaml("fmnist-xyz")


def test_shipped_models_fit_the_size_budget() -> None:
    files = [p for p in SHIPPED.rglob("*") if p.is_file() and p.name not in ("state.pt", "losses.jsonl")]
    total = sum(p.stat().st_size for p in files)
    assert files and total <= 20 * 2**20, total
    for name in ("fmnist-cond", "fmnist-v"):
        assert (SHIPPED / name / "model" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
        assert "training command" in (SHIPPED / name / "model" / "README.md").read_text()
