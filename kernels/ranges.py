"""Clip bounds: the largest magnitude a format can output in each element's scaling unit.

fqtool reports, per tensor and format, the fraction of elements a format *clips*: finite
elements whose ``|x|`` exceeds the largest magnitude the format can output in that element's
scaling unit (block, pair, micro-group, row, group or tensor), given the scale the format chose
for that unit. :func:`unit_bound` returns that magnitude for every element; the caller
(``kernels.stats``) counts ``|x| > bound``.

"Largest output" is the top of the unit's grid: the value an element of that unit saturates to,
e.g. MXFP4 (E2M1, floor rule) ``6·2^s`` with ``s = floor(log2 amax) - 2``. It is computed with the
kernel's own scale code on the per-unit maxima (mostly the reference modules' helpers, imported
here, never copied) and rounded to the kernel's output dtype the way the kernel rounds its
result, so for a saturated element it equals ``fake_quantize``'s output bit for bit. Elements
above the bound come out as ±bound (saturating formats) or ±Inf (formats that overflow: casts,
hif8 with ``overflow=inf``). A unit whose output is NaN (NaN in an MX block, an overflowing scale)
gets a NaN bound, which counts nothing; a unit whose grid has no top (a tensor that a per-tensor
kernel returns unchanged, a HiFX micro-group whose level-1 exponent is clipped) gets +Inf.

Per family (spec sections in ``shared/spec``; "unit" is the set of elements sharing the scale):

- ``mx`` (formats-mx.md §2.3-§2.4, §11.2): block of ``block`` along the axis (0: the whole
  axis; ``shared_exp=none``: each element). ``max_norm · 2^s`` with s from the kernel's rule
  (floor/ceil/rceil/even/carry, integer ``minus_exp``, the auto modes' MSE choice), clamped to
  ``±(2^(scale_bits-1) - 1)``; NaN where s overflows, 0 where ``flush_fp32_subnorms`` zeroes the
  block. Elements saturate at ``max_norm`` (§2.4 step 5) whatever the rounding mode.
- ``qtype`` (§3.4): inner block of b. ``fp_val_max · 2^s`` with s after the window clip and the
  two-level constraint over B inner blocks (E = 0: ``(2^M - 1) · 2^s``, carry bump included);
  0 where ``s < -127`` flushes.
- ``tmx`` (§9): pair of 2. ``(2 - 2^(1-M)) · 2^e``, e = max(g, G - 1).
- ``nvf4`` (§4.2): block of 16. ``6 · S``, S = e4m3(amax/6 clipped to 448).
- ``nvfp4`` (§4.1, §4.4): block of 16. ``6 · (pts · s_b)``; +Inf when the tensor is tiny and
  returned unchanged.
- ``nf4`` (§5.1): None. The code book tops out at 1.0 and decodes as ``code · absmax``, so no
  element ever exceeds its block absmax: nothing can clip.
- ``nf4grid`` (§5.2): inner block of b. The level tops out at 1, so the bound is the
  re-quantized absmax ``gmax' = e4m3(gmax/omax · 448)/448 · omax``; it can sit just below the
  block's own absmax, and then the absmax element is clipped to it.
- ``fp8tensor`` (§6): the tensor. ``max_norm / scale``; +Inf for a tensor below the 2^-23
  guard (returned unchanged).
- ``cast`` (§7): the largest finite value the round trip gives for any input of x's dtype
  (65504 for fp16 from float32); larger inputs become ±Inf (or round down to the bound). None
  where the cast cannot overflow (fp32; bf16 of a bf16 tensor...).
- ``int8sym`` (§8): the row along the axis. ``127 · (amax/127)``, which can be one ulp below
  amax (then the amax element is clipped to it).
- ``hif8`` (formats-hifloat.md §3.2, §4.1): the tensor (``scale=tensor``) or each element.
  The element rule's largest finite value G = 32768 (49152 with ``overflow=tof8``), divided by
  the per-tensor scale when there is one; output dtype bf16 by default with a scale.
- ``hifx`` (§5.3, §5.5): micro-group of 4. ``(2^M - 1) · 2^(S-M+1)``; +Inf where the L1 clip
  at 16 lets k exceed 2^M (variant torch: no saturation there).
- ``hif4_paper`` (§5.6): micro-group of 4. ``1.75 · Ea · 2^Eb · 2^Ec``.
- ``dhif8`` (§6): the tensor (or the given amax). ``32768 / scaler``.

``emulate=seed`` variants are followed too: their scale arithmetic in the input dtype (float
``log2``, the seed's eps) on the per-unit maxima, through the same reference helpers.

Speed (it runs on every 256K-element piece of every tensor for every format): one pass takes
``|x|`` into a scratch buffer, one reduction gives each unit's max (``max_pool1d`` for units of
2-16 along the last axis), a few dozen small ops work on the per-unit tensor (1/2-1/64 of the
piece; int32 bit arithmetic where the kernel's rule allows, the reference helpers' masks only for
pieces holding NaN/Inf), and one pass repeats each unit's bound over its elements (per-row and
per-tensor bounds are expanded views, nothing is materialized). No bool tensor of the piece's size
is made, except for MX with ``shared_exp=none``, whose units are single elements. A large CPU
tensor is cut into pieces by ``kernels.chunked`` first, like ``fake_quantize``.
"""

from __future__ import annotations

import functools
import math
import threading

import torch
import torch.nn.functional as F

