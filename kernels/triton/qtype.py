"""Triton QType kernels (family ``qtype``, ``emulate=exact``): the seed's ``quant_py`` as
``kernels.reference.qtype`` evaluates it (formats-mx.md §3.4), bit for bit, on tiles of ``OPP``
outer blocks.

The input is viewed as (rows, L) with the blocked axis last (the launcher moves it there),
each row cut into ``ceil(L / (b·B))`` outer blocks of B inner blocks of b elements; the last
one may be partial (the reference zero-pads it, and zeros raise no max and give the least g).
A tile is 3-D, (outer blocks, inner blocks padded to a power of two, elements padded to a
power of two): the inner max is a reduction over the last dim, the two-level max one over
the middle dim. Padding rows and lanes read 0, so they act as the reference's zero padding.
``_qtype_rows`` views it as the 2-D tile the statistics take, (outer blocks · inner blocks,
elements).

Per tile, with the reference's float32 operations in the reference's order (so that the GPU
and the interpreter agree with torch; FMA contraction is turned off at launch):

1. **Inner max** ``m`` is an int32 max of the magnitude bits (int order is float order for
   non-negative floats, NaN sorts above +Inf).
2. **Group exponent** (§3.4 step 2): the exponent field of fl32(m + 9.6e-7), the same float32
   addition as the reference; the sum is normal (or Inf/NaN: field 255, e = 128), so the field
   is floor(log2). The carry rule adds 1 when the significand field is >= that of SQRT2_UP,
   the reference's ``a / 2^e >= SQRT2_UP`` on an exact significand (never for Inf/NaN, where
   the reference's quotient is NaN). Then ``- exp_max`` and the window clip.
3. **Two-level** (step 3): ``s = clip(max(g, G - (2^k - 1)))`` with G the max over the B inner
   blocks. A NaN anywhere in the outer block makes it NaN.
4. **E > 0 elements** (steps 4-8): ``z = |x|·2^-s`` equals the reference's ``|x| / 2^s``: 2^-s is
   exactly representable for every s >= -127, so both are the correctly rounded quotient; below
   that the block flushes (step 7) to zeros carrying x's sign. ``p`` from fl32(z + 9.6e-7), the
   same addition; ``t = z·2^(M-p)`` and ``v = r·2^(p-M)`` multiply by the same powers of two
   (built from bits, subnormal ones as such) as the reference's ``pow2``; the ties-away rounding
   ``r`` is ``_common.rha`` (t >= 2^23 is an integer already). Then ``min(v, fp_val_max)·2^s``
   and the sign ORed back from x.
5. **E = 0** (integer mantissas): the carry bump is taken from the block max, as in
   ``kernels.ranges`` (rounding and division are monotone, so ``any(round(|x|/2^g) > top)`` is
   ``round(m/2^g) > top``; a block where that differs holds a NaN and comes out NaN). Elements
   below the float32-rounded-up ``under`` threshold become +0, an outer block holding a NaN or
   an element at ``over`` becomes NaN: the reference's float32 comparisons on the same constants.
6. bf16 output is rounded RNE on the bits (exactly torch's ``.to(bfloat16)``), fp16 by Triton's
   conversion (RNE).

``_qtype_fq`` runs one tile per program (``_common.fq_program``). ``_qtype_sums`` runs the
same tile, as ``_qtype_rows``, on tiles of about ``STATS_ELEMS`` elements, each program looping
over every ``programs``-th tile (``_common.stats_program``), with the clip bound of
``kernels.ranges.unit_bound`` per inner block: ``fp_val_max·2^s`` (E = 0: ``(2^M - 1)·2^s``), 0
for a flushed block, NaN for a NaN one. Its ``EXACT_OUT`` holds for M <= 7: q is then ``2^s``
times an element of at most 8 significant bits, normally a bfloat16 already.

Not covered (the reference runs): ``emulate=seed`` (float ``log2`` in the input dtype), outer
blocks longer than ``MAX_BLOCK`` once padded, E = 0 with M > 23 or a scale window reaching
past 2^±127, and element fields whose powers of two leave float32 (E > 21, or M > 107 or less).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..formats import FormatSpec
from ..reference.mx import SQRT2_UP, f32_ceil
from ..reference.qtype import FLUSH_BELOW_EXP, QTYPE_EPS, QTypeFields, qtype_fields
from ..stats import ErrorSums
from ._common import (
    IN_KIND,
    along_last,
    as_rows,
    check_input,
    fq_program,
    fq_warps,
    grid_step,
    in_arg,
    lanes_v,
    load_f32,
    partials,
    pow2,
    reduce,
    rha,
    rha_small,
    round_out,
    stats_grid,
    stats_program,
)

__all__ = ["FAMILIES", "unsupported_reason", "fake_quantize", "sums", "qtype_fake_quantize", "qtype_sums"]

FAMILIES = ("qtype",)

#: Elements per program (outer blocks per program = this / padded outer block, at least 1).
TILE_ELEMS = 4096
#: Elements per statistics tile (outer blocks per tile likewise, at least 1): small, as every
#: lane carries its accumulators across the program's tiles (the warps: ``_common.STATS_WARPS``).
STATS_ELEMS = 1024
#: Largest padded outer block (next_pow2(B) · next_pow2(b)) one program holds.
MAX_BLOCK = 8192
#: fl32(9.6e-7), exactly representable, so the kernels' constant is the reference's operand.
EPS32 = float(torch.tensor(QTYPE_EPS, dtype=torch.float32))
#: floor(log2(EPS32)) = -20: fl32(m + EPS32) >= EPS32, so no group/element exponent is lower.
EPS_EXP = -20
#: Significand field of SQRT2_UP: the carry rule bumps at or above it.
SQRT2_MANT = round(SQRT2_UP * 2**23) - (1 << 23)
#: Window ends and the inner drop are clipped to this before they travel as int32: the exponents
#: they clip lie within 2^20 + 149 of 0 (E <= 21 here), so clipping changes nothing.
INT_CLIP = 1 << 24
# Step 7 flushes below 2^-127, exactly where 2^-s stops being a float32: the kernels use -127 for both.
assert FLUSH_BELOW_EXP == -127, "the kernels hard-code the step-7 flush below 2^-127"


def _fields(spec: FormatSpec) -> QTypeFields:
    return qtype_fields(spec["E"], spec["M"], spec["k"], spec["b"], spec["K"], spec["B"], spec["carry"], spec["off"])


def _clip(v: int, lo: int, hi: int) -> int:
    return min(max(v, lo), hi)


def _int_thresholds(q: QTypeFields) -> tuple[float, float]:
    """E = 0: the reference's ``under`` and ``over`` (float32, rounded up)."""
    under = f32_ceil((2 - 2.0**-q.man_bits) * 2.0 ** (q.exp_lo + 1))
    over = f32_ceil(2.0 ** (q.exp_hi + q.exp_max) * (2 - 2.0**-q.man_bits))
    return under, over


