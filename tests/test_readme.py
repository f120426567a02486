"""The README's quick-start commands work, and CI runs the README's test command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _quick_start_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, flags=re.S)


def test_quick_start_has_the_two_commands():
    main_job, tests = _quick_start_blocks()[:2]
    assert main_job.startswith("pip install -e . && ")
    assert tests.strip() == "pip install -e '.[dev]' && python -m pytest -q"


def test_main_job_command_runs():
    main_job = _quick_start_blocks()[0].removeprefix("pip install -e . && ")
    main_job = main_job.replace("python -c", f"{sys.executable} -c", 1)
    r = subprocess.run(["bash", "-c", main_job], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 3 * 6  # three tensors x six formats
    assert all("SQNR" in line and "dB" in line for line in lines)


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    assert "python3 -m pip install -q -e '.[dev]' && python3 -m pytest -q" in ci
