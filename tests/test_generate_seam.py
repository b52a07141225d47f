"""The generate seam: one sampling loop, per-sample results, one row schema, metrics that
describe themselves, keys by weights hash and per-entry code versions, nested validation."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

import test_fidelity_support  # noqa: F401  (registers the cheap test_proj extractor)
from bench.noise import sample_seed
from bench.store import ROW_SCHEMA, read_samples
from bench.suite import load_suite, plan
from conftest import ROOT, small_suite

PACKAGE = ROOT / "bench"


def ref_images(tmp_path: Path) -> Path:
    ref = tmp_path / "ref.npz"
    np.savez(ref, images=np.random.default_rng(0).integers(0, 256, (40, 8, 8, 1), dtype=np.uint8))
    return ref


def fidelity_suite(tmp_path: Path, **over) -> dict:
    """A fidelity eval on the gmm oracle's decoded 8x8 images with the test_proj extractor."""
    ev = {"name": "fidelity", "params": {"metrics": ["fid", "kid"], "ref": str(ref_images(tmp_path)),
                                         "extractor": "test_proj",
                                         "refstats_dir": str(tmp_path / "refs")}}
    suite = small_suite(name="fid-tiny", samples=24, nfe=[10], samplers=["ddim"], evals=[ev],
                        models=[{"name": "gmm", "label": "g8",
                                 "params": {"shape": [1, 8, 8], "cov": "diag", "var_min": 0.01}}])
    ev["params"]["metrics"][1] = {"name": "kid", "params": {"subset_size": 10, "subsets": 5}}
    suite.update(over)
    return suite


