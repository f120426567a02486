"""The opt-in torch.compile backend gives the reference's bits (slow to compile: marked slow)."""

from __future__ import annotations

import pytest
import torch
from corner_cases import corner_cases
from golden import mismatches

import kernels
from kernels.compiled import unavailable_reason


def test_auto_never_picks_compile():
    assert kernels.backends.select("cpu", kernels.parse("mxfp8_e4m3")).name != "compile"


def test_dither_is_refused_with_a_reason():
    assert "generator" in unavailable_reason(torch.device("cpu"), kernels.parse("mxfp4_e2m1:round=dither"))


def test_miscompiled_families_are_refused():
    for fmt in ("nf4", "hif4_paper"):
        with pytest.raises(kernels.BackendError, match="wrong values"):
            kernels.fake_quantize(torch.zeros(4, 64), fmt, backend="compile")


def _inputs() -> dict[str, torch.Tensor]:
    # All corner cases in one tensor: mixed rows catch what one case at a time does not.
    mixed = torch.cat([c.reshape(-1) for c in corner_cases().values()])[: 64 * 96].reshape(64, 96)
    r = torch.randn(256, 512, generator=torch.Generator().manual_seed(0))
    return {"mixed_corner_cases": mixed, "randn": r, "randn_bf16": r.bfloat16()}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", [str(s) for s in kernels.list_formats()])
def test_compiled_equals_reference(fmt):
    why = unavailable_reason(torch.device("cpu"), kernels.parse(fmt))
    if why:
        pytest.skip(why)
    for name, x in _inputs().items():
        want = kernels.fake_quantize(x, fmt, backend="reference")
        assert mismatches(kernels.fake_quantize(x, fmt, backend="compile"), want) == 0, name
