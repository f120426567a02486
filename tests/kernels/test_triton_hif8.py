"""The Triton HiF8 kernels (``kernels.triton.hif8``) against the reference, bit for bit, in Triton's interpreter.

``triton_support`` sets ``TRITON_INTERPRET=1`` before ``triton`` loads, so the kernels run on CPU
tensors. Every option value of the ``hif8`` family that the kernels cover is checked, on random
heavy-tailed data, the shared corner cases, the element rule's thresholds and the golden vectors;
``emulate=seed`` is refused.
"""

from __future__ import annotations

import triton_support  # first: it sets TRITON_INTERPRET=1 before triton loads

# isort: split

import math  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from corner_cases import as_dtype, corner_cases  # noqa: E402
from golden import needs_golden  # noqa: E402
from triton_support import DTYPES, SKIP, assert_sums_equal, check, check_golden, check_sums, heavy  # noqa: E402

import kernels  # noqa: E402
from kernels import backends  # noqa: E402

if SKIP:
    pytest.skip(SKIP, allow_module_level=True)

from kernels.triton import _common as tcommon  # noqa: E402
from kernels.triton import hif8 as thif8  # noqa: E402

#: One format per code path of the kernels: scaled / unscaled, the underflow and overflow modes,
#: the paper variant (which keeps ±Inf), and output dtypes other than the default.
FORMATS = [
    "hif8",
    "hif8:scale=none",
    "hif8:variant=paper",
    "hif8:scale=none,underflow=flush,overflow=tof8",
    "hif8:overflow=inf,out=fp32",
    "hif8:underflow=flush,overflow=tof8,k=2.5,out=fp16",
]


@pytest.fixture(autouse=True)
def _quiet_interpreter():
    w = triton_support.quiet()
    yield
    w.__exit__(None, None, None)


def _specials() -> torch.Tensor:
    """NaN, ±Inf, ±0, fp32 subnormals and the values around every threshold of §3.2."""
    v = [math.nan, -math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-45, -1e-45, 2.0**-126, 2.0**-149 * 3]
    for t in (2.0**-24, 2.0**-23, 2.0**-22, 1.5 * 2.0**-22, 28672.0, 32768.0, 40960.0, 49152.0, 65536.0):
        v += [t, math.nextafter(t, 0.0), math.nextafter(t, math.inf)]
    x = torch.tensor(v, dtype=torch.float32)
    return torch.cat([x, -x])


def _binade_grid() -> torch.Tensor:
    """For each binade 2^-25 .. 2^17: every point on a 1/16 grid of [1, 2) (the HiF8 values and
    the midpoints between them for w <= 3 mantissa bits), each one float32 ulp below and above."""
    m = 1 + torch.arange(16, dtype=torch.float64) / 16
    v = torch.cat([m * 2.0**e for e in range(-25, 18)]).to(torch.float32)
    up = torch.nextafter(v, torch.full_like(v, math.inf))
    down = torch.nextafter(v, torch.zeros_like(v))
    x = torch.cat([v, up, down])
    return torch.cat([x, -x])


# --------------------------------------------------------------------------- bit-exactness


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("fmt", FORMATS)
def test_random_matches_reference(fmt, dtype):
    x = heavy((37, 45), seed=len(fmt)).to(dtype)  # ragged: neither a multiple of the tile nor of its rows
    check(x, fmt)
    check(x.t(), fmt)  # a non-contiguous input
    check(heavy((3, 5, 70), seed=2).to(dtype), fmt)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_corner_cases_match_reference(dtype):
    for fmt in ("hif8", "hif8:scale=none", "hif8:variant=paper", "hif8:scale=none,underflow=flush,overflow=tof8"):
        for case in corner_cases().values():
            x = as_dtype(case, dtype)
            if x is not None:
                check(x, fmt)


