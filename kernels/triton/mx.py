"""Triton MX kernels (family ``mx``, ``emulate=exact``): the reference's float32 algorithm
(formats-mx.md §2.2-§2.5) bit for bit, on tiles of ``BPP`` blocks.

The input is viewed as (rows, L) with the blocked axis last (the launcher moves it there),
each row cut into ``ceil(L / block)`` blocks; the last one may be partial (the reference
zero-pads it, and zeros change neither the amax nor any other element, nor an auto-mode
error sum). Per-block values are (BPP, 1) columns that broadcast over the (BPP, block) tile.

Per tile, as ``kernels.fast.mx`` does it, with integer bit tricks instead of float ``log2``:

1. **amax** is an int32 max of the magnitude bits: for non-negative floats the int order is
   the float order and every NaN pattern sorts above +Inf, so NaN propagates (§2.3 step 1).
2. **E = floor(log2 amax)** from the exponent field; an fp32-subnormal amax is scaled by 2^64
   (exact) and re-read, a zero block gets -126 like the seed. The other rules (§11.2) bump E
   by one when the 23-bit significand field passes a threshold: > 0 (ceil), > that of
   max_norm (rceil), >= that of 2 - 2^-(m+1) (even), >= that of SQRT2_UP (carry). All are
   the comparisons of ``reference.mx._exact_shared_exponent`` on exact significands.
3. ``s = E - emax`` clamped to the scale range, NaN block above it or for an Inf/NaN amax;
   ``2^s`` and ``2^-s`` built from bits (2^-127 is subnormal, built as such).
4. **Elements** on magnitudes (§2.4): ``y = |x|·2^-s``; the private exponent p from y's field
   clamped to [emin, 127]; ``t = y·2^(M-p)`` is exact, so rounding is integer work on
   ``trunc(t)`` and the exact remainder; ``q = min(r·2^(p-M), max_norm)·2^s``. The sign bit is
   ORed back from x (a flushed block gets +0, like the reference's ``where``).
5. bf16 output is rounded RNE on the bits (exactly torch's ``.to(bfloat16)``), fp16 by
   Triton's conversion (RNE).

The other options, each a constexpr switch, so the default kernel does no extra work:

- ``block=0`` (§2.2-3, one scale per row): a row of at most ``MAX_BLOCK`` elements
  (``STATS_TILE`` for the statistics) is one block of the tile. A longer row is cut into
  chunks of ``TILE_ELEMS`` (``STATS_TILE``) that read the row's amax from a first pass
  (torch's ``aminmax`` per row, kept in the caller's ``cache``).
- ``shared_exp=none`` (§2.3 step 1): the amax is ``|x|`` itself, steps 2-4 run per element;
  the tensor is read as one flat row (the reference's per-axis padding changes nothing then).
- ``minus_exp=auto|auto-2|auto-reverse|auto-fix`` (§2.3 step 2), as ``_exact_auto_offset``:
  the two ceil-based candidates ``s0`` and ``s1 = clamp(s0 - level)`` quantize the block with
  round=nearest, the squared errors (the same float64 operations on the same float32
  values as the reference's) are summed per block, and ``d = level`` only where the
  second sum is strictly lower (a tie or a NaN keeps d = 0). The sums are *not* order-free:
  a block mixing errors ~1e5 and ~1e-12 rounds, and on such near-ties torch's CPU (AVX2 or
  AVX512 cascade) and CUDA reductions and ``tl.sum`` each decide differently. The kernels sum
  in one fixed order, a binary tree of adjacent pairs over the block zero-padded to a power
  of two (:func:`_pair_sum`; one IEEE add per node, so every device agrees), the order of
  the reference's ``_block_sum`` (``reference.mx.BLOCK_SUM_ORDER``). Long rows (block=0) sum
  aligned chunks (subtrees of the row's tree) in ``_mx_auto_err_kernel`` and finish the tree on
  the host.
- ``round=dither``: ``floor(|t|) + (u < frac |t|)`` with the reference's own uniform draws,
  made by torch in the launcher in the reference's order (over the zero-padded blocked
  tensor) and read by the kernel: one extra float32 read per element. The dispatcher passes
  the caller's generator on; ``kernels.stats.format_sums`` sends dither to the unfused path.

Fake quantization (``_mx_fq_kernel``) runs one tile of ``TILE_ELEMS`` per program; with EVEN
(rows of whole blocks) the tile is one contiguous run, loaded and stored in wide vectors.
The fused statistics (``_mx_sums_kernel``) run the same tile code (:func:`_mx_tile`, wrapped
as the tile function ``_mx_stats_tile``) in ``_common.stats_program`` on tiles of
``STATS_TILE`` elements (one block, if longer): each program accumulates every
``num_programs``-th tile per lane, reduces once and writes one row of int32 counts and float64
partial sums, which ``_common.reduce`` merges on the device; no tensor of x's size is written.
q is an element (a few significant bits) times a power of two, so a bfloat16 unless it is a
float32 subnormal: the statistics take bf16 q as exact (``EXACT_OUT``) and only check it.

Not covered: ``emulate=seed`` (the seed's arithmetic in the input dtype with its modelled
float ``log2``, which integer bit tricks do not reproduce), blocks longer than ``MAX_BLOCK``
other than block=0, and the bf16 element (see :func:`_element_ok`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..formats import FormatSpec
from ..reference.mx import AUTO_MINUS_EXP, SQRT2_UP, MXElement, resolve_mx_element
from ..stats import ErrorSums
from ._common import (
    IN_KIND,
    along_last,
    check_input,
    fq_warps,
    grid_step,
    in_arg,
    lanes_v,
    load_f32,
    partials,
    pow2,
    reduce,
    rha_small,
    rne_small,
    round_out,
    stats_grid,
    stats_program,
    store_out,
)

__all__ = ["FAMILIES", "unsupported_reason", "fake_quantize", "sums", "mx_fake_quantize", "mx_sums"]

FAMILIES = ("mx",)

_ROUNDS = ("nearest", "even", "floor", "dither")
#: Elements per fake-quantization tile (blocks per tile = this / padded block length, at least 1).
TILE_ELEMS = 4096
#: The longest block a fake-quantization tile holds; block=0 on longer rows takes two passes.
MAX_BLOCK = 8192
#: The statistics tiles (elements, and the longest block=0 row one holds): smaller tiles, as every
#: lane carries its accumulators across the tiles of its program (the warps: ``_common.STATS_WARPS``).
STATS_TILE = 1024
#: shared_exp=none: the tile's row length over the flattened tensor (any power of two works).
PER_ELEM_ROW = 128


def _element_ok(el: MXElement) -> bool:
    # 2^(M-p) and 2^(p-M) must be normal float32 for p in [emin, 127] (bits build them);
    # the bf16 element (emin -126, M 7) is the one MX element that fails.
    return el.is_int or (el.man_bits >= 1 and el.man_bits - el.emin <= 127 and el.emin - el.man_bits >= -126)


def _reason(spec: FormatSpec) -> str | None:
    """None when the kernels compute ``spec`` (dither given its generator), else why not."""
    if spec.family != "mx":
        return f"the triton backend covers the mx family only, not {spec.family}"
    if spec["emulate"] != "exact":
        return "emulate=seed (the seed's input-dtype arithmetic and modelled log2) is not implemented in triton"
    if not 0 <= spec["block"] <= MAX_BLOCK:
        return f"block={spec['block']} is not implemented in triton (0..{MAX_BLOCK})"
    if not _element_ok(resolve_mx_element(spec["element"])):
        return f"element {spec['element']} is not implemented in triton"
    return None


def unsupported_reason(spec: FormatSpec) -> str | None:
    """None when the Triton kernels cover ``spec``, else why not."""
    return _reason(spec)


# --------------------------------------------------------------------------- device code


@triton.jit
def _tile_index(
    pid, n_blocks, nblk, L, BLOCK: tl.constexpr, BP2: tl.constexpr, BPP: tl.constexpr, EVEN: tl.constexpr = False
):
    """Global block ids (BPP,), their rows (BPP,), the in-bounds mask and offsets (BPP, BP2).

    EVEN (rows split into whole blocks, L % BLOCK == 0): block g is the flat run g·BLOCK ...,
    so the tile is one contiguous run of memory, which the compiler loads and stores in wide
    vectors; otherwise each block's columns are placed within its row."""
    g = pid.to(tl.int64) * BPP + tl.arange(0, BPP).to(tl.int64)
    row = g // nblk
    k = tl.arange(0, BP2)
    if EVEN:
        local = tl.arange(0, BPP)[:, None] * BLOCK + k[None, :]
        offs = pid.to(tl.int64) * (BPP * BLOCK) + local
        valid = (g < n_blocks)[:, None] & (k < BLOCK)[None, :]
    else:
        col = (g % nblk) * BLOCK
        cols = col[:, None] + k[None, :]
        valid = (g < n_blocks)[:, None] & (k < BLOCK)[None, :] & (cols < L)
        offs = row[:, None] * L + cols
    return g, row, valid, offs


