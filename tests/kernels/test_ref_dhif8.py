"""Tests for kernels/reference/dhif8.py: delayed-scaling HiF8 (spec formats-hifloat.md §6)."""

from __future__ import annotations

import fnmatch

import pytest
import torch
from golden import assert_bits_equal, case_files, contract, load, needs_golden

from kernels.reference.dhif8 import _bf16_round_half_away, quantize_dhif8_ref
from kernels.reference.hif8 import hif8_round

F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16
INF, NAN = float("inf"), float("nan")

#: CONTRACT format -> (uses the file's amax, emulate)
FORMATS = {
    "dhif8:amax={amax}": (True, "exact"),
    "dhif8": (False, "exact"),
    "dhif8:amax={amax},emulate=seed": (True, "seed"),
}


def golden_cases() -> list:
    cases = []
    for i, entry in enumerate(contract()):
        if entry.get("family") != "hif" or entry["stem"] != "dhif8":
            continue
        for path in case_files("hif", "dhif8"):
            if "cases" in entry and not any(fnmatch.fnmatch(path.stem, c) for c in entry["cases"]):
                continue
            tag = "req" if entry["required"] else "opt"
            cases.append(pytest.param(entry, path, id=f"{tag}-{i}-{entry['format']}-{path.stem}"))
    return cases


@needs_golden
def test_every_contract_format_is_mapped():
    formats = {e["format"] for e in contract() if e.get("family") == "hif" and e["stem"] == "dhif8"}
    assert formats and formats <= FORMATS.keys()


@needs_golden
@pytest.mark.parametrize(("entry", "path"), golden_cases())
def test_golden_contract(entry, path):
    """Required and optional entries alike: all of them are reproduced bit for bit."""
    tensors, meta = load(path)
    x = tensors["input"]
    use_amax, emulate = FORMATS[entry["format"]]
    before = x.clone()
    got = quantize_dhif8_ref(
        x,
        amax=float(meta["amax"]) if use_amax else None,
        scale_position=float(meta["scale_position"]),
        emulate=emulate,
    )
    want = tensors[entry["against"]]
    assert got.dtype == want.dtype
    assert_bits_equal(got, want, f"{entry['format']} vs {path.stem}:{entry['against']}")
    assert_bits_equal(x, before, "input modified")


# -------------------------------------------------------------------- §6 examples


def test_no_eps_term():
    x = torch.tensor([1e-8, 5e-9])
    assert_bits_equal(quantize_dhif8_ref(x), x)


def test_tiny_values_flush():
    x = torch.tensor([1.0, 0.3, -0.7, 1e-9])
    assert quantize_dhif8_ref(x, amax=1.0).tolist() == [1.0, 0.3125, -0.6875, 0.0]


def test_is_hif8_variant_b_between_scalings():
    x = torch.randn(1000) * 40
    amax = 37.5
    scaler = torch.tensor(8.0) / torch.tensor(amax)
    want = hif8_round(x * scaler, underflow="flush") / scaler
    assert_bits_equal(quantize_dhif8_ref(x, amax=amax), want)
    assert_bits_equal(quantize_dhif8_ref(x, amax=torch.tensor(amax)), want, "tensor amax")
    s4 = torch.tensor(4.0) / torch.tensor(amax)
    assert_bits_equal(quantize_dhif8_ref(x, amax=amax, scale_position=4.0), hif8_round(x * s4, underflow="flush") / s4)


def test_stale_amax_saturates():
    x = torch.tensor([5000.0, -5000.0, 3.0])
    # y = 40000 -> 32768 -> 32768 / 8 = 4096.
    assert quantize_dhif8_ref(x, amax=1.0).tolist() == [4096.0, -4096.0, 3.0]


def test_zero_amax_uses_2_pow_minus_64():
    x = torch.tensor([3e-20, -1e-20, 0.0])
    scaler = torch.tensor(8.0) / torch.tensor(2.0**-64)
    want = hif8_round(x * scaler, underflow="flush") / scaler
    assert_bits_equal(quantize_dhif8_ref(x, amax=0.0), want)
    assert quantize_dhif8_ref(torch.zeros(4)).tolist() == [0.0] * 4


