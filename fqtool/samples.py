"""Where the bundled sample tensors are: inside the installed package, or beside it in a checkout."""

from __future__ import annotations

from pathlib import Path

from .errors import InputError


def sample_dir() -> Path:
    """``fqtool/sample_tensors`` in an installed wheel (pyproject maps the repo's ``sample_tensors/``
    there), else ``sample_tensors/`` of the source checkout this package runs from."""
    here = Path(__file__).resolve().parent
    for d in (here / "sample_tensors", here.parent / "sample_tensors"):
        if (d / "weights.safetensors").is_file():
            return d
    raise InputError("the bundled sample tensors are missing from this installation; reinstall fqtool or give a PATH")
