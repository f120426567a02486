"""The Triton NVFP4 kernels (``kernels.triton.nvfp``: ``nvf4`` and ``nvfp4``) against the
reference, bit for bit, in Triton's interpreter.

``triton_support`` sets ``TRITON_INTERPRET=1`` before ``triton`` loads, so the kernels run on CPU
tensors. The interpreter is slow: tensors stay small, and the fused sums run on a subset.
"""

from __future__ import annotations

import triton_support  # first: it sets TRITON_INTERPRET=1 before triton loads

# isort: split

import math  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from corner_cases import as_dtype, corner_cases  # noqa: E402
from golden import needs_golden  # noqa: E402
from triton_support import DTYPES, SKIP, assert_sums_equal, check, check_golden, check_sums, divide_by_reciprocal, heavy  # noqa: E402

import kernels  # noqa: E402
from kernels import backends  # noqa: E402
from kernels.ranges import unit_bound  # noqa: E402
from kernels.reference.fp8 import E4M3, round_to_grid  # noqa: E402
from kernels.stats import error_sums_ref  # noqa: E402

if SKIP:
    pytest.skip(SKIP, allow_module_level=True)

from kernels.triton import _common as tcommon  # noqa: E402
from kernels.triton import nvfp as tnv  # noqa: E402

FORMATS = ["nvf4", "nvfp4", "nvf4:emulate=seed"]
#: 2^-121 · 2688: the tensor amax below which nvfp4 returns its input (pts < 2^-121).
TINY_AMAX = 2.0**-121 * 2688


@pytest.fixture(autouse=True)
def _quiet_interpreter():
    w = triton_support.quiet()
    yield
    w.__exit__(None, None, None)


def _with(fmt: str, opts: str) -> str:
    """``fmt`` with more options."""
    return f"{fmt},{opts}" if ":" in fmt else f"{fmt}:{opts}"


def _e4m3(v: float) -> float:
    """E4M3 RNE of a float32 value by the reference helper (v clipped to 448 first)."""
    return float(round_to_grid(torch.tensor([min(v, 448.0)], dtype=torch.float32), E4M3))


def _bits_neighbours(v: float, k: int) -> torch.Tensor:
    """The float32 values k ulps either side of v (v included)."""
    b = torch.tensor([v], dtype=torch.float32).view(torch.int32)
    return (b + torch.arange(-k, k + 1, dtype=torch.int32)).view(torch.float32)


# --------------------------------------------------------------------------- bit-exactness


@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("fmt", FORMATS)
def test_random_matches_reference(fmt, dtype, axis):
    x = heavy((37, 45), seed=len(fmt) + axis).to(dtype)  # ragged along both axes
    check(x, _with(fmt, f"axis={axis}"))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("fmt", FORMATS)
def test_corner_cases_match_reference(fmt, dtype):
    for case in corner_cases().values():
        x = as_dtype(case, dtype)
        if x is not None:
            check(x, fmt)  # rows of 64 or 96: the kernels' whole-block (EVEN) path
            if x.dim() > 1 and dtype != torch.float16:
                check(x, _with(fmt, "axis=0"))  # short ragged rows: the general path


@pytest.mark.parametrize("fmt", FORMATS)
def test_shapes_and_axes(fmt):
    g = torch.Generator().manual_seed(4)
    for shape, axes in (((1,), (0,)), ((15,), (0,)), ((33,), (-1,)), ((3, 17, 5), (0, 1, 2)), ((2, 16), (0, 1))):
        x = torch.randn(shape, generator=g) * 7
        for axis in axes:
            check(x, _with(fmt, f"axis={axis}"))
    check(torch.randn(4, 6, generator=g).t(), fmt)  # non-contiguous input
    for x in (torch.zeros(0, 32), torch.zeros(4, 0)):
        check(x, fmt)


