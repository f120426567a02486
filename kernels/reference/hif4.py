"""Pure-PyTorch reference for HiF4 as published (``hif4_paper``; spec formats-hifloat.md §5.6).

Reconstructed from Huawei's public pto-isa HiF4 golden generators (the paper text was not
available; spec §9-1). A unit is 64 elements: one unsigned E6M2 scale Ea per 64, one
exponent bit Eb per 8, one exponent bit Ec per 4, and S1P2 elements (magnitudes
{0, 0.25, ..., 1.75}). The conversion is BF16 -> HiF4 -> BF16 with the hardware's bf16
roundings of the reciprocal and of the products, reproduced here by rounding float32
intermediates to bf16 with RNE.
"""

from __future__ import annotations

import torch

from ._bits import F32, exp2i, floor_log2
from .hifx import _from_groups, _to_groups

BF16 = torch.bfloat16

#: E6M2 level-1 scale: exponent range [-48, 15] (bias 48); the largest usable code is
#: (e = 15, m = 2) = 1.5·2^15 = 49152 because the top code is reserved (§5.6).
E6M2_EMIN, E6M2_EMAX, E6M2_MMAX_AT_EMAX = -48, 15, 2
#: Largest element magnitude code: 7 quarters = 1.75.
ELEM_KMAX = 7.0


def _bf(t: torch.Tensor) -> torch.Tensor:
    """bf(·) of §5.6: round a float32 tensor to bf16 (RNE) and keep it as float32."""
    return t.to(BF16).to(F32)


def _e6m2(sf: torch.Tensor) -> torch.Tensor:
    """§5.6 step 2: the E6M2 value Ea of sf >= 0 (float32), 0 where it flushes."""
    e = floor_log2(sf)
    # (sf / 2^e - 1)·4 is exact in float32 (sf is a bf16 value); RNE on the 2-bit mantissa.
    m = torch.round((sf * exp2i(-e) - 1) * 4)
    carry = m == 4
    e = torch.where(carry, e + 1, e)
    m = torch.where(carry, 0.0, m)
    over = (e > E6M2_EMAX) | ((e == E6M2_EMAX) & (m > E6M2_MMAX_AT_EMAX))
    e = torch.where(over, E6M2_EMAX, e)
    m = torch.where(over, float(E6M2_MMAX_AT_EMAX), m)
    ea = (1 + m / 4) * exp2i(e)
    # Code (e = -48, m = 0) decodes as zero, and below 2^-48 (incl. Ma = 0) the
    # reference is undefined: the emulation flushes the group.
    flush = (e < E6M2_EMIN) | ((e == E6M2_EMIN) & (m == 0))
    return torch.where(flush, 0.0, ea)


def quantize_hif4_paper_ref(x: torch.Tensor, *, axis: int = -1) -> torch.Tensor:
    """Fake-quantize ``x`` to paper HiF4 in 64-groups along ``axis`` (spec §5.6).

    The input is rounded to bf16 first (the conversion is defined on bf16); the result
    is returned in x's dtype. A ragged tail is zero-padded to 64 and cropped, which
    changes no maximum. The sources define no NaN/Inf behaviour; here a NaN input
    gives NaN in its 64-group and ±Inf saturates like any out-of-range value (the
    goldens hold finite inputs only). The input tensor is never modified.
    """
    if not x.is_floating_point():
        raise TypeError(f"hif4_paper needs a floating-point tensor, got {x.dtype}")
    if x.dim() == 0:
        raise ValueError("hif4_paper needs at least one dimension to group along")
    axis = axis % x.dim()
    g, length = _to_groups(_bf(x.detach().to(F32)), axis)  # [..., G, 8, 2, 4]
    a = g.abs()
    mc = a.amax(dim=-1, keepdim=True)  # per 4:  [..., G, 8, 2, 1]
    mb = mc.amax(dim=-2, keepdim=True)  # per 8:  [..., G, 8, 1, 1]
    ma = mb.amax(dim=-3, keepdim=True)  # per 64: [..., G, 1, 1, 1]
    # Step 2: sf = bf(Ma · bf(1/7)); products of two bf16 values are exact in float32,
    # so _bf rounds once. bf(1/7) itself: float32 1/7 has no bf16 tie to break wrongly.
    ea = _e6m2(_bf(ma * _bf(torch.tensor(1 / 7, dtype=F32, device=x.device))))
    zero = ea == 0
    # Step 3: rA = bf(1/Ea) (1 where Ea = 0, only to keep the masked lanes finite).
    ra = _bf(1 / torch.where(zero, 1.0, ea))
    eb = (_bf(mb * ra) >= 4).to(F32)  # step 4
    ec = (_bf(mc * ra) * exp2i(-eb.to(torch.int32)) >= 2).to(F32)  # step 5 (exact 2^-Eb)
    shift = eb + ec
    # Step 6: scale = rA·2^-(Eb+Ec) (a power-of-two product, exact), t = bf(x · scale);
    # the element is the nearest quarter, ties to the even code (RNE), saturated at 1.75.
    pow_shift = exp2i(shift.to(torch.int32))
    t = _bf(g * (ra / pow_shift))
    elem = torch.copysign(torch.round(t.abs() * 4).clamp(max=ELEM_KMAX) / 4, t)
    # Step 7: element · Ea · 2^Eb · 2^Ec; every product fits bf16 exactly.
    out = torch.where(zero, 0.0, elem * ea * pow_shift)
    # NaN poisons Ma and so the whole group (the masked `where` above would hide it).
    out = torch.where(torch.isnan(ma), float("nan"), out)
    return _from_groups(out, length, axis).to(x.dtype)
