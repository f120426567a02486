"""Fast NF4 kernels: bitsandbytes ``nf4`` (any block) and the seed's ``nf4B{B}b{b}`` (emulate=exact), any axis.

Both equal ``kernels.reference.nf4`` bit for bit (formats-mx.md §5.1, §5.2). Blocks are
viewed in place (``nvfp.as_blocks``); block absmax values are int32 ``amax`` of the
``|x|`` bits; the small per-block tensors run the reference's own operations.

``nf4`` (reference ``quantize_nf4_ref``): ``s = clamp(x · (1/absmax), -1, 1)`` as the
reference, then the nearest code, a value on a midpoint going to the lower code, which
the reference finds with ``bucketize`` (~10 ms per 256K elements here). Instead:

1. ``c = rne(16·s + 16)``, a cell index in 0..32, from one pass ``(2^23 + 16) + 16·s``:
   ``16·s`` is exact, and the sum lies in [2^23, 2^24) where float32 steps are 1, so it
   rounds once (with or without a fused multiply-add), to ``2^23 + c``; ``c`` is its low
   mantissa bits.
   Cell c is ``[-1 + (c - 1/2)/16, -1 + (c + 1/2)/16]`` (an ``s`` on an edge goes to the
   even neighbour; either one gives the same count below).
2. Every float32 midpoint of the code book lies at least 0.004 inside its cell
   (``_cell_tables`` asserts 0.002). So each cell holds at most one midpoint, ``mid[c]``
   (2 where it holds none), and the ``lo[c]`` midpoints below the cell are below ``s``.
   Hence ``idx = lo[c] + [s > mid[c]]``, the exact bucketize count. ``[s > mid]`` is the
   sign bit of ``mid - s``: the difference of two different floats never rounds to 0.
3. Two ``index_select`` look-ups (~130 us each): ``mid[c]``, then the code
   ``code2[c + 33·[s > mid[c]]] = code[lo[c] + [s > mid[c]]]``, multiplied by the
   absmax as the reference does.

NaN: ``s`` is NaN only in blocks whose absmax is NaN or ±Inf (an Inf element there
gives Inf·0). The reference puts NaN in the top bucket (code +1, so an Inf element
decodes to +Inf, §5.1); pieces with such a block map NaN to 1.0 first, which is the same
bucket (rare path, decided from the small absmax tensor). The rest is arithmetic.

``nf4B{B}b{b}`` (reference ``_nf4_grid_exact``): ``rna(|x| / gmax · 7) / 7 · gdq`` with the
sign of ``x``: the same float operations (``round_half_away_`` of ``_ops`` equals the
reference's RNA), with per-inner-block values computed by the reference's own
expressions. Inner blocks the reference fills (``gmax = 0``: +0; a group with NaN or
Inf: NaN) get ``gdq`` replaced by that fill and no sign; their quotient uses
``max(gmax, 2^-149)``, which is ``gmax`` itself for every other block.
"""

from __future__ import annotations

import torch

from ..formats import FormatSpec
from ..reference.fp8 import E4M3, div_by_const, round_to_grid
from ..reference.nf4 import BNB_ABSMAX_FLOOR, E4M3_MAX, _code_and_bounds, quantize_nf4_grid_ref, quantize_nf4_ref
from . import register
from ._ops import F32, I32, round_half_away_, scratch
from .fp8 import deliver
from .nvfp import as_blocks, unusual

#: Cells per unit of ``s``: cells are 1/16 wide, less than the smallest midpoint gap (0.0805).
_CELLS = 16
_N_CELLS = 2 * _CELLS + 1
#: Adding this to ``16·s`` leaves ``rne(16·s) + 16`` in the low mantissa bits (the sum lies in [2^23, 2^24)).
_MAGIC = torch.full((), 2.0**23 + _CELLS)
_MAGIC_BITS = 0x4B000000  # the float32 bits of 2^23
_NONFINITE_BITS = 0x7F800000  # absmax bits at or above this: ±Inf or NaN
#: The smallest positive float32 (subnormal): divisor floor that leaves every nonzero gmax unchanged.
_F32_MIN_SUB = 2.0**-149
_SEVEN = torch.full((), 7.0)


