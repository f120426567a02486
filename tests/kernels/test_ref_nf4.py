"""Reference NF4 kernels (kernels/reference/nf4.py): bitsandbytes ``nf4`` and the seed's ``nf4B{B}b{b}`` grid.

Golden vectors: tests/kernels/test_contract.py. Here: ``nf4``, the spec's examples 19-20
(formats-mx.md §11.3), the code book of §1.3 (fixed points, midpoints) and the
special values of §5.
"""

from __future__ import annotations

import struct

import pytest
import torch
from golden import assert_bits_equal

from kernels.reference.nf4 import NF4_CODE, quantize_nf4_grid_ref, quantize_nf4_ref

NAN = float("nan")
INF = float("inf")
CODE = torch.tensor(NF4_CODE)

# --------------------------------------------------------------------------- code book (§1.3)


def test_code_book():
    assert len(NF4_CODE) == 16 and list(NF4_CODE) == sorted(NF4_CODE)
    assert sum(c < 0 for c in NF4_CODE) == 7 and NF4_CODE[7] == 0.0 and sum(c > 0 for c in NF4_CODE) == 8
    assert NF4_CODE[0] == -1.0 and NF4_CODE[-1] == 1.0
    for c in NF4_CODE:  # every entry is exactly a float32 value
        assert struct.unpack("f", struct.pack("f", c))[0] == c
    assert NF4_CODE[12] == 0.44070982933044434 and NF4_CODE[4] == -0.28444138169288635  # two spot checks of §1.3


@pytest.mark.parametrize("absmax", [1.0, 2.0**-3, 0.37, 3.0, 1e-3, 1e30, 5.5])
@pytest.mark.parametrize("anchor", [1.0, -1.0])
def test_every_code_times_absmax_is_a_fixed_point(absmax, anchor):
    # One block per code: c·A (float32) next to +A or -A (codes +1 and -1), which fixes
    # the block absmax at A. The book is asymmetric, so -c·A is not a fixed point in general.
    x = torch.zeros(16, 64)
    x[:, 0] = anchor * absmax
    x[:, 1] = CODE * absmax
    assert_bits_equal(quantize_nf4_ref(x), x)


def test_midpoints_go_to_the_lower_code():
    # bitsandbytes bucketizes against the float32 midpoints (c[i] + c[i+1]) / 2 with
    # right=False: a value exactly on a midpoint takes the lower code, one ulp above it
    # the upper code. Absmax 1 (and 2, a power of two) keeps the scaled values exact.
    mids = (CODE[:-1] + CODE[1:]) / 2
    up = torch.nextafter(mids, torch.tensor(INF))
    down = torch.nextafter(mids, torch.tensor(-INF))
    for scale in (1.0, 2.0):
        for vals, want in ((mids, CODE[:-1]), (up, CODE[1:]), (down, CODE[:-1])):
            x = torch.zeros(15, 64)
            x[:, 0] = scale
            x[:, 1] = vals * scale
            assert_bits_equal(quantize_nf4_ref(x)[:, 1], want * scale)


# --------------------------------------------------------------------------- spec §11.3 examples 19-20

EX19 = [1, 0.5, -0.5, 0.3, 0.07, -0.9, 0, 0.61]


def _ex19(extra_block_absmax=None):
    x = torch.zeros(256)
    x[:8] = torch.tensor(EX19)
    if extra_block_absmax is not None:
        x[64] = extra_block_absmax
    return x


def test_example_19_code_book():
    # Nearest NF4 codes at absmax 1: 0.5 -> 0.4407, -0.5 -> -0.5251, 0.3 -> 0.3379, 0.07 -> 0.0796,
    # -0.9 -> -1, 0.61 -> 0.5626.
    want = CODE[[15, 12, 2, 11, 8, 0, 7, 13]]
    assert_bits_equal(quantize_nf4_ref(_ex19())[:8], want)