@triton.jit
def _log2_parts(amax):
    """floor(log2 amax) and amax's 23-bit significand field, for int32 magnitude bits ``amax``.

    An fp32-subnormal amax is scaled by 2^64 (exact) and re-read; a zero block gets -126 and
    significand 0, the seed's amax = 2^-126 (§2.3 step 2)."""
    field = amax >> 23
    scaled = (amax.to(tl.float32, bitcast=True) * 18446744073709551616.0).to(tl.int32, bitcast=True)  # ·2^64
    sub = field == 0
    nb = tl.where(sub, scaled, amax)
    fl = tl.where(sub, (nb >> 23) - (127 + 64), field - 127)
    mant = nb & 0x7FFFFF
    fl = tl.where(amax == 0, -126, fl)
    mant = tl.where(amax == 0, 0, mant)
    return fl, mant


@triton.jit
def _scale(E, amax, EMAX: tl.constexpr, SCALE_EMAX: tl.constexpr):
    """§2.3 steps 4-5: s = E - emax clamped to the scale range; NaN above it or for an Inf/NaN amax."""
    s = E - EMAX
    nanb = (s > SCALE_EMAX) | (amax >= 0x7F800000)
    return tl.minimum(tl.maximum(s, -SCALE_EMAX), SCALE_EMAX), nanb