#: Every value of every option (scale, variant, underflow, overflow, k, out), alone or combined.
OPTIONS = [
    "scale=tensor",
    "scale=none",
    "variant=seed",
    "variant=paper",
    "variant=paper,scale=tensor",
    "underflow=min",
    "underflow=flush",
    "overflow=saturate",
    "overflow=inf",
    "overflow=tof8",
    "k=1",
    "k=3.3",
    "k=1e30",
    "k=1e-30",
    "out=input",
    "out=bf16",
    "out=fp16",
    "out=fp32",
    "scale=none,underflow=flush,overflow=inf,out=bf16",
    "scale=none,overflow=tof8,underflow=min,out=fp32",
    "variant=paper,underflow=min,overflow=saturate",
    "variant=paper,overflow=tof8,out=fp16",
]


@pytest.mark.parametrize("opts", OPTIONS)
def test_options_match_reference(opts):
    fmt = f"hif8:{opts}"
    specials = torch.cat([_specials(), _binade_grid()])
    for dtype in (torch.float32, torch.bfloat16):
        check(heavy((6, 5, 70), seed=3).to(dtype), fmt)
        check(specials.to(dtype), fmt)
    check(heavy((40, 30), seed=4).to(torch.float16), fmt)


@pytest.mark.parametrize("fmt", ["hif8:scale=none", "hif8:variant=paper", "hif8:scale=none,overflow=tof8,out=fp32"])
def test_thresholds_and_all_half_precision_patterns(fmt):
    """The element rule's thresholds in float32, and every bf16 / fp16 bit pattern (step 4)."""
    check(_binade_grid(), fmt)
    check(_specials(), fmt)
    pats = torch.arange(-32768, 32768, 4, dtype=torch.int32).to(torch.int16)
    check(pats.view(torch.bfloat16), fmt)
    check(pats.add(1).view(torch.float16), fmt)


def test_scaled_nan_and_inf_poison_the_tensor():
    """§4.1: one NaN or ±Inf makes the whole scaled output NaN (as the reference computes it)."""
    for bad in (math.nan, math.inf, -math.inf):
        x = heavy((9, 70), seed=6)
        x[4, 33] = bad
        for dtype in DTYPES:
            got = kernels.fake_quantize(x.to(dtype), "hif8", backend="triton")
            assert got.dtype == torch.bfloat16 and bool(got.isnan().all())
            check(x.to(dtype), "hif8:out=fp32")


def test_scaled_amax_extremes():
    """Tiny (fp32-subnormal), zero and huge per-tensor amax: the scale's division and the
    output's q / s at the ends of the float32 range."""
    g = torch.Generator().manual_seed(8)
    for e in (-149, -140, -126, -60, 0, 60, 120, 127):
        x = torch.randn(3, 333, generator=g) * torch.exp2(torch.randint(-30, 1, (3, 333), generator=g).float())
        x = (x * 2.0**e).clamp(-3e38, 3e38)
        for fmt in ("hif8", "hif8:out=fp32,underflow=flush", "hif8:overflow=inf,k=3.3,out=fp16"):
            check(x, fmt)
    check(torch.zeros(5, 7), "hif8:out=fp32")
    check(torch.full((5, 7), -0.0), "hif8")


