"""What every Triton kernel family shares: float bit helpers, typed loads and stores, the
tensor absmax, and the fused statistics epilogue with the merge of its partials.

A family's fused kernel computes, per program, a 2-D tile ``x`` (the input as float32), ``q``
(its fake quantization as float32, already rounded as the output dtype rounds it), ``valid``
(the tile's in-bounds mask) and the clip bound of each element (anything that broadcasts
against the tile; +Inf for "never clips", NaN counts nothing), then calls
:func:`stats_store`. The launcher allocates the partials with :func:`partials` and merges
them on the device with :func:`reduce` into a :class:`kernels.stats.ErrorSums` equal to
``error_sums_ref(x, q, unit_bound(x, spec))``: the counts exactly, the sums to float64 rounding
(they are float64 per program, and only their order differs).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from ..stats import ErrorSums

__all__ = [
    "IN_KIND",
    "COUNTS",
    "FSUMS",
    "pow2",
    "bf16_bits",
    "round_out",
    "load_f32",
    "store_out",
    "stats_store",
    "in_arg",
    "partials",
    "reduce",
    "out_kind",
    "AMAX_KEY",
    "tensor_absmax",
    "along_last",
]

#: Input/output dtype -> the kind code the kernels take as a constexpr.
IN_KIND = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
#: bfloat16 through Triton's own bf16 type: loads widen in one instruction and stores round
#: with the hardware's RNE conversion (NaN to a canonical NaN). Triton's interpreter has no
#: bfloat16 (numpy does not), so there bf16 travels as int16 bits and is converted by hand,
#: with the same results. Decided, like Triton's own choice, when this module is imported.
_NATIVE_BF16 = os.environ.get("TRITON_INTERPRET", "0") != "1"
NATIVE_BF16 = tl.constexpr(_NATIVE_BF16)
#: Per-program int32 counters, in this order.
COUNTS = ("numel", "nan_in", "inf_in", "nan_out", "inf_out", "n", "clipped", "flushed", "nx")
#: Per-program float64 partials, in this order.
FSUMS = ("sum_x2", "sum_q2", "sum_xq", "sum_d2", "sum_ad", "max_ad", "mean_x", "m2_x", "min_x", "max_x")


def out_kind(dtype: torch.dtype) -> int:
    """The kind code of an output dtype (float32, bfloat16 or float16)."""
    return IN_KIND[dtype]


@triton.jit
def pow2(e):
    """2^e as float32 for int32 e in [-149, 127] (subnormal powers built as such)."""
    normal = (tl.maximum(e, -126) + 127) << 23
    sub = 1 << tl.minimum(tl.maximum(e + 149, 0), 22)
    return tl.where(e >= -126, normal, sub).to(tl.float32, bitcast=True)


@triton.jit
def bf16_bits(f):
    """float32 -> bfloat16 bits (RNE, NaN kept quiet) as int32 in [0, 0xFFFF]."""
    b = f.to(tl.int32, bitcast=True)
    m = b & 0x7FFFFFFF
    sign = (b ^ m) >> 16 & 0xFFFF
    r = (m + 0x7FFF + ((m >> 16) & 1)) >> 16
    r = tl.where(m > 0x7F800000, 0x7FC0, r)
    return r | sign


@triton.jit
def round_out(f, OUT_KIND: tl.constexpr):
    """``f`` (float32) as the output dtype rounds it (exactly torch's ``.to(dtype)``), in float32."""
    if OUT_KIND == 1:
        if NATIVE_BF16:
            return f.to(tl.bfloat16).to(tl.float32)
        else:
            return (bf16_bits(f) << 16).to(tl.float32, bitcast=True)
    elif OUT_KIND == 2:
        return f.to(tl.float16).to(tl.float32)
    else:
        return f


@triton.jit
def load_f32(ptr, offs, mask, IN_KIND: tl.constexpr):
    """Elements of a float32 / bfloat16 (see :func:`in_arg`) / float16 tensor as float32;
    masked-off lanes read 0."""
    if IN_KIND == 1:
        if NATIVE_BF16:
            return tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)
        else:
            v = tl.load(ptr + offs, mask=mask, other=0)
            return ((v.to(tl.int32) & 0xFFFF) << 16).to(tl.float32, bitcast=True)
    elif IN_KIND == 2:
        return tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        return tl.load(ptr + offs, mask=mask, other=0.0)


