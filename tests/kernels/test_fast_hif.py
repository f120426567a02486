"""Targeted corner cases for the fast HiFloat kernels (``kernels/fast/{hif8,hifx,hif4}.py``).

Every covered format must equal its reference bit for bit. The comparison here is
stricter than ``golden.mismatches``: the sign of zero counts too (only NaN payloads
are ignored). ``tests/kernels/test_fast.py`` runs the shared corner-case table; here the
inputs aim at what the fast kernels do differently from the reference:

* HiF8 (spec formats-hifloat.md §3.2): every binade of every Dot code with its grid
  points, ties and their float32 neighbours, the 2^-23 / 2^-22 underflow edges, the
  28672 / 40960 / 49152 / 57344 overflow edges, ±0, ±Inf, NaN, subnormals, FLT_MAX, in
  every underflow × overflow mode; the §4.1 recipe with per-tensor amax edge cases
  (all-zero, tiny, subnormal, exactly 64, huge, NaN, Inf, k that makes y overflow) also
  when the tensor is cut into pieces; dhif8 with stale, zero and per-tensor amax.
* HiFX v12 (§5.3): group maxima at and just below powers of two over the whole range,
  every d8/d4 combination, the L1 clip edges (Emax -44/-45 at the bottom, 18/19 at the
  top), k = 2^M saturation ties, NaN/±Inf groups, ragged tails, axis 0, 3-D, bf16/fp16.
* HiF4 paper (§5.6): E6M2 on every bf16 value, Eb/Ec decisions swept across the bf16
  rounding midpoints, Ea = 0 groups with negative zeros (+0 out), NaN/Inf groups,
  saturation, fp16 input.
"""

from __future__ import annotations

import math

import pytest
import torch

import kernels
import kernels.chunked as chunked
from kernels.fast import lookup
from kernels.fast.hif4 import e6m2
from kernels.formats import parse
from kernels.reference.hif4 import _e6m2

F32, BF16, F16, I32 = torch.float32, torch.bfloat16, torch.float16, torch.int32
FLT_MAX = torch.finfo(F32).max
DTYPES = pytest.mark.parametrize("dtype", [F32, BF16, F16], ids=["f32", "bf16", "f16"])

HIF8_ELEMENTWISE = [
    "hif8:scale=none",
    "hif8:scale=none,underflow=flush",
    "hif8:scale=none,overflow=inf",
    "hif8:scale=none,underflow=flush,overflow=inf",
    "hif8:variant=paper",
    "hif8:variant=paper,overflow=saturate",
    "hif8:variant=paper,underflow=min",
    "hif8:scale=none,out=fp32",
    "hif8:scale=none,out=bf16",
]
HIF8_RECIPE = [
    "hif8",
    "hif8:underflow=flush",
    "hif8:out=fp32",
    "hif8:out=input",
    "hif8:k=1e6",
    "hif8:k=1e6,overflow=inf",
    "hif8:k=3e38",
    "hif8:k=1e-30",
]
DHIF8 = ["dhif8", "dhif8:amax=1.0", "dhif8:amax=0", "dhif8:amax=1e-30,scale_position=1e30"]
HIFX = ["hifx2_v12", "hifx3_v12", "hifx4_v12", "hifx5_v12"]
COVERED = HIF8_ELEMENTWISE + HIF8_RECIPE + DHIF8 + HIFX + ["hifx4_v12:axis=0", "hif4_paper", "hif4_paper:axis=0"]
NOT_COVERED = [
    "hif8:emulate=seed",
    "hif8:scale=none,overflow=tof8",
    "hifx4_v12:variant=numpy",
    "hifx4_v12:emulate=seed",
    "dhif8:emulate=seed",
]


