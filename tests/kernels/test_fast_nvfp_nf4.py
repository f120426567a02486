"""The fast NVFP4, NF4, per-tensor FP8 and INT8 kernels (kernels/fast/{nvfp,nf4,fp8,int8sym}.py)
equal their reference kernels bit for bit on targeted corner cases.

Stricter than ``test_fast.py``: the sign of zero must match too (only NaN payloads may
differ). Each case runs through ``kernels.fake_quantize(backend="cpu-fast")`` twice: with
pieces of the normal size (the kernel sees the whole tensor) and with tiny pieces (the
kernel sees many pieces; per-tensor amax passed in). Every format here must really have a
fast kernel, or the comparison would be the reference against itself.
"""

from __future__ import annotations

import math

import pytest
import torch

import kernels
import kernels.chunked as chunked
from kernels.fast import lookup
from kernels.fast.cast import cast_kernel
from kernels.fast.fp8 import fp8_tensor_kernel
from kernels.fast.int8sym import int8sym_kernel
from kernels.fast.nf4 import nf4_kernel, nf4grid_kernel
from kernels.fast.nvfp import nvf4_kernel, nvfp4_kernel
from kernels.formats import parse
from kernels.reference.fp8 import E4M3, E5M2
from kernels.reference.nf4 import NF4_CODE

NAN, INF = math.nan, math.inf
F32 = torch.float32
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
DTYPE_IDS = ["f32", "bf16", "f16"]


def _bits(t: torch.Tensor) -> torch.Tensor:
    """Bit patterns, NaN canonicalised; -0 and +0 stay different."""
    t = t.contiguous()
    ints = t.view(torch.int32 if t.element_size() == 4 else torch.int16).to(torch.int64)
    return torch.where(torch.isnan(t), torch.full_like(ints, -1), ints)


