"""Access to the reference vectors in ``../shared/golden`` and the bitwise comparison rule.

The golden files are not copied into the repository: tests read them from
``$FQTOOL_GOLDEN`` or ``<repo>/../shared/golden`` and skip when neither exists.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(os.environ.get("FQTOOL_GOLDEN", REPO.parent / "shared" / "golden"))

needs_golden = pytest.mark.skipif(
    not (GOLDEN / "CONTRACT.json").is_file(),
    reason=f"golden vectors not found at {GOLDEN} (set FQTOOL_GOLDEN to their folder)",
)


def contract() -> list[dict]:
    if not (GOLDEN / "CONTRACT.json").is_file():
        return []
    return json.loads((GOLDEN / "CONTRACT.json").read_text())


def case_files(family: str, stem: str) -> list[Path]:
    return sorted((GOLDEN / family / stem).glob("*.safetensors"))


#: The input dtypes the contract names, as its "dtypes" lists spell them.
DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def applies(entry: dict, case: str, dtype: torch.dtype) -> bool:
    """Whether a contract entry covers this case file (its stem) with this input dtype."""
    if entry.get("dtypes", "all") != "all" and DTYPE_NAMES.get(dtype) not in entry["dtypes"]:
        return False
    if "cases" in entry and not any(fnmatch.fnmatch(case, p) for p in entry["cases"]):
        return False
    if "skip_cases" in entry and any(fnmatch.fnmatch(case, p) for p in entry["skip_cases"]):
        return False
    return True


@dataclass
class FormatCase:
    """One golden check of ``fake_quantize(x, spec)`` against ``want``; ``what`` names it."""

    what: str
    entry: dict
    path: Path
    x: torch.Tensor
    spec: object  # kernels.FormatSpec
    want: torch.Tensor


def format_cases(accept: Callable[[object], bool]) -> Iterator[FormatCase]:
    """The contract's format entries whose output is the input's dtype (no ``input_cast``), on
    float32/bfloat16/float16 inputs, for every case file they cover and every spec that
    ``accept`` takes (a backend's own coverage, say)."""
    import kernels

    for entry in contract():
        if "format" not in entry or "input_cast" in entry or entry.get("output_dtype") not in (None, "input"):
            continue
        for path in case_files(entry["family"], entry["stem"]):
            tensors, meta = load(path)
            x = tensors[entry.get("input", "input")]
            if x.dtype not in DTYPE_NAMES or not applies(entry, path.stem, x.dtype):
                continue
            spec = kernels.parse(entry["format"].format(**meta))
            if accept(spec):
                what = f"{entry['stem']}/{path.stem}|{entry['format']}|{entry['against']}"
                yield FormatCase(what, entry, path, x, spec, tensors[entry["against"]])


def load(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors of one golden file and its metadata."""
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


def _canon(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().to("cpu", torch.float64)
    t = torch.where(torch.isnan(t), torch.full_like(t, 0.123456789), t)
    return t + 0.0  # maps -0.0 to +0.0


def mismatches(actual: torch.Tensor, expected: torch.Tensor) -> int:
    """Elements that differ bitwise after upcasting to float64 (NaN == NaN, -0 == +0)."""
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a, e = _canon(actual), _canon(expected)
    return int((a != e).sum())


def assert_bits_equal(actual: torch.Tensor, expected: torch.Tensor, what: str = "") -> None:
    n = mismatches(actual, expected)
    if n:
        a, e = _canon(actual).flatten(), _canon(expected).flatten()
        idx = (a != e).nonzero().flatten()[:5].tolist()
        detail = ", ".join(f"[{i}] got {a[i].item()!r} want {e[i].item()!r}" for i in idx)
        raise AssertionError(f"{what}: {n} of {a.numel()} elements differ: {detail}")


def int_view(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bits as a same-width integer tensor (for 'input unchanged' checks)."""
    return t.view({1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def block_of(values, n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One block of ``n`` elements: ``values`` (rounded to float32 once), then zeros, in ``dtype``."""
    x = torch.zeros(n, dtype=torch.float32)
    x[: len(values)] = torch.tensor(values, dtype=torch.float64).to(torch.float32)
    return x.to(dtype)


def assert_leading(got: torch.Tensor, want, what: str = "") -> None:
    """Bitwise on values (NaN == NaN, ±0 equal) against the leading ``len(want)`` entries of ``got``."""
    assert_bits_equal(got[: len(want)].to(torch.float64), torch.tensor(want, dtype=torch.float64), what)
