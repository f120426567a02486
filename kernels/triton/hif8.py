"""Triton HiF8 kernels (family ``hif8``, ``emulate=exact``): the reference's float32 algorithm
(formats-hifloat.md §3.2, §3.4, §4.1) bit for bit, on tiles of consecutive elements (HiF8 is
elementwise: the tensor is read flat). One tile function, ``_hif8_tile``, computes x, q and the
clip bound of a 1-D tile; the fake-quantization kernel runs one tile of ``TILE_ROWS ×
TILE_COLS`` elements per program and stores q (``_common.fq_program``).

Per element, on the float32 bits of ``y`` (x itself, or x·s with the per-tensor scale):

1. **Steps 3-7, clamp and rounding, through two 256-entry tables** indexed by the exponent
   field f of ``|y|``'s bits (:func:`_round_table`; one 4-byte look-up each, which stay in the
   L1 cache): in range (|y| in [2^-22, 2^15), f = E + 127) h = 2^(22 - w), half the step of
   w = [|E| <= 3] + [|E| <= 7] + [|E| <= 15] mantissa bits, and ``(bits + h) & -2h`` keeps w
   mantissa bits rounding half away from zero, a carry landing in the exponent field (the
   reference's ``_rounding_tables`` computed instead of looked up); outside, h = 0 and the
   second table's o, ORed in, is the clamp's value: 2^-22 below, 2^15 above (±Inf too), as the
   reference's ``a.clamp(2^-22, 32768)``, which its rounding leaves as they are. NaN is set
   aside and put back at the end. (Computing the clamp, w and the step per element took about
   twice the integer instructions, and the integer pipe bounded the kernel, 75 % busy in Nsight
   Compute: with the tables and 4 warps, 77 % of copy on bf16 against 59 % before, on the H200.)
2. **Step 8 and the zeros**: y's sign bit is ORed back; zeros (``|y| == 0``, or ``|y| < 2^-23``
   with ``underflow=flush``) give +0, HiF8's one zero.
3. **Overflow** (step 4): ``inf`` sends ``|y| >= 40960`` (±Inf included, NaN not) to ±Inf;
   ``tof8`` sends it to ±49152, and from 49152 up to ±Inf; ``saturate`` is the clamp itself.
   ``variant=paper`` then keeps ±Inf inputs as they are (§3.4).

``scale=tensor`` (the seed's ``quant_hif8`` recipe, §4.1) adds the reference's own float32
operations around the element rule (those of ``_per_tensor_scale`` and ``_quant_hif8_recipe``):
``s = fl(k / fl(amax + 2^-23))`` with k rounded to float32, computed in every tile from the
amax (a few scalar ops; no host sync, no extra launch), ``y = fl(x·s)`` and the output
``fl(q / s)``, both divisions IEEE (Triton's default division is approximate on the GPU): s by
``tl.div_rn``, and q / s without a division per element where s = m·2^e is normal and below
2^104 (a branch per program; s is at most k·2^23, so with k below 2^81 always): ``q / m``
through fl(1/m) and one FMA correction (``_common.split_divisor``, ``div_by_reciprocal``; ±Inf
put back), then times 2^-e. For dividends with at most 3 fraction bits (every HiF8 value) the
first quotient is the IEEE one bit for bit (checked for every float32 significand m,
``tests/kernels/test_triton_scaled.py``), and the power of two is exact as every nonzero
|q| >= 2^-22 makes the quotient normal (or overflow to Inf, as the IEEE one); other s take
``tl.div_rn``. The result is rounded once to the output dtype (bf16 by default; RNE on the
bits, exactly torch's ``.to()``). A NaN or ±Inf anywhere gives a NaN or zero s, and every
element is NaN by the same arithmetic as the reference's. amax is the int max of the magnitude bits (every NaN pattern
sorts above +Inf, so NaN propagates like ``torch.amax``), a small Triton reduction kept in the
caller's ``cache`` under ``("absmax",)``: it does not depend on the format.

``_hif8_sums_kernel`` runs the same tile function (``_common.stats_program``) on smaller tiles
(``_STATS_ROWS × TILE_COLS``), each program looping over every ``programs``-th tile with per-lane
accumulators and writing one row of int32 counts and float64 partial sums. The clip bound is
that of ``kernels.ranges.unit_bound``: G = 32768 (49152 with ``tof8``), divided by s when scaled,
rounded to the output dtype. ``EXACT_OUT`` holds without a scale only: there q is a HiF8 value
(at most 3 mantissa bits, a bfloat16), while ``q / s`` with an arbitrary float32 s normally is not.

``emulate=seed`` (the seed's float ``log2`` and ``floor(v + 0.5)`` arithmetic, in the input
dtype) is not implemented: ``unsupported_reason`` says so and ``auto`` runs the reference.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..formats import FormatSpec
from ..reference.hif8 import HIF8_MAX, TOF8_FINITE
from ..stats import ErrorSums
from ._common import (
    IN_KIND,
    check_input,
    div_by_reciprocal,
    fq_program,
    fq_warps,
    in_arg,
    lanes_v,
    load_f32,
    on_device,
    partials,
    reduce,
    round_out,
    split_divisor,
    stats_grid,
    stats_program,
    tensor_absmax,
)

__all__ = ["FAMILIES", "unsupported_reason", "fake_quantize", "sums", "hif8_fake_quantize", "hif8_sums"]

FAMILIES = ("hif8",)

#: A fake-quantization tile is TILE_ROWS × TILE_COLS consecutive elements (4096 per program).
TILE_ROWS = 32
TILE_COLS = 128
TILE_ELEMS = TILE_ROWS * TILE_COLS
#: The statistics tiles: _STATS_ROWS × TILE_COLS (1024 elements, 4 per thread of 8 warps), smaller
#: as every lane carries its accumulators across the tiles of its program.
_STATS_ROWS = 8

_OUT_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_OVERFLOWS = ("saturate", "inf", "tof8")
_F32 = torch.float32


def unsupported_reason(spec: FormatSpec) -> str | None:
    """None when the Triton kernels cover ``spec``, else why not."""
    if spec.family != "hif8":
        return f"the triton hif8 kernels cover the hif8 family only, not {spec.family}"
    if spec["emulate"] != "exact":
        return "emulate=seed (the seed's float log2 arithmetic) is not implemented in triton"
    if spec["overflow"] not in ("default",) + _OVERFLOWS:
        return f"overflow={spec['overflow']} is not implemented in triton"
    if spec["underflow"] not in ("default", "min", "flush"):
        return f"underflow={spec['underflow']} is not implemented in triton"
    if spec["out"] not in ("default", "input") + tuple(_OUT_DTYPES):
        return f"out={spec['out']} is not implemented in triton"
    return None


# --------------------------------------------------------------------------- device code


@triton.jit
def _hif8_tile(t, args, K: tl.constexpr):
    """Tile ``t``: (x, q, valid, offs, clip bound), q in float32 before the output cast; args
    (x_ptr, amax_ptr, tab_ptr, k, n), K (ROWS, COLS, IN_KIND, OUT_KIND, SCALED, FLUSH, OVERFLOW,
    KEEP_INF, TOP)."""
    x_ptr, amax_ptr, tab_ptr, k, n = args
    ROWS: tl.constexpr = K[0]
    COLS: tl.constexpr = K[1]
    IN_KIND: tl.constexpr = K[2]
    OUT_KIND: tl.constexpr = K[3]
    SCALED: tl.constexpr = K[4]
    FLUSH: tl.constexpr = K[5]
    OVERFLOW: tl.constexpr = K[6]
    KEEP_INF: tl.constexpr = K[7]
    TOP: tl.constexpr = K[8]
    # A 1-D tile (a 2-D one took its table look-ups in another layout, through shared memory).
    offs = t.to(tl.int64) * (ROWS * COLS) + tl.arange(0, ROWS * COLS)
    valid = offs < n
    x = load_f32(x_ptr, offs, valid, IN_KIND)
    if SCALED:
        # §4.1 steps 2-3 per tile (a few scalar ops): s = fl(k / fl(amax + 2^-23)), IEEE.
        amax = tl.load(amax_ptr)
        s = tl.div_rn(tl.full((), 1.0, tl.float32) * k, amax + 1.1920928955078125e-07)
        y = x * s
        m, m_inv, p2 = split_divisor(s)
        # s normal and below 2^104 (not NaN, Inf or 0): every q / s is normal or overflows.
        fast_div = (s >= 1.1754943508222875e-38) & (s < 2.028240960365167e31)
    else:
        y = x
    yb = y.to(tl.int32, bitcast=True)
    ab = yb & 0x7FFFFFFF
    sign = yb ^ ab
    nan = ab > 0x7F800000

    # Steps 3-7 through the tables of the exponent field (see the module docstring): in range,
    # (|y| + h) & -2h keeps w mantissa bits rounding ties away from zero (h = 0 outside, where o
    # is the clamped value). h at tab_ptr, o 256 entries on.
    f = ab >> 23
    h = tl.load(tab_ptr + f)
    qb = (((ab + h) & (h * -2)) | tl.load((tab_ptr + 256) + f)) | sign
    # HiF8 has one zero: +0 for ±0 and for flushed values (step 2-3).
    if FLUSH:
        zero = ab < ((127 - 23) << 23)
    else:
        zero = ab == 0
    qb = tl.where(zero, 0, qb)
    over = (ab >= 0x47200000) & (ab <= 0x7F800000)  # 40960 <= |y| <= Inf
    if OVERFLOW == 1:  # inf
        qb = tl.where(over, sign | 0x7F800000, qb)
    elif OVERFLOW == 2:  # tof8: 49152 below 49152, Inf from there
        qb = tl.where(over, sign | tl.where(ab >= 0x47400000, 0x7F800000, 0x47400000), qb)
    qb = tl.where(nan, 0x7FC00000, qb)
    if KEEP_INF:  # §3.4: the paper conversion keeps ±Inf (y is x here)
        qb = tl.where(ab == 0x7F800000, yb, qb)
    q = qb.to(tl.float32, bitcast=True)
    if SCALED:
        # The reference's IEEE fl32(q / s) (see the module docstring): (q / m) · 2^-e through
        # fl(1/m) where s = m · 2^e is normal and below 2^104, else the IEEE division. ±Inf / m
        # is put back (the correction's Inf - Inf is NaN); only overflow=inf/tof8 make them.
        if fast_div:
            qd = div_by_reciprocal(q, m, m_inv)
            if OVERFLOW != 0:
                qd = tl.where(qd == qd, qd, q)
            q = qd * p2
        else:
            q = tl.div_rn(q, tl.zeros_like(q) + s)

    # kernels.ranges.unit_bound: G (TOP), divided by s when scaled, rounded to the output dtype.
    bound = tl.full((), TOP, tl.float32)
    if SCALED:
        bound = tl.div_rn(bound, s)
    return x, q, valid, offs, round_out(bound, OUT_KIND)


# The fake-quantization kernel and the statistics kernel, around the tile function.


@triton.jit
def _hif8_fq_kernel(x_ptr, out_ptr, amax_ptr, tab_ptr, k, n, IN_KIND: tl.constexpr, OUT_KIND: tl.constexpr,
                    SCALED: tl.constexpr, FLUSH: tl.constexpr, OVERFLOW: tl.constexpr, KEEP_INF: tl.constexpr,
                    TOP: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr):  # fmt: skip
    K: tl.constexpr = (ROWS, COLS, IN_KIND, OUT_KIND, SCALED, FLUSH, OVERFLOW, KEEP_INF, TOP)
    fq_program(_hif8_tile, (x_ptr, amax_ptr, tab_ptr, k, n), K, out_ptr, OUT_KIND)


@triton.jit
def _hif8_sums_kernel(x_ptr, cnt_ptr, sum_ptr, amax_ptr, tab_ptr, k, n, n_tiles, IN_KIND: tl.constexpr,
                      OUT_KIND: tl.constexpr, SCALED: tl.constexpr, FLUSH: tl.constexpr, OVERFLOW: tl.constexpr,
                      KEEP_INF: tl.constexpr, TOP: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr,
                      EXACT_OUT: tl.constexpr, INPUT_STATS: tl.constexpr, UNROLL: tl.constexpr,
                      V: tl.constexpr):  # fmt: skip
    K: tl.constexpr = (ROWS, COLS, IN_KIND, OUT_KIND, SCALED, FLUSH, OVERFLOW, KEEP_INF, TOP)
    args = (x_ptr, amax_ptr, tab_ptr, k, n)
    stats_program(_hif8_tile, args, K, n_tiles, cnt_ptr, sum_ptr, (ROWS * COLS,), OUT_KIND, EXACT_OUT, INPUT_STATS,
                  UNROLL, V)  # fmt: skip


# --------------------------------------------------------------------------- launchers


def _round_table() -> torch.Tensor:
    """Steps 3-7 per exponent field f of |y| (0-255), as int32 h[f] then o[f]: for f in 105-141
    (|y| in [2^-22, 2^15)) h = 2^(22 - w), half the step of w = [|E| <= 3] + [|E| <= 7] +
    [|E| <= 15] mantissa bits (E = f - 127), and o = 0; below, h = 0 and o = bits(2^-22); above
    (|y| >= 2^15, ±Inf and NaN too), h = 0 and o = bits(2^15): the clamp to [2^-22, 2^15] of
    step 4 (that its rounding leaves as it is). Zeros, flushed values, NaN and overflow are the
    kernel's selects."""
    rows = []
    for f in range(256):
        if f < 127 - 22:
            h, o = 0, 0x34800000
        elif f >= 127 + 15:
            h, o = 0, 0x47000000
        else:
            ae = abs(f - 127)
            h, o = 1 << (22 - (ae <= 3) - (ae <= 7) - (ae <= 15)), 0
        rows.append((h, o))
    return torch.tensor(rows, dtype=torch.int32).t().contiguous().reshape(-1)


