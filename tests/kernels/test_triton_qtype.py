"""The Triton QType kernels (``kernels.triton.qtype``) against the reference, bit for bit, in
Triton's interpreter: presets and parametric names (one- and two-level, carry, ``off``, E = 0),
both axes, every dtype, the named corner cases, the golden vectors and the fused statistics.
"""

from __future__ import annotations

import triton_support  # first: it sets TRITON_INTERPRET=1 before triton loads

# isort: split

import math  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from corner_cases import as_dtype, corner_cases  # noqa: E402
from golden import needs_golden  # noqa: E402
from triton_support import DTYPES, SKIP, assert_same, check, check_golden, check_sums, heavy  # noqa: E402

import kernels  # noqa: E402
from kernels import backends  # noqa: E402

if SKIP:
    pytest.skip(SKIP, allow_module_level=True)

from kernels.triton import qtype as tq  # noqa: E402

#: Presets, one- and two-level names, non-power-of-two blocks, ``off``, E = 0 (HiFX-like).
FORMATS = [
    "mxfp4",
    "mxfp6e3m2",
    "mxfp8e4m3",
    "mxfp8e5m2",
    "e2m1k8b32",
    "e4m3K8k8B1b32c",
    "e2m1K4k4B8b4c",
    "e3m2K2k3B3b5coff5",
    "e0m3K1k4B1b64Coff38",
    "e0m7k8b16c",
    "e0m4K2k2B4b6",
]


@pytest.fixture(autouse=True)
def _quiet_interpreter():
    w = triton_support.quiet()
    yield
    w.__exit__(None, None, None)


# --------------------------------------------------------------------------- bit-exactness


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("fmt", FORMATS)
def test_random_matches_reference(fmt, dtype):
    x = heavy((37, 45), seed=len(fmt)).to(dtype)  # ragged along both axes
    check(x, fmt)
    check(x, f"{fmt}:axis=0")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("fmt", ["mxfp4", "e2m1K4k4B8b4c", "e0m3K1k4B1b64Coff38"])
def test_corner_cases_match_reference(fmt, dtype):
    for name, case in corner_cases().items():
        x = as_dtype(case, dtype)
        if x is not None:
            check(x, fmt)
            if name in ("ties", "nan_in_block", "inf_in_block"):
                check(x, f"{fmt}:axis=0")


#: Every field of the grammar away from the presets: carry on/off, K, B (non-powers of two too),
#: b = 1 and long non-power-of-two blocks, windows moved by ``off`` (down to flushing every block),
#: E = 8 (tiny blocks below 2^-127 flush, others do not), E = 9 (every block flushes), wide M.
OPTIONS = [
    "e4m3k8b32",
    "e5m2k4b8c",
    "e3m2k1b16",
    "e2m3K2k2B3b7c",
    "e4m3K1k2B8b2",
    "e2m1k8b1c",
    "e4m3k8b100",
    "e4m3K0k8B1b32off0",
    "e4m3K0k8B1b32coff200",
    "e4m3K0k8B1b32off400",
    "e8m3k8b16c",
    "e9m2k8b8",
    "e6m10k5b12",
    "e0m1k8b4",
    "e0m2K1k3B2b3c",
    "e0m12k8b16c",
    "e0m23k8b8",
    "e0m5K2k3B5b4coff20",
]


@pytest.mark.parametrize("fmt", OPTIONS)
def test_options_match_reference(fmt):
    cases = corner_cases()
    check(heavy((6, 5, 70), seed=3), fmt)
    check(heavy((6, 5, 70), seed=4).to(torch.bfloat16) * 2.0**-60, f"{fmt}:axis=1")
    for name in ("f32_subnormals", "huge", "powers_of_two_pm_ulp", "ties", "nan_in_block"):
        check(cases[name], fmt)


def test_shapes():
    """1-D, 3-D along every axis, a non-contiguous input, rows shorter than one block, empty."""
    x = heavy((5, 7, 66), seed=9)
    for fmt in ("e2m1K4k4B8b4c", "e0m3K1k4B1b64Coff38"):
        check(x[0, 0], fmt)
        for axis in (0, 1, 2, -1):
            check(x, f"{fmt}:axis={axis}")
        check(x.transpose(0, 2), fmt)
        check(x[:, :, :3], fmt)
    for x in (torch.zeros(0, 32), torch.zeros(4, 0)):
        check(x, "mxfp8e4m3")