def _why_not(q: QTypeFields) -> str | None:
    if q.exp_bits > 21:
        return "element exponents past 2^20 are not implemented in triton (E <= 21)"
    lo, hi = q.exp_lo, q.exp_hi
    if q.exp_bits == 0:
        if q.man_bits > 23:
            return "integer mantissas wider than 23 bits (e0m24+) are not implemented in triton"
        # Every group exponent the kernel divides by, and every scale, must have 2^±s in float32.
        g_lo, g_hi = _clip(EPS_EXP - q.exp_max, lo, hi), _clip(128 - q.exp_max, lo, hi)
        s_hi = _clip(g_hi + int(q.carry), lo, hi)
        if g_lo < -127 or max(g_hi, s_hi) > 127:
            return "an E = 0 scale window reaching past 2^±127 is not implemented in triton"
        try:
            _int_thresholds(q)
        except OverflowError:
            return "the E = 0 thresholds overflow (the reference cannot run it either)"
        return None
    p_lo = min(max(q.exp_min, EPS_EXP), q.exp_max)
    p_hi = min(q.exp_max, 128)
    M = q.man_bits
    if not (-149 <= M - p_hi and M - p_lo <= 127 and -149 <= p_lo - M and p_hi - M <= 127):
        return f"element powers of two outside float32 (e{q.exp_bits}m{M}) are not implemented in triton"
    return None