_TABLE = _round_table()


def _modes(spec: FormatSpec) -> tuple[bool, str, str]:
    """(scaled, underflow, overflow) as the reference resolves the defaults."""
    paper = spec["variant"] == "paper"
    underflow = spec["underflow"] if spec["underflow"] != "default" else ("flush" if paper else "min")
    overflow = spec["overflow"] if spec["overflow"] != "default" else ("inf" if paper else "saturate")
    return spec["scale"] == "tensor" and not paper, underflow, overflow


def _out_dtype(x: torch.Tensor, spec: FormatSpec, scaled: bool) -> torch.dtype:
    out = spec["out"]
    if out == "default":
        return torch.bfloat16 if scaled else x.dtype
    return x.dtype if out == "input" else _OUT_DTYPES[out]


def _launch_args(x: torch.Tensor, spec: FormatSpec, cache: dict | None):
    """(flat contiguous x, output dtype, positional kernel args after the pointers, constexprs)."""
    scaled, underflow, overflow = _modes(spec)
    xf = x.detach().reshape(-1)
    if not xf.is_contiguous():
        xf = xf.contiguous()
    # k as _per_tensor_scale rounds it to float32; a Python float travels to the kernel as fp32.
    k = torch.tensor(spec["k"], dtype=_F32).item()
    amax = tensor_absmax(xf, cache) if scaled else xf  # unscaled: a placeholder, never read
    out_dtype = _out_dtype(x, spec, scaled)
    c = dict(
        IN_KIND=IN_KIND[x.dtype],
        OUT_KIND=IN_KIND[out_dtype],
        SCALED=scaled,
        FLUSH=underflow == "flush",
        OVERFLOW=_OVERFLOWS.index(overflow),
        KEEP_INF=spec["variant"] == "paper",
        TOP=TOF8_FINITE if overflow == "tof8" else HIF8_MAX,
        ROWS=TILE_ROWS,
        COLS=TILE_COLS,
    )
    return xf, out_dtype, (in_arg(amax), on_device(_TABLE, x.device), k, xf.numel()), c


