"""Fast casts used as formats (``fp16``, ``bf16``, ``fp32``; both emulate modes): one copy into ``out``.

``kernels.reference.cast.quantize_cast_ref`` is ``x.to(T, copy=True).to(back)`` (formats-mx.md
§7), two conversions into two new tensors, which the cpu-fast backend then copies into
the result. With ``out`` (the piece's slice of the result, dtype ``back``) the kernel
writes ``x.to(T)`` straight into it: ``copy_`` converts with the same RNE rounding as
``.to`` (``.to`` is a copy into a new tensor), so the bits are the reference's, and one
allocation and one pass are saved (none at all when ``x`` is already of type T).
Without ``out`` there is nothing to save, and the reference runs.
"""

from __future__ import annotations

import torch

from ..formats import FormatSpec
from ..reference.cast import CAST_DTYPES, quantize_cast_ref
from . import register


@torch.no_grad()
def cast_kernel(
    x: torch.Tensor, spec: FormatSpec, amax: torch.Tensor | None, *, out: torch.Tensor | None = None
) -> torch.Tensor:
    """The reference ``quantize_cast_ref(x, dtype=..., emulate=...)``, bit for bit; into ``out`` when given."""
    if out is None or not x.is_floating_point():
        return quantize_cast_ref(x, dtype=spec["element"], emulate=spec.emulate)
    target = CAST_DTYPES[spec["element"]]
    return out.copy_(x if x.dtype == target else x.to(target))


register("cast", lambda spec: True, cast_kernel)
