"""Triton NVFP4 kernels: the seed's one-level ``nvf4`` (formats-mx.md §4.2) and NVIDIA's
two-level ``nvfp4`` (§4.1 with torchao's arithmetic, §4.4), bit for bit with
``kernels.reference.nvfp``, around one tile function, ``_nvfp_tile``: ``BPP`` blocks of 16.

The input is viewed as (rows, L) with the blocked axis last (the launcher moves it there),
each row cut into ``ceil(L / 16)`` blocks; the last one may be partial (the reference
zero-pads it, and zeros change neither a block amax nor any other element). When L is a
multiple of 16 (``EVEN``), block g is simply elements 16g..16g+15 of the flat tensor: the
tile is one contiguous run, Triton vectorizes its loads and stores (16 bytes a thread), and
no block needs its row and column (an int64 division per block otherwise).

Shared per tile:

- **Block amax** is an int32 max of the magnitude bits: for non-negative floats the int order
  is the float order and every NaN pattern sorts above +Inf, so NaN propagates as
  ``torch.amax`` does.
- **E4M3 rounding** of a per-block value v in [0, 448] (``reference.fp8.round_to_grid``):
  the step ``2^(max(floor(log2 v), -6) - 3)`` from the exponent field (an fp32-subnormal v
  has field 0 and gets the -6 floor), ``t = v / step`` is exact, and its RNE is
  ``_common.rne_small``.
- **E2M1 rounding** (RNE, saturating at 6) of a float32 value with the magic number of its
  step (``_e2m1_rne``): no float-to-int conversion.
- bf16 output is rounded RNE on the bits (exactly torch's ``.to(bfloat16)``), fp16 by
  Triton's conversion (RNE).

``nvf4`` (``emulate=exact``, reference ``_nvf4_exact``): ``S = e4m3(min(amax_b / 6, 448))``,
then ``q = e2m1(|x| / S)``, output ``copysign(q·S, x)``, with IEEE float32 quotients, which the
kernel forms without a division per element: ``fl(a / d)`` as ``y0 = fl(a·fl(1/d))`` and
``y0 + fma(y0, -d, a)·fl(1/d)`` in one more FMA (``_common.div_by_reciprocal``, Markstein's
correction: the residual is exact), with d = 6 for the scale (a constant reciprocal) and d = S
per element (one reciprocal per block). That is the IEEE quotient bit for bit but where the
residual loses bits at the bottom of float32's range, for quotients the roundings take to 0
either way (amax / 6 below 2^-126, which E4M3 rounds to 0; |x| / S below 2^-20, which E2M1
does): checked for every float32 amax, every bfloat16 and float16 |x| against every E4M3 S, and
float32 |x| next to every midpoint times every S (``tests/kernels/test_triton_nvfp.py``).
Special cases as the reference: a scale that rounds to 0 gives +0 for the block, a NaN block is
NaN, an infinite element is NaN (its block's amax is Inf, so ``S = 448`` for the others).

``nvfp4`` (reference ``quantize_nvfp4_ref``): the tensor amax ``A`` (a 0-dim float32 tensor,
read by the kernel: no host synchronisation) gives ``pts = A / 2688``; per block
``s_b = e4m3(clamp(amax_b / 6 / pts, 2^-6, 448))``, ``r = (1 / pts) / s_b`` and
``dec = pts·s_b``, all with IEEE divisions in the reference's order; per element
``e2m1(|x|·r)·dec`` with the sign of x (the reference's rounding and product are odd in x).
``|x|·r`` is a rounded product that is only compared, never added to, so FMA contraction on
the GPU cannot change it. A non-finite A makes everything NaN; ``pts < 2^-121`` returns x.
The amax comes from a one-pass Triton reduction (``_absmax_kernel``, a local copy of
hif8's) and is kept in the caller's ``cache`` under ``("absmax",)``, the key hif8 uses too.

``nvf4:emulate=seed`` (reference ``_nvf4_seed``, §4.2 steps 2-6 as the seed computes them):
every op of the reference in its order, each float32 result rounded to the input dtype with
``round_out`` (torch computes bf16/fp16 ops in float32 and rounds once), with
``eps = 2^-14`` for fp16 inputs and ``2^-60`` otherwise: ``sf = min(amax_b / 6, 448)``,
``S = round(sf·2^(3-e))·2^(e-3)``, ``S' = S + eps``, ``v = |x| / S'`` (a per-element IEEE
division: S' has up to 11 significant bits in fp16, so the comparison trick above does not
apply), ``q = min(round(v·2^(1-e2))·2^(e2-1), 6)`` and ``sign(x)·S'·q`` (torch's ``sign(±0)``
is +0). The seed's floors ``e = max(floor(log2(sf + eps)), -6)`` and
``e2 = max(floor(log2(v + eps)), 0)`` come from exponent fields (of ``sf + eps`` and of v).
Its float ``log2`` (float64 rounded to float32, then to the input dtype) can return k + 1 for
a y just below 2^(k+1), but only within a few ulps of the input dtype of 2^(k+1), where
rounding at the coarser step gives the same 2^(k+1) as at the finer one; and the eps in
``v + eps`` is below half an ulp of every v >= 1 and cannot lift a v < 1 to 1. So S and q
equal the seed's (checked for every bf16 and fp16 value, and for float32 values near each
power of two, against ``reference.nvfp``'s own floors). A NaN block is NaN, and an infinite
element NaN (the seed's ``Inf·0``), the rest of its block quantized against ``S = 448``.

``_nvfp_fq`` runs one tile per program (``_common.fq_program``, ``BPP`` blocks). ``_nvfp_sums``
(``_common.stats_program``) runs the same tile function on tiles of ``STATS_BPP`` blocks (1024
elements), each program looping over every ``num_programs``-th tile and accumulating the error
sums per lane, with the clip bound of ``kernels.ranges.unit_bound`` (``6·S``, ``6·dec``, +Inf for
a tensor returned unchanged) rounded to the output dtype. ``EXACT_OUT`` holds for nvf4 (q is an
E2M1 value times an E4M3 scale, or rounded to the input dtype in seed mode: a bfloat16 for a
bfloat16 input), not for nvfp4 (its decode scale ``pts·s_b`` is an arbitrary float32).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..formats import FormatSpec
from ..reference.nvfp import E4M3_MIN_NORMAL, NVFP4_BLOCK, NVFP4_MIN_PTS, NVFP4_TENSOR_DIVISOR
from ..stats import ErrorSums
from ._common import (
    IN_KIND,
    along_last,
    check_input,
    div_by_reciprocal,
    fq_program,
    fq_warps,
    in_arg,
    lanes_v,
    load_f32,
    nan_max,
    partials,
    pow2,
    reduce,
    rne_small,
    round_out,
    stats_grid,
    stats_program,
    tensor_absmax,
)

__all__ = ["FAMILIES", "unsupported_reason", "fake_quantize", "sums", "nvfp_fake_quantize", "nvfp_sums"]

FAMILIES = ("nvf4", "nvfp4")

#: Elements per fake-quantization program: BPP blocks of 16.
TILE_ELEMS = 4096
BPP = TILE_ELEMS // NVFP4_BLOCK
#: Elements per statistics tile (STATS_BPP blocks of 16): small tiles, since every thread carries
#: accumulators for the runs of elements it holds (the warps: ``_common.STATS_WARPS``).
STATS_TILE_ELEMS = 1024
STATS_BPP = STATS_TILE_ELEMS // NVFP4_BLOCK
_F32 = torch.float32


def unsupported_reason(spec: FormatSpec) -> str | None:
    """None when the Triton kernels cover ``spec``, else why not."""
    if spec.family not in FAMILIES:
        return f"the triton nvfp kernels cover {', '.join(FAMILIES)}, not {spec.family}"
    return None


# --------------------------------------------------------------------------- device code


@triton.jit
def _e4m3(v):
    """``round_to_grid(v, E4M3)`` for float32 v in [0, 448] (RNE; subnormal steps 2^-9)."""
    e = tl.maximum((v.to(tl.int32, bitcast=True) >> 23) - 127, -6)
    return rne_small(v * pow2(3 - e)) * pow2(e - 3)  # v·2^(3-e) is exact, in [0, 16)


@triton.jit
def _e2m1_rne(y):
    """``round_to_grid(y, E2M1)`` (RNE, saturating at 6) of float32 y >= 0: the step 2^(e - 1) of
    y's binade e, clamped to [0, 2] (0.5 below 2, 1 up to 4, 2 above), as the magic number
    1.5·2^23·step, whose addition rounds y to a multiple of the step, ties to even (an even
    multiple is an even code). +Inf gives 6; so does NaN (callers make those NaN otherwise)."""
    eb = tl.minimum(tl.maximum(y.to(tl.int32, bitcast=True) & 0x7F800000, 127 << 23), 129 << 23)
    magic = (eb + ((22 << 23) | 0x400000)).to(tl.float32, bitcast=True)
    return tl.minimum((y + magic) - magic, 6.0)


@triton.jit
def _blocks(x_ptr, t, n_blocks, nblk, L, BPP: tl.constexpr, IN_KIND: tl.constexpr, EVEN: tl.constexpr):
    """Tile ``t``, blocks t·BPP .. t·BPP + BPP - 1 of 16: (x float32, valid, offs)."""
    g = t.to(tl.int64) * BPP + tl.arange(0, BPP).to(tl.int64)  # global block ids
    k = tl.arange(0, 16)
    if EVEN:
        # Block g is elements 16g..16g+15. The mask is built per block (constant along the 16
        # elements, which Triton must see to vectorize a masked load), not per element.
        offs = g[:, None] * 16 + k[None, :]
        valid = tl.broadcast_to((g < n_blocks)[:, None], (BPP, 16))
    else:
        row = g // nblk
        cols = ((g % nblk) * 16)[:, None] + k[None, :]
        valid = (g < n_blocks)[:, None] & (cols < L)
        offs = row[:, None] * L + cols
    return load_f32(x_ptr, offs, valid, IN_KIND), valid, offs


@triton.jit
def _nvf4_tile(x_ptr, t, n_blocks, nblk, L, BPP: tl.constexpr, IN_KIND: tl.constexpr, EVEN: tl.constexpr):
    """One nvf4 tile: (x, q, valid, bound, offs), q and the per-block bound in float32."""
    x, valid, offs = _blocks(x_ptr, t, n_blocks, nblk, L, BPP, IN_KIND, EVEN)
    xb = x.to(tl.int32, bitcast=True)
    a = tl.abs(x)
    amax = tl.reduce(a, 1, nan_max)
    nanb = amax != amax
    # §4.2 steps 2-3; Inf/6 = Inf clips to 448 (here NaN, which the min also takes to 448). A NaN
    # block is masked below. fl(amax / 6) through fl(1/6) (module docstring).
    s = _e4m3(tl.minimum(div_by_reciprocal(amax, 6.0, 0.1666666716337204), 448.0))
    # The special cases ride on per-block values, not per-element selects: a NaN block decodes
    # with a NaN scale; a·0 is NaN for an infinite element (and +0 otherwise); a zero scale
    # (the fixed seed bug) gives +0, so its block keeps no sign.
    dec = tl.where(nanb, float("nan"), s)[:, None]
    sign = tl.where(s == 0.0, 0, -2147483648)[:, None]
    # fl(|x| / S) through the block's reciprocal (module docstring), then its E2M1 rounding (a
    # zero S gives a NaN quotient, then 6·0 = +0).
    rinv = tl.div_rn(tl.full(s.shape, 1.0, tl.float32), s)[:, None]
    q = _e2m1_rne(div_by_reciprocal(a, s[:, None], rinv)) * dec + a * 0.0  # exact: 2 x 4 significant bits, plus +0
    qbits = q.to(tl.int32, bitcast=True) | (xb & sign)  # copysign(q·S, x)
    bound = tl.where(nanb, float("nan"), 6.0 * s)
    return x, qbits.to(tl.float32, bitcast=True), valid, bound, offs


@triton.jit
def _nvf4_seed_tile(x_ptr, t, n_blocks, nblk, L, BPP: tl.constexpr, IN_KIND: tl.constexpr, EVEN: tl.constexpr):
    """One nvf4 emulate=seed tile: the reference's ``_nvf4_seed`` op for op, each op's float32
    result rounded to the input dtype as torch's (float32-opmath) ops round it; the floors of
    the seed's log2 from the exponent field (see the module docstring)."""
    x, valid, offs = _blocks(x_ptr, t, n_blocks, nblk, L, BPP, IN_KIND, EVEN)
    if IN_KIND == 2:
        eps = 6.103515625e-05  # 2^-14
    else:
        eps = 8.673617379884035e-19  # 2^-60
    xb = x.to(tl.int32, bitcast=True)
    ab = xb & 0x7FFFFFFF
    amax = tl.max(ab, axis=1)
    nanb = amax > 0x7F800000
    sf = tl.minimum(round_out(tl.div_rn(amax.to(tl.float32, bitcast=True), 6.0), IN_KIND), 448.0)
    # §4.2 step 3: e = max(floor(log2(sf + eps)), -6); binades below -6 clamp either way.
    y = round_out(sf + eps, IN_KIND)
    e = tl.where(nanb, 0, tl.maximum((y.to(tl.int32, bitcast=True) >> 23) - 127, -6))
    S = rne_small(sf * pow2(3 - e)) * pow2(e - 3)  # exact in the input dtype: r <= 16
    Sp = round_out(S + eps, IN_KIND)  # step 4: S' = S + eps divides and decodes
    a = ab.to(tl.float32, bitcast=True)
    v = round_out(tl.div_rn(a, Sp[:, None]), IN_KIND)
    # Step 5: e2 = max(floor(log2(v + eps)), 0), from v's exponent field (module docstring);
    # from binade 3 up the element saturates at 6 whatever e2 is.
    e2 = tl.minimum(tl.maximum((v.to(tl.int32, bitcast=True) >> 23) - 127, 0), 3)
    m1 = rne_small(v * pow2(1 - e2)) * 0.5  # (v >= 8 or Inf, any value: e2 = 3 saturates)
    q = tl.where(e2 == 3, 6.0, tl.minimum(pow2(e2) * m1, 6.0))
    # Step 6: sign(x)·S'·q, with torch's sign(±0) = +0.
    out = round_out(Sp[:, None] * q, IN_KIND)
    qbits = out.to(tl.int32, bitcast=True) | tl.where(ab == 0, 0, xb ^ ab)
    # A non-finite v (an Inf element or a NaN block): the seed's Inf·0 = NaN.
    qbits = tl.where(nanb[:, None] | (ab == 0x7F800000), 0x7FC00000, qbits)
    bound = tl.where(nanb, float("nan"), round_out(Sp * 6.0, IN_KIND))
    return x, qbits.to(tl.float32, bitcast=True), valid, bound, offs


