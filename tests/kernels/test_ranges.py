"""kernels/ranges.py: ``unit_bound`` is the largest magnitude each element's scaling unit can output.

Checked against the reference kernels (``fake_quantize(..., backend="reference")``) on heavy-tailed
random tensors with outliers and ragged last units, in float32 and bfloat16 (float16 and the
``emulate=seed`` variants under ``-m slow``):

1. it is an upper bound: ``|q| <= bound`` wherever q is finite;
2. what lies above it is clipped: ``|q| == bound`` (saturating formats) or ``|q| ∈ {bound, Inf}``
   (formats that overflow: casts, hif8 with an Inf overflow mode);
3. it is tight: in a unit holding some ``|x| >= bound``, ``max |q| == bound``; and an element set
   to exactly ±bound comes out as ±bound wherever that leaves the unit's bound (its scale) as it was;
4. pieces cut as ``kernels.chunked`` cuts them give the same bound as the whole tensor;
5. one hand-computed case per family (the ``test_hand_*`` functions).
"""

from __future__ import annotations

import math

import pytest
import torch

import kernels
import kernels.chunked as chunked
import kernels.ranges as ranges
from kernels.ranges import unit_bound

F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16
NAN, INF = math.nan, math.inf

# (format, what happens above the bound): "saturate" -> |q| == bound; "overflow" -> |q| is bound
# or Inf; "never" -> unit_bound returns None.
FORMATS = [
    ("mxfp8_e4m3", "saturate"),
    ("mxfp8_e5m2", "saturate"),
    ("mxfp6_e3m2", "saturate"),
    ("mxfp6_e2m3", "saturate"),
    ("mxfp4_e2m1", "saturate"),
    ("mxint8", "saturate"),
    ("mxfp4_e2m1:scale=ceil", "saturate"),
    ("mxfp4_e2m1:scale=rceil", "saturate"),
    ("mxfp8_e4m3:scale=even", "saturate"),
    ("mxfp6_e2m3:scale=carry", "saturate"),
    ("mxfp8_e4m3:minus_exp=1", "saturate"),
    ("mxfp4_e2m1:minus_exp=2", "saturate"),
    ("mxfp4_e2m1:minus_exp=auto", "saturate"),
    ("mxfp8_e4m3:minus_exp=auto-fix", "saturate"),
    ("mxfp4_e2m1:shared_exp=none", "saturate"),
    ("mxfp4_e2m1:block=16,axis=0", "saturate"),
    ("mxfp8_e4m3:block=0", "saturate"),
    ("mxfp4_e2m1:round=floor", "saturate"),
    ("mxfp8_e4m3:scale_bits=4", "saturate"),
    ("mxint8:flush_fp32_subnorms=true", "saturate"),
    ("mxfp4", "saturate"),
    ("e2m1k8b32c", "saturate"),
    ("e2m1k8b32", "saturate"),
    ("e4m3k8b32c:axis=0", "saturate"),
    ("e2m1K4k4B8b4c", "saturate"),
    ("e2m1K4k4B8b4c:axis=0", "saturate"),
    ("e3m4K2k3B4b8off20", "saturate"),
    ("e0m3k8b16", "saturate"),
    ("e0m3k8b16c", "saturate"),
    ("nvf4", "saturate"),
    ("nvf4:axis=0", "saturate"),
    ("nvfp4", "saturate"),
    ("tmx4", "saturate"),
    ("tmx6", "saturate"),
    ("tmx6:axis=0", "saturate"),
    ("nf4", "never"),
    ("nf4B8b64", "saturate"),
    ("nf4B4b64", "saturate"),
    ("nf4B2b16:axis=0", "saturate"),
    ("fp8_e4m3", "saturate"),
    ("fp8_e5m2", "saturate"),
    ("fp16", "overflow"),
    ("bf16", "overflow"),
    ("fp32", "never"),
    ("int8sym", "saturate"),
    ("int8sym:axis=0", "saturate"),
    ("hif8", "saturate"),
    ("hif8:scale=none", "saturate"),
    ("hif8:scale=none,overflow=inf", "overflow"),
    ("hif8:scale=none,overflow=tof8", "overflow"),
    ("hif8:variant=paper", "overflow"),
    ("hif8:k=1e6,out=fp32", "saturate"),
    ("hif8:k=1e6,overflow=inf", "overflow"),
    ("hifx2_v12", "saturate"),
    ("hifx3_v12", "saturate"),
    ("hifx4_v12", "saturate"),
    ("hifx5_v12", "saturate"),
    ("hifx4_v12:axis=0", "saturate"),
    ("hifx4_v12:variant=numpy", "saturate"),
    ("hif4_paper", "saturate"),
    ("hif4_paper:axis=0", "saturate"),
    ("dhif8", "saturate"),
    ("dhif8:amax=100.0", "saturate"),
]