def assert_same_bits(fast: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    assert fast.dtype == ref.dtype and fast.shape == ref.shape, (
        f"{what}: {fast.dtype}{tuple(fast.shape)} vs {ref.dtype}{tuple(ref.shape)}"
    )
    bad = (_bits(fast) != _bits(ref)).flatten().nonzero().flatten()
    if len(bad):
        f, r = fast.flatten(), ref.flatten()
        ex = ", ".join(f"[{i}] got {f[i].item()!r} want {r[i].item()!r}" for i in bad[:4].tolist())
        raise AssertionError(f"{what}: {len(bad)} of {ref.numel()} elements differ: {ex}")


KERNELS = {
    "nvf4": nvf4_kernel,
    "nvfp4": nvfp4_kernel,
    "nf4": nf4_kernel,
    "nf4grid": nf4grid_kernel,
    "fp8tensor": fp8_tensor_kernel,
    "int8sym": int8sym_kernel,
    "cast": cast_kernel,
}


def check(x: torch.Tensor, fmt: str, monkeypatch, what: str = "") -> None:
    """The fast kernel equals the reference on ``x``: called directly on the whole tensor
    (returning a new tensor, and writing into contiguous and strided ``out``), and as the
    cpu-fast backend runs it, on one piece and on many tiny ones."""
    spec = parse(fmt)
    ref = kernels.fake_quantize(x, fmt, backend="reference")
    amax = x.abs().amax().float() if spec.family in ("nvfp4", "fp8tensor") else None
    kernel = KERNELS[spec.family]
    assert_same_bits(kernel(x, spec, amax), ref, f"{fmt} {what} direct")
    for layout, dest in {
        "out": torch.full_like(ref, 7.0),
        "strided out": torch.full((*ref.shape[:-1], 2 * ref.shape[-1]), 7.0, dtype=ref.dtype)[..., ::2],
    }.items():
        assert kernel(x, spec, amax, out=dest) is dest
        assert_same_bits(dest, ref, f"{fmt} {what} {layout}")
    if spec.family == "nvfp4" and lookup(spec) is None:
        return  # kernels.chunked does not split nvfp4 by blocks yet (see nvfp._nvfp4_supported)
    assert lookup(spec) is not None, f"{fmt} has no fast kernel"
    assert_same_bits(kernels.fake_quantize(x, fmt, backend="cpu-fast"), ref, f"{fmt} {what} whole")
    with monkeypatch.context() as m:
        m.setattr(chunked, "CHUNK_ELEMS", 256)
        m.setattr(chunked, "MIN_SPLIT_ELEMS", 512)
        assert_same_bits(kernels.fake_quantize(x, fmt, backend="cpu-fast"), ref, f"{fmt} {what} pieces")


def _signs(t: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return t * torch.where(torch.rand(t.shape, generator=g) < 0.5, -1.0, 1.0)


def _ulps(v: float, k: int = 2) -> list[float]:
    """v and its k float32 neighbours on each side."""
    t = torch.tensor([v], dtype=F32)
    out = [t]
    for direction in (INF, -INF):
        u = t
        for _ in range(k):
            u = torch.nextafter(u, torch.tensor([direction]))
            out.append(u)
    return torch.cat(out).tolist()


def _blocks(rows: list[list[float]], width: int) -> torch.Tensor:
    """One block per row, zero-filled to ``width``."""
    return torch.tensor([r + [0.0] * (width - len(r)) for r in rows], dtype=F32)


# --------------------------------------------------------------------------- NVFP4: nvf4 and nvfp4


def _nvf4_scale_edges() -> torch.Tensor:
    """Blocks whose amax/6 sits on, and one ulp around, E4M3 values and E4M3 rounding ties,
    from the subnormal scales (2^-9) through 448 and beyond (saturation); each block also
    holds elements on and around every E2M1 midpoint of its scale."""
    rows = []
    e2m1_mids = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0]
    for e in range(-10, 10):
        for m in (8, 8.5, 9, 12.5, 15, 15.5):  # E4M3 significands and ties, times 2^(e-3)
            sf = m * 2.0 ** (e - 3)
            for amax in _ulps(6 * sf, 1):
                s = min(sf, 448.0)
                elems = [amax] + [v for mid in e2m1_mids for v in _ulps(mid * s, 1)]
                rows.append(elems[:16])
                rows.append([amax] + elems[16:31])
    return _signs(_blocks(rows, 16), 1)


def _zero_scale_blocks() -> torch.Tensor:
    """amax/6 at and around 2^-10 (half the smallest E4M3 subnormal): the scale rounds to 0
    (block +0, even for negative elements) or to 2^-9."""
    rows = []
    for amax in _ulps(6 * 2.0**-10, 3) + [6 * 2.0**-11, 1e-30, 2.0**-149]:
        rows.append([amax, -amax, -amax / 3, amax / 7, -0.0, 0.0, -(2.0**-149)])
    return _blocks(rows, 16)


NVF4_CASES = {
    "scale_edges": _nvf4_scale_edges(),
    "zero_scales": _zero_scale_blocks(),
    "specials": _blocks(
        [
            [1.0, INF, 2.0, -0.1],
            [-INF, 0.3, -0.7],
            [INF, -INF],
            [NAN, 1.0],
            [NAN, INF, -3.0],
            [-0.0, -0.0],
            [0.0] * 16,
            [-1e-3, 5e-4, 1.0],
            [1e38, -3e38, 1.0],
            [float(torch.finfo(F32).max), -1.0],
        ],
        16,
    ),
    "ragged_77": torch.randn(3, 77, generator=torch.Generator().manual_seed(2)) * 3,
    "three_d": torch.randn(3, 5, 40, generator=torch.Generator().manual_seed(3)),
}


@pytest.mark.parametrize("fmt", ["nvf4", "nvf4:axis=0", "nvf4:axis=1", "nvfp4", "nvfp4:axis=0"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", sorted(NVF4_CASES))
def test_nvfp4_corner_cases(fmt, dtype, case, monkeypatch):
    x = NVF4_CASES[case].to(dtype)
    if fmt.endswith("axis=1") and x.dim() < 3:
        x = x.unsqueeze(-1).expand(-1, -1, 2)  # a 3-D tensor blocked along its middle axis
    if "nvfp4" in fmt and case == "specials":
        x = x.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)  # with NaN/Inf the whole tensor is NaN (below)
    check(x, fmt, monkeypatch, f"{case} {dtype}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_nvfp4_per_tensor_rules(dtype, monkeypatch):
    g = torch.Generator().manual_seed(4)
    base = torch.randn(6, 48, generator=g)
    for name, x in {
        "nan": base.clone().index_put_((torch.tensor([3]), torch.tensor([5])), torch.tensor(NAN)),
        "inf": base.clone().index_put_((torch.tensor([0]), torch.tensor([0])), torch.tensor(-INF)),
        "all_zero": torch.zeros(4, 32),
        "neg_zero": torch.full((4, 32), -0.0),
        # pts = amax / 2688 against the 2^-121 guard: below it the input comes back unchanged.
        "below_guard": base / base.abs().max() * 1e-34,
        "above_guard": base / base.abs().max() * 2e-33,
        # one big element: the other blocks sit at the smallest block scale 2^-6
        "wide_range": torch.cat([base[:1] * 1e6, base[1:] * 1e-3]),
        # x · r on E2M1 ties of an anchored block (torchao's reciprocal, §4.4)
        "ties": _signs(torch.tensor([[6.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0] * 2] * 4), 5),
    }.items():
        x = x.to(dtype)
        if x.isfinite().all() or name in ("nan", "inf"):
            check(x, "nvfp4", monkeypatch, f"{name} {dtype}")


# --------------------------------------------------------------------------- NF4 code book


def _nf4_midpoint_blocks() -> torch.Tensor:
    """Blocks with absmax 1 (so the scaled value is the element itself): every midpoint of
    the code book (as bitsandbytes forms it, in float32) and 3 ulps either side, the codes,
    and every cell edge of the fast kernel's look-up (``-1 + (c ± 1/2)/16``) ± 3 ulps."""
    code = torch.tensor(NF4_CODE, dtype=F32)
    mids = ((code[:-1] + code[1:]) / 2).tolist()
    edges = [-1 + (c + 0.5) / 16 for c in range(-1, 33)]
    vals = [v for p in mids + edges + list(NF4_CODE) for v in _ulps(p, 3) if -1 <= v <= 1]
    width = 63
    rows = [[1.0] + vals[i : i + width] for i in range(0, len(vals), width)]
    return _blocks(rows, 64)


def _nf4_scaled_midpoints() -> torch.Tensor:
    """Midpoints times absmax values whose reciprocal is inexact: x · (1/absmax) lands around them."""
    code = torch.tensor(NF4_CODE, dtype=F32)
    mids = ((code[:-1] + code[1:]) / 2).tolist()
    rows = []
    for amax in (3.0, 0.7, 1e-20, 123.456, 2.0**-126, 1e-38, 5e-39):
        rows.append([amax] + [v * amax for m in mids for v in _ulps(m, 1)][:63])
    return _blocks(rows, 64)


NF4_CASES = {
    "midpoints": _nf4_midpoint_blocks(),
    "scaled_midpoints": _nf4_scaled_midpoints(),
    "specials": _blocks(
        [
            [1.0, INF, -2.0],
            [-INF, 0.5, -0.25],
            [INF, -INF, 0.0],
            [NAN, 1.0],
            [NAN, INF],
            [-0.0, -0.0],
            [0.0],
            [1e-45, -3e-45, 2e-45],
            [float(torch.finfo(F32).max), -1.0],
        ],
        64,
    ),
    "ragged_70": torch.randn(3, 5, 70, generator=torch.Generator().manual_seed(6)),
}


@pytest.mark.parametrize("fmt", ["nf4", "nf4:axis=0", "nf4:block=16", "nf4:block=5,axis=1"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", sorted(NF4_CASES))
def test_nf4_corner_cases(fmt, dtype, case, monkeypatch):
    x = NF4_CASES[case].to(dtype)
    if fmt.endswith("axis=1") and x.dim() < 3:
        x = x.unsqueeze(0).expand(2, -1, -1)
    check(x, fmt, monkeypatch, f"{case} {dtype}")


def test_nf4_every_float_near_the_midpoints(monkeypatch):
    """All float32 values within 2^12 ulps of each midpoint, scaled by absmax 1."""
    code = torch.tensor(NF4_CODE, dtype=F32)
    mids = (code[:-1] + code[1:]) / 2
    around = mids.view(torch.int32).unsqueeze(1) + torch.arange(-(2**12), 2**12, dtype=torch.int32)
    vals = around.view(F32).flatten()[: 1950 * 63]  # 15 · 2^13 values, cut to rows of 63
    x = torch.cat([torch.ones(1950, 1), vals.view(-1, 63)], 1)  # each row's absmax is 1
    check(x, "nf4", monkeypatch, "dense midpoints")


# --------------------------------------------------------------------------- NF4 grid (nf4B{B}b{b})


def _grid_ties() -> torch.Tensor:
    """Groups of 4 inner blocks: levels on and around the RNA ties |x| / gmax · 7 = k + 1/2,
    inner-block maxima around the E4M3 ties-away points of gmax / omax · 448, zero inner blocks
    (with -0) next to nonzero ones, an all-zero group, and subnormal maxima."""
    g = torch.Generator().manual_seed(7)
    rows = []
    for gmax in (1.0, 7.0, 3.3, 1e-3, 2.0**-130):
        ties = [v * gmax for k in range(7) for v in _ulps((k + 0.5) / 7, 2)]
        rows.append(([gmax] + ties)[:64])
    for m in (8.5, 9.5, 12.5, 15.5, 4.5):  # E4M3 ties (RNA) of z = gmax / omax · 448, incl. subnormal z
        z = m * 2.0 ** (math.floor(math.log2(m)) - 3) if m >= 8 else m * 2.0**-9
        for v in _ulps(z / 448 * 2.0, 1):
            rows.append([v] + (torch.rand(63, generator=g) * v).tolist())
    rows += [[-0.0] * 64, [0.0] * 64, [2.0] + [1.0] * 63, [-0.0, 0.0, -0.0]]
    rows += [[0.0] * 64] * 4  # an all-zero group
    while len(rows) % 4:
        rows.append([0.5, -0.25])
    return _signs(_blocks(rows, 64), 8).view(-1, 256)


GRID_CASES = {
    "ties": _grid_ties(),
    "specials": _blocks(
        [[1.0, INF, 2.0], [0.5], [0.1], [0.2], [NAN, 1.0], [1.0], [0.0], [3.0], [-INF, -1.0], [0.0], [0.0], [0.0]], 64
    ).view(-1, 256),
    "ragged_300": torch.randn(2, 300, generator=torch.Generator().manual_seed(9)),
    "three_d": torch.randn(2, 70, 3, generator=torch.Generator().manual_seed(10)),
}


@pytest.mark.parametrize("fmt", ["nf4B4b64", "nf4B4b64:axis=0", "nf4B1b16", "nf4B3b5:axis=1"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", sorted(GRID_CASES))
def test_nf4grid_corner_cases(fmt, dtype, case, monkeypatch):
    x = GRID_CASES[case].to(dtype)
    if fmt.endswith("axis=1") and x.dim() < 3:
        x = x.unsqueeze(0).expand(2, -1, -1)
    check(x, fmt, monkeypatch, f"{case} {dtype}")


# --------------------------------------------------------------------------- per-tensor FP8


def _fp8_ties(grid) -> torch.Tensor:
    """With amax = max_norm the scale is 1: every midpoint between neighbouring grid values
    (subnormal and normal) and one ulp around it."""
    sub = [k * 2.0 ** (grid.emin - grid.man_bits) for k in range(2**grid.man_bits)]
    normal = [(1 + k / 2**grid.man_bits) * 2.0**e for e in range(grid.emin, 16) for k in range(2**grid.man_bits)]
    values = [v for v in sub + normal if v <= grid.max_norm]
    vals = [grid.max_norm] + [u for a, b in zip(values, values[1:], strict=False) for u in _ulps((a + b) / 2, 1)]
    return _signs(torch.tensor(vals + [0.0] * ((-len(vals)) % 16)).view(-1, 16), 11)


@pytest.mark.parametrize("fmt", ["fp8_e4m3", "fp8_e5m2", "fp8_e4m3:emulate=seed", "fp8_e5m2:emulate=seed"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_fp8_tensor_corner_cases(fmt, dtype, monkeypatch):
    grid = E4M3 if "e4m3" in fmt else E5M2
    g = torch.Generator().manual_seed(12)
    base = torch.randn(8, 40, generator=g)
    cases = {
        "ties": _fp8_ties(grid),
        "scaled_ties": _fp8_ties(grid) * 3.3,
        "nan": base.clone().index_put_((torch.tensor([1]), torch.tensor([2])), torch.tensor(NAN)),
        "inf": base.clone().index_put_((torch.tensor([7]), torch.tensor([39])), torch.tensor(INF)),
        "zeros": torch.full((4, 16), -0.0),
        "guard_edge": base / base.abs().max() * 2.0**-23,  # amax exactly at the guard: quantized
        "below_guard": base / base.abs().max() * 2.0**-24,  # returned unchanged
        "small_amax": base / base.abs().max() * 3e-6,  # the seed's +2^-23 moves the scale by ~4%
        "lognormal": torch.exp(torch.randn(16, 64, generator=g) * 6) * torch.sign(torch.randn(16, 64, generator=g)),
    }
    for name, x in cases.items():
        y = x.to(dtype)
        if y.isinf().any() and not x.isinf().any():
            continue  # does not fit fp16
        check(y, fmt, monkeypatch, f"{name} {dtype}")


# --------------------------------------------------------------------------- INT8 symmetric


@pytest.mark.parametrize("fmt", ["int8sym", "int8sym:axis=0", "int8sym:emulate=seed", "int8sym:axis=1"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_int8sym_corner_cases(fmt, dtype, monkeypatch):
    g = torch.Generator().manual_seed(13)
    ties = torch.tensor([[127.0] + [k + 0.5 for k in range(-127, 127)]])  # step 1: RNE ties
    x = torch.cat(
        [
            _blocks(
                [
                    [-0.0, -0.0],
                    [0.0],
                    [1e-45, -1e-45],
                    [2.2e-44, -3e-45],
                    [1.0, NAN],
                    [INF, 1.0],
                    [-INF, INF],
                    [1e-40, -5e-41],
                ],
                255,
            ),
            torch.cat([ties, ties * 3.7, ties / 127 * 1e-3, -ties]),
            torch.randn(4, 255, generator=g) * 100,
        ]
    )
    if fmt.endswith("axis=1"):
        x = x.view(4, 4, 255)
    y = x.to(dtype)
    check(y, fmt, monkeypatch, f"{dtype}")


# --------------------------------------------------------------------------- casts


@pytest.mark.parametrize("fmt", ["fp16", "bf16", "fp32", "fp16:emulate=seed", "bf16:emulate=seed"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_cast_corner_cases(fmt, dtype, monkeypatch):
    vals = [65504.0, 65519.99, 65520.0, -65536.0, 2.0**-24, 2.0**-25, 3 * 2.0**-26, 1e-30, -0.0, NAN, INF, -INF]
    vals += _ulps(1 + 2.0**-11, 2) + _ulps(1 + 2.0**-8, 2) + _ulps(2.0**-14, 2)  # fp16 / bf16 ties
    g = torch.Generator().manual_seed(15)
    x = torch.cat([torch.tensor(vals), torch.randn(301, generator=g) * 1e3]).view(-1, 4).to(dtype)
    check(x, fmt, monkeypatch, f"{dtype}")


# --------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("fmt", ["nvf4", "nvfp4", "nf4", "nf4B4b64", "fp8_e4m3", "int8sym", "bf16"])
def test_non_contiguous_inputs(fmt, monkeypatch):
    g = torch.Generator().manual_seed(14)
    base = torch.randn(96, 160, generator=g)
    for name, x in {"transposed": base.t(), "strided": base[:, ::2], "sliced": base[3:50, 16:144]}.items():
        for dtype in DTYPES:
            check(x.to(dtype), fmt, monkeypatch, f"{name} {dtype}")
