"""Targeted corner cases for the fast MX, QType and TMX kernels (``kernels/fast/{mx,qtype,tmx}.py``).

Every kernel must equal its reference bit for bit (NaN == NaN, -0 == +0, as in
``golden.mismatches``). ``tests/kernels/test_fast.py`` runs the shared corner-case table
through the ``cpu-fast`` backend; here the inputs aim at the tricks of these kernels:
block maxima at, just below and just above powers of two over the whole float32 range,
FLT_MAX, fp32-subnormal and all-zero blocks, NaN/±Inf blocks, element ties and their
float32 neighbours, the QType carry threshold (sqrt 2) and ``+9.6e-7`` bumps, TMX pairs
at G and G - 1, ragged tails, other axes, 3-D tensors, bf16/fp16 inputs; plus the
building blocks in ``kernels/fast/_ops.py`` and ``supports``.
"""

from __future__ import annotations

import math

import pytest
import torch
from golden import mismatches

import kernels
import kernels.chunked as chunked
from kernels.fast import lookup
from kernels.fast._ops import pow2_wide, round_half_away_
from kernels.formats import parse
from kernels.reference import fake_quantize_ref
from kernels.reference._bits import exp2i, round_half_away
from kernels.reference.mx import SQRT2_UP

F32, BF16, F16, I32 = torch.float32, torch.bfloat16, torch.float16, torch.int32
FLT_MAX = torch.finfo(F32).max
TINY = torch.finfo(F32).tiny

MX = ["mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4_e2m1", "mxint8"]
MX_OPTIONS = [
    "mxfp4_e2m1:round=even",
    "mxfp8_e4m3:round=floor",
    "mxint8:round=even",
    "mxfp6_e2m3:scale=rceil",
    "mxfp8_e5m2:scale=even",
    "mxfp4_e2m1:scale=carry",
    "mxfp6_e3m2:scale=ceil",
    "mxfp4_e2m1:minus_exp=1",
    "mxfp8_e4m3:minus_exp=-2",
    "mxint8:block=16",
    "mxfp4_e2m1:block=0",
    "mxfp8_e4m3:block=7",
    "mxfp8_e4m3:axis=0",
    "mxint8:axis=0",
    "mxfp8_e4m3:scale_bits=4",
    "mxint8:scale_bits=8",
    "mxfp8_e4m3:flush_fp32_subnorms=true",
    "mxint8:flush_fp32_subnorms=true",
    "mxfp6_e2m3:scale=ceil,flush_fp32_subnorms=true",
]
QTYPE = ["mxfp4", "mxfp6e3m2", "mxfp8e4m3", "mxfp8e5m2", "e2m1k8b32c", "e4m3k8b32c", "e3m2k8b16c", "e2m1K4k4B8b4c"]
# e6m3 and e5m10 have exp_min - M <= -19, where the reference's +9.6e-7 before the element
# exponent changes results (tiny z get p = -20; z just below 2^j move up a binade).
QTYPE_OPTIONS = [
    "e4m3k8b32",
    "e5m3k8b32",
    "e6m3k8b32",
    "e5m10k8b32c",
    "e2m1k8b32c:axis=0",
    "e2m1K4k4B8b4c:axis=0",
    "e3m4K2k3B4b8off20",
]
TMX = ["tmx6", "tmx4", "tmx5", "tmx24", "tmx6:axis=0"]
COVERED = MX + MX_OPTIONS + QTYPE + QTYPE_OPTIONS + TMX
NOT_COVERED = [
    "mxfp8_e4m3:emulate=seed",
    "mxfp4_e2m1:round=dither",
    "mxfp4_e2m1:minus_exp=auto",
    "mxfp8_e4m3:shared_exp=none",
    "mxfp4:emulate=seed",
    "e0m3k8b32",
    "tmx3",
    "tmx6:emulate=seed",
]
DTYPES = [F32, BF16, F16, torch.float64]  # float64: computed in float32 like the reference


def _spec(fmt: str):
    return parse(fmt)


def _f32(vals) -> torch.Tensor:
    return torch.tensor([float(v) for v in vals], dtype=torch.float64).to(F32)


def _from_bits(bits) -> torch.Tensor:
    return torch.tensor(bits, dtype=torch.int64).to(I32).view(F32)


def _rows(vals_per_row: list[torch.Tensor], width: int = 64) -> torch.Tensor:
    """Rows of ``width``; each row holds its values then zeros (so each block has its own max)."""
    out = torch.zeros(len(vals_per_row), width)
    for i, v in enumerate(vals_per_row):
        out[i, : min(width, v.numel())] = v[:width]
    return out


