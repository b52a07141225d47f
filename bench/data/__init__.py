"""Image data sets: a registry of named sets plus image folders and ``.npz``/``.npy`` arrays.

Every data set yields uint8 NCHW image batches (1 or 3 channels) without holding more than a
batch of decoded images beyond what its storage format forces, and has a content hash: the
sha256 of its decoded pixels (shape, dtype and bytes, in order), so statistics computed from it
can be keyed by what the data *are*, not by a name or a path.

Named sets (registry ``DATASETS``):

* ``fmnist-train`` / ``fmnist-test``: Fashion-MNIST (60k / 10k, 1x28x28) read from the IDX files
  of the Debian package ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``)
  in ``/usr/share/datasets/fashion-mnist``; ``$BENCH_FMNIST_DIR`` (or the ``root`` parameter)
  points elsewhere, e.g. to the four ``*-idx*-ubyte(.gz)`` files of the original release.

Anything else given where a data set is expected is resolved by :func:`open_dataset`: an image
folder (png, jpg, bmp, webp, tif, searched recursively, sorted by path), or an array file
(``.npz`` with key ``images``, ``arr_0``, ``x`` or ``samples``, or ``.npy``), NHWC or NCHW,
uint8, or float in [0, 255].
"""

from __future__ import annotations

import gzip
import hashlib
import os
from abc import ABC, abstractmethod
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

from bench.errors import BenchError
from bench.registry import DATASETS

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
FMNIST_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
FMNIST_ENV = "BENCH_FMNIST_DIR"


class ImageDataset(ABC):
    """A finite, ordered set of uint8 images."""

    name: str = ""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def images(self, start: int, stop: int) -> np.ndarray:
        """uint8 images [start, stop) as an NCHW array."""

    def batches(self, batch_size: int = 100, limit: int | None = None) -> Iterator[Tensor]:
        n = len(self) if limit is None else min(int(limit), len(self))
        for b0 in range(0, n, batch_size):
            yield torch.from_numpy(np.array(self.images(b0, min(b0 + batch_size, n)), copy=True))

    def content_hash(self, limit: int | None = None) -> str:
        """sha256 over the decoded pixels of the first ``limit`` images (all by default)."""
        n = len(self) if limit is None else min(int(limit), len(self))
        h = hashlib.sha256()
        for b0 in range(0, n, 4096):
            x = np.ascontiguousarray(self.images(b0, min(b0 + 4096, n)))
            h.update(f"{x.dtype.str}{tuple(x.shape[1:])}".encode())
            h.update(x.tobytes())
        h.update(f"n={n}".encode())
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        return {"dataset": self.name, "n": len(self)}