def test_carry_and_window_edges_on_exhaustive_binades():
    """Every significand pattern step 2^-10 at a few binades as block maxima (the sqrt 2 carry
    threshold, 9.6e-7 added below ~2^-20), each with smaller elements beside it."""
    m = torch.arange(1024, dtype=torch.float32) / 1024 + 1  # [1, 2)
    x = torch.cat([m * 2.0**e for e in (-130, -21, -1, 0, 7, 100)]).reshape(-1, 1) * torch.tensor(
        [1.0, 0.3, -0.7, 0.01]
    )
    for fmt in ("e2m1k8b4c", "e3m2k8b4", "e4m3K2k2B2b2c", "e0m3k8b4c", "e0m4K1k4B2b2"):
        check(x, fmt)
    # Block maxima at and one ulp around SQRT2_UP, the carry's bump point, beside elements a step
    # of the grid's bottom apart (where a scale one binade off shows); eps shifts the 2^0 binade.
    s = torch.tensor(1.4142135, dtype=torch.float32)
    near = torch.stack([torch.nextafter(s, torch.tensor(0.0)), s, torch.nextafter(s, torch.tensor(2.0))])
    near = torch.cat([near, torch.nextafter(near[-1:], torch.tensor(2.0))])
    col = torch.tensor([1.0, -0.5, 2.0**-2, 2.0**-3, 2.0**-17, 2.0**-18, 2.0**-19, -(2.0**-20)])
    x = (near[:, None] * torch.tensor([1.0, 2.0**10, 2.0**40])).reshape(-1, 1) * col
    for fmt in ("e2m1k8b8c", "e4m3k8b8c", "e3m2K1k2B2b4c"):
        check(x, fmt)
    # Maxima m around 2^j - 9.6e-7, where fl32(m + 9.6e-7) steps into the next binade.
    eps = torch.tensor(tq.EPS32, dtype=torch.float32)
    m = torch.cat(
        [
            torch.tensor(2.0**j, dtype=torch.float32) - eps + torch.arange(-3, 4) * 2.0 ** (j - 24)
            for j in range(-19, -15)
        ]
    )
    x = m[:, None] * col
    for fmt in ("e2m1k8b8", "e4m3k8b8c", "e0m3k8b8c"):
        check(x, fmt)


def test_signs_zeros_nan_inf():
    """±0 stay distinct (E > 0), E = 0 flushes to +0, NaN spreads over the outer block, Inf saturates."""
    x = torch.tensor(
        [[-0.0, 0.0, -1e-45, 1e-45, -3.0, 2.0, -0.0, 1.0], [math.inf, -1.0, 0.0, -0.0, 1.0, math.nan, 0.0, -2.0]]
    )
    for fmt in ("e2m1k8b4", "e2m1K1k2B2b2c", "e0m3k8b4", "e0m3K1k4B2b2c"):
        for dtype in DTYPES:
            check(x.to(dtype), fmt)
        check_sums(x, fmt)


@needs_golden
def test_golden_contract_qtype_entries():
    """The contract's entries whose format is a QType the kernels cover (emulate=exact: the
    ``expected_exact`` vectors), bitwise on values with NaN == NaN."""
    ran = len(check_golden(lambda spec: spec.family == "qtype" and tq.unsupported_reason(spec) is None))
    assert ran >= 30, ran


# --------------------------------------------------------------------------- fused sums


SUMS_FORMATS = ["mxfp4", "mxfp8e5m2", "e2m1K4k4B8b4c", "e3m2K2k3B3b5coff5", "e0m3K1k4B1b64Coff38"]


@pytest.mark.parametrize("fmt", SUMS_FORMATS)
def test_sums_match_reference(fmt):
    x = heavy((40, 77), seed=7)
    x[3, 4], x[5, 60], x[9, 1], x[30, 76] = math.nan, math.inf, -math.inf, 1e30
    for dtype in DTYPES:
        check_sums(x.to(dtype), fmt)
        check_sums(x.to(dtype), f"{fmt}:axis=0")
    # The corner cases in one dtype per format, each dtype over the formats.
    dtype = DTYPES[SUMS_FORMATS.index(fmt) % len(DTYPES)]
    for name in ("neg_zeros", "f32_subnormals", "huge", "ties", "nan_in_block", "inf_in_block", "ragged_3d"):
        c = as_dtype(corner_cases()[name], dtype)
        if c is not None:
            check_sums(c, fmt)


