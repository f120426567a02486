"""Reference NVFP4 kernels (kernels/reference/nvfp.py): seed one-level ``nvf4`` and NVIDIA two-level ``nvfp4``.

Golden vectors: tests/kernels/test_contract.py. Here: ``nvfp4``, the spec's examples 14-18
(formats-mx.md §11.3), and the blocking, dtype and special-value rules of §4.
"""

from __future__ import annotations

import pytest
import torch
from golden import assert_bits_equal

from kernels.reference.nvfp import quantize_nvf4_ref, quantize_nvfp4_ref, to_blocks

NAN = float("nan")
INF = float("inf")

# --------------------------------------------------------------------------- spec §11.3 examples 14-18


def _block(values, n=16, dtype=torch.float32):
    """One block of 16 along the last axis, the values first and zeros after them."""
    x = torch.zeros(n, dtype=dtype)
    x[: len(values)] = torch.tensor(values, dtype=dtype)
    return x


def _check(got, want):
    assert_bits_equal(got[: len(want)], torch.tensor(want, dtype=got.dtype))


def test_example_14_ties():
    x = _block([6, 5, 2.5, 0.25, 1.25, 0.75])
    # amax 6 -> S = e4m3(1) = 1; the exact ties 5, 2.5, 0.25, 1.25, 0.75 go to the even E2M1 code.
    _check(quantize_nvf4_ref(x, emulate="seed"), [6, 4, 2, 0, 1, 1])
    _check(quantize_nvf4_ref(x), [6, 4, 2, 0, 1, 1])  # exact: the seed's RNE is already exact here
    # Two-level: pts = fl(6/2688), s_b = 448, and the factor fl(fl(1/pts)/448) is one ulp
    # below 1, so 0.75·factor lies just under the tie and rounds down to 0.5 (§4.4).
    _check(quantize_nvfp4_ref(x), [6, 4, 2, 0, 1, 0.5])


def test_example_15_subnormal_block_scale():
    x = _block([0.03, 0.01, -0.02, 0.004])
    # sf = 0.005 rounds to the E4M3 subnormal 3·2^-9; elements 5.12, 1.71, 3.41, 0.68 -> 6, 1.5, 3, 0.5.
    want = [6 * 3 * 2.0**-9, 1.5 * 3 * 2.0**-9, -3 * 3 * 2.0**-9, 0.5 * 3 * 2.0**-9]
    _check(quantize_nvf4_ref(x, emulate="seed"), want)
    _check(quantize_nvf4_ref(x), want)
    # Two-level: s_b = 448 and the elements become 6, 2, -4, 0.8 -> 1 on the E2M1 grid,
    # i.e. 0.03, 0.01, -0.02 back exactly and 0.004 -> 0.005 (1 · amax/6).
    _check(quantize_nvfp4_ref(x), [0.03, 0.01, -0.02, 0.005])


def test_example_16_scale_saturates():
    x = _block([5000, 1000, -20, 3])
    # amax/6 = 833 > 448: S = 448, so 5000/448 and 1000/448 saturate / round to 6 and 2.
    _check(quantize_nvf4_ref(x, emulate="seed"), [2688, 896, -0.0, 0])
    _check(quantize_nvf4_ref(x), [2688, 896, -0.0, 0])
    _check(quantize_nvfp4_ref(x), [5000, 833.3333740234375, -0.0, 0])


def test_example_17_zero_scale_block():
    x = _block([1e-5, 3e-6, 0])
    # amax/6 < 2^-10: the E4M3 scale rounds to 0. The seed divides by S + 2^-60 and
    # returns 6·2^-60 for every non-zero element; exact mode returns 0 (fixed bug).
    _check(quantize_nvf4_ref(x, emulate="seed"), [6 * 2.0**-60, 6 * 2.0**-60, 0])
    _check(quantize_nvf4_ref(x), [0, 0, 0])
    # Two-level: pts = 1e-5/2688 keeps full resolution (6 and 1.8 -> 2 on the E2M1 grid).
    _check(quantize_nvfp4_ref(x), [9.999999747378752e-06, 3.3333330975438002e-06, 0])


def test_example_18_inf():
    x = _block([INF, 1, 2])
    # The block scale saturates at 448: Inf -> NaN at its position only, 1/448 and 2/448 -> 0.
    _check(quantize_nvf4_ref(x, emulate="seed"), [NAN, 0, 0])
    _check(quantize_nvf4_ref(x), [NAN, 0, 0])
    assert torch.isnan(quantize_nvfp4_ref(x)).all()


def test_fp16_seed_epsilon():
    # The seed's guard is 2^-14 for fp16 (2^-60 is not an fp16 number): a zero-scale
    # block decodes to 6·2^-14 there, and to 0 in exact mode.
    x = _block([1e-3], dtype=torch.float16)
    _check(quantize_nvf4_ref(x, emulate="seed"), [6 * 2.0**-14])
    _check(quantize_nvf4_ref(x), [0.0])


# --------------------------------------------------------------------------- special values


