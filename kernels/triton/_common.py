"""What every Triton kernel family shares: float bit helpers, typed loads and stores, the
tensor absmax, the program drivers, and the fused statistics with the merge of their partials.

A family writes one *tile function* ``TILE(t, args, K) -> (x, q, valid, offs, bound)``: tile
``t`` of the input as float32 (of any rank), its fake quantization as float32 (not yet rounded
to the output dtype), the in-bounds mask, the element offsets, and the clip bound of each element
(anything that broadcasts against the tile; +Inf for "never clips", NaN counts nothing); ``args``
holds the runtime arguments, ``K`` the constexprs. Its kernels hand that function to a driver:

- :func:`fq_program`: one tile per program, stored in the output dtype, with the warps of
  :func:`fq_warps` (a table per family: Triton's default 4 left heavy tiles short of warps);
  :func:`fq_loop_program`, the same as persistent programs looping over tiles in a
  software-pipelined loop (int8sym's whole rows, whose block-wide absmax otherwise leaves too
  little in flight);
- :func:`stats_program`: the fused quantize + statistics. Each program runs tiles ``pid``,
  ``pid + num_programs``, ... and accumulates every sum and count in registers, one
  accumulator per run of ``V`` consecutive elements a thread holds (:func:`stats_add`; V = 1,
  one per element, where that measured faster: see :func:`lanes_v`), then reduces across its
  lanes once (:func:`stats_store`). The launcher sizes the grid with :func:`stats_grid`,
  allocates the partials with :func:`partials` and merges them on the device with
  :func:`reduce` into a :class:`kernels.stats.ErrorSums` equal to ``error_sums_ref(x, q,
  unit_bound(x, spec))``: the counts exactly, the sums to float64 rounding (they are float64
  throughout and only their order differs).

The fast pass does as little per element as the exact sums allow: no NaN/Inf masks (the
float64 sums of x^2 and q^2 detect them), for families whose q is a bfloat16 already no
rounding to bfloat16 (a check of its low bits instead), and for a next format on a tensor (no
input moments) no element counts at all. A program whose fast pass does not stand runs its
tiles again through the careful pass, which counts and masks everything. The loop takes
``UNROLL`` tiles per iteration where that measured faster (:data:`STATS_UNROLL`). On the H200
these kernels are bound by instruction issue, the integer/logic/select pipe first (Nsight
Compute; ``benchmarks/results/h200.md``), not by memory or float64 arithmetic: what speeds
them up is fewer instructions per element (``benchmarks/kernel_census.py`` counts them).
"""

from __future__ import annotations

import math
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
    "rne_small",
    "rha",
    "rha_small",
    "grid_step",
    "div_by_reciprocal",
    "split_divisor",
    "nan_max",
    "bf16_bits",
    "round_out",
    "load_f32",
    "store_out",
    "stats_init",
    "stats_add",
    "stats_fast_ok",
    "stats_store",
    "as_rows",
    "fq_program",
    "fq_loop_program",
    "stats_program",
    "stats_grid",
    "fq_warps",
    "fq_loop",
    "sm_count",
    "on_device",
    "lanes_v",
    "check_input",
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
def rne_small(t):
    """Round half to even of float32 ``t`` in [0, 2^23] to an integer-valued float32 (NaN stays
    NaN): adding and subtracting 2^23, both exact there. No int conversions, which issue at an
    eighth of the float32 rate on the GPU."""
    return (t + 8388608.0) - 8388608.0


@triton.jit
def rha_small(t):
    """Round half away from zero of float32 ``t`` in [0, 2^23] (NaN stays NaN) to an
    integer-valued float32: :func:`rne_small`, plus one where that rounded a tie down (``t - r``
    is exact: r is within a factor 2 of t)."""
    r = rne_small(t)
    return r + tl.where(t - r == 0.5, 1.0, 0.0)


@triton.jit
def rha(t):
    """:func:`rha_small` for float32 ``t >= 0`` of any size, +Inf too (t >= 2^23 is an integer
    already and is its own value; NaN stays NaN)."""
    return tl.where(t < 8388608.0, rha_small(t), t)


@triton.jit
def grid_step(eb, M: tl.constexpr):
    """(step, 1/step) as float32 for a grid of M fraction bits in the binade 2^p whose exponent
    field is ``eb`` = (p + 127) << 23: step = 2^(p - M), from the bits in one integer op each
    (both must be normal; no pow2, no int conversion)."""
    sb = eb - (M << 23)
    return sb.to(tl.float32, bitcast=True), ((254 << 23) - sb).to(tl.float32, bitcast=True)


