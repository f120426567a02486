"""A plain (non-editable) install ships the sample tensors: `fqtool compare` works from any directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_installed_package_runs_compare_on_its_bundled_samples(tmp_path):
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr
    assert (target / "fqtool" / "sample_tensors" / "sharded" / "model.safetensors.index.json").is_file()
    assert (target / "kernels" / "triton" / "mx.py").is_file()
    env = dict(os.environ, PYTHONPATH=str(target))  # ahead of any editable install of the checkout
    code = "import fqtool, sys; from fqtool.cli import main; print(fqtool.__file__, file=sys.stderr); main()"
    run = subprocess.run(
        [sys.executable, "-c", code, "compare", "--formats", "hif8,mxfp4", "-o", "json", "-d", "cpu"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert str(target) in run.stderr.splitlines()[0]  # the installed copy ran, not the checkout
    doc = json.loads(run.stdout)
    assert len(doc["tensors"]) == 9
    assert all(str(target) in t["file"] for t in doc["tensors"])