from .fast._ops import SCRATCH_KEEP_ELEMS, magnitudes, on_device
from .fast.mx import _block_scales
from .formats import FormatSpec, parse
from .reference._bits import F32, I32, exp2i, floor_log2, round_half_away, seed_log2_f32
from .reference.dhif8 import ZERO_AMAX, _bf16_round_half_away
from .reference.fp8 import E4M3, FP8_ELEMENTS, SEED_EPS, div_by_const, round_to_grid
from .reference.hif4 import _bf, _e6m2
from .reference.hif8 import HIF8_MAX, TOF8_FINITE, _per_tensor_scale
from .reference.hifx import _EPS as HIFX_EPS
from .reference.hifx import _EPS_F16 as HIFX_EPS_F16
from .reference.hifx import L1_MAX, _f64_exp2, _float_exp2, _level_exponents, _pow2_split
from .reference.mx import (
    SQRT2_UP,
    _exact_auto_offset,
    _exact_shared_exponent,
    _seed_scale,
    _seed_shared_exponent,
    biased_exponent,
    exact_block_scale,
    f32_ceil,
    pad_axis_to_multiple,
    pow2,
    resolve_mx_element,
    seed_log2,
)
from .reference.nf4 import E4M3_MAX, _seed_e4m3_quant_py
from .reference.nvfp import (
    E4M3_MIN_NORMAL,
    NVFP4_BLOCK,
    NVFP4_MIN_PTS,
    NVFP4_TENSOR_DIVISOR,
    _seed_floor_log2,
    _seed_pow2,
)
from .reference.qtype import (
    FLUSH_BELOW_EXP,
    QTYPE_EPS,
    _exact_group_exp,
    _exact_two_level,
    _seed_two_level,
    qtype_fields,
)
from .reference.tmx import TMX_BLOCK, TMX_PAIRS
from .reference.tmx import _eps as tmx_eps

__all__ = ["unit_bound"]

F64 = torch.float64
INF = math.inf
#: The float32 bits of +Inf: |x| patterns at or above it are Inf or NaN.
_INF_BITS = 0x7F800000
#: Thread names of kernels.chunked's worker pool.
_POOL_THREAD_PREFIX = "fqtool-cpu"
#: The exponent field of a float32, in place.
_EXP_MASK = 0x7F800000


def unit_bound(x: torch.Tensor, spec: FormatSpec | str, amax: torch.Tensor | None = None) -> torch.Tensor | None:
    """The largest magnitude ``fake_quantize(x, spec)`` can output for each element, given the
    scale its scaling unit gets; None where the format/options can never clip.

    ``x`` is a whole tensor or a piece of one as ``kernels.chunked`` cuts it (whole scaling units
    along ``spec["axis"]``). ``amax`` is the whole tensor's max |x| (0-dim float32) for formats
    scaled per tensor (``chunked.layout(spec)[0] == "tensor"``); when None it is taken from x.

    Returns a float32 tensor of x's shape: an expanded view for per-tensor and per-row formats,
    a new tensor for blocked ones. NaN where the unit's output is NaN; +Inf where it has no top.
    ``x`` is never modified. See the module docstring for each family's rule.
    """
    spec = parse(spec)
    if x.numel() == 0:
        return None if spec.family == "nf4" else torch.zeros(x.shape, dtype=F32, device=x.device)
    with on_device(x.device):
        b = _unit_bound(x, spec, amax)
    # Some rules build their constants on the CPU; the bound lives where x does.
    return b if b is None or b.device == x.device else b.to(x.device)


def _unit_bound(x: torch.Tensor, spec: FormatSpec, amax: torch.Tensor | None) -> torch.Tensor | None:
    fn = _FAMILIES[spec.family]
    with torch.no_grad():
        x = x.detach()
        if _worth_splitting(x, spec):
            # A large CPU tensor whose bound is materialized (a blocked format): run the pieces in
            # kernels.chunked's worker pool, cut into whole scaling units as fake_quantize cuts
            # them, so each piece stays in cache. Per-tensor formats get the whole tensor's amax.
            from .chunked import fake_quantize_chunked

            def piece(p: torch.Tensor, s: FormatSpec, a: torch.Tensor | None) -> torch.Tensor:
                return fn(p, s, a if amax is None else amax)

            return fake_quantize_chunked(x, spec, None, lambda p, s, g: piece(p, s, None), fast=piece)
        return fn(x, spec, amax)


def _worth_splitting(x: torch.Tensor, spec: FormatSpec) -> bool:
    """Whether to cut ``x`` into pieces: a large CPU tensor, a format whose bound is a new tensor
    (blocks of a fixed size, or MX without sharing), and not already inside a pool worker
    (``kernels.chunked`` hands pieces to ``unit_bound`` from there; its pool must not wait on itself)."""
    from . import chunked

    if x.device.type != "cpu" or x.numel() < chunked.MIN_SPLIT_ELEMS or spec.family == "nf4":
        return False
    if threading.current_thread().name.startswith(_POOL_THREAD_PREFIX):
        return False
    kind, unit = chunked.layout(spec)
    return (kind in ("axis", "tensor") and unit is not None) or (spec.family == "mx" and spec["shared_exp"] == "none")


# --------------------------------------------------------------------------- layout helpers