@triton.jit
def store_out(ptr, offs, q, mask, OUT_KIND: tl.constexpr):
    """Store float32 ``q`` rounded to the output dtype (RNE, like torch's ``.to(dtype)``)."""
    if OUT_KIND == 1:
        if NATIVE_BF16:
            tl.store(ptr + offs, q.to(tl.bfloat16), mask=mask)
        else:
            h = bf16_bits(q)
            tl.store(ptr + offs, tl.where(h >= 32768, h - 65536, h).to(tl.int16), mask=mask)
    elif OUT_KIND == 2:
        tl.store(ptr + offs, q.to(tl.float16), mask=mask)
    else:
        tl.store(ptr + offs, q, mask=mask)


@triton.jit
def _flat(v):
    """A 2-D tile as one flat vector in whatever order its registers hold it (no data moves):
    reducing that costs one add per element and one shuffle tree per warp, where reducing
    axis 1 first costs a shuffle tree for every row a thread holds (ten times the instructions)."""
    return tl.reshape(v, [v.shape[0] * v.shape[1]], can_reorder=True)


@triton.jit
def _sum2(v):
    return tl.sum(_flat(v), axis=0)


@triton.jit
def _count(m):
    """The number of true lanes of a 2-D mask. Counted in float32 (exact below 2^24 lanes per
    tile) because float adds issue at twice the rate of int adds on the GPU."""
    return _sum2(tl.where(m, 1.0, 0.0)).to(tl.int32)


@triton.jit
def stats_store(x, q, valid, bound, cnt_ptr, sum_ptr, pid, INPUT_STATS: tl.constexpr = True):
    """Write this program's counts (int32, ``COUNTS``) and float64 partials (``FSUMS``) of the
    2-D tile: x, q float32 (q rounded as the output dtype), ``bound`` broadcastable to the tile.

    The GPU runs short of issue slots here, not of memory bandwidth, so every element costs as
    few instructions as the exact sums allow: NaN/Inf are counted in a branch taken only by
    tiles that have some; ``INPUT_STATS=False`` skips the input's moments (the launcher's
    ``input_stats``), which :func:`reduce` then leaves empty anyway."""
    xa = tl.abs(x)
    qa = tl.abs(q)
    fx = valid & (xa < float("inf"))  # false for NaN too
    both = fx & (qa < float("inf"))
    n_valid = _count(valid)
    n_both = _count(both)
    nx = _count(fx)
    zero = n_valid * 0
    nan_in, inf_in, nan_out, inf_out = zero, zero, zero, zero
    if n_both < n_valid:  # some NaN or Inf in x or q: rare, and counted only then
        nan_in = _count(valid & (x != x))
        inf_in = n_valid - nx - nan_in
        nan_out = _count(valid & (q != q))
        inf_out = _count(valid & (qa == float("inf")))
    base = pid.to(tl.int64) * 9
    tl.store(cnt_ptr + base + 0, n_valid)
    tl.store(cnt_ptr + base + 1, nan_in)
    tl.store(cnt_ptr + base + 2, inf_in)
    tl.store(cnt_ptr + base + 3, nan_out)
    tl.store(cnt_ptr + base + 4, inf_out)
    tl.store(cnt_ptr + base + 5, n_both)
    tl.store(cnt_ptr + base + 6, _count(fx & (xa > bound)))
    tl.store(cnt_ptr + base + 7, _count(fx & (x != 0.0) & (q == 0.0)))
    tl.store(cnt_ptr + base + 8, nx)

    x64 = tl.where(both, x, 0.0).to(tl.float64)
    q64 = tl.where(both, q, 0.0).to(tl.float64)
    d = q64 - x64  # exact in float64
    ad = tl.abs(d)
    fb = pid.to(tl.int64) * 10
    tl.store(sum_ptr + fb + 0, _sum2(x64 * x64))
    tl.store(sum_ptr + fb + 1, _sum2(q64 * q64))
    tl.store(sum_ptr + fb + 2, _sum2(x64 * q64))
    tl.store(sum_ptr + fb + 3, _sum2(d * d))
    tl.store(sum_ptr + fb + 4, _sum2(ad))
    tl.store(sum_ptr + fb + 5, tl.max(_flat(ad), axis=0))
    if INPUT_STATS:
        # The input's moments over its finite elements: mean and M2 around this tile's mean
        # (two passes over registers: exact to float64 rounding however large the mean).
        xf = tl.where(fx, x, 0.0).to(tl.float64)
        mean = _sum2(xf) / tl.maximum(nx, 1).to(tl.float64)
        dev = tl.where(fx, xf - mean, 0.0)
        tl.store(sum_ptr + fb + 6, mean)
        tl.store(sum_ptr + fb + 7, _sum2(dev * dev))
        tl.store(sum_ptr + fb + 8, tl.min(_flat(tl.where(fx, x, float("inf"))), axis=0).to(tl.float64))
        tl.store(sum_ptr + fb + 9, tl.max(_flat(tl.where(fx, x, float("-inf"))), axis=0).to(tl.float64))
    else:
        empty = zero.to(tl.float64)
        tl.store(sum_ptr + fb + 6, empty)
        tl.store(sum_ptr + fb + 7, empty)
        tl.store(sum_ptr + fb + 8, empty)
        tl.store(sum_ptr + fb + 9, empty)


