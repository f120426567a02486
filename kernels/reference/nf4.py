"""Reference NF4 kernels: bitsandbytes' code book ``nf4`` and the seed's ``nf4B{B}b{b}`` grid (formats-mx.md §5).

:func:`quantize_nf4_ref`, format ``nf4`` (§5.1): blocks of ``block`` (64)
consecutive elements along ``axis``, the tail block zero-padded (so it uses the
absmax of its own elements). Each block is scaled by the float32 reciprocal of
its absmax, clamped to [-1, 1], mapped to the nearest of the 16 code values
:data:`NF4_CODE` (§1.3) by bucketizing against the float32 midpoints of
adjacent codes (a value exactly on a midpoint goes to the lower code), and
decoded as ``code · absmax`` in float32. This is bitsandbytes 0.50.2's
``quantize_4bit``/``dequantize_4bit`` (no double quantization) op for op, so it
matches it bit for bit; bf16/fp16 inputs are upcast and the result is rounded
back (RNE). Special cases, all bitsandbytes' own:

- all-zero block: 0 (the absmax is floored at 1e-38 before the reciprocal);
- NaN in a block: the whole block is NaN;
- ±Inf in a block (and no NaN): the block is NaN except the infinite
  elements, which decode to **+Inf** whatever their sign (absmax = Inf, the
  scaled value Inf·0 = NaN lands in the top bucket, code +1.0, and 1·Inf = +Inf);
- a block whose absmax is a float32 subnormal below 1e-38 is scaled by
  1/1e-38 but decoded with its true absmax, so it shrinks towards 0.

:func:`quantize_nf4_grid_ref`, format ``nf4B{outer}b{block}`` (the seed's
``QFuncs/nf4.py``, §5.2) is not the code book: each inner block of ``block``
elements gets the 15-level uniform grid ``l = rna(|x| / gmax · 7) / 7``, and the
inner-block absmax values ``gmax`` of each outer group of ``outer`` blocks are
re-quantized to E4M3 (ties away) relative to the group max:
``gmax' = e4m3(gmax / omax · 448) / 448 · omax``. Output ``sign(x)·l·gmax'``.
The axis is zero-padded to a multiple of ``outer·block``.

- ``emulate="exact"`` (default, golden ``expected_exact``): in float32 with
  exact ties-away rounding (no ``floor(t + 0.5)`` accident, §2.8-c) and exact
  exponents for the E4M3 step; bf16/fp16 inputs are upcast and the result
  rounded back. Fixed seed bug: an all-zero inner block gives 0 (the seed: 0/0 = NaN).
- ``emulate="seed"`` (golden ``expected``): the seed op for op in the input dtype,
  including the E4M3 step through ``quant_py`` (``e4m3k1b{outer}c`` with
  ``k_max = exp_offset = 0``: shared exponent pinned at 0, private exponent from
  ``log2(z + 9.6e-7)``, ``floor(t + 0.5)``).
- NaN or ±Inf anywhere in an outer group makes the whole group NaN (both modes).
"""

from __future__ import annotations

import torch

from ._bits import F32, round_half_away, seed_log2_f32
from .fp8 import E4M3, check_emulate, check_float_input, div_by_const, round_to_grid
from .nvfp import _seed_pow2, to_blocks

__all__ = ["NF4_CODE", "quantize_nf4_ref", "quantize_nf4_grid_ref"]

#: The bitsandbytes NF4 code book (§1.3): 7 negative levels, 0 and 8 positive levels,
#: each an exact float32 value written as the shortest decimal of that value.
NF4_CODE: tuple[float, ...] = (
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
)

#: bitsandbytes floors the absmax at this (float32-rounded) value before taking the
#: reciprocal, only to avoid 1/0; kept so that subnormal blocks match it bit for bit.
BNB_ABSMAX_FLOOR = 1e-38

#: ``fp_val_max`` of the seed's E4M3 QType: the group max maps to it (§5.2 step 3).
E4M3_MAX = E4M3.max_norm
#: The seed's ``log2`` guard in ``quant_py`` (§3.4 step 5).
SEED_LOG_EPS = 9.6e-7


