"""Fast MX kernel (family ``mx``, ``emulate=exact``): the reference's float32 algorithm
(formats-mx.md §2.3-§2.5) on cache-sized pieces, with bit tricks instead of bool tensors.

Per piece, on a float32 buffer ``A`` of magnitudes viewed as (rows, blocks, block[, inner]):

1. **Block scales on the small tensor.** ``amax`` is an int32 ``amax`` of the bits of ``A``:
   for non-negative floats the int order is the float order, and every NaN pattern sorts
   above +Inf, so NaN propagates as §2.3 step 1 asks. For the default rule (scale=floor)
   ``s`` is the exponent field minus 127 + emax, clamped (:func:`_block_scales` says why
   zero and subnormal maxima agree with the reference); the other rules call
   :func:`kernels.reference.mx.exact_block_scale`, the very code the reference runs, on
   one value per block. A NaN block gets a NaN inverse scale, a flushed block
   (``flush_fp32_subnorms``) a zero one, so arithmetic carries both to every element with
   no mask pass (§2.5).
2. **Elements with the reference's operations** (§2.4), each the same float32 operation on
   the same operands as in ``_exact_elements``, on magnitudes: ``y = |x|·2^-s``; the
   private exponent ``p`` is the exponent field of ``y`` clamped to [emin, 127], kept in
   place in the bits; ``2^(M-p)`` and ``2^(p-M)`` are bit patterns built from it (both
   normal for the supported elements, see :func:`supports`); ``t = y·2^(M-p)`` is exact, so the
   rounding rule alone decides: ties away is ``floor(t + 0.49999997)``
   (``_ops.round_half_away_``, exact for every float32), ties to even is
   ``round`` (IEEE RNE, what the reference calls too), and toward zero is ``floor`` on a
   magnitude. Then ``q = r·2^(p-M)`` saturated at max_norm and multiplied by ``X = 2^s``.
3. **Signs** are ORed back from the input's bits and bf16/fp16 results rounded once, as
   the reference's ``.to(x.dtype)`` does (``_ops.with_signs``); the sign of a zero is not
   significant (§2.5).

Everything per element is an in-place float or int32 pass (no comparisons, ``where``,
``copysign`` or ``log2``), so a 256K-element piece costs about a dozen memory passes.

Not covered (``supports`` says False and the reference runs): ``emulate=seed``,
``round=dither``, the auto ``minus_exp`` modes, ``shared_exp=none`` and the bf16 element
(whose ``2^(M-p)`` is not a normal float32).
"""

from __future__ import annotations

import math

import torch

from ..formats import FormatSpec
from ..reference._bits import exp2i
from ..reference.mx import MXElement, exact_block_scale, resolve_mx_element
from . import register
from ._ops import F32, I32, magnitudes, pow2_biased, pow2_wide, round_half_away_, scratch, with_signs

__all__ = ["supports", "fake_quantize_mx"]

#: Biased exponent field of the largest finite float32 power of two, 2^127.
MAX_FIELD = 254
#: The exponent field of a float32, in place.
EXP_MASK = 0x7F800000


def _elements_ok(el: MXElement) -> bool:
    """Integers always; floats when 2^(M-p) and 2^(p-M) are normal float32 for every
    p in [emin, 127] (the range the reference clamps p to), so bits can build them."""
    if el.is_int:
        return True
    return el.man_bits >= 1 and el.man_bits - el.emin <= 127 and el.emin - el.man_bits >= -126


def supports(spec: FormatSpec) -> bool:
    return (
        spec["emulate"] == "exact"
        and spec["round"] in ("nearest", "even", "floor")
        and spec["shared_exp"] == "max"
        and not isinstance(spec["minus_exp"], str)
        and _elements_ok(resolve_mx_element(spec["element"]))
    )


def round_(t: torch.Tensor, round: str) -> torch.Tensor:
    """Round the non-negative float32 ``t`` to integers in place, as the
    reference's ``round_half_away`` / ``round_half_even`` / ``round_toward_zero`` do."""
    if round == "nearest":
        return round_half_away_(t)
    if round == "even":
        return t.round_()  # IEEE RNE, the very op the reference calls
    return t.floor_()  # "floor": toward zero, on a magnitude