def hif8_fake_quantize(x: torch.Tensor, spec: FormatSpec, cache: dict | None = None) -> torch.Tensor:
    """``fake_quantize(x, spec, backend="reference")`` for a supported HiF8 spec, bit for bit."""
    check_input(x, unsupported_reason(spec), "hif8")
    if x.dim() == 0 or x.numel() == 0:
        from ..reference import fake_quantize_ref

        return fake_quantize_ref(x, spec, None)
    xf, out_dtype, args, c = _launch_args(x, spec, cache)
    out = torch.empty(x.shape, dtype=out_dtype, device=x.device)
    programs = triton.cdiv(xf.numel(), TILE_ELEMS)
    warps = fq_warps("hif8", x.dtype, programs, x.device)
    _hif8_fq_kernel[(programs,)](in_arg(xf), in_arg(out), *args, **c, num_warps=warps)
    return out


def hif8_sums(x: torch.Tensor, spec: FormatSpec, input_stats: bool = True, cache: dict | None = None) -> ErrorSums:
    """The :class:`ErrorSums` of ``fake_quantize(x, spec)`` with the clip bound of
    ``kernels.ranges.unit_bound``, in one pass over x that writes no tensor of x's size
    (plus the amax pass for ``scale=tensor``, skipped when ``cache`` holds it)."""
    check_input(x, unsupported_reason(spec), "hif8")
    if x.dim() == 0 or x.numel() == 0:
        from ..ranges import unit_bound
        from ..reference import fake_quantize_ref
        from ..stats import error_sums_ref

        return error_sums_ref(x, fake_quantize_ref(x, spec, None), unit_bound(x, spec), input_stats=input_stats)
    xf, _, args, c = _launch_args(x, spec, cache)
    c["ROWS"] = _STATS_ROWS
    tiles = triton.cdiv(xf.numel(), _STATS_ROWS * TILE_COLS)
    programs, unroll, warps = stats_grid("hif8", x.dtype, tiles, x.device)
    cnt, sums = partials(programs, x.device)
    # Unscaled, q is a HiF8 value (at most 3 mantissa bits, a bfloat16); scaled, it is that
    # divided by an arbitrary float32 s, which the output rounding normally changes.
    exact = not c["SCALED"]
    _hif8_sums_kernel[(programs,)](
        in_arg(xf), cnt, sums, *args, n_tiles=tiles, EXACT_OUT=exact, INPUT_STATS=input_stats, UNROLL=unroll, **c,
        V=lanes_v((_STATS_ROWS * TILE_COLS,), x.dtype, warps, unroll, input_stats), num_warps=warps,
    )  # fmt: skip
    return reduce(cnt, sums, x.numel(), input_stats)


def fake_quantize(x: torch.Tensor, spec: FormatSpec, generator: torch.Generator | None = None) -> torch.Tensor:
    """The module interface's ``fake_quantize`` (no cache)."""
    return hif8_fake_quantize(x, spec)


sums = hif8_sums
