"""Fast per-tensor FP8 kernel (``fp8_e4m3``, ``fp8_e5m2``; both emulate modes), and :func:`round_grid_`.

Equals ``kernels.reference.fp8.quantize_fp8_tensor_ref`` bit for bit (formats-mx.md §6).
The whole tensor's amax comes from the caller (``kernels.chunked``), so the scale and
the two per-tensor special cases are settled once per piece, with no per-element mask:

- amax NaN or ±Inf: the reference's scale is NaN or 0 and every element comes out NaN;
- amax < 2^-23 (the seed's guard, kept in exact mode): the input, unchanged;
- otherwise every ``x · scale`` is finite and the reference's arithmetic runs as is:
  ``round_to_grid(x · scale, grid) / scale`` with the same scale (float64 quotient
  rounded once to float32), in place on one buffer (:func:`round_grid_`).

:func:`round_grid_` is also the E2M1 element rounding of the NVFP4 kernels (``nvfp.py``).
"""

from __future__ import annotations

import torch

from ..formats import FormatSpec
from ..reference.fp8 import FP8_ELEMENTS, SEED_EPS, FloatGrid, quantize_fp8_tensor_ref
from . import register
from ._ops import F32, I32, scratch

#: The input dtypes the block and per-tensor reference kernels accept.
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def round_grid_(t: torch.Tensor, grid: FloatGrid) -> torch.Tensor:
    """``kernels.reference.fp8.round_to_grid(t, grid)`` (ties to even), in place on float32 ``t``.

    The same operations on the same operands as the reference, hence the same bits: clamp
    to ±max_norm, step ``2^max(floor(log2|t|), emin) · 2^-man_bits``, then
    ``round(t / step) · step``. Only the step is formed differently, with int32 ops on
    the exponent field into a scratch buffer: ``clamp`` of a non-negative bit pattern is
    the float clamp (such floats order as their bits), and subtracting ``man_bits << 23``
    is the exact multiplication of a normal power of two by ``2^-man_bits``. The one
    pattern where these differ, +Inf, comes only from a NaN ``t``, which stays NaN.
    """
    t.clamp_(-grid.max_norm, grid.max_norm)
    step = torch.bitwise_and(t.view(I32), 0x7F800000, out=scratch("fp8.step", t.shape, I32))
    step.clamp_(min=(grid.emin + 127) << 23).sub_(grid.man_bits << 23)
    return t.div_(step.view(F32)).round_().mul_(step.view(F32))


def deliver(result: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """``result``, or a copy of it in ``out`` when the caller gave one (the kernels' ``out=``)."""
    return result if out is None else out.copy_(result)


@torch.no_grad()
def fp8_tensor_kernel(
    x: torch.Tensor, spec: FormatSpec, amax: torch.Tensor | None, *, out: torch.Tensor | None = None
) -> torch.Tensor:
    """The reference ``quantize_fp8_tensor_ref(x, ...)`` for a piece of a tensor whose amax is
    ``amax``, bit for bit; into ``out`` when given (the reference's output dtype)."""
    seed = spec.emulate == "seed"
    if amax is None or x.numel() == 0 or x.dtype not in FLOAT_DTYPES:
        return deliver(quantize_fp8_tensor_ref(x, elem=spec["element"], emulate=spec.emulate), out)
    grid = FP8_ELEMENTS[spec["element"]]
    out_dtype = F32 if seed else x.dtype
    amax64 = amax.to(torch.float64)
    max_norm = torch.full((), grid.max_norm, dtype=torch.float64)
    scale = (max_norm / (amax64 + SEED_EPS if seed else amax64)).to(F32)  # as the reference
    if not bool(torch.isfinite(amax)):
        return deliver(torch.full(x.shape, torch.nan, dtype=out_dtype), out)
    if bool(amax < SEED_EPS):
        return deliver(x.to(out_dtype, memory_format=torch.contiguous_format, copy=True), out)
    if x.dtype == F32:  # the result buffer itself
        t = torch.mul(x, scale, out=torch.empty(x.shape, dtype=F32) if out is None else out)
    else:
        t = scratch("fp8.t", x.shape, F32).copy_(x).mul_(scale)  # float32 holds x exactly
    round_grid_(t, grid).div_(scale)
    if x.dtype == F32:
        return t
    return t.to(out_dtype, copy=True) if out is None else out.copy_(t)  # never hand out the scratch buffer


register("fp8tensor", lambda spec: True, fp8_tensor_kernel)