# Seed emulation: the seed's scale arithmetic in the input dtype (run under -m slow).
SEED_FORMATS = [
    ("mxfp8_e4m3:emulate=seed", "saturate"),
    ("mxfp4_e2m1:scale=ceil,emulate=seed", "saturate"),
    ("mxfp4_e2m1:minus_exp=auto,emulate=seed", "saturate"),
    ("mxfp4_e2m1:shared_exp=none,emulate=seed", "saturate"),
    ("mxint8:flush_fp32_subnorms=true,emulate=seed", "saturate"),
    ("mxfp4:emulate=seed", "saturate"),
    ("e2m1K4k4B8b4c:emulate=seed", "saturate"),
    ("e0m3k8b16c:emulate=seed", "saturate"),
    ("tmx6:emulate=seed", "saturate"),
    ("nvf4:emulate=seed", "saturate"),
    ("nf4B4b64:emulate=seed", "saturate"),
    ("fp8_e4m3:emulate=seed", "saturate"),
    ("fp16:emulate=seed", "overflow"),
    ("int8sym:emulate=seed", "saturate"),
    ("hif8:emulate=seed", "saturate"),
    ("hif8:scale=none,emulate=seed", "saturate"),
    ("hif8:scale=none,overflow=tof8,underflow=flush,emulate=seed", "overflow"),
    ("hifx4_v12:emulate=seed", "saturate"),
    ("hifx4_v12:variant=numpy,emulate=seed", "saturate"),
    ("dhif8:emulate=seed", "saturate"),
    ("mxfp8_e4m3:block=16,axis=0,emulate=seed", "saturate"),
    ("e2m1K4k4B8b4c:axis=0,emulate=seed", "saturate"),
    ("tmx6:axis=0,emulate=seed", "saturate"),
    ("nvf4:axis=0,emulate=seed", "saturate"),
    ("nf4B4b16:axis=0,emulate=seed", "saturate"),
    ("hifx4_v12:axis=0,emulate=seed", "saturate"),
]

SHAPES = [(5, 200), (3, 4, 77), (70, 9)]