@triton.jit
def _nvfp4_tile(
    x_ptr,
    amax_ptr,
    t,
    n_blocks,
    nblk,
    L,
    BPP: tl.constexpr,
    IN_KIND: tl.constexpr,
    EVEN: tl.constexpr,
    DIVISOR: tl.constexpr,
    MIN_PTS: tl.constexpr,
    SB_MIN: tl.constexpr,
):
    """One nvfp4 tile: (x, q, valid, bound, offs), q and the per-block bound in float32."""
    x, valid, offs = _blocks(x_ptr, t, n_blocks, nblk, L, BPP, IN_KIND, EVEN)
    xb = x.to(tl.int32, bitcast=True)
    ab = xb & 0x7FFFFFFF
    A = tl.load(amax_ptr)
    finite = (A.to(tl.int32, bitcast=True) & 0x7FFFFFFF) < 0x7F800000
    pts = tl.div_rn(A, DIVISOR)
    tiny = pts < MIN_PTS  # x comes back unchanged
    bmax = tl.max(ab, axis=1).to(tl.float32, bitcast=True)
    # The reference's per-block ops in its order; a tiny or non-finite tensor is masked below.
    v = tl.div_rn(tl.div_rn(bmax, 6.0), pts)
    s_b = _e4m3(tl.minimum(tl.maximum(v, SB_MIN), 448.0))
    r = tl.div_rn(tl.div_rn(1.0, pts), s_b)
    dec = pts * s_b
    # A non-finite tensor decodes with a NaN scale (every element NaN); a tiny one returns x.
    dec = tl.where(finite, dec, float("nan"))
    if tiny:
        qbits = xb
    else:
        q = _e2m1_rne(ab.to(tl.float32, bitcast=True) * r[:, None]) * dec[:, None]
        qbits = q.to(tl.int32, bitcast=True) | (xb & -2147483648)
    bound = tl.where(finite, tl.where(tiny, float("inf"), 6.0 * dec), float("nan"))
    return x, qbits.to(tl.float32, bitcast=True), valid, bound, offs


