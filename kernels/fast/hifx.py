"""Fast HiFX v12 kernel (``hifx2_v12`` ... ``hifx5_v12``; spec formats-hifloat.md §5.3),
bit for bit equal to ``kernels.reference.hifx`` with its defaults (variant torch,
emulate exact), on any axis.

Layout. The quantization axis is moved last and the magnitudes are copied into a
zero-padded float32 scratch ``A[rows, 64·G]`` (a 64-group is [8 sub-blocks][2
micro-groups][4 lanes]). Reducing over, or broadcasting along, a trailing dimension
of 4 costs several plain passes in torch (the inner loop is 4 long), so neither is done:

* the micro-group maxima m4 come from ``max_pool1d`` with kernel and stride 4 (one
  pass; it propagates NaN);
* each micro-group's factor 2^(M-1-S), a power of two and so a bf16 value, is spread
  over its 4 lanes as a bf16 bit pattern: times 0x0001000100010001 its int64 value
  holds four int16 copies side by side (all equal, so byte order does not matter),
  and widening that bf16 view to float32 is one cheap pass.

The sub-block level needs E8 per micro-group: the two micro-groups of a sub-block are
the two int32 halves of one int64, so swapping the halves gives the sibling's E4.

Exactness. Every float operation that can round is the reference's operation on the
same operands; the rest is integer or exact:

* §5.3 step 3: E4 is the biased exponent of fl32(m4 + 2^-45), read from the bits (as
  ``floor_log2``); the levels work on biased exponents (a constant shift).
* Steps 4-8: expanding the clamps, S = L1 + d8 + d4 = max(E4, E8 - 1, Emax - 2) when
  L1 is not clipped at 16 (E4 <= E8 <= Emax; L1's clip at -46 never binds there,
  since E4 >= -45 because of the 2^-45 offset).
* Step 9: v = |x|·2^(M-1-S) and k = RHA(v) = floor(v + c), c = 0.5 - 2^-25
  (``_ops.round_half_away_``), as one ``addcmul``: the product is exact (or below
  2^-126, where v + c rounds to c either way, fused or not). The reference saturates
  only k = 2^M; where L1 is not clipped at 16, S >= E4 and |x| < 2^(E4+1), so
  v < 2^M, k <= 2^M, and clamping v + c at 2^M - 1 before the floor is the same thing.
* Step 10: q = k·2^(S-M+1) = k / 2^(M-1-S) (exact); the sign bit of x is ORed in, which
  is ``copysign`` for q >= 0 (negative values that round to 0 give -0, as in the
  reference); a 16-bit output is rounded from float32 with RNE, as the reference's
  final ``.to()``.

Rows holding a group with Emax >= 19 (L1 clipped at 16: huge values, ±Inf, NaN) break
the k <= 2^M argument or need the group-wide NaN; they are rare, found on the
per-group exponents, and recomputed by the reference kernel (rows are independent).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..formats import FormatSpec
from ..reference.hifx import _EPS, GROUP, L1_MAX, LANE, MICRO, SUB, quantize_hifx_ref
from . import register
from ._ops import F32, I32, NEXT_BELOW_HALF, SIGN16, SIGN32, scratch

_BIAS = 127
#: Biased Emax from which L1 = Emax - 2 is clipped at 16 (such rows go to the reference).
_CLIPPED_EMAX = L1_MAX + 2 + 1 + _BIAS
#: Four copies of a value below 2^15 as int16 lanes of one int64.
_FOUR_INT16 = 0x0001_0001_0001_0001
#: c of ``floor(v + c)`` = RHA(v) (``_ops.round_half_away_``), as a 0-dim tensor for addcmul.
_RHA_C = torch.tensor(NEXT_BELOW_HALF, dtype=torch.float32)


def _magnitudes(t: torch.Tensor, name: str) -> torch.Tensor:
    """|t| as a float32 scratch tensor, last dimension zero-padded to a multiple of 64."""
    length = t.shape[-1]
    A = scratch(name, (*t.shape[:-1], -(-length // GROUP) * GROUP), F32)
    head = A[..., :length]
    if A.shape[-1] > length:
        A[..., length:].zero_()
    if t.dtype == F32:
        torch.abs(t, out=head)
    else:
        head.copy_(t).abs_()  # float32 holds every bf16/fp16 value exactly
    return A


def _signed_into(out: torch.Tensor, A: torch.Tensor, t: torch.Tensor) -> None:
    """out = the non-negative float32 ``A`` (padding dropped) in out's dtype (RNE) with
    the sign bits of ``t`` ORed in: ``copysign`` for q >= 0, in two cheap passes."""
    head = A[..., : t.shape[-1]]
    if out.dtype == F32:
        torch.bitwise_and(t.view(I32), SIGN32, out=out.view(I32))
        out.view(I32).bitwise_or_(head.view(I32))
    else:
        out.copy_(head)
        out.view(torch.int16).bitwise_or_(t.view(torch.int16) & SIGN16)


def _supports(spec: FormatSpec) -> bool:
    return spec["variant"] == "torch" and spec["emulate"] == "exact"


def _kernel(
    x: torch.Tensor, spec: FormatSpec, amax: torch.Tensor | None, out: torch.Tensor | None = None
) -> torch.Tensor:
    n = spec["N"]
    if x.dim() == 0 or x.numel() == 0:  # the reference raises, or returns an empty tensor
        return quantize_hifx_ref(x, n=n, axis=spec["axis"])
    m = n - 1
    axis = spec["axis"] % x.dim()
    if out is None:
        out = torch.empty(x.shape, dtype=x.dtype)
    t, ot = x.movedim(axis, -1), out.movedim(axis, -1)
    A = _magnitudes(t, "hifx_mag")
    rows, padded = A.numel() // A.shape[-1], A.shape[-1]

    # Steps 3-8 on the per-micro-group exponents [rows, 16·G] (biased), using
    # S = L1 + d8 + d4 = max(E4, E8 - 1, max(Emax - 2, -46)) where L1 is not clipped at 16
    # (E4 <= E8 <= Emax; expand the clamps of §5.3 steps 5-7). The clip at -46 never
    # matters there: E4 >= -45 because of the 2^-45 offset.
    m4 = F.max_pool1d(A.view(rows, 1, padded), LANE, LANE).view(rows, -1)
    # NaN and Inf give 255 (the & 0xFF would also catch a NaN with its sign bit set).
    e4 = (m4.add_(_EPS).view(I32) >> 23).bitwise_and_(0xFF)
    pair = e4.view(torch.int64)  # the two micro-groups of a sub-block, swapped below
    e8m1 = (pair >> 32).bitwise_or_(pair << 32).view(I32).sub_(1)  # sibling's E4 - 1
    s = torch.maximum(e4, e8m1, out=e8m1).view(rows, -1, SUB * MICRO)
    emax = e4.view(rows, -1, SUB * MICRO).amax(-1, keepdim=True)  # [rows, G, 1]
    s = torch.maximum(s, emax - 2, out=s)
    # 2^(M-1-S) as bf16 bits (exponent field << 7), four copies per micro-group, widened.
    up16 = ((m - 1 + 2 * _BIAS) - s).to(torch.int64).mul_(_FOUR_INT16 << 7).view(torch.bfloat16)
    up = scratch("hifx_up", A.shape, F32).copy_(up16.view(A.shape))

    # Steps 9-10 on the whole piece: v + c = |x|·2^(M-1-S) + c (the product is exact, or
    # below 2^-126 where v + c rounds to c either way), k = min(floor(v + c), 2^M - 1) =
    # min(RHA(v), 2^M - 1), q = k / 2^(M-1-S) (exact).
    torch.addcmul(_RHA_C, A, up, out=A).clamp_(max=float(2**m - 1)).floor_().div_(up)
    _signed_into(ot, A, t)

    if int(emax.max()) >= _CLIPPED_EMAX:
        clipped = (emax.view(rows, -1) >= _CLIPPED_EMAX).any(-1).view(t.shape[:-1])
        ot[clipped] = quantize_hifx_ref(t[clipped], n=n)
    return out


register("hifx", _supports, _kernel)