def test_nvf4_nan_block_and_inf_element():
    x = torch.cat([_block([1.0, NAN, 2.0]), _block([-INF, 0.5, 100.0, 1e30])])
    for emulate in ("exact", "seed"):
        y = quantize_nvf4_ref(x, emulate=emulate)
        assert torch.isnan(y[:16]).all(), emulate  # NaN: the whole block
        assert torch.isnan(y[16]) and not torch.isnan(y[17:]).any(), emulate  # -Inf: that element
        # The rest is quantized against S = 448: 0.5, 100 -> 0, 1e30 saturates at 6·448.
        assert_bits_equal(y[17:20], torch.tensor([0.0, 0.0, 2688.0]))


def test_nvfp4_special_tensors():
    zero = torch.zeros(3, 32)
    assert_bits_equal(quantize_nvfp4_ref(zero), zero)
    tiny = torch.full((2, 16), 1e-34)  # pts < 2^-121: returned unchanged
    assert_bits_equal(quantize_nvfp4_ref(tiny), tiny)
    small = torch.full((2, 16), 1e-30)  # above the guard: quantized exactly (one E2M1 code 6)
    assert_bits_equal(quantize_nvfp4_ref(small), small)
    for bad in (NAN, INF, -INF):
        x = torch.randn(4, 32)
        x[2, 5] = bad
        assert torch.isnan(quantize_nvfp4_ref(x)).all()


def test_zero_blocks_and_e2m1_fixed_points():
    # With block amax 6·2^k every E2M1 value times 2^k is representable: unchanged.
    grid = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.5, -1, -1.5, -2, -3, -4, -6, 6])
    for k in (-4, 0, 5):
        x = torch.stack([grid * 2.0**k, torch.zeros(16)])  # second row: an all-zero block
        for f in (quantize_nvf4_ref, quantize_nvfp4_ref):
            assert_bits_equal(f(x), x, f"{f.__name__} 2^{k}")


# --------------------------------------------------------------------------- shapes, axes, dtypes


@pytest.mark.parametrize(
    "fn",
    [quantize_nvf4_ref, lambda x, **k: quantize_nvf4_ref(x, emulate="seed", **k), quantize_nvfp4_ref],
    ids=["nvf4", "nvf4-seed", "nvfp4"],
)
def test_axis_shapes_and_ragged_tail(fn):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 37, 5, generator=g) * torch.logspace(-3, 3, 37)[None, :, None]
    # axis=1 of a 3-D tensor equals the last axis of the transposed tensor.
    assert_bits_equal(fn(x, axis=1), fn(x.transpose(1, 2).contiguous()).transpose(1, 2))
    # axis=0 on 2-D, and a 1-D tensor is one row.
    m = x[0]
    assert_bits_equal(fn(m, axis=0), fn(m.t().contiguous()).t())
    assert_bits_equal(fn(m[:, 0]), fn(m[:, 0].unsqueeze(0))[0])
    # The ragged tail (37 = 2·16 + 5) is zero-padded: same as padding explicitly then slicing.
    padded = torch.nn.functional.pad(x.transpose(1, 2), (0, 11))
    assert_bits_equal(fn(x.transpose(1, 2)), fn(padded)[..., :37])


def test_to_blocks_layout():
    x = torch.arange(2 * 37 * 3, dtype=torch.float32).reshape(2, 37, 3) + 1
    xb, restore = to_blocks(x, 1, 16)
    assert xb.shape == (2, 3, 3, 16) and xb.is_contiguous()
    assert_bits_equal(xb[1, 2, 2, :5], x[1, 32:, 2])  # axis moved last, then split in blocks
    assert (xb[:, :, 2, 5:] == 0).all()  # the ragged tail is padded with zeros
    y = restore(xb)
    assert y.is_contiguous()
    assert_bits_equal(y, x)  # padding dropped, axis moved back


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_inputs_keep_dtype(dtype):
    x = (torch.randn(4, 48, generator=torch.Generator().manual_seed(1)) * 3).to(dtype)
    for f in (quantize_nvf4_ref, quantize_nvfp4_ref):
        y = f(x)
        assert y.dtype == dtype
        # Exact mode: compute on the float32 upcast, round the result back (RNE).
        assert_bits_equal(y, f(x.float()).to(dtype), f.__name__)
    assert quantize_nvf4_ref(x, emulate="seed").dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_input_unchanged_and_not_aliased(dtype):
    x = torch.randn(5, 40, generator=torch.Generator().manual_seed(2)).to(dtype)
    x[1, 3] = NAN
    x[2, 17] = -INF
    before = x.clone()
    for f in (quantize_nvf4_ref, lambda t: quantize_nvf4_ref(t, emulate="seed"), quantize_nvfp4_ref):
        y = f(x)
        y.fill_(7)  # writing to the result must not reach x
        assert torch.equal(
            x.view(torch.int16 if dtype != torch.float32 else torch.int32),
            before.view(torch.int16 if dtype != torch.float32 else torch.int32),
        )


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        quantize_nvf4_ref(torch.ones(16), emulate="fast")
    with pytest.raises(TypeError):
        quantize_nvfp4_ref(torch.ones(16, dtype=torch.float64))
    with pytest.raises(ValueError):
        quantize_nvf4_ref(torch.ones(16), axis=1)
    assert quantize_nvfp4_ref(torch.ones(0, 16)).shape == (0, 16)
