"""The Triton MX kernels' non-default options (``kernels.triton.mx``) against the reference, bit
for bit, in Triton's interpreter: block=0 (one scale per row, short and long rows),
shared_exp=none, the auto ``minus_exp`` modes, and round=dither with the caller's generator.

Every check compares with ``kernels.fake_quantize(backend="reference")`` and the fused sums
with ``error_sums_ref`` of the reference output (see ``triton_support``).

The auto modes compare float64 block error sums whose rounding depends on the summation
order on near-ties (a block mixing errors ~1e5 and ~1e-12): the reference and the kernels both
add them in one fixed tree of adjacent pairs (``reference.mx.BLOCK_SUM_ORDER``).
"""

from __future__ import annotations

import triton_support  # first: it sets TRITON_INTERPRET=1 before triton loads

# isort: split

import math  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from corner_cases import as_dtype, corner_cases  # noqa: E402
from golden import case_files, load, needs_golden  # noqa: E402
from triton_support import DTYPES, SKIP, assert_same, assert_sums_equal, check, check_sums, heavy  # noqa: E402

import kernels  # noqa: E402
from kernels import backends  # noqa: E402
from kernels.ranges import unit_bound  # noqa: E402
from kernels.stats import error_sums_ref  # noqa: E402

if SKIP:
    pytest.skip(SKIP, allow_module_level=True)

from kernels.triton import mx as tmx  # noqa: E402


@pytest.fixture(autouse=True)
def _quiet_interpreter():
    w = triton_support.quiet()
    yield
    w.__exit__(None, None, None)


#: Each new option alone, and with the options it interacts with (rules, rounding, flush, range).
OPTIONS = [
    "block=0",
    "shared_exp=none",
    "minus_exp=auto",
    "minus_exp=auto-2",
    "minus_exp=auto-reverse",
    "minus_exp=auto-fix",
    "block=0,minus_exp=auto",
    "block=0,scale=rceil,round=even",
    "shared_exp=none,minus_exp=auto-2",
    "shared_exp=none,scale=carry,flush_fp32_subnorms=true",
    "minus_exp=auto,round=floor,scale_bits=4",
    "minus_exp=auto-reverse,flush_fp32_subnorms=true,block=7",
    "minus_exp=auto-fix,scale=even,round=even",
]


@pytest.mark.parametrize("opts", OPTIONS)
def test_random_matches_reference(opts):
    """Ragged along both axes, both axes blocked, every dtype; the fused sums on one of them."""
    for i, elem in enumerate(("mxfp8_e4m3", "mxfp4_e2m1", "mxint8")):
        dtype = DTYPES[i]
        x = heavy((37, 45), seed=len(opts) + i).to(dtype)
        for axis in (-1, 0):
            check(x, f"{elem}:{opts},axis={axis}")
        check_sums(x, f"{elem}:{opts},axis={i % 2 - 1}")
    # Subnormal and huge blocks: the flush rule, the scale range and the zero-block exponent.
    cases = corner_cases()
    for name in ("f32_subnormals", "subnormal_amax_rows", "huge"):
        check(cases[name], f"mxfp6_e2m3:{opts}")


#: The corner cases cycle through these (and through the elements): each case runs once per dtype.
CORNER_OPTS = ["block=0", "shared_exp=none", "minus_exp=auto", "minus_exp=auto-fix,block=0", "minus_exp=auto-reverse"]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_corner_cases_match_reference(dtype):
    """Zeros, -0, subnormals, huge values, ties, NaN/Inf in a block, ragged tails, 1-D."""
    for i, case in enumerate(corner_cases().values()):
        x = as_dtype(case, dtype)
        if x is None:
            continue
        elem = ("mxfp6_e3m2", "mxfp8_e5m2", "mxint8", "mxfp4_e2m1")[i % 4]
        fmt = f"{elem}:{CORNER_OPTS[(i + DTYPES.index(dtype)) % len(CORNER_OPTS)]}"
        check(x, fmt)
        check_sums(x, fmt)


def test_auto_modes_on_exhaustive_binades():
    """Every significand step 2^-10 of the amax at a few binades (subnormal, scale edges): the
    two candidates' errors come close to ties, where a wrong sum order or rounding would flip d."""
    m = torch.arange(1024, dtype=torch.float32) / 1024 + 1
    x = torch.cat([m * 2.0**e for e in (-130, 0, 7, 120)]).reshape(-1, 1) * torch.tensor([1.0, 0.3, -0.7, 0.01])
    for elem, mode in (("mxfp4_e2m1", "auto"), ("mxfp6_e2m3", "auto-2"), ("mxint8", "auto-reverse")):
        check(x, f"{elem}:block=4,minus_exp={mode}")
        check(x, f"{elem}:shared_exp=none,minus_exp={mode}")