@pytest.mark.parametrize("fmt", ["e4m3K0k8B1b32off400", "e8m3k8b16c", "e0m23k8b8", "e2m1k8b1c", "e4m3k8b100"])
def test_sums_options(fmt):
    """Flushed blocks (bound 0), all-flushed tensors, wide integer mantissas, b = 1, long blocks."""
    cases = corner_cases()
    for name in ("f32_subnormals", "tiny", "huge", "nan_in_block", "outliers"):
        check_sums(cases[name], fmt)
    check_sums(heavy((20, 100), seed=11).to(torch.bfloat16), fmt)


def test_sums_many_programs_merge():
    """Many programs (blocks of 1): the host merge of means and M2 stays exact to float64 rounding."""
    x = heavy((64, 300), seed=5) + 1000.0  # a mean that dwarfs the spread
    check_sums(x, "e4m3k8b1")


def test_sums_cache_reused():
    """The moved copy of a non-last axis is kept in the cache and read by the next format."""
    x = heavy((40, 70), seed=13)
    cache: dict = {}
    check_sums(x, "mxfp8e4m3:axis=0", cache=cache)
    assert list(cache) == [("contiguous_along", 0)]
    kept = cache[("contiguous_along", 0)]
    first = tq.sums(x, kernels.parse("e2m1K4k4B8b4c:axis=0"), cache=cache)
    again = tq.sums(x, kernels.parse("e2m1K4k4B8b4c:axis=0"), cache=cache)
    assert first.as_dict() == again.as_dict()
    assert cache[("contiguous_along", 0)] is kept and len(cache) == 1
    check_sums(x, "e0m3K1k4B1b64Coff38:axis=0", cache=cache)
    # Along the last axis there is nothing to keep: x itself is read.
    check_sums(x, "mxfp4", cache=cache)
    assert len(cache) == 1


def test_sums_equal_stats_of_the_output():
    """The fused counts agree with the triton output itself (not only with the reference)."""
    x = heavy((30, 64), seed=17)
    x[0, 0] = math.nan
    spec = kernels.parse("e2m1K4k4B8b4c")
    q = tq.fake_quantize(x, spec)
    s = tq.sums(x, spec)
    assert s.nan_out == int(torch.isnan(q).sum()) == 32  # the NaN's outer block of 8·4
    assert s.n == int((torch.isfinite(x) & torch.isfinite(q)).sum())
    d = (q.double() - x.double())[torch.isfinite(q) & torch.isfinite(x)]
    assert math.isclose(s.sum_d2, float((d * d).sum()), rel_tol=1e-12)


# --------------------------------------------------------------------------- registration


def test_backend_selection():
    for fmt in ("mxfp4", "e4m3K8k8B1b32c", "e0m3K1k4B1b64Coff38"):
        spec = kernels.parse(fmt)
        assert backends.select("cpu", spec, "triton").name == "triton"
        assert backends.REGISTRY["triton"].check(torch.device("cuda"), spec) is None
        x = heavy((4, 64), seed=1)
        assert_same(kernels.fake_quantize(x, spec, backend="triton"), kernels.fake_quantize(x, spec), fmt)
    # Unsupported: a reason, so auto falls back and an explicit request fails loudly.
    for fmt in (
        "mxfp4:emulate=seed",
        "e2m1K4k4B8b4c:emulate=seed",
        "e0m1k9b32c",  # an E = 0 window up to 2^255
        "e0m24k8b32",  # integer mantissas wider than float32's
        "e2m1k8b9000",  # outer blocks over MAX_BLOCK
        "e2m1K4k4B64b256",
    ):
        s = kernels.parse(fmt)
        why = backends.REGISTRY["triton"].check(torch.device("cuda"), s)
        assert isinstance(why, str) and why == tq.unsupported_reason(s), fmt
        with pytest.raises(backends.BackendError):
            backends.select("cpu", s, "triton")
        assert backends.select("cuda", s).name == "reference"
    with pytest.raises(ValueError):
        tq.fake_quantize(torch.ones(4, 32), kernels.parse("mxfp4:emulate=seed"))
    with pytest.raises(TypeError):
        tq.fake_quantize(torch.ones(4, 32, dtype=torch.float64), kernels.parse("mxfp4"))


def test_unsupported_reasons_are_real():
    """What the kernels refuse, and nothing the module docstring promises."""
    assert tq.unsupported_reason(kernels.parse("mxfp8_e4m3")) is not None  # another family
    for fmt in OPTIONS + FORMATS:
        assert tq.unsupported_reason(kernels.parse(fmt)) is None, fmt