def test_non_finite_exact_and_seed():
    x = torch.tensor([NAN, INF, -INF, 1.0])
    exact = quantize_dhif8_ref(x, amax=1.0)
    assert_bits_equal(exact, torch.tensor([NAN, 4096.0, -4096.0, 1.0]))
    seed = quantize_dhif8_ref(x, amax=1.0, emulate="seed")
    assert_bits_equal(seed, torch.tensor([0.0, 4096.0, 4096.0, 1.0]))


# --------------------------------------------------------------------- output dtypes


def test_bf16_round_half_away_helper():
    one = 1.0
    # The last is a subnormal tie: bf16's step there is 2^-133.
    ties = torch.tensor([one + 2**-8, -(one + 2**-8), one + 3 * 2**-8, 2**-130 + 2**-134], dtype=F32)
    assert _bf16_round_half_away(ties).float().tolist() == [1 + 2**-7, -(1 + 2**-7), 1 + 2**-6, 2**-130 + 2**-133]
    assert ties[:3].to(BF16).float().tolist() == [1.0, -1.0, 1 + 2**-6]  # RNE differs on the first two
    other = torch.tensor([NAN, INF, -INF, 3.4028234663852886e38, 1 + 2**-9, -0.0], dtype=F32)
    got = _bf16_round_half_away(other)
    assert_bits_equal(got, other.to(BF16))
    assert torch.signbit(got[-1])


@pytest.mark.parametrize("dtype", [F32, BF16, F16])
def test_output_dtype_is_input_dtype(dtype):
    """Widen, scale, round, unscale in float32; round back with RNE (seed: RHA for bf16)."""
    x = (torch.randn(4096) * 3).to(dtype)
    scaler = torch.tensor(8.0) / x.float().abs().amax()
    out32 = hif8_round(x.float() * scaler, underflow="flush") / scaler
    exact = quantize_dhif8_ref(x)
    seed = quantize_dhif8_ref(x, emulate="seed")
    assert exact.dtype == seed.dtype == dtype
    assert_bits_equal(exact, out32.to(dtype))
    assert_bits_equal(seed, _bf16_round_half_away(out32) if dtype == BF16 else out32.to(dtype))


def test_bf16_output_rne_vs_half_away():
    """Find bf16 inputs whose float32 result r / scaler is exactly halfway between two
    bf16 values: the default rounds it to even, emulate=seed away from zero."""
    r = torch.tensor([1.0, 1.125, 1.25, 1.375, 1.5, 1.625, 1.75, 1.875])[:, None]
    amax = torch.linspace(1.0, 2.0, 4001)[None, :]
    scaler = 8.0 / amax
    out32 = r / scaler
    tie = (out32.view(torch.int32) & 0xFFFF) == 0x8000
    assert int(tie.sum()) >= 1
    ri, ai = tie.nonzero()[0].tolist()
    x = out32[ri, ai].to(BF16).reshape(1)  # x · scaler rounds back to the HiF8 value r
    a = amax[0, ai].item()
    exact = quantize_dhif8_ref(x, amax=a)
    seed = quantize_dhif8_ref(x, amax=a, emulate="seed")
    tie_value = out32[ri, ai].reshape(1)
    assert_bits_equal(exact, tie_value.to(BF16))
    assert_bits_equal(seed, _bf16_round_half_away(tie_value))
    assert exact.float().abs().item() < seed.float().abs().item()


@pytest.mark.parametrize("emulate", ["exact", "seed"])
@pytest.mark.parametrize("dtype", [F32, BF16, F16])
def test_input_not_modified(emulate, dtype):
    x = torch.tensor([1e-9, -3e-8, 0.5, -7.0, 1000.0, 0.0], dtype=dtype).repeat(4)
    before = x.clone()
    quantize_dhif8_ref(x, amax=2.0, emulate=emulate)
    assert torch.equal(x, before)


def test_invalid():
    with pytest.raises(ValueError):
        quantize_dhif8_ref(torch.ones(3), emulate="npu")
    with pytest.raises(TypeError):
        quantize_dhif8_ref(torch.ones(3, dtype=torch.int64))
