"""Reference casts (kernels/reference/cast.py): ``fp16``, ``bf16``, ``fp32`` (spec formats-mx.md §7).

Golden vectors: tests/kernels/test_contract.py. Here: ``fp16``, ``bf16``, ``fp32``, the spec's
example 24 (§11.3), and the rounding, overflow, subnormal and dtype rules.
"""

from __future__ import annotations

import pytest
import torch
from golden import assert_bits_equal

from kernels.reference.cast import quantize_cast_ref

NAN = float("nan")
INF = float("inf")

# --------------------------------------------------------------------------- rules


def _c(values, dtype, emulate="exact", src=torch.float32):
    return quantize_cast_ref(torch.tensor(values, dtype=src), dtype=dtype, emulate=emulate)


def test_example_24_fp16():
    # 1 + 2^-11 is a tie between 1 and 1 + 2^-10: RNE keeps 1 (microxcaling's RNA gives
    # 1.0009766). 65520 is the tie between 65504 and the first value past it: overflow to Inf.
    # 2^-25 is half the smallest subnormal 2^-24: tie to the even 0.
    for emulate in ("exact", "seed"):
        assert_bits_equal(_c([1 + 2**-11, 65520, 2**-25], "fp16", emulate), torch.tensor([1.0, INF, 0.0]))


def test_fp16_rounding_overflow_subnormals():
    got = _c([1 + 3 * 2**-11, 65519.99, -70000, 1.5 * 2**-24, 2**-26, -(2**-14), -0.0, NAN, -INF], "fp16")
    want = torch.tensor([1 + 2**-9, 65504, -INF, 2**-23, 0.0, -(2**-14), -0.0, NAN, -INF])
    assert_bits_equal(got, want)
    assert torch.signbit(got[6])  # -0.0 stays negative


def test_bf16_rounding_and_range():
    # Ties to even at 8 significant bits; float32's exponent range, with subnormals down to
    # 2^-133 (2^-134 is the tie to 0); 3.4e38 lies past the midpoint between the largest
    # bf16 value (3.3895e38) and 2^128, so it overflows to Inf.
    got = _c([1 + 2**-8, 1 + 3 * 2**-8, 1.5 * 2.0**127, 2.0**-133, 2.0**-134, 3.4e38, -(2.0**-100)], "bf16")
    want = torch.tensor([1.0, 1 + 2**-6, 1.5 * 2.0**127, 2.0**-133, 0.0, INF, -(2.0**-100)])
    assert_bits_equal(got, want)


def test_bf16_input_goes_through_fp16():
    # x.to(fp16).to(bf16): bf16 3·2^-26 is 0.75 of fp16's smallest subnormal step and rounds
    # to 2^-24; bf16 70144 is past fp16's range and becomes Inf; 1 + 2^-7 is exact in both.
    x = torch.tensor([3 * 2**-26, 70144.0, 1 + 2**-7], dtype=torch.bfloat16)
    got = quantize_cast_ref(x, dtype="fp16")
    assert got.dtype == torch.bfloat16
    assert_bits_equal(got, torch.tensor([2**-24, INF, 1 + 2**-7]))
    seed = quantize_cast_ref(x, dtype="fp16", emulate="seed")
    assert seed.dtype == torch.float32  # the seed returns x.to(T).float()
    assert_bits_equal(seed, got.float())


@pytest.mark.parametrize("name", ["fp16", "bf16", "fp32"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_dtype_copy_and_input_unchanged(name, dtype):
    x = (torch.randn(4, 9, generator=torch.Generator().manual_seed(0)) * 100).to(dtype)
    before = x.clone()
    y = quantize_cast_ref(x, dtype=name)
    assert y.dtype == dtype
    y.fill_(3)  # fp32 of a float32 input must still be a copy
    assert torch.equal(x, before)
    assert quantize_cast_ref(x, dtype=name, emulate="seed").dtype == torch.float32


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        quantize_cast_ref(torch.ones(2), dtype="fp8")
    with pytest.raises(ValueError):
        quantize_cast_ref(torch.ones(2), dtype="fp16", emulate="x")
    with pytest.raises(TypeError):
        quantize_cast_ref(torch.ones(2, dtype=torch.int64), dtype="fp16")
