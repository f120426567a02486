"""Reference symmetric INT8 (kernels/reference/int8sym.py), format ``int8sym`` (spec formats-mx.md §8).

Golden vectors: tests/kernels/test_contract.py. Here: ``int8sym``, the spec's example 25 (§11.3),
axes, special values and dtypes.
"""

from __future__ import annotations

import pytest
import torch
from golden import assert_bits_equal

from kernels.reference.int8sym import quantize_int8sym_ref

NAN = float("nan")
INF = float("inf")

# --------------------------------------------------------------------------- rules


def test_example_25():
    x = torch.tensor([[127, 0.5, 1.5, -2.5, 63.5], [0, 0, 0, 0, 0]])
    # amax 127 -> step 1: RNE ties 0.5 -> 0, 1.5 -> 2, -2.5 -> -2, 63.5 -> 64.
    row0 = torch.tensor([127, 0, 2, -2, 64.0])
    seed = quantize_int8sym_ref(x, emulate="seed")
    assert_bits_equal(seed[0], row0)
    assert torch.isnan(seed[1]).all()  # the seed: step 0, 0/0 = NaN
    exact = quantize_int8sym_ref(x)
    assert_bits_equal(exact, torch.stack([row0, torch.zeros(5)]))  # exact: the zero row stays 0


def test_step_and_levels():
    # amax 2.54 -> step fl(2.54/127); every output is an integer multiple of that step.
    x = torch.tensor([2.54, 1.0, -0.0123, 0.02])
    step = torch.tensor(2.54) / 127
    y = quantize_int8sym_ref(x)
    k = torch.round(x / step)
    assert_bits_equal(y, k * step)
    assert k.tolist() == [127, 50, -1, 1]


@pytest.mark.parametrize("emulate", ["exact", "seed"])
def test_nan_inf_rows(emulate):
    x = torch.randn(4, 10, generator=torch.Generator().manual_seed(0))
    x[0, 3] = NAN
    x[1, 4] = INF
    x[2, 0] = -INF
    y = quantize_int8sym_ref(x, emulate=emulate)
    assert torch.isnan(y[:3]).all()  # the step is NaN or Inf: the whole row
    assert not torch.isnan(y[3]).any()


def test_axes_and_shapes():
    x = torch.randn(3, 7, 5, generator=torch.Generator().manual_seed(1)) * torch.logspace(-2, 2, 7)[None, :, None]
    for emulate in ("exact", "seed"):
        assert_bits_equal(
            quantize_int8sym_ref(x, axis=1, emulate=emulate),
            quantize_int8sym_ref(x.transpose(1, 2), emulate=emulate).transpose(1, 2),
        )
        m = x[0]
        assert_bits_equal(
            quantize_int8sym_ref(m, axis=0, emulate=emulate), quantize_int8sym_ref(m.t(), emulate=emulate).t()
        )
        # A 1-D tensor has a single scale.
        assert_bits_equal(
            quantize_int8sym_ref(m[:, 0], emulate=emulate),
            quantize_int8sym_ref(m[:, 0].unsqueeze(0), emulate=emulate)[0],
        )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_inputs(dtype):
    x = (torch.randn(6, 50, generator=torch.Generator().manual_seed(2)) * 10).to(dtype)
    y = quantize_int8sym_ref(x)
    assert y.dtype == dtype
    assert_bits_equal(y, quantize_int8sym_ref(x.float()).to(dtype))  # upcast, compute, round back
    assert quantize_int8sym_ref(x, emulate="seed").dtype == dtype


def test_seed_bf16_arithmetic_differs_from_exact():
    # amax 6.53125: the seed's bf16 step is bf16(6.53125/127) = 0.051513671875, and
    # 1.703125 / that = 33 exactly, decoded back to 1.703125. Exact mode uses the float32
    # step 0.0514271669…: 1.703125 / step = 33.117 -> 33, 33·step = 1.69710 -> bf16 1.6953125.
    x = torch.tensor([4.625, -0.87890625, -6.53125, 1.703125], dtype=torch.bfloat16)
    assert_bits_equal(quantize_int8sym_ref(x, emulate="seed"), torch.tensor([4.625, -0.875, -6.53125, 1.703125]))
    assert_bits_equal(quantize_int8sym_ref(x), torch.tensor([4.625, -0.875, -6.53125, 1.6953125]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_input_unchanged_and_not_aliased(dtype):
    x = torch.randn(3, 20, generator=torch.Generator().manual_seed(3)).to(dtype)
    x[1] = 0
    x[2, 4] = NAN
    before = x.clone()
    for emulate in ("exact", "seed"):
        y = quantize_int8sym_ref(x, emulate=emulate)
        y.fill_(1)
        view = torch.int16 if dtype != torch.float32 else torch.int32
        assert torch.equal(x.view(view), before.view(view))


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        quantize_int8sym_ref(torch.ones(3), emulate="even")
    with pytest.raises(TypeError):
        quantize_int8sym_ref(torch.ones(3, dtype=torch.float64))


def test_row_whose_step_underflows_gives_zeros():
    """Found by hypothesis: amax = 16·2^-149 makes amax/127 round to 0; the row must come out 0, not NaN."""
    x = torch.tensor([[2.2421e-44, 0.0, -1e-45]])
    out = quantize_int8sym_ref(x)
    assert torch.equal(out, torch.zeros_like(x))
    assert torch.isnan(quantize_int8sym_ref(x, emulate="seed")).any()  # the seed's 0/0
