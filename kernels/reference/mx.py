"""Reference MX kernel: the seed's ``_quantize_mx`` (spec formats-mx.md §2), in pure PyTorch.

:func:`quantize_mx_ref` quantizes a tensor to an MX format and dequantizes it back:
every block of elements along the blocked axes shares one power-of-two scale
``X = 2^s`` (an E8M0-like exponent), each element is rounded to the element
format (``MX_ELEMENTS``) after dividing by ``X``, saturated at the element's
``max_norm`` and multiplied back by ``X``.

Two evaluation modes:

- ``emulate="exact"`` (default, the golden ``expected_exact``): the seed's
  algorithm in float32. bf16/fp16 inputs are upcast and the result is rounded
  back (RNE). Shared and private exponents come from the float32 bits
  (``_bits.floor_log2``), never from a float ``log2`` (spec §2.8-b), and the
  tie rule is applied exactly (§2.8-c). Seed bugs are fixed: with no axes every
  element gets its own scale from ``|x|`` (§2.2-4).
- ``emulate="seed"`` (golden ``expected``): the seed's own arithmetic, op for op,
  in the input dtype, with torch's CPU float32 ``log2`` modelled by
  ``_bits.seed_log2_f32`` so the artifacts of §2.8 are reproduced on any device.

Options beyond the seed's defaults: ``round`` (nearest = ties away, even,
floor = toward zero, dither), ``scale`` (floor, ceil, rceil, even, carry: the
rules of §11.2), ``minus_exp`` (an int or the auto modes of §2.3),
``scale_bits``, ``shared_exp_method``, ``flush_fp32_subnorms``, any set of
axes and any block length (0: one scale over the whole axes).

The module also holds the small helpers that the QType and TMX reference
kernels share: dtype handling, zero padding of one axis, the seed ``log2`` in a
given dtype, exact powers of two and exponent fields from float32 bits
(``pow2``, ``biased_exponent``), and float32 rounding of threshold constants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ._bits import (
    F32,
    I32,
    exp2i,
    floor_log2,
    round_half_away,
    round_half_even,
    round_toward_zero,
    seed_log2_f32,
    seed_round_half_away,
)

__all__ = ["MXElement", "MX_ELEMENTS", "resolve_mx_element", "quantize_mx_ref", "exact_block_scale"]

EMULATE_MODES = ("exact", "seed")
ROUND_MODES = ("nearest", "even", "floor", "dither")
SCALE_RULES = ("floor", "ceil", "rceil", "even", "carry")
AUTO_MINUS_EXP = {"auto": 1, "auto-2": 2, "auto-reverse": -1, "auto-fix": 1}

#: Seed ``FP32_MIN_NORMAL``: ``_shared_exponents`` adds it to an all-zero block's
#: amax before the log, so such a block gets E = -126 (§2.3 step 2).
ZERO_BLOCK_EXP = -126

#: Smallest float32 >= sqrt(2). A float32 mantissa f in [1, 2) has 24 significant
#: bits, f = M / 2^23, and sqrt(2)·2^23 = 11863283.2 is not an integer, so
#: ``f >= sqrt(2)`` holds exactly when ``M >= 11863284``, i.e. ``f >= SQRT2_UP``.
#: This decides the carry rule ``round(log2 a)`` exactly without squaring in float64.
SQRT2_UP = math.ceil(math.sqrt(2.0) * 2**23) / 2**23


# --------------------------------------------------------------------------- elements


@dataclass(frozen=True)
class MXElement:
    """One MX element format with the seed's parameters (spec §2.1).

    ``mbits`` follows the seed: it counts the sign bit and the implicit bit, so
    the element keeps ``mbits - 2`` explicit mantissa (or fraction) bits.
    """

    name: str
    ebits: int
    mbits: int
    emax: int
    emin: int
    max_norm: float
    is_int: bool

    @property
    def man_bits(self) -> int:
        """Explicit mantissa bits (fraction bits for the integer elements)."""
        return self.mbits - 2

    @property
    def max_mant(self) -> float:
        """``max_norm / 2^emax``, in [1, 2): the significand of the largest element."""
        return self.max_norm / 2.0**self.emax

    @property
    def even_threshold(self) -> float:
        """``2 - 2^-(m+1)``: a significand at or above it rounds up to 2 at m bits (scale=even)."""
        return 2.0 - 2.0 ** -(self.man_bits + 1)


def _element(name: str, ebits: int, mbits: int, emax: int) -> MXElement:
    # §2.1: max_norm = 2^emax·(2^(mbits-1) - 1)/2^(mbits-2), except E4M3 whose
    # top code S.1111.111 is NaN, so its largest value is 1.75·2^8 = 448.
    if name == "fp8_e4m3":
        max_norm = 2.0**emax * 1.75
    else:
        max_norm = 2.0**emax * float(2 ** (mbits - 1) - 1) / 2.0 ** (mbits - 2)
    # emin = 2 - 2^(ebits-1) is the smallest normal exponent; integers have no
    # private exponent (p = 0, §2.4 step 1), so 0 is stored and never used.
    emin = 2 - 2 ** (ebits - 1) if ebits > 0 else 0
    return MXElement(name, ebits, mbits, emax, emin, max_norm, ebits == 0)


MX_ELEMENTS: dict[str, MXElement] = {
    e.name: e
    for e in (
        _element("fp8_e4m3", 4, 5, 8),
        _element("fp8_e5m2", 5, 4, 15),
        _element("fp6_e3m2", 3, 4, 4),
        _element("fp6_e2m3", 2, 5, 2),
        _element("fp4_e2m1", 2, 3, 2),
        _element("int8", 0, 8, 0),
        _element("int4", 0, 4, 0),
        _element("int2", 0, 2, 0),
        _element("fp16", 5, 12, 15),
        _element("bf16", 8, 9, 127),
    )
}

_ALIASES = {"fp4": "fp4_e2m1", "float16": "fp16", "bfloat16": "bf16"}


def resolve_mx_element(name: str | MXElement) -> MXElement:
    """The element for a name, case-insensitive, accepting the seed aliases (§2.1)."""
    if isinstance(name, MXElement):
        return name
    key = str(name).lower()
    key = _ALIASES.get(key, key)
    if key not in MX_ELEMENTS:
        raise ValueError(f"unknown MX element format {name!r}; known: {sorted(MX_ELEMENTS) + sorted(_ALIASES)}")
    return MX_ELEMENTS[key]


# --------------------------------------------------------------------------- shared helpers


def check_emulate(emulate: str) -> None:
    if emulate not in EMULATE_MODES:
        raise ValueError(f"emulate must be one of {EMULATE_MODES}, got {emulate!r}")


def compute_dtype(x: torch.Tensor, emulate: str) -> torch.dtype:
    """Exact mode always computes in float32; seed mode in the input dtype, like the seed (§2.7)."""
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point tensor, got {x.dtype}")
    return x.dtype if emulate == "seed" else F32


def seed_log2(a: torch.Tensor) -> torch.Tensor:
    """torch's CPU ``log2`` in ``a``'s dtype as the seed saw it (§2.8-b).

    float32: ``fl32(log2_f64(a))``. bf16/fp16: that float32 value rounded once
    more to the tensor dtype, as torch's reduced-precision ``log2`` does.
    float64: the float64 ``log2`` itself.
    """
    if a.dtype == torch.float64:
        return torch.log2(a)
    return seed_log2_f32(a).to(a.dtype)


def pad_axis_to_multiple(x: torch.Tensor, axis: int, multiple: int) -> torch.Tensor:
    """Zero-pad ``x`` at the end of ``axis`` (non-negative) to a multiple of ``multiple``.

    An axis shorter than ``multiple`` becomes exactly ``multiple`` long (§2.2). Returns
    ``x`` itself when no padding is needed (callers never write to it).
    """
    extra = (-x.shape[axis]) % multiple
    if extra == 0:
        return x
    pad = [0, 0] * (x.ndim - 1 - axis) + [0, extra]  # F.pad lists dims from the last one backwards
    return F.pad(x, pad)


def f32_ceil(v: float) -> float:
    """The smallest float32 >= ``v`` (a Python float), so ``a < v`` ⟺ ``a < f32_ceil(v)``
    and ``a >= v`` ⟺ ``a >= f32_ceil(v)`` hold exactly for every float32 ``a``.
    Evaluated once per call on a CPU scalar constant, never on data."""
    t = torch.tensor(v, dtype=torch.float64)
    f = t.to(F32)
    if f.to(torch.float64) < t:
        f = torch.nextafter(f, torch.tensor(math.inf, dtype=F32))
    return float(f)


def pow2(e: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """``2^e`` exactly as float32 for an int32 tensor ``e`` whose values lie in [lo, hi].

    When that whole range is normal the bits are built directly (two integer
    ops on the full tensor); otherwise ``_bits.exp2i`` handles the subnormal,
    zero and Inf results. Callers clamp ``e`` to the range they pass.
    """
    if -126 <= lo and hi <= 127:
        return ((e + 127) << 23).view(F32)
    return exp2i(e)


def biased_exponent(a: torch.Tensor) -> torch.Tensor:
    """``(exponent field of float32 a) - 127`` as int32, sign ignored.

    Equals ``floor_log2(a)`` for normal ``a``; gives -127 for zero and subnormals
    and 128 for Inf/NaN. Cheaper than ``floor_log2`` where callers clip the result
    at or above -126 anyway, or know ``a`` is normal.
    """
    return ((a.view(I32) >> 23) & 0xFF) - 127


def _normalize_axes(axes, ndim: int) -> list[int]:
    if axes is None:
        return []
    if isinstance(axes, int):
        axes = [axes]
    out = []
    for a in axes:
        if a is None:
            continue
        a = int(a)
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} out of range for a {ndim}-D tensor")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"repeated axis in {axes!r}")
    return sorted(out)


# --------------------------------------------------------------------------- blocking (§2.2)


@dataclass(frozen=True)
class _Blocking:
    """How a tensor is tiled: original and padded shapes, the blocked axes and the dims to reduce."""

    orig_shape: tuple[int, ...]
    padded_shape: tuple[int, ...]
    reduce_dims: tuple[int, ...]
    axes: tuple[int, ...]


def _to_blocks(x: torch.Tensor, axes: list[int], block: int) -> tuple[torch.Tensor, _Blocking]:
    """Zero-pad each blocked axis and split it into (n_blocks, block).

    With block > 0 an axis of (padded) length n becomes the two dims
    (n/block, block) and the block dims are reduced; with block == 0 the listed
    axes themselves are reduced (one scale over their whole extent).
    """
    orig = tuple(x.shape)
    if block == 0 or not axes:
        return x, _Blocking(orig, orig, tuple(axes), tuple(axes))
    for a in axes:
        x = pad_axis_to_multiple(x, a, block)
    padded = tuple(x.shape)
    view, reduce_dims = [], []
    for d, n in enumerate(padded):
        if d in axes:
            view += [n // block, block]
            reduce_dims.append(len(view) - 1)
        else:
            view.append(n)
    return x.reshape(view), _Blocking(orig, padded, tuple(reduce_dims), tuple(axes))


def _from_blocks(y: torch.Tensor, b: _Blocking) -> torch.Tensor:
    """Undo :func:`_to_blocks`: back to the padded shape, then slice the padding off."""
    y = y.reshape(b.padded_shape)
    for a in b.axes:
        if y.shape[a] != b.orig_shape[a]:
            y = y.narrow(a, 0, b.orig_shape[a])
    return y


# --------------------------------------------------------------------------- exact mode


def _exact_shared_exponent(amax: torch.Tensor, elem: MXElement, scale: str, minus_exp) -> torch.Tensor:
    """Block exponent E (int32) from the exact exponent of amax (§2.3 step 2, §11.2 rules).

    amax is float32, >= 0, finite here or masked later. An all-zero block uses
    amax = 2^-126, like the seed, so every rule gives E = -126 for it.
    """
    e = torch.where(amax == 0, 2.0**ZERO_BLOCK_EXP, amax)
    fl = floor_log2(e)
    if scale == "floor" and minus_exp is None:
        return fl
    # Significand of amax in [1, 2): an exact power-of-two division.
    frac = e / exp2i(fl)
    if minus_exp is not None:
        # CEIL: ceil(log2 a) = floor + (a is not a power of two); then the seed offset.
        return fl + (frac > 1).to(I32) - minus_exp
    if scale == "ceil":
        return fl + (frac > 1).to(I32)
    if scale == "rceil":
        # ceil(log2(a / max_norm)) + emax: a/X <= max_norm needs one binade more
        # exactly when the significand of a exceeds that of max_norm.
        return fl + (frac > elem.max_mant).to(I32)
    if scale == "even":
        # Round a to m mantissa bits (ties up, as torchao adds half an ulp); a
        # significand >= 2 - 2^-(m+1) rounds up to the next power of two.
        return fl + (frac >= elem.even_threshold).to(I32)
    # carry: floor(log2 a + 0.5), i.e. bump when the significand is >= sqrt(2).
    return fl + (frac >= SQRT2_UP).to(I32)


def _exact_scale(E: torch.Tensor, amax: torch.Tensor, elem: MXElement, scale_bits: int):
    """§2.3 steps 4-5: s = E - emax clamped below at -scale_emax; NaN mask for overflow.

    Returns (s int32 within [-scale_emax, scale_emax], nan_mask). A NaN or Inf amax
    gives a NaN block (§2.5).
    """
    scale_emax = 2 ** (scale_bits - 1) - 1
    s = E - elem.emax
    nan_mask = (s > scale_emax) | ~torch.isfinite(amax)
    return s.clamp(-scale_emax, scale_emax), nan_mask


def exact_block_scale(amax, elem: MXElement, scale_bits: int, scale: str = "floor", minus_exp=None, E=None):
    """§2.3 steps 2, 4 and 5 in exact mode: ``(E, s, nan_mask)`` per block from its amax.

    ``E`` is the shared exponent, computed here for every rule but the auto modes
    (whose ``E`` the caller passes); ``s`` the scale exponent clamped to the scale
    range; ``nan_mask`` the blocks that come out NaN. The fast kernel
    (``kernels.fast.mx``) calls this on its per-block amax for the non-default
    rules, so both decide those scales with the same code.
    """
    if E is None:
        E = _exact_shared_exponent(amax, elem, scale, minus_exp)
    s, nan_mask = _exact_scale(E, amax, elem, scale_bits)
    if scale == "even" and minus_exp is None:
        # scale=even rounds amax itself to m bits; at E = 128 the rounded amax is
        # not a finite float32 (torchao gets +Inf and a NaN scale: §11.2 row 4).
        nan_mask = nan_mask | (E > 127)
    return E, s, nan_mask


def _exact_elements(y: torch.Tensor, elem: MXElement, round: str, generator) -> torch.Tensor:
    """§2.4 in float32, exactly: round y (already divided by X) to the element grid, saturate."""
    M = elem.man_bits
    if elem.is_int:
        # Fixed point with M fraction bits: t = y·2^M, exact.
        t = y * 2.0**M
    else:
        # Private exponent of y, clipped below at emin (the subnormal grid) and
        # above at 127 (only NaN/Inf y, whose block is NaN, reach 128). Every
        # element has emin >= -126, so subnormal y (field -127) clip to emin too.
        p = biased_exponent(y).clamp(elem.emin, 127)
        t = y * pow2(M - p, M - 127, M - elem.emin)  # |t| < 2^(M+1): exact
    if round == "nearest":
        r = round_half_away(t)
    elif round == "even":
        r = round_half_even(t)
    elif round == "floor":
        r = round_toward_zero(t)
    else:
        # dither: round the magnitude up with probability frac(|t|): floor(|t| + U)
        # without the float32 rounding of the sum; U ~ uniform[0, 1) on a 2^-24 grid.
        a = t.abs()
        f = torch.floor(a)
        u = torch.rand(t.shape, generator=generator, dtype=t.dtype, device=t.device)
        r = torch.copysign(f + (u < a - f).to(t.dtype), t)
    q = r * 2.0**-M if elem.is_int else r * pow2(p - M, elem.emin - M, 127 - M)
    return q.clamp(-elem.max_norm, elem.max_norm)


def _exact_dequant(xb, s, nan_mask, elem, round, generator):
    """x -> X·Q(x/X) for int32 block exponents s (broadcast over the block)."""
    # x/2^s as a multiplication by 2^-s: both are exact powers of two for
    # |s| <= 127, so the product is the correctly rounded quotient.
    y = xb * exp2i(-s)
    q = _exact_elements(y, elem, round, generator) * exp2i(s)
    return torch.where(nan_mask, math.nan, q)


#: The order of the auto modes' block error sums (kernels.triton.mx matches it): pairs of
#: neighbours added level by level over each block, zero-padded to a power of two.
BLOCK_SUM_ORDER = "pairs"


def _block_sum(t: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Sums over ``dims`` (kept, size 1) in one fixed order on every device: pairs of neighbours,
    level by level (each step one float64 add per pair). ``t.sum`` follows the device's own
    reduction order, and blocks that mix errors of 1e5 and 1e-12 round differently on CPU
    (AVX2, AVX-512) and CUDA, which flipped the auto modes' near-tie decisions."""
    for d in dims:
        t = pad_axis_to_multiple(t, d, 1 << max(t.shape[d] - 1, 0).bit_length())
        while t.shape[d] > 1:
            u = t.unflatten(d, (t.shape[d] // 2, 2))
            t = u.select(d + 1, 0) + u.select(d + 1, 1)
    return t


def _exact_auto_offset(xb, amax, elem, scale_bits, minus_exp, dims):
    """§2.3 auto modes: d in {0, level} per block, the one whose ceil-based
    quantization (round=nearest, like the seed's comparison) has the lower
    squared error over the block; d = 0 on a tie or a NaN error."""
    level = AUTO_MINUS_EXP[minus_exp]
    scale_emax = 2 ** (scale_bits - 1) - 1
    s0, nan0 = _exact_scale(_exact_shared_exponent(amax, elem, "ceil", None), amax, elem, scale_bits)
    # Like the seed, the second candidate offsets the already clamped s0 and is clamped again.
    s1 = s0 - level
    nan1 = nan0 | (s1 > scale_emax)
    s1 = s1.clamp(-scale_emax, scale_emax)
    # In float64 each squared difference of two float32 values is exact, and _block_sum adds
    # them in one fixed order, so every device takes the same decision.
    x64 = xb.double()
    err0 = _block_sum((x64 - _exact_dequant(xb, s0, nan0, elem, "nearest", None).double()).square(), dims)
    err1 = _block_sum((x64 - _exact_dequant(xb, s1, nan1, elem, "nearest", None).double()).square(), dims)
    return torch.where(err1 < err0, level, 0).to(I32)


def _quantize_mx_exact(x, elem, scale_bits, axes, block, round, scale, minus_exp, method, flush, generator):
    xb, b = _to_blocks(x.to(F32), axes, block)
    if method == "none" or not axes:
        amax = xb.abs()  # one scale per element (also the fixed axes=None case, §2.2-4)
        dims: tuple[int, ...] = ()
    else:
        dims = b.reduce_dims
        amax = xb.abs().amax(dim=dims, keepdim=True)  # NaN propagates (§2.3 step 1)
    E = None
    if isinstance(minus_exp, str):
        d = _exact_auto_offset(xb, amax, elem, scale_bits, minus_exp, dims)
        base = "floor" if minus_exp == "auto-fix" else "ceil"
        E = _exact_shared_exponent(amax, elem, base, None) - d
    E, s, nan_mask = exact_block_scale(amax, elem, scale_bits, scale, minus_exp, E)
    if flush:
        # §2.3 step 3: zero the block when E <= -127 (amax is an fp32 subnormal).
        xb = torch.where(E <= -127, 0.0, xb)
    return _from_blocks(_exact_dequant(xb, s, nan_mask, elem, round, generator), b)


# --------------------------------------------------------------------------- seed mode


def _seed_round(t: torch.Tensor, round: str, generator) -> torch.Tensor:
    """The seed's ``_round_mantissa`` in t's dtype, artifacts included (§2.4 step 3, §2.8-c)."""
    if round == "nearest":
        return seed_round_half_away(t)
    if round == "floor":
        return torch.sign(t) * torch.floor(t.abs())
    if round == "even":
        a = t.abs()
        # Exact .5 ties with an even floor: (|t| - 0.5) mod 2 == 0; subtract 1 from RNA.
        tie_even = ((a - 0.5) % 2 == 0).to(t.dtype)
        return torch.sign(t) * (torch.floor(a + 0.5) - tie_even)
    u = torch.rand(t.shape, generator=generator, dtype=t.dtype, device=t.device)
    return torch.sign(t) * torch.floor(t.abs() + u)


def _seed_elements(y, elem, round, generator):
    """The seed's ``_quantize_elemwise_core`` with saturation, in y's dtype."""
    if elem.is_int:
        t = y * 2**elem.man_bits
        t = _seed_round(t, round, generator)
        q = t / 2**elem.man_bits
    else:
        p = torch.floor(seed_log2(y.abs() + (y == 0).to(y.dtype))).clamp(min=elem.emin)
        pw = torch.pow(2.0, p)
        t = y / pw * 2**elem.man_bits
        t = _seed_round(t, round, generator)
        q = t / 2**elem.man_bits * pw
    return q.clamp(-elem.max_norm, elem.max_norm)


def _seed_scale(E: torch.Tensor, elem: MXElement, scale_bits: int) -> torch.Tensor:
    """Float s = E - emax with the seed's clamp: NaN above scale_emax, -scale_emax below."""
    return _seed_clamp(E - elem.emax, scale_bits)


def _seed_clamp(s: torch.Tensor, scale_bits: int) -> torch.Tensor:
    scale_emax = 2 ** (scale_bits - 1) - 1
    s = torch.where(s > scale_emax, math.nan, s)
    return torch.where(s < -scale_emax, -scale_emax, s)


def _seed_dequant(xb, s, elem, round, generator):
    X = torch.pow(2.0, s)
    return _seed_elements(xb / X, elem, round, generator) * X


def _seed_block_mean(t: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    # The seed averages one axis at a time (calculate_minus_mse_exp).
    for d in dims:
        t = t.mean(dim=d, keepdim=True)
    return t


def _seed_shared_exponent(xb, amax, elem, scale_bits, scale, minus_exp, dims):
    """The seed's block exponent E (§2.3) in the input dtype from the block amax: floor or ceil of
    its float log2, minus an integer ``minus_exp`` or the auto modes' per-block MSE choice."""
    amax = amax + 2.0**ZERO_BLOCK_EXP * (amax == 0).to(amax.dtype)
    lg = seed_log2(amax)
    if minus_exp is None and scale == "floor":
        return torch.floor(lg)
    E = torch.ceil(lg)
    if isinstance(minus_exp, str):
        level = AUTO_MINUS_EXP[minus_exp]
        s0 = _seed_scale(E, elem, scale_bits)
        # The seed subtracts the level from the already clamped s0 and clamps again.
        s1 = _seed_clamp(s0 - level, scale_bits)
        mse0 = _seed_block_mean((xb - _seed_dequant(xb, s0, elem, "nearest", None)) ** 2, dims)
        mse1 = _seed_block_mean((xb - _seed_dequant(xb, s1, elem, "nearest", None)) ** 2, dims)
        d = torch.where(mse1 < mse0, float(level), 0.0).to(E.dtype)
        return (torch.floor(lg) if minus_exp == "auto-fix" else E) - d
    return E if minus_exp is None else E - minus_exp


def _quantize_mx_seed(x, elem, scale_bits, axes, block, round, scale, minus_exp, method, flush, generator):
    if scale not in ("floor", "ceil") and minus_exp is None:
        raise ValueError(f"scale={scale!r} has no seed counterpart; use emulate='exact'")
    xb, b = _to_blocks(x, axes, block)
    if method == "none":
        amax, dims = xb.abs(), ()
    elif not axes:
        amax, dims = xb, ()  # seed bug (§2.2-4): the signed value, so log2 < 0 gives NaN
    else:
        dims = b.reduce_dims
        amax = xb.abs().amax(dim=dims, keepdim=True)
    E = _seed_shared_exponent(xb, amax, elem, scale_bits, scale, minus_exp, dims)
    if flush:
        xb = xb * (E > -127).to(xb.dtype)
    s = _seed_scale(E, elem, scale_bits)
    return _from_blocks(_seed_dequant(xb, s, elem, round, generator), b)


# --------------------------------------------------------------------------- entry point


def quantize_mx_ref(
    x: torch.Tensor,
    *,
    elem: str | MXElement,
    scale_bits: int = 8,
    axes=(-1,),
    block: int = 32,
    round: str = "nearest",
    scale: str = "floor",
    minus_exp=None,
    shared_exp_method: str = "max",
    flush_fp32_subnorms: bool = False,
    emulate: str = "exact",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """MX fake quantization (quantize, then dequantize) of ``x``; ``x`` is never modified.

    Args:
        elem: element format name (``MX_ELEMENTS`` or a seed alias) or an ``MXElement``.
        scale_bits: bits of the shared exponent; ``s`` is clamped below at
            ``-(2^(scale_bits-1) - 1)`` and a larger ``s`` makes the block NaN.
        axes: int, list/tuple of ints, or None (no axis: one scale per element).
        block: block length along every listed axis (tiles for several axes);
            0 means one scale over the whole extent of the listed axes.
        round: nearest (ties away), even (ties to even), floor (toward zero),
            dither (stochastic; uses ``generator``).
        scale: floor | ceil | rceil | even | carry (spec §11.2 "Scale rules").
        minus_exp: None, an int ``m`` (E = ceil(log2 amax) - m), or
            auto | auto-2 | auto-reverse | auto-fix (§2.3). Overrides ``scale``.
        shared_exp_method: max (one exponent per block) or none (per element).
        flush_fp32_subnorms: zero blocks whose E <= -127.
        emulate: exact (float32, exact exponents and ties) or seed (the seed's
            arithmetic in the input dtype).

    Returns a tensor of ``x``'s shape and dtype.
    """
    check_emulate(emulate)
    el = resolve_mx_element(elem)
    if round not in ROUND_MODES:
        raise ValueError(f"round must be one of {ROUND_MODES}, got {round!r}")
    if scale not in SCALE_RULES:
        raise ValueError(f"scale must be one of {SCALE_RULES}, got {scale!r}")
    if shared_exp_method not in ("max", "none"):
        raise ValueError(f"shared_exp_method must be 'max' or 'none', got {shared_exp_method!r}")
    if isinstance(minus_exp, str) and minus_exp not in AUTO_MINUS_EXP:
        raise ValueError(f"minus_exp must be None, an int or one of {sorted(AUTO_MINUS_EXP)}, got {minus_exp!r}")
    if minus_exp is not None and not isinstance(minus_exp, str):
        minus_exp = int(minus_exp)
    if not 1 <= scale_bits <= 8 or block < 0:
        # The scale is E8M0-like: |s| <= 127 keeps 2^s and 2^-s exact float32 values.
        raise ValueError(f"scale_bits must be in 1..8 and block >= 0, got {scale_bits}, {block}")
    dtype = compute_dtype(x, emulate)
    ax = _normalize_axes(axes, x.ndim)
    impl = _quantize_mx_seed if emulate == "seed" else _quantize_mx_exact
    out = impl(
        x.to(dtype),
        el,
        scale_bits,
        ax,
        block,
        round,
        scale,
        minus_exp,
        shared_exp_method,
        flush_fp32_subnorms,
        generator,
    )
    return out.to(x.dtype)