def unsupported_reason(spec: FormatSpec) -> str | None:
    """None when the Triton kernels cover ``spec``, else why not."""
    if spec.family != "qtype":
        return f"the triton qtype module covers the qtype family only, not {spec.family}"
    if spec["emulate"] != "exact":
        return "emulate=seed is not implemented in triton (float log2 in the input dtype)"
    try:
        q = _fields(spec)
    except (ValueError, OverflowError) as e:
        return f"not a QType the reference can run: {e}"
    padded = triton.next_power_of_2(q.blk_size) * triton.next_power_of_2(q.blk_outer_size)
    if padded > MAX_BLOCK:
        return f"outer blocks of {padded} padded elements are not implemented in triton (<= {MAX_BLOCK})"
    return _why_not(q)


# --------------------------------------------------------------------------- device code


@triton.jit
def _qtype_tile(t, args, K: tl.constexpr):
    """Tile ``t``, (OPP, BP2B, BP2): (x, q, valid, offs, bound); q float32 before the output
    cast, bound (OPP, BP2B) per inner block. args (x_ptr, n_outer, nob, L), K (b, B, BP2, BP2B,
    OPP, IN_KIND, IS_INT, M, EXP_MIN, EXP_MAX, LO, HI, DROP, CARRY, FP_MAX, TOP, UNDER, OVER,
    EPS, SQRT2_MANT, POW_BITS, EVEN)."""
    x_ptr, n_outer, nob, L = args
    b: tl.constexpr = K[0]
    B: tl.constexpr = K[1]
    BP2: tl.constexpr = K[2]
    BP2B: tl.constexpr = K[3]
    OPP: tl.constexpr = K[4]
    IN_KIND: tl.constexpr = K[5]
    IS_INT: tl.constexpr = K[6]
    M: tl.constexpr = K[7]
    EXP_MIN: tl.constexpr = K[8]
    EXP_MAX: tl.constexpr = K[9]
    LO: tl.constexpr = K[10]
    HI: tl.constexpr = K[11]
    DROP: tl.constexpr = K[12]
    CARRY: tl.constexpr = K[13]
    FP_MAX: tl.constexpr = K[14]
    TOP: tl.constexpr = K[15]
    UNDER: tl.constexpr = K[16]
    OVER: tl.constexpr = K[17]
    EPS: tl.constexpr = K[18]
    SQRT2_MANT: tl.constexpr = K[19]
    POW_BITS: tl.constexpr = K[20]
    EVEN: tl.constexpr = K[21]
    ob = t.to(tl.int64) * OPP + tl.arange(0, OPP).to(tl.int64)  # global outer block ids
    j = tl.arange(0, BP2B)
    k = tl.arange(0, BP2)
    if EVEN:
        # Rows of whole outer blocks of power-of-two sizes: outer block ob is the flat run
        # ob·b·B ..., no row/column division (a 64-bit division per block otherwise).
        offs = ob[:, None, None] * (b * B) + (j * b)[None, :, None] + k[None, None, :]
        valid = tl.broadcast_to((ob < n_outer)[:, None, None], (OPP, BP2B, BP2))
    else:
        row = ob // nob
        ocol = (ob % nob) * (b * B)
        cols = ocol[:, None, None] + (j * b)[None, :, None] + k[None, None, :]
        valid = (ob < n_outer)[:, None, None] & (j < B)[None, :, None] & (k < b)[None, None, :] & (cols < L)
        offs = row[:, None, None] * L + cols
    x = load_f32(x_ptr, offs, valid, IN_KIND)
    xb = x.to(tl.int32, bitcast=True)
    ab = xb & 0x7FFFFFFF
    sign = xb ^ ab
    ax = ab.to(tl.float32, bitcast=True)

    # §3.4 steps 1-2: the inner max (NaN sorts on top) and its group exponent.
    mb = tl.max(ab, axis=2)  # (OPP, BP2B)
    m = mb.to(tl.float32, bitcast=True)
    nan_m = mb > 0x7F800000
    a = (m + EPS).to(tl.int32, bitcast=True)
    field = (a >> 23) & 0xFF
    e = field - 127
    if CARRY:
        if not IS_INT:
            e = e + (((a & 0x7FFFFF) >= SQRT2_MANT) & (field < 255)).to(tl.int32)
    g = tl.minimum(tl.maximum(e - EXP_MAX, LO), HI)
    if IS_INT:
        if CARRY:
            # The bump where round(m / 2^g) passes 2^M - 1 (g in [-127, 127] here).
            g = g + (rha(m * pow2(-g)) > TOP).to(tl.int32)
        bad = nan_m | (m >= OVER)
    else:
        bad = nan_m
    # Step 3: no inner exponent more than 2^k - 1 below the outer max, then the window again.
    if B > 1:
        G = tl.max(g, axis=1)
        s = tl.minimum(tl.maximum(tl.maximum(g, G[:, None] - DROP), LO), HI)
    else:
        s = g
    bad_o = tl.max(bad.to(tl.int32), axis=1) > 0  # (OPP,)

    if IS_INT:
        X = pow2(s)
        t = ax * pow2(-s)[:, :, None]
        if M <= 21:  # any t >= 2^22 gives TOP: rounding it is not needed
            mag = tl.minimum(rha_small(tl.minimum(t, 4194304.0)), TOP) * X[:, :, None]
        else:
            mag = tl.minimum(rha(t), TOP) * X[:, :, None]
        bits = tl.where(ax < UNDER, 0, mag.to(tl.int32, bitcast=True) | sign)
        bound = TOP * X
    else:
        flush = s < -127  # step 7 (FLUSH_BELOW_EXP)
        sc = tl.maximum(s, -127)
        X = pow2(sc)
        z = ax * pow2(-sc)[:, :, None]
        zb = (z + EPS).to(tl.int32, bitcast=True)
        if POW_BITS:
            # 2^(M-p) and 2^(p-M) are normal for every p in [EXP_MIN, EXP_MAX]: built from p's
            # clamped exponent field (_common.grid_step, as kernels.triton.mx does), where pow2
            # takes nine instructions each.
            pf = tl.minimum(tl.maximum(zb & 0x7F800000, (EXP_MIN + 127) << 23), (EXP_MAX + 127) << 23)
            step, inv = grid_step(pf, M)
            t = z * inv
            if M <= 21:
                # t >= 2^22 > 2^(M+1) only where p is clamped at EXP_MAX: then v >= 2^(EXP_MAX+1)
                # > FP_MAX whatever the rounding, so t is capped and rounded without a range test.
                v = tl.minimum(rha_small(tl.minimum(t, 4194304.0)) * step, FP_MAX)
            else:
                v = tl.minimum(rha(t) * step, FP_MAX)
        else:
            p = tl.minimum(tl.maximum(((zb >> 23) & 0xFF) - 127, EXP_MIN), EXP_MAX)
            t = z * pow2(M - p)
            v = tl.minimum(rha(t) * pow2(p - M), FP_MAX)
        mag = v * X[:, :, None]
        bits = tl.where(flush[:, :, None], 0, mag.to(tl.int32, bitcast=True)) | sign
        bound = tl.where(flush, 0.0, FP_MAX * X)
    bits = tl.where(bad_o[:, None, None], 0x7FC00000, bits)
    q = bits.to(tl.float32, bitcast=True)
    bound = tl.where(bad_o[:, None], float("nan"), bound)
    return x, q, valid, offs, bound