def _block_edges() -> torch.Tensor:
    """Block maxima at 2^k, just below and just above, for k over the whole float32 range,
    with smaller companions (a tie, a quarter and a subnormal-ish tail) in the same block."""
    rows = []
    for k in range(-149, 128, 3):
        p = 2.0**k
        for amax in (p, p * (1 - 2**-24), p * (1 + 2**-23)):
            a = float(_f32([amax])[0])
            if a == 0 or math.isinf(a):
                continue
            rows.append(_f32([a, -a * 0.75, a * 0.3125, a / 3, -a / 7, a * 2**-9, a * 2**-20, a * 2**-30]))
    rows.append(_f32([FLT_MAX, -FLT_MAX * 0.999, 1.0, 2.0**127]))
    rows.append(_f32([2.0**127 * 1.5, 3e38, -1e38]))
    rows.append(_f32([TINY * 0.5, TINY * 0.25, 1e-45, -3e-45]))  # fp32-subnormal amax
    rows.append(_f32([TINY, TINY * 0.5, -TINY * 0.75]))
    rows.append(torch.zeros(8))
    rows.append(_f32([-0.0, -0.0]))
    return _rows(rows)


def _specials() -> torch.Tensor:
    nan, inf = math.nan, math.inf
    return _rows(
        [
            _f32([1.0, nan, 2.0]),
            _f32([inf, 1.0]),
            _f32([-inf, 3.0]),
            _f32([inf, -inf]),
            _f32([nan]),
            _f32([0.5] * 31 + [nan]),
            _f32([0.0] * 33 + [inf]),
            _f32([FLT_MAX, inf]),
            _f32([nan, 1e-40]),
        ]
    )


def _ties(seed: int) -> torch.Tensor:
    """Exact midpoints of many grids and their float32 neighbours, anchored per row so the
    block max fixes the grid: multiples of 2^-j plus half a step, at scales 2^-140..2^120."""
    g = torch.Generator().manual_seed(seed)
    n_rows, width = 48, 64
    scale = torch.exp2(torch.randint(-140, 120, (n_rows, 1), generator=g).float())
    k = torch.randint(0, 64, (n_rows, width), generator=g).float()
    j = torch.randint(0, 8, (n_rows, width), generator=g).float()
    t = (k + 0.5) * torch.exp2(-j) * scale
    bits = t.view(I32) + torch.randint(-1, 2, t.shape, generator=g, dtype=I32)  # tie, or one ulp off
    t = bits.view(F32)
    t[:, ::16] = 7.5 * scale  # anchors
    t[:, 1::32] = 6.0 * scale * (1 - 2**-24)
    sign = torch.randint(0, 2, t.shape, generator=g).float() * 2 - 1
    return t * sign