@triton.jit
def _nvfp_tile(t, args, K: tl.constexpr):
    """Tile ``t`` of the format ``MODE`` picks (0 nvf4, 1 nvf4 emulate=seed, 2 nvfp4): (x, q, valid,
    offs, bound), the per-block bound rounded to the output (= input) dtype, as a [BPP, 1] column.
    args (x_ptr, aux_ptr, n_blocks, nblk, L), K (BPP, IN_KIND, MODE, EVEN, DIVISOR, MIN_PTS, SB_MIN)."""
    x_ptr, aux_ptr, n_blocks, nblk, L = args
    BPP: tl.constexpr = K[0]
    IN_KIND: tl.constexpr = K[1]
    MODE: tl.constexpr = K[2]
    EVEN: tl.constexpr = K[3]
    if MODE == 2:
        x, q, valid, bound, offs = _nvfp4_tile(
            x_ptr, aux_ptr, t, n_blocks, nblk, L, BPP, IN_KIND, EVEN, K[4], K[5], K[6]
        )
    elif MODE == 1:
        x, q, valid, bound, offs = _nvf4_seed_tile(x_ptr, t, n_blocks, nblk, L, BPP, IN_KIND, EVEN)
    else:
        x, q, valid, bound, offs = _nvf4_tile(x_ptr, t, n_blocks, nblk, L, BPP, IN_KIND, EVEN)
    return x, q, valid, offs, round_out(bound, IN_KIND)[:, None]