def test_auto_near_tie_decided_in_pair_order():
    """A block whose two candidates' error sums differ only below the rounding of its ~1e5 total:
    torch's own reduction and ``tl.sum`` split it differently; in pair order both sides agree."""
    x = heavy((33, 70), seed=100).to(torch.float16)
    check(x, "mxfp8_e5m2:minus_exp=auto")
    check_sums(x, "mxfp8_e5m2:minus_exp=auto")


def test_block0_long_rows_two_passes_and_cache():
    """Rows longer than MAX_BLOCK: the per-row amax pass (cached) and the auto offsets' chunk sums."""
    n = tmx.MAX_BLOCK + 77
    x = heavy((3, n), seed=9)
    x[1, 5], x[2, n - 1] = -math.nan, -math.inf  # a NaN row (sign bit set), an Inf row
    for fmt in ("mxfp8_e4m3:block=0", "mxfp4_e2m1:block=0,minus_exp=auto", "mxint8:block=0,minus_exp=auto-fix"):
        check(x, fmt)
    cache: dict = {}
    check_sums(x, "mxfp4_e2m1:block=0,minus_exp=auto-2", cache=cache)
    assert list(cache) == [("absmax_axis", 1)]
    amax = cache[("absmax_axis", 1)]
    first = tmx.sums(x, kernels.parse("mxfp8_e5m2:block=0"), cache=cache)
    assert cache[("absmax_axis", 1)] is amax  # the second format reused it
    # A stale entry would change the result: the cached amax is really what the kernel reads.
    again = tmx.sums(x, kernels.parse("mxfp8_e5m2:block=0"), cache=cache)
    assert again.as_dict() == first.as_dict()
    assert tmx.sums(x, kernels.parse("mxfp8_e5m2:block=0"), cache={("absmax_axis", 1): amax * 4}).as_dict() != (
        first.as_dict()
    )
    # Along axis 0 (a bf16 column), its own entry.
    y = x.t().contiguous().to(torch.bfloat16)
    check_sums(y, "mxfp6_e2m3:block=0,axis=0", cache=cache)
    assert ("absmax_axis", 0) in cache and ("contiguous_along", 0) in cache  # the moved copy too


@pytest.mark.parametrize(
    "opts", ["round=dither", "round=dither,block=16,axis=0", "round=dither,block=0", "round=dither,shared_exp=none"]
)
def test_dither_with_the_callers_generator(opts):
    """The reference's own draws, taken in its order (over the zero-padded blocked tensor)."""
    for i, dtype in enumerate(DTYPES):
        x = heavy((37, 45), seed=i).to(dtype)
        spec = kernels.parse(f"mxfp4_e2m1:{opts}")
        want = kernels.fake_quantize(x, spec, backend="reference", generator=torch.Generator().manual_seed(i))
        got = kernels.fake_quantize(x, spec, backend="triton", generator=torch.Generator().manual_seed(i))
        assert_same(got, want, f"{spec} {dtype}")
        sums = tmx.mx_sums(x, spec, generator=torch.Generator().manual_seed(i))
        scale = float(x[torch.isfinite(x)].double().abs().max())
        assert_sums_equal(sums, error_sums_ref(x, want, unit_bound(x, spec)), f"{spec} {dtype}", scale)
    # Another seed draws otherwise: the draws are really used.
    other = kernels.fake_quantize(x, spec, backend="triton", generator=torch.Generator().manual_seed(99))
    assert not torch.equal(other, got)


@needs_golden
def test_golden_inputs_with_the_new_options():
    """The golden MX inputs (real tensors, every dtype they come in) through the new options."""
    ran = 0
    for stem, elem in (("mxfp4_e2m1", "mxfp4_e2m1"), ("mxint8", "mxint8"), ("mxfp8_e4m3_axis-2", "mxfp8_e4m3")):
        for path in case_files("mx", stem)[:4]:
            x = load(path)[0]["input"]
            if x.dtype not in DTYPES or x.numel() > 20000:
                continue
            for opts in ("block=0", "shared_exp=none", "minus_exp=auto", "minus_exp=auto-fix,block=0"):
                check(x, f"{elem}:{opts}")
            ran += 1
    assert ran >= 6, ran


def test_backend_selection():
    """The new options select the backend by name; what is still refused says why and fails loudly."""
    for fmt in (
        "mxfp8_e4m3:block=0",
        "mxfp4_e2m1:shared_exp=none",
        "mxint8:minus_exp=auto-reverse",
        "mxfp8_e4m3:round=dither",
    ):
        assert backends.select("cpu", kernels.parse(fmt), "triton").name == "triton", fmt
    for fmt in ("mxfp8_e4m3:emulate=seed", "mxfp8_e4m3:block=8193"):
        spec = kernels.parse(fmt)
        assert isinstance(tmx.unsupported_reason(spec), str), fmt
        with pytest.raises(backends.BackendError):
            backends.select("cpu", spec, "triton")
