"""Reference per-tensor FP8 kernel and float-grid helpers (kernels/reference/fp8.py).

Golden vectors: tests/kernels/test_contract.py. Here: ``fp8_e4m3_tensor`` / ``fp8_e5m2_tensor``, the
spec's examples 21-23 (formats-mx.md §11.3), the special cases of §6, and the
exact grid rounding checked against torch's own float8 casts.
"""

from __future__ import annotations

import pytest
import torch
from golden import assert_bits_equal

from kernels.reference._bits import exp2i, floor_log2
from kernels.reference.fp8 import E2M1, E4M3, E5M2, div_by_const, pow2_floor, quantize_fp8_tensor_ref, round_to_grid

NAN = float("nan")
INF = float("inf")

# --------------------------------------------------------------------------- spec §11.3 examples 21-23


def _q(values, elem="fp8_e4m3", emulate="exact", dtype=torch.float32):
    return quantize_fp8_tensor_ref(torch.tensor(values, dtype=dtype), elem=elem, emulate=emulate)


def test_example_21_seed_eps_vs_exact_scale():
    x = [1, 0.5, 0.3, -0.7, 0.001]
    # Seed: scale = 448/(1 + 2^-23) in double, rounded to float32 (448·(1 - 2^-23)), so
    # amax comes back as 1 + 2^-23 and every value is off by about one ulp.
    assert_bits_equal(
        _q(x, emulate="seed"), torch.tensor([1 + 2**-23, 0.5 + 2**-24, 0.28571433, -0.71428579, 0.00097656262])
    )
    # Exact (= torchao tensorwise): scale = 448 exactly, so 1 and 0.5 are fixed points and
    # 0.3·448 = 134.4 -> 128, 0.7·448 = 313.6 -> 320, 0.001·448 = 0.448 -> 0.4375 (step 2^-6).
    assert_bits_equal(_q(x), torch.tensor([1, 0.5, 128 / 448, -320 / 448, 0.4375 / 448]))


def test_example_22_rne_ties():
    # amax 448: scale 1 in both modes (the seed's eps vanishes in float32). 17 and 272 are
    # exact ties between E4M3 values and go to the even mantissa (16, 256); 0.0029296875 =
    # 1.5·2^-9 is a subnormal tie -> 2·2^-9.
    want = torch.tensor([448, 16, -9, 0.00390625, 256])
    for emulate in ("exact", "seed"):
        assert_bits_equal(_q([448, 17, -9, 0.0029296875, 272], emulate=emulate), want)


def test_example_23_tiny_tensor_unchanged():
    x = torch.tensor([1e-8, 3e-9])
    for emulate in ("exact", "seed"):
        assert_bits_equal(quantize_fp8_tensor_ref(x, elem="fp8_e4m3", emulate=emulate), x)
    # The guard is amax < 2^-23 exactly: at 2^-23 the tensor is quantized (scale 448·2^23,
    # 3e-9·scale = 11.27 -> 11 with step 1 in [8, 16)).
    assert_bits_equal(_q([2.0**-23, 3e-9]), torch.tensor([2.0**-23, 11 * 2.0**-23 / 448]))


# --------------------------------------------------------------------------- special values, dtypes


def test_e5m2_per_tensor():
    # amax 57344 -> scale 1: 1000 -> 1024 (step 128 in [512, 1024): 7.8125 -> 8),
    # 3 -> 3, 0.3 -> 0.3125 (step 2^-4 in [0.25, 0.5): 4.8 -> 5).
    assert_bits_equal(_q([57344, 1000, 3, 0.3], elem="fp8_e5m2"), torch.tensor([57344, 1024, 3, 0.3125]))


@pytest.mark.parametrize("emulate", ["exact", "seed"])
@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_nan_inf_make_everything_nan(emulate, bad):
    x = torch.randn(3, 8)
    x[1, 2] = bad
    for elem in ("fp8_e4m3", "fp8_e5m2"):
        assert torch.isnan(quantize_fp8_tensor_ref(x, elem=elem, emulate=emulate)).all()


def test_zero_tensor_and_dtypes():
    z = torch.zeros(2, 3, dtype=torch.bfloat16)
    assert_bits_equal(quantize_fp8_tensor_ref(z, elem="fp8_e4m3"), z)
    x = (torch.randn(4, 33, generator=torch.Generator().manual_seed(3)) * 100).to(torch.bfloat16)
    y = quantize_fp8_tensor_ref(x, elem="fp8_e4m3")
    assert y.dtype == torch.bfloat16  # exact mode keeps the input dtype ...
    assert_bits_equal(y, quantize_fp8_tensor_ref(x.float(), elem="fp8_e4m3").to(torch.bfloat16))
    assert quantize_fp8_tensor_ref(x, elem="fp8_e4m3", emulate="seed").dtype == torch.float32  # ... the seed does not
    assert quantize_fp8_tensor_ref(x.half(), elem="fp8_e5m2").dtype == torch.float16