# One fake-quantization kernel and one statistics kernel around the tile function.


@triton.jit
def _nvfp_fq(x_ptr, aux_ptr, out_ptr, n_blocks, nblk, L, BPP: tl.constexpr, IN_KIND: tl.constexpr,
             MODE: tl.constexpr, EVEN: tl.constexpr, DIVISOR: tl.constexpr, MIN_PTS: tl.constexpr,
             SB_MIN: tl.constexpr):  # fmt: skip
    K: tl.constexpr = (BPP, IN_KIND, MODE, EVEN, DIVISOR, MIN_PTS, SB_MIN)
    fq_program(_nvfp_tile, (x_ptr, aux_ptr, n_blocks, nblk, L), K, out_ptr, IN_KIND)


@triton.jit
def _nvfp_sums(x_ptr, aux_ptr, cnt_ptr, sum_ptr, n_blocks, nblk, L, n_tiles, BPP: tl.constexpr,
               IN_KIND: tl.constexpr, MODE: tl.constexpr, EVEN: tl.constexpr, DIVISOR: tl.constexpr,
               MIN_PTS: tl.constexpr, SB_MIN: tl.constexpr, EXACT_OUT: tl.constexpr,
               INPUT_STATS: tl.constexpr, UNROLL: tl.constexpr, V: tl.constexpr):  # fmt: skip
    K: tl.constexpr = (BPP, IN_KIND, MODE, EVEN, DIVISOR, MIN_PTS, SB_MIN)
    args = (x_ptr, aux_ptr, n_blocks, nblk, L)
    stats_program(_nvfp_tile, args, K, n_tiles, cnt_ptr, sum_ptr, (BPP, 16), IN_KIND, EXACT_OUT, INPUT_STATS, UNROLL, V)