def test_scaled_divisor_on_both_sides_of_the_fast_division():
    """q / s takes fl(1/m) and a power of two where s = m·2^e is normal and below 2^104, the IEEE
    division elsewhere: s around 2^104 (quotients down to float32's subnormals), huge, Inf,
    subnormal, 0 and near float32's bottom and top, through k and amax, the float32 quotient
    itself (out=fp32) and the default bf16, with overflow to Inf too."""
    g = torch.Generator().manual_seed(21)
    base = torch.randn(2, 300, generator=g) * torch.exp2(torch.randint(-40, 1, (2, 300), generator=g).float())
    cases = [
        (1e30, 2.0**-4),  # s = 1.6e31 ~ 2^103.6: the fast path's top
        (1e30, 2.0**-5),  # s ~ 2^104.6: the IEEE division, subnormal quotients
        (1e30, 1e-12),  # s ~ 1e42: Inf
        (2.0**100, 2.0**-4 * (1 + 2**-20)),  # s just below 2^104
        (2.0**100, 2.0**-4 * (1 - 2**-20)),  # s just above
        (1e-30, 1e10),  # s = 1e-40, subnormal
        (1e-30, 1e20),  # s = 0
        (3.3, 3e38),  # s ~ 1.1e-38, just below 2^-126
        (8.0, 3e38),  # s ~ 2.7e-38, normal
        (8.0, 1.0),
    ]
    for k, amax in cases:
        x = base * (amax / base.abs().max())
        x[0, 7] = -amax
        for opts in ("out=fp32", "", "overflow=inf,out=fp32", "overflow=tof8,out=fp16"):
            fmt = f"hif8:k={k!r}" + (f",{opts}" if opts else "")
            check(x, fmt)
            check(x.to(torch.bfloat16), fmt)
        check_sums(x, f"hif8:k={k!r},out=fp32")
    # s in [2^104, 2^105) with many significands: q = ±2^-22 (every y below it) over s is a
    # float32 subnormal, which fl(1/m) and a power of two would round twice.
    tiny = torch.tensor([2.0**-4, 2.0**-130, -(2.0**-135), 1e-44, -3e-39, 2.0**-127 * 1.7])
    for r in torch.rand(24, generator=g).tolist():
        check(tiny, f"hif8:k={2.0**100 * (1 + r)!r},out=fp32")


def test_empty_and_scalar_inputs():
    for x in (torch.zeros(0, 32), torch.zeros(4, 0), torch.tensor(3.0), torch.tensor(-1e-30)):
        for fmt in ("hif8", "hif8:scale=none", "hif8:variant=paper"):
            check(x, fmt)
            check_sums(x, fmt)


@needs_golden
def test_golden_contract_hif8_entries():
    """The contract's hif8 entries whose options the kernels cover (one test: the interpreter is slow)."""
    ran = check_golden(lambda spec: spec.family == "hif8" and thif8.unsupported_reason(spec) is None)
    stems = {case.entry["stem"] for case in ran}
    assert {"hif8", "hif8_core", "hif8_paper", "hif8_qfuncs", "hif8_tof8", "hifp_matmul"} <= stems, stems
    assert len(ran) > 25, len(ran)


# --------------------------------------------------------------------------- fused sums


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_sums_match_reference(dtype):
    x = heavy((90, 77), seed=7)
    x[3, 4], x[5, 60], x[9, 1] = math.nan, math.inf, -math.inf
    for fmt in ("hif8:scale=none", "hif8:variant=paper", "hif8:scale=none,overflow=tof8,underflow=flush"):
        check_sums(x.to(dtype), fmt)  # NaN and ±Inf are counted, not spread, without a scale
    x[3, 4], x[5, 60], x[9, 1] = 1e5, 4e4, -5e4
    for fmt in FORMATS:
        check_sums(x.to(dtype), fmt)
    # One format per dtype keeps the interpreter's time down; the three cover scaled, overflow
    # to Inf and the paper variant's flush.
    fmt = {torch.float32: "hif8:scale=none,overflow=inf", torch.bfloat16: "hif8", torch.float16: "hif8:variant=paper"}
    for case in corner_cases().values():
        c = as_dtype(case, dtype)
        if c is not None:
            check_sums(c, fmt[dtype])


@pytest.mark.parametrize("opts", ["overflow=inf", "overflow=tof8,out=fp32", "k=1e30,out=fp16", "out=input"])
def test_sums_options(opts):
    specials = torch.cat([_specials(), _binade_grid()])
    for fmt in (f"hif8:{opts}", f"hif8:scale=none,{opts}"):
        check_sums(specials, fmt)
        check_sums(heavy((20, 100), seed=11).to(torch.bfloat16), fmt)