@triton.jit
def _absmax_kernel(x_ptr, part_ptr, n, IN_KIND: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr):
    """Per program, the int max of the magnitude bits of its tile (NaN patterns sort on top)."""
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * (ROWS * COLS) + (tl.arange(0, ROWS)[:, None] * COLS + tl.arange(0, COLS)[None, :])
    valid = offs < n
    x = load_f32(x_ptr, offs, valid, IN_KIND)
    ab = x.to(tl.int32, bitcast=True) & 0x7FFFFFFF
    tl.store(part_ptr + pid, tl.max(tl.max(ab, axis=1), axis=0))


# --------------------------------------------------------------------------- host side


def along_last(x: torch.Tensor, axis: int, cache: dict | None = None) -> torch.Tensor:
    """x with dimension ``axis`` (non-negative) moved last, contiguous: the layout the blocked
    kernels read. With a ``cache`` (the caller's, for one tensor) the moved copy of a non-last
    axis is kept under ``("contiguous_along", axis)``: it does not depend on the format, so the
    next format along that axis reads it instead of transposing x again."""
    if axis == x.dim() - 1 or cache is None:
        return x.movedim(axis, -1).contiguous()
    key = ("contiguous_along", axis)
    if key not in cache:
        cache[key] = x.movedim(axis, -1).contiguous()
    return cache[key]


#: Where :func:`tensor_absmax` keeps a tensor's absmax in the caller's per-tensor cache.
AMAX_KEY = ("absmax",)


