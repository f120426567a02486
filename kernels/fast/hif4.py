"""Fast ``hif4_paper`` kernel (HiF4 as published; spec formats-hifloat.md §5.6), bit for
bit equal to ``kernels.reference.hif4``, on any axis.

Layout as in the HiFX kernel (``hifx.py``): |bf(x)| in a zero-padded float32 scratch
with the axis last, micro-group maxima Mc from ``max_pool1d``, group maxima Ma from a
second pool over those, and one per-micro-group factor, 2^-(Eb+Ec), spread over its 4
lanes as a bf16 bit pattern (int64 times 0x0001000100010001) and widened to float32.
Per-group factors broadcast along the 64 elements of a group, which is cheap.

Steps 1-5 (small tensors):

* Ea = E6M2(bf(Ma·bf(1/7))) (step 2): RNE to 2 mantissa bits on the bit pattern
  (carries go into the exponent, as the reference's m = 4 -> e + 1), saturated at
  1.5·2^15, flushed below 1.25·2^-48 (the codes at or under (e = -48, m = 0) decode as
  zero). ``test_fast_hif.py`` checks it against the reference on every bf16 value.
* Eb = [bf(Mb·rA) >= 4], Ec = [bf(Mc·rA)·2^-Eb >= 2]. bf(y) >= 2^p exactly when
  y >= 2^p·(1 - 2^-9), the RNE midpoint below 2^p (a tie goes to the even 2^p); for
  y >= 0 that compares bit patterns, so each decision is the sign bit of an int32
  difference. Mb·rA is the larger of Mc·rA and its sibling micro-group's (rounding is
  monotonic); the siblings are the two int32 halves of one int64, swapped by shifts.

Steps 6-7 (whole piece): the reference rounds to bf16 the product of the bf16 values
|x| and rA·2^-(Eb+Ec); (|x|·4rA)·2^-(Eb+Ec) is 4 times the same exact product (both
factors bf16 values, then a power of two), except where it is below 2^-126, where
both give the element code 0. So t = bf(|x|·4rA·2^-(Eb+Ec)) is |x|·scale·4 rounded as
the reference rounds it, k = min(RNE(t), 7), and |out| = (k·Ea/4)·2^(Eb+Ec), the
reference's exact elem·Ea·2^Eb·2^Ec (at most 6 significant bits; 0 where Ea = 0).

Signs: the reference gives +0 in a whole Ea = 0 group and the sign of x elsewhere, so
the sign bits of x are ORed in through a per-group mask. Rows holding a NaN (the
reference makes its group NaN) are rare and recomputed by the reference kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..formats import FormatSpec
from ..reference.hif4 import BF16, E6M2_EMAX, E6M2_EMIN, E6M2_MMAX_AT_EMAX, ELEM_KMAX, _bf, quantize_hif4_paper_ref
from ..reference.hifx import GROUP, LANE
from . import register
from ._ops import F32, I32, SIGN16, SIGN32, scratch

#: bf(1/7) of §5.6 step 2.
_BF_ONE_SEVENTH = torch.tensor(1 / 7, dtype=F32).to(BF16).item()
#: The largest E6M2 value, (1 + 2/4)·2^15, and the smallest non-zero one, 1.25·2^-48.
_E6M2_MAX = (1 + E6M2_MMAX_AT_EMAX / 4) * 2.0**E6M2_EMAX
_E6M2_MIN = 1.25 * 2.0**E6M2_EMIN
#: Four copies of a value below 2^15 as int16 lanes of one int64.
_FOUR_INT16 = 0x0001_0001_0001_0001
#: float32 bit pattern of 4·(1 - 2^-9): bf(y) >= 4 exactly when y is at least this.
_AT_LEAST_4 = int(torch.tensor(4 * (1 - 2.0**-9), dtype=F32).view(I32))


def e6m2(sf: torch.Tensor) -> torch.Tensor:
    """Ea = E6M2(sf) for float32 sf >= 0 (§5.6 step 2), as in the reference's ``_e6m2``.

    RNE to 2 mantissa bits on the bit pattern: add 2^20 - 1 plus the lowest kept bit,
    clear the 21 bits below. Below 2^-126 the pattern is not a normal float, but then
    the result stays below 1.25·2^-48 and is flushed either way. (NaN gives NaN where
    the reference gives 49152; the kernel sends NaN groups to the reference.)
    """
    bits = sf.view(I32)
    r = (bits + ((1 << 20) - 1) + ((bits >> 21) & 1)) & -(1 << 21)
    ea = r.view(F32).clamp_(max=_E6M2_MAX)
    return torch.where(ea < _E6M2_MIN, 0.0, ea)


def _spread4(bits16: torch.Tensor, shape: torch.Size, name: str) -> torch.Tensor:
    """int32 bf16 bit patterns [rows, ..., k] (each in [0, 2^15)) repeated 4 times each, as
    a float32 scratch of ``shape`` ([..., 4k]): times 0x0001000100010001 is four int16
    copies side by side in one int64 (all equal, so byte order does not matter)."""
    wide = bits16.to(torch.int64).mul_(_FOUR_INT16).view(BF16).view(shape)
    return scratch(name, shape, F32).copy_(wide)


def _sibling_max(m4: torch.Tensor) -> torch.Tensor:
    """max(m, m of the other micro-group of the sub-block) for float32 m4 >= 0 [..., 16·G]."""
    pair = m4.view(torch.int64)
    other = (pair >> 32).bitwise_or_(pair << 32).view(I32)
    return torch.maximum(m4.view(I32), other, out=other).view(F32)


def _supports(spec: FormatSpec) -> bool:
    return True


def _kernel(
    x: torch.Tensor, spec: FormatSpec, amax: torch.Tensor | None, out: torch.Tensor | None = None
) -> torch.Tensor:
    if x.dim() == 0 or x.numel() == 0:  # the reference raises, or returns an empty tensor
        return quantize_hif4_paper_ref(x, axis=spec["axis"])
    axis = spec["axis"] % x.dim()
    xm = x.movedim(axis, -1)
    length = xm.shape[-1]
    ragged = length % GROUP != 0
    if ragged:  # zero padding changes no maximum; the padded outputs are cropped below
        xm = F.pad(xm, (0, -length % GROUP))
        ot = torch.empty(xm.shape, dtype=x.dtype)
    else:
        if out is None:
            out = torch.empty(x.shape, dtype=x.dtype)
        ot = out.movedim(axis, -1)
    padded = xm.shape[-1]
    rows, groups = xm.numel() // padded, padded // GROUP
    per_group = (*xm.shape[:-1], groups, GROUP)

    # |bf(x)| (the conversion is defined on bf16; RNE from float32/float16), in float32:
    # bf16 arithmetic is several times slower than float32 here.
    a = scratch("hif4_abs", xm.shape, F32)
    t16 = scratch("hif4_bf16", xm.shape, BF16)
    a.copy_(xm if xm.dtype == BF16 else t16.copy_(xm)).abs_()

    # Steps 1-5 on small tensors: Mc per micro-group [rows, G, 16], Ma per group [rows, G, 1].
    mc = F.max_pool1d(a.view(rows, 1, padded), LANE, LANE)
    ma = F.max_pool1d(mc, GROUP // LANE, GROUP // LANE).view(rows, groups, 1)
    mc = mc.view(rows, groups, -1)
    ea = e6m2(_bf(ma * _BF_ONE_SEVENTH))
    zero = ea == 0
    ra = _bf(1 / torch.where(zero, 1.0, ea))
    # Eb and Ec (module docstring): (bits - threshold) >> 31 is 0 where y >= threshold and
    # -1 where not, i.e. Eb - 1 and Ec - 1. Ec's threshold 2^(1+Eb)·(1 - 2^-9) is Eb's,
    # 4·(1 - 2^-9), times 2^(Eb-1): (Eb - 1) << 23 on the bit pattern.
    uc = mc.mul_(ra)  # Mc·rA
    eb = (_sibling_max(uc).view(I32) - _AT_LEAST_4) >> 31
    ec = (uc.view(I32) - _AT_LEAST_4).sub_(eb << 23) >> 31
    # 2^-(Eb+Ec) per micro-group as a bf16 pattern (1.0 is 0x3F80), spread over its lanes.
    pw = _spread4((0x3F80 - 256) - eb.add_(ec).bitwise_left_shift_(7), xm.shape, "hif4_pw")

    # Steps 6-7 on the whole piece (module docstring): t = bf(|x|·4rA·2^-(Eb+Ec)),
    # k = min(RNE(t), 7), |out| = (k·Ea/4)·2^(Eb+Ec).
    by_group, pw, one_per_group = a.view(per_group), pw.view(per_group), (*per_group[:-1], 1)
    by_group.mul_((ra * 4).view(one_per_group)).mul_(pw)
    a.copy_(t16.copy_(a)).round_().clamp_(max=ELEM_KMAX)
    by_group.mul_((ea / 4).view(one_per_group)).div_(pw)

    # The sign of x, except in Ea = 0 groups (+0 there, as the reference).
    if ot.dtype == F32:
        itype, sign_bit = I32, SIGN32
    else:
        itype, sign_bit = torch.int16, SIGN16
        a = t16.copy_(a) if ot.dtype == BF16 else a.to(ot.dtype)  # exact in bf16; RNE to fp16
    keep = torch.where(zero, 0, sign_bit).to(itype).view(one_per_group)
    obits = ot.view(itype).view(per_group)
    torch.bitwise_and(xm.view(itype).view(per_group), keep, out=obits)
    obits.bitwise_or_(a.view(itype).view(per_group))

    nan_groups = torch.isnan(ma)
    if bool(nan_groups.any()):  # a NaN makes its group NaN: those rows go to the reference
        rows_nan = nan_groups.view(*xm.shape[:-1], groups).any(-1)
        ot[rows_nan] = quantize_hif4_paper_ref(xm[rows_nan])
    if ragged:
        cropped = ot[..., :length].movedim(-1, axis)
        return cropped.contiguous() if out is None else out.copy_(cropped)
    return out


register("hif4_paper", _supports, _kernel)
