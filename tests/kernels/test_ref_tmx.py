"""Tests of the TMX reference kernel ``kernels.reference.tmx.quantize_tmx_ref`` (spec formats-mx.md §9).

- every golden file of ``tmx4`` / ``tmx6``: exact vs ``expected_exact``, seed vs
  ``expected`` (float32 and bf16) and ``alt_seed_fp32_compute``;
- the rules and consequences of §9 with literal values;
- shapes, axes, dtypes, and that the input is never modified.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from golden import assert_bits_equal, block_of, case_files, load, needs_golden
from golden import assert_leading as check
from golden import int_view as _bits

from kernels.reference.tmx import quantize_tmx_ref

F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16
FLT_MAX = torch.finfo(F32).max
INF, NAN = math.inf, math.nan


def block(values, dtype=F32, n=16) -> torch.Tensor:
    """One block of ``n`` (the §11.2 convention: the given values, then zeros)."""
    return block_of(values, n, dtype)


def run(x: torch.Tensor, **kw) -> torch.Tensor:
    before = x.clone()
    y = quantize_tmx_ref(x, **kw)
    assert torch.equal(_bits(x), _bits(before)), "input was modified"
    assert y.shape == x.shape and y.dtype == x.dtype
    return y


# --------------------------------------------------------------------------- golden files


@functools.cache
def _file(path):
    return load(path)


def _golden_params():
    out = []
    for n in (4, 6):
        for path in case_files("mx", f"tmx{n}"):
            tensors, _ = _file(path)
            for name, opts, cast in (
                ("expected_exact", {}, False),
                ("expected", {"emulate": "seed"}, False),
                ("alt_seed_fp32_compute", {"emulate": "seed"}, True),
            ):
                if name in tensors:
                    out.append(pytest.param(n, path, name, opts, cast, id=f"tmx{n}/{path.stem}-{name}"))
    return out


@needs_golden
@pytest.mark.parametrize("n,path,name,opts,cast", _golden_params())
def test_golden(n, path, name, opts, cast):
    tensors, _ = _file(path)
    x = tensors["input"].to(F32) if cast else tensors["input"]
    assert_bits_equal(run(x, n=n, **opts), tensors[name], f"tmx{n} {path.stem} {name}")


# --------------------------------------------------------------------------- §9 rules and consequences

MODES = ["exact", "seed"]


@pytest.mark.parametrize("emulate", MODES)
def test_element_max_is_below_two_binades(emulate):
    # A mantissa that rounds to 2 becomes 2 - 2^(1-M): 1.97 -> 1.875 for tmx6 (M = 4), 1.75 -> 1.5 for tmx4.
    check(run(block([1.97]), n=6, emulate=emulate), [1.875])
    check(run(block([1.75]), n=4, emulate=emulate), [1.5])


@pytest.mark.parametrize("emulate", MODES)
def test_ties_away_from_zero(emulate):
    # tmx4: e = 0, step 2^(1-2) = 0.5: 1.25 and -1.25 are ties and go away from zero.
    check(run(block([1.25, -1.25]), n=4, emulate=emulate), [1.5, -1.5])


@pytest.mark.parametrize("emulate", MODES)
def test_pair_exponent_is_at_least_shared_minus_one(emulate):
    # Pairs (4, 0), (1, 0.3), (0.3, 0): g = 2, 0, -2 -> G = 2, e = 2, 1, 1 (tmx6, step 2^(e-3)).
    check(run(block([4, 0, 1, 0.3, 0.3, 0]), n=6, emulate=emulate), [4, 0, 1, 0.25, 0.25, 0])
    # The same 0.3 in the top pair (e = 2, step 0.5) rounds to 0.5.
    check(run(block([4, 0.3]), n=6, emulate=emulate), [4, 0.5])


@pytest.mark.parametrize("emulate", MODES)
def test_nan_or_inf_makes_the_block_nan(emulate):
    for bad in (NAN, INF, -INF):
        x = torch.linspace(-2, 2, 32)
        x[3] = bad
        y = run(x, n=6, emulate=emulate)
        assert torch.isnan(y[:16]).all() and not torch.isnan(y[16:]).any(), bad


def test_flt_max_overflow_only_in_seed_mode():
    # Seed: log2(FLT_MAX) rounds to 128 (§2.8-b), 2^128 = Inf, and the partner 0·Inf is NaN.
    check(run(block([FLT_MAX, 0]), n=6, emulate="seed"), [INF, NAN])
    # Exact: e = 127, the largest element (2 - 2^-3)·2^127.
    check(run(block([FLT_MAX, 0]), n=6), [1.875 * 2.0**127, 0])


@pytest.mark.parametrize("emulate", MODES)
def test_eps_sets_the_smallest_pair_exponent(emulate):
    # float32: eps = 2^-45, so 2^-40 is kept exactly and 2^-50 rounds to 0.
    check(run(block([2.0**-40]), n=6, emulate=emulate), [2.0**-40])
    check(run(block([2.0**-50]), n=6, emulate=emulate), [0])
    check(run(block([2.0**-20]), n=6, emulate=emulate), [2.0**-20])


def test_fp16_eps():
    # float16 input: eps = 2^-14 (both modes keep the seed's choice), so the pair exponent is
    # at least -14 and 2^-20 rounds to 0, where the same value in float32 is kept (above).
    check(run(block([2.0**-20], F16), n=6), [0])
    # The seed computes in float16, where its 2^(M-1-e) = 2^17 overflows to Inf: emulated as is.
    check(run(block([2.0**-20], F16), n=6, emulate="seed"), [INF])


@pytest.mark.parametrize("emulate", MODES)
def test_all_zero_block(emulate):
    check(run(torch.zeros(16), n=4, emulate=emulate), [0] * 16)


# --------------------------------------------------------------------------- shapes, axes, dtypes


def _randn(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * torch.exp2(torch.randint(-8, 8, shape[:-1] + (1,), generator=g).float())


@pytest.mark.parametrize("emulate", MODES)
def test_axis0_3d_ragged_1d(emulate):
    x = _randn(37, 9)
    assert_bits_equal(run(x, n=6, axis=0, emulate=emulate), run(x.t().contiguous(), n=6, emulate=emulate).t(), "axis 0")
    x3 = _randn(3, 21, 5)
    want = run(x3.transpose(1, 2).contiguous(), n=4, emulate=emulate).transpose(1, 2)
    assert_bits_equal(run(x3, n=4, axis=-2, emulate=emulate), want, "axis -2 of 3-D")
    r = _randn(4, 21)
    padded = torch.cat([r, torch.zeros(4, 11)], dim=1)
    assert_bits_equal(run(r, n=6, emulate=emulate), run(padded, n=6, emulate=emulate)[:, :21], "ragged")
    assert_bits_equal(run(r[1], n=6, emulate=emulate), run(r, n=6, emulate=emulate)[1], "1-D")


@pytest.mark.parametrize("n", [4, 6])
def test_bf16_input_keeps_dtype_and_rounds_the_float32_result(n):
    x = _randn(8, 64).to(BF16)
    assert_bits_equal(run(x, n=n), quantize_tmx_ref(x.float(), n=n).to(BF16), f"tmx{n} bf16")


def test_fp16_input_keeps_dtype():
    x = _randn(8, 64).clamp(-60000, 60000).to(F16)
    y = run(x, n=6)
    assert y.dtype == F16 and torch.isfinite(y).all()


def test_rejects_bad_arguments():
    for kw in ({"n": 2}, {"n": 6, "axis": 2}, {"n": 6, "emulate": "fast"}):
        with pytest.raises(ValueError):
            quantize_tmx_ref(torch.zeros(4, 16), **kw)
