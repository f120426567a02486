"""Fast QType kernel (family ``qtype``, E > 0, ``emulate=exact``): the seed's ``quant_py``
as the reference evaluates it (formats-mx.md §3.4), bit for bit, without bool tensors
on the elements.

Per piece, on a float32 buffer of magnitudes viewed as (rows, groups, B, b[, inner]):

1. **Inner-block exponents on the small tensor** (§3.4 steps 1-3). ``m`` is an int32
   ``amax`` of the bits (int order is float order for non-negative floats; NaN sorts
   above Inf). ``g`` is the exponent field of fl32(m + 9.6e-7) (the same float32 addition
   as the reference; the sum is normal, so the field is floor(log2)), and the carry rule
   ``floor(log2 a + 0.5)`` is a carry into the field: adding ``2^23 - mant(SQRT2_UP)`` to
   the bits bumps the exponent exactly when the significand is >= sqrt(2) rounded up to
   float32, the reference's ``a / 2^e >= SQRT2_UP`` test. A NaN ``m`` is read as +Inf
   there: both give field 255 (e = 128) before the window clip, and the NaN outer block
   comes out NaN anyway. Then the window clip and the two-level constraint, as int ops.
2. **Elements with the reference's operations** (steps 4-8): ``z = |x|·2^-s`` equals the
   reference's ``|x| / 2^s`` because 2^-s is a normal float32 for every reachable s
   (:func:`supports`), so both are the correctly rounded value of the same quotient. The
   private exponent comes from fl32(z + 9.6e-7), the same addition as the reference, and
   the grid rounding is the MX kernel's (``mx.float_elements_``: ties away exactly as
   ``floor(t + 0.49999997)``). Then ``min(v, fp_val_max)·2^s``, the reference's
   ``clamp`` and multiplication. The tiny-scale flush (s < -127) cannot happen: s >=
   -20 - exp_max because fl32(m + 9.6e-7) >= 2^-20.
3. **NaN**: a NaN in an outer block gives its elements a NaN ``2^-s``, so arithmetic
   carries it (§3.4 "Special values"); ±Inf saturates to ``fp_val_max·2^s`` like in the
   reference. Signs are ORed back from the input bits (``_ops.with_signs``).

Not covered (the reference runs): ``emulate=seed``, E = 0 (integer mantissas), and
fields whose scales or element powers of two leave the normal float32 range.
"""

from __future__ import annotations

import functools
import math

import torch

from ..formats import FormatSpec
from ..reference.mx import SQRT2_UP
from ..reference.qtype import QTYPE_EPS, QTypeFields, qtype_fields
from . import register
from ._ops import F32, I32, magnitudes, scratch, with_signs
from .mx import float_elements_

__all__ = ["supports", "fake_quantize_qtype"]

#: Bits of +Inf; any larger pattern of a non-negative float is a NaN.
INF_BITS = 0x7F800000
#: Added to the bits of a normal float32, carries into the exponent field exactly when
#: the significand is >= SQRT2_UP (mantissa field >= that of SQRT2_UP).
CARRY_ADD = (1 << 23) - (int(SQRT2_UP * 2**23) - (1 << 23))
#: floor(log2(fl32(9.6e-7))) = -20: the least exponent of fl32(m + 9.6e-7).
EPS_EXP = math.frexp(float(torch.tensor(QTYPE_EPS, dtype=F32)))[1] - 1


def _fields(spec: FormatSpec) -> QTypeFields:
    return qtype_fields(spec["E"], spec["M"], spec["k"], spec["b"], spec["K"], spec["B"], spec["carry"], spec["off"])


def _scale_range(q: QTypeFields) -> tuple[int, int]:
    """The shared exponents s that can occur: g >= EPS_EXP - exp_max before the window
    clip, the two-level step only raises s, and the window bounds both ends."""
    lo = min(max(q.exp_lo, EPS_EXP - q.exp_max), q.exp_hi)
    return lo, max(q.exp_hi, lo)


def supports(spec: FormatSpec) -> bool:
    if spec["emulate"] != "exact" or spec["E"] == 0:
        return False
    q = _fields(spec)
    s_lo, s_hi = _scale_range(q)
    M = q.man_bits
    # 2^s and 2^-s normal: then z = |x|·2^-s is the reference's |x|/2^s.
    scales_ok = -126 <= s_lo and s_hi <= 126
    # 2^(M-p) and 2^(p-M) normal for p in [exp_min, exp_max]: float_elements_ builds them from bits.
    elements_ok = -126 <= min(M - q.exp_max, q.exp_min - M) and max(M - q.exp_min, q.exp_max - M) <= 127
    return scales_ok and elements_ok


