"""Install the Debian packages a test needs (pdflatex, poppler, chromium, ...) with apt-get.

Test tooling, not part of the installed package: tests import it as ``support.debian``.
Like ``support.slurm_local.unavailable_reason``, :func:`ensure_packages` returns None when the
tools are there (installing them first if they are missing) and otherwise the reason a test can
give to ``pytest.skip``: not root, no apt-get, or apt-get failing (its error output included).
apt-get waits for the dpkg lock (another test process, or a CI job on the same machine, may be
installing at the same time) instead of failing at once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import lru_cache
from typing import Callable, Iterable

#: seconds apt-get waits for the dpkg lock held by another install
LOCK_TIMEOUT_S = 600


def which(name: str) -> str | None:
    """``name`` on PATH, or in the sbin/bin folders that a non-login PATH may lack."""
    return shutil.which(name) or next((f"{d}/{name}" for d in ("/usr/sbin", "/usr/bin", "/sbin")
                                       if os.access(f"{d}/{name}", os.X_OK)), None)


def _names(x: str | Iterable[str]) -> tuple[str, ...]:
    return (x,) if isinstance(x, str) else tuple(x)


def ensure_packages(binary: str | Iterable[str], packages: str | Iterable[str],
                    present: Callable[[], bool] | None = None,
                    recommends: bool = False) -> str | None:
    """None when every program in ``binary`` is on PATH (and ``present()``, if given, is true),
    after installing ``packages`` with apt-get if it was not; else why not (a skip reason).

    ``recommends``: also install the packages' Recommends (off: fewer, faster downloads).
    """
    return _ensure(_names(binary), _names(packages), present, recommends)


@lru_cache(maxsize=None)
def _ensure(binaries: tuple[str, ...], packages: tuple[str, ...],
            present: Callable[[], bool] | None, recommends: bool) -> str | None:
    def ready() -> bool:
        return all(which(b) for b in binaries) and (present is None or bool(present()))

    if ready():
        return None
    what = f"{', '.join(binaries)} (Debian package(s) {' '.join(packages)})"
    if not shutil.which("apt-get"):
        return f"{what} is not installed and apt-get is not available to install it"
    if os.name != "posix" or os.geteuid() != 0:
        return (f"{what} is not installed and installing it needs root; run "
                f"'apt-get install {' '.join(packages)}' as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "-o", f"DPkg::Lock::Timeout={LOCK_TIMEOUT_S}",
               *([] if recommends else ["--no-install-recommends"]), *packages]
    r = subprocess.run(install, capture_output=True, text=True, env=env, timeout=1800)
    if r.returncode != 0:  # the package lists may be missing or stale on a fresh machine
        subprocess.run(["apt-get", "update", "-q", "-o", f"DPkg::Lock::Timeout={LOCK_TIMEOUT_S}"],
                       capture_output=True, text=True, env=env, timeout=900)
        r = subprocess.run(install, capture_output=True, text=True, env=env, timeout=1800)
    if r.returncode != 0:
        return f"installing {what} with apt failed: {' '.join(install)}: {r.stderr[-500:]}"
    if not ready():
        missing = [b for b in binaries if not which(b)]
        return (f"{what}: still missing after 'apt-get install' "
                f"({', '.join(missing) if missing else 'the check of its files failed'})")
    return None