def assert_same(fast: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    """Same dtype, shape and bits (NaN == NaN whatever its payload; -0 != +0)."""
    assert fast.dtype == ref.dtype and fast.shape == ref.shape, f"{what}: {fast.dtype}{tuple(fast.shape)}"
    a, b = fast.float().flatten(), ref.float().flatten()
    nan_a, nan_b = torch.isnan(a), torch.isnan(b)
    bad = (nan_a != nan_b) | (~nan_a & (a.view(I32) != b.view(I32)))
    if bad.any():
        i = bad.nonzero().flatten()[:5].tolist()
        pairs = ", ".join(f"[{j}] got {a[j].item()!r} want {b[j].item()!r}" for j in i)
        raise AssertionError(f"{what}: {int(bad.sum())} of {a.numel()} differ: {pairs}")


def check(x: torch.Tensor, fmt: str) -> None:
    assert lookup(parse(fmt)) is not None, f"{fmt} should have a fast kernel"
    before = x.clone()
    fast = kernels.fake_quantize(x, fmt, backend="cpu-fast")
    ref = kernels.fake_quantize(x, fmt, backend="reference")
    assert_same(fast, ref, f"{fmt} {x.dtype}{tuple(x.shape)}")
    assert torch.equal(x.view(torch.uint8), before.view(torch.uint8)), "input modified"


@pytest.fixture
def tiny_pieces(monkeypatch):
    monkeypatch.setattr(chunked, "CHUNK_ELEMS", 256)
    monkeypatch.setattr(chunked, "MIN_SPLIT_ELEMS", 512)


def _f32(v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=F32)


def _neighbours(values) -> list[float]:
    """Each value and the float32 just below and just above it."""
    out = []
    for v in values:
        t = _f32(v)
        out += [torch.nextafter(t, _f32(-math.inf)).item(), t.item(), torch.nextafter(t, _f32(math.inf)).item()]
    return out


def _signed(values) -> torch.Tensor:
    t = torch.tensor(values, dtype=F32)
    return torch.cat([t, -t])


# --------------------------------------------------------------------------- HiF8


def _hif8_mantissa_bits(e: int) -> int:
    return 3 if abs(e) <= 3 else 2 if abs(e) <= 7 else 1 if abs(e) <= 15 else 0


def hif8_edges(emin: int = -25, emax: int = 16) -> torch.Tensor:
    """Grid points, ties and their neighbours in every binade from 2^emin to 2^emax, both signs."""
    values = []
    for e in range(emin, emax + 1):
        step = 2.0 ** (e - _hif8_mantissa_bits(e))
        grid = [2.0**e + j * step for j in range(round(2.0**e / step) + 1)]
        values += _neighbours(grid + [g + step / 2 for g in grid[:-1]])
    return _signed(values)


HIF8_SPECIALS = _signed(
    _neighbours(
        [
            2.0**-23,
            1.5 * 2.0**-23,
            2.0**-22,
            2.0**-24,
            28672.0,
            32768.0,
            40960.0,
            49152.0,
            57344.0,
            65536.0,
            1e6,
            FLT_MAX / 2,
        ]
    )
    + [0.0, 1e-45, 1e-40, 1e-38, 1e-30, FLT_MAX, math.inf, math.nan]
)


def test_hif8_edge_table_is_dense():
    """The table holds every tie of every binade (so a wrong w anywhere shows up)."""
    e = hif8_edges()
    assert e.numel() > 1500 and (e == 1.0625).any() and (e == -(2.0**-16) * 1.5).any() and (e == 20480.0).any()


@pytest.mark.parametrize("fmt", HIF8_ELEMENTWISE)
@DTYPES
def test_hif8_element_rule_edges(fmt, dtype):
    x = torch.cat([hif8_edges(), HIF8_SPECIALS])
    if dtype == F16:
        x = x[x.abs() <= 65504]
    check(x.to(dtype), fmt)


@pytest.mark.parametrize(
    "fmt", ["hif8:scale=none", "hif8:scale=none,underflow=flush,overflow=inf", "hif8:variant=paper,overflow=saturate"]
)
def test_hif8_random_bit_patterns(fmt):
    """Arbitrary float32 bit patterns, NaN payloads and negative NaNs included."""
    g = torch.Generator().manual_seed(3)
    bits = torch.randint(-(2**31), 2**31, (1 << 16,), generator=g, dtype=torch.int64).to(I32)
    check(bits.view(F32), fmt)


@pytest.mark.parametrize(
    ("binade", "fmt"), [(-4, "hif8:scale=none"), (15, "hif8:scale=none,underflow=flush,overflow=inf")]
)
def test_hif8_every_float_of_a_binade(binade, fmt):
    """Every float32 of a whole binade (2^23 values), both signs: ties, near-ties, carries."""
    bits = torch.arange(1 << 23, dtype=I32) | ((binade + 127) << 23)
    x = bits.view(F32)
    check(torch.cat([x, -x[::5]]), fmt)


def _recipe_cases(dtype) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    edges = hif8_edges(-25, 2)
    edges = edges[edges.abs() < 8]
    cases = {
        # amax exactly 64 makes s = 1/8 exactly (64 + 2^-23 rounds to 64), so y = x/8 runs
        # through every edge of the scaled domain.
        "amax_64": torch.cat([torch.tensor([64.0]), edges * 8]),
        "zeros": torch.zeros(300),
        "neg_zeros": torch.full((300,), -0.0),
        "tiny": torch.tensor([1e-8, 5e-9, -1e-9, 0.0, -0.0]),
        "subnormal_amax": torch.tensor([1e-40, -3e-41, 1e-45, 0.0]),
        "amax_below_eps": torch.tensor([2.0**-24, 2.0**-30, -(2.0**-40)]),
        "variant_a_floor": torch.tensor([1.0, 0.3, -0.7, 1e-9, -1e-12, 2.0**-30]),
        "huge": torch.tensor([FLT_MAX, -FLT_MAX / 3, 1.0, -1e-30]),
        "nan": torch.tensor([1.0, math.nan, -2.0]),
        "inf": torch.tensor([1.0, -math.inf, 2.0]),
        "lognormal": torch.exp(torch.randn(2000, generator=g) * 6) * torch.randn(2000, generator=g).sign(),
    }
    out = {}
    for name, x in cases.items():
        y = x.to(dtype)
        if dtype == F16 and (torch.isinf(y) & ~torch.isinf(x)).any():
            continue
        out[name] = y
    return out


@pytest.mark.parametrize("fmt", HIF8_RECIPE + DHIF8)
@DTYPES
def test_hif8_recipe_and_dhif8_amax_cases(fmt, dtype):
    for x in _recipe_cases(dtype).values():
        check(x, fmt)


@pytest.mark.parametrize("fmt", HIF8_RECIPE[:3] + DHIF8)
@DTYPES
def test_per_tensor_amax_reaches_every_piece(fmt, dtype, tiny_pieces):
    """Cut into 256-element pieces, every piece must use the whole tensor's amax: the
    maximum sits in the last piece, the first pieces hold values 2^-20 below it."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(4096, generator=g) * 2.0**-20
    x[-1] = 100.0
    x[:8] = torch.tensor([0.0, -0.0, 1e-30, -1e-12, 2.0**-40, math.nan if fmt == "dhif8:amax=1.0" else 1.0, 3.0, -3.0])
    check(x.to(dtype), fmt)


# --------------------------------------------------------------------------- HiFX v12


def _groups(rows: list[list[float]]) -> torch.Tensor:
    """One 64-group per row (zero-filled)."""
    t = torch.zeros(len(rows), 64)
    for i, r in enumerate(rows):
        t[i, : len(r)] = torch.tensor(r, dtype=F32)
    return t


def hifx_structured(n: int) -> torch.Tensor:
    m = n - 1
    rows = []
    below = lambda v: torch.nextafter(_f32(v), _f32(0.0)).item()  # noqa: E731
    for k in range(-50, 22):
        p = 2.0**k
        # group max at and just below 2^k, with sub-block / micro-group maxima one, two and
        # three binades down (every d8/d4 combination), ties of the element grid among them.
        rows.append(
            [p]
            + [0.0] * 7
            + [below(p), 0, 0, 0, p / 2]
            + [0.0] * 3
            + [below(p / 2), 0, 0, 0, p / 4, 0, 0, 0, p / 8, p * 0.3, p * 0.375, below(p / 16)]
        )
        rows.append([below(p), p / 2, p / 4, -p / 8, p * 0.9, -p * 0.4, p * 0.21, p * 0.0625])
        # k = 2^M saturation: a micro-group max whose v = 2^M - 1/2 (a tie), and its neighbours.
        sat = (2 - 2.0**-m) * p
        rows.append(_neighbours([sat]) + [p * (1 + 2.0**-m), p * 1.5, -sat])
    # L1 clip edges: Emax -44 (L1 = -46), -45, below the 2^-45 offset, and 18 (L1 = 16) / 19.
    for v in (2.0**-44, 1.5 * 2.0**-44, 2.0**-45, 2.0**-46, 2.0**-47, 2.0**-60, 1e-40):
        rows.append(_neighbours([v]) + [v / 3, -v / 2, v * 0.75])
    for v in (2.0**18, 1.9 * 2.0**18, 2.0**19, 1e6, FLT_MAX):
        rows.append(_neighbours([v]) + [1.0, -v / 5, 2.0**16, -(2.0**17) * 1.5])
    rows.append([math.nan, 1.0, -2.0])
    rows.append([1.0, math.inf, -3.0, 70000.0])
    rows.append([-math.inf, -0.0, 0.5])
    rows.append([-0.0] * 64)
    rows.append([-1e-45, 1e-45, -(2.0**-20), 0.0])
    return _groups(rows)


@pytest.mark.parametrize("n", [2, 3, 4, 5])
@DTYPES
def test_hifx_structured_groups(n, dtype):
    x = hifx_structured(n)
    if dtype == F16:
        x = x[(x.abs() <= 65504).all(-1) | torch.isnan(x).any(-1)]
    check(x.to(dtype), f"hifx{n}_v12")


@pytest.mark.parametrize("fmt", HIFX + ["hif4_paper"])
@pytest.mark.parametrize("length", [1, 3, 63, 65, 77, 130, 200])
def test_ragged_tails(fmt, length, tiny_pieces):
    g = torch.Generator().manual_seed(length)
    x = torch.randn(40, length, generator=g) * torch.exp(torch.randn(40, 1, generator=g) * 4)
    x[1, -1] = -0.0
    check(x, fmt)
    check(x.to(BF16), fmt)
    x[2, -1] = math.nan  # NaN in the (partial) last group only
    check(x, fmt)


@pytest.mark.parametrize(
    "fmt", ["hifx3_v12:axis=0", "hifx4_v12:axis=0", "hif4_paper:axis=0", "hifx5_v12:axis=1", "hif4_paper:axis=1"]
)
@DTYPES
def test_other_axes_and_3d(fmt, dtype):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(130, 6, generator=g) * torch.exp(torch.randn(130, 6, generator=g) * 3)
    x3 = torch.randn(3, 70, 5, generator=g)
    x3[1, 5, 2] = math.inf
    x3[2, 64, 0] = math.nan
    if fmt.endswith("axis=0"):
        check(x.to(dtype), fmt)
    check(x3.to(dtype), fmt)


@pytest.mark.parametrize("fmt", HIFX + ["hif4_paper"])
def test_random_bit_patterns_grouped(fmt):
    """Arbitrary float32 patterns (NaN/Inf scattered): most groups take the reference path,
    the rest must still be exact."""
    g = torch.Generator().manual_seed(9)
    bits = torch.randint(-(2**31), 2**31, (64, 256), generator=g, dtype=torch.int64).to(I32)
    x = bits.view(F32)
    x[::2] = x[::2] * 2.0**-100  # many finite rows too
    check(x, fmt)


@pytest.mark.parametrize("fmt", HIFX + ["hif4_paper"])
@DTYPES
def test_wide_dynamic_range(fmt, dtype, tiny_pieces):
    g = torch.Generator().manual_seed(4)
    x = torch.exp(torch.randn(24, 256, generator=g) * 8) * torch.randn(24, 256, generator=g).sign()
    x[3] = 0.0
    x[5, :64] = -0.0
    y = x.to(dtype)
    if dtype == F16:
        y = y.nan_to_num(posinf=0.0, neginf=0.0)
    check(y, fmt)


# --------------------------------------------------------------------------- HiF4 paper


def test_e6m2_on_every_bf16_value():
    """The bit-pattern E6M2 rounding equals the reference's on all non-negative bf16 values."""
    sf = torch.arange(0, 0x7F81, dtype=I32).to(torch.int16).view(BF16).float()  # 0 .. +Inf
    assert_same(e6m2(sf.clone()), _e6m2(sf), "e6m2")


def hif4_thresholds() -> torch.Tensor:
    """Groups [Ma, candidate] with the candidate swept over consecutive bf16 values around
    Ma·2^-j, so that bf(Mb·rA) and bf(Mc·rA) cross the bf16 midpoints below 4 and 2 (the Eb
    and Ec decisions), for several Ma (several rA)."""
    rows = []
    for ma in (1.0, 7.0, 7.25, 3.0, 1e-3, 5e4, 2.0**-40):
        base = torch.tensor(ma, dtype=BF16).view(torch.int16).item()
        for shift in (1, 2, 3):  # candidates near Ma/2, Ma/4, Ma/8 (bf16 exponent - shift)
            for d in range(-6, 7):
                cand = torch.tensor(base - (shift << 7) + d, dtype=torch.int16).view(BF16).item()
                rows.append([ma, 0, 0, 0, 0, 0, 0, 0, cand])  # candidate in sub-block 1
                rows.append([ma, 0, 0, 0, cand])  # candidate in the sibling micro-group
                rows.append([ma] + [0.0] * 11 + [cand, -cand / 2])
    return _groups(rows).to(BF16)


def test_hif4_eb_ec_thresholds():
    check(hif4_thresholds(), "hif4_paper")
    check(hif4_thresholds().float(), "hif4_paper")


@DTYPES
def test_hif4_structured_groups(dtype):
    rows = [
        [1.0, 0.5, 0.3, 0, 0, 0, 0, 0, 0.01],
        [7.0, 2.5, 1.5, 0.5, -3.5, 1.75, -0.875],  # RNE ties on the element grid
        [0.99999994, 0.3, 0.1],
        [1e6, 1.0, -344064.0],  # saturation
        [2.0**-50, -(2.0**-52), -0.0],  # Ea = 0: +0 everywhere
        [-0.0, -(2.0**-47), 2.0**-48],
        [7 * 1.25 * 2.0**-48, -(2.0**-46)],  # around the smallest E6M2 scale
        [49152.0 * 7, -1.0],
        [math.nan, 1.0],
        [math.inf, 1.0, -2.0],
        [-math.inf, 3.0],
        [-0.0] * 64,
    ]
    x = _groups(rows)
    if dtype == F16:
        x = x[(x.abs() <= 65504).all(-1) | torch.isnan(x).any(-1)]
    check(x.to(dtype), "hif4_paper")


def test_hif4_fp16_input_rounds_to_bf16_first():
    """fp16 values with more than 8 significant bits (rounded to bf16 first, RNE ties)."""
    k = torch.arange(1024, 1024 + 640, dtype=F32)  # 11 significant bits
    x = (k / 1024).view(10, 64).to(F16)
    check(x, "hif4_paper")
    check(-x, "hif4_paper")


# --------------------------------------------------------------------------- coverage


def test_covered_and_not_covered():
    for fmt in COVERED:
        assert lookup(parse(fmt)) is not None, fmt
    for fmt in NOT_COVERED:
        assert lookup(parse(fmt)) is None, fmt
