"""Reference NVFP4 kernels: the seed's one-level ``nvf4`` and NVIDIA's two-level ``nvfp4`` (spec formats-mx.md §4).

Both quantize blocks of 16 consecutive elements along ``axis`` (the tail block
zero-padded) to E2M1 elements (0, 0.5, 1, 1.5, 2, 3, 4, 6) with one E4M3 scale
per block.

:func:`quantize_nvf4_ref`, format ``nvf4`` (seed ``QFuncs/nvf4.py``, §4.2): the
block scale is ``S = e4m3(clip(amax_b / 6, 0, 448))`` (RNE, E4M3 subnormals down
to 2^-9 allowed), elements are ``e2m1_rne(|x| / S)`` saturated at 6, and the
output is ``sign(x)·S·q``. There is no per-tensor scale.

- ``emulate="exact"`` (default, golden ``expected_exact``): that algorithm in
  float32 with exponents from the float bits; bf16/fp16 inputs are upcast and
  the result rounded back (RNE). Fixed seed bug: a block whose scale rounds to
  0 (``amax_b <= 6·2^-10``) gives 0, where the seed's ``+2^-60`` guard leaked
  into the result as ``±6·2^-60``.
- ``emulate="seed"`` (golden ``expected``): the seed's own arithmetic, op for op
  in the input dtype: float ``log2`` (modelled by ``_bits.seed_log2_f32``),
  ``+ε`` before each log (ε = 2^-14 for fp16 inputs, else 2^-60) and
  ``S' = S + ε`` as the divisor and the decode scale.
- Special values: a NaN makes its whole block NaN. ±Inf becomes NaN at that
  element only, and the rest of its block is quantized against ``S = 448``
  (``amax/6`` clipped), which usually gives 0. An all-zero block gives 0.

:func:`quantize_nvfp4_ref`, format ``nvfp4`` (NVIDIA two-level, §4.1, with
torchao's ``NVFP4Tensor`` arithmetic of §4.4): a float32 per-tensor scale
``pts = amax / 2688`` (2688 = 448·6) lets the E4M3 block scales use their full
range: ``s_b = e4m3(clamp(amax_b / 6 / pts, 2^-6, 448))``; elements are
``e2m1_rne(x · ((1/pts) / s_b))`` (torchao multiplies by that reciprocal, which
can move an exact tie by one ulp, §4.4) and decode as ``e2m1 · (pts·s_b)``.
Computed in float32; bf16/fp16 inputs are upcast and the result is rounded
back. Special cases:

- NaN or ±Inf anywhere: the whole tensor is NaN (torchao does the same).
- ``pts < 2^-121`` (``amax`` below about 1.0e-33), including an all-zero
  tensor: the input is returned unchanged. Below that ``(1/pts)/s_b`` overflows
  float32 for blocks with the smallest scale 2^-6 and torchao returns NaN (for an
  all-zero tensor, 0/0). Returning the input mirrors the per-tensor FP8 guard
  (``fp8.py``).
- Blocks with ``amax_b`` far below the tensor amax get the smallest block scale
  2^-6 (torchao's clamp), so they keep some resolution; an all-zero block gives 0.

The module also holds :func:`to_blocks`, the blocking used by the NF4 kernels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ._bits import F32, I32, seed_log2_f32
from .fp8 import E2M1, E4M3, check_emulate, check_float_input, div_by_const, round_to_grid

__all__ = ["NVFP4_BLOCK", "to_blocks", "quantize_nvf4_ref", "quantize_nvfp4_ref"]

NVFP4_BLOCK = 16
#: 448·6: the per-tensor scale maps the tensor amax onto the largest block scale
#: times the largest element (§4.1 ``S_enc = 2688 / A``).
NVFP4_TENSOR_DIVISOR = 2688.0
#: torchao's lower clamp of the two-level block scale: ``torch.finfo(float8_e4m3fn).tiny``.
E4M3_MIN_NORMAL = 2.0**-6
#: Smallest per-tensor scale for which ``(1/pts)/s_b <= 2^121·2^6`` stays finite (see module doc).
NVFP4_MIN_PTS = 2.0**-121


def to_blocks(x: torch.Tensor, axis: int, block: int) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """Split ``axis`` of ``x`` into blocks: returns ``(xb, restore)``.

    ``xb`` has shape ``(*other_dims, n_blocks, block)``: ``axis`` is moved last and
    zero-padded at its end to a multiple of ``block`` (the seed pads the same way;
    zeros never raise a block's amax). ``restore(yb)`` undoes it for a result of
    ``xb``'s shape: it drops the padding and moves the axis back, returning a
    contiguous tensor. ``x`` is never written to.
    """
    if x.ndim == 0:
        raise ValueError("a 0-dim tensor has no axis to block")
    axis = axis % x.ndim if -x.ndim <= axis < x.ndim else None
    if axis is None:
        raise ValueError(f"axis out of range for a {x.ndim}-D tensor")
    xm = x.movedim(axis, -1)
    n = xm.shape[-1]
    extra = (-n) % block
    if extra:
        xm = F.pad(xm, (0, extra))
    # Contiguous blocks: elementwise ops and bucketize then run on dense memory (one
    # copy when ``axis`` is not the last one, none otherwise).
    xb = xm.reshape(*xm.shape[:-1], -1, block).contiguous()

    def restore(yb: torch.Tensor) -> torch.Tensor:
        y = yb.reshape(*yb.shape[:-2], -1)[..., :n]  # (*other_dims, padded n) -> drop padding
        return y.movedim(-1, axis).contiguous()

    return xb, restore


def _seed_floor_log2(t: torch.Tensor) -> torch.Tensor:
    """The seed's ``torch.floor(torch.log2(t))`` in ``t``'s dtype: torch computes the
    log in float32 and rounds it to bf16/fp16 for those dtypes (§2.8-b)."""
    return torch.floor(seed_log2_f32(t.to(F32)).to(t.dtype))


def _seed_pow2(e: torch.Tensor) -> torch.Tensor:
    """The seed's ``2 ** e`` for a float tensor of integer values, exactly, in ``e``'s dtype.

    Built from the float32 exponent field, ``(e + 127) << 23``, which is exact for
    ``-126 <= e <= 127`` (what ``exp2i`` gives there, in a third of the passes). Every
    finite exponent of the seed paths lies in that range: scale exponents in
    [-9, 9], element exponents in [-118, 119] since ``|x| / S <= FLT_MAX / 448 < 2^120``.
    ±Inf and NaN exponents (from Inf/NaN elements) are clamped / zeroed only to keep
    the int32 conversion defined; the callers mask those elements.
    """
    ei = torch.nan_to_num(e.to(F32).clamp(-126.0, 127.0), nan=0.0).to(I32)
    return ((ei + 127) << 23).view(F32).to(e.dtype)


def _nvf4_exact(xb: torch.Tensor) -> torch.Tensor:
    xf = xb.to(F32)
    a = xf.abs()
    sf = div_by_const(a.amax(-1, keepdim=True), 6.0).clamp(0.0, 448.0)  # (..., n_blocks, 1); NaN stays NaN
    s = round_to_grid(sf, E4M3)  # §4.2 step 3: RNE, exponent floor -6 (subnormal scales)
    q = round_to_grid(a / s, E2M1)  # §4.2 step 5: RNE on the E2M1 grid, saturating at 6
    out = torch.copysign(q * s, xf)  # q·s is exact: 4 x 2 significant bits, >= 2^-10
    # Fixed bug: a zero scale means 0 (a / 0 above is Inf/NaN, discarded here).
    out = torch.where(s == 0, 0.0, out)
    # The seed's ±Inf element: log2(Inf) = Inf, 2^-Inf = 0, Inf·0 = NaN (§4.2).
    return torch.where(torch.isinf(xf), torch.nan, out)


def _nvf4_seed(xb: torch.Tensor) -> torch.Tensor:
    # Op for op in the input dtype (§4.2, QFuncs/nvf4.py); ε as the seed picks it.
    eps = 2.0**-14 if xb.dtype == torch.float16 else 2.0**-60
    a = xb.abs()
    sf = div_by_const(a.amax(-1, keepdim=True), 6.0).clamp(0.0, 448.0)
    e = _seed_floor_log2(sf + eps).clamp(min=-6)
    s = torch.round(sf * _seed_pow2(3 - e)) * _seed_pow2(e - 3)
    s = s + eps  # the seed's divide-by-zero guard, also used to decode
    v = a / s
    e2 = _seed_floor_log2(v + eps).clamp(min=0)
    m1 = torch.round(v * _seed_pow2(1 - e2)) * 0.5
    q = (_seed_pow2(e2) * m1).clamp(0.0, 6.0)
    out = torch.sign(xb) * s * q
    # Non-finite v (an Inf element, or a NaN block): the seed's 2^-Inf = 0 gives Inf·0 = NaN.
    return torch.where(torch.isfinite(v), out, torch.nan)


@torch.no_grad()
def quantize_nvf4_ref(x: torch.Tensor, *, axis: int = -1, emulate: str = "exact") -> torch.Tensor:
    """The seed's one-level NVFP4, format ``nvf4`` (§4.2); see the module docstring.

    Output has ``x``'s shape and dtype; ``x`` is not modified.
    """
    check_emulate(emulate)
    check_float_input(x)
    if x.numel() == 0:
        return x.clone()
    xb, restore = to_blocks(x, axis, NVFP4_BLOCK)
    out = _nvf4_exact(xb).to(x.dtype) if emulate == "exact" else _nvf4_seed(xb)
    return restore(out)


@torch.no_grad()
def quantize_nvfp4_ref(x: torch.Tensor, *, axis: int = -1) -> torch.Tensor:
    """NVIDIA two-level NVFP4, format ``nvfp4`` (§4.1, torchao arithmetic §4.4); see the module docstring.

    Output has ``x``'s shape and dtype; ``x`` is not modified. The tensor amax stays a
    0-dim device tensor (no host synchronisation).
    """
    check_float_input(x)
    if x.numel() == 0:
        return x.clone()
    xb, restore = to_blocks(x, axis, NVFP4_BLOCK)
    xf = xb.to(F32)
    bmax = xf.abs().amax(-1, keepdim=True)  # (..., n_blocks, 1)
    amax = bmax.amax()  # 0-dim tensor amax (padding zeros never raise it); NaN propagates
    pts = div_by_const(amax, NVFP4_TENSOR_DIVISOR)  # torchao per_tensor_amax_to_scale
    s_b = round_to_grid((div_by_const(bmax, 6.0) / pts).clamp(E4M3_MIN_NORMAL, E4M3.max_norm), E4M3)
    r = torch.reciprocal(pts) / s_b  # torchao: (1.0 / per_tensor_scale) / block_scale
    q = round_to_grid(xf * r, E2M1)  # torchao clamps to ±6 then casts RNE: the same as saturating RNE
    out = q * (pts * s_b)  # torchao dequantize: e2m1 · (pts · s_b) in float32
    out = torch.where(pts < NVFP4_MIN_PTS, xf, out)  # tiny or all-zero tensor: unchanged
    out = torch.where(torch.isfinite(amax), out, torch.nan)  # NaN/Inf anywhere: all NaN
    return restore(out.to(x.dtype))
