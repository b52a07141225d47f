"""A metric renders its own report section by naming it (``report_sections``), without any
change to the report code, and keeps its rows out of the per-metric tables
(``report_tables = False``); the built-in ones (CLIPScore, the uncertainty filter) use the same
hook.

A toy metric is registered for the test only; its rows are fake, written through the store."""

from __future__ import annotations

import sys
import types

import pytest

from bench.report.blocks import Heading, Table, Text
from test_report_t2i import SUITE, document, row


def toy_sections(sdf, ctx):
    rows = sdf[sdf["metric"] == "toy_score"]
    return [Heading("Toy view"), Text(f"{len(rows)} toy rows, mean {rows['value'].mean():.2f}")]


@pytest.fixture
def toy_metric(monkeypatch):
    from bench.metrics.base import Metric, Output
    from bench.registry import METRICS

    module = types.ModuleType("toy_report_module")
    module.toy_sections = toy_sections
    monkeypatch.setitem(sys.modules, "toy_report_module", module)

    class Toy(Metric):
        outputs = {"toy_score": Output(True, "none"), "toy_count": Output(None, "none")}
        report_sections = "toy_report_module:toy_sections"
        report_tables = False

        def update(self, gen): ...
        def state(self): return {}
        def reset(self): ...
        @classmethod
        def merge(cls, states): return {}
        def compute(self, state): return {}

    METRICS.register("toy", "a metric with its own report section")(Toy)
    yield Toy
    METRICS._entries.pop("toy")


def write_rows(results, metrics):
    from bench.store import ResultStore

    store = ResultStore(results)
    for sampler, v in (("ddim", 1.0), ("heun", 3.0)):
        store.write_rows(SUITE, sampler, [row("m", {}, sampler, 20, m, v, 0.1, key=sampler)
                                          for m in metrics])


def test_a_metric_brings_its_own_section(toy_metric, tmp_path):
    write_rows(tmp_path / "results", ["fid", "toy_score", "toy_count"])
    doc = document(tmp_path / "results", tmp_path / "out")
    heads = [b.text for b in doc.blocks if isinstance(b, Heading)]
    assert heads[0] == "Toy view" and "m — fid" in heads  # its section first, FID keeps its table
    assert any(isinstance(b, Text) and b.text == "2 toy rows, mean 2.00" for b in doc.blocks)
    keys = {b.key for b in doc.blocks if isinstance(b, Table)}
    assert "fid" in keys and not keys & {"toy_score", "toy_count"}  # its rows: not in tables


def test_no_rows_of_the_metric_no_section(toy_metric, tmp_path):
    write_rows(tmp_path / "results", ["fid"])
    doc = document(tmp_path / "results", tmp_path / "out")
    assert "Toy view" not in [b.text for b in doc.blocks if isinstance(b, Heading)]


def test_a_metric_without_the_flag_keeps_its_table(toy_metric, monkeypatch, tmp_path):
    monkeypatch.setattr(toy_metric, "report_tables", True)
    write_rows(tmp_path / "results", ["toy_score"])
    doc = document(tmp_path / "results", tmp_path / "out")
    assert "toy_score" in {b.key for b in doc.blocks if isinstance(b, Table)}


def test_built_in_metrics_name_their_sections():
    from bench.metrics.clipscore import ClipScore
    from bench.metrics.uncertainty_filter import UncertaintyFilter
    from bench.report.bayesdiff import filter_sections
    from bench.report.sections import metric_sections
    from bench.report.t2i import t2i_sections
    import pandas as pd

    rows = pd.DataFrame({"metric": ["clipscore", "filter_fid_diff", "fid"]})
    builders, own = metric_sections(rows)
    assert builders == [t2i_sections, filter_sections]  # metric name order
    assert own == set(UncertaintyFilter.outputs) and not own & set(ClipScore.outputs)
    assert metric_sections(rows[rows["metric"] == "fid"]) == ([], set())