# --------------------------------------------------------------------------- one loop
def test_one_sampling_loop_in_the_package() -> None:
    """Only bench/generate.py calls a registered sampler or wraps a denoiser for counting."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "generate.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
                owner = getattr(f.value, "id", "") if isinstance(f, ast.Attribute) else ""
                if name == "CountingDenoiser" or (owner == "SAMPLERS" and name == "get"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders


# ---------------------------------------------------------------- one schema, per sample
def test_two_evals_share_one_table_and_every_cell_has_per_sample_rows(cli, write_suite, tmp_path):
    res = tmp_path / "res"
    code, _, err = cli("run", write_suite(small_suite(samplers=["ddim", "heun"], nfe=[10]), "a.yaml"),
                       "--results", res)
    assert code == 0, err
    code, _, err = cli("run", write_suite(fidelity_suite(tmp_path), "b.yaml"), "--results", res)
    assert code == 0, err
    for f in res.rglob("*.parquet"):
        if "_samples" not in f.parts:
            assert pq.read_schema(f).remove_metadata().equals(ROW_SCHEMA), f
    df = pd.read_parquet(res)
    assert set(df["suite"]) == {"tiny", "fid-tiny"} and set(ROW_SCHEMA.names) <= set(df.columns)
    fid = df[df["metric"] == "fid"].iloc[0]
    assert fid["feature_extractor"] == "test_proj" and fid["weights_sha256"] == "proj-seed-0"
    assert fid["ref_id"].startswith("array-ref-npz-40-test_proj") and fid["n_nonfinite"] == 0
    assert (df["slice"] == "all").all() and (df["step"] == 0).all()
    assert df["model_hash"].str.len().min() > 10 and df["code_versions"].str.contains("sampler").all()

    samples = read_samples(res)
    per_cell = samples.groupby("config_hash")["index"].agg(["count", "min", "max", "nunique"])
    assert len(per_cell) == len(df.drop_duplicates("config_hash"))
    n = dict(zip(df["config_hash"], df["n_samples"]))
    for key, r in per_cell.iterrows():
        assert r["count"] == r["nunique"] == n[key] and r["min"] == 0 and r["max"] == n[key] - 1
    tiny = samples[samples["suite"] == "tiny"]
    assert tiny["rmse"].notna().all()  # per-sample metric values
    first = tiny[tiny["index"] == 5].iloc[0]
    assert first["seed"] == sample_seed(3, 5)
    rmse = df[(df["suite"] == "tiny") & (df["sampler"] == "ddim")]["value"].iloc[0]
    assert tiny[tiny["sampler"] == "ddim"]["rmse"].mean() == pytest.approx(rmse, rel=1e-12)


def test_per_sample_table_is_the_same_for_any_shard_split(cli, write_suite, tmp_path):
    for shards in (None, 7):
        code, _, err = cli("run", write_suite(small_suite(shard_size=shards, samplers=["ddim"],
                                                          nfe=[10]), f"{shards}.yaml"),
                           "--results", tmp_path / f"r{shards}")
        assert code == 0, err
    a, b = (read_samples(tmp_path / f"r{s}").sort_values("index").reset_index(drop=True)
            for s in (None, 7))
    assert a["rmse"].equals(b["rmse"]) and a["seed"].equals(b["seed"])


def test_class_conditions_reach_the_per_sample_table(cli, write_suite, tmp_path):
    from test_diffusers_adapter import save_ddpm

    folder = save_ddpm(tmp_path / "ckpt")
    suite = fidelity_suite(tmp_path, samples=8, conditions={"classes": [3, 5]},
                           models=[{"name": "diffusers", "label": "tiny", "params": {"path": str(folder)}}])
    res = tmp_path / "res"
    code, out, err = cli("run", write_suite(suite), "--results", res)
    assert code == 0, err
    samples = read_samples(res).sort_values("index")
    assert samples["cond_id"].tolist() == ["class=3", "class=5"] * 4
    assert pd.read_parquet(res)["conditions"].str.startswith("2 class(s)").all()
    code, out, err = cli("run", write_suite({**suite, "conditions": {"classes": [3, 6]}}, "b.yaml"),
                         "--results", res)
    assert "1 computed" in out  # other conditions: another cell


def test_slices_give_rows_per_condition_and_category():
    from bench.conditions import Condition, Conditions
    from bench.evals.nfe_curve import NFECurve

    conds = Conditions("prompts", (Condition("a", text="x", category="c1"),
                                   Condition("b", text="y", category="c1")))
    table = pd.DataFrame({"index": range(6), "cond_id": ["a", "b"] * 3,
                          "category": ["c1"] * 6, "rmse": [1.0, 3.0, 2.0, 4.0, 3.0, 5.0]})
    ev = NFECurve(slices=["condition", "category"])
    rows = ev.slice_rows(table, {"rmse": table["rmse"].to_numpy()}, {}, conds)
    got = {r["slice"]: (r["value"], r["n_samples"]) for r in rows}
    assert got == {"prompt=a": (2.0, 3), "prompt=b": (4.0, 3), "category=c1": (3.0, 6)}


# ------------------------------------------------------------------------ directions
def test_compare_reads_directions_from_the_metrics(cli, tmp_path):
    """Inception Score (row 'isc') is higher-is-better: a rise passes, a drop fails."""
    from bench.store import rows_table

    base = {"suite": "s", "model": "m", "sampler": "ddim", "nfe": 10, "eval": "fidelity",
            "slice": "all", "step": 0, "metric": "isc", "created_at": "2026-01-01T00:00:00+00:00"}
    for name, v in (("base", 5.0), ("up", 6.0), ("down", 4.0)):
        d = tmp_path / name
        d.mkdir()
        pq.write_table(rows_table([{**base, "value": v, "ci_low": v - 0.1, "ci_high": v + 0.1}]),
                       d / "r.parquet")
    code, out, _ = cli("compare", tmp_path / "base", tmp_path / "up")
    assert code == 0 and "improved" in out
    code, out, _ = cli("compare", tmp_path / "base", tmp_path / "down")
    assert code == 1 and "REGRESSION" in out


def test_metrics_declare_every_row_they_emit() -> None:
    from bench.metrics.base import find_output
    from bench.registry import METRICS, load_all

    load_all()
    for e in METRICS:
        outs = e.load().outputs
        assert outs, e.name
        for row, o in outs.items():
            assert find_output(row) is o and o.interval
    assert find_output("fid").higher_is_better is False and find_output("isc").higher_is_better
    assert find_output("nfe_to_target").higher_is_better is False


# ------------------------------------------------------------------------------- keys
def copy_package(dst: Path) -> Path:
    shutil.copytree(PACKAGE, dst / "bench", ignore=shutil.ignore_patterns(
        "__pycache__", "checkpoints", "*.pyc"))
    return dst / "bench"


def test_adding_a_sampler_leaves_a_finished_fidelity_cell_cached(cli, write_suite, tmp_path,
                                                                 monkeypatch):
    import bench.versions as versions

    path = write_suite(fidelity_suite(tmp_path, samplers=["ddim", "euler"]))
    res = tmp_path / "res"
    assert cli("run", path, "--results", res)[0] == 0
    before = {c.sampler["name"]: c.key for c in plan(load_suite(path))}

    pkg = copy_package(tmp_path / "copy")
    (pkg / "samplers" / "my_new_sampler.py").write_text(
        "from bench.samplers.base import register_sampler\n\n\n"
        "def sample_mine(model, x, sigmas, *, cond=None, noise=None, callback=None):\n"
        "    return x\n")
    init = pkg / "samplers" / "__init__.py"
    init.write_text(init.read_text() + "\nfrom bench.samplers import my_new_sampler  # noqa\n")
    monkeypatch.setattr(versions, "PACKAGE_ROOT", pkg)
    after = {c.sampler["name"]: c.key for c in plan(load_suite(path))}
    assert after == before
    code, out, _ = cli("run", path, "--results", res)
    assert code == 0 and "0 computed, 2 already done" in out

    ddim = pkg / "samplers" / "ddim.py"  # editing ddim recomputes only ddim cells
    pkg2 = copy_package(tmp_path / "copy2")
    (pkg2 / "samplers" / "ddim.py").write_text(ddim.read_text() + "\n# edited\n")
    monkeypatch.setattr(versions, "PACKAGE_ROOT", pkg2)
    edited = {c.sampler["name"]: c.key for c in plan(load_suite(path))}
    assert edited["euler"] == before["euler"] and edited["ddim"] != before["ddim"]


def test_replacing_a_checkpoints_weights_recomputes_its_cells(cli, write_suite, tmp_path):
    from test_diffusers_adapter import save_ddpm, tiny_unet

    folder = save_ddpm(tmp_path / "ckpt")
    suite = fidelity_suite(tmp_path, samples=8, models=[{"name": "diffusers", "label": "tiny",
                                                          "params": {"path": str(folder)}}])
    path = write_suite(suite)
    res = tmp_path / "res"
    code, out, err = cli("run", path, "--results", res)
    assert code == 0 and "1 computed" in out, err
    assert "0 computed" in cli("run", path, "--results", res)[1]
    torch.manual_seed(1)
    unet = tiny_unet()
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.01)
    unet.save_pretrained(folder / "unet")  # retrained: same folder, other weights
    code, out, err = cli("run", path, "--results", res)
    assert code == 0 and "1 computed, 0 already done" in out, err
    df = pd.read_parquet(res)
    assert df["model_hash"].nunique() == 2


# ------------------------------------------------------------------------- validation
@pytest.mark.parametrize("ev, field, hint", [
    ({"name": "fidelity", "params": {"metrics": ["fdi"], "ref": "fmnist-test"}},
     "evals[0].params.metrics[0]", "Did you mean 'fid'"),
    ({"name": "nfe_curve", "params": {"metrics": ["oracle_rmes"]}},
     "evals[0].params.metrics[0]", "Did you mean 'oracle_rmse'"),
    ({"name": "fidelity", "params": {"metrics": [{"name": "kid", "params": {"subset_sise": 5}}],
                                     "ref": "fmnist-test"}},
     "evals[0].params.metrics.kid.subset_sise", "Did you mean 'subset_size'"),
    ({"name": "fidelity", "params": {"extractor": "inceptoin", "ref": "fmnist-test"}},
     "evals[0].params.metrics.fid.extractor", "Did you mean 'inception'"),
    ({"name": "fidelity", "params": {"ref": "fmnist-tset"}},
     "evals[0].params.metrics.fid.ref", "Did you mean 'fmnist-test'"),
    ({"name": "nfe_curve", "params": {"slices": ["prompts"]}}, "evals[0].params.slices", "slice"),
])
def test_nested_names_fail_plan_with_exit_2(cli, write_suite, tmp_path, ev, field, hint):
    res = tmp_path / "res"
    code, out, err = cli("plan", write_suite(small_suite(evals=[ev])), "--results", res)
    assert code == 2, (out, err)
    assert f"field '{field}'" in err and hint in err and "Traceback" not in err
    assert not res.exists()


def test_conditions_block_is_validated(cli, write_suite):
    code, _, err = cli("plan", write_suite(small_suite(conditions={"clases": "balanced"})))
    assert code == 2 and "conditions.clases" in err and "Did you mean 'classes'" in err
    code, _, err = cli("plan", write_suite(small_suite(conditions={"classes": "balanced"})))
    assert code == 2 and "is unconditional" in err


def test_sampler_extras_reach_the_per_sample_table(cli, write_suite, tmp_path):
    from bench.registry import SAMPLERS
    from bench.samplers.base import register_sampler

    @register_sampler("test_extras", evals_per_step=1, grid={"name": "time_uniform"}, paper="test")
    def sample_extras(model, x, sigmas, *, cond=None, noise=None, callback=None):
        out = SAMPLERS.get("ddim")(model, x, sigmas, cond=cond)
        return out, {"sq": out.flatten(1).pow(2).sum(1), "map": out}  # a 1-d and an n-d extra

    try:
        code, _, err = cli("run", write_suite(small_suite(samplers=["ddim", "test_extras"], nfe=[10])),
                           "--results", tmp_path / "res")
        assert code == 0, err
    finally:
        del SAMPLERS._entries["test_extras"]
    samples = read_samples(tmp_path / "res")
    mine = samples[samples["sampler"] == "test_extras"].sort_values("index")
    ddim = samples[samples["sampler"] == "ddim"].sort_values("index")
    assert mine["extra_sq"].notna().all() and "extra_map" not in samples  # n-d extras are not rows
    assert mine["rmse"].to_numpy().tolist() == ddim["rmse"].to_numpy().tolist()
    assert ddim["extra_sq"].isna().all()
