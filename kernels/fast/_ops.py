"""Building blocks for the fast CPU kernels (see the package docstring for why these).

All take float32 tensors unless said otherwise and avoid bool tensors.
"""

from __future__ import annotations

import torch

F32, I32 = torch.float32, torch.int32


def biased_exp(a: torch.Tensor) -> torch.Tensor:
    """The float32 exponent field (0..255) of a non-negative float32 tensor, as int32."""
    return a.view(I32) >> 23


def pow2_biased(eb: torch.Tensor) -> torch.Tensor:
    """``2^(eb - 127)`` as float32 for int32 ``eb`` in [1, 254] (a normal power of two)."""
    return (eb << 23).view(F32)


def rna(a: torch.Tensor) -> torch.Tensor:
    """Round a non-negative float32 to the nearest integer, ties away from zero, exactly.

    ``floor(2a) - floor(a)``: with f = floor(a), floor(2a) = 2f + floor(2(a - f)), so the
    difference is f + [a - f >= 1/2]. ``2a`` is exact; unlike ``floor(a + 0.5)``
    nothing rounds (formats-mx.md §2.8-c). Valid for a < 2^23.
    """
    return torch.floor(a * 2).sub_(torch.floor(a))