def _cell_tables() -> tuple[torch.Tensor, torch.Tensor]:
    """``(mid, code2)`` for step 2-3 of the module docstring, from the reference's float32 code and midpoints."""
    code, bounds = _code_and_bounds(torch.device("cpu"))
    mids = bounds.tolist()
    mid, lower, upper = [], [], []
    for c in range(_N_CELLS):
        lo_edge, hi_edge = -1 + (c - 0.5) / _CELLS, -1 + (c + 0.5) / _CELLS
        inside = [m for m in mids if lo_edge < m < hi_edge]
        assert len(inside) <= 1 and all(abs(m - e) > 2e-3 for m in mids for e in (lo_edge, hi_edge))
        lo = sum(m < lo_edge for m in mids)
        mid.append(inside[0] if inside else 2.0)
        lower.append(code[lo])
        upper.append(code[min(lo + 1, len(mids))])
    return torch.tensor(mid, dtype=F32), torch.stack(lower + upper)


_MID, _CODE2 = _cell_tables()


@torch.no_grad()
def nf4_kernel(x: torch.Tensor, spec: FormatSpec, amax: torch.Tensor | None, *, out: torch.Tensor | None = None):
    """The reference ``quantize_nf4_ref(x, block=..., axis=...)``, bit for bit; into ``out`` when given."""
    if unusual(x) or spec["block"] < 1:
        return deliver(quantize_nf4_ref(x, block=spec["block"], axis=spec["axis"]), out)
    xb, y, finish = as_blocks(x, spec["axis"], spec["block"], out)
    shape = xb.shape
    ai = torch.bitwise_and(xb.view(I32), 0x7FFFFFFF, out=scratch("nf4.abs", shape, I32))
    absmax_bits = ai.amax(2, keepdim=True)
    absmax = absmax_bits.view(F32)
    s = torch.mul(xb, torch.reciprocal(absmax.clamp(min=BNB_ABSMAX_FLOOR)), out=scratch("nf4.s", shape, F32))
    s.clamp_(-1.0, 1.0)  # the reference's s, exactly
    if bool(absmax_bits.amax() >= _NONFINITE_BITS):  # rare: NaN goes to the top bucket, as bucketize puts it
        s.nan_to_num_(nan=1.0)
    cell = torch.add(_MAGIC, s, alpha=_CELLS, out=ai.view(F32)).view(I32).sub_(_MAGIC_BITS).view(-1)
    gap = torch.index_select(_MID, 0, cell, out=scratch("nf4.mid", (cell.numel(),), F32))
    gap.sub_(s.view(-1))  # mid[c] - s: negative exactly when s > mid[c]
    idx = cell.sub_(gap.view(I32).bitwise_right_shift_(31), alpha=_N_CELLS)  # c + 33·[s > mid[c]]
    torch.index_select(_CODE2, 0, idx, out=y.view(-1))
    y.mul_(absmax)  # code · absmax, as the reference
    return finish()


@torch.no_grad()
def nf4grid_kernel(x: torch.Tensor, spec: FormatSpec, amax: torch.Tensor | None, *, out: torch.Tensor | None = None):
    """The reference ``quantize_nf4_grid_ref(x, outer=B, block=b, axis=...)``, bit for bit; into ``out`` when given."""
    outer, block = spec["B"], spec["b"]
    if unusual(x):
        return deliver(quantize_nf4_grid_ref(x, outer=outer, block=block, axis=spec["axis"]), out)
    xb, y, finish = as_blocks(x, spec["axis"], outer * block, out)
    o, n_groups, _, inner = xb.shape
    xg = xb.view(o, n_groups, outer, block, inner)  # inner blocks along dim 3, groups of them along dim 2
    ai = torch.bitwise_and(xg.view(I32), 0x7FFFFFFF, out=scratch("nf4.abs", xg.shape, I32))
    gmax = ai.amax(3, keepdim=True).view(F32)  # (o, n_groups, outer, 1, inner)
    # Per inner block, the reference's expressions (_nf4_grid_exact):
    omax = gmax.amax(2, keepdim=True)
    z = gmax / omax * E4M3_MAX
    gdq = div_by_const(round_to_grid(z, E4M3, ties="away"), E4M3_MAX) * omax
    finite = torch.isfinite(omax)
    filled = (gmax == 0) | ~finite
    gdq = torch.where(filled, torch.where(finite, 0.0, torch.nan), gdq)
    sign = (~filled).to(I32) << 31  # the sign bit, or 0 where the reference fills
    y5 = y.view(xg.shape)
    torch.div(ai.view(F32), gmax.clamp(min=_F32_MIN_SUB), out=y5).mul_(7.0)
    round_half_away_(y5).div_(_SEVEN).mul_(gdq)  # the reference's div_by_const(., 7.0), then lev · gdq
    y5.view(I32).bitwise_or_(torch.bitwise_and(xg.view(I32), sign, out=ai))
    return finish()


register("nf4", lambda spec: True, nf4_kernel)
register("nf4grid", lambda spec: spec.emulate == "exact", nf4grid_kernel)
