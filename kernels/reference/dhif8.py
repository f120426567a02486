"""Pure-PyTorch reference for dhif8, delayed-scaling HiF8 (spec formats-hifloat.md §6).

An emulation of the seed's Ascend kernel ``cusrc/delay_hif8_quant_op.h``, read from
source and never run on an NPU (the seed has no Python reference). The caller supplies
amax (it may come from an earlier step); scaler = scale_position / amax, and each
element of x·scaler goes through the HiF8 element rule with flush below 2^-23 and
saturation at 32768 (§3.2 variant B), then is divided by scaler.
"""

from __future__ import annotations

import torch

from ._bits import F32
from .hif8 import HIF8_MAX, hif8_round

#: The kernel's stand-in for amax = 0: its literal 5.421011e-20 is 2^-64 in float32.
ZERO_AMAX = 2.0**-64


def _bf16_round_half_away(t: torch.Tensor) -> torch.Tensor:
    """float32 -> bf16 with ties away from zero (the kernel's conversion, §6 step 7).

    bf16 is the top half of the float32 pattern. Adding half a bf16 ulp (0x8000) to the
    sign-magnitude bits and truncating rounds the magnitude half up; a carry moves into
    the exponent (up to Inf), as it should. NaN is passed through separately because
    its pattern could carry into the sign bit.
    """
    bits = (t.view(torch.int32) + 0x8000) & -0x10000  # -0x10000 == 0xFFFF0000 as int32
    r = bits.view(F32).to(torch.bfloat16)  # exact: the low 16 bits are zero
    return torch.where(torch.isnan(t), t.to(torch.bfloat16), r)


def quantize_dhif8_ref(
    x: torch.Tensor,
    *,
    amax: float | torch.Tensor | None = None,
    scale_position: float = 8.0,
    emulate: str = "exact",
) -> torch.Tensor:
    """Fake-quantize ``x`` to dhif8 with a caller-supplied ``amax`` (spec §6).

    ``amax=None`` uses max|x| of this tensor (what the seed's only caller passes).
    scaler = fl32(scale_position / amax), amax = 0 replaced by 2^-64. y = fl32(x·scaler)
    (bf16/fp16 widened to float32 first); HiF8 rule on y with exact exponents and ties
    away, |y| < 2^-23 -> 0, everything from 28672 up -> ±32768; out = fl32(r / scaler)
    in x's dtype.

    ``emulate="exact"`` (default) rounds a bf16/fp16 result with RNE, and keeps NaN as
    NaN and ±Inf as ±32768/scaler (the kernel's NaN/Inf behaviour is unverified).
    ``emulate="seed"`` follows the kernel as read: bf16 output rounded half away from
    zero, NaN -> 0 and ±Inf -> +32768/scaler (sign lost). fp16 has no kernel output
    path (the seed fails on it); it is rounded with RNE in both modes.
    The input tensor is never modified.
    """
    if emulate not in ("exact", "seed"):
        raise ValueError(f"emulate={emulate!r}: expected 'exact' or 'seed'")
    if not x.is_floating_point():
        raise TypeError(f"dhif8 needs a floating-point tensor, got {x.dtype}")
    xf = x.detach().to(F32)
    if amax is None:
        if x.numel() == 0:
            return x.detach().clone()
        amax_t = xf.abs().amax()
    else:
        amax_t = torch.as_tensor(amax, dtype=F32, device=x.device).detach()
    amax_t = torch.where(amax_t == 0, ZERO_AMAX, amax_t)  # step 1
    scaler = torch.tensor(scale_position, dtype=F32, device=x.device) / amax_t
    y = xf * scaler  # step 2
    r = hif8_round(y, underflow="flush", overflow="saturate")  # steps 3-6
    if emulate == "seed":
        # The kernel's comparisons are false for NaN, so its zero mask applies; Inf
        # takes the saturation branch without its sign (§6, read from source).
        r = torch.where(torch.isnan(y), 0.0, r)
        r = torch.where(torch.isinf(y), HIF8_MAX, r)
    out = r / scaler  # step 7
    if emulate == "seed" and x.dtype == torch.bfloat16:
        return _bf16_round_half_away(out)
    return out.to(x.dtype)