@triton.jit
def div_by_reciprocal(a, d, rinv):
    """fl(a / d) for float32 a and d given rinv = fl(1/d), without a division: y0 = fl(a·rinv),
    then y0 + fl(a - d·y0)·rinv in one FMA (Markstein's correction; the residual a - d·y0 is
    exact). The IEEE quotient bit for bit, but where the residual loses bits at the bottom of
    float32's range: tiny quotients, which each caller's next rounding takes to 0 either way
    (their tests check it over every bf16 and fp16 input). Three instructions instead of the
    IEEE division's reciprocal on the special-function unit and range checks."""
    y0 = a * rinv
    return tl.fma(tl.fma(y0, -d, a), rinv, y0)


@triton.jit
def split_divisor(d):
    """(m, fl(1/m), 2^-e) for a positive normal float32 scalar d = m·2^e, m in [1, 2): a quotient
    a / d is then ``div_by_reciprocal(a, m, fl(1/m)) * 2^-e``, the IEEE one where a / m is
    (the power of two is exact while the quotient stays normal; past float32's top it goes to
    Inf as the IEEE quotient does). Scalar work, once per program. Not for d below 2^-126 or
    above 2^127 (2^-e would not be a normal float32); 0, Inf and NaN give garbage."""
    b = d.to(tl.int32, bitcast=True)
    m = ((b & 0x7FFFFF) | 0x3F800000).to(tl.float32, bitcast=True)
    p2 = ((254 - ((b >> 23) & 0xFF)) << 23).to(tl.float32, bitcast=True)
    return m, tl.div_rn(tl.full((), 1.0, tl.float32), m), p2


@triton.jit
def nan_max(a, b):
    """max(a, b), NaN if either is NaN, as ``torch.amax`` (``max.NaN`` on the GPU): a combine
    function for ``tl.reduce`` of block absmaxes over |x|, whose abs the max takes as an operand
    modifier (an int max of the magnitude bits needs it as an instruction per element)."""
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


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
def _sum2(v):
    """The sum of a tile of any rank (run once per program: its cost does not matter)."""
    return tl.sum(tl.reshape(v, [v.numel]), axis=0)


@triton.jit
def _max2(v):
    return tl.max(tl.reshape(v, [v.numel]), axis=0)


@triton.jit
def _min2(v):
    return tl.min(tl.reshape(v, [v.numel]), axis=0)


@triton.jit
def stats_init(LANES: tl.constexpr):
    """The zero accumulators of :func:`stats_add`: ``LANES`` values per quantity (the tile's
    elements over ``V``), carried through a program's loop over its tiles."""
    zf = tl.zeros([LANES], tl.float64)
    zi = tl.zeros([LANES], tl.int32)
    mn = tl.full([LANES], float("inf"), tl.float32)
    mx = tl.full([LANES], float("-inf"), tl.float32)
    # sx2 sq2 sxq sd2 sad mad | s1 s2 shift | min max | numel nx n nan_in nan_out inf_out clipped flushed
    # | bad have_shift
    return (zf, zf, zf, zf, zf, zf, zf, zf, zf, mn, mx, zi, zi, zi, zi, zi, zi, zi, zi, zi, zi)