def _random_bits(seed: int) -> torch.Tensor:
    """Random finite float32 bit patterns (every exponent, subnormals included), scaled per
    row by wildly different exponent ranges."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for lo, hi in [(1, 254), (1, 40), (100, 140), (200, 254), (0, 10), (120, 130)]:
        e = torch.randint(lo, hi + 1, (8, 96), generator=g, dtype=torch.int64)
        m = torch.randint(0, 1 << 23, (8, 96), generator=g, dtype=torch.int64)
        s = torch.randint(0, 2, (8, 96), generator=g, dtype=torch.int64)
        rows.append((s << 31 | e << 23 | m).to(I32).view(F32))
    return torch.cat(rows)


def _qtype_edges() -> torch.Tensor:
    """Inner maxima around the carry threshold sqrt(2)·2^k and around 2^k - 9.6e-7 (where
    the reference's +9.6e-7 moves the exponent), and around the 2^-20 floor of the eps."""
    s = float(SQRT2_UP)
    rows = []
    for k in (-30, -21, -20, -19, -3, 0, 1, 5, 20, 60, 126):
        p = 2.0**k
        for amax in (s * p, s * p * (1 - 2**-24), s * p * (1 + 2**-23), p - 9.6e-7, p - 4.8e-7, p + 9.6e-7):
            a = float(_f32([amax])[0])
            if a > 0 and math.isfinite(a):
                rows.append(_f32([a, a * 0.99999994, a * 0.5 - 9.6e-7, 1e-6, 9.6e-7, a * 2**-12]))
    for k in (-40, -30, -24, -22, -21):  # elements far below the block max (z < 2^-20)
        rows.append(_f32([1.0, 2.0**k, 3 * 2.0 ** (k - 2), 2.0**k * (1 - 2**-24), 2.0 ** (k - 7), 2.0 ** (k + 3)]))
    return _rows(rows)


def _tmx_pairs() -> torch.Tensor:
    """Pairs whose maxima sit at the block's G, at G - 1 and far below, and mantissas that
    round up to 2^m (k == top), over several scales including FLT_MAX."""
    rows = []
    for scale in (2.0**-149 * 2**20, 2.0**-60, 1.0, 2.0**40, 2.0**126):
        rows.append(
            _f32(
                [
                    v * scale
                    for v in (
                        1.99,
                        0.2,
                        0.999,
                        0.98,
                        0.4,
                        0.01,
                        1e-5,
                        0,
                        1.97,
                        1.94,
                        0.51,
                        0.49,
                        0.26,
                        0.24,
                        1.5,
                        -1.96,
                    )
                ]
            )
        )
    rows.append(_f32([FLT_MAX, 1.0, FLT_MAX * 0.6, -FLT_MAX * 0.51, 2.0**127, 3e38]))
    return _rows(rows, width=48)


def _shapes(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "ragged_1d": torch.randn(77, generator=g) * 5,
        "ragged_rows": torch.randn(6, 45, generator=g),
        "three_d": torch.randn(3, 20, 34, generator=g) * 100,
        "three_d_tiny": torch.randn(2, 3, 33, generator=g) * 1e-39,
        "short_axis": torch.randn(5, 3, generator=g),
    }


def cases() -> dict[str, torch.Tensor]:
    return {
        "block_edges": _block_edges(),
        "specials": _specials(),
        "ties": _ties(0),
        "random_bits": _random_bits(1),
        "qtype_edges": _qtype_edges(),
        "tmx_pairs": _tmx_pairs(),
        **_shapes(2),
    }


def _as(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # Values outside bf16/fp16 become ±Inf there, a legitimate Inf input for the kernels.
    return x.to(dtype)


def _check(fmt: str, x: torch.Tensor, what: str) -> str | None:
    spec = _spec(fmt)
    ref = fake_quantize_ref(x, spec)
    before = x.clone()
    fast = lookup(spec)(x, spec, None)
    assert torch.equal(x.view(torch.uint8), before.view(torch.uint8)), f"{fmt}: input modified"
    if fast.dtype != ref.dtype or fast.shape != ref.shape:
        return f"{what}: {fast.dtype}{tuple(fast.shape)} vs {ref.dtype}{tuple(ref.shape)}"
    n = mismatches(fast, ref)
    return f"{what}: {n} elements differ" if n else None


@pytest.mark.parametrize("fmt", COVERED)
def test_fast_kernel_is_used(fmt):
    assert lookup(_spec(fmt)) is not None, f"{fmt} should run a fast kernel"


@pytest.mark.parametrize("fmt", NOT_COVERED)
def test_uncovered_options_fall_back(fmt):
    spec = _spec(fmt)
    assert lookup(spec) is None, f"{fmt} must fall back to the reference"
    x = torch.randn(8, 64)
    out = kernels.fake_quantize(x, fmt, backend="cpu-fast", generator=torch.Generator().manual_seed(0))
    ref = kernels.fake_quantize(x, fmt, backend="reference", generator=torch.Generator().manual_seed(0))
    assert mismatches(out, ref) == 0


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "bf16", "f16", "f64"])
@pytest.mark.parametrize("fmt", COVERED)
def test_kernel_equals_reference(fmt, dtype):
    """The kernel on whole tensors (one piece each) against the reference."""
    failures = [f for name, x in cases().items() if (f := _check(fmt, _as(x, dtype), name))]
    assert not failures, f"{fmt} {dtype}: " + "; ".join(failures)


@pytest.mark.parametrize("fmt", ["mxfp8_e4m3", "mxint8:block=0", "mxfp4", "e2m1K4k4B8b4c", "tmx6", "tmx4:axis=0"])
def test_chunked_pieces_equal_reference(fmt, monkeypatch):
    """Through the cpu-fast backend with tiny pieces: row pieces, long rows cut at block
    boundaries, and column pieces (axis 0) all give the reference's bits."""
    monkeypatch.setattr(chunked, "CHUNK_ELEMS", 256)
    monkeypatch.setattr(chunked, "MIN_SPLIT_ELEMS", 512)
    g = torch.Generator().manual_seed(5)
    xs = [torch.randn(40, 96, generator=g), torch.randn(2, 1000, generator=g) * 1e-3, _block_edges(), _ties(3)]
    for x in xs:
        for dtype in (F32, BF16):
            x = x.to(dtype)
            out = kernels.fake_quantize(x, fmt, backend="cpu-fast")
            assert mismatches(out, fake_quantize_ref(x, _spec(fmt))) == 0, f"{fmt} {dtype} {tuple(x.shape)}"


