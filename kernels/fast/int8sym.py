"""Fast symmetric INT8 kernel, format ``int8sym`` (both emulate modes, any axis).

Equals ``kernels.reference.int8sym.quantize_int8sym_ref`` bit for bit (formats-mx.md §8):
``round(x / step).clamp(-127, 127) · step`` with ``step = amax / 127`` per row, the same
operations on the same operands, done in place on the result buffer. Two changes of
form, no change of value:

- The row amax is ``max(amax(x), -amin(x))``: two reductions that write nothing,
  instead of ``|x|`` and a reduction (negation is exact, both propagate NaN).
- emulate=exact makes a row with ``step = 0`` exactly +0 (reference: ``where(step == 0,
  0, ·)``). Dividing by ``max(step, 2^-149)`` (``step`` itself for every other row) keeps
  those rows finite, ``· step`` makes them ±0, and only when such a row exists (decided
  on the small per-row tensor) one broadcast add of +0 there and -0 elsewhere turns -0
  into +0 and changes nothing else (y + -0 = y for every y, -0 included).

NaN or ±Inf rows need nothing: the step is NaN or Inf and the arithmetic gives NaN, as in
the reference. emulate=seed runs the same operations in the input dtype (the reference's
``xc = x``), with no zero-row rule.
"""

from __future__ import annotations

import torch

from ..formats import FormatSpec
from ..reference.fp8 import div_by_const
from ..reference.int8sym import INT8_MAX, quantize_int8sym_ref
from . import register
from ._ops import I32
from .fp8 import deliver
from .nvfp import as_blocks, unusual

#: The smallest positive float32: the divisor floor that leaves every nonzero step unchanged.
_F32_MIN_SUB = 2.0**-149


def _row_amax(x: torch.Tensor) -> torch.Tensor:
    """max |x| over dim 2 (keepdim), NaN propagating, in ``x``'s dtype."""
    return torch.maximum(x.amax(2, keepdim=True), x.amin(2, keepdim=True).neg_())


@torch.no_grad()
def int8sym_kernel(x: torch.Tensor, spec: FormatSpec, amax: torch.Tensor | None, *, out: torch.Tensor | None = None):
    """The reference ``quantize_int8sym_ref(x, axis=..., emulate=...)``, bit for bit; into ``out`` when given."""
    if unusual(x):
        return deliver(quantize_int8sym_ref(x, axis=spec["axis"], emulate=spec.emulate), out)
    if spec.emulate == "seed":
        ax = spec["axis"] % x.dim()
        x4 = x.reshape(x.shape[:ax].numel(), 1, x.shape[ax], -1)  # (outer, 1, row, inner)
        step = div_by_const(_row_amax(x4), INT8_MAX)
        y = torch.div(x4, step, out=torch.empty(x4.shape, dtype=x.dtype))
        return deliver(y.round_().clamp_(-INT8_MAX, INT8_MAX).mul_(step).view(x.shape), out)
    xb, y, finish = as_blocks(x, spec["axis"], x.shape[spec["axis"]], out)  # one block per row
    step = div_by_const(_row_amax(xb), INT8_MAX)
    torch.div(xb, step.clamp(min=_F32_MIN_SUB), out=y).round_().clamp_(-INT8_MAX, INT8_MAX).mul_(step)
    if bool(step.view(I32).amin() <= 0):  # a step of +0 (step >= 0 but for NaN): one reduction, no mask
        y.add_(torch.where(step == 0, 0.0, -0.0))
    return finish()


register("int8sym", lambda spec: True, int8sym_kernel)
