"""Reference symmetric INT8 kernel, format ``int8sym`` (seed ``QFuncs/int8.py``, spec formats-mx.md §8).

:func:`quantize_int8sym_ref` gives every row along ``axis`` (one scale per
slice of ``x`` taken along ``axis``, i.e. the reduction runs over ``axis``) the step
``amax / 127`` and returns ``clip(round(x / step), -127, 127) · step`` with torch's
RNE rounding (2.5 → 2, 1.5 → 2). There is no zero point and no -128.

- ``emulate="exact"`` (default, golden ``expected_exact``): in float32; bf16/fp16
  inputs are upcast and the result rounded back (RNE). Fixed seed bug: an
  all-zero row gives 0 (the seed computes 0/0 = NaN), and so does a row whose
  step ``amax/127`` underflows to 0.
- ``emulate="seed"`` (golden ``expected``): the seed op for op in the input dtype,
  so an all-zero row is NaN; output in the input dtype.
- NaN or ±Inf in a row makes that row NaN in both modes: the step is NaN or Inf,
  and ``x / Inf ∈ {0, NaN}`` times Inf is NaN.
"""

from __future__ import annotations

import torch

from ._bits import F32, round_half_even
from .fp8 import check_emulate, check_float_input, div_by_const

__all__ = ["INT8_MAX", "quantize_int8sym_ref"]

INT8_MAX = 127.0


@torch.no_grad()
def quantize_int8sym_ref(x: torch.Tensor, *, axis: int = -1, emulate: str = "exact") -> torch.Tensor:
    """Symmetric INT8 with one absmax scale per row along ``axis`` (§8); see the module docstring.

    Output has ``x``'s shape and dtype; ``x`` is not modified.
    """
    check_emulate(emulate)
    check_float_input(x)
    if x.numel() == 0:
        return x.clone()
    xc = x.to(F32) if emulate == "exact" else x
    amax = xc.abs().amax(dim=axis, keepdim=True)  # NaN propagates
    step = div_by_const(amax, INT8_MAX)
    out = round_half_even(xc / step).clamp(-INT8_MAX, INT8_MAX) * step
    if emulate == "seed":
        return out
    # Fixed bug: a row whose step is 0 is 0. That is an all-zero row (x/0 = NaN in the seed),
    # and also a row of fp32 subnormals with amax < 127·2^-150, whose step underflows to 0
    # (every multiple of that step rounds to 0 as well).
    return torch.where(step == 0, 0.0, out).to(x.dtype)