def test_example_19_seed_grid():
    # 15 uniform levels k/7 (ties away): 0.5·7 = 3.5 -> 4, 0.3·7 = 2.1 -> 2, 0.07·7 -> 0, 0.9·7 = 6.3 -> 6.
    levels = torch.tensor([7, 4, -4, 2, 0, -6, 0, 4]) / torch.tensor(7.0)
    for emulate in ("exact", "seed"):  # no artifact on these values: both modes agree
        assert_bits_equal(quantize_nf4_grid_ref(_ex19(), outer=1, emulate=emulate)[:8], levels)
        # B4 with the other three blocks zero: the group max is this block's, gmax' = gmax.
        assert_bits_equal(quantize_nf4_grid_ref(_ex19(), outer=4, emulate="seed")[:8], levels)
    # B4 with a second block of absmax 12: gmax = 1 becomes 1/12·448 = 37.33 in E4M3 units,
    # rounded to 36 (step 4 in [32, 64)), so this block is decoded with gmax' = 36/448·12.
    gdq = torch.tensor(36.0) / 448 * 12
    for emulate in ("exact", "seed"):
        y = quantize_nf4_grid_ref(_ex19(12.0), outer=4, emulate=emulate)
        assert_bits_equal(y[:8], levels * gdq)
        assert y[64] == 12.0


def test_example_20_all_zero_block():
    x = torch.zeros(2, 128)
    x[1, :64] = torch.linspace(-1, 1, 64)  # a non-zero block in the same outer group (B2)
    # bitsandbytes: an all-zero block stays 0 (its absmax is floored before the reciprocal).
    assert (quantize_nf4_ref(x)[0] == 0).all() and (quantize_nf4_ref(x)[1, 64:] == 0).all()
    # Seed grid: 0/0 = NaN for the all-zero block (and its whole group when the group is all zero).
    seed = quantize_nf4_grid_ref(x, outer=2, emulate="seed")
    assert torch.isnan(seed[0]).all() and torch.isnan(seed[1, 64:]).all() and not torch.isnan(seed[1, :64]).any()
    # Exact mode fixes it: 0.
    exact = quantize_nf4_grid_ref(x, outer=2)
    assert (exact[0] == 0).all() and (exact[1, 64:] == 0).all()
    assert_bits_equal(exact[1, :64], seed[1, :64])


# --------------------------------------------------------------------------- artifacts and special values


def test_seed_grid_floor_plus_half_artifact():
    # t = fl(fl(x/1)·7) = 0.5 - 2^-25 is below the tie, so the level is 0; the seed's
    # floor(t + 0.5) rounds t + 0.5 up to 1.0 in float32 and gives 1/7 (spec §2.8-c).
    x = torch.zeros(64)
    x[0] = 1.0
    x[1] = torch.tensor(0.5 - 2**-25, dtype=torch.float32) / 7
    assert (x[1] * 7).item() == 0.5 - 2**-25  # the premise
    assert quantize_nf4_grid_ref(x, outer=1)[1] == 0.0
    assert quantize_nf4_grid_ref(x, outer=1, emulate="seed")[1] == torch.tensor(1.0) / 7


@pytest.mark.parametrize("emulate", ["exact", "seed"])
def test_seed_grid_absmax_requantization_ties_away(emulate):
    # gmax 34 against the group max 448 is 34 in E4M3 units: a tie between 32 and 36
    # (step 4 in [32, 64)). quant_py rounds ties away, so gmax' = 36 (RNE would give 32).
    # 17 is level rna(17/34·7 = 3.5) = 4, decoded as 4/7·36.
    x = torch.zeros(128)
    x[0], x[1], x[64] = 34.0, 17.0, 448.0
    y = quantize_nf4_grid_ref(x, outer=2, emulate=emulate)
    assert y[0] == 36.0 and y[64] == 448.0
    assert y[1] == torch.tensor(4.0) / 7 * 36


@pytest.mark.parametrize("emulate", ["exact", "seed"])
@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_seed_grid_non_finite_makes_the_outer_group_nan(emulate, bad):
    x = torch.randn(2, 512, generator=torch.Generator().manual_seed(0))
    x[0, 300] = bad  # group 1 (elements 256..511) of row 0
    y = quantize_nf4_grid_ref(x, emulate=emulate)
    assert torch.isnan(y[0, 256:]).all()
    assert not torch.isnan(y[0, :256]).any() and not torch.isnan(y[1]).any()


