"""The README's commands, CI and the repository layout agree."""

import re
import subprocess
import sys

from conftest import ROOT


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(python3 -m venv[^\n]+)\n```", text)


def test_readme_gives_two_setup_commands_and_ci_runs_the_test_one():
    cmds = _readme_commands()
    assert len(cmds) == 2, cmds
    quickstart, tests = cmds
    assert "bench run suites/quickstart.yaml" in quickstart and "bench report" in quickstart
    assert "-m pytest" in tests and tests.rstrip().endswith("-m pytest")  # nothing narrower
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines()
    for cmd in cmds:
        assert "-c bench/constraints.txt" in cmd


def test_constraints_pin_torch_and_torchvision():
    pins = (ROOT / "bench" / "constraints.txt").read_text().splitlines()
    assert "torch==2.14.1" in pins and "torchvision==0.29.1" in pins
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"torch>=2.4"' in pyproject  # loose range for users' clusters


def test_no_machine_paths_in_tracked_files():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    parent = str(ROOT.parent) + "/"
    bad = [f for f in files if (ROOT / f).is_file() and not f.endswith(".png")
           and parent in (ROOT / f).read_text(errors="ignore")]
    assert bad == []
    # configs written by save_pretrained record the folder they were loaded from
    recorded = [f for f in files if f.endswith(".json") and '"_name_or_path": "/' in (ROOT / f).read_text()]
    assert recorded == []


def test_top_level_layout():
    for name in ("pyproject.toml", "README.md", "bench", "suites", "results", "tests", "reports"):
        assert (ROOT / name).exists(), name


def test_python_dash_m_bench_runs_the_cli():
    r = subprocess.run([sys.executable, "-m", "bench", "list", "samplers"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "ddim" in r.stdout
