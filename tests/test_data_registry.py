"""Data sets: Fashion-MNIST from the Debian IDX files, image folders, .npz arrays; content hashes."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

import test_fidelity_support as S
from bench.data import FashionMNIST, ImageArray, ImageFolder, open_dataset, read_idx
from bench.errors import BenchError
from bench.registry import DATASETS, load_all


def test_registered_and_listed(cli):
    load_all()
    assert {"fmnist-train", "fmnist-test"} <= set(DATASETS.names())


def test_fashion_mnist_from_the_debian_files():
    S.need_fmnist()
    test, train = open_dataset("fmnist-test"), open_dataset("fmnist-train")
    assert (len(test), len(train)) == (10000, 60000)
    x = test.images(0, 5)
    assert x.shape == (5, 1, 28, 28) and x.dtype == np.uint8
    assert list(test.labels[:5]) == [9, 2, 1, 1, 6]  # ankle boot, pullover, trouser, trouser, shirt
    (b,) = list(test.batches(batch_size=7, limit=7))
    assert tuple(b.shape) == (7, 1, 28, 28)
    assert test.content_hash(100) == test.content_hash(100) != test.content_hash(101)
    assert test.content_hash(100) != train.content_hash(100)


def test_missing_fashion_mnist_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_FMNIST_DIR", str(tmp_path))
    with pytest.raises(BenchError) as e:
        FashionMNIST("test")
    msg = str(e.value)
    assert "apt-get install dataset-fashion-mnist" in msg and "BENCH_FMNIST_DIR" in msg


def test_idx_reader_plain_and_gzipped(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = bytes([0, 0, 0x08, 3]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.tobytes()
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(raw)
    with gzip.open(tmp_path / "x.gz", "wb") as f:
        f.write(raw)
    assert np.array_equal(read_idx(tmp_path / "t10k-images-idx3-ubyte"), arr)
    assert np.array_equal(read_idx(tmp_path / "x.gz"), arr)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(BenchError, match="not an IDX file"):
        read_idx(tmp_path / "bad")


def test_folder_and_arrays_agree_and_hash_by_content(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(6, 3, 10, 10), dtype=np.uint8)
    d = tmp_path / "imgs" / "sub"
    d.mkdir(parents=True)
    for i, img in enumerate(x):
        Image.fromarray(img.transpose(1, 2, 0)).save(d / f"{i:03d}.png")
    np.savez(tmp_path / "nchw.npz", images=x)
    np.savez(tmp_path / "nhwc.npz", arr_0=x.transpose(0, 2, 3, 1))
    np.save(tmp_path / "f.npy", x.astype(np.float32))
    sets = [open_dataset(str(tmp_path / "imgs")), open_dataset(str(tmp_path / "nchw.npz")),
            open_dataset(str(tmp_path / "nhwc.npz")), open_dataset(str(tmp_path / "f.npy"))]
    assert isinstance(sets[0], ImageFolder) and isinstance(sets[1], ImageArray)
    for s in sets:
        assert len(s) == 6 and np.array_equal(s.images(0, 6), x)
    assert len({s.content_hash() for s in sets}) == 1  # same pixels, same hash
    y = x.copy()
    y[0, 0, 0, 0] ^= 1
    np.savez(tmp_path / "other.npz", images=y)
    assert open_dataset(str(tmp_path / "other.npz")).content_hash() != sets[0].content_hash()


def test_bad_inputs_are_explained(tmp_path):
    with pytest.raises(BenchError, match="neither a registered data set"):
        open_dataset(str(tmp_path / "nothing"))
    np.savez(tmp_path / "stats.npz", mu=np.zeros(3), sigma=np.eye(3))
    with pytest.raises(BenchError, match="bench refstats import"):
        open_dataset(str(tmp_path / "stats.npz"))
    np.save(tmp_path / "range.npy", np.full((2, 3, 4, 4), 300.0, np.float32))
    with pytest.raises(BenchError, match=r"must lie in \[0, 255\]"):
        open_dataset(str(tmp_path / "range.npy")).images(0, 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchError, match="holds no images"):
        open_dataset(str(tmp_path / "empty"))
