"""The work of a suite is counted and bounded before any of it is done (``bench.budget``), and
sampler/grid parameter values are dry-run at plan time: a suite over a bound is refused with
exit 2, a message naming the setting, and without materialising its shards."""

from __future__ import annotations

import time

import pytest

from bench.budget import MAX_NFE, MAX_SEED, MAX_SHARDS, machine_ram_bytes
from bench.dispatch import _cost
from bench.suite import load_suite, plan
from conftest import small_suite


def _refused(cli, path, *fields):
    code, out, err = cli("plan", path, "--results", path.parent / "res")
    assert code == 2 and out == "" and err.startswith("error: ") and err.count("\n") == 1, (out, err)
    for f in fields:
        assert f"field '{f}'" in err, err
    return err


def test_a_billion_shards_are_refused_at_once(cli, write_suite):
    from bench.registry import load_all

    load_all()  # imports are not what is timed
    path = write_suite(small_suite(samples=1_000_000_000, shard_size=1, batch_size=1))
    t0 = time.perf_counter()
    err = _refused(cli, path, "shard_size")
    wall = time.perf_counter() - t0
    assert wall < 2.0, wall  # counted from the lists, not by building 8e9 Shard objects
    assert "8,000,000,000 shards" in err and f"{MAX_SHARDS:,}" in err and "raise shard_size" in err


def test_many_cells_without_shard_size_name_the_lists(cli, write_suite):
    # 4 samplers x 30000 NFE = 120000 cells of one shard each
    path = write_suite(small_suite(nfe=list(range(3, 30_003)), samples=1, nfe_rounding="down"))
    err = _refused(cli, path, "nfe")
    assert "120,000 shards" in err and "one shard per cell" in err and "nfe list" in err


def test_stated_numbers_are_what_plan_produces(cli, write_suite):
    ntt = {"name": "nfe_to_target", "params": {"metric": "oracle_rmse", "target": 0.01,
                                               "nfe_min": 2, "nfe_max": 12}}
    path = write_suite(small_suite(samples=25, shard_size=7, batch_size=4, nfe=[5, 10, 20],
                                   samplers=["ddim", "heun", "dpm_solver_2"],
                                   evals=["nfe_curve", ntt]))
    suite = load_suite(path)
    shards = plan(suite)
    b = suite.budget
    assert b.cells == len({s.cell_key for s in shards}) == 3 * 3 + 3
    assert b.shards == len(shards) == 3 * 3 * 4 + 3  # ceil(25 / 7) per sharded cell, 1 per loop
    assert b.samples == sum(s.stop - s.start for s in shards) == 12 * 25
    assert b.evaluations == sum(_cost(s) for s in shards) == 25 * (3 * 35 + 3 * 12)
    assert b.where["batch"] == 4 and b.where["shard"] == 25  # the loop eval's shard is biggest
    code, out, _ = cli("plan", path, "--results", path.parent / "res")
    assert code == 0
    assert f"work: {b.cells} cell(s) in {b.shards} shard(s), 300 samples, {b.evaluations:,} " \
           f"network evaluations" in out
    assert "memory: about" in out and "per job" in out


def test_memory_estimate_refused_over_mem_gb(cli, write_suite):
    big = {"name": "gmm", "label": "g", "params": {"shape": [3, 64, 64]}}
    path = write_suite(small_suite(models=[big], batch_size=4096, samples=4096, nfe=[10],
                                   samplers=["ddim"], executor={"name": "debug", "mem_gb": 0.001}))
    err = _refused(cli, path, "batch_size")  # 4096 x 12288 float64 x 8 copies: the batch dominates
    assert "1.0 MiB of executor.mem_gb" in err and "batch of 4,096 sample(s) 3.0 GiB" in err
    assert "lower batch_size" in err and "mem_gb" in err
    # the same suite fits with a small batch and room for it
    ok = small_suite(models=[big], batch_size=2, samples=4096, nfe=[10], samplers=["ddim"],
                     executor={"name": "debug", "mem_gb": 0.5})
    assert cli("plan", write_suite(ok, name="ok.yaml"))[0] == 0
    # a shard's eval state dominates: 10^12 samples in one shard never fit this machine
    if machine_ram_bytes():
        huge = write_suite(small_suite(samples=10**12, nfe=[10], samplers=["ddim"]), name="h.yaml")
        err = _refused(cli, huge, "shard_size")
        assert "this machine's RAM" in err and "shard of 1,000,000,000,000" in err
    bad = write_suite(small_suite(executor={"mem_gb": "lots"}), name="bad.yaml")
    assert "'lots'" in _refused(cli, bad, "executor.mem_gb")


def test_seed_bounds(cli, write_suite):
    assert cli("plan", write_suite(small_suite(seed=MAX_SEED), name="ok.yaml"))[0] == 0
    err = _refused(cli, write_suite(small_suite(seed=MAX_SEED + 1)), "seed")
    assert str(MAX_SEED + 1) in err and f"<= {MAX_SEED}" in err
    assert "got -1" in _refused(cli, write_suite(small_suite(seed=-1), name="n.yaml"), "seed")


def test_nfe_bounds(cli, write_suite):
    err = _refused(cli, write_suite(small_suite(nfe=[10, MAX_NFE + 1])), "nfe[1]")
    assert str(MAX_NFE + 1) in err and f"<= {MAX_NFE}" in err
    ntt = {"name": "nfe_to_target", "params": {"target": 0.01, "nfe_max": 10**12}}
    t0 = time.perf_counter()
    _refused(cli, write_suite(small_suite(evals=[ntt]), name="t.yaml"), "evals[0].params.nfe_max")
    assert time.perf_counter() - t0 < 2.0  # never scans 10^12 step counts


def test_gmm_whose_full_covariance_cannot_fit_is_refused_before_drawing_it(cli, write_suite):
    model = {"name": "gmm", "params": {"shape": [3, 256, 256], "cov": "full"}}
    t0 = time.perf_counter()
    err = _refused(cli, write_suite(small_suite(models=[model])), "models[0].params")
    assert time.perf_counter() - t0 < 2.0
    assert "196,608 dimensions" in err and "GiB" in err and "cov: diag" in err


@pytest.mark.parametrize("sampler, field, text", [
    ({"name": "ddim", "params": {"eta": -0.5}}, "samplers[0].params", "eta must be >= 0"),
    ({"name": "ddim", "grid": {"name": "time_uniform", "t_end": 5.0}}, "samplers[0].grid",
     "t_end=5.0 is outside"),
    # a grid value the sampler's params state (grid_params) is reported at the params
    ({"name": "dpm_solver_fast", "params": {"order": 4}}, "samplers[0].params", "order=4"),
    ({"name": "diffusers", "params": {"scheduler": "NoSuchScheduler"}}, "samplers[0].params",
     "'NoSuchScheduler' is not a diffusers scheduler"),
])
def test_dry_run_turns_parameter_values_into_plan_errors(cli, write_suite, sampler, field, text):
    err = _refused(cli, write_suite(small_suite(samplers=[sampler], nfe=[10])))
    assert f"field '{field}'" in err and text in err and "model 'g'" in err and "NFE 10" in err