@triton.jit
def _qtype_rows(t, args, K: tl.constexpr):
    """``_qtype_tile`` as the 2-D tiles the statistics take: (OPP·BP2B, BP2), one row per inner
    block, the bound per row (OPP·BP2B, 1) rounded to the output dtype. (The fake-quantize kernel
    stores the 3-D tile: a reshape there costs a layout conversion. The statistics measured
    faster on the 2-D view than on the 3-D tile: 14 % against 8 % of copy on float32.)"""
    x, q, valid, offs, bound = _qtype_tile(t, args, K)
    return as_rows(x, q, valid, offs, round_out(bound, K[5]), K[4] * K[3], K[2])  # (OPP·BP2B, BP2)


# One fake-quantization kernel and one statistics kernel around the tile function.


@triton.jit
def _qtype_fq(x_ptr, out_ptr, n_outer, nob, L, b: tl.constexpr, B: tl.constexpr, BP2: tl.constexpr,
              BP2B: tl.constexpr, OPP: tl.constexpr, IN_KIND: tl.constexpr, IS_INT: tl.constexpr, M: tl.constexpr,
              EXP_MIN: tl.constexpr, EXP_MAX: tl.constexpr, LO: tl.constexpr, HI: tl.constexpr, DROP: tl.constexpr,
              CARRY: tl.constexpr, FP_MAX: tl.constexpr, TOP: tl.constexpr, UNDER: tl.constexpr, OVER: tl.constexpr,
              EPS: tl.constexpr, SQRT2_MANT: tl.constexpr, POW_BITS: tl.constexpr, EVEN: tl.constexpr):  # fmt: skip
    K: tl.constexpr = (b, B, BP2, BP2B, OPP, IN_KIND, IS_INT, M, EXP_MIN, EXP_MAX, LO, HI, DROP, CARRY, FP_MAX, TOP,
                       UNDER, OVER, EPS, SQRT2_MANT, POW_BITS, EVEN)  # fmt: skip
    fq_program(_qtype_tile, (x_ptr, n_outer, nob, L), K, out_ptr, IN_KIND)


