"""Every suite shipped in suites/ validates and plans (models that check their folders, such as
the shipped fmnist checkpoints, are opened at validation)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.suite import load_suite, plan

SUITES = sorted((Path(__file__).resolve().parent.parent / "suites").glob("*.yaml"))


@pytest.mark.parametrize("path", SUITES, ids=[p.stem for p in SUITES])
def test_shipped_suite_plans(path: Path) -> None:
    cells = plan(load_suite(path))
    assert cells and all(c.key and c.cell_key for c in cells)
    assert len({c.key for c in cells}) == len(cells)  # no two shards compute the same thing
