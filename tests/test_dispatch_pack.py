"""Shards are packed into jobs by network evaluations, so each job gets an even share of work."""

from __future__ import annotations

from bench.dispatch import pack
from bench.suite import load_suite, plan
from conftest import small_suite


def test_pack_weighs_shards_by_nfe_not_steps(write_suite):
    # DPM-Solver-2 at NFE 20 takes 10 steps of 2 evaluations: it costs one DDIM-20 shard,
    # twice a DDIM-10 shard. Three shards of 24 samples in two jobs: DPM-Solver-2 alone.
    suite = load_suite(write_suite(small_suite(samplers=["ddim", "dpm_solver_2"], nfe=[10, 20])))
    cells = {(c.sampler["name"], c.nfe): c for c in plan(suite)}
    dpm20, ddim10a = cells["dpm_solver_2", 20], cells["ddim", 10]
    assert (dpm20.steps, ddim10a.steps) == (10, 10)  # equal steps, unequal work
    ddim10b = plan(load_suite(write_suite(small_suite(samplers=["ddim"], nfe=[10], seed=4),
                                          name="b.yaml")))[0]
    bins = pack([ddim10a, ddim10b, dpm20], 2)  # steps-only cost would pair dpm20 with a DDIM
    assert sorted(len(b) for b in bins) == [1, 2]
    assert [dpm20] in bins
