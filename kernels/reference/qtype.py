"""Reference kernel for the seed's QType grammar: ``QFuncs/quant_basic.py::quant_py`` (spec formats-mx.md §3).

A QType string ``e<E>m<M>[K<K>]k<k>[B<B>]b<b>[c][off<N>]`` names a block float
format: elements with E exponent and M mantissa bits (E = 0: a sign-magnitude
integer mantissa), a shared power-of-two exponent per inner block of ``b``
elements, and optionally a second level: ``B`` inner blocks form an outer block
whose inner exponents may sit at most ``2^k - 1`` below the outer maximum.

- :func:`qtype_fields` resolves the derived constants of §3.2 (exp_max, exp_min,
  k_max, exp_offset, fp_val_max) exactly as the seed's parser does.
- :func:`quantize_qtype_ref` quantizes and dequantizes along one axis, zero-padding
  it to a multiple of ``b·B``. ``emulate="exact"`` (default) evaluates ``quant_py``
  in float32 with exponents read from the float bits and exact ties-away rounding;
  the ``+ 9.6e-7`` the seed adds before every log is part of the format and is kept
  (a float32 addition). ``emulate="seed"`` repeats the seed's arithmetic in the
  input dtype, float ``log2`` and ``floor(t + 0.5)`` artifacts included (§2.8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ._bits import I32, exp2i, round_half_away
from .mx import SQRT2_UP, biased_exponent, check_emulate, compute_dtype, f32_ceil, pad_axis_to_multiple, pow2, seed_log2

__all__ = ["QTypeFields", "qtype_fields", "quantize_qtype_ref"]

#: The seed adds this to every max and element before taking log2 (quant_basic.py);
#: it pins the exponent of blocks with amax below about 1e-6 (§3.4 consequences).
QTYPE_EPS = 9.6e-7

#: Below this shared exponent the seed flushes E > 0 elements to zero (§3.4 step 7).
FLUSH_BELOW_EXP = -127


@dataclass(frozen=True)
class QTypeFields:
    """The parsed and derived fields of one QType (spec §3.2)."""

    exp_bits: int
    man_bits: int
    k_bits: int
    blk_size: int
    k_outer_bits: int
    blk_outer_size: int
    carry: bool
    off: int | None
    exp_max: int
    exp_min: int
    k_max: int
    exp_offset: int
    fp_val_max: float

    @property
    def man_shift_bit(self) -> int:
        return self.man_bits

    @property
    def exp_lo(self) -> int:
        """Lower end of the shared-exponent window, ``-k_max - exp_offset``."""
        return -self.k_max - self.exp_offset

    @property
    def exp_hi(self) -> int:
        """Upper end of the shared-exponent window, ``k_max - exp_offset``."""
        return self.k_max - self.exp_offset

    @property
    def max_inner_drop(self) -> int:
        """How far an inner exponent may sit below its outer block's max: ``2^k - 1``."""
        return 2**self.k_bits - 1


def qtype_fields(
    exp_bits: int,
    man_bits: int,
    k_bits: int,
    blk_size: int,
    k_outer_bits: int = 0,
    blk_outer_size: int = 1,
    carry: bool = False,
    off: int | None = None,
) -> QTypeFields:
    """Resolve the derived QType constants exactly as the seed parser does (§3.2).

    ``off`` is the N of the optional ``off<N>`` suffix, or None when absent.
    """
    if exp_bits == 1:
        raise ValueError("exp_bits == 1 is not a QType (E0M(x) is E1M(x-1))")
    if exp_bits < 0 or man_bits < 1 or k_bits < 0 or k_outer_bits < 0:
        raise ValueError("QType needs exp_bits >= 0, man_bits >= 1, k_bits >= 0, k_outer_bits >= 0")
    if blk_size < 1 or blk_outer_size < 1:
        raise ValueError("QType block sizes must be >= 1")
    if exp_bits == 0:
        exp_max, exp_min = man_bits - 1, 0
    else:
        # 2^(E-1), one less for e5m2 only (its top binade is Inf/NaN); exp_min is the min normal exponent.
        exp_max = 2 ** (exp_bits - 1) - (1 if (exp_bits, man_bits) == (5, 2) else 0)
        exp_min = 2 - 2 ** (exp_bits - 1)
    k_max = 2 ** (k_bits + k_outer_bits - 1) - 1
    exp_offset = exp_max if off is None else off - k_max - 1 + exp_max
    if (exp_bits, man_bits) == (4, 3):
        fp_val_max = 448.0  # E4M3FN: S.1111.111 is NaN
    else:
        fp_val_max = min(2.0**exp_max * float(2 ** (man_bits + 1) - 1) / 2.0**man_bits, 1e38)
    return QTypeFields(
        exp_bits,
        man_bits,
        k_bits,
        blk_size,
        k_outer_bits,
        blk_outer_size,
        bool(carry),
        off,
        exp_max,
        exp_min,
        k_max,
        exp_offset,
        fp_val_max,
    )


