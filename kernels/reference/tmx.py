"""Reference kernel for the seed's TMX format ``tmx<N>`` (``QFuncs/tmx.py::quant_tmx``, spec formats-mx.md §9).

:func:`quantize_tmx_ref` quantizes and dequantizes along one axis, zero-padded
at its end to a multiple of 16. A block of 16 elements is 8 pairs of 2; each
pair gets ``g = floor(log2(pair_max + ε))`` and the block keeps ``G = max g``
(an 8-bit shared exponent) plus one bit per pair: the pair's exponent is
``e = max(g, G - 1)``. Elements are fixed point ``mant ∈ [0, 2)`` with
``M = N - 2`` bits (step ``2^(1-M)``, ties away from zero, a mantissa that rounds
to 2 becomes ``2 - 2^(1-M)``), and the result is ``sign · mant · 2^e``.

``ε`` is the seed's: 2^-14 for float16 inputs and 2^-45 otherwise; it is part of
the format (it sets the smallest pair exponent), so both modes keep it.

- ``emulate="exact"`` (default): float32 (bf16/fp16 upcast, result rounded back),
  ``g`` read from the bits of fl32(pair_max + ε), ties-away rounding done exactly.
  A block holding NaN or ±Inf is all NaN, as in the seed.
- ``emulate="seed"``: the seed's arithmetic in the input dtype, float ``log2``
  (§2.8-b, including ``2^128 = Inf`` at FLT_MAX) and ``floor(t + 0.5)`` (§2.8-c).
"""

from __future__ import annotations

import math

import torch

from ._bits import round_half_away
from .mx import biased_exponent, check_emulate, compute_dtype, pad_axis_to_multiple, pow2, seed_log2

__all__ = ["quantize_tmx_ref"]

TMX_BLOCK = 16
TMX_PAIRS = 8


def _eps(input_dtype: torch.dtype) -> float:
    # 2^-45 underflows in float16, so the seed uses its min normal there.
    return 2.0**-14 if input_dtype == torch.float16 else 2.0**-45


def _exact(xg: torch.Tensor, m: int, a: int, eps: float) -> torch.Tensor:
    """xg: (..., blocks, 8, 2, ...) float32 with the blocks dim at ``a``."""
    ax = xg.abs()
    pm = ax.amax(dim=a + 2, keepdim=True)  # pair max, (..., blocks, 8, 1, ...)
    # pm + eps >= eps is normal, so its exponent field is floor(log2); Inf/NaN give 128.
    g = biased_exponent(pm + eps)
    G = g.amax(dim=a + 1, keepdim=True)
    # e >= g_min = log2(eps); e = 128 only in a non-finite block (NaN below), so
    # clipping at 127 keeps the powers of two finite without changing any result.
    g_min = round(math.log2(eps))
    e = torch.maximum(g, G - 1).clamp(max=127)
    top = 2**m
    # Fixed point with M bits below 2^(e+1): integer mantissa k = RNA(|x|·2^(M-1-e)) <= 2^M.
    k = round_half_away(ax * pow2(m - 1 - e, m - 128, m - 1 - g_min))
    k = torch.where(k == top, top - 1, k)
    out = torch.copysign(k * pow2(e + 1 - m, g_min + 1 - m, 128 - m), xg)
    # A NaN or Inf anywhere in the 16 elements makes the seed's exponent NaN/Inf and the block NaN.
    bad = ~torch.isfinite(pm.amax(dim=a + 1, keepdim=True))
    return torch.where(bad, math.nan, out)


def _seed(xg: torch.Tensor, m: int, a: int, eps: float) -> torch.Tensor:
    ax, sign = xg.abs(), torch.sign(xg)
    pm = ax.amax(dim=a + 2, keepdim=True)
    g = torch.floor(seed_log2(pm + eps))
    G = g.amax(dim=a + 1, keepdim=True)
    e8 = G - 1
    e = (g - e8).clamp(min=0) + e8
    mant = torch.floor(ax * torch.pow(2.0, m - 1 - e) + 0.5) * 2.0 ** (1 - m)
    mant = torch.where(mant == 2, 2 - 2.0 ** (1 - m), mant)
    return sign * mant * torch.pow(2.0, e)


def quantize_tmx_ref(x: torch.Tensor, *, n: int, axis: int = -1, emulate: str = "exact") -> torch.Tensor:
    """TMX-N fake quantization of ``x`` along ``axis``; returns ``x``'s shape and dtype, never modifies ``x``."""
    check_emulate(emulate)
    if n < 3:
        raise ValueError(f"tmx{n}: N must be >= 3 (M = N - 2 mantissa bits)")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis {axis} out of range for a {x.ndim}-D tensor")
    a = axis % x.ndim
    length = x.shape[a]
    xp = pad_axis_to_multiple(x.to(compute_dtype(x, emulate)), a, TMX_BLOCK)
    xg = xp.unflatten(a, (-1, TMX_PAIRS, 2))  # dims a, a+1, a+2 = (blocks, pairs, 2)
    impl = _seed if emulate == "seed" else _exact
    out = impl(xg, n - 2, a, _eps(x.dtype))
    return out.flatten(a, a + 2).narrow(a, 0, length).to(x.dtype)