@triton.jit
def _elements(
    a,
    s,
    u,
    IS_INT: tl.constexpr,
    M: tl.constexpr,
    EMIN: tl.constexpr,
    MAX_NORM: tl.constexpr,
    ROUND: tl.constexpr,
):
    """§2.4 on magnitudes ``a`` (float32) with the scale exponent ``s``: ``min(R(a·2^-s), max_norm)·2^s``.

    ``u`` holds the dither draws (read only for ROUND == 3)."""
    y = a * pow2(-s)  # a power of two, as the reference's xb * exp2i(-s)
    # t = y·2^(M-p) with p = max(floor(log2 y), emin) is y on the element's integer grid, and
    # step = 2^(p-M) maps it back; both powers of two come from y's exponent field (p's bits
    # clamped from below, no int conversion). t < 2^(M+1) for finite y (2^22 caps the rest,
    # which saturates anyway), so the float additions below round it exactly.
    if IS_INT:
        t = y * (2.0**M)
        step = 2.0**-M
    else:
        step, inv = grid_step(tl.maximum(y.to(tl.int32, bitcast=True) & 0x7F800000, (EMIN + 127) << 23), M)
        t = y * inv
    t = tl.minimum(t, 4194304.0)
    rne = rne_small(t)  # round to nearest even (exact for 0 <= t <= 2^23)
    if ROUND == 0:  # nearest, ties away: a tie RNE rounded down goes up
        r = rha_small(t)
    elif ROUND == 1:  # nearest, ties to even
        r = rne
    elif ROUND == 3:  # dither: floor(|t|) + (u < frac|t|), the reference's comparison
        f = rne - tl.where(rne > t, 1.0, 0.0)
        r = f + tl.where(u < t - f, 1.0, 0.0)
    else:  # toward zero: floor of the magnitude
        r = rne - tl.where(rne > t, 1.0, 0.0)
    qm = r * step
    return tl.minimum(qm, MAX_NORM) * pow2(s)


