"""Triton HiFX v12 kernels (family ``hifx``: ``hifx2_v12`` ... ``hifx5_v12``, ``hif4``), bit for
bit equal to ``kernels.reference.hifx`` with ``emulate=exact``, both variants (``torch``,
formats-hifloat.md §5.3; ``numpy``, the seed's ``to_HiFX`` structure of §5.5), on any axis.

The input is viewed as (rows, L) with the grouped axis last (the launcher moves it there), each
row cut into ``ceil(L / 64)`` groups; the last one may be partial (the reference zero-pads it,
and zeros raise no maximum). A tile (``_hifx_tile``) is ``GPP`` groups, read and written as
the 2-D tile [group, 64] (whole runs of memory per warp) and computed on as the 4-D tile
[group, 8 sub-blocks, 2 micro-groups, 4 lanes], so every level of §5.2 is one ``tl.max`` over
one axis and every per-level value broadcasts back by indexing. ``_hifx_rows`` views it as the
2-D tile [micro-groups, 4] the statistics take.

Per tile, the reference's float32 operations in its order, exponents from the bits:

1. **m4** (§5.3 step 3) is an int32 max of the magnitude bits over the 4 lanes: for
   non-negative floats the int order is the float order and NaN sorts above +Inf, so NaN
   propagates like the reference's ``amax``.
2. **E4**: ``torch``: the exponent field of fl32(m4 + 2^-45) (always normal; Inf gives 128,
   the reference's ``INF_EXP``; NaN is marked 129, which gives the same levels and tells the
   group's NaN from Emax alone). ``numpy``: ``floor_log2(m4)`` itself (a subnormal m4 scaled
   by 2^64, which is exact, and re-read; 0 gives -150, NaN/Inf 128).
3. **Levels** (steps 4-8) in int32, literally: E8 and Emax by ``tl.max``, L1 = Emax - 2
   (clipped to [-46, 16] for ``torch``), d8 and d4 clamped, S = L1 + d8 + d4.
4. **Scaling** by powers of two built from bits (``_common.pow2``): one factor 2^(M-1-S) for
   ``torch`` (|M-1-S| <= 49), the reference's two factors of ``_pow2_split`` for ``numpy``
   (floor(e/2) is an arithmetic shift), multiplied in the same order, so any underflow of a
   tiny element rounds as it does there.
5. **k = RHA(v)** exactly (``_common.rha``, no int conversions); v >= 2^23 is an integer (or
   Inf) and is its own k. ``torch``
   saturates only k = 2^M (k > 2^M needs the L1 clip at 16 and is kept, §5.3 step 9);
   ``numpy`` every k >= 2^M.
6. ``q = k·2^(S-M+1)``, the sign bit of x ORed in (``copysign`` for q >= 0: negative inputs
   that round to 0 give -0); a group with a NaN (``numpy``: also an Inf) is NaN. bf16 output is
   rounded RNE on the bits, fp16 by Triton's RNE conversion, as the reference's final ``.to()``.

``_hifx_fq`` runs one tile of 64 groups per program (``_common.fq_program``). ``_hifx_sums``
runs the same tile, as ``_hifx_rows``, on tiles of 16 groups, each program looping over every
``programs``-th tile (``_common.stats_program``), with the clip bound of
``kernels.ranges.unit_bound`` per micro-group: ``(2^M - 1)·2^(S-M+1)`` (``numpy``: the same two
factors in the same order), +Inf where ``torch``'s unsaturated k of the micro-group max exceeds
2^M (RHA(v) > 2^M is v >= 2^M + 1/2), NaN for a NaN group. Its ``EXACT_OUT`` holds: q is
``k·2^(S-M+1)`` with k < 2^M <= 16, a bfloat16 (but for a k the L1 clip leaves above 2^M, or an
underflow past 2^-126).

HiFX has no per-tensor reduction (every scale comes from the tile's own groups), so ``cache``
is accepted and left untouched. ``emulate=seed`` (the seed's float ``log2`` and compute in the
input dtype, §5.4) is not implemented: the reference runs it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..formats import FormatSpec
from ..reference.hifx import _EPS, GROUP, L1_MAX, L1_MIN
from ..stats import ErrorSums
from ._common import (
    IN_KIND,
    along_last,
    as_rows,
    check_input,
    fq_program,
    fq_warps,
    in_arg,
    lanes_v,
    load_f32,
    partials,
    pow2,
    reduce,
    rha,
    round_out,
    stats_grid,
    stats_program,
)

__all__ = ["FAMILIES", "unsupported_reason", "fake_quantize", "sums", "hifx_fake_quantize", "hifx_sums"]

FAMILIES = ("hifx",)

#: Elements per program: 64 groups of 64.
TILE_ELEMS = 4096
#: Elements per statistics tile (16 groups): small, as every lane carries its accumulators across
#: the program's tiles (the warps: ``_common.STATS_WARPS``).
STATS_ELEMS = 1024
_VARIANTS = ("torch", "numpy")


def unsupported_reason(spec: FormatSpec) -> str | None:
    """None when the Triton kernels cover ``spec``, else why not."""
    if spec.family != "hifx":
        return f"the triton hifx kernels cover the hifx family only, not {spec.family}"
    if spec["emulate"] != "exact":
        return "emulate=seed (the seed's float log2 and input-dtype compute) is not implemented in triton"
    if spec["variant"] not in _VARIANTS:
        return f"variant={spec['variant']} is not implemented in triton"
    if spec["N"] not in (2, 3, 4, 5):
        return f"hifx{spec['N']}_v12 is not implemented in triton (N = 2..5)"
    return None


# --------------------------------------------------------------------------- device code


@triton.jit
def _hifx_tile(t, args, K: tl.constexpr):
    """Tile ``t``, GPP groups: (x, q, valid, offs, bound) as [GPP, 64] tiles, q float32 before
    the output cast; bound per micro-group [GPP, 8, 2]. args (x_ptr, n_groups, ngrp, L),
    K (GPP, IN_KIND, M, TORCH, EPS, L1_LO, L1_HI)."""
    x_ptr, n_groups, ngrp, L = args
    GPP: tl.constexpr = K[0]
    IN_KIND: tl.constexpr = K[1]
    M: tl.constexpr = K[2]
    TORCH: tl.constexpr = K[3]
    EPS: tl.constexpr = K[4]
    L1_LO: tl.constexpr = K[5]
    L1_HI: tl.constexpr = K[6]
    # Group ids fit int32 (the launcher checks): the division is per group and 32-bit; only
    # the element offsets need int64.
    g = t * GPP + tl.arange(0, GPP)
    row = g // ngrp
    col = (g - row * ngrp) * 64
    # Loaded (and returned) as the 2-D tile [GPP, 64], each group one contiguous run, so that
    # a warp reads whole runs of memory; built as the 4-D tile directly, the compiler laid its
    # warps across groups (one 8-byte piece per group and thread) and the loads and stores
    # took several times the memory transactions (L2 at 83 % of its peak, DRAM at 18 %).
    k = tl.arange(0, 64)[None, :]
    valid = (g < n_groups)[:, None] & (col[:, None] + k < L)
    offs = (row.to(tl.int64) * L + col)[:, None] + k
    x2 = load_f32(x_ptr, offs, valid, IN_KIND)
    x = tl.reshape(x2, (GPP, 8, 2, 4))
    xb = x.to(tl.int32, bitcast=True)
    ab = xb & 0x7FFFFFFF
    sign = xb ^ ab

    # Step 3: m4 per micro-group as the int max of magnitude bits (NaN on top), then E4.
    m4b = tl.max(ab, axis=3)  # [GPP, 8, 2]
    m4 = m4b.to(tl.float32, bitcast=True)
    if TORCH:
        # The exponent of fl32(m4 + 2^-45): a normal float; Inf reads 255 - 127 = 128 (the
        # reference's INF_EXP). A NaN gets 129, which yields the same levels (L1 clips to 16,
        # d8 = d4 = 1 either way) and marks its group for step 6 without another reduction.
        e4 = (((m4 + EPS).to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127
        e4 = tl.where(m4b > 0x7F800000, 129, e4)
    else:
        field = m4b >> 23
        scaled = (m4 * 18446744073709551616.0).to(tl.int32, bitcast=True)  # ·2^64, exact
        e4 = tl.where(field == 0, (scaled >> 23) - (127 + 64), field - 127)
        e4 = tl.where(m4b == 0, -150, e4)  # reference._bits.ZERO_EXP
        e4 = tl.where(field == 255, 128, e4)  # INF_EXP; finite exponents are <= 127

    # Steps 4-8, literally (the clamps as the reference's _level_exponents applies them).
    e8 = tl.max(e4, axis=2)  # [GPP, 8]
    emax = tl.max(e8, axis=1)  # [GPP]
    # The group's output is NaN for a NaN (torch) or any non-finite element (numpy).
    bad = emax >= (129 if TORCH else 128)
    l1 = emax - 2
    if TORCH:
        l1 = tl.minimum(tl.maximum(l1, L1_LO), L1_HI)
    d8 = tl.maximum(e8 - l1[:, None] - 1, 0)
    if TORCH:
        d8 = tl.minimum(d8, 1)
    d4 = tl.maximum(e4 - l1[:, None, None] - d8[:, :, None], 0)
    if TORCH:
        d4 = tl.minimum(d4, 1)
    s = l1[:, None, None] + d8[:, :, None] + d4  # [GPP, 8, 2]

    # Step 9: v = |x|·2^(M-1-S) with the reference's factors in its order.
    a = ab.to(tl.float32, bitcast=True)
    eu = (M - 1) - s
    ed = s - (M - 1)
    if TORCH:
        up = pow2(eu)
        v = a * up[:, :, :, None]
    else:
        up = pow2(eu >> 1)  # _pow2_split: 2^floor(e/2) · 2^(e - floor(e/2))
        up2 = pow2(eu - (eu >> 1))
        v = a * up[:, :, :, None] * up2[:, :, :, None]
    k = rha(v)  # exact; v >= 2^23 (or Inf) is an integer already
    if TORCH:
        k = tl.where(k == 2**M, 2**M - 1.0, k)  # saturation without carry; k > 2^M is kept
    else:
        k = tl.minimum(k, 2**M - 1.0)
    # Step 10: q = k·2^(S-M+1) (exact but for the same underflow as the reference), sign ORed in.
    if TORCH:
        q = k * pow2(ed)[:, :, :, None]
    else:
        q = k * pow2(ed >> 1)[:, :, :, None] * pow2(ed - (ed >> 1))[:, :, :, None]
    q = (q.to(tl.int32, bitcast=True) | sign).to(tl.float32, bitcast=True)
    q = tl.reshape(tl.where(bad[:, None, None, None], float("nan"), q), (GPP, 64))

    # kernels.ranges._hifx: the top k = 2^M - 1 on the micro-group's grid (only the statistics
    # read it; the fake-quantize kernel's compiler drops it).
    if TORCH:
        bound = (2**M - 1.0) * pow2(ed)
        # Where the L1 clip lets RHA(m4·2^(M-1-S)) exceed 2^M nothing saturates: no top.
        bound = tl.where(m4 * up >= 2**M + 0.5, float("inf"), bound)
    else:
        bound = (2**M - 1.0) * pow2(ed >> 1) * pow2(ed - (ed >> 1))
    bound = tl.where(bad[:, None, None], float("nan"), bound)
    return x2, q, valid, offs, bound


@triton.jit
def _hifx_rows(t, args, K: tl.constexpr):
    """``_hifx_tile`` as the 2-D tiles the statistics take: [GPP·16, 4], one row per
    micro-group, the bound per row [GPP·16, 1] rounded to the output dtype. (The statistics
    measured faster on this view than on the 4-D tile: 18 % against 10 % of copy on float32.)"""
    x, q, valid, offs, bound = _hifx_tile(t, args, K)
    return as_rows(x, q, valid, offs, round_out(bound, K[1]), K[0] * 16, 4)


# One fake-quantization kernel and one statistics kernel around the tile function.


@triton.jit
def _hifx_fq(x_ptr, out_ptr, n_groups, ngrp, L, GPP: tl.constexpr, IN_KIND: tl.constexpr, M: tl.constexpr,
             TORCH: tl.constexpr, EPS: tl.constexpr, L1_LO: tl.constexpr, L1_HI: tl.constexpr):  # fmt: skip
    K: tl.constexpr = (GPP, IN_KIND, M, TORCH, EPS, L1_LO, L1_HI)
    fq_program(_hifx_tile, (x_ptr, n_groups, ngrp, L), K, out_ptr, IN_KIND)


@triton.jit
def _hifx_sums(x_ptr, cnt_ptr, sum_ptr, n_groups, ngrp, L, n_tiles, GPP: tl.constexpr, IN_KIND: tl.constexpr,
               M: tl.constexpr, TORCH: tl.constexpr, EPS: tl.constexpr, L1_LO: tl.constexpr, L1_HI: tl.constexpr,
               INPUT_STATS: tl.constexpr, UNROLL: tl.constexpr, V: tl.constexpr):  # fmt: skip
    K: tl.constexpr = (GPP, IN_KIND, M, TORCH, EPS, L1_LO, L1_HI)
    # EXACT_OUT=True: q = k·2^(S-M+1) with k < 2^M <= 16 is normally a bfloat16 already.
    stats_program(_hifx_rows, (x_ptr, n_groups, ngrp, L), K, n_tiles, cnt_ptr, sum_ptr, (GPP * 16, 4), IN_KIND, True,
                  INPUT_STATS, UNROLL, V)  # fmt: skip


# --------------------------------------------------------------------------- launchers


def _constants(spec: FormatSpec, dtype: torch.dtype, tile: int = TILE_ELEMS) -> dict:
    """The kernels' constexprs for ``tile`` elements (tile / 64 groups) per tile."""
    return dict(
        GPP=tile // GROUP,
        IN_KIND=IN_KIND[dtype],
        M=spec["N"] - 1,
        TORCH=spec["variant"] == "torch",
        EPS=_EPS,
        L1_LO=L1_MIN,
        L1_HI=L1_MAX,
    )


