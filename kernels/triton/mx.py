"""Triton MX kernels (family ``mx``, ``emulate=exact``): the reference's float32 algorithm
(formats-mx.md §2.3-§2.5) bit for bit, one program per tile of ``BPP`` blocks.

The input is viewed as (rows, L) with the blocked axis last (the launcher moves it there),
each row cut into ``ceil(L / block)`` blocks; the last one may be partial (the reference
zero-pads it, and zeros change neither the amax nor any other element).

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

``_mx_sums_kernel`` runs the same tile and writes, per program, float64 partial error sums
and int32 counts (see ``kernels.stats``); ``mx_sums`` reduces them on the host.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..formats import FormatSpec
from ..reference.mx import SQRT2_UP, MXElement, resolve_mx_element
from ..stats import ErrorSums
from ._common import IN_KIND, in_arg, load_f32, partials, pow2, reduce, round_out, stats_store, store_out

__all__ = ["FAMILIES", "unsupported_reason", "fake_quantize", "sums", "mx_fake_quantize", "mx_sums"]

FAMILIES = ("mx",)

_RULES = ("floor", "ceil", "rceil", "even", "carry")
_ROUNDS = ("nearest", "even", "floor")
#: Elements per program (blocks per program = this / padded block length, at least 1).
TILE_ELEMS = 4096
MAX_BLOCK = 8192


def _element_ok(el: MXElement) -> bool:
    # 2^(M-p) and 2^(p-M) must be normal float32 for p in [emin, 127] (bits build them);
    # the bf16 element (emin -126, M 7) is the one MX element that fails.
    return el.is_int or (el.man_bits >= 1 and el.man_bits - el.emin <= 127 and el.emin - el.man_bits >= -126)


def unsupported_reason(spec: FormatSpec) -> str | None:
    """None when the Triton kernels cover ``spec``, else why not."""
    if spec.family != "mx":
        return f"the triton backend covers the mx family only, not {spec.family}"
    if spec["emulate"] != "exact":
        return "emulate=seed is not implemented in triton"
    if spec["round"] not in _ROUNDS:
        return f"round={spec['round']} is not implemented in triton"
    if spec["shared_exp"] != "max":
        return "shared_exp=none is not implemented in triton"
    if isinstance(spec["minus_exp"], str):
        return f"minus_exp={spec['minus_exp']} is not implemented in triton"
    if not 1 <= spec["block"] <= MAX_BLOCK:
        return f"block={spec['block']} is not implemented in triton (1..{MAX_BLOCK})"
    if not _element_ok(resolve_mx_element(spec["element"])):
        return f"element {spec['element']} is not implemented in triton"
    return None


# --------------------------------------------------------------------------- device code


@triton.jit
def _mx_tile(
    x_ptr,
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
):
    """One tile: (x, q, valid, bound, offs), q and the bound in float32 before the output cast."""
    g = pid.to(tl.int64) * BPP + tl.arange(0, BPP).to(tl.int64)  # global block ids
    row = g // nblk
    col = (g % nblk) * BLOCK
    k = tl.arange(0, BP2)
    cols = col[:, None] + k[None, :]
    valid = (g < n_blocks)[:, None] & (k < BLOCK)[None, :] & (cols < L)
    offs = row[:, None] * L + cols
    x = load_f32(x_ptr, offs, valid, IN_KIND)
    xb = x.to(tl.int32, bitcast=True)
    ab = xb & 0x7FFFFFFF
    sign = xb ^ ab

    # §2.3: the block exponent from the int max of the magnitude bits (NaN sorts on top).
    amax = tl.max(ab, axis=1)
    field = amax >> 23
    scaled = (amax.to(tl.float32, bitcast=True) * 18446744073709551616.0).to(tl.int32, bitcast=True)  # ·2^64
    sub = field == 0
    nb = tl.where(sub, scaled, amax)
    fl = tl.where(sub, (nb >> 23) - (127 + 64), field - 127)
    mant = nb & 0x7FFFFF
    fl = tl.where(amax == 0, -126, fl)  # the seed's zero block: amax = 2^-126
    mant = tl.where(amax == 0, 0, mant)
    E = fl + (mant > BUMP_GT).to(tl.int32) - MINUS_EXP
    s = E - EMAX
    nanb = (s > SCALE_EMAX) | (amax >= 0x7F800000)
    if EVEN_RULE:
        nanb = nanb | (E > 127)
    s = tl.minimum(tl.maximum(s, -SCALE_EMAX), SCALE_EMAX)
    X = pow2(s)
    inv = pow2(-s)
    if FLUSH:
        flushb = E <= -127  # §2.3 step 3: the block becomes +0
    else:
        flushb = E < -1000000

    # §2.4 on magnitudes.
    a = tl.where(flushb[:, None], 0.0, ab.to(tl.float32, bitcast=True))
    sign = tl.where(flushb[:, None], 0, sign)
    y = a * inv[:, None]
    if IS_INT:
        t = y * (2.0**M)
    else:
        p = tl.minimum(tl.maximum((y.to(tl.int32, bitcast=True) >> 23) - 127, EMIN), 127)
        t = y * ((M - p + 127) << 23).to(tl.float32, bitcast=True)
    t = tl.minimum(t, 16777216.0)  # t >= 2^24 only when it saturates anyway; keeps trunc in int32
    ti = t.to(tl.int32)  # trunc = floor for t >= 0
    f = ti.to(tl.float32)
    rem = t - f  # exact
    if ROUND == 0:  # nearest, ties away
        r = f + (rem >= 0.5).to(tl.float32)
    elif ROUND == 1:  # nearest, ties to even
        r = f + ((rem > 0.5) | ((rem == 0.5) & ((ti & 1) == 1))).to(tl.float32)
    else:  # toward zero
        r = f
    if IS_INT:
        qm = r * (2.0**-M)
    else:
        qm = r * ((p - M + 127) << 23).to(tl.float32, bitcast=True)
    qm = tl.minimum(qm, MAX_NORM) * X[:, None]
    qbits = tl.where(nanb[:, None], 0x7FC00000, qm.to(tl.int32, bitcast=True) | sign)
    q = qbits.to(tl.float32, bitcast=True)

    # kernels.ranges.unit_bound: max_norm·X, NaN for a NaN block, 0 for a flushed one.
    bound = tl.where(nanb, float("nan"), tl.where(flushb, 0.0, MAX_NORM * X))
    return x, q, valid, bound, offs


@triton.jit
def _mx_fq_kernel(
    x_ptr,
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
):
    pid = tl.program_id(0)
    x, q, valid, bound, offs = _mx_tile(
        x_ptr, pid, n_blocks, nblk, L, BLOCK, BP2, BPP, IN_KIND, IS_INT, M, EMIN, EMAX, MAX_NORM,
        SCALE_EMAX, BUMP_GT, MINUS_EXP, EVEN_RULE, ROUND, FLUSH,
    )  # fmt: skip
    store_out(out_ptr, offs, q, valid, IN_KIND)


@triton.jit
def _mx_sums_kernel(
    x_ptr,
    cnt_ptr,
    sum_ptr,
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
):
    pid = tl.program_id(0)
    x, q, valid, bound, offs = _mx_tile(
        x_ptr, pid, n_blocks, nblk, L, BLOCK, BP2, BPP, IN_KIND, IS_INT, M, EMIN, EMAX, MAX_NORM,
        SCALE_EMAX, BUMP_GT, MINUS_EXP, EVEN_RULE, ROUND, FLUSH,
    )  # fmt: skip
    stats_store(x, round_out(q, IN_KIND), valid, round_out(bound, IN_KIND)[:, None], cnt_ptr, sum_ptr, pid)


# --------------------------------------------------------------------------- launchers


def _constants(spec: FormatSpec, dtype: torch.dtype) -> dict:
    el = resolve_mx_element(spec["element"])
    rule, me = spec["scale"], spec["minus_exp"]
    # E = fl + (significand field > BUMP_GT) - MINUS_EXP: the rules of §11.2 on exact fields.
    if me is not None:
        bump, minus = 0, int(me)  # ceil(log2 amax) - minus_exp
    else:
        minus = 0
        bump = {
            "floor": 1 << 23,  # never
            "ceil": 0,
            "rceil": round((el.max_mant - 1) * 2**23),
            "even": round((el.even_threshold - 1) * 2**23) - 1,
            "carry": round((SQRT2_UP - 1) * 2**23) - 1,
        }[rule]
    block = spec["block"]
    bp2 = triton.next_power_of_2(block)
    return dict(
        BLOCK=block,
        BP2=bp2,
        BPP=max(1, TILE_ELEMS // bp2),
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
    )


def _check(x: torch.Tensor, spec: FormatSpec) -> None:
    why = unsupported_reason(spec)
    if why:
        raise ValueError(why)
    if x.dtype not in IN_KIND:
        raise TypeError(f"the triton MX kernels take float32, bfloat16 or float16, not {x.dtype}")


def _rows_view(x: torch.Tensor, spec: FormatSpec) -> tuple[torch.Tensor, int]:
    """x with the blocked axis moved last, contiguous; the axis index."""
    axis = spec["axis"] % x.dim()
    return x.movedim(axis, -1).contiguous(), axis


def _grid(xm: torch.Tensor, c: dict) -> tuple[int, int, int, int]:
    L = xm.shape[-1]
    nblk = triton.cdiv(L, c["BLOCK"])
    n_blocks = (xm.numel() // L) * nblk
    return n_blocks, nblk, L, triton.cdiv(n_blocks, c["BPP"])


def mx_fake_quantize(x: torch.Tensor, spec: FormatSpec) -> torch.Tensor:
    """``fake_quantize(x, spec, backend="reference")`` for a supported MX spec, bit for bit."""
    _check(x, spec)
    if x.dim() == 0 or x.numel() == 0:
        from ..reference import fake_quantize_ref

        return fake_quantize_ref(x, spec, None)
    xm, axis = _rows_view(x.detach(), spec)
    c = _constants(spec, x.dtype)
    out = torch.empty_like(xm)
    n_blocks, nblk, L, programs = _grid(xm, c)
    _mx_fq_kernel[(programs,)](in_arg(xm), in_arg(out), n_blocks, nblk, L, **c)
    return out.movedim(-1, axis).contiguous()


def mx_sums(x: torch.Tensor, spec: FormatSpec, input_stats: bool = True, cache: dict | None = None) -> ErrorSums:
    """The :class:`ErrorSums` of ``fake_quantize(x, spec)`` with the clip bound of
    ``kernels.ranges.unit_bound``, in one pass over x that writes no tensor of x's size."""
    _check(x, spec)
    if x.dim() == 0 or x.numel() == 0:
        from ..ranges import unit_bound
        from ..reference import fake_quantize_ref
        from ..stats import error_sums_ref

        return error_sums_ref(x, fake_quantize_ref(x, spec, None), unit_bound(x, spec), input_stats=input_stats)
    xm, _ = _rows_view(x.detach(), spec)
    c = _constants(spec, x.dtype)
    n_blocks, nblk, L, programs = _grid(xm, c)
    cnt, sums = partials(programs, x.device)
    _mx_sums_kernel[(programs,)](in_arg(xm), cnt, sums, n_blocks, nblk, L, **c)
    return reduce(cnt, sums, input_stats)


fake_quantize = mx_fake_quantize
sums = mx_sums