def test_nvf4_scale_and_element_rounding_edges():
    """Every E4M3 scale (block amax 6·S and its rounding midpoints ±ulps, the zero-scale edge
    6·2^-10) with elements at each E2M1 midpoint times S, ±1 ulp: the comparisons that stand in
    for ``|x| / S`` and the scale's RNE, where they could be off by one."""
    scales = sorted({m / 8 * 2.0**e for e in range(-6, 9) for m in range(8, 16)} | {k * 2.0**-9 for k in range(8)})
    scales = [s for s in scales if s <= 448]
    amaxes = [6 * s for s in scales] + [3 * (a + b) for a, b in zip(scales, scales[1:], strict=False)] + [6 * 2.0**-10]
    mids = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
    rows = []
    for amax in amaxes:
        for top in _bits_neighbours(amax, 1).tolist():
            s = _e4m3(top / 6)
            el = torch.cat([_bits_neighbours(float(m) * s, 1) for m in mids]) if s > 0 else torch.zeros(21)
            rows.append(torch.cat([torch.tensor([top]), el[:15]]))
            rows.append(torch.cat([torch.tensor([-top]), -el[6:]]))
    x = torch.stack(rows)
    check(x, "nvf4")
    check(x.to(torch.bfloat16), "nvf4")


def _markstein(a: torch.Tensor, d: float) -> torch.Tensor:
    """fl(a / d) as the nvf4 kernel computes it (``_common.div_by_reciprocal``)."""
    return divide_by_reciprocal(a, torch.tensor(d))


def _e4m3_scales() -> list[float]:
    """Every positive E4M3 value (the nvf4 block scales S)."""
    normal = {(1 + m / 8) * 2.0**e for e in range(-6, 9) for m in range(8)}
    return sorted(v for v in normal | {k * 2.0**-9 for k in range(1, 8)} if v <= 448)


def test_nvf4_quotients_through_the_reciprocal_equal_the_ieee_ones():
    """nvf4 divides |x| by its block scale S through fl(1/S) and one FMA correction: for every
    positive bfloat16 and float16 |x| with |x| / S < 3584 (a block never holds more) and every E4M3
    S, the quotient equals IEEE |x| / S bit for bit wherever it is at least 2^-20 (below, the
    correction loses bits at the bottom of float32's range, and E2M1 rounds both to 0); float32
    |x| within 64 ulps of every midpoint times every S, bit for bit."""
    for dtype, top in ((torch.bfloat16, 0x7F80), (torch.float16, 0x7C00)):
        a = torch.arange(1, top, dtype=torch.int32).to(torch.int16).view(dtype).float()
        for s in _e4m3_scales():
            x = a[a < 3584 * s]
            got, want = _markstein(x, s), x / s
            differ = got.view(torch.int32) != want.view(torch.int32)
            assert not (differ & (want >= 2.0**-20)).any(), (dtype, s)
    mids = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
    for s in _e4m3_scales():
        t = (mids * s).view(torch.int32)
        x = (t[:, None] + torch.arange(-64, 65)[None, :]).reshape(-1).view(torch.float32)
        assert torch.equal(_markstein(x, s).view(torch.int32), (x / s).view(torch.int32)), s


@pytest.mark.parametrize("every", [pytest.param(1, marks=pytest.mark.slow), 4099])
def test_nvf4_amax_over_6_through_the_reciprocal(every):
    """The block scale's fl(amax / 6) through fl(1/6): equal to the IEEE quotient bit for bit for
    every non-negative float32 amax (every ``every``-th bit pattern; all 2^31 with ``-m slow``),
    but subnormal quotients (E4M3 rounds them to 0 either way) and Inf (NaN here; the min with
    448 takes both to 448)."""
    span = (1 << 24) * every  # 2^24 values a call
    for lo in range(0, 0x7F800000, span):
        a = torch.arange(lo, min(lo + span, 0x7F800000), every, dtype=torch.int64).to(torch.int32).view(torch.float32)
        got, want = _markstein(a, 6.0), a / 6.0
        differ = got.view(torch.int32) != want.view(torch.int32)
        assert not (differ & (want >= 2.0**-126)).any(), lo
    assert math.isnan(float(_markstein(torch.tensor([math.inf]), 6.0)))


def test_nvf4_specials():
    nan, inf = math.nan, math.inf
    x = torch.zeros(6, 32)
    x[0, :3] = torch.tensor([1.0, nan, -2.0])  # NaN block
    x[1, :3] = torch.tensor([1.0, inf, -2000.0])  # Inf element: NaN, the rest against S = 448
    x[2, 16:19] = torch.tensor([-inf, 3000.0, -0.0])
    x[3, :4] = torch.tensor([6 * 2.0**-10, -1e-4, 2.0**-149, -0.0])  # scale rounds to 0: +0
    x[4, :3] = torch.tensor([5000.0, 1000.0, -0.0])  # saturated scale (§4.2: [2688, 896])
    x[5, :] = -0.0
    for dtype in DTYPES:
        check(x.to(dtype), "nvf4")
        check(x.to(dtype), "nvf4:axis=0")