def _rows_view(x: torch.Tensor, spec: FormatSpec, cache: dict | None = None) -> tuple[torch.Tensor, int]:
    """x with the grouped axis moved last, contiguous (``_common.along_last``); the axis index."""
    axis = spec["axis"] % x.dim()
    return along_last(x, axis, cache), axis


def _grid(xm: torch.Tensor, c: dict) -> tuple[int, int, int, int]:
    L = xm.shape[-1]
    ngrp = triton.cdiv(L, GROUP)
    n_groups = (xm.numel() // L) * ngrp
    if n_groups + c["GPP"] >= 2**31:  # 2^37 elements: beyond any GPU's memory today
        raise ValueError(f"the triton hifx kernels index groups in int32; {n_groups} groups is too many")
    return n_groups, ngrp, L, triton.cdiv(n_groups, c["GPP"])


def hifx_fake_quantize(x: torch.Tensor, spec: FormatSpec) -> torch.Tensor:
    """``fake_quantize(x, spec, backend="reference")`` for a supported hifx spec, bit for bit."""
    check_input(x, unsupported_reason(spec), "hifx")
    if x.dim() == 0 or x.numel() == 0:  # the reference raises, or returns an empty tensor
        from ..reference import fake_quantize_ref

        return fake_quantize_ref(x, spec, None)
    xm, axis = _rows_view(x.detach(), spec)
    c = _constants(spec, x.dtype)
    out = torch.empty_like(xm)
    n_groups, ngrp, L, programs = _grid(xm, c)
    warps = fq_warps("hifx", x.dtype, programs, x.device, c["GPP"] * 64)
    _hifx_fq[(programs,)](in_arg(xm), in_arg(out), n_groups, ngrp, L, **c, num_warps=warps)
    return out.movedim(-1, axis).contiguous()


def hifx_sums(x: torch.Tensor, spec: FormatSpec, input_stats: bool = True, cache: dict | None = None) -> ErrorSums:
    """The :class:`ErrorSums` of ``fake_quantize(x, spec)`` with the clip bound of
    ``kernels.ranges.unit_bound``, in one pass over x that writes no tensor of x's size.
    ``cache`` is not used: hifx has no per-tensor reduction to share between formats."""
    check_input(x, unsupported_reason(spec), "hifx")
    if x.dim() == 0 or x.numel() == 0:
        from ..ranges import unit_bound
        from ..reference import fake_quantize_ref
        from ..stats import error_sums_ref

        return error_sums_ref(x, fake_quantize_ref(x, spec, None), unit_bound(x, spec), input_stats=input_stats)
    xm, _ = _rows_view(x.detach(), spec, cache)
    c = _constants(spec, x.dtype, STATS_ELEMS)
    n_groups, ngrp, L, tiles = _grid(xm, c)
    programs, unroll, warps = stats_grid("hifx", x.dtype, tiles, x.device)
    cnt, sums = partials(programs, x.device)
    v = lanes_v((c["GPP"] * 16, 4), x.dtype, warps, unroll, input_stats)
    _hifx_sums[(programs,)](
        in_arg(xm), cnt, sums, n_groups, ngrp, L, tiles, INPUT_STATS=input_stats, UNROLL=unroll, V=v,
        num_warps=warps, **c,
    )  # fmt: skip
    return reduce(cnt, sums, x.numel(), input_stats)


def fake_quantize(x: torch.Tensor, spec: FormatSpec, generator: torch.Generator | None = None) -> torch.Tensor:
    """The module interface's ``fake_quantize`` (the family rounds deterministically: no generator)."""
    return hifx_fake_quantize(x, spec)


sums = hifx_sums