@triton.jit
def _qtype_sums(x_ptr, cnt_ptr, sum_ptr, n_outer, nob, L, n_tiles, b: tl.constexpr, B: tl.constexpr,
                BP2: tl.constexpr, BP2B: tl.constexpr, OPP: tl.constexpr, IN_KIND: tl.constexpr, IS_INT: tl.constexpr,
                M: tl.constexpr, EXP_MIN: tl.constexpr, EXP_MAX: tl.constexpr, LO: tl.constexpr, HI: tl.constexpr,
                DROP: tl.constexpr, CARRY: tl.constexpr, FP_MAX: tl.constexpr, TOP: tl.constexpr, UNDER: tl.constexpr,
                OVER: tl.constexpr, EPS: tl.constexpr, SQRT2_MANT: tl.constexpr, POW_BITS: tl.constexpr,
                EVEN: tl.constexpr,
                EXACT_OUT: tl.constexpr,
                INPUT_STATS: tl.constexpr, UNROLL: tl.constexpr, V: tl.constexpr):  # fmt: skip
    K: tl.constexpr = (b, B, BP2, BP2B, OPP, IN_KIND, IS_INT, M, EXP_MIN, EXP_MAX, LO, HI, DROP, CARRY, FP_MAX, TOP,
                       UNDER, OVER, EPS, SQRT2_MANT, POW_BITS, EVEN)  # fmt: skip
    RB: tl.constexpr = OPP * BP2B
    stats_program(_qtype_rows, (x_ptr, n_outer, nob, L), K, n_tiles, cnt_ptr, sum_ptr, (RB, BP2), IN_KIND, EXACT_OUT,
                  INPUT_STATS, UNROLL, V)  # fmt: skip


# --------------------------------------------------------------------------- launchers