def test_sums_clip_bound_in_output_dtype():
    """The clip bound G / s is rounded to the output dtype (as unit_bound rounds it): inputs
    between the float32 bound and the bf16/fp16 one are clipped by one and not the other."""
    x = torch.cat([torch.linspace(0.80, 0.84, 3000), torch.tensor([1.0, -1.0])])
    spec = kernels.parse("hif8:k=40000")  # amax 1 lands above 32768: the top 20% saturates
    assert 0 < thif8.sums(x, spec).clipped < x.numel()
    for out in ("bf16", "fp16", "fp32"):
        check_sums(x, f"hif8:k=40000,out={out}")
        check_sums(-x, f"hif8:k=40000,out={out},overflow=inf")


def test_sums_many_programs_merge():
    """Five programs: the host merge of means and M2 stays exact to float64 rounding."""
    x = heavy((64, 300), seed=5) + 1000.0  # a mean that dwarfs the spread
    check_sums(x, "hif8")
    check_sums(x, "hif8:scale=none")


def test_sums_cache_holds_the_amax():
    """The per-tensor amax is computed once per tensor: the cache gets it, later formats reuse it."""
    x = heavy((50, 90), seed=12).to(torch.bfloat16)
    cache: dict = {}
    check_sums(x, "hif8", cache=cache)
    assert list(cache) == [tcommon.AMAX_KEY]
    amax = cache[tcommon.AMAX_KEY]
    assert amax.dtype == torch.float32 and amax.item() == x.float().abs().amax().item()
    spec = kernels.parse("hif8:k=3.3,out=fp32")
    first = thif8.sums(x, spec, cache=cache)
    assert cache[tcommon.AMAX_KEY] is amax  # reused, not recomputed
    again = thif8.sums(x, spec, cache=cache)
    assert first.as_dict() == again.as_dict()
    check_sums(x, "hif8:k=3.3,out=fp32", cache=cache)
    # The cached value is what the kernels read: a different one changes the result.
    fake = {tcommon.AMAX_KEY: amax * 2}
    assert thif8.sums(x, spec, cache=fake).sum_d2 != first.sum_d2
    # A NaN amax is cached as NaN (it poisons every format on that tensor, as in the reference).
    y = x.clone()
    y[1, 2] = math.nan
    cache = {}
    check_sums(y, "hif8", cache=cache)
    assert math.isnan(cache[tcommon.AMAX_KEY].item())
    # The unscaled formats need no amax.
    cache = {}
    thif8.sums(x, kernels.parse("hif8:scale=none"), cache=cache)
    assert cache == {}


def test_sums_without_input_stats():
    x = heavy((30, 50), seed=13)
    spec = kernels.parse("hif8")
    full = thif8.sums(x, spec)
    lean = thif8.sums(x, spec, input_stats=False)
    assert lean.nx == 0 and lean.n == full.n and lean.sum_d2 == full.sum_d2
    assert_sums_equal(full, thif8.sums(x, spec, cache={}), "cache on/off", float(x.abs().max()))


# --------------------------------------------------------------------------- registration


def test_backend_selection():
    for fmt in FORMATS + ["hif8:out=input", "hif8:variant=paper,overflow=saturate"]:
        spec = kernels.parse(fmt)
        assert thif8.unsupported_reason(spec) is None, fmt
        assert backends.select("cpu", spec, "triton").name == "triton"
        assert backends.REGISTRY["triton"].check(torch.device("cuda"), spec) is None
    for fmt in ("hif8:emulate=seed", "hif8:scale=none,emulate=seed", "hif8:scale=none,underflow=flush,emulate=seed"):
        s = kernels.parse(fmt)
        assert isinstance(thif8.unsupported_reason(s), str), fmt
        assert isinstance(backends.REGISTRY["triton"].check(torch.device("cuda"), s), str), fmt
        with pytest.raises(backends.BackendError):
            backends.select("cpu", s, "triton")
        assert backends.select("cuda", s).name == "reference"
        with pytest.raises(ValueError):
            thif8.fake_quantize(torch.ones(4), s)
    assert isinstance(thif8.unsupported_reason(kernels.parse("mxfp8_e4m3")), str)
