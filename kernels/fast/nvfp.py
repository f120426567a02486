"""Fast NVFP4 kernels: ``nvf4`` (one level, emulate=exact) and ``nvfp4`` (two level), any axis.

Both equal ``kernels.reference.nvfp`` bit for bit (formats-mx.md §4.1, §4.2, §4.4). The
per-block work (amax, E4M3 scale) runs the reference's own operations on the small
per-block tensors; the per-element work is the reference's arithmetic with cheaper
passes:

- Blocks are viewed in place (:func:`as_blocks`, shared with the NF4 and INT8 kernels),
  not moved to the last axis.
- Block amax: the int32 ``amax`` of the ``|x|`` bit patterns (:func:`_abs_bits`), which
  is the float amax with NaN propagating, ~3x faster over 16 elements.
- E2M1 rounding: ``fp8.round_grid_``, the reference's ``round_to_grid`` op for op in
  place (clamp ±6, step from the exponent bits, ``round(t / step) · step``), so ties
  and saturation come out identical.
- Temporaries live in per-thread scratch buffers (``_ops.scratch``); only the result
  is a new tensor.

``nvf4`` specifics (reference ``_nvf4_exact``): the reference rounds ``|x| / S`` and copies
the sign of x onto ``q·S``. Here ``x / S`` is rounded instead: division, ``round_to_grid``
(symmetric clamp, step from ``|t|``, RNE) and ``· S`` are all odd in x, so this is
``copysign(q·S, x)`` bit for bit, -0 included, without two sign passes. Special cases,
without per-element masks:

- A scale that rounds to 0 makes its block +0. The division uses ``max(S, 2^-9)``
  instead of S: equal to S for every nonzero E4M3 scale (the smallest is 2^-9), and for
  S = 0 any finite quotient works since it is multiplied by S = 0 next. That leaves ±0;
  pieces with such a block add +0 there and -0 elsewhere (y + -0 = y for every y), one
  broadcast pass.
- A NaN block: its amax, scale and every quotient are NaN, carried by the arithmetic.
  An infinite element must become NaN while the rest of its block is quantized against
  S = 448; arithmetic gives ±6·448 there, so pieces holding an Inf (seen from the block
  amax, no full pass) patch those elements, a rare slow path.

``nvfp4`` specifics (reference ``quantize_nvfp4_ref``): the tensor amax comes from the
caller; a non-finite amax gives all NaN and a per-tensor scale below 2^-121 returns the
input, both decided once per piece. Otherwise every element is finite and
``e2m1(x · r) · (pts · s_b)`` runs with the reference's per-block ``r`` and ``pts · s_b``.
The cpu-fast backend may use this kernel only where ``kernels.chunked`` cuts nvfp4 into
whole blocks (:func:`_nvfp4_supported`).
"""

from __future__ import annotations

import math

import torch

from ..formats import FormatSpec
from ..reference.fp8 import E2M1, E4M3, div_by_const, round_to_grid
from ..reference.nvfp import (
    E4M3_MIN_NORMAL,
    NVFP4_BLOCK,
    NVFP4_MIN_PTS,
    NVFP4_TENSOR_DIVISOR,
    quantize_nvf4_ref,
    quantize_nvfp4_ref,
)
from . import register
from ._ops import F32, I32, scratch
from .fp8 import FLOAT_DTYPES, deliver, round_grid_

#: The float32 bits of +Inf: |x| bit patterns at or above it are ±Inf or NaN.
_INF_BITS = 0x7F800000
#: The smallest nonzero E4M3 value (subnormal 2^-6 · 2^-3): the divisor floor for zero scales.
_E4M3_MIN_SUB = 2.0**-9


def unusual(x: torch.Tensor) -> bool:
    """Inputs the reference rejects or passes through (0-dim, empty, other dtypes): let it answer."""
    return x.dim() == 0 or x.numel() == 0 or x.dtype not in FLOAT_DTYPES


