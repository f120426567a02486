"""Pure-PyTorch reference for HiFX v12 (``hifx2_v12`` … ``hifx5_v12``; HiF4 = ``hifx4_v12``).

Spec formats-hifloat.md §5. A group is 64 consecutive elements along the quantization
axis, split into 8 sub-blocks of 8 and each of those into 2 micro-groups of 4. Each
micro-group gets the exponent S = L1 + d8 + d4 (one shared 6-bit level-1 exponent and
two 1-bit increments), and each element is a sign plus an M = N - 1 bit magnitude
k·2^(S - M + 1).

``variant="torch"`` is the seed's ``QFuncs/hifxv12.py`` (§5.3): exponents of
fl32(max4 + 2^-45), L1 clipped to [-46, 16], k = 2^M saturated to 2^M - 1, a NaN
poisons its whole group, Inf is kept. ``variant="numpy"`` is the seed's numpy
``to_HiFX`` structure (§5.5): exponent of max4 itself, no clip, every k >= 2^M
saturated, NaN/Inf make the group NaN, and (fixing the seed) an all-zero group gives 0.

``emulate="exact"`` (default): float32 compute, exponents read from the float bits,
exact ties-away. ``emulate="seed"``: the seed's float ``log2`` (``seed_log2_f32``) and
``floor(v + 0.5)`` (§5.4-1/2); with ``variant="torch"`` and bf16/fp16 input every step
runs in the input dtype like the seed with ``force_fp32=False`` (§5.4-3); with
``variant="numpy"`` the output is float64 and all-zero groups are NaN, as ``to_HiFX``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._bits import F32, I32, exp2i, floor_log2, seed_log2_f32

GROUP = 64  # elements per level-1 group
SUB = 8  # sub-blocks per group (level 2)
MICRO = 2  # micro-groups per sub-block (level 3)
LANE = 4  # elements per micro-group

#: Level-1 exponent range of the torch kernel (§5.3 step 5).
L1_MIN, L1_MAX = -46, 16
#: Offset the torch kernel adds to max4 before its exponent (§5.3 step 3).
_EPS = 2.0**-45
_EPS_F16 = 2.0**-14  # fp16 compute (§5.3 step 3), emulate="seed" only


def _to_groups(x: torch.Tensor, axis: int) -> tuple[torch.Tensor, int]:
    """Move ``axis`` last, zero-pad it to a multiple of 64 and view it as
    [..., groups, 8, 2, 4]. Zero padding never changes a maximum (§5.3 step 1).
    Returns the view and the unpadded length."""
    t = x.movedim(axis, -1)
    length = t.shape[-1]
    if length % GROUP:
        t = F.pad(t, (0, (-length) % GROUP))
    return t.unflatten(-1, (-1, SUB, MICRO, LANE)), length


def _from_groups(t: torch.Tensor, length: int, axis: int) -> torch.Tensor:
    """Inverse of :func:`_to_groups`: [..., groups, 8, 2, 4] back to the input layout."""
    return t.flatten(-4)[..., :length].movedim(-1, axis).contiguous()


def _level_exponents(e4: torch.Tensor, clip: bool) -> torch.Tensor:
    """§5.3 steps 4-8 on the micro-group exponents e4 [..., G, 8, 2]: S [..., G, 8, 2, 1].

    Works on int32 or float tensors (the seed's float exponents may be ±inf / NaN).
    """
    e8 = e4.amax(dim=-1, keepdim=True)  # [..., G, 8, 1]
    emax = e8.amax(dim=-2, keepdim=True)  # [..., G, 1, 1]
    l1 = emax - 2
    if clip:
        l1 = l1.clamp(L1_MIN, L1_MAX)
    # d8 = 1 exactly when the sub-block holds an exponent-Emax element, d4 likewise one
    # level down; both are 0 or 1. The numpy variant only clamps below, which is the
    # same for finite exponents (without the L1 clip they cannot exceed 1).
    d8 = (e8 - l1 - 1).clamp(min=0, max=1 if clip else None)
    d4 = (e4 - l1 - d8).clamp(min=0, max=1 if clip else None)
    return (l1 + d8 + d4).unsqueeze(-1)


def _pow2_split(e: torch.Tensor) -> list[torch.Tensor]:
    """2^e as two exact float32 factors, for int32 e of up to about ±250 (numpy variant).

    Without the L1 clip a group's exponents range over the whole float32 exponent
    range (down to _bits.ZERO_EXP - 2 for an all-zero group), where one factor 2^e
    could overflow or underflow although the scaled result would not."""
    half = torch.div(e, 2, rounding_mode="floor")
    return [exp2i(half), exp2i(e - half)]


def _times(t: torch.Tensor, factors: list[torch.Tensor]) -> torch.Tensor:
    """t multiplied by each (broadcast) factor in turn."""
    for f in factors:
        t = t * f
    return t


def _hifx_exact(x: torch.Tensor, n: int, axis: int, variant: str) -> torch.Tensor:
    m = n - 1
    torch_variant = variant == "torch"
    g, length = _to_groups(x.to(F32), axis)  # [..., G, 8, 2, 4]
    a = g.abs()
    m4 = a.amax(dim=-1)  # [..., G, 8, 2]; NaN propagates
    if torch_variant:
        # §5.3 step 3: the exponent of fl32(m4 + 2^-45), exactly. A NaN or Inf m4 gives
        # INF_EXP (128), so L1 clips to 16 and an Inf element stays Inf (§5.3).
        e4 = floor_log2(m4 + _EPS)
        # A NaN anywhere makes the whole 64-group NaN, as the seed's max does (§5.3).
        bad = torch.isnan(m4)
    else:
        e4 = floor_log2(m4)  # to_HiFX: no offset; zero gives ZERO_EXP
        # to_HiFX: log2 of NaN/Inf reaches Emax and every level as NaN (§5.5 table).
        bad = ~torch.isfinite(m4)
    s = _level_exponents(e4, clip=torch_variant)  # int32 [..., G, 8, 2, 1]
    bad = bad.any(dim=-1).any(dim=-1)[..., None, None, None]  # [..., G, 1, 1, 1]

    # The per-micro-group powers of two (small tensors). With the L1 clip |M-1-S| <= 49,
    # so one exact factor suffices; the numpy variant needs two (_pow2_split).
    if torch_variant:
        up, down = [exp2i((m - 1) - s)], [exp2i(s - (m - 1))]
    else:
        up, down = _pow2_split((m - 1) - s), _pow2_split(s - (m - 1))
    # A bad group's output becomes NaN through its dequantization factor.
    down[0] = torch.where(bad, float("nan"), down[0])

    # Step 9: v = |x|·2^(M-1-S), exact (a power-of-two scaling, and v's underflow only
    # loses values far below the rounding threshold).
    v = _times(a, up)
    # Exact RHA on v >= 0: floor(v) + (frac >= 0.5); v - floor(v) is exact for any
    # float32 (unlike floor(v + 0.5), which rounds 0.5 - 2^-25 up, §5.4-2).
    k = torch.floor(v)
    k = k + (v - k >= 0.5).to(F32)
    kmax = float(2**m - 1)
    if torch_variant:
        # Saturation without carry: only k = 2^M (k > 2^M needs the L1 clip at 16; kept).
        k = torch.where(k == 2**m, kmax, k)
    else:
        k = k.clamp(max=kmax)
    q = _times(k, down)
    out = torch.copysign(q, g)  # step 10; negative inputs that round to 0 give -0
    return _from_groups(out, length, axis).to(x.dtype)


def _float_exp2(e: torch.Tensor) -> torch.Tensor:
    """float32 ``2**e`` for a float tensor of integer values (or NaN), exact.

    Models the seed's ``2 ** e`` / ``torch.exp2(e)``: overflow gives Inf, underflow 0,
    NaN stays NaN."""
    ef = e.to(F32)
    p = exp2i(ef.nan_to_num(0.0).clamp(-1000, 1000).to(I32))
    return torch.where(torch.isnan(ef), float("nan"), p)


def _hifx_seed_torch(x: torch.Tensor, n: int, axis: int) -> torch.Tensor:
    """``QFuncs/hifxv12.py`` step by step in x's dtype (the seed's compute dtype)."""
    m = n - 1
    cd = x.dtype
    g, length = _to_groups(x, axis)
    a = g.abs()
    sign = torch.sign(g)
    m4 = a.amax(dim=-1)
    eps = _EPS_F16 if cd == torch.float16 else _EPS
    # torch.log2 in a bf16/fp16 compute dtype is the float32 log2 rounded to that dtype.
    e4 = torch.floor(seed_log2_f32((m4 + eps).to(F32)).to(cd))
    s = _level_exponents(e4, clip=True)  # float, in cd
    mant = a / _float_exp2(s).to(cd)
    mant = torch.floor(mant * 2 ** (m - 1) + 0.5) / 2 ** (m - 1)
    mant = torch.where(mant == 2, 2 - 2.0 ** (1 - m), mant)
    out = sign * mant * _float_exp2(s).to(cd)
    return _from_groups(out, length, axis)


def _f64_exp2(e: torch.Tensor) -> torch.Tensor:
    """float64 ``2**e`` for a float64 tensor of integer values in [-1022, 1023], or NaN
    (then NaN), built from the bits so that it is exact on every device."""
    bits = (e.nan_to_num(0.0).clamp(-1022, 1023).to(torch.int64) + 1023) << 52
    return torch.where(torch.isnan(e), float("nan"), bits.view(torch.float64))


def _hifx_seed_numpy(x: torch.Tensor, n: int, axis: int) -> torch.Tensor:
    """numpy ``to_HiFX`` (§5.5) as the seed evaluates it; float64 result.

    Its exponent is floor(log2(|x|)) with numpy's float32 log2 (the 2^-1000 offset
    underflows to 0 in float32): -inf for a zero, so an all-zero group gives
    -inf - (-inf) = NaN, and Inf or NaN make the group NaN too. Those float32 exponents
    are stored into float64 arrays, so everything after the log2 (levels, the scaling,
    floor(v + 0.5), the product with 2.0**EG) runs in float64. For float32 inputs that
    arithmetic is exact; only the log2 rounding (§5.4-1) and the NaN groups differ
    from the exact variant. The float64 output can hold values that float32 cannot
    (below 2^-149 or at 2^128).
    """
    f64 = torch.float64
    ng = n - 2  # to_HiFX's fraction bits (= M - 1)
    g, length = _to_groups(x.to(F32), axis)  # [..., G, 8, 2, 4]
    a = g.abs()
    sign = torch.where(g < 0, -1.0, 1.0).to(f64)
    # max of floor(log2) over 4 = floor(log2(max)), log2 being monotonic; NaN propagates.
    e4 = torch.floor(seed_log2_f32(a.amax(dim=-1))).to(f64)  # [..., G, 8, 2]
    e8 = e4.amax(dim=-1, keepdim=True)
    l1 = e8.amax(dim=-2, keepdim=True) - 2
    d8 = e8 - l1 - 1
    d8 = torch.where(d8 < 0, 0.0, d8)  # E1_8[E1_8 < 0] = 0: NaN stays NaN
    d4 = e4 - d8 - l1
    d4 = torch.where(d4 < 0, 0.0, d4)
    s = (d4 + d8 + l1).unsqueeze(-1)  # [..., G, 8, 2, 1]; finite or NaN
    in_grp = torch.floor(a.to(f64) * _f64_exp2(ng - s) + 0.5) * 2.0**-ng
    in_grp = torch.where(in_grp >= 2, 2 - 2.0**-ng, in_grp)
    out = sign * in_grp * _f64_exp2(s)
    return _from_groups(out, length, axis)


def quantize_hifx_ref(
    x: torch.Tensor,
    *,
    n: int,
    axis: int = -1,
    variant: str = "torch",
    emulate: str = "exact",
) -> torch.Tensor:
    """Fake-quantize ``x`` to ``hifx{n}_v12`` (n = 2..5) in 64-groups along ``axis``.

    ``variant="torch"`` (default) is spec §5.3; ``variant="numpy"`` is the seed's
    ``to_HiFX`` structure of §5.5, on any axis and shape. A ragged tail is zero-padded
    to 64 and cropped. The output has x's dtype (rounded with RNE from float32), except
    ``variant="numpy", emulate="seed"``, which returns float64 like ``to_HiFX``.
    ``emulate="seed"`` reproduces the seed's float arithmetic (module docstring).
    The input tensor is never modified.
    """
    if n not in (2, 3, 4, 5):
        raise ValueError(f"hifx{n}_v12: n must be 2, 3, 4 or 5")
    if variant not in ("torch", "numpy"):
        raise ValueError(f"variant={variant!r}: expected 'torch' or 'numpy'")
    if emulate not in ("exact", "seed"):
        raise ValueError(f"emulate={emulate!r}: expected 'exact' or 'seed'")
    if not x.is_floating_point():
        raise TypeError(f"hifx needs a floating-point tensor, got {x.dtype}")
    if x.dim() == 0:
        raise ValueError("hifx needs at least one dimension to group along")
    axis = axis % x.dim()
    x = x.detach()
    if x.numel() == 0:
        return x.to(torch.float64 if (variant, emulate) == ("numpy", "seed") else x.dtype, copy=True)
    if emulate == "exact":
        return _hifx_exact(x, n, axis, variant)
    if variant == "torch":
        return _hifx_seed_torch(x, n, axis)
    if n != 4:
        raise ValueError("variant='numpy' with emulate='seed' exists only for n=4 (to_HiFX)")
    return _hifx_seed_numpy(x, n, axis)