def _ulps_around(values, dtype: torch.dtype, ks) -> torch.Tensor:
    """float32 values ``ks`` ulps of ``dtype`` away from each value (rounded to dtype first)."""
    t = torch.tensor(values, dtype=torch.float32).to(dtype)
    ints = t.view(torch.int32 if dtype == torch.float32 else torch.int16)
    return torch.stack([(ints + k).view(dtype) for k in ks], -1).float().flatten()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nvf4_seed_log2_edges(dtype):
    """emulate=seed: block amaxes a few ulps (of the input dtype) around 6·2^j, where the seed's
    rounded float log2 reaches the next binade and its eps moves the floor, with elements a few
    ulps around S·2^k, where the element's log2 does the same."""
    rows = []
    for top in _ulps_around([6 * 2.0**j for j in range(-12, 10)], dtype, (-3, -2, -1, 0, 1)).tolist():
        s = top / 6
        for k in (-1, 0, 1, 2, 3):
            el = _ulps_around([s * 2.0**k], dtype, range(-7, 8))
            rows.append(torch.cat([torch.tensor([top]), el]))
    x = torch.stack(rows).to(dtype)
    check(x, "nvf4:emulate=seed")
    check(-x, "nvf4:emulate=seed")
    check(x * 2.0**-12, "nvf4:emulate=seed")  # zero and subnormal E4M3 scales: S' = S + eps
    if dtype == torch.float16:
        # S' = S + 2^-14 has many bits in fp16: these |x| / S' round differently on the E2M1 grid
        # once rounded to fp16 first, as the seed does (found by a search over every fp16 |x|).
        found = {
            0.03125: [0.039154052734375, 0.054779052734375, 0.07830810546875, 0.10955810546875, 0.1566162109375],
            0.0390625: [0.048919677734375, 0.09783935546875, 0.1956787109375],
            0.0625: [0.046905517578125],
            0.09375: [0.1173095703125, 0.234619140625, 0.46923828125],
        }
        y = torch.stack([torch.tensor([6 * s] + els + [0.0] * (15 - len(els))) for s, els in found.items()])
        check(y.to(dtype), "nvf4:emulate=seed")


def test_nvfp4_special_tensors():
    """Tensor-level cases: all zero or tiny (returned unchanged), the 2^-121 threshold of the
    per-tensor scale, NaN or Inf anywhere (all NaN), a block far below the tensor amax."""
    base = torch.tensor([[1.0, -0.5, 0.25, 0.75, -0.0] + [0.0] * 11, [2.0**-30, -(2.0**-40)] + [0.0] * 14])
    for amax in _bits_neighbours(TINY_AMAX, 2).tolist() + [0.0, 1e-40, 2.0**-126, 1e-30, 3e38]:
        x = base * amax  # the tensor amax is exactly ``amax``
        if amax == TINY_AMAX:
            assert float(x.abs().max()) / 2688 == 2.0**-121  # the threshold itself: not tiny
        check(x, "nvfp4")
    for bad in (math.nan, math.inf, -math.inf):
        x = base.clone()
        x[1, 5] = bad
        for dtype in DTYPES:
            check(x.to(dtype), "nvfp4")
    check(torch.full((3, 20), -0.0), "nvfp4")


def test_nvfp4_exhaustive_block_scales():
    """Blocks whose amax falls from the tensor amax by steps of 2^(1/8) down past the smallest
    block scale 2^-6 (clamped), each with elements on its E2M1 midpoints: the reciprocal
    arithmetic that moves ties (§4.4) across every E4M3 block scale."""
    g = torch.Generator().manual_seed(9)
    rows = [torch.tensor([2688.0 * 1.37] + [0.0] * 15)]
    for k in range(0, 120):
        amax_b = 2688.0 * 1.37 * 2.0 ** (-k / 8)
        row = torch.tensor([amax_b] + [amax_b * m / 6 for m in (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)] + [0.0] * 8)
        rows.append(row * torch.where(torch.rand(16, generator=g) < 0.5, -1.0, 1.0))
    x = torch.stack(rows)
    for dtype in DTYPES:
        check(x.to(dtype), "nvfp4")


