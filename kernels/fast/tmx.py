"""Fast TMX kernel (family ``tmx``, ``emulate=exact``): the reference's float32 algorithm
(formats-mx.md §9) bit for bit, with the pair coupling done on bits.

A block of 16 is 8 pairs; each pair's exponent is ``e = max(g, G - 1)``, ``g`` the
exponent field of fl32(pair_max + ε) and ``G`` the block's largest ``g``. Per piece:

1. **Pair maxima per element.** Along the last axis a pair is two adjacent float32, i.e.
   one int64 ``w``: ``w << 32 | w >> 32`` swaps the halves, and an int32 ``maximum`` of
   the bits with the swapped bits gives each element its pair's larger magnitude (the
   int order of non-negative floats is their float order, NaN above Inf). Four passes,
   where a reduction over a length-2 dim and a broadcast back over it cost ~10x more.
   Along another axis the pair partner is ``inner`` elements away, and a plain ``amax``
   over the pair dim is vectorised along ``inner``.
2. ``g`` per element is the exponent field of fl32(pm + ε), the reference's addition on
   the same value, kept in place in the bits (``& 0x7F800000``); ``G`` an int ``amax``
   over the 16 of a block; ``e = max(g, G - 1)`` (the reference's clamp at 127 only
   acts on NaN blocks, see 3.). ``2^(e+1-m)`` and ``2^(m-1-e)`` are bit patterns built
   from e's (normal for 4 <= N <= 24 and every e, see :func:`supports`).
3. ``k = RNA(|x|·2^(m-1-e))`` (``floor(t + 0.49999997)``, ``_ops.round_half_away_``) is at most
   2^m, because |x| < 2^(g+1) <= 2^(e+1); so the reference's "k == 2^m becomes 2^m - 1"
   is ``min(k, 2^m - 1)``. That bound is NaN for a block holding NaN or ±Inf (G = 128),
   and ``torch.minimum`` propagates it: the block comes out NaN with no extra pass.
   Then ``k·2^(e+1-m)`` and the input's sign bits (``_ops.with_signs``).

Not covered (the reference runs): ``emulate=seed`` and N = 3, whose 2^(m-1-e) can be
a float32 subnormal.
"""

from __future__ import annotations

import torch

from ..formats import FormatSpec
from ..reference.tmx import TMX_BLOCK, _eps  # the reference's own ε for an input dtype
from . import register
from ._ops import F32, I32, magnitudes, round_half_away_, scratch, with_signs

__all__ = ["supports", "fake_quantize_tmx"]

I64 = torch.int64
#: Biased exponent field of 2^127.
MAX_FIELD = 254
#: The exponent field of a float32, in place (also the bits of +Inf).
EXP_MASK = 0x7F800000


def supports(spec: FormatSpec) -> bool:
    # N >= 4: m = N - 2 >= 2 keeps 2^(m-1-e) normal at e = 127 (and N <= 24 is the format's own limit).
    return spec["emulate"] == "exact" and 4 <= spec["N"] <= 24


def _pair_max(A: torch.Tensor) -> torch.Tensor:
    """Per element, the bits (int32) of the larger magnitude of its pair, shaped like ``A``
    (rows, n, inner)."""
    rows, n, inner = A.shape
    if inner > 1:
        pm = A.view(I32).view(rows, n // 2, 2, inner).amax(dim=2, keepdim=True)
        return pm.expand(rows, n // 2, 2, inner).reshape(rows, n, inner)
    w = A.view(rows, n).view(I64)  # one int64 per pair: low half first element (little-endian)
    swapped = torch.bitwise_left_shift(w, 32, out=scratch("tmx.swapped", w.shape, I64))
    swapped.bitwise_or_(torch.bitwise_right_shift(w, 32, out=scratch("tmx.hi", w.shape, I64)))
    pm = torch.maximum(A.view(I32), swapped.view(I32).view(A.shape), out=scratch("tmx.pm", A.shape, I32))
    return pm


def fake_quantize_tmx(x: torch.Tensor, spec: FormatSpec, amax=None, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """The reference ``quantize_tmx_ref(x, ...)`` for a supported ``spec``, bit for bit;
    written into ``out`` (x's shape and dtype, any strides) when given."""
    m = spec["N"] - 2
    A, x3 = magnitudes(x, spec["axis"], TMX_BLOCK)
    rows, n_pad, inner = A.shape

    # g: exponent field of fl32(pair_max + eps) per element, kept in place in the bits
    # (field << 23); then e = max(g, G - 1), G the block's largest g.
    g = scratch("tmx.g", A.shape, I32)
    torch.add(_pair_max(A).view(F32), _eps(x.dtype), out=g.view(F32))
    g.bitwise_and_(EXP_MASK)
    blocks = (rows, n_pad // TMX_BLOCK, TMX_BLOCK, *((inner,) if inner > 1 else ()))
    G = g.view(blocks).amax(dim=2, keepdim=True)
    # The reference clamps e at 127; only a block with NaN or ±Inf reaches 128 (field 255),
    # and the NaN bound below makes such a block NaN whatever its e.
    e = torch.maximum(g.view(blocks), G - (1 << 23), out=g.view(blocks)).view(A.shape)

    # 2^(e+1-m) is e's pattern plus (1 - m) << 23; 2^(m-1-e) is 2^127's pattern minus that.
    down = e.add_((1 - m) << 23)
    up = torch.sub(MAX_FIELD << 23, down, out=scratch("tmx.up", A.shape, I32))
    round_half_away_(A.mul_(up.view(F32)))
    # G = 128 (NaN or Inf in the block) reads as +Inf, and Inf - Inf is NaN: the bound is
    # 2^m - 1, or NaN for such a block, without a bool mask.
    Gf = G.view(F32)
    bound = (Gf - Gf).add_(2**m - 1)
    Ab = A.view(blocks)
    torch.minimum(Ab, bound, out=Ab)
    A.mul_(down.view(F32))
    return with_signs(A, x3, x.shape, out)


register("tmx", supports, fake_quantize_tmx)