# --------------------------------------------------------------------------- launchers


def _aux(xm: torch.Tensor, spec: FormatSpec, cache: dict | None) -> torch.Tensor:
    """What the kernel's ``aux_ptr`` points to: the tensor amax for nvfp4; nvf4 never reads it
    and gets the input itself (no allocation, no fill kernel)."""
    return tensor_absmax(xm, cache) if spec.family == "nvfp4" else in_arg(xm)


def _prepare(x: torch.Tensor, spec: FormatSpec, cache: dict | None, bpp: int = BPP):
    """(x with the blocked axis last, contiguous; the axis; the aux tensor; launch arguments;
    constexprs; tiles of ``bpp`` blocks)."""
    axis = spec["axis"] % x.dim()
    xm = along_last(x.detach(), axis, cache)
    L = xm.shape[-1]
    nblk = triton.cdiv(L, NVFP4_BLOCK)
    n_blocks = (xm.numel() // L) * nblk
    mode = 2 if spec.family == "nvfp4" else int(spec["emulate"] == "seed")
    c = dict(
        BPP=bpp,
        IN_KIND=IN_KIND[x.dtype],
        MODE=mode,
        EVEN=L % NVFP4_BLOCK == 0,
        DIVISOR=NVFP4_TENSOR_DIVISOR,
        MIN_PTS=NVFP4_MIN_PTS,
        SB_MIN=E4M3_MIN_NORMAL,
    )
    return xm, axis, _aux(xm, spec, cache), (n_blocks, nblk, L), c, triton.cdiv(n_blocks, bpp)


def nvfp_fake_quantize(x: torch.Tensor, spec: FormatSpec, cache: dict | None = None) -> torch.Tensor:
    """``fake_quantize(x, spec, backend="reference")`` for a supported nvf4/nvfp4 spec, bit for bit."""
    check_input(x, unsupported_reason(spec), "nvfp")
    if x.dim() == 0 or x.numel() == 0:
        from ..reference import fake_quantize_ref

        return fake_quantize_ref(x, spec, None)
    xm, axis, amax, args, c, programs = _prepare(x, spec, cache)
    out = torch.empty_like(xm)
    warps = fq_warps(spec.family, x.dtype, programs, x.device, c["BPP"] * NVFP4_BLOCK)
    _nvfp_fq[(programs,)](in_arg(xm), amax, in_arg(out), *args, **c, num_warps=warps)
    return out.movedim(-1, axis).contiguous()


def nvfp_sums(x: torch.Tensor, spec: FormatSpec, input_stats: bool = True, cache: dict | None = None) -> ErrorSums:
    """The :class:`ErrorSums` of ``fake_quantize(x, spec)`` with the clip bound of
    ``kernels.ranges.unit_bound``, in one pass over x that writes no tensor of x's size (plus
    the amax pass for nvfp4, skipped when ``cache`` holds it)."""
    check_input(x, unsupported_reason(spec), "nvfp")
    if x.dim() == 0 or x.numel() == 0:
        from ..ranges import unit_bound
        from ..reference import fake_quantize_ref
        from ..stats import error_sums_ref

        return error_sums_ref(x, fake_quantize_ref(x, spec, None), unit_bound(x, spec), input_stats=input_stats)
    xm, _, amax, args, c, tiles = _prepare(x, spec, cache, STATS_BPP)
    programs, unroll, warps = stats_grid("nvfp", x.dtype, tiles, x.device)
    cnt, sums_ = partials(programs, x.device)
    exact = spec.family == "nvf4"  # see the module docstring
    v = lanes_v((c["BPP"], 16), x.dtype, warps, unroll, input_stats)
    _nvfp_sums[(programs,)](in_arg(xm), amax, cnt, sums_, *args, n_tiles=tiles, EXACT_OUT=exact,
                            INPUT_STATS=input_stats, UNROLL=unroll, V=v, num_warps=warps, **c)  # fmt: skip
    return reduce(cnt, sums_, x.numel(), input_stats)


def fake_quantize(x: torch.Tensor, spec: FormatSpec, generator: torch.Generator | None = None) -> torch.Tensor:
    """The module interface's ``fake_quantize`` (the family rounds deterministically: no generator)."""
    return nvfp_fake_quantize(x, spec)


sums = nvfp_sums