def test_results_do_not_alias_scratch():
    """Kernels reuse per-thread scratch buffers; a returned result must survive the next call."""
    for fmt in ("mxfp8_e4m3", "mxfp4", "tmx6"):
        spec = _spec(fmt)
        kern = lookup(spec)
        x1, x2 = torch.randn(4, 64), torch.randn(4, 64) * 1000
        first = kern(x1, spec, None)
        saved = first.clone()
        kern(x2, spec, None)
        assert torch.equal(first, saved), fmt


def test_round_half_away_matches_reference():
    """floor(a + 0.49999997) is ties-away: every float32 in [1/4, 8) and around 2^23, the
    neighbours of half-integers up to 2^22, huge values and +Inf, against the reference's
    round_half_away."""
    for lo, hi in [(0.25, 8.0), (2.0**22, 2.0**22 + 2**16), (2.0**23 - 2**10, 2.0**23 + 2**18)]:
        lo_bits, hi_bits = torch.tensor([lo, hi]).view(I32).tolist()
        a = torch.arange(lo_bits, hi_bits, dtype=I32).view(F32)
        assert torch.equal(round_half_away_(a.clone()), round_half_away(a)), (lo, hi)
    halves = torch.arange(0, 2**22, 997, dtype=torch.float64).add_(0.5).to(F32)
    near = (halves.view(I32).unsqueeze(1) + torch.arange(-8, 9, dtype=I32)).view(F32).flatten()
    assert torch.equal(round_half_away_(near.clone()), round_half_away(near))
    big = torch.tensor([2.0**24 + 2, 2.0**30 * 3, FLT_MAX, math.inf])
    assert torch.equal(round_half_away_(big.clone()), big)


def test_pow2_wide_is_exact():
    e = torch.arange(-149, 128, dtype=I32)
    assert torch.equal(pow2_wide(e).view(I32), exp2i(e).view(I32))
    # The MX kernel's 2^-s as the reciprocal of 2^s, s in [-127, 127].
    s = torch.arange(-127, 128, dtype=I32)
    assert torch.equal(pow2_wide(s).reciprocal().view(I32), exp2i(-s).view(I32))


@pytest.mark.parametrize("fmt", ["mxfp8_e4m3", "mxfp4_e2m1:block=7", "e3m2k8b16c", "tmx6", "tmx4:axis=0"])
@pytest.mark.parametrize("dtype", [F32, BF16], ids=["f32", "bf16"])
def test_out_parameter(fmt, dtype):
    """``out=`` (what kernels.chunked passes) gets the same bits as the returned tensor,
    for a contiguous 3-D destination, a strided slice, and a strided 2-D one."""
    spec = _spec(fmt)
    kern = lookup(spec)
    g = torch.Generator().manual_seed(9)
    x3 = (torch.randn(3, 40, 5, generator=g) * 10).to(dtype)
    spec3 = spec.replace(axis=1)
    want = fake_quantize_ref(x3, spec3)
    dest = torch.full((3, 40, 10), 7.0, dtype=dtype)[:, :, ::2]  # strided destination
    got = kern(x3, spec3, None, out=dest)
    assert got is dest and mismatches(dest, want) == 0
    x2 = (torch.randn(6, 50, generator=g)).to(dtype)
    want2 = fake_quantize_ref(x2, spec)
    dest2 = torch.zeros(50, 6, dtype=dtype).t()  # strided, not viewable as (rows, n, 1)
    assert kern(x2, spec, None, out=dest2) is dest2 and mismatches(dest2, want2) == 0


def test_large_output_through_cpu_fast():
    """A result of more than ``chunked.HUGE_PAGE_BYTES`` (huge-page advice on its memory)
    with the default piece size is still the reference's."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(1100, 1024, generator=g) * torch.exp2(torch.randint(-20, 20, (1100, 1), generator=g).float())
    assert x.numel() * 4 >= chunked.HUGE_PAGE_BYTES and x.numel() >= chunked.MIN_SPLIT_ELEMS
    out = kernels.fake_quantize(x, "mxfp8_e4m3", backend="cpu-fast")
    assert mismatches(out, fake_quantize_ref(x, _spec("mxfp8_e4m3"))) == 0