def _unit_max(x: torch.Tensor, axis: int, unit: int, pad: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(m, x3)``: x viewed as (outer, n, inner) around ``axis`` and the float32 max |x| of each
    run of ``unit`` consecutive elements along the axis, shape (outer, n_pad/unit, 1, inner); the
    axis is zero-padded to a multiple of ``pad`` (default ``unit``; a multiple of it), as the
    kernel pads it (zeros never raise a max). NaN propagates.

    ``fast._ops.magnitudes`` takes |x| into a scratch buffer. Short units along the last axis
    reduce with ``max_pool1d`` (one pass; torch's reduction over a trailing dim of 2-16 makes
    several); others with an int32 ``amax`` of the bit patterns (non-negative floats order as
    their bits, NaN above +Inf).
    """
    if unit == x.shape[axis] and (pad or unit) == unit and x.numel() > SCRATCH_KEEP_ELEMS:
        # Whole rows of a large tensor: max(max x, -min x) reads x twice and writes nothing, where
        # a fresh |x| buffer of this size would cost more in page faults than the reductions.
        x3 = x.reshape(math.prod(x.shape[:axis]), unit, math.prod(x.shape[axis + 1 :]))
        m = torch.maximum(x3.amax(dim=1, keepdim=True), x3.amin(dim=1, keepdim=True).neg_())
        return m.to(F32).unsqueeze(1), x3
    A, x3 = magnitudes(x, axis, pad or unit)
    outer, n_pad, inner = A.shape
    if inner == 1 and unit <= 16:
        m = F.max_pool1d(A.view(outer, 1, n_pad), unit, unit)
        return m.view(outer, n_pad // unit, 1, 1), x3
    m = A.view(I32).view(outer, n_pad // unit, unit, inner).amax(dim=2, keepdim=True)
    return m.view(F32), x3


def _spread(b: torch.Tensor, unit: int, x3: torch.Tensor, shape: torch.Size, bf16_exact: bool = False) -> torch.Tensor:
    """Per-unit values ``b`` (outer, units, 1, inner), float32, as a tensor of x's ``shape``: each
    value repeated over its ``unit`` elements, the padding of the last unit dropped. One write
    pass; a view when the unit is the whole axis.

    Along the last axis, repeating over a trailing dim of 2 or 4 is slow in torch, so the values
    are copied as bit patterns instead: a float32 pattern times 2^32 + 1 as int64 holds two
    copies of it; a bf16 pattern times 0x0001000100010001 holds four, widened to float32 in one
    pass (only for values that bf16 holds exactly: ``bf16_exact``).
    """
    outer, nu, _, inner = b.shape
    n = x3.shape[1]
    b = b.contiguous()
    if inner == 1 and unit == 2:
        bits = b.view(I32).view(outer, nu).to(torch.int64).bitwise_and_(0xFFFFFFFF)
        full = bits.mul_(0x1_0000_0001).view(F32)  # (outer, 2·nu); both halves equal: no byte order
    elif inner == 1 and unit == 4 and bf16_exact:
        bits = b.view(outer, nu).to(torch.bfloat16).view(torch.int16).to(torch.int64).bitwise_and_(0xFFFF)
        full = bits.mul_(0x0001_0001_0001_0001).view(torch.bfloat16).to(F32)  # (outer, 4·nu)
    else:
        full = b.expand(outer, nu, unit, inner).reshape(outer, nu * unit, inner)
    full = full.view(outer, nu * unit, inner)
    if nu * unit != n:
        full = full[:, :n]
    return full.view(shape)


def _sibling(t: torch.Tensor) -> torch.Tensor:
    """For a contiguous float32 tensor of even length: each element's pair partner (index j ^ 1),
    by swapping the two int32 halves of each int64 (a few int passes; no trailing-2 broadcast)."""
    v = t.contiguous().view(torch.int64)
    return ((v << 32) | ((v >> 32) & 0xFFFFFFFF)).view(F32).view(t.shape)


def _finite(m: torch.Tensor) -> bool:
    """Whether every per-unit max (float32, >= 0 or NaN) is finite: one small int32 reduction."""
    return bool(m.view(I32).amax() < _INF_BITS)


def _signed_units(x3: torch.Tensor, unit: int, dtype: torch.dtype) -> torch.Tensor:
    """x3 (outer, n, inner) in ``dtype``, zero-padded along n to a multiple of ``unit`` and viewed
    as (outer, units, unit, inner): the blocks the MX auto modes compare errors over."""
    xp = pad_axis_to_multiple(x3.to(dtype), 1, unit)
    return xp.view(xp.shape[0], xp.shape[1] // unit, unit, xp.shape[2])


def _out(b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A float32 bound as the kernel's RNE cast to its output ``dtype`` leaves it (as float32)."""
    if dtype in (F32, F64) or b.dtype == dtype:
        return b.to(F32)
    return b.to(dtype).to(F32)


def _tensor_amax(x: torch.Tensor, amax: torch.Tensor | None) -> torch.Tensor:
    """The whole tensor's max |x| as a 0-dim float32 tensor (NaN propagates)."""
    if amax is not None:
        return amax.detach().to(F32).reshape(())
    return torch.maximum(x.amax(), x.amin().neg()).to(F32)  # no |x| buffer


def _axis(x: torch.Tensor, spec: FormatSpec) -> int:
    return spec["axis"] % x.dim()


# --------------------------------------------------------------------------- mx


def _mx(x: torch.Tensor, spec: FormatSpec, amax) -> torch.Tensor:
    """formats-mx.md §2.3-§2.4: ``max_norm · 2^s`` per block (module docstring)."""
    el = resolve_mx_element(spec["element"])
    seed = spec.emulate == "seed"
    if spec["shared_exp"] == "none":
        # §2.3 step 1: each element is its own block, the scale from |x| itself.
        xc = x.to(x.dtype if seed else F32)
        a = xc.abs()
        b = _mx_seed_bound(a, xc, el, spec, ()) if seed else _mx_exact_bound(a, xc, el, spec, ())
        return _out(b, x.dtype)
    axis = _axis(x, spec)
    block = spec["block"] or x.shape[axis]  # block 0: one scale over the whole axis (§2.2-3)
    m, x3 = _unit_max(x, axis, block)
    auto = isinstance(spec["minus_exp"], str)
    if seed:
        xb = _signed_units(x3, block, x.dtype) if auto else None
        b = _mx_seed_bound(m.to(x.dtype), xb, el, spec, (2,))
    else:
        xb = _signed_units(x3, block, F32) if auto else None
        b = _mx_exact_bound(m, xb, el, spec, (2,))
    return _spread(_out(b, x.dtype), block, x3, x.shape)


def _mx_exact_bound(m, xb, el, spec, dims) -> torch.Tensor:
    """``max_norm · X`` from the per-block amax ``m`` (float32) with the exact kernel's scale code;
    ``xb`` (the signed blocks, reduced over ``dims``) only for the auto modes."""
    me = spec["minus_exp"]
    if isinstance(me, str):
        # §2.3 auto modes: the offset d per block is the kernel's MSE choice (reference helper).
        d = _exact_auto_offset(xb, m, el, spec["scale_bits"], me, dims)
        E = _exact_shared_exponent(m, el, "floor" if me == "auto-fix" else "ceil", None) - d
        E, s, nan_mask = exact_block_scale(m, el, spec["scale_bits"], spec["scale"], me, E)
        X = exp2i(s)
        inv = torch.where(nan_mask, math.nan, exp2i(-s))
        if spec["flush_fp32_subnorms"]:
            inv = torch.where(E <= -127, 0.0, inv)
    else:
        # The fast kernel's own per-block scales (the same code decides its output).
        inv, X = _block_scales(m, el, spec)
    # inv·X is 1, or NaN for a NaN block, or 0 for a flushed one: it carries both to the bound.
    return X * el.max_norm * (inv * X)


def _mx_seed_bound(m, xb, el, spec, dims) -> torch.Tensor:
    """The seed's ``_quantize_mx`` scale (§2.3, §2.8-b) in the input dtype on the per-block amax."""
    scale, me, sb = spec["scale"], spec["minus_exp"], spec["scale_bits"]
    if scale not in ("floor", "ceil") and me is None:
        raise ValueError(f"scale={scale!r} has no seed counterpart; use emulate='exact'")
    E = _seed_shared_exponent(xb, m, el, sb, scale, me, dims)  # the reference's own code
    X = torch.pow(2.0, _seed_scale(E, el, sb))  # NaN where s overflows: a NaN block
    # A 2^s that underflows the input dtype (float16) gives x/0 and 0·Inf: a NaN block too.
    b = torch.where(X == 0, math.nan, X * torch.full((), el.max_norm, dtype=X.dtype))
    if spec["flush_fp32_subnorms"]:
        b = b * (E > -127).to(b.dtype)
    return b.to(F32)


# --------------------------------------------------------------------------- qtype


def _qtype(x: torch.Tensor, spec: FormatSpec, amax) -> torch.Tensor:
    """formats-mx.md §3.4: ``fp_val_max · 2^s`` (E = 0: ``(2^M - 1) · 2^s``) per inner block."""
    q = qtype_fields(spec["E"], spec["M"], spec["k"], spec["b"], spec["K"], spec["B"], spec["carry"], spec["off"])
    b, B = q.blk_size, q.blk_outer_size
    m, x3 = _unit_max(x, _axis(x, spec), b, b * B)  # (outer, groups·B, 1, inner)
    outer, nu, _, inner = m.shape
    m = m.view(outer, nu // B, B, 1, inner)  # the two-level max runs over dim 2
    if spec.emulate == "seed":
        bound = _qtype_seed(m.to(x.dtype), q)
    elif q.exp_bits > 0 and _finite(m):
        bound = _qtype_float_fast(m.view(-1, B, inner), q).view(m.shape)
    else:
        bound = _qtype_exact(m, q)
    # fp_val_max·2^s has M + 1 significant bits and 2^-126 <= it < 2^128 (or is 0 or NaN).
    bf16_exact = q.exp_bits > 0 and q.man_bits <= 7 and q.fp_val_max < 1e38
    return _spread(_out(bound, x.dtype).reshape(outer, nu, 1, inner), b, x3, x.shape, bf16_exact)


#: Added to a float32 pattern, carries into the exponent field exactly when the significand is
#: >= SQRT2_UP: the QType carry rule round(log2 a) = floor(log2 a) + (significand >= sqrt 2).
_SQRT2_CARRY = (1 << 23) - (round(SQRT2_UP * 2**23) - (1 << 23))


def _qtype_float_fast(m: torch.Tensor, q) -> torch.Tensor:
    """``_qtype_exact`` for E > 0 and finite maxima m (groups, B, inner), in int32 arithmetic."""
    bits = (m + QTYPE_EPS).view(I32)  # normal: its exponent field is floor(log2(m + 9.6e-7))
    if q.carry:
        bits = bits + _SQRT2_CARRY
    g = (bits >> 23).sub_(127 + q.exp_max).clamp_(q.exp_lo, q.exp_hi)
    if q.blk_outer_size > 1:  # §3.4 step 3, then the window again
        g = g.clamp_(min=g.amax(dim=1, keepdim=True) - q.max_inner_drop).clamp_(q.exp_lo, q.exp_hi)
    # fp_val_max·2^s = (fp_val_max/2)·2^(s+1), 2^(s+1) a normal power of two from bits for
    # s >= -127 (s <= 127 - exp_max <= 126); s < -127 is the flush of step 7: clamped to -128,
    # whose pattern (0 << 23) is +0. Exact: halving the float32 fp_val_max is.
    half_top = float(torch.tensor(q.fp_val_max, dtype=F32)) / 2
    return ((g.clamp_(min=FLUSH_BELOW_EXP - 1) + 128) << 23).view(F32).mul_(half_top)


def _qtype_exact(m: torch.Tensor, q) -> torch.Tensor:
    if q.exp_bits > 0:
        g = _exact_group_exp(m, q, q.carry).clamp(q.exp_lo, q.exp_hi)
        s = _exact_two_level(g, q, 2)
        b = torch.tensor(q.fp_val_max, dtype=F32) * exp2i(s)  # v·X with v = fp_val_max (float32)
        b = torch.where(s < FLUSH_BELOW_EXP, 0.0, b)  # step 7: the tiny-scale flush
        return torch.where(torch.isnan(m).any(dim=2, keepdim=True), math.nan, b)
    # E = 0: integer mantissas clipped at 2^M - 1; the carry bump of the kernel depends only on
    # the block max (round and division are monotone), so it is taken from m.
    top = 2**q.man_bits - 1
    g = _exact_group_exp(m, q, False).clamp(q.exp_lo, q.exp_hi)
    if q.carry:
        g = g + (round_half_away(m / exp2i(g)) > top).to(I32)
    s = _exact_two_level(g, q, 2)
    # NaN, or an element at the overflow threshold, makes the outer block NaN (§3.4, E = 0).
    over = f32_ceil(2.0 ** (q.exp_hi + q.exp_max) * (2 - 2.0**-q.man_bits))
    bad = (torch.isnan(m) | (m >= over)).any(dim=2, keepdim=True)
    return torch.where(bad, math.nan, top * exp2i(s))


def _qtype_seed(m: torch.Tensor, q) -> torch.Tensor:
    """The seed's ``quant_py`` scale in the input dtype (``qtype._seed_float`` / ``_seed_int``)."""
    lg = seed_log2(m + QTYPE_EPS)
    if q.exp_bits > 0:
        g = (torch.floor(lg + 0.5) if q.carry else torch.floor(lg)) - q.exp_max
        s = _seed_two_level(g.clamp(q.exp_lo, q.exp_hi), q, 2)
        v = torch.full((), q.fp_val_max, dtype=m.dtype)
        b = torch.pow(2.0, s) * v * (s >= FLUSH_BELOW_EXP).to(m.dtype)
        return b.to(F32)
    top = 2**q.man_bits - 1
    g = (torch.floor(lg) - q.exp_max).clamp(q.exp_lo, q.exp_hi)
    if q.carry:
        g = g + (torch.floor(m / torch.exp2(g) + 0.5) - top).clamp(0, 1)
    s = _seed_two_level(g, q, 2)
    over = 2.0 ** (q.exp_hi + q.exp_max) * (2 - 2.0**-q.man_bits)
    bad = (~torch.isfinite(m) | (m >= over)).any(dim=2, keepdim=True)
    return torch.where(bad, math.nan, top * torch.pow(2.0, s)).to(F32)


# --------------------------------------------------------------------------- tmx


def _tmx(x: torch.Tensor, spec: FormatSpec, amax) -> torch.Tensor:
    """formats-mx.md §9: ``(2 - 2^(1-M)) · 2^e`` per pair, e = max(g, G - 1)."""
    mbits = spec["N"] - 2
    eps = tmx_eps(x.dtype)
    pm, x3 = _unit_max(x, _axis(x, spec), 2, TMX_BLOCK)  # pair maxima (outer, pairs, 1, inner)
    outer, npairs, _, inner = pm.shape
    pm = pm.view(outer, npairs // TMX_PAIRS, TMX_PAIRS, 1, inner)  # blocks of 16 = 8 pairs
    if spec.emulate == "seed":
        pmd = pm.to(x.dtype)
        g = torch.floor(seed_log2(pmd + eps))
        e8 = g.amax(dim=2, keepdim=True) - 1
        e = (g - e8).clamp(min=0) + e8
        b = (torch.full((), 2 - 2.0 ** (1 - mbits), dtype=x.dtype) * torch.pow(2.0, e)).to(F32)
    elif inner == 1 and _finite(pm):
        # g is the exponent field of fl32(pm + eps) (normal), kept biased: e + 1 - M stays in
        # the normal range, so 2^(e+1-M) is a bit pattern. Blocks as rows of 8 pairs.
        g = ((pm + eps).view(I32) >> 23).view(-1, TMX_PAIRS)
        e = g.clamp_(min=g.amax(dim=1, keepdim=True) - 1)  # max(g, G - 1)
        b = ((e + (1 - mbits)) << 23).view(F32).mul_(float(2**mbits - 1)).view(pm.shape)
    else:
        g = biased_exponent(pm + eps)
        e = torch.maximum(g, g.amax(dim=2, keepdim=True) - 1).clamp(max=127)
        g_min = round(math.log2(eps))
        # k <= 2^M always (e >= the pair max's exponent); k = 2^M saturates to 2^M - 1.
        b = (2**mbits - 1) * pow2(e + 1 - mbits, g_min + 1 - mbits, 128 - mbits)
        b = torch.where(torch.isfinite(pm.amax(dim=2, keepdim=True)), b, math.nan)  # a NaN block
    return _spread(_out(b, x.dtype).reshape(outer, npairs, 1, inner), 2, x3, x.shape)


# --------------------------------------------------------------------------- nvfp4


def _nvf4(x: torch.Tensor, spec: FormatSpec, amax) -> torch.Tensor:
    """formats-mx.md §4.2: ``6 · S`` per block of 16, S = e4m3(clip(amax_b / 6, 0, 448))."""
    m, x3 = _unit_max(x, _axis(x, spec), NVFP4_BLOCK)
    if spec.emulate == "seed":
        dt = x.dtype
        eps = 2.0**-14 if dt == torch.float16 else 2.0**-60
        sf = div_by_const(m.to(dt), 6.0).clamp(0.0, 448.0)
        e = _seed_floor_log2(sf + eps).clamp(min=-6)
        s = torch.round(sf * _seed_pow2(3 - e)) * _seed_pow2(e - 3) + eps  # S' = S + eps decodes
        b = (s * 6.0).to(F32)
    else:
        s = round_to_grid(div_by_const(m, 6.0).clamp(0.0, 448.0), E4M3)
        b = s * 6.0  # q·S with q = 6, exact; a zero scale gives 0
    return _spread(_out(b, x.dtype), NVFP4_BLOCK, x3, x.shape)


def _nvfp4(x: torch.Tensor, spec: FormatSpec, amax) -> torch.Tensor:
    """formats-mx.md §4.1/§4.4: ``6 · (pts · s_b)`` per block of 16."""
    pts = div_by_const(_tensor_amax(x, amax), NVFP4_TENSOR_DIVISOR)
    m, x3 = _unit_max(x, _axis(x, spec), NVFP4_BLOCK)
    s_b = round_to_grid((div_by_const(m, 6.0) / pts).clamp(E4M3_MIN_NORMAL, E4M3.max_norm), E4M3)
    b = 6.0 * (pts * s_b)  # e2m1 · (pts · s_b) with e2m1 = 6
    b = torch.where(pts < NVFP4_MIN_PTS, INF, b)  # tiny tensor: returned unchanged, no top
    b = torch.where(torch.isfinite(pts), b, math.nan)  # NaN/Inf anywhere: all NaN
    return _spread(_out(b, x.dtype), NVFP4_BLOCK, x3, x.shape)


# --------------------------------------------------------------------------- nf4


def _nf4(x: torch.Tensor, spec: FormatSpec, amax) -> None:
    # formats-mx.md §5.1: |code| <= 1 and the decode is code · absmax (float32, 1.0·absmax exact),
    # so every output is at most its block absmax, which is at least every |x| of the block.
    return None


def _nf4grid(x: torch.Tensor, spec: FormatSpec, amax) -> torch.Tensor:
    """formats-mx.md §5.2: the re-quantized absmax gmax' of each inner block (levels top out at 1)."""
    b, B = spec["b"], spec["B"]
    gmax, x3 = _unit_max(x, _axis(x, spec), b, b * B)
    outer, nu, _, inner = gmax.shape
    gmax = gmax.view(outer, nu // B, B, inner)  # (outer, groups, B, inner)
    if spec.emulate == "seed":
        g = gmax.to(x.dtype).movedim(2, -1)  # the helper wants the B blocks last
        omax = g.amax(-1, keepdim=True)
        gdq = div_by_const(_seed_e4m3_quant_py(g / omax * E4M3_MAX), E4M3_MAX) * omax
        bound = gdq.movedim(-1, 2).to(F32)
    else:
        omax = gmax.amax(dim=2, keepdim=True)
        zq = round_to_grid(gmax / omax * E4M3_MAX, E4M3, ties="away")
        bound = div_by_const(zq, E4M3_MAX) * omax
        # An all-zero inner block gives 0; NaN/Inf anywhere in the group make it NaN.
        bound = torch.where(gmax == 0, 0.0, bound)
        bound = torch.where(torch.isfinite(omax), bound, math.nan)
    return _spread(_out(bound, x.dtype).reshape(outer, nu, 1, inner), b, x3, x.shape)


# --------------------------------------------------------------------------- per-tensor and elementwise


def _fp8tensor(x: torch.Tensor, spec: FormatSpec, amax) -> torch.Tensor:
    """formats-mx.md §6: ``max_norm / scale`` (the grid top, to which ``x · scale`` saturates)."""
    grid = FP8_ELEMENTS[spec["element"]]
    seed = spec.emulate == "seed"
    a = _tensor_amax(x, amax)
    a64 = a.to(F64)
    max_norm = torch.full((), grid.max_norm, dtype=F64)
    scale = (max_norm / (a64 + SEED_EPS if seed else a64)).to(F32)  # the kernel's scale
    b = torch.full((), grid.max_norm, dtype=F32) / scale
    b = torch.where(a < SEED_EPS, INF, b)  # below the guard x is returned unchanged
    b = torch.where(torch.isfinite(a), b, math.nan)
    return (b if seed else _out(b, x.dtype)).expand(x.shape)  # seed: float32 output


_CAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
_INT_VIEW = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16, F64: torch.int64}


@functools.cache
def _cast_bound(src: torch.dtype, target: torch.dtype, back: torch.dtype) -> float | None:
    """The largest finite ``v.to(target).to(back)`` over finite ``v`` of dtype ``src``, or None when
    every finite ``v`` stays finite. Rounding is monotone, so this is the round trip of the largest
    ``src`` value that does not overflow ``target``, found by stepping down from min(both maxima)."""

    def trip(v: torch.Tensor) -> torch.Tensor:
        return v.to(target).to(back)

    top = torch.tensor(torch.finfo(src).max, dtype=src)
    if torch.isfinite(trip(top)):
        return None
    v = torch.tensor(min(torch.finfo(src).max, torch.finfo(target).max), dtype=F64).to(src)
    while not torch.isfinite(trip(v)):
        v = (v.view(_INT_VIEW[src]) - 1).view(src)  # the next smaller positive value of src
    return float(trip(v))


def _cast(x: torch.Tensor, spec: FormatSpec, amax) -> torch.Tensor | None:
    """formats-mx.md §7: the largest finite round-trip value; beyond it the cast gives ±Inf."""
    back = F32 if spec.emulate == "seed" else x.dtype
    b = _cast_bound(x.dtype, _CAST_DTYPES[spec["element"]], back)
    return None if b is None else torch.tensor(b, dtype=F32).expand(x.shape)


def _int8sym(x: torch.Tensor, spec: FormatSpec, amax) -> torch.Tensor:
    """formats-mx.md §8: ``127 · step`` per row, step = amax/127."""
    axis = _axis(x, spec)
    m, x3 = _unit_max(x, axis, x.shape[axis])  # one unit: the whole axis
    dt = x.dtype if spec.emulate == "seed" else F32
    step = div_by_const(m.to(dt), 127.0)
    b = (127.0 * step).to(F32)  # round(x/step) clipped at 127, times step; a zero step gives 0
    return _spread(_out(b, x.dtype), x.shape[axis], x3, x.shape)


#: Bits of 2^(L1_MAX + 3) = 2^19: from a micro-group exponent of 19 up, HiFX's L1 is clipped at 16.
_NO_L1_CLIP = (L1_MAX + 3 + 127) << 23
#: bf(1/7), hif4_paper's factor for its level-1 scale (§5.6 step 2).
_BF_SEVENTH = _bf(torch.tensor(1 / 7, dtype=F32))

# HiF8's largest finite value per overflow mode (formats-hifloat.md §3.2 step 4).
_HIF8_TOP = {"saturate": HIF8_MAX, "inf": HIF8_MAX, "tof8": TOF8_FINITE}
_OUT_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": F32}


def _hif8(x: torch.Tensor, spec: FormatSpec, amax) -> torch.Tensor:
    """formats-hifloat.md §3.2, §4.1: G = 32768 (49152 with tof8), divided by the per-tensor scale."""
    paper = spec["variant"] == "paper"
    scaled = spec["scale"] == "tensor" and not paper
    seed = spec.emulate == "seed"
    overflow = spec["overflow"]
    if overflow == "default":
        overflow = "inf" if paper else "saturate"
    out = spec["out"]
    if out == "default":  # the reference's output dtype
        if scaled:
            out_dtype = torch.bfloat16
        elif seed and not paper and overflow == "tof8":
            out_dtype = F64  # To_HiF8's float64
        else:
            out_dtype = x.dtype
    else:
        out_dtype = x.dtype if out == "input" else _OUT_DTYPES[out]
    top = torch.tensor(_HIF8_TOP[overflow], dtype=F32)
    if scaled:
        a = _tensor_amax(x, amax)
        s = _per_tensor_scale(a.to(x.dtype) if seed else a, spec["k"])  # k / fl(amax + 2^-23)
        b = top / s  # out = q / s with q = G
    else:
        b = top
    return _out(b, out_dtype).expand(x.shape)


def _dhif8(x: torch.Tensor, spec: FormatSpec, amax) -> torch.Tensor:
    """formats-hifloat.md §6: ``32768 / scaler``, scaler = scale_position / amax."""
    if spec["amax"] is None:
        a = _tensor_amax(x, amax)
    else:
        a = torch.tensor(spec["amax"], dtype=F32)
    a = torch.where(a == 0, ZERO_AMAX, a)  # step 1
    scaler = torch.tensor(spec["scale_position"], dtype=F32) / a
    b = torch.tensor(HIF8_MAX, dtype=F32) / scaler  # steps 6-7: r = ±32768, out = r / scaler
    if spec.emulate == "seed" and x.dtype == torch.bfloat16:
        b = _bf16_round_half_away(b).to(F32)  # the kernel's round-half-away bf16 output
    else:
        b = _out(b, x.dtype)
    return b.expand(x.shape)


# --------------------------------------------------------------------------- hifx, hif4_paper


def _micro_maxima(x: torch.Tensor, spec: FormatSpec):
    """The max |x| of each micro-group of 4 as (outer, inner, groups, 8, 2), and what _spread needs."""
    m, x3 = _unit_max(x, _axis(x, spec), 4, 64)  # (outer, micro-groups, 1, inner)
    outer, nu, _, inner = m.shape
    m5 = m.view(outer, nu // 16, 8, 2, inner).movedim(-1, 1)  # the reference's [..., G, 8, 2] last
    return m5, x3, (outer, nu, 1, inner)


def _from_micro(b: torch.Tensor, x3: torch.Tensor, shape4, x_shape, bf16_exact: bool = False) -> torch.Tensor:
    """Per-micro-group bounds (outer, inner, groups, 8, 2) back to x's shape."""
    return _spread(b.movedim(1, -1).reshape(shape4), 4, x3, x_shape, bf16_exact)


def _hifx(x: torch.Tensor, spec: FormatSpec, amax) -> torch.Tensor:
    """formats-hifloat.md §5.3/§5.5: ``(2^M - 1) · 2^(S-M+1)`` per micro-group of 4."""
    mb = spec["N"] - 1
    m4, x3, shape4 = _micro_maxima(x, spec)
    torch_variant = spec["variant"] == "torch"
    top = float(2**mb - 1)
    if spec.emulate == "seed":
        if torch_variant:
            cd = x.dtype
            eps = HIFX_EPS_F16 if cd == torch.float16 else HIFX_EPS
            m4c = m4.to(cd)
            e4 = torch.floor(seed_log2_f32((m4c + eps).to(F32)).to(cd))
            P = _float_exp2(_level_exponents(e4, clip=True).squeeze(-1)).to(cd)
            # mant = floor(m/P · 2^(M-1) + 0.5)/2^(M-1); only a mant of exactly 2 saturates.
            over = torch.floor(m4c / P * 2 ** (mb - 1) + 0.5) > 2**mb
            b = torch.where(over, INF, (torch.full((), 2 - 2.0 ** (1 - mb), dtype=cd) * P).to(F32))
            return _from_micro(_out(b, cd), x3, shape4, x.shape)
        # to_HiFX: float32 log2 of the max itself, levels and scaling in float64, every k saturated.
        e4 = torch.floor(seed_log2_f32(m4)).to(F64)
        S = _level_exponents(e4, clip=False).squeeze(-1)
        b = ((2 - 2.0 ** -(spec["N"] - 2)) * _f64_exp2(S)).to(F32)
        return _from_micro(b, x3, shape4, x.shape)
    if torch_variant:
        # 2^E4 = 2^floor(log2 fl32(m4 + 2^-45)) per micro-group: the exponent field (a normal float).
        p4 = (m4 + HIFX_EPS).view(I32).bitwise_and_(_EXP_MASK).view(F32)
        if shape4[3] == 1 and bool(p4.view(I32).amax() < _NO_L1_CLIP):
            # No level-1 clip at 16 and no NaN/Inf: S >= E4 everywhere, so k <= 2^M and the top
            # k = 2^M - 1 is the saturation value. Expanding the clamps of steps 5-8 gives
            # S = max(E4, E8 - 1, Emax - 2) (L1's clip at -46 only binds at Emax = -45, where
            # the max is E4 as well), and E8 is the max of E4 and its sibling's.
            p4 = p4.reshape(-1)  # micro-groups in order: pairs are sub-blocks, 16 a group
            ps = torch.maximum(p4, _sibling(p4).mul_(0.5))
            p64 = F.max_pool1d(p4.view(1, 1, -1), 16, 16).view(-1, 1)
            ps.view(-1, 16).clamp_(min=p64.mul_(0.25))  # 2^S
            b = ps.mul_(top * 2.0 ** (1 - mb)).view(shape4)  # k·2^(S-M+1) at k = 2^M - 1, exact
            return _spread(_out(b, x.dtype), 4, x3, x.shape, bf16_exact=True)
        S = _level_exponents(floor_log2(m4 + HIFX_EPS), clip=True).squeeze(-1)
        b = top * exp2i(S - (mb - 1))
        # Only k = 2^M saturates: where the L1 clip at 16 lets the max's k exceed 2^M, no top.
        over = round_half_away(m4 * exp2i((mb - 1) - S)) > 2**mb
        b = torch.where(over, INF, b)
        bad = torch.isnan(m4)
    else:
        S = _level_exponents(floor_log2(m4), clip=False).squeeze(-1)
        f1, f2 = _pow2_split(S - (mb - 1))
        b = top * f1 * f2
        bad = ~torch.isfinite(m4)
    bad = bad.any(dim=-1, keepdim=True).any(dim=-2, keepdim=True)  # per 64-group
    b = torch.where(bad, math.nan, b)  # NaN (numpy: and Inf) poisons the whole 64-group
    return _from_micro(_out(b, x.dtype), x3, shape4, x.shape)


def _hif4_paper(x: torch.Tensor, spec: FormatSpec, amax) -> torch.Tensor:
    """formats-hifloat.md §5.6: ``1.75 · Ea · 2^Eb · 2^Ec`` per micro-group of 4.

    The kernel rounds x to bf16 first; the max of the rounded values is the rounded max."""
    m4, x3, shape4 = _micro_maxima(x, spec)
    if shape4[3] == 1 and _finite(m4):
        return _spread(_out(_hif4_flat(m4.reshape(-1)), x.dtype).view(shape4), 4, x3, x.shape, bf16_exact=True)
    mc = _bf(m4)  # (outer, inner, G, 8, 2)
    mb = mc.amax(dim=-1, keepdim=True)  # per 8
    ma = mb.amax(dim=-2, keepdim=True)  # per 64
    # Steps 2-5 of §5.6 on the maxima, with the reference's roundings and helpers.
    ea = _e6m2(_bf(ma * _BF_SEVENTH))
    zero = ea == 0
    ra = _bf(1 / torch.where(zero, 1.0, ea))
    eb = (_bf(mb * ra) >= 4).to(F32)  # step 4
    ec = (_bf(mc * ra) * exp2i(-eb.to(I32)) >= 2).to(F32)  # step 5
    # Element 1.75 (7 quarters) times Ea·2^Eb·2^Ec: products of powers of two, all exact.
    b = 1.75 * ea * exp2i((eb + ec).to(I32))
    b = torch.where(zero, 0.0, b)
    b = torch.where(torch.isnan(ma), math.nan, b)  # NaN poisons the group
    return _from_micro(_out(b, x.dtype), x3, shape4, x.shape, bf16_exact=True)


def _hif4_flat(m4: torch.Tensor) -> torch.Tensor:
    """The hif4_paper bound from finite micro-group maxima in order (16 per group), without
    broadcasting over the trailing 2 of a sub-block (slow in torch): the sub-block max of
    ``bf(m·rA)`` is the max of a micro-group's value and its sibling's (rounding is monotone),
    and ``[v >= 4] = clamp(floor(v/4), 0, 1)``, ``[v·2^-Eb >= 2] = clamp(floor(v/(1+Eb)/2), 0, 1)``."""
    mc = _bf(m4).view(-1, 16)  # (groups, 16 micro-groups)
    ea = _e6m2_finite(_bf(mc.amax(dim=1, keepdim=True) * _BF_SEVENTH))  # step 2, per 64
    ra = _bf(1 / (ea + (ea == 0).to(F32)))  # step 3 (1 where Ea = 0: that group is 0 anyway)
    c = _bf(mc * ra)  # bf(Mc·rA); the sub-block's bf(Mb·rA) is max(c, c of the sibling)
    eb = torch.maximum(c, _sibling(c)).mul_(0.25).floor_().clamp_(0.0, 1.0)  # step 4
    ec = (c / (eb + 1.0)).mul_(0.5).floor_().clamp_(0.0, 1.0)  # step 5
    return (eb + 1.0).mul_(ec + 1.0).mul_(1.75 * ea)  # element 1.75 times Ea·2^Eb·2^Ec, exact


#: The smallest nonzero E6M2 value, 1.25·2^-48 (code (e = -48, m = 0) decodes as zero).
_E6M2_MIN = 1.25 * 2.0**-48
#: The largest usable E6M2 value, 1.5·2^15 (the top code is reserved).
_E6M2_MAX = 49152.0


def _e6m2_finite(sf: torch.Tensor) -> torch.Tensor:
    """``hif4._e6m2(sf)`` for finite float32 ``sf >= 0`` in bit arithmetic: RNE to 2 mantissa
    bits on the float32 pattern (a carry moves into the exponent, as the reference's m = 4
    case), saturated at 49152, and 0 below 1.25·2^-48 (the reference's flush; sf subnormal
    rounds to at most 2^-126 here, below it too)."""
    bits = sf.view(I32)
    r = (bits + ((bits >> 21) & 1) + ((1 << 20) - 1)) & -(1 << 21)
    ea = r.view(F32).clamp(max=_E6M2_MAX)
    return ea.mul_((ea / _E6M2_MIN).floor_().clamp_(0.0, 1.0))


_FAMILIES = {
    "mx": _mx,
    "qtype": _qtype,
    "tmx": _tmx,
    "nvf4": _nvf4,
    "nvfp4": _nvfp4,
    "nf4": _nf4,
    "nf4grid": _nf4grid,
    "fp8tensor": _fp8tensor,
    "cast": _cast,
    "int8sym": _int8sym,
    "hif8": _hif8,
    "hifx": _hifx,
    "hif4_paper": _hif4_paper,
    "dhif8": _dhif8,
}
