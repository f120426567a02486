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


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["mxfp8_e4m3", "mxfp4", "nvfp4", "nf4", "hif8", "hifx4_v12", "int8sym", "fp8_e4m3"])
def test_compiled_equals_reference(fmt):
    why = unavailable_reason(torch.device("cpu"), kernels.parse(fmt))
    if why:
        pytest.skip(why)
    x = torch.cat([c.reshape(-1) for c in corner_cases().values()])[: 64 * 96].reshape(64, 96)
    want = kernels.fake_quantize(x, fmt, backend="reference")
    assert mismatches(kernels.fake_quantize(x, fmt, backend="compile"), want) == 0