@triton.jit
def _runs(v, V: tl.constexpr):
    """A tile of any rank as (elements / V, V): each row a run of V consecutive elements, which
    one thread holds (V is at most what a thread loads at once, see :func:`lanes_v`), so
    reducing a row costs no data exchange between threads."""
    return tl.reshape(v, [v.numel // V, V])


@triton.jit
def _rsum(v, V: tl.constexpr):
    return tl.sum(_runs(v, V), axis=1)


@triton.jit
def stats_add(
    acc,
    x,
    q,
    valid,
    bound,
    OUT_KIND: tl.constexpr,
    EXACT_OUT: tl.constexpr,
    CAREFUL: tl.constexpr,
    INPUT_STATS: tl.constexpr,
    V: tl.constexpr,
):
    """``acc`` (:func:`stats_init`) plus one tile: x and q float32 (q *not yet* rounded to the
    output dtype), ``valid`` the tile's in-bounds mask, ``bound`` the clip bound of each element
    (broadcastable; +Inf never clips, NaN counts nothing).

    Every quantity is summed over each run of ``V`` consecutive tile elements, within the
    thread that holds them, and accumulated per run (a float64 sum per quantity), so a program
    carries one accumulator per quantity for every V elements of its tile and reduces across
    its lanes once, in :func:`stats_store`, however many tiles it runs. Two modes:

    - ``CAREFUL=False``, the fast path: no NaN/Inf masking (an Inf or NaN in x or q makes the
      float64 sums of x^2 or q^2 non-finite, which :func:`stats_fast_ok` sees) and, with
      ``EXACT_OUT`` and a bfloat16 output, no rounding to the output dtype either: q's low 16
      bits are OR-ed into a flag instead (zero means q is a bfloat16 already, so rounding would
      not change it). x must be 0 where ``valid`` is false (the loads' ``other``).
    - ``CAREFUL=True``: every count and the masks of ``error_sums_ref``, for programs whose fast
      pass saw a NaN, an Inf or a q that needs rounding (they run their tiles again)."""
    sx2, sq2, sxq, sd2, sad, mad, s1, s2, c, mn, mx, nv, nx, nb, nan_in, nan_out, inf_out, clip, flush, bad, hc = acc
    q = tl.where(valid, q, 0.0)
    xa = tl.abs(x)
    # ``valid`` itself, but computed from x (0 where not valid): a count of ``valid`` alone is
    # laid out like the tile's offsets, not like x, and took a shared-memory shuffle per tile.
    valid_x = valid | (x != x)
    if CAREFUL or INPUT_STATS:
        # (The fast pass without the input's moments counts nothing here: see stats_store.)
        nv += _rsum(valid_x.to(tl.int32), V)
    if CAREFUL:
        q = round_out(q, OUT_KIND)
        qa = tl.abs(q)
        fx = valid & (xa < float("inf"))  # false for NaN too
        both = fx & (qa < float("inf"))
        nx += _rsum(fx.to(tl.int32), V)
        nb += _rsum(both.to(tl.int32), V)
        nan_in += _rsum((valid & (x != x)).to(tl.int32), V)
        nan_out += _rsum((valid & (q != q)).to(tl.int32), V)
        inf_out += _rsum((valid & (qa == float("inf"))).to(tl.int32), V)
        clip += _rsum((fx & (xa > bound)).to(tl.int32), V)
        flush += _rsum((fx & (x != 0.0) & (q == 0.0)).to(tl.int32), V)
        x64 = tl.where(both, x, 0.0).to(tl.float64)
        q64 = tl.where(both, q, 0.0).to(tl.float64)
        fin = fx
        xin = tl.where(fx, x, 0.0)
    else:
        if OUT_KIND == 1 and EXACT_OUT:
            bad = bad | tl.max(_runs(q.to(tl.int32, bitcast=True) & 0xFFFF, V), axis=1)
        else:
            q = round_out(q, OUT_KIND)
        clip += _rsum((xa > bound).to(tl.int32), V)
        flush += _rsum(((x != 0.0) & (q == 0.0)).to(tl.int32), V)
        x64 = x.to(tl.float64)
        q64 = q.to(tl.float64)
        fin = valid
        xin = x
    d = q64 - x64  # exact in float64
    ad = tl.abs(d)
    sx2 += _rsum(x64 * x64, V)
    sq2 += _rsum(q64 * q64, V)
    sxq += _rsum(x64 * q64, V)
    sd2 += _rsum(d * d, V)
    sad += _rsum(ad, V)
    mad = tl.maximum(mad, tl.max(_runs(ad, V), axis=1))
    if INPUT_STATS:
        # Moments around a per-run shift (the largest finite element of the run's first tile
        # that has one): exact to float64 rounding however far the mean lies from zero; runs
        # merge in stats_store.
        xr = _runs(xin, V)
        fr = _runs(fin, V)
        c = tl.where(hc != 0, c, tl.max(tl.where(fr, xr, float("-inf")), axis=1).to(tl.float64))
        hc = hc | tl.max(fr.to(tl.int32), axis=1)
        dev = tl.where(fr, xr.to(tl.float64) - c[:, None], 0.0)
        s1 += tl.sum(dev, axis=1)
        s2 += tl.sum(dev * dev, axis=1)
        mn = tl.minimum(mn, tl.min(tl.where(fr, xr, float("inf")), axis=1))
        mx = tl.maximum(mx, tl.max(tl.where(fr, xr, float("-inf")), axis=1))
    return (sx2, sq2, sxq, sd2, sad, mad, s1, s2, c, mn, mx, nv, nx, nb, nan_in, nan_out, inf_out, clip, flush, bad, hc)


@triton.jit
def stats_fast_ok(acc):
    """Whether the fast pass of :func:`stats_add` stands: no NaN or Inf in x or q (their
    float64 sums of squares are finite: a float32 square is at most 2^256) and no q that the
    output rounding would change."""
    sx2 = _sum2(acc[0])
    sq2 = _sum2(acc[1])
    bad = _max2(acc[19])
    return (tl.abs(sx2) < float("inf")) & (tl.abs(sq2) < float("inf")) & (bad == 0)


@triton.jit
def stats_store(acc, cnt_ptr, sum_ptr, pid, CAREFUL: tl.constexpr, INPUT_STATS: tl.constexpr):
    """Write the program's counts (int32, ``COUNTS``) and float64 partials (``FSUMS``) from the
    per-lane accumulators of :func:`stats_add` (fast or careful pass). A fast pass without the
    input's moments has counted no elements and stores 0 for numel, n and nx: in it every
    element is finite, x and q, so :func:`reduce` recovers those counts from the tensor's size
    and what the careful programs counted."""
    sx2, sq2, sxq, sd2, sad, mad, s1, s2, c, mn, mx, nv, nx, nb, nan_in, nan_out, inf_out, clip, flush, bad, hc = acc
    n_valid = _sum2(nv)
    base = pid.to(tl.int64) * 9
    if CAREFUL:
        n_x = _sum2(nx)
        n_in = _sum2(nan_in)
        tl.store(cnt_ptr + base + 0, n_valid)
        tl.store(cnt_ptr + base + 1, n_in)
        tl.store(cnt_ptr + base + 2, n_valid - n_x - n_in)
        tl.store(cnt_ptr + base + 3, _sum2(nan_out))
        tl.store(cnt_ptr + base + 4, _sum2(inf_out))
        tl.store(cnt_ptr + base + 5, _sum2(nb))
        lane_n = nx
    else:
        n_x = n_valid
        zero = n_valid * 0
        tl.store(cnt_ptr + base + 0, n_valid)
        tl.store(cnt_ptr + base + 1, zero)
        tl.store(cnt_ptr + base + 2, zero)
        tl.store(cnt_ptr + base + 3, zero)
        tl.store(cnt_ptr + base + 4, zero)
        tl.store(cnt_ptr + base + 5, n_valid)
        lane_n = nv
    tl.store(cnt_ptr + base + 6, _sum2(clip))
    tl.store(cnt_ptr + base + 7, _sum2(flush))
    tl.store(cnt_ptr + base + 8, n_x)
    fb = pid.to(tl.int64) * 10
    tl.store(sum_ptr + fb + 0, _sum2(sx2))
    tl.store(sum_ptr + fb + 1, _sum2(sq2))
    tl.store(sum_ptr + fb + 2, _sum2(sxq))
    tl.store(sum_ptr + fb + 3, _sum2(sd2))
    tl.store(sum_ptr + fb + 4, _sum2(sad))
    tl.store(sum_ptr + fb + 5, _max2(mad))
    if INPUT_STATS:
        # Each lane's (n, mean, M2) around its shift, merged by Chan et al.'s formula.
        n_l = lane_n.to(tl.float64)
        n1 = tl.maximum(n_l, 1.0)
        mean_l = tl.where(lane_n > 0, c + s1 / n1, 0.0)  # c is -Inf where a run saw nothing finite
        m2_l = s2 - s1 * s1 / n1
        mean = _sum2(n_l * mean_l) / tl.maximum(n_x, 1).to(tl.float64)
        dm = tl.where(lane_n > 0, mean_l - mean, 0.0)
        tl.store(sum_ptr + fb + 6, mean)
        tl.store(sum_ptr + fb + 7, _sum2(m2_l) + _sum2(n_l * dm * dm))
        tl.store(sum_ptr + fb + 8, _min2(mn).to(tl.float64))
        tl.store(sum_ptr + fb + 9, _max2(mx).to(tl.float64))
    else:
        empty = n_valid.to(tl.float64) * 0.0
        tl.store(sum_ptr + fb + 6, empty)
        tl.store(sum_ptr + fb + 7, empty)
        tl.store(sum_ptr + fb + 8, empty)
        tl.store(sum_ptr + fb + 9, empty)


@triton.jit
def as_rows(x, q, valid, offs, bound, R: tl.constexpr, C: tl.constexpr):
    """A tile function's outputs viewed as the 2-D (R, C) tile, the bound (one value per row)
    as an (R, 1) column: for families whose own tiles have more axes, whose statistics measured
    faster on this view (QType, hifx)."""
    x = tl.reshape(x, (R, C))
    q = tl.reshape(q, (R, C))
    valid = tl.reshape(valid, (R, C))
    offs = tl.reshape(offs, (R, C))
    return x, q, valid, offs, tl.reshape(bound, (R,))[:, None]


@triton.jit
def fq_program(TILE: tl.constexpr, args, K: tl.constexpr, out_ptr, OUT_KIND: tl.constexpr):
    """A fake-quantization program: tile ``program_id`` of ``TILE(t, args, K) -> (x, q, valid,
    offs, bound)`` stored in the output dtype (the bound is not computed: nothing reads it)."""
    x, q, valid, offs, bound = TILE(tl.program_id(0), args, K)
    store_out(out_ptr, offs, q, valid, OUT_KIND)


@triton.jit
def fq_loop_program(TILE: tl.constexpr, args, K: tl.constexpr, out_ptr, OUT_KIND: tl.constexpr, n_tiles,
                    STAGES: tl.constexpr):  # fmt: skip
    """A persistent fake-quantization program: tiles ``program_id``, ``+ num_programs``, ... of
    ``TILE``, stored like :func:`fq_program`'s, in a loop Triton software-pipelines over
    ``STAGES`` stages (its loads become asynchronous copies into shared memory, the next tiles'
    issued while one is computed; Triton's interpreter runs it as a plain loop)."""
    zero = tl.program_id(0) * 0  # the loop index as a tensor in Triton's interpreter too
    for t in tl.range(tl.program_id(0), n_tiles, tl.num_programs(0), num_stages=STAGES):
        x, q, valid, offs, bound = TILE(t + zero, args, K)
        store_out(out_ptr, offs, q, valid, OUT_KIND)


@triton.jit
def stats_program(
    TILE: tl.constexpr,
    args,
    K: tl.constexpr,
    n_tiles,
    cnt_ptr,
    sum_ptr,
    SHAPE: tl.constexpr,
    OUT_KIND: tl.constexpr,
    EXACT_OUT: tl.constexpr,
    INPUT_STATS: tl.constexpr,
    UNROLL: tl.constexpr = 1,
    V: tl.constexpr = 1,
):
    """A fused statistics program: tiles ``program_id``, ``+ num_programs``, ... of ``TILE``
    (of shape ``SHAPE``, any rank) through :func:`stats_add`'s fast pass, again through its
    careful pass if the fast one does not stand, then :func:`stats_store`. ``EXACT_OUT``: the
    family's q is normally a bfloat16 already (a few significant bits times a power of two), so
    the fast pass checks that instead of rounding. ``V``: :func:`lanes_v` of the tile."""
    pid = tl.program_id(0)
    step = tl.num_programs(0)
    zero = pid * 0  # the loop index as a tensor in Triton's interpreter too (there it is an int)
    LANES: tl.constexpr = tl.zeros(SHAPE, tl.int8).numel // V
    acc = stats_init(LANES)
    # UNROLL tiles per iteration, so that each thread has the loads of several tiles in flight
    # (one tile's alone leave the GPU waiting on memory); past the end a tile is masked off.
    for t0 in range(pid, n_tiles, step * UNROLL):
        for u in tl.static_range(UNROLL):
            t = t0 + zero + u * step
            x, q, valid, offs, bound = TILE(tl.minimum(t, n_tiles - 1), args, K)
            live = valid & (t < n_tiles)
            x = tl.where(live, x, 0.0)
            acc = stats_add(acc, x, q, live, bound, OUT_KIND, EXACT_OUT, False, INPUT_STATS, V)
    if stats_fast_ok(acc):
        stats_store(acc, cnt_ptr, sum_ptr, pid, False, INPUT_STATS)
    else:
        acc = stats_init(LANES)
        for t in range(pid, n_tiles, step):
            x, q, valid, offs, bound = TILE(t + zero, args, K)
            acc = stats_add(acc, x, q, valid, bound, OUT_KIND, EXACT_OUT, True, INPUT_STATS, V)
        stats_store(acc, cnt_ptr, sum_ptr, pid, True, INPUT_STATS)


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


def check_input(x: torch.Tensor, why: str | None, kernels: str) -> None:
    """Refuse what a family's kernels do not run: ``why`` (the family's reason the spec is not
    covered, or None) as a ValueError, a dtype they do not load as a TypeError."""
    if why:
        raise ValueError(why)
    if x.dtype not in IN_KIND:
        raise TypeError(f"the triton {kernels} kernels take float32, bfloat16 or float16, not {x.dtype}")


def in_arg(t: torch.Tensor) -> torch.Tensor:
    """What a kernel takes for ``t``: in Triton's interpreter bfloat16 travels as int16 bits
    (see :data:`NATIVE_BF16`); everything else as it is."""
    return t.view(torch.int16) if t.dtype == torch.bfloat16 and not _NATIVE_BF16 else t


def lanes_v(shape: tuple[int, ...], dtype: torch.dtype, warps: int, unroll: int, input_stats: bool) -> int:
    """The ``V`` of :func:`stats_program` for a tile of ``shape`` read from a ``dtype`` tensor by
    ``warps`` warps, ``unroll`` tiles per iteration: how many consecutive elements of the tile one
    thread holds, as Triton lays out a load along the tile's last axis (a 16-byte vector at most,
    the whole last axis at most, the tile's share per thread at most; powers of two, like the
    tile's axes). But 1 (an accumulator per element) for an unrolled loop without the input's
    moments: there the accumulators' registers matter less than the float64 FMA per element,
    which the sums of runs turn into a multiply and an add (H200: MX 19 % / 36 % of copy against
    16 % / 34 %, the bf16 cast 38 % / 53 % against 31 % / 46 %; every other case, and the
    heavier tiles most, is faster with runs: hifx 12 % / 23 % against 5 % / 10 %)."""
    if unroll > 1 and not input_stats:
        return 1
    return max(1, min(16 // dtype.itemsize, shape[-1], math.prod(shape) // (32 * warps)))


def stats_grid(family: str, dtype: torch.dtype, tiles: int, device: torch.device) -> tuple[int, int, int]:
    """(programs, unroll, warps) of a statistics kernel of ``family`` (a key of
    :data:`STATS_UNROLL` and :data:`STATS_WARPS`) over ``tiles`` tiles of a ``dtype`` input:
    each program loops over every ``programs``-th tile, ``unroll`` (:func:`stats_program`'s
    ``UNROLL``) per iteration, so the cross-lane reductions run once per program.
    ``PROGRAMS_PER_SM[unroll]`` per SM on the GPU; a few on the CPU, so that Triton's
    interpreter runs the loops over several tiles too."""
    unroll = STATS_UNROLL[family].get(dtype, 1)
    warps = STATS_WARPS[family]
    if device.type == "cuda":
        return max(1, min(tiles, PROGRAMS_PER_SM[unroll] * sm_count(device.index))), unroll, warps
    return max(1, min(tiles, 3)), unroll, warps


#: Tiles per iteration of each family's statistics loop, by input dtype (absent: 1), its
#: warps per program (the families' statistics tiles hold 1024 elements), and statistics
#: programs per SM on the GPU by that unroll factor: what measured fastest on the H200
#: (benchmarks/results/h200.md).
STATS_UNROLL: dict[str, dict[torch.dtype, int]] = {
    "mx": {torch.float32: 4, torch.bfloat16: 4, torch.float16: 4},
    # minus_exp=auto: its tiles are long already (unrolled, they took minutes to compile)
    "mx_auto": {},
    "cast": {torch.float32: 4, torch.bfloat16: 4, torch.float16: 4},
    "int8sym": {},
    "hif8": {},
    "fp8": {},
    "nvfp": {},
    "qtype": {},
    "hifx": {},
    "nf4": {},
}
STATS_WARPS: dict[str, int] = {
    "mx": 8,
    "mx_auto": 8,
    "cast": 8,
    "int8sym": 8,
    "hif8": 8,
    "fp8": 8,
    "nvfp": 4,
    "qtype": 4,
    "hifx": 4,
    "nf4": 4,
}
PROGRAMS_PER_SM = {1: 8, 2: 4, 4: 2}

#: Warps of a fake-quantization program on a tile of :data:`FQ_TILE` elements, per family, for
#: (2-byte, float32) inputs: what measured fastest on the H200 on 8192x8192 tensors. Four warps
#: (Triton's default) gave the heaviest tiles 128-188 registers per thread, too few warps per
#: SM to keep the memory busy (benchmarks/results/h200.md).
FQ_TILE = 4096
FQ_WARPS: dict[str, tuple[int, int]] = {
    "mx": (8, 16),
    "qtype": (8, 16),
    "nvf4": (8, 32),
    "nvfp4": (8, 8),
    "nf4": (8, 8),
    "fp8": (4, 16),
    "int8sym": (16, 16),
    "hif8": (4, 16),
    "hifx": (8, 8),
    "cast": (8, 8),
}


def fq_warps(family: str, dtype: torch.dtype, programs: int, device: torch.device, tile: int = FQ_TILE) -> int:
    """``num_warps`` of a fake-quantization kernel of ``family`` (a key of :data:`FQ_WARPS`)
    launched as ``programs`` programs of ``tile`` elements each: the table's, scaled with the
    tile (so that each thread holds as many elements), and at least 16 when the tensor has
    fewer tiles than four per SM (1024x1024: 256 tiles), where more threads per tile measured
    faster (MX 78 % -> 90 % of copy on bfloat16); 32 at most."""
    w = FQ_WARPS[family][dtype == torch.float32] * max(1, tile // FQ_TILE)
    if device.type == "cuda" and programs < 4 * sm_count(device.index):
        w = max(w, 16)
    return min(w, 32)


#: Fake quantization as persistent programs looping over the tiles in a loop Triton
#: software-pipelines (:func:`fq_loop_program`), per family, for (2-byte, float32) inputs:
#: (stages, programs per SM, warps), or None for one tile a program. On the H200
#: (benchmarks/results/h200.md) it helped int8sym's whole rows with their absmax (bf16 8192x8192
#: 89 % of copy against 71 %), and not fp8 or hif8 (at best as fast as a tile a program; hif8's
#: table look-ups 19-30 %).
FQ_LOOP: dict[str, tuple[tuple[int, int, int] | None, tuple[int, int, int] | None]] = {
    "int8sym": ((4, 2, 16), None),
}
#: The loop runs where every program gets at least this many tiles.
FQ_LOOP_MIN = 8


def fq_loop(family: str, x: torch.Tensor, tiles: int) -> tuple[int, int, int] | None:
    """(programs, stages, warps) of :data:`FQ_LOOP`'s persistent fake quantization of ``tiles``
    tiles of ``x`` for ``family``, or None for one tile a program (no entry, not on CUDA, or too
    few tiles for :data:`FQ_LOOP_MIN` per program)."""
    cfg = FQ_LOOP.get(family, (None, None))[x.dtype == torch.float32]
    if cfg is None or x.device.type != "cuda":
        return None
    stages, per_sm, warps = cfg
    programs = per_sm * sm_count(x.device.index)
    return (programs, stages, warps) if tiles >= FQ_LOOP_MIN * programs else None


_ON_DEVICE: dict[tuple[int, torch.device], torch.Tensor] = {}


def on_device(table: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A module-level constant tensor (a family's look-up table) on ``device``, copied there once
    per device and kept."""
    key = (id(table), device)
    if key not in _ON_DEVICE:
        _ON_DEVICE[key] = table.to(device)
    return _ON_DEVICE[key]


_SMS: dict = {}


def sm_count(index) -> int:
    """Streaming multiprocessors of CUDA device ``index`` (None: the current one), asked once."""
    if index not in _SMS:
        _SMS[index] = torch.cuda.get_device_properties(index if index is not None else 0).multi_processor_count
    return _SMS[index]


def partials(programs: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The (counts, sums) buffers of :func:`stats_store` for ``programs`` programs."""
    cnt = torch.empty((programs, len(COUNTS)), dtype=torch.int32, device=device)
    sums = torch.empty((programs, len(FSUMS)), dtype=torch.float64, device=device)
    return cnt, sums


@triton.jit
def _merge_kernel(cnt_ptr, sum_ptr, cnt_out, sum_out, P, RPP, R: tl.constexpr, MOMENTS: tl.constexpr):
    """Program g merges partial rows [g·RPP, (g+1)·RPP) of (counts [P, 9], sums [P, 10]) into
    row g of (cnt_out int64 [G, 9], sum_out float64 [G, 10]), in the same layout, so a second
    launch merges the merged rows: counts and sums add, max/min reduce, and (``MOMENTS``) the
    input's moments merge by Chan et al.'s parallel formula (mean = sum n_i mean_i / n, M2 = sum
    M2_i + n_i (mean_i - mean)^2); without them their columns are 0. R rows per step, as many
    steps as the program has rows (one, for up to R programs' partials)."""
    g = tl.program_id(0)
    first = g.to(tl.int64) * RPP
    rows = tl.minimum(P - g * RPP, RPP)
    k9 = tl.arange(0, 16)
    c_acc = tl.zeros([16], tl.int64)
    f_acc = tl.zeros([16], tl.float64)
    mx_ad = tl.zeros([R], tl.float64)
    mn_x = tl.full([R], float("inf"), tl.float64)
    mx_x = tl.full([R], float("-inf"), tl.float64)
    nm = tl.zeros([R], tl.float64)
    for start in range(0, rows, R):
        r = first + start + tl.arange(0, R).to(tl.int64)
        m = start + tl.arange(0, R) < rows
        c = tl.load(cnt_ptr + r[:, None] * 9 + k9[None, :], mask=m[:, None] & (k9 < 9)[None, :], other=0)
        c_acc += tl.sum(c.to(tl.int64), axis=0)
        f = tl.load(sum_ptr + r[:, None] * 10 + k9[None, :], mask=m[:, None] & (k9 < 5)[None, :], other=0.0)
        f_acc += tl.sum(f, axis=0)
        mx_ad = tl.maximum(mx_ad, tl.load(sum_ptr + r * 10 + 5, mask=m, other=0.0))
        if MOMENTS:
            mn_x = tl.minimum(mn_x, tl.load(sum_ptr + r * 10 + 8, mask=m, other=float("inf")))
            mx_x = tl.maximum(mx_x, tl.load(sum_ptr + r * 10 + 9, mask=m, other=float("-inf")))
            n_i = tl.load(cnt_ptr + r * 9 + 8, mask=m, other=0).to(tl.float64)
            nm += n_i * tl.load(sum_ptr + r * 10 + 6, mask=m, other=0.0)
    tl.store(cnt_out + g * 9 + k9, c_acc, mask=k9 < 9)
    tl.store(sum_out + g * 10 + k9, f_acc, mask=k9 < 5)
    tl.store(sum_out + g * 10 + 5, tl.max(mx_ad, axis=0))
    if MOMENTS:
        nx = tl.sum(tl.where(k9 == 8, c_acc, 0), axis=0).to(tl.float64)
        mean = tl.sum(nm, axis=0) / tl.maximum(nx, 1.0)
        m2 = tl.zeros([R], tl.float64)
        for start in range(0, rows, R):
            r = first + start + tl.arange(0, R).to(tl.int64)
            m = start + tl.arange(0, R) < rows
            n_i = tl.load(cnt_ptr + r * 9 + 8, mask=m, other=0).to(tl.float64)
            dm = tl.load(sum_ptr + r * 10 + 6, mask=m, other=0.0) - mean
            m2 += tl.load(sum_ptr + r * 10 + 7, mask=m, other=0.0) + n_i * dm * dm
        tl.store(sum_out + g * 10 + 6, mean)
        tl.store(sum_out + g * 10 + 7, tl.sum(m2, axis=0))
        tl.store(sum_out + g * 10 + 8, tl.min(mn_x, axis=0))
        tl.store(sum_out + g * 10 + 9, tl.max(mx_x, axis=0))
    else:
        tl.store(sum_out + g * 10 + 6 + tl.arange(0, 4), tl.zeros([4], tl.float64))


#: Partial rows one merge program takes (in steps of at most _MERGE_R rows).
_MERGE_RPP = 2048
_MERGE_R = 1024


def reduce(cnt: torch.Tensor, sums: torch.Tensor, numel: int, input_stats: bool = True) -> ErrorSums:
    """Merge the per-program partials in float64: the counts and sums add, the moments by the
    parallel form of Chan et al.'s formula (M2 = sum M2_i + sum n_i (mean_i - mean)^2).

    On the partials' device, by :func:`_merge_kernel` (one launch per 2048-fold reduction: two
    for up to 4 M programs), then one small transfer to the host. ``numel``: the elements of
    the tensor the programs covered (see :func:`stats_store`). ``input_stats=False`` leaves
    the input's moments empty, like ``error_sums_ref(..., input_stats=False)``."""
    while True:
        P = cnt.shape[0]
        G = triton.cdiv(P, _MERGE_RPP)
        c_out = torch.empty((G, len(COUNTS)), dtype=torch.int64, device=cnt.device)
        s_out = torch.empty((G, len(FSUMS)), dtype=torch.float64, device=cnt.device)
        # One step per program for up to _MERGE_R partial rows (the loop's steps wait on memory
        # one after the other: eight steps of 256 rows took 16-22 us on the H200).
        r = max(16, min(_MERGE_R, triton.next_power_of_2(min(P, _MERGE_RPP))))
        _merge_kernel[(G,)](cnt, sums, c_out, s_out, P, _MERGE_RPP, R=r, MOMENTS=bool(input_stats),
                            num_warps=max(4, r // 64))  # fmt: skip
        cnt, sums = c_out, s_out
        if G == 1:
            break
    counts = dict(zip(COUNTS, cnt.reshape(-1).tolist(), strict=True))
    floats = sums.reshape(-1).tolist()
    # Programs store numel = n = nx = 0 (fast pass without the moments: all finite) or their true
    # counts; either way numel - n and numel - nx sum to the tensor's elements that are not.
    for k in ("n", "nx"):
        counts[k] = numel - (counts["numel"] - counts[k])
    counts["numel"] = numel
    out = ErrorSums(**counts)
    out.sum_x2, out.sum_q2, out.sum_xq, out.sum_d2, out.sum_ad = floats[:5]
    out.max_ad = floats[5] if out.n else 0.0
    if not input_stats:
        out.nx = 0
    elif out.nx:
        out.mean_x, out.m2_x, out.min_x, out.max_x = floats[6:10]
    return out