def _group_exp(bits: torch.Tensor, q: QTypeFields, name: str) -> torch.Tensor:
    """§3.4 step 2 on the int32 bits of block maxima: g = floor (or, with carry, round) of
    log2 fl32(m + 9.6e-7), minus exp_max, clipped to the window. Monotone in m."""
    a = torch.clamp(bits, max=INF_BITS, out=scratch(name, bits.shape, I32))  # NaN read as Inf
    a.view(F32).add_(QTYPE_EPS)
    if q.carry:
        a.add_(CARRY_ADD)
    return a.bitwise_right_shift_(23).sub_(127 + q.exp_max).clamp_(q.exp_lo, q.exp_hi)


def _inverse_scales(bits: torch.Tensor, q: QTypeFields, outer_dim: int, spread: bool) -> torch.Tensor:
    """``2^-s`` per inner block (§3.4 steps 1-3) from the int32 bits of the inner maxima;
    NaN throughout an outer block that holds a NaN. ``spread``: the result goes through
    :func:`_spread`, whose matmul rows are outer blocks, so a NaN in any one inner block
    of a row is enough. With short inner blocks these tensors are a quarter of the piece,
    so they live in scratch buffers too."""
    g = _group_exp(bits, q, "qtype.g")
    outer = bits
    if q.blk_outer_size > 1:
        outer = bits.amax(dim=outer_dim, keepdim=True)
        # The outer block's largest g is the g of its largest m (g is monotone).
        G = _group_exp(outer, q, "qtype.G").sub_(q.max_inner_drop)
        torch.maximum(g, G, out=g).clamp_(q.exp_lo, q.exp_hi)
    # + 0, or + NaN where the max is NaN (±Inf clamps to 0): no bool mask.
    nan = (bits if spread else outer).view(F32).clamp(max=0.0)
    return g.neg_().add_(127).bitwise_left_shift_(23).view(F32).add_(nan)


#: Inner blocks shorter than this get their scales spread by a matmul (:func:`_spread`).
SHORT_BLOCK = 16


@functools.cache
def _spread_matrix(B: int, b: int) -> torch.Tensor:
    return torch.kron(torch.eye(B), torch.ones(1, b))


def _spread(v: torch.Tensor, b: int, name: str) -> torch.Tensor:
    """``v`` (rows, groups, B, 1), one value per inner block, repeated over the ``b``
    elements of each block: a contiguous (rows, groups, B, b) tensor.

    Broadcasting over a last dim shorter than 16 runs ~8x slower than a plain pass here,
    and so does ``expand().contiguous()``; a matmul by the 0/1 matrix kron(I_B, 1_b), one
    row per outer block, costs about three passes. It is exact: each output is one input
    times 1 plus products with 0. The inputs are normal powers of two, or NaN throughout
    an outer block, so a NaN·0 lands only on elements that are NaN anyway.
    """
    rows, groups, B, _ = v.shape
    out = scratch(name, (rows, groups, B, b), F32)
    torch.matmul(v.view(-1, B), _spread_matrix(B, b), out=out.view(-1, B * b))
    return out


def fake_quantize_qtype(
    x: torch.Tensor, spec: FormatSpec, amax=None, *, out: torch.Tensor | None = None
) -> torch.Tensor:
    """The reference ``quantize_qtype_ref(x, ...)`` for a supported ``spec``, bit for bit;
    written into ``out`` (x's shape and dtype, any strides) when given."""
    q = _fields(spec)
    b, B = q.blk_size, q.blk_outer_size
    A, x3 = magnitudes(x, spec["axis"], b * B)
    rows, n_pad, inner = A.shape
    # (rows, groups, B, b) or, along a non-last axis, (rows, groups, B, b, inner).
    Ab = A.view(rows, n_pad // (b * B), B, b, *((inner,) if inner > 1 else ()))
    m = torch.amax(Ab.view(I32), dim=3, keepdim=True, out=scratch("qtype.m", (*Ab.shape[:3], 1, *Ab.shape[4:]), I32))
    spread = inner == 1 and b < SHORT_BLOCK
    inv = _inverse_scales(m, q, outer_dim=2, spread=spread)
    if spread:
        inv = _spread(inv, b, "qtype.inv")
    X = torch.reciprocal(inv, out=scratch("qtype.X", inv.shape, F32))  # 2^s: exact for powers of two

    Ab.mul_(inv)  # z = |x| / 2^s
    z_eps = torch.add(A, QTYPE_EPS, out=scratch("qtype.z_eps", A.shape, F32))
    float_elements_(A, q.man_bits, q.exp_min, q.exp_max, "nearest", p_from=z_eps)
    A.clamp_(max=q.fp_val_max)
    Ab.mul_(X)
    return with_signs(A, x3, x.shape, out)


register("qtype", supports, fake_quantize_qtype)