def test_input_unchanged_and_not_aliased():
    x = torch.tensor([1e-9, 2e-9])  # takes the "unchanged" path, which must still copy
    for emulate in ("exact", "seed"):
        y = quantize_fp8_tensor_ref(x, elem="fp8_e4m3", emulate=emulate)
        y.fill_(5)
        assert_bits_equal(x, torch.tensor([1e-9, 2e-9]))


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        quantize_fp8_tensor_ref(torch.ones(3), elem="fp8_e3m4")
    with pytest.raises(ValueError):
        quantize_fp8_tensor_ref(torch.ones(3), elem="fp8_e4m3", emulate="nearest")


# --------------------------------------------------------------------------- grid helpers


def _sweep():
    """float32 values around every E4M3/E5M2 grid point: the points, the midpoints, one ulp
    either side of each midpoint, subnormals, and random values over the whole range."""
    pts = torch.cat(
        [
            torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float(),
            torch.arange(256, dtype=torch.uint8).view(torch.float8_e5m2).float(),
        ]
    )
    pts = pts[torch.isfinite(pts)].unique()
    mids = (pts[1:] + pts[:-1]) / 2  # exact in float32 (few significant bits)
    up = torch.nextafter(mids, torch.tensor(INF))
    down = torch.nextafter(mids, torch.tensor(-INF))
    g = torch.Generator().manual_seed(0)
    rnd = torch.randn(20000, generator=g) * torch.exp2(torch.randint(-30, 20, (20000,), generator=g).float())
    v = torch.cat([pts, mids, up, down, rnd, torch.tensor([0.0, -0.0, 1e-40, -3e-45, 1e30, -1e38, INF, -INF, NAN])])
    return torch.cat([v, -v])


def test_round_to_grid_matches_torch_float8_casts():
    v = _sweep()
    # torch's float8_e4m3fn cast is RNE. What it does from 464 up (where RNE would reach the NaN
    # code 480) depends on the torch version: 2.13 saturates at 448, 2.11 gives NaN. So the cast
    # is the reference below 464, and saturation is checked on literal values.
    fin4 = v[v.abs() < 464]
    assert_bits_equal(round_to_grid(fin4, E4M3), fin4.to(torch.float8_e4m3fn).float(), "e4m3")
    assert_bits_equal(
        round_to_grid(torch.tensor([464.0, 1e30, INF, -500.0]), E4M3), torch.tensor([448.0, 448, 448, -448])
    )
    # The e5m2 cast overflows to Inf at 61440 and above, where round_to_grid saturates.
    fin = v[v.abs() < 61440]
    assert_bits_equal(round_to_grid(fin, E5M2), fin.to(torch.float8_e5m2).float(), "e5m2")
    assert_bits_equal(round_to_grid(torch.tensor([61440.0, INF, -1e30]), E5M2), torch.tensor([57344.0, 57344, -57344]))


def test_round_to_grid_e2m1_and_ties_away():
    table = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6])
    v = torch.linspace(0, 7, 7 * 64 + 1)  # multiples of 1/64: every midpoint, and beyond 6
    # Nearest E2M1 value by brute force; distances are multiples of 1/64, so scaled by 128
    # they differ by >= 2 and the +1 for odd codes only breaks exact ties (towards even).
    code = ((v[:, None] - table).abs() * 128 + torch.arange(8) % 2).argmin(1)
    want = table[code]
    assert_bits_equal(round_to_grid(v, E2M1), want)
    assert_bits_equal(round_to_grid(-v, E2M1), -want)
    # Ties away: 0.25 -> 0.5, 1.25 -> 1.5, 2.5 -> 3, 5 -> 6 (RNE would give 0, 1, 2, 4).
    assert_bits_equal(
        round_to_grid(torch.tensor([0.25, 1.25, 2.5, 5.0, -0.75]), E2M1, ties="away"),
        torch.tensor([0.5, 1.5, 3.0, 6.0, -1.0]),
    )


def test_pow2_floor_equals_exact_helpers():
    g = torch.Generator().manual_seed(4)
    bits = torch.randint(0x00800000, 0x7F800000, (100000,), generator=g, dtype=torch.int32)  # all normal floats
    v = torch.cat([bits.view(torch.float32), -bits.view(torch.float32)])
    assert_bits_equal(pow2_floor(v), exp2i(floor_log2(v)))
    assert_bits_equal(pow2_floor(torch.tensor([0.0, 1e-40, INF, NAN])), torch.tensor([0.0, 0.0, INF, INF]))


def test_div_by_const_is_a_true_division():
    g = torch.Generator().manual_seed(6)
    t = torch.randn(100000, generator=g) * 1000
    for c in (6.0, 7.0, 127.0, 448.0, 2688.0):
        # The float32 IEEE quotient: rounding the float64 quotient of two float32 numbers
        # to float32 is correctly rounded (53 >= 2·24 + 2 bits, no double-rounding error).
        assert_bits_equal(div_by_const(t, c), (t.double() / c).float(), f"/{c}")
    assert div_by_const(t.bfloat16(), 7.0).dtype == torch.bfloat16