# --------------------------------------------------------------------------- exact mode


def _exact_group_exp(m: torch.Tensor, q: QTypeFields, carry: bool) -> torch.Tensor:
    """Inner-block exponent g (int32) before the window clip: floor, or with the
    carry rule round(log2), of fl32(m + 9.6e-7), minus exp_max."""
    a = m + QTYPE_EPS  # >= 9.6e-7: normal, so the exponent field is floor(log2 a); Inf/NaN give 128
    e = biased_exponent(a)
    if carry:
        # floor(log2 a + 0.5) = floor(log2 a) + (significand of a >= sqrt 2).
        e = e + (a / exp2i(e) >= SQRT2_UP).to(I32)
    return e - q.exp_max


def _exact_two_level(g: torch.Tensor, q: QTypeFields, outer_dim: int) -> torch.Tensor:
    """§3.4 step 3: keep each inner exponent within 2^k - 1 of its outer block's max, then the window."""
    G = g.amax(dim=outer_dim, keepdim=True)
    return torch.maximum(g, G - q.max_inner_drop).clamp(q.exp_lo, q.exp_hi)


def _exact_float(xg: torch.Tensor, q: QTypeFields, a: int) -> torch.Tensor:
    """quant_py for E > 0 on xg of shape (..., groups, B, b, ...) with the groups dim at ``a``."""
    ax = xg.abs()
    m = ax.amax(dim=a + 2, keepdim=True)  # inner block max, shape (..., G, B, 1, ...)
    g = _exact_group_exp(m, q, q.carry).clamp(q.exp_lo, q.exp_hi)
    s = _exact_two_level(g, q, a + 1)
    # NaN anywhere in the outer block makes it NaN (the seed's NaN g spreads through the outer max).
    nan_outer = torch.isnan(m).any(dim=a + 1, keepdim=True)
    X = exp2i(s)
    z = ax / X  # division: 2^-s may overflow where 2^s is a float32 subnormal
    # z + 9.6e-7 is normal (or Inf/NaN), so its exponent field is floor(log2).
    p = biased_exponent(z + QTYPE_EPS).clamp(q.exp_min, q.exp_max)
    M = q.man_bits
    t = z * pow2(M - p, M - q.exp_max, M - q.exp_min)  # a power-of-two scaling: exact
    v = (round_half_away(t) * pow2(p - M, q.exp_min - M, q.exp_max - M)).clamp(max=q.fp_val_max)
    v = torch.where(s < FLUSH_BELOW_EXP, 0.0, v)
    out = torch.copysign(v * X, xg)
    return torch.where(nan_outer, math.nan, out)


def _exact_int(xg: torch.Tensor, q: QTypeFields, a: int) -> torch.Tensor:
    """quant_py for E = 0 (integer mantissa of M bits, as in HiFX), §3.4 last part."""
    ax = xg.abs()
    m = ax.amax(dim=a + 2, keepdim=True)
    g = _exact_group_exp(m, q, False).clamp(q.exp_lo, q.exp_hi)
    top = 2**q.man_bits - 1
    if q.carry:
        # Bump g where an element's ties-away mantissa would reach 2^M (seed: clip(round - top, 0, 1)).
        bump = (round_half_away(ax / exp2i(g)) > top).any(dim=a + 2, keepdim=True)
        g = g + bump.to(I32)
    s = _exact_two_level(g, q, a + 1)
    X = exp2i(s)
    mant = round_half_away(ax / X).clamp(0, top)
    out = torch.copysign(mant * X, xg)
    # Tiny elements flush to 0; NaN/Inf or an element at the overflow threshold make
    # the outer block NaN. Thresholds are rounded up to float32 so that the float32
    # comparisons below equal the exact ones.
    under = f32_ceil((2 - 2.0**-q.man_bits) * 2.0 ** (q.exp_lo + 1))
    over = f32_ceil(2.0 ** (q.exp_hi + q.exp_max) * (2 - 2.0**-q.man_bits))
    out = torch.where(ax < under, 0.0, out)
    bad = (torch.isnan(ax) | (ax >= over)).any(dim=a + 2, keepdim=True).any(dim=a + 1, keepdim=True)
    return torch.where(bad, math.nan, out)