def _code_and_bounds(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    code = torch.tensor(NF4_CODE, dtype=F32, device=device)
    # Midpoints as bitsandbytes forms them, in float32: (c[i] + c[i+1]) / 2.
    return code, (code[:-1] + code[1:]) / 2


@torch.no_grad()
def quantize_nf4_ref(x: torch.Tensor, *, block: int = 64, axis: int = -1) -> torch.Tensor:
    """bitsandbytes NF4, format ``nf4`` (§5.1); see the module docstring.

    Output has ``x``'s shape and dtype; ``x`` is not modified.
    """
    check_float_input(x)
    if block < 1:
        raise ValueError(f"block must be positive, got {block}")
    if x.numel() == 0:
        return x.clone()
    xb, restore = to_blocks(x, axis, block)
    xf = xb.to(F32)
    absmax = xf.abs().amax(-1, keepdim=True)  # (..., n_blocks, 1); NaN propagates
    s = (xf * torch.reciprocal(absmax.clamp(min=BNB_ABSMAX_FLOOR))).clamp(-1.0, 1.0)
    code, bounds = _code_and_bounds(x.device)
    # bucketize (right=False): i with bounds[i-1] < s <= bounds[i], i.e. the nearest
    # code, a midpoint going to the lower one; NaN lands past the last bound (code +1).
    idx = torch.bucketize(s, bounds, out_int32=True)
    return restore((code[idx] * absmax).to(x.dtype))


def _seed_e4m3_quant_py(z: torch.Tensor) -> torch.Tensor:
    """The seed's ``quant_dequant_float(z, QType('e4m3k1b{B}c'))`` with ``k_max = exp_offset = 0``,
    blocks along the last axis (length B), in ``z``'s dtype (§3.4, E > 0 branch).

    The carry shared exponent ``floor(log2(m + 9.6e-7) + 0.5) - 8`` is clipped to
    ``[-k_max - exp_offset, k_max - exp_offset] = [0, 0]``, so it is 0 for any finite
    block max, and NaN (making the block NaN) when the max is NaN.
    """
    m = z.amax(-1, keepdim=True)
    g = torch.floor(seed_log2_f32((m + SEED_LOG_EPS).to(F32)).to(z.dtype) + 0.5) - 8
    g = g.clamp(0.0, 0.0)
    p = torch.floor(seed_log2_f32((z + SEED_LOG_EPS).to(F32)).to(z.dtype)).clamp(E4M3.emin, 8)
    t = z * _seed_pow2(E4M3.man_bits - p)  # z / 2^p · 2^3, both exact power-of-two scalings
    fp = (torch.floor(t + 0.5) * _seed_pow2(p - E4M3.man_bits)).clamp(-E4M3_MAX, E4M3_MAX)
    out = torch.sign(z) * _seed_pow2(g) * fp
    return torch.where(torch.isnan(g), torch.nan, out)  # 2^NaN: the NaN block


def _nf4_grid_exact(xg: torch.Tensor) -> torch.Tensor:
    xf = xg.to(F32)  # (..., n_groups, outer, block)
    a = xf.abs()
    gmax = a.amax(-1, keepdim=True)  # (..., n_groups, outer, 1)
    lev = div_by_const(round_half_away(a / gmax * 7), 7.0)  # exact RNA of the float32 product (§2.8-c)
    omax = gmax.amax(-2, keepdim=True)  # (..., n_groups, 1, 1)
    z = gmax / omax * E4M3_MAX
    zq = round_to_grid(z, E4M3, ties="away")  # quant_py rounds ties away; exponent from the bits
    gdq = div_by_const(zq, E4M3_MAX) * omax
    out = torch.copysign(lev * gdq, xf)
    # Per inner block (..., n_groups, outer, 1): NaN/Inf anywhere in the group makes the
    # group NaN (the seed gets there through Inf/Inf and 0·Inf); otherwise an all-zero
    # inner block is 0, not the seed's 0/0 = NaN (fixed bug).
    finite = torch.isfinite(omax)
    fill = torch.where(finite, 0.0, torch.nan).expand_as(gmax)
    return torch.where((gmax == 0) | ~finite, fill, out)


def _nf4_grid_seed(xg: torch.Tensor) -> torch.Tensor:
    a = xg.abs()  # (..., n_groups, outer, block), input dtype
    gmax = a.amax(-1, keepdim=True)
    lev = div_by_const(torch.floor(a / gmax * 7 + 0.5), 7.0)
    g = gmax.squeeze(-1)  # (..., n_groups, outer)
    omax = g.amax(-1, keepdim=True)
    z = g / omax * E4M3_MAX
    gdq = div_by_const(_seed_e4m3_quant_py(z), E4M3_MAX) * omax
    return torch.sign(xg) * (lev * gdq.unsqueeze(-1))


@torch.no_grad()
def quantize_nf4_grid_ref(
    x: torch.Tensor, *, outer: int = 4, block: int = 64, axis: int = -1, emulate: str = "exact"
) -> torch.Tensor:
    """The seed's NF4 grid, format ``nf4B{outer}b{block}`` (§5.2); see the module docstring.

    Output has ``x``'s shape and dtype; ``x`` is not modified.
    """
    check_emulate(emulate)
    check_float_input(x)
    if outer < 1 or block < 1:
        raise ValueError(f"outer and block must be positive, got {outer}, {block}")
    if x.numel() == 0:
        return x.clone()
    xb, restore = to_blocks(x, axis, outer * block)  # (..., n_groups, outer·block)
    xg = xb.unflatten(-1, (outer, block))
    if emulate == "exact":
        out = _nf4_grid_exact(xg).to(x.dtype)
    else:
        out = _nf4_grid_seed(xg)
    return restore(out.flatten(-2))
