"""Fast HiF8 kernels: ``hif8`` (every scale / variant / underflow option; overflow
``saturate`` or ``inf``) and ``dhif8``, bit for bit equal to ``kernels.reference``.

The reference rounds with a 256-entry table indexed by the float32 exponent
(``_rounding_tables``) and fixes zeros, overflow and Inf with ``torch.where``; both are
slow here. This module computes the same thing with arithmetic (spec formats-hifloat.md
§3.2, step numbers below):

* Steps 5-7 (:func:`_round_magnitude`): for a normal float32 magnitude ``a`` in binade
  E, keeping w mantissa bits with ties away is ``(bits + h) & -2h`` with h = 2^(22-w),
  half the lowest kept bit, as in the reference. Instead of looking h up in a table,
  it comes from E by arithmetic: w = 3 - L, where L counts how many of |E| >= 4, 8,
  16 hold, so 2^(L+1) = clamp(2^floor(log2 |E|), 2, 16); 2^floor(log2 |E|) is
  float(E) with its sign and mantissa bits cleared (0 for E = 0), and
  h = 2^(L+1)·2^18 is exact in float32 and converts exactly to int32. (Checked against
  the reference on every float32 below 2^19, plus Inf and NaN, in every mode.)
* Steps 2-3: the magnitude is clamped to ``[2^-22, top]`` first (as the reference
  does), so every value is a normal float32 in a HiF8 binade. Zeros and the signs come
  back through one multiply by ``sign(y)``, which is +1, -1, or +0 for both zeros
  (HiF8 has one zero). Mode ``flush`` multiplies that sign by
  ``min(floor(|y|·2^23), 1)``, which is 0 exactly for |y| < 2^-23.
* Step 1: NaN is carried by arithmetic. ``torch.sign`` gives 0 for NaN, so where NaN
  can occur ``sign + 0·a`` (``add_(a, alpha=0)``) is taken after the clamp (which
  keeps NaN and makes ±Inf finite): it is NaN exactly for NaN, and it also turns the
  -0 of ``-1·0`` (mode flush) into +0.
* Step 4: ``saturate`` is the clamp at 32768 ([28672, 40960) rounds to 32768 anyway).
  ``inf`` clamps at the float just below 65536 instead, so the E = 15 rounding (w = 1)
  sends [32768, 40960) to 32768 and everything from 40960 up (±Inf included) to 49152
  or 65536; multiplying by c = 1.5·2^112 overflows to Inf exactly for those two
  values (32768·c = 1.5·2^127 is finite), and dividing by c gives every finite value
  back exactly (HiF8 values have at most 4 significant bits, times 1.5 at most 5).
* ``variant=paper`` keeps ±Inf inputs as ±Inf (§3.4): with overflow ``inf`` that is
  already so; with ``saturate`` the kernel adds y·2^-378, which is ±0 for every finite
  y and ±Inf for ±Inf.

The ``scale=tensor`` recipe (§4.1) and ``dhif8`` (§6) wrap the element rule in the
reference's own float32 operations: s = k / (amax + 2^-23) (or scale_position /
amax), y = x·s, out = q / s rounded once to the output dtype (``torch.div`` with a
lower-precision ``out=`` computes in float32 and rounds on store, as ``.to()`` does).
With a finite per-tensor amax and a finite positive s no y can be NaN, so the NaN
pass is skipped there.

``overflow=tof8`` (two thresholds) and ``emulate=seed`` are not covered
(``supports`` says no; the cpu-fast backend then runs the reference on pieces).
"""

from __future__ import annotations

import math

import torch

from ..formats import FormatSpec
from ..reference.dhif8 import ZERO_AMAX
from ..reference.hif8 import _RECIPE_EPS, HIF8_MAX, HIF8_MIN
from . import register
from ._ops import F32, I32, scratch

_OUT_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

#: Clamp tops: overflow "saturate" clamps at 2^15; "inf" at the float below 2^16 (see docstring).
_TOP = {"saturate": HIF8_MAX, "inf": 65536.0 - 2.0**-8}
#: 32768·c is finite, 49152·c overflows (module docstring, step 4).
_INF_FACTOR = 1.5 * 2.0**112


def _round_magnitude(a: torch.Tensor) -> torch.Tensor:
    """§3.2 steps 5-7 in place on float32 magnitudes in [2^-22, 2^16) (NaN: any value).

    Returns ``a``'s storage reinterpreted as the rounded float32 values.
    """
    bits = a.view(I32)
    e = torch.bitwise_right_shift(bits, 23, out=scratch("hif8_e", a.shape, I32)).sub_(127)  # E
    # 2^(L+1) = clamp(2^floor(log2 |E|), 2, 16): float(E) with its sign and mantissa
    # cleared is 2^floor(log2 |E|) (0 for E = 0). Conversions in place (same element size).
    p = e.view(F32).copy_(e)
    p.view(I32).bitwise_and_(0x7F800000)
    half = e.copy_(p.clamp_(2.0, 16.0).mul_(2.0**18))  # 2^(19+L): half the lowest kept bit
    # Keep w = 3 - L mantissa bits: add half of the lowest kept bit, clear the bits below.
    bits.add_(half)
    return bits.bitwise_and_(half.mul_(-2)).view(F32)


