"""The Triton kernels of ``kernels.triton.scaled`` (fp8tensor, int8sym, cast) against the reference,
bit for bit, in Triton's interpreter; the fused statistics against ``error_sums_ref``.

``triton_support`` sets ``TRITON_INTERPRET=1`` before triton loads, so the kernels run on CPU
tensors. The CUDA test runs in a subprocess without the variable, so it compiles for the GPU.
"""

from __future__ import annotations

import triton_support  # first: it sets TRITON_INTERPRET=1 before triton loads

# isort: split

import math  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from corner_cases import as_dtype, corner_cases  # noqa: E402
from golden import needs_golden  # noqa: E402
from triton_support import (  # noqa: E402
    DTYPES,
    SKIP,
    check,
    check_golden,
    check_sums,
    divide_by_reciprocal,
    heavy,
    split_divide,
)

import kernels  # noqa: E402
from kernels import backends  # noqa: E402
from kernels.ranges import unit_bound  # noqa: E402
from kernels.stats import error_sums_ref  # noqa: E402

if SKIP:
    pytest.skip(SKIP, allow_module_level=True)

from kernels.triton import scaled  # noqa: E402

FORMATS = ["fp8_e4m3", "fp8_e5m2", "int8sym", "int8sym:axis=0", "fp16", "bf16", "fp32"]
SEED = [f"{f.split(':')[0]}:emulate=seed" for f in FORMATS if f != "int8sym:axis=0"] + ["int8sym:axis=0,emulate=seed"]


@pytest.fixture(autouse=True)
def _quiet_interpreter():
    w = triton_support.quiet()
    yield
    w.__exit__(None, None, None)


# --------------------------------------------------------------------------- bit-exactness


@pytest.mark.parametrize("fmt", FORMATS + SEED)
def test_random_matches_reference(fmt):
    for i, dtype in enumerate(DTYPES):
        x = heavy((37, 45), seed=len(fmt) + i).to(dtype)  # ragged along both axes
        check(x, fmt)
        if i == len(fmt) % 3:  # the fused sums cost ~10x more in the interpreter: one dtype each
            check_sums(x, fmt)


