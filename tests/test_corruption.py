"""Corrupt files: each kind bench writes, truncated or bit-flipped, is named on the next run,
moved aside, recomputed, and the results end bitwise equal to a clean run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import test_fidelity_support as S
from bench.data import open_dataset
from bench.integrity import CorruptFile, load_npz
from bench.metrics import refstats
from conftest import small_suite

VALUE_COLUMNS = ["value", "ci_low", "ci_high", "nfe_counted", "n_samples"]


def mixture_suite(**over) -> dict:
    """Two components: the oracle's ODE solution is solved numerically and cached in _cache."""
    return small_suite(samples=16, batch_size=4, shard_size=8, nfe=[4, 8], samplers=["ddim", "euler"],
                       models=[{"name": "gmm", "label": "mix",
                                "params": {"shape": [2], "components": 2}}],
                       evals=[{"name": "nfe_curve", "params": {"slices": ["all", "condition"]}}],
                       **over)


def corrupt(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:  # one bit in the middle of the file
        data[len(data) // 2] ^= 0x10
        path.write_bytes(bytes(data))


def rows(res: Path) -> pd.DataFrame:
    df = pd.read_parquet(res)
    return df.sort_values(["sampler", "nfe", "slice", "metric"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """One clean run of the suite: its rows are what every recovered run must equal."""
    import yaml

    from bench.cli import main

    d = tmp_path_factory.mktemp("clean")
    (d / "s.yaml").write_text(yaml.safe_dump(mixture_suite()))
    assert main(["run", str(d / "s.yaml"), "--results", str(d / "res")]) == 0
    return d / "s.yaml", d / "res"


def fresh_copy(clean, tmp_path) -> Path:
    import shutil

    res = tmp_path / "res"
    shutil.copytree(clean[1], res)
    return res


def assert_equal_to_clean(res: Path, clean) -> None:
    a, b = rows(res), rows(clean[1])
    assert len(a) == len(b) > 0
    for col in VALUE_COLUMNS:
        np.testing.assert_array_equal(a[col].to_numpy(), b[col].to_numpy())  # bitwise


def one(folder: Path, pattern: str = "*") -> Path:
    files = sorted(p for p in folder.rglob(pattern) if p.is_file() and not p.name.startswith("."))
    assert files, folder
    return files[0]


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_corrupt_shard_is_named_moved_and_recomputed(cli, clean, tmp_path, how):
    res = fresh_copy(clean, tmp_path)
    shard = one(res / "_shards")
    for p in res.glob("tiny/*.parquet"):  # as if the run had died before writing rows
        p.unlink()
    corrupt(shard, how)
    code, out, err = cli("status", "latest", "--results", res)
    assert code == 1 and "1 corrupt" in out and shard.stem in out  # named, nothing moved yet
    assert shard.is_file()
    code, out, err = cli("run", clean[0], "--results", res)
    assert code == 0, err
    assert str(shard) in err and "is corrupt" in err and "1 computed" in out
    assert len(list((res / "_corrupt" / "_shards").iterdir())) == 1
    load_npz(shard)  # rewritten, and verifies
    assert_equal_to_clean(res, clean)


@pytest.mark.parametrize("kind", ["rows", "samples"])
def test_truncated_result_table_is_rewritten_from_the_shards(cli, clean, tmp_path, kind):
    res = fresh_copy(clean, tmp_path)
    target = one(res / "tiny") if kind == "rows" else one(res / "_samples")
    corrupt(target, "truncate")
    code, out, err = cli("run", clean[0], "--results", res)
    assert code == 0, err
    assert str(target) in err and "0 computed" in out and "1 cell(s) written" in out
    assert_equal_to_clean(res, clean)
    samples = pd.read_parquet(one(res / "_samples"))
    clean_samples = pd.read_parquet(one(clean[1] / "_samples"))
    assert samples.drop(columns="run_id").equals(clean_samples.drop(columns="run_id"))


@pytest.mark.parametrize("kind", ["rows", "samples"])
def test_no_flipped_bit_in_a_result_table_is_read_as_other_content(clean, tmp_path, kind):
    """One bit flipped at every 5th byte of the file, one at a time: bench's reader either
    refuses the file (CorruptFile: the next run moves it aside and rewrites it) or the flip hit
    bytes no reader uses (the table reads back exactly as written, with pandas too)."""
    from bench.integrity import read_table

    src = one(clean[1] / "tiny") if kind == "rows" else one(clean[1] / "_samples")
    data, expected = src.read_bytes(), pd.read_parquet(src)
    target, detected, positions = tmp_path / "t.parquet", 0, range(0, len(src.read_bytes()), 5)
    for i in positions:
        flipped = bytearray(data)
        flipped[i] ^= 0x10
        target.write_bytes(bytes(flipped))
        try:
            read_table(target)
        except CorruptFile:
            detected += 1
            continue
        assert pd.read_parquet(target).equals(expected), f"byte {i}: read as other content"
    assert detected > len(positions) / 2, (detected, len(positions))


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_corrupt_ground_truth_cache_is_recomputed_not_used(cli, clean, tmp_path, how):
    res = fresh_copy(clean, tmp_path)
    truths = sorted((res / "_cache" / "truth").glob("*.npz"))
    assert truths, "the mixture oracle caches its ODE solutions"
    for p in truths:
        corrupt(p, how)
    import shutil

    shutil.rmtree(res / "_shards")
    shutil.rmtree(res / "tiny")
    shutil.rmtree(res / "_samples")
    code, out, err = cli("run", clean[0], "--results", res)
    assert code == 0, err
    assert err.count("is corrupt") == len(truths) and str(truths[0]) in err
    assert_equal_to_clean(res, clean)


def test_corrupt_partial_state_restarts_the_shard_from_its_first_sample(cli, clean, tmp_path):
    res = fresh_copy(clean, tmp_path)
    shard = one(res / "_shards")
    partial = res / "_partial" / shard.name
    partial.parent.mkdir()
    partial.write_bytes(shard.read_bytes())
    corrupt(partial, "flip")
    shard.unlink()
    for p in res.glob("tiny/*.parquet"):
        p.unlink()
    code, out, err = cli("run", clean[0], "--results", res)
    assert code == 0, err
    assert str(partial) in err and "1 computed" in out and not partial.exists()
    assert_equal_to_clean(res, clean)


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_corrupt_manifest_failure_record_and_marker_do_not_stop_anything(cli, clean, tmp_path, how):
    res = fresh_copy(clean, tmp_path)
    manifest = one(res / "_runs")
    corrupt(manifest, how)
    code, out, err = cli("status", manifest.stem, "--results", res)
    assert code == 2 and str(manifest) in err and "Traceback" not in err
    assert not manifest.exists() and any((res / "_corrupt" / "_runs").iterdir())
    shard = one(res / "_shards")
    for folder in ("_failed", "_running"):
        (res / folder).mkdir(exist_ok=True)
        (res / folder / f"{shard.stem}.json").write_text('{"pid": 1, "host": "x"')  # cut short
    shard.unlink()
    for p in res.glob("tiny/*.parquet"):
        p.unlink()
    code, out, err = cli("run", clean[0], "--results", res)
    assert code == 0, err
    assert "1 computed" in out
    assert_equal_to_clean(res, clean)
    code, out, err = cli("status", "latest", "--results", res)
    assert code == 0 and "0 failed" in out


def test_a_table_rewritten_without_bench_is_refused(cli, clean, tmp_path):
    """Edited with pandas (valid Parquet, no digest): named, moved aside, written again."""
    res = fresh_copy(clean, tmp_path)
    target = one(res / "tiny")
    df = pd.read_parquet(target)
    df["value"] = df["value"] * 10
    df.to_parquet(target, index=False)
    code, out, err = cli("run", clean[0], "--results", res)
    assert code == 0 and str(target) in err and "no content digest" in err
    assert_equal_to_clean(res, clean)


@pytest.mark.parametrize("how", ["truncate", "flip", "rewrite"])
def test_corrupt_reference_statistics_are_rebuilt(tmp_path, capsys, how):
    x = np.random.default_rng(0).integers(0, 256, size=(30, 3, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "ref.npz", images=x)
    ds, ext, root = open_dataset(str(tmp_path / "ref.npz")), S.ProjectionExtractor(), tmp_path / "refs"
    ref, built = refstats.build(ds, ext, root=root)
    path = refstats.ref_path(ref.id, root)
    if how == "rewrite":  # what a hand edit does: valid arrays, other numbers, no digest
        z = dict(np.load(path))
        z.pop("__digest__")
        np.savez(path, **{**z, "mu": z["mu"] + 1})
    else:
        corrupt(path, how)
    with pytest.raises(CorruptFile, match=ref.id):
        refstats.load.cache_clear()
        refstats.load(ref.id, str(root))
    again, built = refstats.build(ds, ext, root=root)
    assert built and str(path) in capsys.readouterr().err
    np.testing.assert_array_equal(again.mu, ref.mu)
    np.testing.assert_array_equal(again.sigma, ref.sigma)
    assert len(list((root / "_corrupt").iterdir())) == 1


def test_corrupt_gallery_file_is_skipped_by_the_report(cli, tmp_path, write_suite):
    suite = write_suite(small_suite(samplers=["ddim"], nfe=[4], samples=8, models=[
        {"name": "gmm", "params": {"shape": [1, 4, 4]}}],
        evals=[{"name": "nfe_curve", "params": {"gallery": 8}}]))
    res = tmp_path / "res"
    code, out, err = cli("run", suite, "--results", res)
    if code != 0 or not (res / "_gallery").is_dir():
        pytest.fail(f"gallery not written: {out} {err}")
    files = sorted((res / "_gallery").rglob("*.npz"))
    corrupt(files[0], "flip")
    code, out, err = cli("report", res, "--out", tmp_path / "rep")
    assert code == 0 and str(files[0]) in err


def test_status_tells_a_corrupt_shard_from_a_missing_one(cli, clean, tmp_path):
    res = fresh_copy(clean, tmp_path)
    shards = sorted((res / "_shards").glob("*.npz"))
    for p in res.glob("tiny/*.parquet"):  # a cell whose rows are stored needs no shard files
        p.unlink()
    corrupt(shards[0], "flip")
    shards[1].unlink()
    code, out, _ = cli("status", "latest", "--results", res)
    lines = {line.split()[0] for line in out.splitlines()[1:] if line.strip()}
    assert code == 1 and "corrupt" in lines and "pending" in lines
    manifest = json.loads(one(res / "_runs").read_text())
    assert manifest["status"] == "finished"


def test_a_cell_whose_rows_are_stored_is_not_recomputed_without_its_shards(cli, clean, tmp_path):
    """Shard files hold features and may be removed once their cell's rows are written: a rerun
    computes nothing and status calls them done; a cell whose rows go too is computed again."""
    import shutil

    res = fresh_copy(clean, tmp_path)
    n_shards = len(list((res / "_shards").glob("*.npz")))
    shutil.rmtree(res / "_shards")
    code, out, _ = cli("plan", clean[0], "--results", res)
    assert code == 0 and f"{n_shards} shard(s), {n_shards} already done" in out
    code, out, err = cli("run", clean[0], "--results", res)
    assert code == 0, err
    assert "0 computed" in out and not list(res.glob("_shards/*.npz"))
    assert_equal_to_clean(res, clean)
    code, out, _ = cli("status", "latest", "--results", res)
    states = [line.split()[0] for line in out.splitlines()[1:] if line.strip()]
    assert code == 0 and states.count("done") == n_shards and "shard file was removed" in out
    cell = one(res / "tiny")
    cell.unlink()  # its per-sample table stays: rewritten with the rows
    code, out, err = cli("run", clean[0], "--results", res)
    assert code == 0, err
    per_cell = n_shards // len(list(clean[1].glob("tiny/*.parquet")))
    assert f"{per_cell} computed" in out and "1 cell(s) written" in out
    assert len(list(res.glob("_shards/*.npz"))) == per_cell
    assert_equal_to_clean(res, clean)


def test_report_and_compare_refuse_a_corrupt_result_file_and_flag_unverifiable_ones(cli, clean,
                                                                                     tmp_path):
    res = fresh_copy(clean, tmp_path)
    target = one(res / "tiny")
    df = pd.read_parquet(target)
    df["value"] = df["value"] * 10
    df.to_parquet(target, index=False)  # valid Parquet, other numbers, no digest
    code, out, err = cli("report", res, "--out", tmp_path / "rep")
    assert code == 0 and "no content digest" in err and str(target) in err
    table = pa_table_with_flipped_value(one(clean[1] / "tiny"))
    import pyarrow.parquet as pq

    pq.write_table(table, target)  # the digest of the original kept, one value changed
    for args in (("report", res, "--out", tmp_path / "rep2"), ("compare", clean[1], res)):
        code, out, err = cli(*args)
        assert code == 2 and str(target) in err and "does not match its digest" in err, err


def pa_table_with_flipped_value(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    i = table.schema.get_field_index("value")
    values = table.column(i).to_pylist()
    values[0] = values[0] * 2
    return table.set_column(i, "value", pa.array(values, pa.float64()))
