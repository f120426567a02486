"""Reference casts (kernels/reference/cast.py): ``fp16``, ``bf16``, ``fp32`` (spec formats-mx.md §7).

Golden contract entries of stems ``fp16``, ``bf16``, ``fp32``, the spec's
example 24 (§11.3), and the rounding, overflow, subnormal and dtype rules.
"""

from __future__ import annotations

import functools

import pytest
import torch
from golden import assert_bits_equal, case_files, contract, load, needs_golden

from kernels.reference.cast import quantize_cast_ref

NAN = float("nan")
INF = float("inf")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}

FORMATS = {
    f"{name}{suffix}": functools.partial(quantize_cast_ref, dtype=name, emulate="seed" if suffix else "exact")
    for name in ("fp16", "bf16", "fp32")
    for suffix in ("", ":emulate=seed")
}
STEMS = ("fp16", "bf16", "fp32")


# --------------------------------------------------------------------------- golden contract


def _contract_params():
    """One param per (contract entry of STEMS, case file whose input dtype the entry covers)."""
    out = []
    for entry in contract():
        if entry.get("stem") not in STEMS:
            continue
        for path in case_files(entry["family"], entry["stem"]):
            dtype = load(path)[0][entry.get("input", "input")].dtype
            if entry["dtypes"] == "all" or DTYPE_NAMES[dtype] in entry["dtypes"]:
                tag = "required" if entry["required"] else "optional"
                label = f"{entry['stem']}/{path.stem}|{entry['format']}|{entry['against']}|{tag}"
                out.append(pytest.param(entry, path, id=label))
    return out


@needs_golden
def test_contract_entries_are_all_known():
    entries = [e for e in contract() if e.get("stem") in STEMS]
    assert {e["stem"] for e in entries} == set(STEMS)
    assert {e["format"] for e in entries} <= set(FORMATS), "a contract format has no mapping in FORMATS"
    assert all(len(case_files("mx", s)) >= 4 for s in STEMS)


@needs_golden
@pytest.mark.parametrize("entry,path", _contract_params())
def test_golden_contract(entry, path):
    tensors, _ = load(path)
    x = tensors[entry.get("input", "input")]
    if "input_cast" in entry:
        x = x.to(DTYPES[entry["input_cast"]])
    before = x.clone()
    got = FORMATS[entry["format"]](x)
    assert torch.equal(x.view(torch.uint8), before.view(torch.uint8)), "input was modified"
    want = tensors[entry["against"]]
    od = entry.get("output_dtype")
    assert got.dtype == (x.dtype if od == "input" else DTYPES[od] if od else want.dtype)
    assert_bits_equal(got, want, f"{entry['format']} on {path.stem} vs {entry['against']}")


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