def as_blocks(x: torch.Tensor, axis: int, block: int, out: torch.Tensor | None = None):
    """``(xb, buf, finish)``: ``x`` as float32 blocks, a buffer for the result, and the way back.

    ``xb`` is ``(outer, n_blocks, block, inner)``; the elements of one block are
    ``xb[o, b, :, i]``, consecutive along ``axis``. A reduction over dim 2 gives one value
    per block, and a ``(outer, n_blocks, 1, inner)`` tensor broadcasts back onto its
    block, without moving the axis last as the reference's ``to_blocks`` does (a copy
    that changes no value, only the memory order). The axis is zero-padded to a
    multiple of ``block`` as in ``to_blocks`` (zeros never raise an absmax). A float32
    ``x`` that needs no padding is only viewed; otherwise ``xb`` is a scratch copy
    (float32 holds every bf16/fp16 value exactly, so the upcast changes nothing).

    ``buf`` (contiguous, ``xb``'s shape) receives the float32 result. ``finish()`` returns
    it in ``x``'s shape and dtype (RNE cast, the reference's ``.to(x.dtype)``), padding
    dropped: written into ``out`` when given (``x``'s shape and dtype, any strides; the
    cpu-fast backend passes the piece's slice of the result), else as a new contiguous
    tensor. Where the result needs no cast or cut, ``buf`` is that destination itself.
    """
    ax = axis % x.dim()
    n = x.shape[ax]
    outer, inner = math.prod(x.shape[:ax]), math.prod(x.shape[ax + 1 :])
    x3 = x.reshape(outer, n, inner)
    n_pad = -(-n // block) * block
    if x3.dtype == F32 and n_pad == n:
        xb = x3
    else:
        xb = scratch("blocks.x", (outer, n_pad, inner), F32)
        if n_pad > n:
            xb[:, n:].zero_()
        xb[:, :n].copy_(x3)
    shape = (outer, n_pad // block, block, inner)
    direct = x3.dtype == F32 and n_pad == n and (out is None or out.is_contiguous())
    if direct:
        buf = torch.empty(shape, dtype=F32) if out is None else out.view(shape)
    else:
        buf = scratch("blocks.out", shape, F32)

    def finish() -> torch.Tensor:
        if direct:
            return buf.view(x.shape) if out is None else out
        y = buf.view(outer, n_pad, inner)[:, :n]
        if out is None:
            return y.to(x.dtype, memory_format=torch.contiguous_format, copy=True).view(x.shape)
        return out.copy_(y.reshape(x.shape))

    return xb.view(shape), buf, finish


def _abs_bits(xb: torch.Tensor) -> torch.Tensor:
    """The bits of ``|xb|`` as int32, in a scratch buffer. Non-negative floats order as their
    bit patterns do, NaN (any payload) above +Inf, so an int32 ``amax`` of these bits is the
    float ``amax`` of ``|xb|`` with NaN propagating: ~3x faster over 16 elements here."""
    return torch.bitwise_and(xb.view(I32), 0x7FFFFFFF, out=scratch("nvfp.abs", xb.shape, I32))


@torch.no_grad()
def nvf4_kernel(x: torch.Tensor, spec: FormatSpec, amax: torch.Tensor | None, *, out: torch.Tensor | None = None):
    """The reference ``quantize_nvf4_ref(x, axis=spec["axis"])``, bit for bit; into ``out`` when given."""
    if unusual(x):
        return deliver(quantize_nvf4_ref(x, axis=spec["axis"]), out)
    xb, y, finish = as_blocks(x, spec["axis"], NVFP4_BLOCK, out)
    ai = _abs_bits(xb)
    bmax = ai.amax(2, keepdim=True)  # (outer, n_blocks, 1, inner) bit patterns
    sf = div_by_const(bmax.view(F32), 6.0).clamp(0.0, 448.0)  # the reference's ops from here
    s = round_to_grid(sf, E4M3)
    torch.div(xb, s.clamp(min=_E4M3_MIN_SUB), out=y)  # x / S where S > 0
    round_grid_(y, E2M1).mul_(s)  # sign(x) · q · S: everything here is odd in x
    if bool(s.view(I32).amin() <= 0):  # a scale of +0 (S >= 0 but for NaN): one reduction, no mask
        y.add_(torch.where(s == 0, 0.0, -0.0))  # S = 0: ±0 + 0 = +0; elsewhere y + -0 = y
    if bool(bmax.amax() >= _INF_BITS):  # an Inf or a NaN in the piece
        y.masked_fill_(torch.isinf(xb), torch.nan)  # the reference: an infinite element is NaN
    return finish()


@torch.no_grad()
def nvfp4_kernel(x: torch.Tensor, spec: FormatSpec, amax: torch.Tensor | None, *, out: torch.Tensor | None = None):
    """The reference ``quantize_nvfp4_ref(x, axis=spec["axis"])`` for a piece of a tensor whose
    amax is ``amax``, bit for bit; into ``out`` when given."""
    if unusual(x) or amax is None:
        return deliver(quantize_nvfp4_ref(x, axis=spec["axis"]), out)
    pts = div_by_const(amax.to(F32), NVFP4_TENSOR_DIVISOR)  # 0-dim, as the reference
    if not bool(torch.isfinite(amax)):
        return deliver(torch.full(x.shape, torch.nan, dtype=x.dtype), out)
    if bool(pts < NVFP4_MIN_PTS):
        return deliver(x.clone(memory_format=torch.contiguous_format), out)
    xb, y, finish = as_blocks(x, spec["axis"], NVFP4_BLOCK, out)
    bmax = _abs_bits(xb).amax(2, keepdim=True).view(F32)
    s_b = round_to_grid((div_by_const(bmax, 6.0) / pts).clamp(E4M3_MIN_NORMAL, E4M3.max_norm), E4M3)
    r = torch.reciprocal(pts) / s_b
    torch.mul(xb, r, out=y)
    round_grid_(y, E2M1).mul_(pts * s_b)
    return finish()


def _nvfp4_supported(spec: FormatSpec) -> bool:
    """Only where ``kernels.chunked`` hands this kernel whole 16-element blocks along the axis
    after its amax pass, i.e. lays nvfp4 out as ``("tensor", 16)``. With ``("tensor", None)``
    it cuts pieces elementwise, through blocks, and the pieces' results would be wrong."""
    from ..chunked import layout

    return layout(spec) == ("tensor", NVFP4_BLOCK)


register("nvf4", lambda spec: spec.emulate == "exact", nvf4_kernel)
register("nvfp4", _nvfp4_supported, nvfp4_kernel)
