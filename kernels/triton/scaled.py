"""Triton kernels for the per-tensor and per-row scaled formats and the casts: families
``fp8tensor`` (formats-mx.md §6), ``int8sym`` (§8) and ``cast`` (§7), both emulate modes,
bit for bit with ``kernels.reference.fp8`` / ``int8sym`` / ``cast``.

Each family has one tile function (``_fp8_tile``, ``_cast_tile``, ``_int8_tile``) shared by its
fake-quantization kernel (``_common.fq_program``: one tile per program, stored in the output
dtype) and its fused statistics kernel (``_common.stats_program``: each program accumulates many
tiles, no tensor of x's size is written). Tiles are 2-D: for the elementwise families a run of
the flat tensor cut into rows of ``_TC`` (4096 elements for fake quantization, 1024 for the
statistics, whose lanes carry accumulators); for ``int8sym`` a block of the (rows, columns)
matrix described below.

**fp8tensor** (§6). The per-tensor amax (max |x|, NaN propagating) is a torch reduction kept
in the caller's cache under ``("absmax",)``, read by every program as a 0-dim device tensor
(no host synchronisation). Each program then repeats the reference's scalar arithmetic:
``scale = fl32(max_norm / amax)`` divided in float64 (seed: ``max_norm / (amax + 2^-23)``, the
float64 sum being the seed's Python double), one scalar float64 division per program, the
same IEEE operation in the interpreter and on the GPU. Per element, on magnitudes with the
sign bit ORed back (division and rounding are odd functions, so -0 stays -0):
``v = min(|x|·scale, max_norm)`` (finite whenever amax is finite and >= 2^-23, since
|x| <= amax); the step ``2^max(floor(log2 v), emin) · 2^-M`` from v's exponent field, as
``reference.fp8.round_to_grid`` reads it; ``t = v / step`` is exact (a power of two), its RNE
is ``_common.rne_small``; ``g = r·step`` is exact, and the final ``g / scale`` is the IEEE
quotient, like torch's, without a division per element: with scale = m·2^e, m in [1, 2)
(``_common.split_divisor``), ``g / m`` through fl(1/m) and one FMA correction
(``_common.div_by_reciprocal``), then times 2^-e. For dividends with at most 3 fraction bits
(every E4M3 and E5M2 grid value) the first quotient is the IEEE one bit for bit (checked for
every float32 significand m, ``tests/kernels/test_triton_scaled.py``), and the power of two
is exact as the quotient is normal: scale lies in [1.3e-36, 3.8e9] (amax finite and at least
2^-23), so quotients lie in [2^-48, amax]. Then the reference's guards:
amax < 2^-23 returns x, a NaN/Inf amax makes everything NaN. The clip bound
(``kernels.ranges``: ``max_norm / scale``, +Inf under the guard, NaN for a non-finite amax) is
the same scalar arithmetic. Seed mode returns float32 whatever the input dtype, like the
reference.

**int8sym** (§8). x (contiguous) is viewed as (outer, L, inner) around the axis: with the axis
last the matrix is (outer, L) and row r uses amax[r]; otherwise the matrix is (outer·L, inner)
and element (r, c) uses amax[(r // L)·inner + c] (one integer division per tile row, not per
element, and no transposed copy). Rows along the last axis that fit in one tile (4096 elements;
1024 for the statistics) sit whole in it, and the tile takes their amax itself as an int max of
the magnitude bits (NaN sorting above +Inf, as ``kernels.triton.mx``): one pass over x.
Otherwise the per-row amax is a torch reduction cached under ``("absmax_axis", axis)`` (axis
non-negative; the layout ``kernels.triton.mx`` shares). Per element, as the reference:
``step = amax / 127`` and ``x / step`` are true divisions (``tl.div_rn``), ``round(y).clamp(-127, 127)``
is integer work on ``min(|y|, 127)`` (rounding is monotone and 127 an integer, so clamping
first changes nothing), then ``· step``. In exact mode the quotient goes through the row's
reciprocal where every step of the tile lies in [2^-100, 2^100]: ``y0 = fl(|x|·fl(1/step))``,
``y = fl(y0 + fma(y0, -step, |x|)·fl(1/step))`` (``_common.div_by_reciprocal``, Markstein's
correction: the residual is exact, and y is the IEEE quotient but where the residual loses bits
at the bottom of float32's range, for quotients far below 1/2); three instructions per element
instead of the IEEE division's reciprocal on the special-function unit and range checks.
``round(min(y, 127))`` is then the same integer as with the IEEE quotient: checked for every
pair of bfloat16 and of float16 values with |x| <= amax (4.4e8 and 5.0e8 pairs; the quotients
differ only below 2^-14 for bfloat16, nowhere for float16), and on exact ties (a step of a few
bits, |x| = (k + 1/2)·step) in float32. Large exact-mode bf16/fp16 tensors whose rows sit whole
in a tile run as persistent programs in a software-pipelined loop (``_common.fq_loop``).
emulate=exact makes a row with step == 0 exactly +0; NaN/Inf rows come out NaN through the same
IEEE operations. emulate=seed computes in the input dtype: torch's bfloat16/float16 arithmetic
is float32 arithmetic rounded (RNE) to the dtype after every operation, which ``round_out``
after each operation reproduces; its all-zero rows are NaN (0/0) as in the seed.

**cast** (§7). ``x.to(T).to(back)``: T = bfloat16 by RNE on the bits, float16 by Triton's
conversion (RNE, overflow to ±Inf, subnormals kept), then the output dtype's rounding
(``store_out`` / ``round_out``), which for a bf16 input and fp16 is the reference's second
rounding. ``back`` is the input dtype, float32 for emulate=seed. The clip bound is the
constant of ``kernels.ranges`` (the largest finite round trip, or +Inf when none overflows).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..formats import FormatSpec
from ..reference.fp8 import FP8_ELEMENTS
from ..stats import ErrorSums
from ._common import (
    IN_KIND,
    div_by_reciprocal,
    fq_loop,
    fq_loop_program,
    fq_program,
    fq_warps,
    grid_step,
    in_arg,
    lanes_v,
    load_f32,
    partials,
    reduce,
    rne_small,
    round_out,
    split_divisor,
    stats_grid,
    stats_program,
    tensor_absmax,
)

__all__ = ["FAMILIES", "unsupported_reason", "fake_quantize", "sums", "tensor_absmax", "row_absmax"]

FAMILIES = ("fp8tensor", "int8sym", "cast")

#: Elements per program; the flat tile is (_TILE // _TC, _TC).
_TILE = 4096
_TC = 256
#: int8sym along the last axis: rows up to a tile long (_MAX_ROW for the fake quantization, with
#: the 16 warps of ``_common.FQ_WARPS``) sit whole in one tile, which takes their amax itself (one
#: pass over x); longer rows are split in tile rows of _MAX_BC, amax from torch (a second pass).
_MAX_BC = 1024
_MAX_ROW = 16384
#: The statistics kernels' tiles: smaller, as every lane carries its accumulators across tiles.
_STATS_TILE = 1024

_CAST_KIND = {"fp32": 0, "bf16": 1, "fp16": 2}
_CAST_DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def unsupported_reason(spec: FormatSpec) -> str | None:
    """None when the Triton kernels cover ``spec``, else why not. Every option of the three
    families (element, axis, emulate exact|seed) is covered."""
    if spec.family not in FAMILIES:
        return f"kernels.triton.scaled covers {', '.join(FAMILIES)}, not {spec.family}"
    if spec.emulate not in ("exact", "seed"):
        return f"emulate={spec.emulate} is not implemented in triton"
    if spec.family == "fp8tensor" and spec["element"] not in FP8_ELEMENTS:
        return f"element {spec['element']} is not implemented in triton"
    if spec.family == "cast" and spec["element"] not in _CAST_KIND:
        return f"cast to {spec['element']} is not implemented in triton"
    return None


# --------------------------------------------------------------------------- device code


@triton.jit
def _flat_tile(x_ptr, t, n, TR: tl.constexpr, TC: tl.constexpr, IN_KIND: tl.constexpr):
    """Tile ``t``'s (TR, TC) run of the flat tensor: x as float32, valid, offsets."""
    r = tl.arange(0, TR)
    c = tl.arange(0, TC)
    offs = t.to(tl.int64) * (TR * TC) + (r[:, None] * TC + c[None, :]).to(tl.int64)
    valid = offs < n
    return load_f32(x_ptr, offs, valid, IN_KIND), valid, offs


