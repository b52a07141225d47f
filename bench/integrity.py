"""Checked files: every array file bench caches carries a sha256 of its content, verified on read.

A results folder lives for weeks on shared disks; a flipped bit, a truncated copy or a file
rewritten by hand must never be used silently. Each ``.npz`` bench writes holds a
``__digest__`` entry: the sha256 over every array's name, dtype, shape and bytes. Result tables
(Parquet) carry the same kind of digest in their key-value metadata and are written with page
checksums. A file that fails its check raises :class:`CorruptFile` naming it; a caller that can
recompute the content moves the file aside (:func:`quarantine`, into ``_corrupt/`` of its
folder) and computes it again, so the next run ends as a clean run would.

The digest catches accidents and edits made without bench; it is not a signature (whoever
rewrites a file and its digest together is trusted, as whoever can write the folder is).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError

DIGEST = "__digest__"
#: key of the digest in a Parquet file's key-value metadata
TABLE_DIGEST = b"bench_digest"
#: where moved-aside files go, under the folder given to ``quarantine``
CORRUPT_DIR = "_corrupt"

#: files verified by this process: (path, size, mtime_ns, inode) -> True
_VERIFIED: dict[tuple, bool] = {}


class CorruptFile(BenchError):
    """A file bench wrote earlier cannot be trusted: unreadable, truncated or altered."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"'{path}' is corrupt: {reason}. Move it aside or delete it; a rerun "
                         f"recomputes it.")


def digest(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over each array's name, dtype, shape and bytes (names sorted)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _stat_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


def save_npz(path: Path, arrays: dict[str, Any]) -> None:
    """Write ``arrays`` and their digest atomically (a hidden temporary name, then a rename)."""
    from bench.store import atomic_write

    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    if DIGEST in arrays:
        raise ValueError(f"'{DIGEST}' is reserved")

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays, **{DIGEST: np.array(digest(arrays))})

    atomic_write(Path(path), write)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a file written by :func:`save_npz`; CorruptFile if it does not verify."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except Exception as exc:  # zipfile, zlib, numpy format and OS errors all mean "unreadable"
        raise CorruptFile(path, f"unreadable ({type(exc).__name__}: {exc})") from None
    stored = arrays.pop(DIGEST, None)
    if stored is None:
        raise CorruptFile(path, "it has no content digest (not written by this version of bench)")
    if str(stored) != digest(arrays):
        raise CorruptFile(path, "its content does not match its digest (changed since written)")
    return arrays


def _verified(path: Path, verify: Any) -> bool:
    """False if ``path`` is missing; True once ``verify(path)`` passed for this version of the
    file (memoised per (path, size, mtime, inode) in this process); CorruptFile otherwise."""
    path = Path(path)
    try:
        key = _stat_key(path)
    except OSError:
        return False
    if key not in _VERIFIED:
        verify(path)
        _VERIFIED[key] = True
    return True


def npz_ok(path: Path) -> bool:
    """Whether ``path`` exists and verifies (CorruptFile if it exists and does not)."""
    return _verified(path, load_npz)


# --------------------------------------------------------------------------- tables
def table_digest(table: Any) -> str:
    """sha256 of a pyarrow table's column names, types, values and key-value metadata (such as
    pandas' dtypes), the digest's own key excepted."""
    h = hashlib.sha256()
    h.update(str(table.schema.remove_metadata()).encode())
    meta = sorted((k, v) for k, v in (table.schema.metadata or {}).items() if k != TABLE_DIGEST)
    h.update(repr(meta).encode())
    h.update(json.dumps(table.to_pydict(), sort_keys=True, default=str).encode())
    return h.hexdigest()


def write_table(path: Path, table: Any) -> None:
    """A Parquet file with page checksums and the table's digest in its metadata, atomically."""
    import pyarrow.parquet as pq

    from bench.store import atomic_write

    meta = dict(table.schema.metadata or {})
    meta[TABLE_DIGEST] = table_digest(table).encode()
    table = table.replace_schema_metadata(meta)
    # no column statistics: bench never reads them, and a flipped bit in one would go unseen
    atomic_write(Path(path), lambda tmp: pq.write_table(table, tmp, write_page_checksum=True,
                                                       write_statistics=False))


def read_table(path: Path, schema: Any = None) -> Any:
    """A table written by :func:`write_table`, verified (and checked against ``schema``)."""
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        table = pq.read_table(path, page_checksum_verification=True)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise CorruptFile(path, f"unreadable ({type(exc).__name__}: {exc})") from None
    stored = (table.schema.metadata or {}).get(TABLE_DIGEST)
    meta = {k: v for k, v in (table.schema.metadata or {}).items() if k != TABLE_DIGEST}
    table = table.replace_schema_metadata(meta or None)
    if stored is None:
        raise CorruptFile(path, "it has no content digest (not written by this version of bench)")
    if stored.decode() != table_digest(table):
        raise CorruptFile(path, "its content does not match its digest (changed since written)")
    if schema is not None and not table.schema.equals(schema, check_metadata=False):
        raise CorruptFile(path, "its columns are not bench's result columns")
    return table


def table_ok(path: Path, schema: Any = None) -> bool:
    """Whether a result table exists and verifies (CorruptFile if it exists and does not)."""
    return _verified(path, lambda p: read_table(p, schema))


# ------------------------------------------------------------------------ quarantine
def quarantine(path: Path, root: Path, reason: str = "") -> Path | None:
    """Move a corrupt file to ``root/_corrupt/<its path under root>.<time>`` and say so on
    stderr; the caller then recomputes it. Returns the new place (None if it was gone)."""
    path, root = Path(path), Path(root)
    try:
        rel = path.resolve().relative_to(root.resolve())
    except ValueError:
        rel = Path(path.name)
    dest = root / CORRUPT_DIR / rel.parent / f"{rel.name}.{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(path, dest)
    except FileNotFoundError:
        return None
    print(f"warning: '{path}' is corrupt ({reason or 'it does not verify'}); moved it to "
          f"'{dest}'; it will be recomputed.", file=sys.stderr)
    return dest


def checked(path: Path, root: Path, verify: Any) -> bool:
    """``verify(path)`` -> True; a corrupt file is quarantined under ``root`` and gives False."""
    try:
        return bool(verify(path))
    except CorruptFile as exc:
        quarantine(exc.path, root, exc.reason)
        return False
    except FileNotFoundError:
        return False