@triton.jit
def _pair_sum(t, BPP: tl.constexpr, W: tl.constexpr):
    """Each row of the (BPP, W) tile summed as a binary tree of adjacent pairs (W a power of
    two <= 8192): ``t[2j] + t[2j+1]`` level by level. A sum over two elements is one IEEE add,
    so the result is the same on every device, unlike ``tl.sum``'s order (see the module
    docstring, auto modes)."""
    if W >= 2:
        t = tl.sum(tl.reshape(t, (BPP, W // 2, 2)), axis=2)
    if W >= 4:
        t = tl.sum(tl.reshape(t, (BPP, W // 4, 2)), axis=2)
    if W >= 8:
        t = tl.sum(tl.reshape(t, (BPP, W // 8, 2)), axis=2)
    if W >= 16:
        t = tl.sum(tl.reshape(t, (BPP, W // 16, 2)), axis=2)
    if W >= 32:
        t = tl.sum(tl.reshape(t, (BPP, W // 32, 2)), axis=2)
    if W >= 64:
        t = tl.sum(tl.reshape(t, (BPP, W // 64, 2)), axis=2)
    if W >= 128:
        t = tl.sum(tl.reshape(t, (BPP, W // 128, 2)), axis=2)
    if W >= 256:
        t = tl.sum(tl.reshape(t, (BPP, W // 256, 2)), axis=2)
    if W >= 512:
        t = tl.sum(tl.reshape(t, (BPP, W // 512, 2)), axis=2)
    if W >= 1024:
        t = tl.sum(tl.reshape(t, (BPP, W // 1024, 2)), axis=2)
    if W >= 2048:
        t = tl.sum(tl.reshape(t, (BPP, W // 2048, 2)), axis=2)
    if W >= 4096:
        t = tl.sum(tl.reshape(t, (BPP, W // 4096, 2)), axis=2)
    if W >= 8192:
        t = tl.sum(tl.reshape(t, (BPP, W // 8192, 2)), axis=2)
    return t  # (BPP, 1)


@triton.jit
def _auto_errs(
    a,
    amax,
    fl,
    mant,
    LEVEL: tl.constexpr,
    PER_ELEM: tl.constexpr,
    BPP: tl.constexpr,
    BP2: tl.constexpr,
    IS_INT: tl.constexpr,
    M: tl.constexpr,
    EMIN: tl.constexpr,
    EMAX: tl.constexpr,
    MAX_NORM: tl.constexpr,
    SCALE_EMAX: tl.constexpr,
):
    """§2.3 auto modes, as ``reference.mx._exact_auto_offset``: the float64 squared errors of the
    two ceil-based candidates (round=nearest), summed over each block row (per element with
    PER_ELEM); NaN for a candidate whose block is NaN."""
    s0, nan0 = _scale(fl + (mant > 0).to(tl.int32), amax, EMAX, SCALE_EMAX)
    # Like the seed, the second candidate offsets the already clamped s0 and is clamped again.
    s1 = s0 - LEVEL
    nan1 = nan0 | (s1 > SCALE_EMAX)
    s1 = tl.minimum(tl.maximum(s1, -SCALE_EMAX), SCALE_EMAX)
    a64 = a.to(tl.float64)
    # |x - q| = |a - |q||: q has x's sign (or is 0) and float64 rounding is symmetric.
    d0 = a64 - _elements(a, s0, a, IS_INT, M, EMIN, MAX_NORM, 0).to(tl.float64)
    d1 = a64 - _elements(a, s1, a, IS_INT, M, EMIN, MAX_NORM, 0).to(tl.float64)
    e0 = d0 * d0  # masked lanes read 0, which quantizes to 0: no error, like the reference's padding
    e1 = d1 * d1
    if not PER_ELEM:
        e0 = _pair_sum(e0, BPP, BP2)
        e1 = _pair_sum(e1, BPP, BP2)
    return tl.where(nan0, float("nan"), e0), tl.where(nan1, float("nan"), e1)


@triton.jit
def _mx_tile(
    x_ptr,
    u_ptr,
    amax_ptr,
    d_ptr,
    pid,
    n_blocks,
    nblk,
    L,
    BLOCK: tl.constexpr,
    BP2: tl.constexpr,
    BPP: tl.constexpr,
    IN_KIND: tl.constexpr,
    IS_INT: tl.constexpr,
    M: tl.constexpr,
    EMIN: tl.constexpr,
    EMAX: tl.constexpr,
    MAX_NORM: tl.constexpr,
    SCALE_EMAX: tl.constexpr,
    BUMP_GT: tl.constexpr,
    MINUS_EXP: tl.constexpr,
    EVEN_RULE: tl.constexpr,
    ROUND: tl.constexpr,
    FLUSH: tl.constexpr,
    PER_ELEM: tl.constexpr,
    ROWSTAT: tl.constexpr,
    AUTO: tl.constexpr,
    LEVEL: tl.constexpr,
    AUTO_FIX: tl.constexpr,
    EVEN: tl.constexpr = False,
):
    """One tile: (x, q, valid, bound, offs), q and the bound in float32 before the output cast.

    Per-block quantities are (BPP, 1) columns (per element, (BPP, BP2), with PER_ELEM) that
    broadcast over the tile."""
    g, row, valid, offs = _tile_index(pid, n_blocks, nblk, L, BLOCK, BP2, BPP, EVEN)
    x = load_f32(x_ptr, offs, valid, IN_KIND)
    xb = x.to(tl.int32, bitcast=True)
    ab = xb & 0x7FFFFFFF
    sign = xb ^ ab
    a = ab.to(tl.float32, bitcast=True)

    # §2.3: the block exponent from the int max of the magnitude bits (NaN sorts on top).
    if PER_ELEM:
        amax = ab  # shared_exp=none: every element is its own block
    elif ROWSTAT:
        amax = tl.load(amax_ptr + row, mask=g < n_blocks, other=0)[:, None]  # block=0, long rows
    else:
        amax = tl.max(ab, axis=1)[:, None]
    fl, mant = _log2_parts(amax)
    if AUTO:
        if ROWSTAT:
            d = tl.load(d_ptr + row, mask=g < n_blocks, other=0)[:, None]
        else:
            e0, e1 = _auto_errs(
                a, amax, fl, mant, LEVEL, PER_ELEM, BPP, BP2, IS_INT, M, EMIN, EMAX, MAX_NORM, SCALE_EMAX
            )
            d = tl.where(e1 < e0, LEVEL, 0)  # d = 0 on a tie or a NaN error
        if AUTO_FIX:
            E = fl - d
        else:
            E = fl + (mant > 0).to(tl.int32) - d
    else:
        # The rules of §11.2 on exact significand fields (see _constants).
        E = fl + (mant > BUMP_GT).to(tl.int32) - MINUS_EXP
    s, nanb = _scale(E, amax, EMAX, SCALE_EMAX)
    if EVEN_RULE:
        nanb = nanb | (E > 127)
    if FLUSH:
        flushb = E <= -127  # §2.3 step 3: the block becomes +0
    else:
        flushb = E < -1000000

    # §2.4 on magnitudes; the sign bit is ORed back (a flushed block gets +0, like the reference's where).
    a = tl.where(flushb, 0.0, a)
    sign = tl.where(flushb, 0, sign)
    if ROUND == 3:
        u = tl.load(u_ptr + offs, mask=valid, other=0.0)
    else:
        u = a
    qm = _elements(a, s, u, IS_INT, M, EMIN, MAX_NORM, ROUND)
    qbits = tl.where(nanb, 0x7FC00000, qm.to(tl.int32, bitcast=True) | sign)
    q = qbits.to(tl.float32, bitcast=True)

    # kernels.ranges.unit_bound: max_norm·X, NaN for a NaN block, 0 for a flushed one.
    bound = tl.where(nanb, float("nan"), tl.where(flushb, 0.0, MAX_NORM * pow2(s)))
    return x, q, valid, bound, offs


@triton.jit
def _mx_fq_kernel(
    x_ptr,
    u_ptr,
    amax_ptr,
    d_ptr,
    out_ptr,
    n_blocks,
    nblk,
    L,
    BLOCK: tl.constexpr,
    BP2: tl.constexpr,
    BPP: tl.constexpr,
    IN_KIND: tl.constexpr,
    IS_INT: tl.constexpr,
    M: tl.constexpr,
    EMIN: tl.constexpr,
    EMAX: tl.constexpr,
    MAX_NORM: tl.constexpr,
    SCALE_EMAX: tl.constexpr,
    BUMP_GT: tl.constexpr,
    MINUS_EXP: tl.constexpr,
    EVEN_RULE: tl.constexpr,
    ROUND: tl.constexpr,
    FLUSH: tl.constexpr,
    PER_ELEM: tl.constexpr,
    ROWSTAT: tl.constexpr,
    AUTO: tl.constexpr,
    LEVEL: tl.constexpr,
    AUTO_FIX: tl.constexpr,
    EVEN: tl.constexpr,
):
    pid = tl.program_id(0)
    x, q, valid, bound, offs = _mx_tile(
        x_ptr, u_ptr, amax_ptr, d_ptr, pid, n_blocks, nblk, L, BLOCK, BP2, BPP, IN_KIND, IS_INT, M, EMIN, EMAX,
        MAX_NORM, SCALE_EMAX, BUMP_GT, MINUS_EXP, EVEN_RULE, ROUND, FLUSH, PER_ELEM, ROWSTAT, AUTO, LEVEL, AUTO_FIX,
        EVEN,
    )  # fmt: skip
    store_out(out_ptr, offs, q, valid, IN_KIND)


@triton.jit
def _mx_stats_tile(t, args, K: tl.constexpr):
    """Tile ``t`` for the fused statistics: :func:`_mx_tile`'s x, q, valid and offsets, and its
    bound rounded to the output (= input) dtype; args (x_ptr, u_ptr, amax_ptr, d_ptr, n_blocks,
    nblk, L), K the constexprs of :func:`_mx_tile` from BLOCK to EVEN, in its order."""
    x_ptr, u_ptr, amax_ptr, d_ptr, n_blocks, nblk, L = args
    x, q, valid, bound, offs = _mx_tile(
        x_ptr, u_ptr, amax_ptr, d_ptr, t, n_blocks, nblk, L, K[0], K[1], K[2], K[3], K[4], K[5], K[6], K[7], K[8],
        K[9], K[10], K[11], K[12], K[13], K[14], K[15], K[16], K[17], K[18], K[19], K[20],
    )  # fmt: skip
    return x, q, valid, offs, round_out(bound, K[3])


@triton.jit
def _mx_sums_kernel(
    x_ptr,
    u_ptr,
    amax_ptr,
    d_ptr,
    cnt_ptr,
    sum_ptr,
    n_blocks,
    nblk,
    L,
    n_tiles,
    BLOCK: tl.constexpr,
    BP2: tl.constexpr,
    BPP: tl.constexpr,
    IN_KIND: tl.constexpr,
    IS_INT: tl.constexpr,
    M: tl.constexpr,
    EMIN: tl.constexpr,
    EMAX: tl.constexpr,
    MAX_NORM: tl.constexpr,
    SCALE_EMAX: tl.constexpr,
    BUMP_GT: tl.constexpr,
    MINUS_EXP: tl.constexpr,
    EVEN_RULE: tl.constexpr,
    ROUND: tl.constexpr,
    FLUSH: tl.constexpr,
    PER_ELEM: tl.constexpr,
    ROWSTAT: tl.constexpr,
    AUTO: tl.constexpr,
    LEVEL: tl.constexpr,
    AUTO_FIX: tl.constexpr,
    EVEN: tl.constexpr,
    INPUT_STATS: tl.constexpr,
    UNROLL: tl.constexpr,
    V: tl.constexpr,
):
    K: tl.constexpr = (BLOCK, BP2, BPP, IN_KIND, IS_INT, M, EMIN, EMAX, MAX_NORM, SCALE_EMAX, BUMP_GT, MINUS_EXP,
                       EVEN_RULE, ROUND, FLUSH, PER_ELEM, ROWSTAT, AUTO, LEVEL, AUTO_FIX, EVEN)  # fmt: skip
    args = (x_ptr, u_ptr, amax_ptr, d_ptr, n_blocks, nblk, L)
    # q is an element (a few significant bits) times a power of two: a bfloat16 but for
    # float32-subnormal results, which the careful pass of stats_program rounds.
    stats_program(_mx_stats_tile, args, K, n_tiles, cnt_ptr, sum_ptr, (BPP, BP2), IN_KIND, True, INPUT_STATS, UNROLL,
                  V)  # fmt: skip


@triton.jit
def _mx_auto_err_kernel(
    x_ptr,
    amax_ptr,
    err_ptr,
    n_blocks,
    nblk,
    L,
    BLOCK: tl.constexpr,
    BP2: tl.constexpr,
    BPP: tl.constexpr,
    IN_KIND: tl.constexpr,
    IS_INT: tl.constexpr,
    M: tl.constexpr,
    EMIN: tl.constexpr,
    EMAX: tl.constexpr,
    MAX_NORM: tl.constexpr,
    SCALE_EMAX: tl.constexpr,
    LEVEL: tl.constexpr,
    EVEN: tl.constexpr,
):
    """Rows longer than one tile (block=0, auto modes): each chunk's two candidate error sums,
    float64, at ``err_ptr[2·chunk + (0, 1)]``; the launcher adds them up per row."""
    pid = tl.program_id(0)
    g, row, valid, offs = _tile_index(pid, n_blocks, nblk, L, BLOCK, BP2, BPP, EVEN)
    x = load_f32(x_ptr, offs, valid, IN_KIND)
    ab = x.to(tl.int32, bitcast=True) & 0x7FFFFFFF
    amax = tl.load(amax_ptr + row, mask=g < n_blocks, other=0)[:, None]
    fl, mant = _log2_parts(amax)
    a = ab.to(tl.float32, bitcast=True)
    e0, e1 = _auto_errs(a, amax, fl, mant, LEVEL, False, BPP, BP2, IS_INT, M, EMIN, EMAX, MAX_NORM, SCALE_EMAX)
    ok = (g < n_blocks)[:, None]
    tl.store(err_ptr + g[:, None] * 2, e0, mask=ok)
    tl.store(err_ptr + g[:, None] * 2 + 1, e1, mask=ok)


# --------------------------------------------------------------------------- launchers


def _constants(spec: FormatSpec, dtype: torch.dtype, L: int, tile: int = TILE_ELEMS, longest: int = MAX_BLOCK) -> dict:
    """The kernels' constexprs for ``spec`` on rows of length ``L`` (after :func:`_rows_view`),
    for tiles of ``tile`` elements (or one block, if longer) and block=0 rows of at most
    ``longest`` elements in one tile (longer ones in chunks of ``tile``)."""
    el = resolve_mx_element(spec["element"])
    rule, me = spec["scale"], spec["minus_exp"]
    auto = isinstance(me, str)
    # E = fl + (significand field > BUMP_GT) - MINUS_EXP: the rules of §11.2 on exact fields.
    if me is not None:
        bump, minus = 0, 0 if auto else int(me)  # ceil(log2 amax) - minus_exp
    else:
        minus = 0
        bump = {
            "floor": 1 << 23,  # never
            "ceil": 0,
            "rceil": round((el.max_mant - 1) * 2**23),
            "even": round((el.even_threshold - 1) * 2**23) - 1,
            "carry": round((SQRT2_UP - 1) * 2**23) - 1,
        }[rule]
    per_elem = spec["shared_exp"] == "none"
    block, rowstat = spec["block"], False
    if per_elem:
        block = PER_ELEM_ROW  # any tiling will do: no element shares its scale
    elif block == 0:
        # §2.2-3: one scale per row. A row that fits a tile is one block; a longer one is cut
        # into chunks that read its amax (and auto offset) from a first pass (_row_stats).
        rowstat = L > longest
        block = tile if rowstat else triton.next_power_of_2(L)
    bp2 = triton.next_power_of_2(block)
    return dict(
        BLOCK=block,
        BP2=bp2,
        BPP=max(1, tile // bp2),
        IN_KIND=IN_KIND[dtype],
        IS_INT=el.is_int,
        M=el.man_bits,
        EMIN=el.emin,
        EMAX=el.emax,
        MAX_NORM=float(el.max_norm),
        SCALE_EMAX=2 ** (spec["scale_bits"] - 1) - 1,
        BUMP_GT=bump,
        MINUS_EXP=minus,
        EVEN_RULE=rule == "even" and me is None,
        ROUND=_ROUNDS.index(spec["round"]),
        FLUSH=bool(spec["flush_fp32_subnorms"]),
        PER_ELEM=per_elem,
        ROWSTAT=rowstat,
        AUTO=auto,
        LEVEL=AUTO_MINUS_EXP[me] if auto else 0,
        AUTO_FIX=me == "auto-fix",
        EVEN=L % block == 0,
    )


def _rows_view(x: torch.Tensor, spec: FormatSpec, cache: dict | None = None) -> tuple[torch.Tensor, int]:
    """x as the kernels read it, contiguous: the blocked axis moved last (``_common.along_last``,
    cached per axis), or for shared_exp=none (no blocks) the whole tensor as one row; and the
    axis index."""
    axis = spec["axis"] % x.dim()
    if spec["shared_exp"] == "none":
        return x.reshape(1, -1).contiguous(), axis
    return along_last(x, axis, cache), axis


def _grid(xm: torch.Tensor, c: dict) -> tuple[int, int, int, int]:
    L = xm.shape[-1]
    nblk = triton.cdiv(L, c["BLOCK"])
    n_blocks = (xm.numel() // L) * nblk
    return n_blocks, nblk, L, triton.cdiv(n_blocks, c["BPP"])


def _draws(x: torch.Tensor, spec: FormatSpec, axis: int, generator: torch.Generator | None) -> torch.Tensor:
    """round=dither: the reference's uniform draws, in its order, laid out as :func:`_rows_view` lays out x.

    ``_exact_elements`` draws one float32 ``torch.rand`` over the zero-padded blocked tensor
    (x's axis order, the blocked axis padded to a multiple of ``block``); the padding's draws
    are dropped here. One extra float32 read per element in the kernel."""
    shape = list(x.shape)
    if spec["block"]:
        shape[axis] = triton.cdiv(shape[axis], spec["block"]) * spec["block"]
    u = torch.rand(shape, generator=generator, dtype=torch.float32, device=x.device)
    return _rows_view(u.narrow(axis, 0, x.shape[axis]), spec)[0]


def _row_stats(xm: torch.Tensor, axis: int, c: dict, cache: dict | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """block=0 on rows longer than a tile: each row's amax (int32 magnitude bits) and, for the
    auto modes, its offset d, for the element kernel to read.

    The row amax does not depend on the format: it is kept in ``cache`` under
    ``("absmax_axis", axis)``: float32, one value per row of ``x.movedim(axis, -1)``, the
    layout kernels.triton.scaled's per-row absmax has under that key, so either reuses it."""
    key = ("absmax_axis", axis)
    rows = xm.numel() // xm.shape[-1]
    m = cache.get(key) if cache is not None else None
    if m is None or m.numel() != rows:
        mn, mx = torch.aminmax(xm, dim=-1)  # one pass, no |x| buffer; both propagate NaN
        m = torch.maximum(mn.abs(), mx.abs()).to(torch.float32).reshape(-1).contiguous()
        if cache is not None:
            cache[key] = m
    m = m.to(device=xm.device, dtype=torch.float32).reshape(-1).contiguous()  # whoever stored it
    amax = m.view(torch.int32) & 0x7FFFFFFF  # -0 -> +0; any NaN sorts above +Inf
    if not c["AUTO"]:
        return amax, None
    n_blocks, nblk, L, programs = _grid(xm, c)
    err = torch.empty((n_blocks, 2), dtype=torch.float64, device=xm.device)
    keys = ("BLOCK", "BP2", "BPP", "IN_KIND", "IS_INT", "M", "EMIN", "EMAX", "MAX_NORM", "SCALE_EMAX", "LEVEL", "EVEN")
    _mx_auto_err_kernel[(programs,)](in_arg(xm), amax, err, n_blocks, nblk, L, **{k: c[k] for k in keys})
    # The chunks (aligned, a power of two long) are subtrees of the row's pair tree: finish it
    # over the chunk count zero-padded to a power of two, one add per node as in _pair_sum.
    e = err.view(-1, nblk, 2)
    e = torch.nn.functional.pad(e, (0, 0, 0, triton.next_power_of_2(nblk) - nblk))
    while e.shape[1] > 1:
        e = e[:, 0::2] + e[:, 1::2]
    return amax, torch.where(e[:, 0, 1] < e[:, 0, 0], c["LEVEL"], 0).to(torch.int32)


def _prepare(x: torch.Tensor, spec: FormatSpec, generator, cache, stats: bool = False):
    """(xm, axis, constants, kernel pointer args, grid) for one launch (of the statistics
    kernel with ``stats``: its smaller tiles)."""
    x = x.detach()
    xm, axis = _rows_view(x, spec, cache)
    geometry = (STATS_TILE, STATS_TILE) if stats else ()
    c = _constants(spec, x.dtype, xm.shape[-1], *geometry)
    xa = in_arg(xm)
    u = amax = d = xa  # never read unless the constexprs ask for them
    if c["ROUND"] == 3:
        u = _draws(x, spec, axis, generator)
    if c["ROWSTAT"]:
        amax, d = _row_stats(xm, axis, c, cache)
        d = xa if d is None else d
    return xm, axis, c, (xa, u, amax, d), _grid(xm, c)


def mx_fake_quantize(x: torch.Tensor, spec: FormatSpec, generator: torch.Generator | None = None) -> torch.Tensor:
    """``fake_quantize(x, spec, backend="reference")`` for a supported MX spec, bit for bit
    (round=dither: with the same ``generator``, in the same state)."""
    check_input(x, _reason(spec), "MX")
    if x.dim() == 0 or x.numel() == 0:
        from ..reference import fake_quantize_ref

        return fake_quantize_ref(x, spec, generator)
    xm, axis, c, ptrs, (n_blocks, nblk, L, programs) = _prepare(x, spec, generator, None)
    out = torch.empty_like(xm)
    warps = fq_warps("mx", x.dtype, programs, x.device, c["BPP"] * c["BP2"])
    _mx_fq_kernel[(programs,)](*ptrs, in_arg(out), n_blocks, nblk, L, **c, num_warps=warps)
    if c["PER_ELEM"]:
        return out.view(x.shape)
    return out.movedim(-1, axis).contiguous()


def mx_sums(
    x: torch.Tensor,
    spec: FormatSpec,
    input_stats: bool = True,
    cache: dict | None = None,
    generator: torch.Generator | None = None,
) -> ErrorSums:
    """The :class:`ErrorSums` of ``fake_quantize(x, spec)`` with the clip bound of
    ``kernels.ranges.unit_bound``, in one pass over x that writes no tensor of x's size
    (block=0 on rows longer than a tile: after a per-row amax pass, cached in ``cache``)."""
    check_input(x, _reason(spec), "MX")
    if x.dim() == 0 or x.numel() == 0:
        from ..ranges import unit_bound
        from ..reference import fake_quantize_ref
        from ..stats import error_sums_ref

        q = fake_quantize_ref(x, spec, generator)
        return error_sums_ref(x, q, unit_bound(x, spec), input_stats=input_stats)
    xm, axis, c, ptrs, (n_blocks, nblk, L, tiles) = _prepare(x, spec, generator, cache, stats=True)
    programs, unroll, warps = stats_grid("mx_auto" if c["AUTO"] else "mx", x.dtype, tiles, x.device)
    cnt, sums = partials(programs, x.device)
    v = lanes_v((c["BPP"], c["BP2"]), x.dtype, warps, unroll, input_stats)
    _mx_sums_kernel[(programs,)](
        *ptrs, cnt, sums, n_blocks, nblk, L, tiles, INPUT_STATS=input_stats, UNROLL=unroll, V=v,
        num_warps=warps, **c,
    )  # fmt: skip
    return reduce(cnt, sums, x.numel(), input_stats)


fake_quantize = mx_fake_quantize
sums = mx_sums