# --------------------------------------------------------------------------- seed mode


def _seed_two_level(g: torch.Tensor, q: QTypeFields, outer_dim: int) -> torch.Tensor:
    G = g.amax(dim=outer_dim, keepdim=True)
    return torch.clamp(g, min=G - q.max_inner_drop).clamp(q.exp_lo, q.exp_hi)


def _seed_float(xg: torch.Tensor, q: QTypeFields, a: int) -> torch.Tensor:
    ax, sign = xg.abs(), torch.sign(xg)
    m = ax.amax(dim=a + 2, keepdim=True)
    lg = seed_log2(m + QTYPE_EPS)
    g = (torch.floor(lg + 0.5) if q.carry else torch.floor(lg)) - q.exp_max
    s = _seed_two_level(g.clamp(q.exp_lo, q.exp_hi), q, a + 1)
    z = ax / torch.exp2(s)
    p = torch.floor(seed_log2(z + QTYPE_EPS)).clamp(q.exp_min, q.exp_max)
    pw = torch.pow(2.0, p)
    t = torch.floor(z / pw * 2**q.man_bits + 0.5)
    v = (t / 2**q.man_bits * pw).clamp(-q.fp_val_max, q.fp_val_max)
    v = torch.where(s < FLUSH_BELOW_EXP, 0.0, v)
    return sign * torch.pow(2.0, s) * v


def _seed_int(xg: torch.Tensor, q: QTypeFields, a: int) -> torch.Tensor:
    ax, sign = xg.abs(), torch.sign(xg)
    m = ax.amax(dim=a + 2, keepdim=True)
    g = (torch.floor(seed_log2(m + QTYPE_EPS)) - q.exp_max).clamp(q.exp_lo, q.exp_hi)
    top = 2**q.man_bits - 1
    if q.carry:
        bias = (torch.floor(ax / torch.exp2(g) + 0.5) - top).clamp(0, 1)
        g = g + bias.amax(dim=a + 2, keepdim=True)
    s = _seed_two_level(g, q, a + 1)
    mant = torch.floor(ax / torch.exp2(s) + 0.5).clamp(0, top)
    out = sign * mant * torch.pow(2.0, s)
    out = torch.where(ax < (2 - 2.0**-q.man_bits) * 2.0 ** (q.exp_lo + 1), 0.0, out)
    over = 2.0 ** (q.exp_hi + q.exp_max) * (2 - 2.0**-q.man_bits)
    bad = (torch.isnan(ax) | torch.isinf(ax)).any(dim=a + 2, keepdim=True)
    bad = bad | (ax >= over).any(dim=a + 2, keepdim=True).any(dim=a + 1, keepdim=True)
    return torch.where(bad, math.nan, out)


# --------------------------------------------------------------------------- entry point


def quantize_qtype_ref(
    x: torch.Tensor,
    *,
    exp_bits: int,
    man_bits: int,
    k_bits: int,
    blk_size: int,
    k_outer_bits: int = 0,
    blk_outer_size: int = 1,
    carry: bool = False,
    off: int | None = None,
    axis: int = -1,
    emulate: str = "exact",
) -> torch.Tensor:
    """QType fake quantization of ``x`` along ``axis`` (seed ``quant_py``); ``x`` is never modified.

    The axis is zero-padded at its end to a multiple of ``blk_size·blk_outer_size``
    and split into (groups, blk_outer_size, blk_size). Returns ``x``'s shape and dtype.
    """
    check_emulate(emulate)
    q = qtype_fields(exp_bits, man_bits, k_bits, blk_size, k_outer_bits, blk_outer_size, carry, off)
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis {axis} out of range for a {x.ndim}-D tensor")
    a = axis % x.ndim
    n = x.shape[a]
    xp = pad_axis_to_multiple(x.to(compute_dtype(x, emulate)), a, blk_size * blk_outer_size)
    xg = xp.unflatten(a, (-1, blk_outer_size, blk_size))  # dims a, a+1, a+2 = (groups, B, b)
    if emulate == "seed":
        out = (_seed_int if exp_bits == 0 else _seed_float)(xg, q, a)
    else:
        out = (_exact_int if exp_bits == 0 else _exact_float)(xg, q, a)
    return out.flatten(a, a + 2).narrow(a, 0, n).to(x.dtype)
