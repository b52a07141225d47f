"""Shared fixtures: small suites written to a temp folder, and the CLI run in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bench.cli import main

ROOT = Path(__file__).resolve().parent.parent


def small_suite(**over) -> dict:
    """A fast version of the quickstart: 4 samplers x 2 NFE on a small full-covariance oracle."""
    suite = {
        "name": "tiny", "seed": 3, "samples": 24, "batch_size": 8, "nfe": [10, 20],
        "nfe_rounding": "down",
        "models": [{"name": "gmm", "label": "g", "params": {"shape": [1, 4, 4], "cov": "full",
                                                         "var_min": 0.01}}],
        "samplers": ["ddim", "euler", "heun", "dpm_solver_2"],
        "evals": ["nfe_curve"],
    }
    suite.update(over)
    return suite


@pytest.fixture
def write_suite(tmp_path: Path):
    def write(data: dict | str, name: str = "suite.yaml") -> Path:
        p = tmp_path / name
        p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
        return p

    return write


@pytest.fixture
def cli(capsys):
    """Run `bench ARGS` in-process; return (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def fmnist() -> None:
    """Fashion-MNIST available (installed from Debian's dataset-fashion-mnist if we can), else skip."""
    import test_fidelity_support

    test_fidelity_support.need_fmnist()


def debug_run_cmd(suite: dict, tmp_path: Path) -> list[str]:
    """``python -m bench run SUITE --executor debug`` for ``suite`` written to tmp_path/s.yaml
    (append ``--results DIR``)."""
    import sys

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(suite))
    return [sys.executable, "-m", "bench", "run", str(path), "--executor", "debug"]


def kill_at_first_checkpoint(cmd: list[str], results: Path, settle: float = 0.0) -> None:
    """Start ``cmd`` (a ``bench run`` writing to ``results``) in its own process group, wait
    until it has written its first partial checkpoint (``_partial/*.npz``), wait ``settle``
    seconds more, and kill the whole group: a run interrupted in the middle of a shard."""
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while not list((results / "_partial").glob("*.npz")) and time.time() < deadline:
        assert proc.poll() is None, "the run ended before its first checkpoint"
        time.sleep(0.02)
    time.sleep(settle)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