@triton.jit
def _fp8_tile(t, args, K: tl.constexpr):
    """Tile ``t`` of fp8tensor: (x, q, valid, offs, clip bound); args (x_ptr, amax_ptr, n),
    K (TR, TC, IN_KIND, OUT_KIND, M, EMIN, MAX_NORM, SEED)."""
    x_ptr, amax_ptr, n = args
    TR: tl.constexpr = K[0]
    TC: tl.constexpr = K[1]
    IN_KIND: tl.constexpr = K[2]
    OUT_KIND: tl.constexpr = K[3]
    M: tl.constexpr = K[4]
    EMIN: tl.constexpr = K[5]
    MAX_NORM: tl.constexpr = K[6]
    SEED: tl.constexpr = K[7]
    x, valid, offs = _flat_tile(x_ptr, t, n, TR, TC, IN_KIND)

    # §6 step 2, the reference's scalar arithmetic: float64 quotient rounded once to float32.
    amax = tl.load(amax_ptr)
    den = amax.to(tl.float64)
    if SEED:
        den = den + 1.1920928955078125e-07  # the seed's + eps (2^-23) in Python double
    scale = (MAX_NORM / den).to(tl.float32)
    tiny = amax < 1.1920928955078125e-07  # §6 step 1: x is returned unchanged (False for NaN)
    finite = amax < float("inf")

    xb = x.to(tl.int32, bitcast=True)
    ab = xb & 0x7FFFFFFF
    sign = xb ^ ab
    v = tl.minimum(ab.to(tl.float32, bitcast=True) * scale, MAX_NORM)
    # round_to_grid: step 2^max(floor(log2 v), emin) · 2^-M from the exponent field.
    step, inv = grid_step(tl.maximum(v.to(tl.int32, bitcast=True) & 0x7F800000, (EMIN + 127) << 23), M)
    # g / scale = (g / m) · 2^-e for scale = m · 2^e, m in [1, 2): g / m through fl(1/m)
    # (div_by_reciprocal), then an exact power of two (see the module docstring).
    m, m_inv, p2 = split_divisor(scale)
    qm = div_by_reciprocal(rne_small(v * inv) * step, m, m_inv) * p2
    q = (qm.to(tl.int32, bitcast=True) | sign).to(tl.float32, bitcast=True)
    q = tl.where(tiny, x, tl.where(finite, q, float("nan")))

    # kernels.ranges (fp8tensor): max_norm / scale, +Inf under the guard, NaN for NaN/Inf amax.
    b = tl.div_rn(tl.full((), MAX_NORM, tl.float32), scale)
    b = tl.where(tiny, float("inf"), b)
    b = tl.where(finite, b, float("nan"))
    return x, q, valid, offs, round_out(b, OUT_KIND)