def heavy(shape, dtype, seed: int) -> torch.Tensor:
    """Heavy-tailed values: normal times a log-normal spread per row, 2% outliers up to ~1e5·x,
    some units scaled down hard (all-zero and tiny blocks appear too), and exact powers of two."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * torch.exp(torch.randn(shape, generator=g) * 1.5)
    out = torch.rand(shape, generator=g)
    x = torch.where(out < 0.02, x * 10.0 ** torch.randint(2, 6, shape, generator=g).float(), x)
    x = torch.where(out > 0.995, torch.exp2(torch.randint(-8, 12, shape, generator=g).float()), x)
    flat = x.reshape(-1)
    flat[: min(40, flat.numel())] = 0.0  # an all-zero unit at the start (most layouts)
    flat[flat.numel() // 3 : flat.numel() // 3 + 20] *= 1e-6
    if dtype == F16:
        x = x.clamp(-60000.0, 60000.0)
    return x.to(dtype)


def reference(x: torch.Tensor, spec) -> torch.Tensor:
    return kernels.fake_quantize(x, spec, backend="reference")


def unit_ids(x: torch.Tensor, spec) -> torch.Tensor:
    """An int64 tensor of x's shape numbering each element's scaling unit (the elements sharing
    one scale): the layout of every family, written out independently of kernels.ranges."""
    f, n = spec.family, x.numel()
    if f == "fp8tensor" or (f == "hif8" and spec["scale"] == "tensor" and spec["variant"] == "seed"):
        return torch.zeros(x.shape, dtype=torch.int64)
    if f == "dhif8" and spec["amax"] is None:
        return torch.zeros(x.shape, dtype=torch.int64)
    if f in ("cast", "hif8", "dhif8") or (f == "mx" and spec["shared_exp"] == "none"):
        return torch.arange(n).view(x.shape)
    axis = spec["axis"] % x.dim()
    unit = {
        "mx": lambda: spec["block"] or x.shape[axis],
        "qtype": lambda: spec["b"],
        "nf4grid": lambda: spec["b"],
        "tmx": lambda: 2,
        "nvf4": lambda: 16,
        "nvfp4": lambda: 16,
        "nf4": lambda: spec["block"],
        "hifx": lambda: 4,
        "hif4_paper": lambda: 4,
        "int8sym": lambda: x.shape[axis],
    }[f]()
    outer, length, inner = math.prod(x.shape[:axis]), x.shape[axis], math.prod(x.shape[axis + 1 :])
    o = torch.arange(outer).view(-1, 1, 1)
    j = torch.arange(length).view(1, -1, 1) // unit
    i = torch.arange(inner).view(1, 1, -1)
    per_row = -(-length // unit)
    return ((o * per_row + j) * inner + i).reshape(x.shape)


def per_unit_max(values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """max over each unit of ``values`` (float64, -1 where a unit has none >= 0), per element."""
    v = values.reshape(-1).double()
    idx = ids.reshape(-1)
    m = torch.full((int(idx.max()) + 1,), -1.0, dtype=torch.float64)
    m = m.scatter_reduce(0, idx, v, "amax", include_self=True)
    return m[idx].view(ids.shape)


def _check_all(fmt: str, behaviour: str, dtype: torch.dtype, seeds=(0,)) -> None:
    spec = kernels.parse(fmt)
    for seed in seeds:
        for k, shape in enumerate(SHAPES):
            x = heavy(shape, dtype, seed * 10 + k)
            q = reference(x, spec)
            b = unit_bound(x, spec)
            if behaviour == "never" or (b is None and spec.family == "cast"):
                # None: nothing can clip (a cast to a type as wide as x's, nf4's absmax scaling).
                assert b is None
                fx = torch.isfinite(x)
                assert torch.isfinite(q[fx]).all()
                continue
            _check_bound(x, q, b, spec, behaviour, f"{fmt} {dtype} {shape}")


def _check_bound(x, q, b, spec, behaviour: str, what: str) -> None:
    assert b is not None, what
    assert b.shape == x.shape and b.dtype == F32, what
    ax, aq, bd = x.double().abs(), q.double().abs(), b.double()
    fq, fx = torch.isfinite(aq), torch.isfinite(ax)
    # 1. an upper bound wherever q is finite
    bad = fq & ~(aq <= bd)
    assert not bad.any(), f"{what}: |q| > bound at {_where(bad, ax, aq, bd)}"
    # 2. above the bound: saturated, or (overflow formats) Inf
    above = fx & (ax > bd)
    if behaviour == "saturate":
        ok = aq == bd
    else:
        ok = (aq == bd) | (aq == INF)
    if spec.family == "nf4grid":
        # The level rounds |x|/gmax·7 to 7 (the top) only from 13/14 of the block max up: below
        # that an element above a bound that sits far under gmax (a subnormal E4M3 re-quantized
        # gmax) is not clipped to it. 13/14 of gmax is where the two meet.
        gmax = per_unit_max(torch.where(fx, ax, 0.0), unit_ids(x, spec))
        ok = ok | (bd < gmax * 13 / 14)
    bad = above & ~ok
    assert not bad.any(), f"{what}: above the bound but not clipped to it at {_where(bad, ax, aq, bd)}"
    if _seed_division(spec, x.dtype):
        return
    # 3a. tight: a unit holding |x| >= bound outputs exactly the bound as its max
    ids = unit_ids(x, spec)
    reach = per_unit_max(torch.where(fx & fq & (ax >= bd), 1.0, 0.0), ids) > 0
    qmax = per_unit_max(torch.where(fq, aq, -1.0), ids)
    bad = reach & (qmax != bd)
    assert not bad.any(), f"{what}: unit max |q| != bound at {_where(bad, ax, qmax, bd)}"


def _seed_division(spec, dtype) -> bool:
    """int8sym's seed arithmetic in bf16/fp16: x/step is rounded to the input dtype before the
    integer rounding, so amax/step can come out as 126.5 -> 126 and the row's top 127·step (the
    bound, still an upper bound) is never reached: 3a and 3b do not hold there."""
    return spec.family == "int8sym" and spec.emulate == "seed" and dtype != F32


def _where(mask, ax, aq, bd) -> str:
    i = mask.reshape(-1).nonzero().flatten()[:4].tolist()
    a, q, b = ax.reshape(-1), aq.reshape(-1), bd.reshape(-1)
    return f"{int(mask.sum())} elements, e.g. " + ", ".join(
        f"[{k}] |x|={a[k]!r} |q|={q[k]!r} bound={b[k]!r}" for k in i
    )


def _ids(params):
    return [p[0] for p in params]


# --------------------------------------------------------------------------- properties 1-3


@pytest.mark.parametrize("dtype", [F32, BF16], ids=["f32", "bf16"])
@pytest.mark.parametrize(("fmt", "behaviour"), FORMATS, ids=_ids(FORMATS))
def test_bound_is_an_upper_bound_and_tight(fmt, behaviour, dtype):
    _check_all(fmt, behaviour, dtype)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [F32, BF16, F16], ids=["f32", "bf16", "f16"])
@pytest.mark.parametrize(("fmt", "behaviour"), FORMATS + SEED_FORMATS, ids=_ids(FORMATS + SEED_FORMATS))
def test_bound_more_seeds_and_dtypes(fmt, behaviour, dtype):
    _check_all(fmt, behaviour, dtype, seeds=(1, 2, 3))


def _probe(fmt: str, dtype: torch.dtype, seed: int) -> tuple[int, int] | None:
    """Property 3b: set the first element of every unit to ±bound (in x's dtype); wherever that
    leaves the unit's bound unchanged (so its scale is unchanged), q there must be ±bound.
    Returns (units probed, units whose bound stayed), None where the bound is None."""
    spec = kernels.parse(fmt)
    x = heavy((6, 130), dtype, seed)
    b = unit_bound(x, spec)
    if b is None:
        return None
    if _seed_division(spec, dtype):
        return 0, 0
    ids = unit_ids(x, spec).reshape(-1)
    first = torch.full((int(ids.max()) + 1,), ids.numel(), dtype=torch.int64)
    first = first.scatter_reduce(0, ids, torch.arange(ids.numel()), "amin")
    if spec.family in ("cast", "hif8", "dhif8") and first.numel() > 64:
        first = first[::7]  # elementwise units: a sample is enough
    x2 = x.clone().reshape(-1)
    bf = b.reshape(-1)[first]
    keep = torch.isfinite(bf) & (bf.to(dtype).float() == bf)  # settable exactly in x's dtype
    first, bf = first[keep], bf[keep]
    sign = torch.where(x2[first] < 0, -1.0, 1.0)
    # hif8's tof8 mode: 49152 is the output of [40960, 49152); 49152 itself overflows to Inf.
    at = bf * 0.9 if spec.get("overflow") == "tof8" else bf
    x2[first] = (sign * at).to(dtype)
    x2 = x2.view(x.shape)
    q2 = reference(x2, spec).reshape(-1).double()
    b2 = unit_bound(x2, spec).reshape(-1)
    same = b2[first] == bf
    if spec.family == "nf4grid":
        # the level is 1 only from 13/14 of the block max up (see _check_bound)
        gmax = per_unit_max(x2.double().abs(), unit_ids(x2, spec)).reshape(-1)[first]
        same &= bf.double() >= gmax * 13 / 14
    got = q2[first][same]
    want = (sign * bf.double())[same]
    assert torch.equal(got, want), f"{fmt} {dtype}: set to ±bound, got {got[got != want][:4].tolist()}"
    return int(keep.sum()), int(same.sum())


#: Formats whose bound always lies above the unit's amax, so that setting an element to it changes
#: the scale: the per-tensor HiF8 scales (amax maps to 8 of 32768), and the ceil and carry rules
#: (amax/2^s < 2^(emax+1/2) or <= 2^emax, below max_norm). 3b has nothing to test there.
_UNREACHABLE = {
    "hif8",
    "hif8:k=1e6,out=fp32",
    "hif8:k=1e6,overflow=inf",
    "dhif8",
    "dhif8:amax=100.0",
    "mxfp4_e2m1:scale=ceil",
    "mxfp6_e2m3:scale=carry",
    "mxfp4",
    "e2m1k8b32c",
    "e4m3k8b32c:axis=0",
    "e2m1K4k4B8b4c",
    "e2m1K4k4B8b4c:axis=0",
}


@pytest.mark.parametrize("dtype", [F32, BF16], ids=["f32", "bf16"])
@pytest.mark.parametrize(("fmt", "behaviour"), FORMATS, ids=_ids(FORMATS))
def test_setting_an_element_to_the_bound_gives_the_bound(fmt, behaviour, dtype):
    counts = _probe(fmt, dtype, seed=5)
    if counts is None:
        assert behaviour == "never" or kernels.parse(fmt).family == "cast"
        return
    probed, kept = counts
    if fmt not in _UNREACHABLE:
        assert probed > 0 and kept > 0, f"{fmt}: no unit kept its scale ({probed} probed)"


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [F32, BF16, F16], ids=["f32", "bf16", "f16"])
@pytest.mark.parametrize(("fmt", "behaviour"), FORMATS + SEED_FORMATS, ids=_ids(FORMATS + SEED_FORMATS))
def test_setting_an_element_to_the_bound_more(fmt, behaviour, dtype):
    for seed in (6, 7, 8):
        _probe(fmt, dtype, seed)


def test_nf4_never_exceeds_the_block_absmax():
    """Why nf4's bound is None: no output exceeds its block's absmax (formats-mx.md §5.1)."""
    x = heavy((7, 300), F32, 3)
    q = reference(x, "nf4:block=64").abs()
    ids = unit_ids(x, kernels.parse("nf4:block=64"))
    assert (q <= per_unit_max(x.abs(), ids)).all()
    assert unit_bound(x, "nf4") is None


# --------------------------------------------------------------------------- property 4: pieces


def _pieces(spec) -> list[tuple[slice, ...]]:
    """Indices into the (outer, n, inner) view as kernels.chunked cuts it: groups of rows, rows cut
    at multiples of the unit along the axis (the ragged tail in the last piece), inner columns;
    anywhere for elementwise formats."""
    kind, unit = chunked.layout(spec)
    out = [(slice(0, 1),), (slice(1, 3),), (slice(3, None),), (slice(None), slice(None), slice(1, 2))]
    if unit:
        out += [(slice(0, 1), slice(a, a + 3 * unit)) for a in range(0, 200, 3 * unit)]
    if kind in ("elementwise", "tensor") and unit is None:
        out.append((slice(None), slice(5, 9)))
    return out


@pytest.mark.parametrize(("fmt", "behaviour"), FORMATS, ids=_ids(FORMATS))
def test_pieces_match_the_whole_tensor(fmt, behaviour):
    _check_pieces(fmt, behaviour, F32)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bf16", "f16"])
@pytest.mark.parametrize(("fmt", "behaviour"), FORMATS + SEED_FORMATS, ids=_ids(FORMATS + SEED_FORMATS))
def test_pieces_match_the_whole_tensor_more(fmt, behaviour, dtype):
    _check_pieces(fmt, behaviour, dtype)


def _check_pieces(fmt: str, behaviour: str, dtype: torch.dtype) -> None:
    spec = kernels.parse(fmt)
    has_axis = "axis" in dict(spec.options)
    s1 = spec.replace(axis=1) if has_axis else spec  # pieces are (outer, n, inner) views
    for shape in [(2, 3, 200), (200, 4, 3), (3, 2, 77)]:
        x = heavy(shape, dtype, 11)
        axis = spec["axis"] % 3 if has_axis else 1
        outer, n, inner = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1 :])
        whole = unit_bound(x, spec)
        if whole is None:
            assert behaviour == "never" or spec.family == "cast"
            continue
        v, w = x.view(outer, n, inner), whole.reshape(outer, n, inner)
        amax = x.abs().amax().float()
        for idx in _pieces(spec):
            p = v[idx]
            if p.numel() == 0:
                continue
            got = unit_bound(p, s1, amax)
            assert torch.allclose(got, w[idx], rtol=0, atol=0, equal_nan=True), f"{fmt} {shape} piece {idx}"


@pytest.mark.parametrize(
    "fmt", ["mxfp4_e2m1", "hifx4_v12", "e2m1K4k4B8b4c", "tmx6", "nvfp4", "mxfp4_e2m1:shared_exp=none"]
)
def test_large_tensors_split_into_pieces_like_the_kernels(monkeypatch, fmt):
    """A large CPU tensor is cut by kernels.chunked (tiny pieces here) and gives the same bound."""
    x = heavy((9, 500), F32, 12)
    whole = unit_bound(x, fmt)  # below MIN_SPLIT_ELEMS: one piece
    monkeypatch.setattr(chunked, "CHUNK_ELEMS", 256)
    monkeypatch.setattr(chunked, "MIN_SPLIT_ELEMS", 1024)
    assert ranges._worth_splitting(x, kernels.parse(fmt))
    split = unit_bound(x, fmt)
    assert torch.equal(split, whole)


# --------------------------------------------------------------------------- special values


@pytest.mark.parametrize("dtype", [F32, BF16], ids=["f32", "bf16"])
@pytest.mark.parametrize(("fmt", "behaviour"), FORMATS, ids=_ids(FORMATS))
def test_nan_and_inf_units_do_not_raise(fmt, behaviour, dtype):
    """NaN/±Inf in some units: no error, a bound for every element, still an upper bound for
    every finite output, and units without specials keep the bound they had without them."""
    spec = kernels.parse(fmt)
    x = heavy((6, 128), dtype, 13)
    y = x.clone()
    y[0, 3], y[1, 70], y[2, 5], y[3, 100] = NAN, INF, -INF, NAN
    b = unit_bound(y, spec)
    if b is None:
        assert behaviour == "never" or spec.family == "cast"
        return
    assert b.shape == y.shape
    q = reference(y, spec).double()
    fq = torch.isfinite(q)
    assert (q.abs()[fq] <= b.double()[fq]).all()
    # Units whose independent scaling group (kernels.chunked's unit) holds no special keep the
    # bound they had without the specials.
    kind, unit = chunked.layout(spec)
    if kind == "tensor":
        return  # one amax for the whole tensor: the specials reach every scale
    group = unit_ids(y, spec) if kind == "elementwise" else _group_ids(y, spec, unit)
    special = per_unit_max(torch.where(torch.isfinite(y), 0.0, 1.0), group) > 0
    clean = unit_bound(x, spec)
    assert torch.allclose(b[~special], clean[~special], rtol=0, atol=0, equal_nan=True)


def _group_ids(x: torch.Tensor, spec, unit: int | None) -> torch.Tensor:
    axis = spec["axis"] % x.dim()
    outer, length, inner = math.prod(x.shape[:axis]), x.shape[axis], math.prod(x.shape[axis + 1 :])
    unit = unit or length
    o = torch.arange(outer).view(-1, 1, 1)
    j = torch.arange(length).view(1, -1, 1) // unit
    i = torch.arange(inner).view(1, 1, -1)
    return ((o * -(-length // unit) + j) * inner + i).reshape(x.shape)


def test_empty_tensors():
    assert unit_bound(torch.zeros(0, 32), "mxfp4_e2m1").shape == (0, 32)
    assert unit_bound(torch.zeros(3, 0), "fp8_e4m3").shape == (3, 0)
    assert unit_bound(torch.zeros(0), "nf4") is None


def _corner(formats, dtypes) -> None:
    """Properties 1-3 on the named corner cases (tests/corner_cases.py): zeros, subnormals, huge
    values, powers of two ± 1 ulp, just over max, ties, NaN/Inf in a block, ragged tails..."""
    from corner_cases import as_dtype, corner_cases

    for name, x0 in corner_cases().items():
        for dtype in dtypes:
            x = as_dtype(x0, dtype)
            if x is None:
                continue
            for fmt, behaviour in formats:
                b = unit_bound(x, fmt)
                if b is None:
                    continue
                _check_bound(x, reference(x, fmt), b, kernels.parse(fmt), behaviour, f"{fmt} {name} {dtype}")


def test_corner_cases():
    _corner(FORMATS, [F32])


@pytest.mark.slow
def test_corner_cases_all_dtypes_and_seed():
    _corner(FORMATS + SEED_FORMATS, [F32, BF16, F16])


# --------------------------------------------------------------------------- 5: hand-computed cases


def _block(values, n=32, dtype=F32) -> torch.Tensor:
    x = torch.zeros(n, dtype=F32)
    x[: len(values)] = torch.tensor(values, dtype=F32)
    return x.to(dtype).view(1, n)


def _bq(x, fmt):
    b = unit_bound(x, fmt)
    return b, reference(x, fmt)


def test_hand_mx_ocp_floor():
    # MXFP4 (E2M1, emax 2): s = floor(log2 amax) - 2, bound 6·2^s.
    b, q = _bq(torch.cat([_block([3.0, 1.0]), _block([7.0, -1.0])], 1), "mxfp4_e2m1")
    assert b[0, 0] == 3.0 and b[0, 32] == 6.0  # amax 3 -> s = -1: 3.0; amax 7 -> s = 0: 6.0
    assert q[0, 32] == 6.0  # 7.0 is clipped
    # E4M3 (448 = 1.75·2^8): amax 1.9 -> s = -8, bound 1.75; E5M2: 57344·2^-15 = 1.75;
    # E3M2 28·2^-4 = 1.75; E2M3 7.5·2^-2 = 1.875; INT8 (127/64)·2^0.
    for fmt, want in [
        ("mxfp8_e4m3", 1.75),
        ("mxfp8_e5m2", 1.75),
        ("mxfp6_e3m2", 1.75),
        ("mxfp6_e2m3", 1.875),
        ("mxint8", 127 / 64),
    ]:
        b, q = _bq(_block([1.99, 0.5]), fmt)
        assert b[0, 0] == want and q[0, 0] == want, fmt


def test_hand_mx_scale_rules():
    x = torch.cat([_block([3.0]), _block([4.0]), _block([7.0]), _block([3.5]), _block([2.5])], 1)
    cases = {
        "mxfp4_e2m1:scale=ceil": [6.0, 6.0, 12.0, 6.0, 6.0],  # ceil(log2 amax) - 2
        "mxfp4_e2m1:scale=rceil": [3.0, 6.0, 12.0, 6.0, 3.0],  # smallest 2^s with amax/2^s <= 6
        "mxfp4_e2m1:scale=even": [3.0, 6.0, 12.0, 6.0, 3.0],  # floor, +1 when amax rounds up to 2^(E+1) (>= 1.75·2^E)
        "mxfp4_e2m1:scale=carry": [6.0, 6.0, 12.0, 6.0, 3.0],  # round(log2 amax): 1.5·2 >= √2·2
        "mxfp4_e2m1:minus_exp=1": [3.0, 3.0, 6.0, 3.0, 3.0],  # ceil(log2 amax) - 1 - 2: 4.0 clips to 3
        "mxfp4_e2m1:minus_exp=0": [6.0, 6.0, 12.0, 6.0, 6.0],
    }
    for fmt, want in cases.items():
        b, q = _bq(x, fmt)
        assert b[0, ::32].tolist() == want, fmt
    b, q = _bq(x, "mxfp4_e2m1:minus_exp=1")
    assert q[0, 32] == 3.0  # the exact power of two 4.0 is clipped with minus_exp=1


def test_hand_mx_auto():
    # [1.05, 0.35]: ceil -> X = 0.5 (0.35 -> 0.25, err 0.01); one lower -> X = 0.25 (0.35 -> 0.375,
    # err 0.000625; 1.05 -> 1.0 either way): the seed's MSE choice takes d = 1, bound 1.5.
    # [1.9, 0.7]: d = 1 would clip 1.9 to 1.5, so d = 0 and the bound stays 3.
    x = torch.cat([_block([1.05, 0.35]), _block([1.9, 0.7])], 1)
    for fmt in ("mxfp4_e2m1:minus_exp=auto", "mxfp4_e2m1:minus_exp=auto,emulate=seed"):
        b, q = _bq(x, fmt)
        assert b[0, ::32].tolist() == [1.5, 3.0], fmt
        assert q[0, 1] == 0.375 and q[0, 32] == 2.0


def test_hand_mx_other_options():
    # shared_exp=none: each element its own scale; 1.75 -> s = -2, bound 1.5 (clipped).
    b, q = _bq(torch.tensor([[1.75, 1.25, 3.0, 0.0]]), "mxfp4_e2m1:shared_exp=none")
    assert b[0, :3].tolist() == [1.5, 1.5, 3.0] and q[0, 0] == 1.5
    # block=16 along axis 0: rows 0-15 share a scale, 16-19 (ragged) another.
    x = torch.ones(20, 3)
    x[3, 1], x[17, 2] = 7.0, 100.0
    b, _ = _bq(x, "mxfp4_e2m1:block=16,axis=0")
    assert b[:16, 1].eq(6.0).all() and b[:16, 0].eq(1.5).all() and b[16:, 2].eq(96.0).all()
    # scale_bits=4: s = E - 8 in [-7, 7]; amax 2^16 -> s = 8 overflows (NaN block); 2^-20 -> s = -7.
    b, q = _bq(torch.cat([_block([2.0**16]), _block([2.0**-20])], 1), "mxfp8_e4m3:scale_bits=4")
    assert math.isnan(b[0, 0]) and math.isnan(q[0, 0]) and b[0, 32] == 448 * 2.0**-7
    # flush_fp32_subnorms: a block of fp32 subnormals is zeroed: its bound is 0.
    b, q = _bq(torch.cat([_block([1e-39]), _block([1.0])], 1), "mxint8:flush_fp32_subnorms=true")
    assert b[0, 0] == 0.0 and q[0, 0] == 0.0 and b[0, 32] == 127 / 64
    # block=0: one scale over the whole row.
    b, _ = _bq(torch.tensor([[0.1] * 40 + [3.0]]), "mxfp4_e2m1:block=0")
    assert b.eq(3.0).all()


def test_hand_mx_seed_log2():
    # emulate=seed takes E = floor(fl32(log2 amax)): 2^5·(1 - 2^-24) logs to exactly 5.0 in float32,
    # so the seed's scale is one binade up (formats-mx.md §2.8-b): bound 448·2^(5-8) = 56, not 28.
    a = 32.0 * (1 - 2.0**-24)
    b, q = _bq(_block([a]), "mxfp8_e4m3:emulate=seed")
    assert b[0, 0] == 56.0 and unit_bound(_block([a]), "mxfp8_e4m3")[0, 0] == 28.0


def test_hand_qtype():
    x = torch.cat([_block([7.0]), _block([5.0]), _block([1.5])], 1)
    # mxfp4 = e2m1k8b32c: g = round(log2(amax + 9.6e-7)) - 2 (carry): 7 -> 3 -> bound 12 (7 -> 8,
    # nothing clipped); 5 -> 2 -> 6; 1.5 -> 1 (1.5 >= √2) -> 3.
    b, q = _bq(x, "mxfp4")
    assert b[0, ::32].tolist() == [12.0, 6.0, 3.0] and q[0, 0] == 8.0
    b, q = _bq(x, "e2m1k8b32")  # floor: 7 -> 6 (clipped)
    assert b[0, ::32].tolist() == [6.0, 6.0, 1.5] and q[0, 0] == 6.0
    # Two levels, e2m1K4k4B8b4c: inner blocks of 4, 8 per group; an inner exponent may sit at most
    # 2^4 - 1 = 15 below the group's: amax 2^20 -> g = 18; amax 1.0 -> g = -2, raised to 3: bound 48.
    y = torch.zeros(1, 32)
    y[0, 0], y[0, 4] = 2.0**20, 1.0
    b, _ = _bq(y, "e2m1K4k4B8b4c")
    assert b[0, 0] == 6 * 2.0**18 and b[0, 4] == 48.0 and b[0, 8] == 48.0
    # The exponent window clips a huge block: e4m3k8b32c allows g <= 127 - 8, so amax 3e38 (g = 120)
    # gets 448·2^119 = 2.977e38 (clipped to it). off400 moves the window to [-407, -153]: every
    # scale is below 2^-127 and flushes: bound 0.
    b, q = _bq(_block([3e38, 1.0]), "e4m3k8b32c")
    assert b[0, 0] == 448 * 2.0**119 and q[0, 0] == b[0, 0]
    b, q = _bq(_block([3.0, 1e-3]), "e4m3K0k8B1b32off400")
    assert b[0, 0] == 0.0 and q.eq(0).all()
    # E = 0 (integer mantissa, M = 3): g = floor(log2 amax) - 2, bound 7·2^g; carry bumps g when the
    # max would round to 8: 7.9 -> g = 0, round(7.9) = 8 > 7 -> g = 1, bound 14.
    b, _ = _bq(_block([7.9], 16), "e0m3k8b16")
    b2, _ = _bq(_block([7.9], 16), "e0m3k8b16c")
    assert b[0, 0] == 7.0 and b2[0, 0] == 14.0


def test_hand_tmx():
    # tmx6 (M = 4): pair [1.9, 0.1]: g = 0 = G -> bound (2 - 2^-3)·2^0 = 1.875 (1.9 clipped);
    # a zero pair: g = -45, e = max(g, G - 1) = -1 -> 0.9375. tmx4 (M = 2): 1.5·2^e.
    x = _block([1.9, 0.1], 16)
    b, q = _bq(x, "tmx6")
    assert b[0, 0] == b[0, 1] == 1.875 and b[0, 2] == 0.9375 and q[0, 0] == 1.875
    b, _ = _bq(x, "tmx4")
    assert b[0, 0] == 1.5 and b[0, 2] == 0.75


def test_hand_nvfp4():
    # nvf4: S = e4m3(amax/6): amax 6 -> 1 -> bound 6; 7 -> 1.1667 -> 1.125 -> 6.75 (7 clipped);
    # 5000 -> 833 clipped to 448 -> 2688.
    x = torch.cat([_block([6.0], 16), _block([7.0], 16), _block([5000.0], 16)], 1)
    b, q = _bq(x, "nvf4")
    assert b[0, ::16].tolist() == [6.0, 6.75, 2688.0] and q[0, 16] == 6.75 and q[0, 32] == 2688.0
    # nvfp4: tensor amax 2688 -> pts = 1; s_b = e4m3(amax_b/6) (at least 2^-6): bounds 6, 6.75,
    # 6·2^-6 for a block with amax 0.001, and 6·448 for the 2688 block.
    x = torch.cat([_block([6.0], 16), _block([7.0], 16), _block([0.001], 16), _block([2688.0], 16)], 1)
    b, _ = _bq(x, "nvfp4")
    assert b[0, ::16].tolist() == [6.0, 6.75, 6 * 2.0**-6, 2688.0]


def test_hand_nf4_grid():
    # nf4B4b64: block maxima [1.0, 0.3, 0.5, 0.0625] in one group: gmax' = e4m3(gmax/omax·448)/448·omax.
    # 0.3·448 = 134.4 -> 128 (E4M3 step 16 there) -> 0.2857143: the 0.3 element is clipped to it.
    x = torch.zeros(1, 256)
    for i, v in enumerate([1.0, 0.3, 0.5, 0.0625]):
        x[0, 64 * i] = v
    b, q = _bq(x, "nf4B4b64")
    want = torch.tensor([448.0, 128.0, 224.0, 28.0]) / 448.0 * 1.0
    assert torch.equal(b[0, ::64], want) and q[0, 64] == want[1]
    assert unit_bound(x, "nf4") is None  # the code book tops out at the block absmax


def test_hand_fp8_tensor():
    # scale = max_norm / amax: the grid top max_norm/scale is amax itself here.
    b, q = _bq(torch.tensor([[448.0, 17.0, -9.0]]), "fp8_e4m3")
    assert b.eq(448.0).all()
    b, _ = _bq(torch.tensor([[57344.0, 1.0]]), "fp8_e5m2")
    assert b.eq(57344.0).all()
    b, _ = _bq(torch.tensor([[1.0, 0.5]]), "fp8_e4m3")
    assert b.eq(1.0).all()
    b, q = _bq(torch.tensor([[1e-8, 3e-9]]), "fp8_e4m3")  # below the 2^-23 guard: unchanged
    assert b.eq(INF).all() and q[0, 0] == 1e-8


def test_hand_casts():
    x = torch.tensor([[1.0, 65504.0, 65519.0, 65520.0]])
    b, q = _bq(x, "fp16")
    assert b.eq(65504.0).all() and q[0].tolist() == [1.0, 65504.0, 65504.0, INF]
    # From bfloat16 the largest value that survives fp16 is 65280 (bf16 65536 overflows).
    xb = torch.tensor([[65280.0, 65536.0]], dtype=BF16)
    b, q = _bq(xb, "fp16")
    assert b.eq(65280.0).all() and q[0].float().tolist() == [65280.0, INF]
    b, q = _bq(torch.tensor([[3.4e38, 1.0]]), "bf16")
    assert b.eq(3.3895313892515355e38).all() and q[0, 0] == INF
    assert unit_bound(x, "fp32") is None and unit_bound(xb, "bf16") is None
    assert unit_bound(torch.ones(2, 2, dtype=F16), "bf16")[0, 0] == 65280.0  # fp16 65504 -> bf16 65536


def test_hand_int8sym():
    # step = amax/127, bound 127·step: exactly 127 for [127, 1]; for amax 1.9872057 the float32
    # product 127·fl(amax/127) = 1.9872056 is one ulp below amax, which then clips to it.
    b, q = _bq(torch.tensor([[127.0, 1.0], [1.9872057437896729, 0.5]]), "int8sym")
    assert b[0].eq(127.0).all() and b[1, 0].item() == 1.9872056245803833 and q[1, 0] == b[1, 0]
    b, _ = _bq(torch.tensor([[1.0, 4.0], [2.0, -8.0]]), "int8sym:axis=0")
    assert b[:, 0].eq(2.0).all() and b[:, 1].eq(8.0).all()


def test_hand_hif8():
    x = torch.tensor([[64.0, -3.0, 1.0]])
    # quant_hif8: s = 8/fl(64 + 2^-23) = 1/8 exactly, bound 32768/s = 262144 (never reached).
    b, _ = _bq(x, "hif8")
    assert b.eq(262144.0).all()
    y = torch.tensor([[35000.0, 50000.0, 45000.0, 1.0]])
    b, q = _bq(y, "hif8:scale=none")  # saturates at 32768
    assert b.eq(32768.0).all() and q[0, :3].tolist() == [32768.0] * 3
    b, q = _bq(y, "hif8:scale=none,overflow=inf")  # 32768 below 40960, Inf from there
    assert b.eq(32768.0).all() and q[0, :3].tolist() == [32768.0, INF, INF]
    b, q = _bq(y, "hif8:scale=none,overflow=tof8")  # 49152 up to 49152, Inf above
    assert b.eq(49152.0).all() and q[0, :3].tolist() == [32768.0, INF, 49152.0]


def test_hand_hifx():
    # hifx4 (M = 3): the micro-group of the max has S = Emax; bound 7·2^(S-2): [1.9, 0.6] -> 1.75 (1.9
    # clipped to it, spec §5.3). The other micro-group of that sub-block: S = Emax - 1; another
    # sub-block without large values: S = Emax - 2.
    x = _block([1.9, 0.6, 0.0, 0.0, 0.3], 64)
    b, q = _bq(x, "hifx4_v12")
    assert b[0, 0] == 1.75 and b[0, 4] == 0.875 and b[0, 8] == 0.4375 and q[0, 0] == 1.75
    assert unit_bound(x, "hifx3_v12")[0, 0] == 1.5 and unit_bound(x, "hifx2_v12")[0, 0] == 1.0
    # A group max >= 2^19 clips L1 at 16: the max's k exceeds 2^M, nothing saturates there (+Inf).
    b, q = _bq(_block([1e6, 1.0], 64), "hifx4_v12")
    assert b[0, 0] == INF and q[0, 0] == 983040.0 and b[0, 8] == 7 * 2.0**14


def test_hand_hif4_paper():
    # Group max 7: sf = bf(7·bf(1/7)) = bf(0.998046875) = 1.0 (a tie, to even), Ea = 1, rA = 1.
    # The max's sub-block: Eb = [7 >= 4] = 1, its micro-group Ec = [7/2 >= 2] = 1: bound 1.75·4 = 7.
    # Sub-block 1 holding 1.9 (bf16 1.8984375): Eb = Ec = 0, bound 1.75 (1.9 clipped); a
    # micro-group with max 2.5 in sub-block 2: Eb = 0, Ec = 1: 3.5.
    x = _block([7.0], 64)
    x[0, 8], x[0, 16] = 1.9, 2.5
    b, q = _bq(x, "hif4_paper")
    assert b[0, 0] == 7.0 and b[0, 8] == 1.75 and b[0, 16] == 3.5 and q[0, 8] == 1.75


def test_hand_dhif8():
    # scaler = fl32(8 / amax): amax 8 -> 1, bound 32768; amax=100 given -> 32768/fl32(0.08) = 409600.
    b, _ = _bq(torch.tensor([[8.0, 1.0]]), "dhif8")
    assert b.eq(32768.0).all()
    b, q = _bq(torch.tensor([[1e6, 1.0]]), "dhif8:amax=100.0")
    assert b.eq(409600.0).all() and q[0, 0] == 409600.0


# --------------------------------------------------------------------------- helpers used above


def test_bit_level_e6m2_equals_the_reference():
    """``ranges._e6m2_finite`` (hif4_paper's level-1 scale in bit arithmetic) on every finite bf16 >= 0."""
    from kernels.reference.hif4 import _e6m2

    v = torch.arange(0, 0x7F80, dtype=torch.int32).to(torch.int16).view(BF16).float()
    assert torch.equal(ranges._e6m2_finite(v.clone()), _e6m2(v))


@pytest.mark.parametrize("unit", [2, 4, 16])
def test_spread_tricks(unit):
    """The bit-pattern repeats of _spread equal a plain repeat (values bf16 holds, for unit 4)."""
    b = torch.tensor([1.5, 3.0, INF, 0.0, 2.0**-100, NAN, 7.0 * 2**60]).repeat(3).view(3, 7, 1, 1)
    x3 = torch.zeros(3, 7 * unit - 1, 1)
    got = ranges._spread(b, unit, x3, torch.Size((3, 7 * unit - 1)), bf16_exact=True)
    want = b.view(3, 7).repeat_interleave(unit, dim=1)[:, :-1]
    assert torch.allclose(got, want, rtol=0, atol=0, equal_nan=True)


# --------------------------------------------------------------------------- devices


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [F32, BF16], ids=["f32", "bf16"])
@pytest.mark.parametrize(("fmt", "behaviour"), FORMATS, ids=_ids(FORMATS))
def test_cuda_bound_equals_cpu_bound(fmt, behaviour, dtype):
    g = torch.Generator().manual_seed(7)
    x = (torch.randn(96, 200, generator=g) * torch.rand(96, 200, generator=g).pow(-2)).to(dtype)
    x[3, :40] = 0
    cpu, gpu = unit_bound(x, fmt), unit_bound(x.cuda(), fmt)
    if cpu is None:
        assert gpu is None
        return
    assert gpu.device.type == "cuda" and gpu.shape == cpu.shape
    gpu = gpu.cpu()
    assert torch.equal(cpu.isnan(), gpu.isnan())
    assert torch.equal(cpu.nan_to_num(0.0), gpu.nan_to_num(0.0))