def float_elements_(
    y: torch.Tensor, man_bits: int, p_lo: int, p_hi: int, round: str, p_from: torch.Tensor | None = None
) -> torch.Tensor:
    """Round the magnitudes ``y`` in place to a float grid with ``man_bits`` mantissa bits:
    ``y -> R(y·2^(M-p))·2^(p-M)``, p = floor(log2 ``p_from``) (default ``y``) clamped to
    [p_lo, p_hi]; returns ``y``. The caller guarantees that 2^(M-p) and 2^(p-M) are normal
    float32 over that range.

    This is the reference's sequence (``_exact_elements``, QType's ``_exact_float``) op for
    op: p from the exponent field, kept in place in the bits (``& 0x7F800000`` of a
    non-negative float, clamped to the fields of p_lo and p_hi; a zero or subnormal has
    field 0 and clamps to p_lo, as the reference's clamp does), the two powers of two as
    bit patterns (2^(p-M) is p's pattern minus M << 23, 2^(M-p) is 2^127's pattern minus
    that one), then the same multiplications and rounding rule.
    """
    src = y if p_from is None else p_from
    down = torch.bitwise_and(src.view(I32), EXP_MASK, out=scratch("elements.down", y.shape, I32))
    down.clamp_((p_lo + 127) << 23, (p_hi + 127) << 23).sub_(man_bits << 23)  # 2^(p-M)
    up = torch.sub(MAX_FIELD << 23, down, out=scratch("elements.up", y.shape, I32))  # 2^(M-p)
    round_(y.mul_(up.view(F32)), round)
    return y.mul_(down.view(F32))


def _elements_(y: torch.Tensor, el: MXElement, round: str) -> None:
    """§2.4 on magnitudes, in place: ``y`` (float32, >= 0 or NaN) becomes ``min(Q(y), max_norm)``."""
    M = el.man_bits
    if el.is_int:
        y.mul_(2.0**M)  # fixed point with M fraction bits, exact
        round_(y, round).mul_(2.0**-M)
    else:
        # p clamped to [emin, 127]: only a NaN block's y reaches field 255.
        float_elements_(y, M, el.emin, 127, round)
    y.clamp_(max=el.max_norm)  # NaN stays NaN


def fake_quantize_mx(x: torch.Tensor, spec: FormatSpec, amax=None, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """The reference ``quantize_mx_ref(x, ...)`` for a supported ``spec``, bit for bit;
    written into ``out`` (x's shape and dtype, any strides) when given."""
    el = resolve_mx_element(spec["element"])
    axis = spec["axis"] % x.dim()
    block = spec["block"] or x.shape[axis]  # block 0: one scale over the whole axis (§2.2-3)
    A, x3 = magnitudes(x, axis, block)
    rows, n_pad, inner = A.shape
    # (rows, blocks, block) or, along a non-last axis, (rows, blocks, block, inner).
    Ab = A.view(rows, n_pad // block, block, *((inner,) if inner > 1 else ()))
    amax = Ab.view(I32).amax(dim=2, keepdim=True).view(F32)

    inv, X = _block_scales(amax, el, spec)
    Ab.mul_(inv)  # y = x / X, as the reference's xb * exp2i(-s)
    _elements_(A, el, spec["round"])
    Ab.mul_(X)
    return with_signs(A, x3, x.shape, out)


def _block_scales(amax: torch.Tensor, el: MXElement, spec: FormatSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """``(2^-s, 2^s)`` per block from its amax (§2.3); ``2^-s`` is NaN for a NaN block and 0
    for a block that ``flush_fp32_subnorms`` zeroes, so multiplying by it does the masking."""
    flush = spec["flush_fp32_subnorms"]
    if spec["scale"] != "floor" or spec["minus_exp"] is not None:
        E, s, nan_mask = exact_block_scale(amax, el, spec["scale_bits"], spec["scale"], spec["minus_exp"])
        inv = torch.where(nan_mask, math.nan, exp2i(-s))
        if flush:
            inv = torch.where(E <= -127, 0.0, inv)  # §2.3 step 3: the block becomes 0
        return inv, exp2i(s)
    # The default rule, E = floor(log2 amax), in a few int passes instead of the ~60
    # small-tensor ops of the general code (they cost as much as the elements). E is the
    # exponent field - 127, except that a zero or fp32-subnormal amax reads -127 where
    # exact_block_scale has -126 (zero) or its true exponent <= -127 (subnormal). Both
    # give the same clamped s, -scale_emax, except a zero block of an integer element
    # (emax 0, s -127 vs -126), whose output is 0 either way. Such a block is also the
    # only one flush zeroes (E <= -127); zeroing a zero block changes nothing.
    field = amax.view(I32) >> 23
    scale_emax = 2 ** (spec["scale_bits"] - 1) - 1
    s = field - (127 + el.emax)
    # NaN: s above the scale range, or an Inf/NaN amax (field 255, one more than any finite).
    nan_mask = s > min(scale_emax, 127 - el.emax)
    s.clamp_(-scale_emax, scale_emax)
    if el.emax >= 1 or scale_emax < 127:
        # s <= 126 in every finite block: 2^s = 2^(s+1)/2 from bits, exact down to 2^-127
        # (a NaN block may get +Inf here; its elements are NaN already).
        X = pow2_biased(s + 128).mul_(0.5)
    else:
        X = pow2_wide(s)  # integer elements: s reaches 127
    inv = torch.where(nan_mask, math.nan, X.reciprocal())  # exact: X is a power of two
    if flush:
        inv = torch.where(field == 0, 0.0, inv)
    return inv, X


register("mx", supports, fake_quantize_mx)