def _element(
    y: torch.Tensor, underflow: str, overflow: str, keep_inf: bool, nan_free: bool, out: torch.Tensor | None = None
) -> torch.Tensor:
    """The §3.2 element rule on the float32 values ``y``.

    ``y`` is overwritten unless it is the float32 input itself (then a scratch buffer
    takes the magnitudes). Returns float32 q (a scratch buffer), or writes q, rounded
    to out's dtype, into ``out`` and returns that. ``nan_free``: the caller knows y holds
    no NaN (the NaN pass is skipped). ``keep_inf``: ±Inf inputs give ±Inf whatever the
    overflow mode (variant paper).
    """
    # ±1; +0 for ±0 (step 2: one zero); 0 for NaN (carried below).
    sign = torch.sign(y, out=scratch("hif8_sign", y.shape, F32))
    inf_part = None
    if keep_inf:  # ±Inf stays, every finite value becomes ±0
        inf_part = torch.mul(y, 2.0**-126, out=scratch("hif8_inf", y.shape, F32)).mul_(2.0**-126).mul_(2.0**-126)
    a = torch.abs(y, out=scratch("hif8_y", y.shape, F32))
    if underflow == "flush":
        # Step 3: 0 where a < 2^-23, else 1 (NaN for NaN, 1 for Inf).
        sign.mul_(torch.mul(a, 2.0**23, out=scratch("hif8_flush", y.shape, F32)).floor_().clamp_(max=1.0))
    a.clamp_(HIF8_MIN, _TOP[overflow])  # steps 3-4; NaN passes, ±Inf becomes finite
    if underflow == "flush" or not nan_free:
        sign.add_(a, alpha=0)  # NaN where a is NaN; -0 (flush of a negative) becomes +0
    q = _round_magnitude(a)
    if overflow == "inf":
        q.mul_(_INF_FACTOR).div_(_INF_FACTOR)  # 49152 and 65536 -> Inf, the rest unchanged
    if inf_part is None:
        return torch.mul(q, sign, out=q if out is None else out)  # step 8
    q.mul_(sign)
    return torch.add(q, inf_part, out=q if out is None else out)


def _scaled(x: torch.Tensor, s: torch.Tensor | None) -> torch.Tensor:
    """fl32(x) (times the float32 scalar ``s``); scratch that may be overwritten, or x itself
    when it is float32 and unscaled (``_element`` does not write into its argument then)."""
    if s is None and x.dtype == F32:
        return x
    y = scratch("hif8_y", x.shape, F32)
    if s is None:
        return y.copy_(x)
    if x.dtype == F32:
        return torch.mul(x, s, out=y)
    return y.copy_(x).mul_(s)


def _finite_positive(amax: torch.Tensor, s: torch.Tensor) -> bool:
    """amax finite and 0 < s < Inf: then every x·s is finite or ±Inf, never NaN."""
    a, v = float(amax), float(s)
    return math.isfinite(a) and 0.0 < v < math.inf


def _divide(q: torch.Tensor, s: torch.Tensor, dtype: torch.dtype, out: torch.Tensor | None) -> torch.Tensor:
    """fl32(q / s) rounded once to ``dtype``, into ``out`` or a new tensor."""
    return torch.div(q, s, out=torch.empty(q.shape, dtype=dtype) if out is None else out)


def _hif8_modes(spec: FormatSpec) -> tuple[str, str]:
    paper = spec["variant"] == "paper"
    underflow = spec["underflow"] if spec["underflow"] != "default" else ("flush" if paper else "min")
    overflow = spec["overflow"] if spec["overflow"] != "default" else ("inf" if paper else "saturate")
    return underflow, overflow


def _hif8_supports(spec: FormatSpec) -> bool:
    return spec["emulate"] == "exact" and _hif8_modes(spec)[1] in _TOP


def _hif8_kernel(
    x: torch.Tensor, spec: FormatSpec, amax: torch.Tensor | None, out: torch.Tensor | None = None
) -> torch.Tensor:
    underflow, overflow = _hif8_modes(spec)
    paper = spec["variant"] == "paper"
    out_option = spec["out"]
    if spec["scale"] == "tensor" and not paper:
        # §4.1: the seed's quant_hif8 recipe with the whole tensor's amax.
        out_dtype = torch.bfloat16 if out_option == "default" else _OUT_DTYPES.get(out_option, x.dtype)
        if amax is None:
            amax = x.abs().amax().to(F32)
        s = torch.tensor(spec["k"], dtype=F32) / (amax + _RECIPE_EPS)
        nan_free = _finite_positive(amax, s)
        y = _scaled(x, s)
        q = _element(y, underflow, overflow, False, nan_free)
        return _divide(q, s, out_dtype, out)
    out_dtype = x.dtype if out_option in ("default", "input") else _OUT_DTYPES[out_option]
    keep_inf = paper and overflow != "inf"
    if out is None:
        out = torch.empty(x.shape, dtype=out_dtype)
    return _element(_scaled(x, None), underflow, overflow, keep_inf, False, out)


def _dhif8_supports(spec: FormatSpec) -> bool:
    return spec["emulate"] == "exact"


def _dhif8_kernel(
    x: torch.Tensor, spec: FormatSpec, amax: torch.Tensor | None, out: torch.Tensor | None = None
) -> torch.Tensor:
    # §6 as quantize_dhif8_ref computes it: amax 0 -> 2^-64, scaler = scale_position / amax,
    # y = x·scaler, element rule with flush and saturate (mode flush always carries NaN).
    if spec["amax"] is not None:
        amax = torch.tensor(spec["amax"], dtype=F32)
    elif amax is None:
        amax = x.abs().amax().to(F32)
    if float(amax) == 0.0:
        amax = torch.tensor(ZERO_AMAX, dtype=F32)
    scaler = torch.tensor(spec["scale_position"], dtype=F32) / amax
    q = _element(_scaled(x, scaler), "flush", "saturate", False, False)
    return _divide(q, scaler, x.dtype, out)


register("hif8", _hif8_supports, _hif8_kernel)
register("dhif8", _dhif8_supports, _dhif8_kernel)
