"""Exact float32 helpers shared by every reference kernel.

Nothing here calls a float ``log2`` or ``pow``: exponents are read from the
float32 bit pattern and powers of two are built from bits, so results are the
same on every device (spec formats-mx.md §2.8-b explains why float ``log2`` is
not good enough). All functions take and return float32 / int32 tensors and
never modify their arguments.
"""

from __future__ import annotations

import torch

F32 = torch.float32
I32 = torch.int32

#: floor_log2 of +0 (below every finite float32 exponent, including subnormals).
ZERO_EXP = -150
#: floor_log2 of +Inf and NaN (above every finite float32 exponent).
INF_EXP = 128

_TWO_P64 = 2.0**64


def floor_log2(a: torch.Tensor) -> torch.Tensor:
    """``floor(log2(|a|))`` exactly, as int32, for float32 ``a``.

    Subnormals get their true exponent (down to -149); ``0`` gives ``ZERO_EXP``;
    ``±Inf`` and NaN give ``INF_EXP``.
    """
    a = a.to(F32).abs()
    biased = (a.view(I32) >> 23) & 0xFF
    # Subnormals (biased exponent 0): scale by 2^64, which is exact, and re-read.
    sub = ((a * _TWO_P64).view(I32) >> 23) & 0xFF
    e = torch.where(biased == 0, sub - (127 + 64), biased - 127)
    e = torch.where(a == 0, torch.full_like(e, ZERO_EXP), e)
    return torch.where(biased == 0xFF, torch.full_like(e, INF_EXP), e)


def exp2i(e: torch.Tensor) -> torch.Tensor:
    """``2**e`` exactly as float32 for an integer tensor ``e``.

    ``e > 127`` gives ``+Inf``; ``-149 <= e < -126`` gives the subnormal power;
    ``e < -149`` gives ``+0``.
    """
    e = e.to(I32)
    normal = ((e.clamp(-126, 127) + 127) << 23).view(F32)
    subnormal = (torch.ones_like(e) << (e.clamp(-149, -127) + 149)).view(F32)
    out = torch.where(e >= -126, normal, subnormal)
    out = torch.where(e < -149, torch.zeros_like(out), out)
    return torch.where(e > 127, torch.full_like(out, float("inf")), out)


def round_half_even(t: torch.Tensor) -> torch.Tensor:
    """Round to the nearest integer, ties to even (IEEE RNE). Exact."""
    return torch.round(t)


def round_half_away(t: torch.Tensor) -> torch.Tensor:
    """Round to the nearest integer, ties away from zero (RNA). Exact.

    Unlike ``floor(|t| + 0.5)`` in float32, a value just below a half never
    rounds up (spec formats-mx.md §2.8-c).
    """
    a = t.abs()
    f = torch.floor(a)
    r = f + (a - f >= 0.5).to(a.dtype)  # a - f is exact for |a| < 2**24
    return torch.copysign(r, t)


def round_toward_zero(t: torch.Tensor) -> torch.Tensor:
    """Truncate toward zero (the seed's ``floor`` rounding acts on magnitudes)."""
    return torch.trunc(t)


def seed_round_half_away(t: torch.Tensor) -> torch.Tensor:
    """The seed's ``sign(t) * floor(|t| + 0.5)`` evaluated in ``t``'s dtype.

    Reproduces artifact (c) of formats-mx.md §2.8: ``0.49999997 + 0.5`` rounds
    to ``1.0`` in float32. Only for ``emulate=seed``.
    """
    return torch.sign(t) * torch.floor(t.abs() + 0.5)


def seed_log2_f32(a: torch.Tensor) -> torch.Tensor:
    """torch's CPU float32 ``log2`` as the seed saw it: ``fl32(log2_f64(a))``.

    formats-mx.md §2.8-b: on 9322 near-power-of-two inputs torch's CPU float32
    log2 equalled the float64 log2 rounded to float32, so computing it that way
    reproduces the seed on any device. Only for ``emulate=seed``.
    """
    return torch.log2(a.to(torch.float64)).to(F32)
