"""Atomic writes: a killed writer leaves nothing a reader would pick up."""

import os

import numpy as np
import pandas as pd
import pytest

from bench.store import ResultStore, atomic_write

K = "0123456789abcdef0123"  # a shard key is a 20-hex content hash


def test_failed_write_leaves_no_file(tmp_path):
    target = tmp_path / "x.parquet"

    def boom(tmp):
        tmp.write_bytes(b"partial")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert not target.exists() and os.listdir(tmp_path) == []


def test_reader_ignores_hidden_temporaries(tmp_path):
    store = ResultStore(tmp_path)
    store.write_rows("s", "g1", [{"metric": "rmse", "value": 1.0}])
    # what a writer killed between create and rename leaves behind:
    (tmp_path / "s" / ".g2.parquet.abc.tmp").write_bytes(b"PAR1 garbage")
    store.write_shard(K, {"index": np.arange(3)}, {"n": 3})
    df = pd.read_parquet(tmp_path)
    assert list(df["value"]) == [1.0]


def test_shard_roundtrip_and_failure_cleared(tmp_path):
    store = ResultStore(tmp_path)
    store.write_failure(K, {"error": "x"})
    state = {"index": np.arange(4), "rmse": np.linspace(0, 1, 4)}
    store.write_shard(K, state, {"nfe_counted": 7})
    got, meta = store.read_shard(K)
    np.testing.assert_array_equal(got["rmse"], state["rmse"])
    assert meta == {"nfe_counted": 7} and store.read_failure(K) is None