def test_bnb_special_values():
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(1))
    x[0, 3] = NAN
    x[1, 5] = INF
    x[2, 7] = -INF
    y = quantize_nf4_ref(x)
    assert torch.isnan(y[0]).all()
    # Inf: absmax Inf, scaled values 0 (code 0 -> 0·Inf = NaN) and Inf·0 = NaN, which
    # bucketize puts in the top bucket (code +1 -> +Inf) whatever the sign.
    for row, col in ((1, 5), (2, 7)):
        assert y[row, col] == INF
        assert torch.isnan(torch.cat([y[row, :col], y[row, col + 1 :]])).all()
    assert not torch.isnan(y[3]).any()


def test_bnb_subnormal_absmax_floor():
    # bitsandbytes takes the reciprocal of max(absmax, 1e-38): a block with absmax
    # 5e-39 is scaled by ~1e38 (to ~0.5, nearest code 0.4407) but decoded with 5e-39.
    x = torch.zeros(64)
    x[0] = 5e-39
    s = x[0] * torch.reciprocal(torch.tensor(1e-38))
    assert CODE[12] < s < (CODE[12] + CODE[13]) / 2  # the premise: code 12 is the nearest
    assert quantize_nf4_ref(x)[0] == CODE[12] * x[0]


# --------------------------------------------------------------------------- shapes, axes, dtypes


FUNCS = {
    "nf4": quantize_nf4_ref,
    "nf4B4b64": quantize_nf4_grid_ref,
    "nf4B4b64-seed": lambda x, **k: quantize_nf4_grid_ref(x, emulate="seed", **k),
    "nf4B2b16": lambda x, **k: quantize_nf4_grid_ref(x, outer=2, block=16, **k),
    "nf4-b32": lambda x, **k: quantize_nf4_ref(x, block=32, **k),
}


@pytest.mark.parametrize("name", list(FUNCS))
def test_axis_shapes_and_ragged_tail(name):
    fn = FUNCS[name]
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 300, 3, generator=g) * torch.logspace(-2, 2, 300)[None, :, None]
    # axis=1 of a 3-D tensor equals the last axis of the transposed tensor.
    assert_bits_equal(fn(x, axis=1), fn(x.transpose(1, 2).contiguous()).transpose(1, 2))
    m = x[0]
    assert_bits_equal(fn(m, axis=0), fn(m.t().contiguous()).t())  # axis=0 on 2-D
    assert_bits_equal(fn(m[:, 0]), fn(m[:, 0].unsqueeze(0))[0])  # a 1-D tensor is one row
    # The ragged tail (300 is not a multiple of 64 or 256) is zero-padded.
    xt = x.transpose(1, 2)
    padded = torch.nn.functional.pad(xt, (0, 512 - 300))
    assert_bits_equal(fn(xt), fn(padded)[..., :300])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_inputs_keep_dtype(dtype):
    x = torch.randn(3, 256, generator=torch.Generator().manual_seed(2)).to(dtype)
    for name in ("nf4", "nf4B4b64"):
        y = FUNCS[name](x)
        assert y.dtype == dtype
        assert_bits_equal(y, FUNCS[name](x.float()).to(dtype), name)  # upcast, compute, round back
    assert quantize_nf4_grid_ref(x, emulate="seed").dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_input_unchanged_and_not_aliased(dtype):
    x = torch.randn(3, 200, generator=torch.Generator().manual_seed(3)).to(dtype)
    x[0, 10] = NAN
    x[1, 70] = -INF
    x[2, :64] = 0
    before = x.clone()
    for name, fn in FUNCS.items():
        y = fn(x)
        y.fill_(7)
        view = torch.int16 if dtype != torch.float32 else torch.int32
        assert torch.equal(x.view(view), before.view(view)), name


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        quantize_nf4_grid_ref(torch.ones(64), emulate="exactly")
    with pytest.raises(ValueError):
        quantize_nf4_ref(torch.ones(64), block=0)
    with pytest.raises(TypeError):
        quantize_nf4_ref(torch.ones(64, dtype=torch.int32))
    assert quantize_nf4_grid_ref(torch.ones(3, 0)).shape == (3, 0)
