"""Reference casts used as formats: ``fp16``, ``bf16``, ``fp32`` (spec formats-mx.md §7).

:func:`quantize_cast_ref` rounds ``x`` to the target float type:

- ``emulate="exact"`` (default, golden ``expected_exact``): ``x.to(T).to(x.dtype)``,
  fqtool's fake-quant definition. For a bf16 input and ``fp16`` that is one
  RNE rounding bf16 → fp16 and a second, fp16 → bf16.
- ``emulate="seed"`` (golden ``expected``): the seed's layers, ``x.to(T).float()``:
  float32 output whatever the input dtype.

Both casts are torch's, i.e. IEEE round to nearest even: FP16 overflows to ±Inf
at and beyond 65520 (65519.99… still rounds to 65504), keeps subnormals down to
2^-24 and flushes smaller magnitudes to ±0; BF16 keeps float32's range; NaN
and ±Inf pass through unchanged; -0.0 stays -0.0. The result is always a new
tensor, never ``x`` itself, even when no rounding happens (``fp32`` of a
float32 input).
"""

from __future__ import annotations

import torch

from .fp8 import check_emulate

__all__ = ["CAST_DTYPES", "quantize_cast_ref"]

CAST_DTYPES: dict[str, torch.dtype] = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


@torch.no_grad()
def quantize_cast_ref(x: torch.Tensor, *, dtype: str, emulate: str = "exact") -> torch.Tensor:
    """Round ``x`` to ``dtype`` ("fp16" | "bf16" | "fp32") and back (§7); see the module docstring."""
    check_emulate(emulate)
    if dtype not in CAST_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(CAST_DTYPES)}, got {dtype!r}")
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point tensor, got {x.dtype}")
    back = x.dtype if emulate == "exact" else torch.float32
    # copy=True: .to() returns x itself when the dtype already matches, and the
    # caller must be free to modify the result without touching x.
    return x.to(CAST_DTYPES[dtype], copy=True).to(back)
