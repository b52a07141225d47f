"""Content hashes of files, cached by (path, size, mtime, inode) so a large checkpoint is read
once per change, not once per ``bench plan``."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

_MEMO: dict[tuple, str] = {}


def cache_file() -> Path:
    root = os.environ.get("BENCH_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "bench")
    return Path(root) / "file-sha256.json"


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes. Re-read when its size, mtime or inode changes."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns, st.st_ino)
    if key in _MEMO:
        return _MEMO[key]
    disk_key = json.dumps(key)
    cache = cache_file()
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(disk_key), str):
        _MEMO[key] = known[disk_key]
        return _MEMO[key]
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    _MEMO[key] = h.hexdigest()
    if st.st_size >= 1 << 24:  # remember large files across processes
        try:
            from bench.store import atomic_write

            known = known if isinstance(known, dict) else {}
            known[disk_key] = _MEMO[key]
            atomic_write(cache, lambda tmp: tmp.write_text(json.dumps(known)))
        except OSError:
            pass
    return _MEMO[key]