def _to_nchw_uint8(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim == 3:  # N H W (grayscale)
        x = x[:, None]
    if x.ndim != 4:
        raise BenchError(f"{where}: expected images of shape NHWC or NCHW, got {x.shape}.")
    if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.shape[1] not in (1, 3):
        raise BenchError(f"{where}: images need 1 or 3 channels, got shape {x.shape}.")
    if x.dtype != np.uint8:
        xf = x.astype(np.float64)
        bad = ~np.isfinite(xf).reshape(len(xf), -1).all(1)
        if bad.any():
            raise BenchError(f"{where}: {int(bad.sum())} of {len(x)} images contain NaN or Inf "
                             f"(first at index {int(np.flatnonzero(bad)[0])}); they would poison the "
                             f"features. Remove them or fix the generator.")
        if xf.min() < 0 or xf.max() > 255:
            raise BenchError(f"{where}: float images must lie in [0, 255], got range "
                             f"[{xf.min():.3g}, {xf.max():.3g}]; scale them (e.g. (x+1)*127.5).")
        x = np.rint(xf).astype(np.uint8)
    return x


# ------------------------------------------------------------------------------ Fashion-MNIST
def _find_idx(root: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem, stem.replace("-idx", ".idx")):
        if (root / name).is_file():
            return root / name
    return None


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise BenchError(f"{path}: not an IDX file (bad magic number).")
    dtype = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[data[2]]
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise BenchError(f"{path}: truncated IDX file ({arr.size} values for shape {shape}).")
    return arr.reshape(shape)


@lru_cache(maxsize=4)
def _load_fmnist(root: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    stem = "train" if split == "train" else "t10k"
    r = Path(root)
    img, lab = _find_idx(r, f"{stem}-images-idx3-ubyte"), _find_idx(r, f"{stem}-labels-idx1-ubyte")
    if img is None or lab is None:
        raise BenchError(
            f"Fashion-MNIST ({split}) not found in '{root}' (looked for "
            f"{stem}-images-idx3-ubyte[.gz] and {stem}-labels-idx1-ubyte[.gz]). Install it with "
            f"'apt-get install dataset-fashion-mnist' (Debian/Ubuntu; files go to "
            f"{FMNIST_DEFAULT_DIR}), or point ${FMNIST_ENV} (or the data set's 'root' parameter) "
            f"to a folder holding the four IDX files of the original release.")
    images, labels = read_idx(img), read_idx(lab)
    if images.ndim != 3 or len(images) != len(labels):
        raise BenchError(f"{img}: expected N x 28 x 28 images matching {len(labels)} labels, "
                         f"got {images.shape}.")
    return images, labels


class FashionMNIST(ImageDataset):
    """Fashion-MNIST from IDX files (Debian package dataset-fashion-mnist by default)."""

    def __init__(self, split: str, root: str | None = None) -> None:
        self.split = split
        self.root = str(root or os.environ.get(FMNIST_ENV) or FMNIST_DEFAULT_DIR)
        self.name = f"fmnist-{split}"
        self._images, self.labels = _load_fmnist(self.root, split)

    def __len__(self) -> int:
        return len(self._images)

    def images(self, start: int, stop: int) -> np.ndarray:
        return self._images[start:stop, None]


@DATASETS.register("fmnist-train", "Fashion-MNIST training set, 60000 x 1x28x28 uint8 (Debian "
                   "package dataset-fashion-mnist; $BENCH_FMNIST_DIR overrides the folder)")
def fmnist_train(*, root: str | None = None) -> FashionMNIST:
    return FashionMNIST("train", root)


@DATASETS.register("fmnist-test", "Fashion-MNIST test set, 10000 x 1x28x28 uint8 (Debian "
                   "package dataset-fashion-mnist; $BENCH_FMNIST_DIR overrides the folder)")
def fmnist_test(*, root: str | None = None) -> FashionMNIST:
    return FashionMNIST("test", root)


# ------------------------------------------------------------------------- folders and arrays
class ImageFolder(ImageDataset):
    """Images in a folder (recursive, sorted by relative path), decoded one batch at a time."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = f"folder:{self.path.name}"
        self.files = sorted(p for p in self.path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
                            and p.is_file())
        if not self.files:
            raise BenchError(f"image folder '{path}' holds no images ({', '.join(IMAGE_EXTENSIONS)}).")

    def __len__(self) -> int:
        return len(self.files)

    def images(self, start: int, stop: int) -> np.ndarray:
        from PIL import Image

        out = []
        for p in self.files[start:stop]:
            try:
                with Image.open(p) as im:  # as clean-fid and pytorch-fid read files: RGB
                    a = np.asarray(im.convert("RGB"))
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                # UnidentifiedImageError and "image file is truncated" are OSErrors
                raise BenchError(f"image folder '{self.path}': image file '{p}' cannot be decoded "
                                 f"({type(exc).__name__}: {exc}); it is corrupt or truncated. "
                                 f"Remove or replace it, then rerun.") from None
            out.append(a.transpose(2, 0, 1))
        shapes = {o.shape for o in out}
        if len(shapes) > 1:
            raise BenchError(f"image folder '{self.path}': images differ in size {sorted(shapes)}; "
                             f"resize them to one size first.")
        return np.stack(out)


class ImageArray(ImageDataset):
    """Images in a ``.npy`` (memory-mapped) or ``.npz`` file."""

    KEYS = ("images", "arr_0", "x", "samples", "imgs")

    def __init__(self, path: str | Path, key: str | None = None) -> None:
        self.path = Path(path)
        self.name = f"array:{self.path.name}"
        try:
            arr = self._load(key)
        except BenchError:
            raise
        except Exception as exc:  # truncated, not NumPy, object arrays (no pickles are loaded)
            raise BenchError(f"image array '{path}' cannot be read ({type(exc).__name__}: "
                             f"{str(exc)[:200]}); it is corrupt, truncated or not a NumPy "
                             f".npy/.npz file. Replace it, then rerun.") from None
        if np.ndim(arr) < 3 or not len(arr):
            raise BenchError(f"image array '{path}': expected N images (NHWC or NCHW), got an "
                             f"array of shape {np.shape(arr)}; save the images as one N x H x W x C "
                             f"array.")
        self._raw = arr
        self._check = _to_nchw_uint8(np.asarray(arr[:1]), str(self.path))  # validates layout

    def _load(self, key: str | None) -> Any:
        path = self.path
        if self.path.suffix == ".npy":
            arr = np.load(self.path, mmap_mode="r")
        else:
            with np.load(self.path, allow_pickle=False) as z:
                keys = [key] if key else [k for k in self.KEYS if k in z.files]
                if not keys or keys[0] not in z.files:
                    if {"mu", "sigma"} <= set(z.files):
                        raise BenchError(f"'{path}' holds statistics (mu, sigma), not images: "
                                         f"import it with 'bench refstats import {path}'.")
                    raise BenchError(f"'{path}': no image array found (keys {z.files}); name one "
                                     f"of {', '.join(self.KEYS)}.")
                arr = z[keys[0]]
        return arr

    def __len__(self) -> int:
        return len(self._raw)

    def images(self, start: int, stop: int) -> np.ndarray:
        return _to_nchw_uint8(np.asarray(self._raw[start:stop]), str(self.path))


def open_dataset(spec: str, **params: Any) -> ImageDataset:
    """A registered name (``fmnist-test``), an image folder, or a ``.npz``/``.npy`` file."""
    if spec in DATASETS:
        return DATASETS.get(spec)(**params)
    p = Path(spec)
    if p.is_dir():
        return ImageFolder(p)
    if p.is_file() and p.suffix in (".npz", ".npy"):
        return ImageArray(p, params.get("key"))
    raise BenchError(f"'{spec}' is neither a registered data set ({', '.join(DATASETS.names())}), "
                     f"an image folder, nor a .npz/.npy image array.")


__all__ = ["ImageDataset", "FashionMNIST", "ImageFolder", "ImageArray", "open_dataset", "read_idx"]