@needs_golden
def test_golden_contract_nvfp_entries():
    """The contract's nvf4/nvfp4 entries whose options the kernels cover."""
    ran = len(check_golden(lambda spec: spec.family in tnv.FAMILIES and tnv.unsupported_reason(spec) is None))
    assert ran >= 10, ran  # 11 with the golden set of 2025-11-30


# --------------------------------------------------------------------------- fused sums


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("fmt", FORMATS)
def test_sums_match_reference(fmt, dtype):
    x = heavy((40, 77), seed=7)
    x[5, 60], x[9, 1], x[30, 76] = math.inf, -math.inf, 1e30
    x[3, 4] = math.nan
    x = x.to(dtype)
    check_sums(x, fmt)
    check_sums(x, _with(fmt, "axis=0"))
    cases = corner_cases()
    names = ("huge", "nan_in_block", "inf_in_block")
    if dtype == torch.float32:  # the interpreter is slow: the value-range cases in one dtype
        names += ("zeros", "f32_subnormals", "ties")
    for name in names:
        c = as_dtype(cases[name], dtype)
        if c is not None:
            check_sums(c, fmt)


def test_sums_nvfp4_finite_and_tiny():
    x = heavy((30, 50), seed=3)
    check_sums(x, "nvfp4")
    check_sums(x.to(torch.bfloat16), "nvfp4:axis=0")
    check_sums(x * 2.0**-130, "nvfp4")  # returned unchanged: bound +Inf, nothing clips


def test_sums_cache_is_reused(monkeypatch):
    x = heavy((20, 64), seed=5)
    spec = kernels.parse("nvfp4")
    cache: dict = {}
    first = tnv.sums(x, spec, cache=cache)
    assert set(cache) == {tcommon.AMAX_KEY}
    assert float(cache[tcommon.AMAX_KEY]) == float(x.abs().max())

    class NoSecondPass:  # stands in for the amax kernel: launching it fails
        def __getitem__(self, grid):
            raise AssertionError("the amax was recomputed despite the cache")

    monkeypatch.setattr(tcommon, "_absmax_kernel", NoSecondPass())
    second = tnv.sums(x, spec, cache=cache)
    assert first.as_dict() == second.as_dict()
    want = error_sums_ref(x, kernels.fake_quantize(x, spec, backend="reference"), unit_bound(x, spec))
    assert_sums_equal(second, want, "cached nvfp4", float(x.abs().max()))
    # The fake quantization takes the same cache; nvf4 needs no tensor amax and leaves it alone.
    got = tnv.nvfp_fake_quantize(x, spec, cache=cache)
    assert torch.equal(got, kernels.fake_quantize(x, spec, backend="reference"))
    check_sums(x, "nvf4", cache=cache)
    assert set(cache) == {tcommon.AMAX_KEY}


# --------------------------------------------------------------------------- registration


def test_backend_selection():
    for fmt in ("nvf4", "nvfp4", "nvf4:axis=0", "nvfp4_1level", "nvf4:emulate=seed", "nvfp4:axis=0"):
        spec = kernels.parse(fmt)
        assert tnv.unsupported_reason(spec) is None, fmt
        assert backends.REGISTRY["triton"].check(torch.device("cuda"), spec) is None, fmt
        assert backends.select("cpu", spec, "triton").name == "triton"
        if not torch.cuda.is_available():
            assert backends.select("cpu", spec).name != "triton"  # priority -5 without a GPU
    # Every option of both families runs here; other families get a reason from this module.
    for fmt in ("nf4", "mxfp8_e4m3"):
        assert isinstance(tnv.unsupported_reason(kernels.parse(fmt)), str), fmt
    with pytest.raises(ValueError):
        tnv.fake_quantize(torch.ones(16), kernels.parse("nf4"))
    with pytest.raises(TypeError):
        tnv.fake_quantize(torch.ones(16, dtype=torch.float64), kernels.parse("nvf4"))