@triton.jit
def _cast_tile(t, args, K: tl.constexpr):
    """Tile ``t`` of a cast; args (x_ptr, n, bound), K (TR, TC, IN_KIND, TARGET, CLIPS): with
    CLIPS False the bound is +Inf (the cast overflows no finite input), a constant."""
    x_ptr, n, bound = args
    x, valid, offs = _flat_tile(x_ptr, t, n, K[0], K[1], K[2])
    q = round_out(x, K[3])  # x.to(T), as float32; the way back is the output rounding
    if not K[4]:
        bound = tl.full([1, 1], float("inf"), tl.float32)
    return x, q, valid, offs, bound


@triton.jit
def _int8_q(y, step, sign, ARITH_KIND: tl.constexpr, SEED: tl.constexpr, SPECIAL: tl.constexpr):
    """int8sym's q from the quotient y = |x| / step: round, clamp to 127 (clamping first is the
    same: rounding is monotone), times step, x's sign. ``SPECIAL`` (a NaN y, a zero step may
    occur): NaN where y is NaN, and +0 for a zero step but in seed mode."""
    r = rne_small(tl.minimum(y, 127.0))  # torch.round; NaN stays NaN
    qm = round_out(r * step, ARITH_KIND)
    q = (qm.to(tl.int32, bitcast=True) | sign).to(tl.float32, bitcast=True)
    if SPECIAL:
        q = tl.where(y != y, float("nan"), q)  # 0/0, x/NaN, Inf/Inf: torch's NaN passes round and clamp
        if not SEED:
            q = tl.where(step == 0.0, 0.0, q)  # the fixed seed bug: a zero step gives +0
    return q