def tensor_absmax(x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
    """max |x| over the whole tensor (contiguous float32/bfloat16/float16) as a 0-dim float32
    tensor on x's device, NaN if any element is NaN (the reference's ``abs().amax()``); no host
    synchronization. Kept in ``cache[AMAX_KEY]``, so the first format that needs it on a tensor
    computes it and the others (fp8tensor, hif8, nvfp4) reuse it."""
    if cache is not None and AMAX_KEY in cache:
        return cache[AMAX_KEY]
    rows, cols = 32, 128
    programs = triton.cdiv(x.numel(), rows * cols)
    part = torch.empty(programs, dtype=torch.int32, device=x.device)
    _absmax_kernel[(programs,)](in_arg(x), part, x.numel(), IN_KIND=IN_KIND[x.dtype], ROWS=rows, COLS=cols)
    amax = part.max().view(torch.float32)
    if cache is not None:
        cache[AMAX_KEY] = amax
    return amax


def in_arg(t: torch.Tensor) -> torch.Tensor:
    """What a kernel takes for ``t``: in Triton's interpreter bfloat16 travels as int16 bits
    (see :data:`NATIVE_BF16`); everything else as it is."""
    return t.view(torch.int16) if t.dtype == torch.bfloat16 and not _NATIVE_BF16 else t


def partials(programs: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The (counts, sums) buffers of :func:`stats_store` for ``programs`` programs."""
    cnt = torch.empty((programs, len(COUNTS)), dtype=torch.int32, device=device)
    sums = torch.empty((programs, len(FSUMS)), dtype=torch.float64, device=device)
    return cnt, sums


@triton.jit
def _merge_kernel(cnt_ptr, sum_ptr, cnt_out, sum_out, P, RPP, R: tl.constexpr):
    """Program g merges partial rows [g·RPP, (g+1)·RPP) of (counts [P, 9], sums [P, 10]) into
    row g of (cnt_out int64 [G, 9], sum_out float64 [G, 10]), in the same layout, so a second
    launch merges the merged rows: counts and sums add, max/min reduce, and the moments merge
    by Chan et al.'s parallel formula (mean = sum n_i mean_i / n, M2 = sum M2_i + n_i (mean_i - mean)^2)."""
    g = tl.program_id(0)
    first = g.to(tl.int64) * RPP
    k9 = tl.arange(0, 16)
    c_acc = tl.zeros([16], tl.int64)
    f_acc = tl.zeros([16], tl.float64)
    mx_ad = tl.zeros([R], tl.float64)
    mn_x = tl.full([R], float("inf"), tl.float64)
    mx_x = tl.full([R], float("-inf"), tl.float64)
    nm = tl.zeros([R], tl.float64)
    for start in range(0, RPP, R):
        r = first + start + tl.arange(0, R).to(tl.int64)
        m = (r < P) & (start + tl.arange(0, R) < RPP)
        c = tl.load(cnt_ptr + r[:, None] * 9 + k9[None, :], mask=m[:, None] & (k9 < 9)[None, :], other=0)
        c_acc += tl.sum(c.to(tl.int64), axis=0)
        f = tl.load(sum_ptr + r[:, None] * 10 + k9[None, :], mask=m[:, None] & (k9 < 5)[None, :], other=0.0)
        f_acc += tl.sum(f, axis=0)
        mx_ad = tl.maximum(mx_ad, tl.load(sum_ptr + r * 10 + 5, mask=m, other=0.0))
        mn_x = tl.minimum(mn_x, tl.load(sum_ptr + r * 10 + 8, mask=m, other=float("inf")))
        mx_x = tl.maximum(mx_x, tl.load(sum_ptr + r * 10 + 9, mask=m, other=float("-inf")))
        n_i = tl.load(cnt_ptr + r * 9 + 8, mask=m, other=0).to(tl.float64)
        nm += n_i * tl.load(sum_ptr + r * 10 + 6, mask=m, other=0.0)
    nx = tl.sum(tl.where(k9 == 8, c_acc, 0), axis=0).to(tl.float64)
    mean = tl.sum(nm, axis=0) / tl.maximum(nx, 1.0)
    m2 = tl.zeros([R], tl.float64)
    for start in range(0, RPP, R):
        r = first + start + tl.arange(0, R).to(tl.int64)
        m = (r < P) & (start + tl.arange(0, R) < RPP)
        n_i = tl.load(cnt_ptr + r * 9 + 8, mask=m, other=0).to(tl.float64)
        dm = tl.load(sum_ptr + r * 10 + 6, mask=m, other=0.0) - mean
        m2 += tl.load(sum_ptr + r * 10 + 7, mask=m, other=0.0) + n_i * dm * dm
    tl.store(cnt_out + g * 9 + k9, c_acc, mask=k9 < 9)
    tl.store(sum_out + g * 10 + k9, f_acc, mask=k9 < 5)
    tl.store(sum_out + g * 10 + 5, tl.max(mx_ad, axis=0))
    tl.store(sum_out + g * 10 + 6, mean)
    tl.store(sum_out + g * 10 + 7, tl.sum(m2, axis=0))
    tl.store(sum_out + g * 10 + 8, tl.min(mn_x, axis=0))
    tl.store(sum_out + g * 10 + 9, tl.max(mx_x, axis=0))


#: Partial rows one merge program takes (in chunks of _MERGE_R).
_MERGE_RPP = 2048
_MERGE_R = 256


def reduce(cnt: torch.Tensor, sums: torch.Tensor, input_stats: bool = True) -> ErrorSums:
    """Merge the per-program partials in float64: the counts and sums add, the moments by the
    parallel form of Chan et al.'s formula (M2 = sum M2_i + sum n_i (mean_i - mean)^2).

    On the partials' device, by :func:`_merge_kernel` (one launch per 2048-fold reduction: two
    for up to 4 M programs), then one small transfer to the host. ``input_stats=False`` leaves
    the input's moments empty, like ``error_sums_ref(..., input_stats=False)``."""
    while True:
        P = cnt.shape[0]
        G = triton.cdiv(P, _MERGE_RPP)
        c_out = torch.empty((G, len(COUNTS)), dtype=torch.int64, device=cnt.device)
        s_out = torch.empty((G, len(FSUMS)), dtype=torch.float64, device=cnt.device)
        _merge_kernel[(G,)](cnt, sums, c_out, s_out, P, _MERGE_RPP, R=_MERGE_R)
        cnt, sums = c_out, s_out
        if G == 1:
            break
    counts = cnt.reshape(-1).tolist()
    floats = sums.reshape(-1).tolist()
    out = ErrorSums(**dict(zip(COUNTS, counts, strict=True)))
    out.sum_x2, out.sum_q2, out.sum_xq, out.sum_d2, out.sum_ad = floats[:5]
    out.max_ad = floats[5] if out.n else 0.0
    if not input_stats:
        out.nx = 0
    elif out.nx:
        out.mean_x, out.m2_x, out.min_x, out.max_x = floats[6:10]
    return out
