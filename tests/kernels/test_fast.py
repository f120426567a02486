"""The cpu-fast backend equals the reference bit for bit, on every format and every corner case.

Pieces are made tiny here (``CHUNK_ELEMS``) so that splitting, the worker pool and the
per-tensor amax pass are all exercised on small tensors.
"""

from __future__ import annotations

import pytest
import torch
from corner_cases import as_dtype, corner_cases
from golden import mismatches

import kernels
import kernels.chunked as chunked

FORMATS = [str(s) for s in kernels.list_formats()] + [
    "mxfp4_e2m1:round=even",
    "mxfp8_e4m3:round=floor",
    "mxfp6_e2m3:scale=rceil",
    "mxfp8_e5m2:scale=even",
    "mxfp4_e2m1:scale=carry",
    "mxfp8_e4m3:axis=0",
    "mxint8:block=16",
    "mxfp4_e2m1:block=0",
    "mxfp8_e4m3:emulate=seed",
    "mxfp4_e2m1:minus_exp=1",
    "e4m3k8b32c:axis=0",
    "nf4:block=32",
    "nvfp4:axis=0",
    "hif8:scale=none",
    "hif8:variant=paper",
    "hif8:emulate=seed",
    "hifx4_v12:axis=0",
    "dhif8:amax=100.0",
    "int8sym:axis=0",
    "tmx6:axis=0",
    "nvf4:axis=0",
    "nf4:axis=0",
    "nf4:block=7",
    "nf4B4b64:axis=0",
    "nf4B1b16",
    "fp8_e4m3:emulate=seed",
    "fp8_e5m2:emulate=seed",
    "int8sym:emulate=seed",
    "fp16:emulate=seed",
    "mxint8:round=even",
    "mxfp6_e3m2:scale=ceil",
    "mxfp8_e4m3:minus_exp=-2",
    "mxfp8_e4m3:block=7",
    "mxint8:axis=0",
    "mxfp8_e4m3:scale_bits=4",
    "mxfp8_e4m3:flush_fp32_subnorms=true",
    "mxint8:flush_fp32_subnorms=true",
    "e2m1K4k4B8b4c:axis=0",
    "e6m3k8b32",
    "e3m4K2k3B4b8off20",
    "tmx5",
    "hif8:scale=none,underflow=flush,overflow=inf",
    "hif8:variant=paper,overflow=saturate",
    "hif8:k=1e6,out=fp32",
    "dhif8:amax=0",
    "hifx2_v12:axis=0",
    "hif4_paper:axis=0",
]
CASES = corner_cases()


@pytest.fixture(autouse=True)
def tiny_pieces(monkeypatch):
    monkeypatch.setattr(chunked, "CHUNK_ELEMS", 512)
    monkeypatch.setattr(chunked, "MIN_SPLIT_ELEMS", 1024)


def _random_cases():
    g = torch.Generator().manual_seed(7)
    return {
        "random_2d": torch.randn(64, 192, generator=g),
        "random_long_rows": torch.randn(2, 4096, generator=g),
        "random_3d": torch.randn(4, 33, 40, generator=g) * 10,
    }


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["f32", "bf16", "f16"])
def test_cpu_fast_equals_reference(fmt, dtype):
    failures = []
    for name, x in {**CASES, **_random_cases()}.items():
        x = as_dtype(x, dtype)
        if x is None:
            continue
        ref = kernels.fake_quantize(x, fmt, backend="reference")
        fast = kernels.fake_quantize(x, fmt, backend="cpu-fast")
        if fast.dtype != ref.dtype or fast.shape != ref.shape:
            failures.append(f"{name}: {fast.dtype}{tuple(fast.shape)} vs {ref.dtype}{tuple(ref.shape)}")
            continue
        n = mismatches(fast, ref)
        if n:
            failures.append(f"{name}: {n} elements differ")
    assert not failures, f"{fmt} {dtype}: " + "; ".join(failures)


def test_pieces_really_are_used():
    """The fixture makes the 64x192 case split into many pieces (so the test above means something)."""
    calls = []
    real = chunked._run

    def spy(v, spec, idx, ref, generator):
        calls.append(len(idx))
        return real(v, spec, idx, ref, generator)

    chunked._run = spy
    try:
        kernels.fake_quantize(torch.randn(64, 192), "mxfp8_e4m3", backend="cpu-fast")
        kernels.fake_quantize(torch.randn(4096), "hifx4_v12", backend="cpu-fast")
    finally:
        chunked._run = real
    assert calls and all(c > 4 for c in calls)