@triton.jit
def _int8_tile(t, args, K: tl.constexpr):
    """Tile ``t`` of int8sym; args (x_ptr, amax_ptr, R, C, D, ncb), K (BR, BC, AXIS_LAST,
    ROW_IN_TILE, IN_KIND, ARITH_KIND, SEED)."""
    x_ptr, amax_ptr, R, C, D, ncb = args
    BR: tl.constexpr = K[0]
    BC: tl.constexpr = K[1]
    AXIS_LAST: tl.constexpr = K[2]
    ROW_IN_TILE: tl.constexpr = K[3]
    IN_KIND: tl.constexpr = K[4]
    ARITH_KIND: tl.constexpr = K[5]
    SEED: tl.constexpr = K[6]
    rows = (t // ncb).to(tl.int64) * BR + tl.arange(0, BR).to(tl.int64)
    cols = (t % ncb) * BC + tl.arange(0, BC)
    rmask = rows < R
    valid = rmask[:, None] & (cols < C)[None, :]
    offs = rows[:, None] * C + cols[None, :]
    x = load_f32(x_ptr, offs, valid, IN_KIND)
    if ROW_IN_TILE:
        # The int max of the magnitude bits is the float max, NaN patterns sorting above +Inf:
        # the reference's abs().amax(), NaN propagating; masked lanes read 0.
        amax = tl.max(x.to(tl.int32, bitcast=True) & 0x7FFFFFFF, axis=1).to(tl.float32, bitcast=True)[:, None]
    elif AXIS_LAST:
        amax = tl.load(amax_ptr + rows, mask=rmask, other=1.0)[:, None]
    else:
        aoffs = (rows // D)[:, None] * C + cols[None, :]
        amax = tl.load(amax_ptr + aoffs, mask=valid, other=1.0)

    # §8: step = amax / 127 and x / step as true divisions; seed mode rounds every result to
    # the input dtype, as torch's bf16/fp16 arithmetic does (IN_KIND 0: no rounding).
    step = round_out(tl.div_rn(amax, 127.0 + tl.zeros_like(amax)), ARITH_KIND)
    xb = x.to(tl.int32, bitcast=True)
    ab = xb & 0x7FFFFFFF
    sign = xb ^ ab
    a = ab.to(tl.float32, bitcast=True)
    if ARITH_KIND == 0:
        # |x| / step through the row's reciprocal (see the module docstring). A tile with a step
        # outside [2^-100, 2^100] (tiny or huge rows, 0, Inf, NaN) takes the IEEE division.
        ok = ((step >= 7.888609052210118e-31) & (step <= 1.2676506002282294e30)).to(tl.int32)
        if tl.min(tl.reshape(ok, [ok.numel]), axis=0) == 1:
            rinv = tl.div_rn(tl.full(step.shape, 1.0, tl.float32), step)
            # Every |x| here is at most its finite amax: no NaN or Inf to carry, no zero step.
            q = _int8_q(div_by_reciprocal(a, step, rinv), step, sign, 0, SEED, False)
        else:
            q = _int8_q(tl.div_rn(a, step), step, sign, 0, SEED, True)
    else:
        q = _int8_q(round_out(tl.div_rn(a, step), ARITH_KIND), step, sign, ARITH_KIND, SEED, True)
    # kernels.ranges (int8sym): 127 · step, rounded to the output (= input) dtype.
    return x, q, valid, offs, round_out(127.0 * step, IN_KIND)


# One fake-quantization kernel and one statistics kernel per family, around its tile function.


@triton.jit
def _fp8_fq(
    x_ptr,
    amax_ptr,
    out_ptr,
    n,
    TR: tl.constexpr,
    TC: tl.constexpr,
    IN_KIND: tl.constexpr,
    OUT_KIND: tl.constexpr,
    M: tl.constexpr,
    EMIN: tl.constexpr,
    MAX_NORM: tl.constexpr,
    SEED: tl.constexpr,
):
    K: tl.constexpr = (TR, TC, IN_KIND, OUT_KIND, M, EMIN, MAX_NORM, SEED)
    fq_program(_fp8_tile, (x_ptr, amax_ptr, n), K, out_ptr, OUT_KIND)


@triton.jit
def _fp8_sums(
    x_ptr,
    amax_ptr,
    cnt_ptr,
    sum_ptr,
    n,
    n_tiles,
    TR: tl.constexpr,
    TC: tl.constexpr,
    IN_KIND: tl.constexpr,
    OUT_KIND: tl.constexpr,
    M: tl.constexpr,
    EMIN: tl.constexpr,
    MAX_NORM: tl.constexpr,
    SEED: tl.constexpr,
    INPUT_STATS: tl.constexpr,
    UNROLL: tl.constexpr,
    V: tl.constexpr,
):
    K: tl.constexpr = (TR, TC, IN_KIND, OUT_KIND, M, EMIN, MAX_NORM, SEED)
    args = (x_ptr, amax_ptr, n)
    stats_program(_fp8_tile, args, K, n_tiles, cnt_ptr, sum_ptr, (TR, TC), OUT_KIND, False, INPUT_STATS, UNROLL, V)


@triton.jit
def _cast_fq(
    x_ptr,
    out_ptr,
    n,
    bound,
    TR: tl.constexpr,
    TC: tl.constexpr,
    IN_KIND: tl.constexpr,
    OUT_KIND: tl.constexpr,
    TARGET: tl.constexpr,
):
    fq_program(_cast_tile, (x_ptr, n, bound), (TR, TC, IN_KIND, TARGET, False), out_ptr, OUT_KIND)


@triton.jit
def _cast_sums(
    x_ptr,
    cnt_ptr,
    sum_ptr,
    n,
    bound,
    n_tiles,
    TR: tl.constexpr,
    TC: tl.constexpr,
    IN_KIND: tl.constexpr,
    OUT_KIND: tl.constexpr,
    TARGET: tl.constexpr,
    CLIPS: tl.constexpr,
    EXACT_OUT: tl.constexpr,
    INPUT_STATS: tl.constexpr,
    UNROLL: tl.constexpr,
    V: tl.constexpr,
):
    K: tl.constexpr = (TR, TC, IN_KIND, TARGET, CLIPS)
    args = (x_ptr, n, bound)
    stats_program(_cast_tile, args, K, n_tiles, cnt_ptr, sum_ptr, (TR, TC), OUT_KIND, EXACT_OUT, INPUT_STATS, UNROLL, V)


@triton.jit
def _int8_fq(
    x_ptr,
    amax_ptr,
    out_ptr,
    R,
    C,
    D,
    ncb,
    BR: tl.constexpr,
    BC: tl.constexpr,
    AXIS_LAST: tl.constexpr,
    ROW_IN_TILE: tl.constexpr,
    IN_KIND: tl.constexpr,
    ARITH_KIND: tl.constexpr,
    SEED: tl.constexpr,
    n_tiles,
    STAGES: tl.constexpr,
):
    K: tl.constexpr = (BR, BC, AXIS_LAST, ROW_IN_TILE, IN_KIND, ARITH_KIND, SEED)
    if STAGES > 0:  # persistent programs (_common.fq_loop)
        fq_loop_program(_int8_tile, (x_ptr, amax_ptr, R, C, D, ncb), K, out_ptr, IN_KIND, n_tiles, STAGES)
    else:
        fq_program(_int8_tile, (x_ptr, amax_ptr, R, C, D, ncb), K, out_ptr, IN_KIND)


@triton.jit
def _int8_sums(
    x_ptr,
    amax_ptr,
    cnt_ptr,
    sum_ptr,
    R,
    C,
    D,
    ncb,
    n_tiles,
    BR: tl.constexpr,
    BC: tl.constexpr,
    AXIS_LAST: tl.constexpr,
    ROW_IN_TILE: tl.constexpr,
    IN_KIND: tl.constexpr,
    ARITH_KIND: tl.constexpr,
    SEED: tl.constexpr,
    INPUT_STATS: tl.constexpr,
    UNROLL: tl.constexpr,
    V: tl.constexpr,
):
    K: tl.constexpr = (BR, BC, AXIS_LAST, ROW_IN_TILE, IN_KIND, ARITH_KIND, SEED)
    args = (x_ptr, amax_ptr, R, C, D, ncb)
    stats_program(_int8_tile, args, K, n_tiles, cnt_ptr, sum_ptr, (BR, BC), IN_KIND, False, INPUT_STATS, UNROLL, V)


# --------------------------------------------------------------------------- host side


def row_absmax(x: torch.Tensor, axis: int, cache: dict | None = None) -> torch.Tensor:
    """max |x| along ``axis`` (non-negative) as contiguous float32 of shape (outer·inner,):
    one value per row of ``x.movedim(axis, -1)``, in that order; kept in
    ``cache[("absmax_axis", axis)]``, the key and layout kernels.triton.mx uses for block=0."""
    key = ("absmax_axis", axis)
    rows = x.numel() // x.shape[axis]
    if cache is not None and key in cache:
        a = torch.as_tensor(cache[key])
        if a.numel() == rows:
            return a.to(device=x.device, dtype=torch.float32).reshape(-1).contiguous()
    mn, mx = torch.aminmax(x, dim=axis)  # one pass, no |x| buffer; both propagate NaN
    a = torch.maximum(mn.abs(), mx.abs()).to(torch.float32).reshape(-1).contiguous()
    if cache is not None:
        cache[key] = a
    return a


def _out_dtype(x: torch.Tensor, spec: FormatSpec) -> torch.dtype:
    # emulate=seed returns float32 for fp8tensor and cast, the input dtype for int8sym.
    return torch.float32 if spec.emulate == "seed" and spec.family != "int8sym" else x.dtype


def _check(spec: FormatSpec) -> None:
    why = unsupported_reason(spec)
    if why:
        raise ValueError(why)


def _geometry(x: torch.Tensor, spec: FormatSpec, tile: int = _TILE, whole_row: int = 0) -> tuple[int, dict]:
    """(tiles, the family kernel's shape arguments) for contiguous ``x`` and ``tile`` elements
    per tile; int8sym rows along the last axis up to ``max(tile, whole_row)`` long sit whole in
    one tile."""
    n = x.numel()
    if spec.family != "int8sym":
        return triton.cdiv(n, tile), dict(n=n, TR=tile // _TC, TC=_TC)
    axis = spec["axis"] % x.dim()
    L = x.shape[axis]
    inner = x.shape[axis + 1 :].numel()
    # Axis last: the matrix (outer, L), one amax per row. Else (outer·L, inner), amax[(r // L)·inner + c].
    R, C, D = (n // L, L, 1) if inner == 1 else (n // inner, inner, L)
    whole = inner == 1 and C <= max(tile, whole_row)
    bc = triton.next_power_of_2(C) if whole else min(triton.next_power_of_2(C), _MAX_BC, tile)
    br = max(1, tile // bc)
    ncb = triton.cdiv(C, bc)
    shape = dict(R=R, C=C, D=D, ncb=ncb, BR=br, BC=bc, AXIS_LAST=inner == 1, ROW_IN_TILE=whole)
    return triton.cdiv(R, br) * ncb, shape


#: int8sym's exact fake quantization of 2-byte inputs whose rows sit whole in tiles of at most
#: _INT8_LOOP_TILE elements runs as persistent programs (``_common.fq_loop``, its table's
#: configuration). On the H200, bf16 8192x8192: 86-89 % of copy against 71 % with one tile per
#: program, whose block-wide absmax left too little in flight; 20000x1000 +9 %. Measured slower,
#: so they keep a tile per program: float32 (91 % against 97 %), bf16 1024x1024 (71 % against
#: 82 %), rows of 16384 (their stages fill shared memory: -6 % bf16, -37 % fp16) and seed mode
#: (-3 to -12 %) (benchmarks/results/h200.md).
_INT8_LOOP_TILE = 8192


def _int8_loop(x: torch.Tensor, spec: FormatSpec, shape: dict, tiles: int) -> tuple[int, int, int] | None:
    """``_common.fq_loop`` of int8sym's fake quantization of ``x``: (programs, stages, warps), or
    None for one tile a program."""
    if spec.emulate == "seed" or not shape["ROW_IN_TILE"] or shape["BR"] * shape["BC"] > _INT8_LOOP_TILE:
        return None
    return fq_loop("int8sym", x, tiles)


def _launch(x: torch.Tensor, spec: FormatSpec, dst, cache, input_stats: bool = True):
    """Run the family's fake quantization into ``dst`` or, when ``dst`` is None, its fused
    statistics (with the input's moments or not); returns the partials (or None)."""
    stats = dst is None
    tiles, shape = _geometry(x, spec, _STATS_TILE) if stats else _geometry(x, spec, _TILE, _MAX_ROW)
    family = {"fp8tensor": "fp8"}.get(spec.family, spec.family)  # the key of the _common tables
    if stats:
        programs, unroll, warps = stats_grid(family, x.dtype, tiles, x.device)
        cnt, sums = partials(programs, x.device)
        head, grid = (cnt, sums), (programs,)
        tile = (shape["BR"], shape["BC"]) if "BR" in shape else (shape["TR"], shape["TC"])
        v = lanes_v(tile, x.dtype, warps, unroll, input_stats)
        tail = dict(n_tiles=tiles, INPUT_STATS=input_stats, UNROLL=unroll, V=v, num_warps=warps)
    else:
        head, grid = (in_arg(dst),), (tiles,)
        # (int8sym: a whole row longer than a tile keeps the table's 16 warps, 512 threads.)
        tail = dict(num_warps=fq_warps(family, x.dtype, tiles, x.device))
    xa = in_arg(x)
    seed = spec.emulate == "seed"
    kind = IN_KIND[x.dtype]
    if spec.family == "int8sym":
        amax = xa if shape["ROW_IN_TILE"] else row_absmax(x, spec["axis"] % x.dim(), cache)
        kernel = _int8_sums if stats else _int8_fq
        if not stats:
            tail.update(n_tiles=tiles, STAGES=0)
            if loop := _int8_loop(x, spec, shape, tiles):
                grid = (loop[0],)
                tail.update(STAGES=loop[1], num_warps=loop[2])
        arith = kind if seed else 0  # the dtype seed mode computes in
        kernel[grid](xa, amax, *head, **shape, IN_KIND=kind, ARITH_KIND=arith, SEED=seed, **tail)
    elif spec.family == "fp8tensor":
        grid_ = FP8_ELEMENTS[spec["element"]]
        kernel = _fp8_sums if stats else _fp8_fq
        kernel[grid](
            xa, tensor_absmax(x, cache), *head, **shape, IN_KIND=kind, OUT_KIND=IN_KIND[_out_dtype(x, spec)],
            M=grid_.man_bits, EMIN=grid_.emin, MAX_NORM=float(grid_.max_norm), SEED=seed, **tail,
        )  # fmt: skip
    else:
        out_kind = IN_KIND[_out_dtype(x, spec)]
        target = _CAST_KIND[spec["element"]]
        if stats:
            # q is a bfloat16 already when the cast is to bfloat16 or the input is one: float32 holds
            # it, float16 too (8 significant bits fit its 11; below its normal range q is a multiple
            # of 2^-24 under 2^-17, 7 bits at most), and an overflow to Inf takes the careful pass.
            tail["EXACT_OUT"] = target == 1 or kind == 1
            bound = _cast_bound(x, spec)
            _cast_sums[grid](xa, *head, shape.pop("n"), bound, **shape, IN_KIND=kind, OUT_KIND=out_kind,
                             TARGET=target, CLIPS=bound != float("inf"), **tail)  # fmt: skip
        else:
            _cast_fq[grid](xa, *head, shape.pop("n"), _cast_bound(x, spec), **shape, IN_KIND=kind,
                           OUT_KIND=out_kind, TARGET=target)  # fmt: skip
    return (cnt, sums) if stats else None


def _cast_bound(x: torch.Tensor, spec: FormatSpec) -> float:
    """``kernels.ranges``' cast bound (+Inf where no finite input overflows), a Python float."""
    from ..ranges import _cast_bound as bound

    b = bound(x.dtype, _CAST_DTYPE[spec["element"]], _out_dtype(x, spec))
    return float("inf") if b is None else b


def _defer(x: torch.Tensor, spec: FormatSpec) -> bool:
    # Empty tensors, 0-d ones for int8sym (whose axis the reference reads from the shape), and
    # dtypes the kernels do not load (float64 casts; the reference rejects them for the others).
    return x.numel() == 0 or (x.dim() == 0 and spec.family == "int8sym") or x.dtype not in IN_KIND


def scaled_fake_quantize(x: torch.Tensor, spec: FormatSpec, cache: dict | None = None) -> torch.Tensor:
    """``fake_quantize(x, spec, backend="reference")`` for fp8tensor / int8sym / cast, bit for bit."""
    _check(spec)
    if _defer(x, spec):
        from ..reference import fake_quantize_ref

        return fake_quantize_ref(x, spec, None)
    xc = x.detach().contiguous()
    out = torch.empty(xc.shape, dtype=_out_dtype(x, spec), device=x.device)
    _launch(xc, spec, out, cache)
    return out


def scaled_sums(x: torch.Tensor, spec: FormatSpec, input_stats: bool = True, cache: dict | None = None) -> ErrorSums:
    """The :class:`ErrorSums` of ``fake_quantize(x, spec)`` with the clip bound of
    ``kernels.ranges.unit_bound``, in one pass over x that writes no tensor of x's size (plus,
    for the first format on a tensor, the cached absmax reduction)."""
    _check(spec)
    if _defer(x, spec):
        from ..ranges import unit_bound
        from ..reference import fake_quantize_ref
        from ..stats import error_sums_ref

        return error_sums_ref(x, fake_quantize_ref(x, spec, None), unit_bound(x, spec), input_stats=input_stats)
    cnt, sums = _launch(x.detach().contiguous(), spec, None, cache, input_stats)
    return reduce(cnt, sums, x.numel(), input_stats)


def fake_quantize(x: torch.Tensor, spec: FormatSpec, generator: torch.Generator | None = None) -> torch.Tensor:
    """The module interface's ``fake_quantize`` (no cache: one format, one call)."""
    return scaled_fake_quantize(x, spec)


sums = scaled_sums