CORNER_FORMATS = [
    "fp8_e4m3",
    "fp8_e5m2:emulate=seed",
    "int8sym",
    "int8sym:axis=0,emulate=seed",
    "fp16",
    "bf16:emulate=seed",
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("fmt", CORNER_FORMATS)
def test_corner_cases_match_reference(fmt, dtype):
    for case in corner_cases().values():
        x = as_dtype(case, dtype)
        if x is not None:
            check(x, fmt)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("fmt", ["fp8_e5m2", "int8sym:emulate=seed", "int8sym:axis=0", "fp16"])
def test_corner_cases_sums(fmt, dtype):
    cases = corner_cases()
    for name in ("zeros", "subnormal_amax_rows", "huge", "inf_in_block"):
        x = as_dtype(cases[name], dtype)
        if x is not None:
            check_sums(x, fmt)


def test_other_axes_shapes_and_layouts():
    """int8sym along every axis of a 3-D tensor (a middle axis uses the (outer·L, inner) matrix),
    rows wider than one tile row, 1-D and 0-d inputs, a transposed (non-contiguous) input."""
    x3 = heavy((3, 5, 70), seed=2)
    for axis in (0, 1, 2, -2):
        for emu in ("exact", "seed"):
            check(x3.to(torch.bfloat16), f"int8sym:axis={axis},emulate={emu}")
    cache: dict = {}
    check_sums(x3, "int8sym:axis=1", cache=cache)  # the row amax in kernels.triton.mx's layout:
    assert torch.equal(cache[("absmax_axis", 1)], x3.movedim(1, -1).abs().amax(-1).reshape(-1))
    # Rows longer than a tile: int8sym's fake quantization holds them whole (one 8192-wide tile
    # per row, 16 warps), its statistics take 5 tiles per row and torch's row amax.
    wide = heavy((2, 5000), seed=4)
    wide[1, 4500] = 1e6  # the row amax in the last tile of the row
    cache = {}
    for fmt in ("int8sym", "fp8_e4m3", "fp16"):
        check(wide, fmt)
        check_sums(wide, fmt, cache=cache)
    assert torch.equal(cache[("absmax_axis", 1)], wide.abs().amax(1))
    longest = heavy((2, scaled._MAX_ROW + 300), seed=5)  # past _MAX_ROW: split rows, torch's amax
    longest[0, -3] = -3e5
    check(longest.to(torch.bfloat16), "int8sym")
    one_d = heavy((1000,), seed=6)
    for fmt in ("int8sym", "int8sym:axis=0", "fp8_e5m2", "bf16"):
        check(one_d.to(torch.float16), fmt)
    for fmt in ("fp8_e4m3", "fp8_e4m3:emulate=seed", "fp16", "bf16:emulate=seed"):
        check(torch.tensor(-3.3), fmt)  # 0-d
    xt = heavy((40, 33), seed=8).t()
    for fmt in ("int8sym", "int8sym:axis=0", "fp8_e4m3", "fp16"):
        check(xt, fmt)


def test_fp8_scale_over_many_amax():
    """The in-kernel float64 scale (exact and seed's + 2^-23) across amax from the guard to
    float32 max: each tensor holds its amax, values just below it and a tie-prone spread."""
    g = torch.Generator().manual_seed(9)
    amaxes = [2.0**-23, 2.0**-23 * (1 - 2**-24), 1.0000001e-7, 3e-5, 1.0, 1 + 2**-23, 447.99997, 448.0, 61439.0]
    amaxes += [57344.0, 1e9, 2.0**31 * (1 + 2**-22), 1e20, 3.4e38] + (
        torch.rand(8, generator=g) * 60 - 30
    ).exp2().tolist()
    for a in amaxes:
        x = torch.tensor([a, -a * 0.999999, a / 3, a / 1000, -a / 4096, 0.0, -0.0], dtype=torch.float32)
        for fmt in ("fp8_e4m3", "fp8_e5m2", "fp8_e4m3:emulate=seed", "fp8_e5m2:emulate=seed"):
            check(x, fmt)
    for a in (1.0, 448.0, 1e9):
        check_sums(torch.tensor([a, -a / 3, a / 7]), "fp8_e4m3:emulate=seed")


def test_int8sym_seed_all_zero_and_underflowing_rows():
    """Seed mode keeps the seed's NaN rows (0/0) and its arithmetic in bf16/fp16; exact mode gives +0."""
    x = torch.tensor([[0.0, -0.0, 0.0], [1e-45, -0.0, 3e-45], [1.0, -2.5, 0.5]])
    for dtype in DTYPES:
        for fmt in ("int8sym", "int8sym:emulate=seed", "int8sym:axis=0,emulate=seed"):
            check(x.to(dtype), fmt)
            check_sums(x.to(dtype), fmt)


def test_int8sym_persistent_fake_quantization(monkeypatch):
    """The persistent, pipelined int8sym fake quantization (``_common.fq_loop``: on the GPU for
    large bf16/fp16 tensors of whole rows), forced here on 3 programs of 2 stages: each program's
    rows, however many, bit for bit."""
    calls = []

    def three(family, x, tiles):
        calls.append(tiles)
        return 3, 2, 4

    monkeypatch.setattr(scaled, "fq_loop", three)
    for i, (rows, cols) in enumerate(((1, 64), (7, 100), (10, 1000), (16, 2048))):
        x = heavy((rows, cols), seed=40 + i)
        x[0, 1] = 0.0
        if rows > 4:
            x[3] = 0.0  # a zero row: the IEEE path inside the loop
            x[4, 2] = math.nan
        for dtype in DTYPES:
            check(x.to(dtype), "int8sym")
    assert calls


def test_int8sym_reciprocal_path_and_its_bounds():
    """Exact int8sym divides through the row's reciprocal where every step of the tile lies in
    [2^-100, 2^100] and through the IEEE division elsewhere: rows whose step sits just inside
    and just outside those bounds, zero, subnormal, Inf and NaN rows, quotients next to every
    half-integer, along both axes, bit for bit."""
    g = torch.Generator().manual_seed(5)
    lo, hi = 2.0**-100, 2.0**100
    rows = []
    for step in (lo, lo * (1 - 2**-23), lo * (1 + 2**-23), hi, hi * (1 - 2**-23), hi * (1 + 2**-23), 1 / 127, 3e-39):
        amax = torch.tensor(step, dtype=torch.float64) * 127
        k = torch.arange(0, 128, dtype=torch.float64) + 0.5  # half-integers and their neighbours
        row = torch.cat([k, k * (1 - 2**-22), k * (1 + 2**-22), torch.rand(61, generator=g, dtype=torch.float64) * 127])
        rows.append(torch.cat([(row * amax / 127).clamp(max=amax), amax.reshape(1)]))
    x = torch.stack(rows).float()
    x[:, ::3] *= -1
    x = torch.cat([x, torch.zeros(1, x.shape[1]), torch.full((1, x.shape[1]), 1e-44)])
    bad = x[:4].clone()
    bad[0, 5], bad[1, 7], bad[2, 1], bad[3, 9] = math.inf, math.nan, -math.inf, math.nan
    x = torch.cat([x, bad])
    for dtype in DTYPES:
        for fmt in ("int8sym", "int8sym:axis=0"):
            check(x.to(dtype), fmt)
    check_sums(x, "int8sym")
    # Exact ties: step = m·2^e of a few bits, amax = 127·step and a = (k + 1/2)·step, all exact in
    # float32, so a / step is the half-integer itself while fl(a·fl(1/step)) can miss it by an ulp.
    ties = []
    half = torch.arange(0, 127, dtype=torch.float64) + 0.5
    for m in (3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27):
        for e in (-90, -20, -3, 0, 7, 60):
            step = m * 2.0**e
            ties.append(torch.cat([half * step, torch.tensor([127 * step], dtype=torch.float64)]))
    ties = torch.stack(ties).float()
    assert torch.equal((ties[:, -1:] / 127).double() * 127, ties[:, -1:].double())  # the steps are exact
    check(ties, "int8sym")
    check(-ties, "int8sym")
    check(ties.T.contiguous(), "int8sym:axis=0")


def _markstein_pairs(dtype: torch.dtype, every: int):
    """(a, step) in batches of about 2^22 pairs: for every ``every``-th positive finite ``dtype``
    value as a row amax with step = fl32(amax / 127) in [2^-100, 2^100], every positive finite
    value a <= amax."""
    top = 0x7C00 if dtype == torch.float16 else 0x7F80
    vals = torch.arange(1, top, dtype=torch.int32).to(torch.int16).view(dtype).float().sort().values
    batch_a, batch_s, size = [], [], 0
    for amax in vals[::every]:
        step = amax / 127
        if 2.0**-100 <= float(step) <= 2.0**100:
            a = vals[: int(torch.searchsorted(vals, amax, right=True))]
            batch_a.append(a)
            batch_s.append(torch.full_like(a, float(step)))
            size += a.numel()
            if size >= 1 << 22:
                yield torch.cat(batch_a), torch.cat(batch_s)
                batch_a, batch_s, size = [], [], 0
    if batch_a:
        yield torch.cat(batch_a), torch.cat(batch_s)


@pytest.mark.parametrize("every", [pytest.param(1, marks=pytest.mark.slow), 61])
def test_int8sym_reciprocal_quotient_rounds_as_the_ieee_quotient(every):
    """The reciprocal path's quotient (``_common.div_by_reciprocal``, run in the interpreter)
    against IEEE a / step, for bfloat16 and float16 values a and amax (exhaustively with
    ``-m slow``: 4.4e8 and 5.0e8 pairs): int8sym's rounded quotient rne(min(y, 127)) is the same
    for every pair, and y itself is bit for bit the same but for some bf16 quotients under 2^-14
    (a or the quotient at the bottom of float32's range, where the residual loses bits), which
    round to 0 either way."""
    for dtype in (torch.bfloat16, torch.float16):
        for a, step in _markstein_pairs(dtype, every):
            y = divide_by_reciprocal(a, step)
            ieee = a / step
            assert torch.equal(torch.round(y.clamp(max=127)), torch.round(ieee.clamp(max=127))), dtype
            differ = y.view(torch.int32) != ieee.view(torch.int32)
            assert float(torch.cat([ieee[differ], torch.zeros(1)]).max()) < 2.0**-14, dtype
            if dtype == torch.float16:
                assert not differ.any()


@pytest.mark.parametrize("every", [pytest.param(1, marks=pytest.mark.slow), 61])
def test_short_dividends_through_the_split_divisor_equal_the_ieee_quotients(every):
    """fp8tensor's g / scale and hif8's q / s (``_common.split_divisor`` and
    ``div_by_reciprocal``, run in the interpreter: a / m through fl(1/m), then times 2^-e):
    dividends with at most 3 fraction bits (every E4M3, E5M2 and HiF8 value) against every
    float32 divisor significand m (every ``every``-th; all 2^23 with ``-m slow``), bit for bit
    with the IEEE quotient; then across the kernels' range (dividends 2^-22 to 2^16, divisors
    2^-126 to 2^104: normal quotients, or Inf past float32's top as the IEEE ones), sampled."""
    m = (8 + torch.arange(8, dtype=torch.float32)) / 8  # 1, 1.125, ..., 1.875
    d = (torch.arange(0x3F800000, 0x40000000, every, dtype=torch.int64).to(torch.int32)).view(torch.float32)
    for sign in (1.0, -1.0):
        a = (sign * m)[:, None].expand(8, d.numel()).reshape(-1)
        dd = d[None, :].expand(8, d.numel()).reshape(-1)
        got, want = split_divide(a, dd), a / dd
        assert torch.equal(got.view(torch.int32), want.view(torch.int32)), sign
    g = torch.Generator().manual_seed(12)
    dv = d[torch.randint(0, d.numel(), (4096,), generator=g)]
    for ea, ed in ((-22, 103), (-22, -126), (16, -126), (15, -112), (16, 103), (-9, 32), (15, -1), (0, 0)):
        a = -m.repeat(512) * 2.0**ea
        dd = dv * 2.0**ed
        got, want = split_divide(a, dd), a / dd
        assert torch.equal(got.view(torch.int32), want.view(torch.int32)), (ea, ed)
    assert math.isinf(float(split_divide(torch.tensor([1.5 * 2.0**16]), torch.tensor([2.0**-112])).item()))
    assert split_divide(torch.tensor([0.0]), torch.tensor([3.0])).item() == 0.0


def test_cast_overflow_and_double_rounding():
    """fp16 overflow at 65520 (not 65519.99), subnormals, and bf16 -> fp16 -> bf16 double rounding."""
    x = torch.tensor([65504.0, 65519.99, 65520.0, -7e4, 2.0**-24, 2.0**-25, 3 * 2.0**-26, 1 + 2**-11, 1 + 3 * 2**-11])
    for fmt in ("fp16", "bf16", "fp16:emulate=seed", "bf16:emulate=seed"):
        for dtype in DTYPES:
            y = x.to(dtype)
            check(y, fmt)
            check_sums(y, fmt)
    x64 = torch.randn(50, dtype=torch.float64)  # float64: deferred to the reference
    assert torch.equal(kernels.fake_quantize(x64, "fp16", backend="triton"), x64.half().double())


def test_empty_inputs():
    for fmt in ("int8sym", "int8sym:axis=0", "fp16"):  # (the fp8 reference refuses empty tensors)
        for x in (torch.zeros(0, 32), torch.zeros(4, 0)):
            check(x, fmt)
            check_sums(x, fmt)


@needs_golden
def test_golden_contract_entries():
    """Every contract entry of the three families (one test: the interpreter is slow); the
    backend must accept every one of them (an unsupported spec raises)."""
    ran = len(check_golden(lambda spec: spec.family in scaled.FAMILIES))
    assert ran >= 72, ran


# --------------------------------------------------------------------------- fused sums and cache


def test_sums_many_programs_merge():
    """Many programs: the host merge of means and M2 stays exact to float64 rounding."""
    x = heavy((64, 300), seed=5) + 1000.0  # a mean that dwarfs the spread
    for fmt in ("fp8_e4m3", "int8sym:axis=0", "bf16"):
        check_sums(x, fmt)


def test_cache_is_filled_and_reused():
    x = heavy((30, 70), seed=12)
    cache: dict = {}
    for fmt in ("fp8_e4m3", "fp8_e5m2:emulate=seed", "int8sym", "int8sym:axis=0", "fp16"):
        check_sums(x, fmt, cache=cache)
        first = scaled.sums(x, kernels.parse(fmt), cache=cache)
        assert scaled.sums(x, kernels.parse(fmt), cache=cache) == first, fmt
    amax = x.abs().amax()
    assert torch.equal(cache[("absmax",)], amax)  # 0-dim float32, as kernels.triton.hif8 / nvfp keep it
    assert ("absmax_axis", 1) not in cache  # rows of 70 sit whole in a tile, which takes their amax
    assert torch.equal(cache[("absmax_axis", 0)], x.abs().amax(0))
    # The kernels really read the cached values: a planted amax changes the result.
    spec = kernels.parse("fp8_e4m3")
    good = scaled.sums(x, spec, cache=cache)
    planted = {("absmax",): amax * 2}
    assert scaled.sums(x, spec, cache=planted).sum_d2 != good.sum_d2
    # A value of another shape or dtype (exact in float32) is read the same.
    for v in (amax.reshape(1), amax.double()):
        assert scaled.sums(x, spec, cache={("absmax",): v}) == good


def test_sums_match_reference_sums_with_nan_inf_and_bounds():
    """Clipped counts where the bound sits one ulp below the amax (int8sym) and at 65504 (fp16)."""
    x = heavy((20, 64), seed=13)
    x[0, 0], x[1, 1], x[2, 2] = math.nan, math.inf, 7e4
    for fmt in FORMATS + SEED:
        spec = kernels.parse(fmt)
        got = scaled.sums(x, spec)
        want = error_sums_ref(x, kernels.fake_quantize(x, spec, backend="reference"), unit_bound(x, spec))
        assert got.clipped == want.clipped and got.nan_out == want.nan_out and got.inf_out == want.inf_out, fmt


# --------------------------------------------------------------------------- registration


def test_backend_selection():
    for fmt in FORMATS + SEED + ["nvfp8_e4m3", "nvfp8_e5m2"]:
        spec = kernels.parse(fmt)
        assert scaled.unsupported_reason(spec) is None, fmt
        assert backends.select("cpu", spec, "triton").name == "triton"
        assert backends.REGISTRY["triton"].check(torch.device("cuda"), spec) is None
        if not torch.cuda.is_available():
            assert backends.select("cpu", spec).name != "triton"  # priority -5: never auto on CPU
    assert isinstance(scaled.unsupported_reason(kernels.parse("mxfp8_e4m3")), str)


def test_explicit_triton_on_cpu_outside_the_interpreter_fails_loudly(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(backends.BackendError, match="CUDA"):
        backends.select("cpu", kernels.parse("int8sym"), "triton")
    assert backends.select("cpu", kernels.parse("int8sym")).name != "triton"