def _constants(spec: FormatSpec, dtype: torch.dtype, L: int, tile: int = TILE_ELEMS) -> dict:
    """The kernels' constexprs for rows of ``L`` elements (the blocked axis) and ``tile``
    elements per tile (at least one outer block)."""
    q = _fields(spec)
    b, B = q.blk_size, q.blk_outer_size
    bp2, bp2b = triton.next_power_of_2(b), triton.next_power_of_2(B)
    under, over = _int_thresholds(q) if q.exp_bits == 0 else (0.0, 0.0)
    return dict(
        b=b,
        B=B,
        BP2=bp2,
        BP2B=bp2b,
        OPP=max(1, tile // (bp2 * bp2b)),
        # Rows of whole outer blocks of power-of-two sizes: the tiles are flat runs.
        EVEN=L % (b * B) == 0 and b == bp2 and B == bp2b,
        IN_KIND=IN_KIND[dtype],
        IS_INT=q.exp_bits == 0,
        M=q.man_bits,
        EXP_MIN=q.exp_min,
        EXP_MAX=q.exp_max,
        LO=_clip(q.exp_lo, -INT_CLIP, INT_CLIP),
        HI=_clip(q.exp_hi, -INT_CLIP, INT_CLIP),
        DROP=min(q.max_inner_drop, INT_CLIP),
        CARRY=q.carry,
        # The reference clamps with fp_val_max as a float32 scalar (1e38 rounds).
        FP_MAX=float(torch.tensor(q.fp_val_max, dtype=torch.float32)),
        TOP=float(2**q.man_bits - 1),
        UNDER=under,
        OVER=over,
        EPS=EPS32,
        SQRT2_MANT=SQRT2_MANT,
        # 2^(M-p) and 2^(p-M) normal float32 for every element exponent p (the tile builds them
        # from bits then; else with pow2, subnormal powers included).
        POW_BITS=all(
            -126 <= e <= 127
            for e in (q.man_bits - q.exp_min, q.man_bits - q.exp_max, q.exp_min - q.man_bits, q.exp_max - q.man_bits)
        ),
    )


def _rows_view(x: torch.Tensor, spec: FormatSpec, cache: dict | None = None) -> tuple[torch.Tensor, int]:
    """x with the blocked axis moved last, contiguous (``_common.along_last``); the axis index."""
    axis = spec["axis"] % x.dim()
    return along_last(x, axis, cache), axis


def _grid(xm: torch.Tensor, c: dict) -> tuple[int, int, int, int]:
    """(outer blocks, outer blocks per row, row length, tiles) of ``xm``."""
    L = xm.shape[-1]
    nob = triton.cdiv(L, c["b"] * c["B"])
    n_outer = (xm.numel() // L) * nob
    return n_outer, nob, L, triton.cdiv(n_outer, c["OPP"])


def qtype_fake_quantize(x: torch.Tensor, spec: FormatSpec) -> torch.Tensor:
    """``fake_quantize(x, spec, backend="reference")`` for a supported QType spec, bit for bit."""
    check_input(x, unsupported_reason(spec), "QType")
    if x.dim() == 0 or x.numel() == 0:
        from ..reference import fake_quantize_ref

        return fake_quantize_ref(x, spec, None)
    xm, axis = _rows_view(x.detach(), spec)
    c = _constants(spec, x.dtype, xm.shape[-1])
    out = torch.empty_like(xm)
    n_outer, nob, L, programs = _grid(xm, c)
    # No FMA contraction: every float32 op rounds on its own, as in torch and the interpreter.
    warps = fq_warps("qtype", x.dtype, programs, x.device, c["OPP"] * c["BP2B"] * c["BP2"])
    _qtype_fq[(programs,)](in_arg(xm), in_arg(out), n_outer, nob, L, **c, num_warps=warps, enable_fp_fusion=False)
    return out.movedim(-1, axis).contiguous()


def qtype_sums(x: torch.Tensor, spec: FormatSpec, input_stats: bool = True, cache: dict | None = None) -> ErrorSums:
    """The :class:`ErrorSums` of ``fake_quantize(x, spec)`` with the clip bound of
    ``kernels.ranges.unit_bound``, in one pass over x that writes no tensor of x's size."""
    check_input(x, unsupported_reason(spec), "QType")
    if x.dim() == 0 or x.numel() == 0:
        from ..ranges import unit_bound
        from ..reference import fake_quantize_ref
        from ..stats import error_sums_ref

        return error_sums_ref(x, fake_quantize_ref(x, spec, None), unit_bound(x, spec), input_stats=input_stats)
    xm, _ = _rows_view(x.detach(), spec, cache)
    c = _constants(spec, x.dtype, xm.shape[-1], STATS_ELEMS)
    n_outer, nob, L, tiles = _grid(xm, c)
    programs, unroll, warps = stats_grid("qtype", x.dtype, tiles, x.device)
    cnt, sums = partials(programs, x.device)
    # Outer blocks past STATS_ELEMS sit whole in one tile: more warps keep ~4 elements per thread.
    warps = min(32, warps * max(1, c["BP2"] * c["BP2B"] // STATS_ELEMS))
    v = lanes_v((c["OPP"] * c["BP2B"], c["BP2"]), x.dtype, warps, unroll, input_stats)
    _qtype_sums[(programs,)](
        in_arg(xm), cnt, sums, n_outer, nob, L, tiles, **c, EXACT_OUT=c["M"] <= 7, INPUT_STATS=bool(input_stats),
        UNROLL=unroll, V=v, num_warps=warps, enable_fp_fusion=False,
    )  # fmt: skip
    return reduce(cnt, sums, x.numel(), input_stats)


def fake_quantize(x: torch.Tensor, spec: FormatSpec, generator: torch.Generator | None = None) -> torch.Tensor:
    """The module interface's ``fake_quantize`` (the family rounds deterministically: no generator)."""
    return qtype_fake_quantize(x, spec)


sums = qtype_sums
