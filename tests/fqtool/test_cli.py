"""The fqtool command line (only `formats` exists so far)."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

import kernels
from fqtool.cli import app


def test_formats_lists_every_format():
    r = CliRunner().invoke(app, ["formats"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    for spec in kernels.list_formats():
        assert str(spec) in r.output
    assert "8.25" in r.output  # mxfp8_e4m3 bits per value


def test_python_dash_m_runs():
    r = subprocess.run([sys.executable, "-m", "fqtool", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "formats" in r.stdout
