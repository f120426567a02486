"""Triton NF4 kernels (family ``nf4``): bitsandbytes' code book with an absmax per block
(formats-mx.md §5.1), the reference ``quantize_nf4_ref`` bit for bit, on tiles of ``BPP``
blocks.

The input is viewed in place as (outer, L, inner), L the blocked axis and ``inner`` the product
of the dimensions after it; each (outer, inner) line is cut into ``ceil(L / block)`` blocks, the
last one possibly partial (the reference zero-pads it, and zeros never raise an absmax). With
the axis last (inner = 1) a tile is [blocks, block], as in ``kernels.triton.mx``; otherwise it
is [block, blocks] with neighbouring blocks at neighbouring addresses, so a warp's loads stay
coalesced along ``inner`` and no transposed copy of x is made.

Per tile, the reference's float32 operations in its order:

1. **absmax** is a NaN-propagating float max of |x| (``max.NaN``; |x| is an operand modifier),
   kept as its bits: for non-negative floats the int order is the float order and every NaN
   pattern sorts above +Inf, so NaN propagates as ``amax`` does, across chunks too.
2. ``r = 1 / max(absmax, 1e-38)``, IEEE-rounded (``div_rn``: Triton's ``/`` is approximate on
   GPUs), and the floor as an int max on the bits, so a NaN absmax stays NaN; then
   ``s = clamp(x · r, -1, 1)`` as the reference's ``torch.reciprocal`` and ``clamp``.
3. **The code index** is ``bucketize(s, midpoints)`` (a value on a midpoint goes to the lower
   code, NaN past the last one), found as ``kernels.fast.nf4`` finds it: the cell
   ``c = rne(16·s) + 16`` is the low mantissa of ``16·s + (2^23 + 16)`` (``16·s`` is exact and
   the sum rounds once, fused or not); a cell holds at most one midpoint ``mid[c]`` and every
   midpoint sits well inside its cell, so the code is ``code2[c + 33·(s > mid[c])]``. The two
   33-entry tables (``kernels.fast.nf4._cell_tables``) are loaded per element: they stay in
   L1, and two look-ups replace 15 compare-and-selects per element (not yet measured against
   them on a GPU; one 16-byte look-up of a packed (midpoint, code above, code below) row
   measured slower, 45 % of copy against 71 % on bf16 8192x8192: its [.., 4] tile took a
   layout conversion through shared memory). NaN ``s`` (a block whose absmax is NaN or Inf) is
   mapped to 1.0 by the clamp (its min first), which is the top bucket as bucketize puts it.
4. ``q = code · absmax`` in float32 (so an Inf element of an Inf block decodes to +Inf and the
   rest of it to NaN, a NaN block to NaN, §5.1), rounded to the output dtype: bf16 RNE on the
   bits (exactly torch's ``.to(bfloat16)``), fp16 by Triton's conversion (RNE).

``_nf4_fq`` stores q, one block group (``BPP`` blocks) per program. ``_nf4_sums`` computes the
fused error statistics (``kernels.triton._common``): no tensor of x's size is written; each
program loops over every ``num_programs``-th block group, accumulates the sums per lane, and
reduces across its lanes once. Its tiles hold :data:`STATS_TILE_ELEMS` elements (every lane
carries the accumulators of each element it holds). The clip bound is +Inf everywhere
(``kernels.ranges.unit_bound`` is None for nf4: no element ever exceeds its block absmax).
``EXACT_OUT`` is False: q is a code times a float32 absmax, not normally a bfloat16.

Blocks up to :data:`MAX_TILE_BLOCK` (:data:`STATS_TILE_ELEMS` for the statistics) sit whole in a
tile, ``_nf4_tile``, and x is read once. Longer blocks are cut into chunks of ``KC`` positions
(one block per group along the last axis; 8 neighbouring blocks, one 32-byte sector, otherwise):
the program takes the group's absmax over all chunks first (``_nf4_group_amax``), then reads them
again to quantize (``_nf4_chunk``); for the statistics each chunk is one tile.

The ``cache`` of :func:`sums` is accepted and left alone: nf4's only reduction, the block absmax,
depends on the format (block, axis) and is computed in registers in the same pass at no cost;
there is no format-independent per-tensor reduction worth sharing.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ..fast.nf4 import _CODE2, _MID, _N_CELLS
from ..formats import FormatSpec
from ..reference.nf4 import BNB_ABSMAX_FLOOR
from ..stats import ErrorSums
from ._common import (
    IN_KIND,
    check_input,
    fq_program,
    fq_warps,
    in_arg,
    load_f32,
    nan_max,
    on_device,
    partials,
    reduce,
    stats_add,
    stats_fast_ok,
    stats_grid,
    stats_init,
    stats_program,
    stats_store,
    store_out,
)

__all__ = ["FAMILIES", "unsupported_reason", "fake_quantize", "sums", "nf4_fake_quantize", "nf4_sums"]

FAMILIES = ("nf4",)

#: Elements per program (blocks per program = this / padded block length, at least 1).
TILE_ELEMS = 4096
#: Blocks up to this (padded to a power of two) are held whole in one tile; longer ones in chunks.
MAX_TILE_BLOCK = 8192
#: Elements per statistics tile (at most TILE_ELEMS; blocks longer than it go in chunks): small
#: tiles, since every lane carries the per-lane accumulators of each element it holds (the
#: warps: ``_common.STATS_WARPS``).
STATS_TILE_ELEMS = 1024
#: The longest block: positions within a block are int32 in the kernels.
MAX_BLOCK = 2**30
#: float32 bits of bitsandbytes' absmax floor (1e-38 rounded to float32, a subnormal).
_FLOOR_BITS = int(torch.tensor(BNB_ABSMAX_FLOOR, dtype=torch.float32).view(torch.int32))
#: The cell count on each side of 0 (cells are 1/16 wide) and the float32 bits of 2^23.
_CELLS = (_N_CELLS - 1) // 2
_MAGIC = 2.0**23 + _CELLS
_MAGIC_BITS = 0x4B000000


def unsupported_reason(spec: FormatSpec) -> str | None:
    """None when the Triton kernels cover ``spec``, else why not."""
    if spec.family != "nf4":
        return f"the triton nf4 kernels cover the nf4 family only, not {spec.family}"
    if not 1 <= spec["block"] <= MAX_BLOCK:
        return f"block={spec['block']} is not implemented in triton (1..2^30: int32 positions)"
    return None


# --------------------------------------------------------------------------- device code


@triton.jit
def _nf4_locate(pid, k0, n_blocks, nblk, L, INNER, BLOCK: tl.constexpr, KC: tl.constexpr, BPP: tl.constexpr,
                TRANS: tl.constexpr, EVEN: tl.constexpr = False):  # fmt: skip
    """(offs, valid) of positions k0 .. k0 + KC - 1 of the program's BPP blocks: a [BPP, KC]
    tile, or [KC, BPP] when TRANS (the block along dim 0). EVEN (not TRANS, rows of whole
    blocks, BLOCK == KC a power of two): block g is the flat run g·BLOCK ..., no division."""
    g = pid.to(tl.int64) * BPP + tl.arange(0, BPP).to(tl.int64)  # global block ids
    k = k0 + tl.arange(0, KC)
    if TRANS:
        # Block g is (o, b, i) with i fastest: neighbouring blocks sit at neighbouring addresses.
        line = nblk * INNER
        o = g // line
        rest = g - o * line
        b = rest // INNER
        i = rest - b * INNER
        base = o * L * INNER + b * (BLOCK * INNER) + i
        pos = (b * BLOCK)[None, :] + k[:, None]
        valid = (g < n_blocks)[None, :] & (k < BLOCK)[:, None] & (pos < L)
        offs = base[None, :] + k[:, None].to(tl.int64) * INNER
    elif EVEN:
        offs = g[:, None] * BLOCK + k[None, :]
        valid = tl.broadcast_to((g < n_blocks)[:, None], (BPP, KC))
    else:
        row = g // nblk
        col = (g - row * nblk) * BLOCK
        cols = col[:, None] + k[None, :]
        valid = (g < n_blocks)[:, None] & (k < BLOCK)[None, :] & (cols < L)
        offs = row[:, None] * L + cols
    return offs, valid


@triton.jit
def _nf4_amax(x, TRANS: tl.constexpr):
    """Step 1: each block's absmax bits, from a NaN-propagating float max of |x| (|x| is an
    operand modifier of the max: no per-element abs). NaN bits sort above every other as ints."""
    if TRANS:
        m = tl.reduce(tl.abs(x), 0, nan_max)
    else:
        m = tl.reduce(tl.abs(x), 1, nan_max)
    return m.to(tl.int32, bitcast=True)


@triton.jit
def _nf4_decode(x, amax, mid_ptr, code_ptr, BPP: tl.constexpr, TRANS: tl.constexpr, FLOOR_BITS: tl.constexpr,
                MAGIC: tl.constexpr, MAGIC_BITS: tl.constexpr, N_CELLS: tl.constexpr):  # fmt: skip
    """Steps 2-4 for a tile of x and its blocks' absmax bits: q in float32, before the output cast."""
    absmax = amax.to(tl.float32, bitcast=True)
    den = tl.maximum(amax, FLOOR_BITS).to(tl.float32, bitcast=True)  # on the bits: a NaN absmax stays NaN
    r = tl.div_rn(tl.full([BPP], 1.0, tl.float32), den)
    if TRANS:
        r2 = r[None, :]
        absmax2 = absmax[None, :]
    else:
        r2 = r[:, None]
        absmax2 = absmax[:, None]
    # clamp(x·r, -1, 1), NaN to 1.0 (bucketize puts NaN past the last midpoint: code +1): the
    # min first, as it returns its non-NaN operand (min.f32 on the GPU, numpy's fmin in Triton's
    # interpreter).
    s = tl.maximum(tl.minimum(x * r2, 1.0), -1.0)
    # Step 3: the cell, then at most one midpoint comparison inside it.
    # The cell is bits - MAGIC_BITS; the tables' base pointers take the -MAGIC_BITS (once, a
    # scalar: the biased pointers are never dereferenced), so the per-element index is the bits.
    bits = (s * 16.0 + MAGIC).to(tl.int32, bitcast=True)
    mid = tl.load((mid_ptr - MAGIC_BITS) + bits)
    code = tl.load((code_ptr - MAGIC_BITS) + bits + (s > mid).to(tl.int32) * N_CELLS)
    return code * absmax2


@triton.jit
def _nf4_chunk(g, c, amax, args, K: tl.constexpr):
    """Positions c·KC .. c·KC + KC - 1 of block group ``g`` (blocks g·BPP .. g·BPP + BPP - 1) and
    its blocks' absmax bits ``amax``: (x, q, valid, offs). args (x_ptr, mid_ptr, code_ptr,
    n_blocks, nblk, L, INNER), K (BLOCK, KC, NCH, BPP, IN_KIND, TRANS, FLOOR_BITS, MAGIC,
    MAGIC_BITS, N_CELLS)."""
    x_ptr, mid_ptr, code_ptr, n_blocks, nblk, L, INNER = args
    KC: tl.constexpr = K[1]
    BPP: tl.constexpr = K[3]
    IN_KIND: tl.constexpr = K[4]
    TRANS: tl.constexpr = K[5]
    offs, valid = _nf4_locate(g, c * KC, n_blocks, nblk, L, INNER, K[0], KC, BPP, TRANS)
    x = load_f32(x_ptr, offs, valid, IN_KIND)
    q = _nf4_decode(x, amax, mid_ptr, code_ptr, BPP, TRANS, K[6], K[7], K[8], K[9])
    return x, q, valid, offs


@triton.jit
def _nf4_group_amax(g, args, K: tl.constexpr):
    """The absmax bits of block group ``g``'s blocks over all NCH chunks (a first read of them)."""
    x_ptr, mid_ptr, code_ptr, n_blocks, nblk, L, INNER = args
    KC: tl.constexpr = K[1]
    NCH: tl.constexpr = K[2]
    BPP: tl.constexpr = K[3]
    TRANS: tl.constexpr = K[5]
    amax = tl.zeros([BPP], dtype=tl.int32)
    for c in range(0, NCH):
        offs, valid = _nf4_locate(g, c * KC, n_blocks, nblk, L, INNER, K[0], KC, BPP, TRANS)
        amax = tl.maximum(amax, _nf4_amax(load_f32(x_ptr, offs, valid, K[4]), TRANS))
    return amax


@triton.jit
def _nf4_tile(t, args, K: tl.constexpr):
    """Tile ``t`` when blocks fit one tile (NCH == 1): block group ``t`` read once, (x, q, valid,
    offs, bound); the bound is +Inf (``unit_bound`` is None for nf4: nothing clips). args and K
    as :func:`_nf4_chunk`."""
    x_ptr, mid_ptr, code_ptr, n_blocks, nblk, L, INNER = args
    KC: tl.constexpr = K[1]
    BPP: tl.constexpr = K[3]
    TRANS: tl.constexpr = K[5]
    offs, valid = _nf4_locate(t, 0, n_blocks, nblk, L, INNER, K[0], KC, BPP, TRANS, K[10])
    x = load_f32(x_ptr, offs, valid, K[4])
    q = _nf4_decode(x, _nf4_amax(x, TRANS), mid_ptr, code_ptr, BPP, TRANS, K[6], K[7], K[8], K[9])
    return x, q, valid, offs, tl.full([1, 1], float("inf"), tl.float32)


@triton.jit
def _nf4_chunked_pass(args, K: tl.constexpr, n_groups, LANES: tl.constexpr, CAREFUL: tl.constexpr,
                      INPUT_STATS: tl.constexpr):  # fmt: skip
    """One pass of :func:`_nf4_chunked_stats` over the program's block groups: per group the
    absmax over all chunks, then each chunk into the accumulators (``_common.stats_add``)."""
    pid = tl.program_id(0)
    zero = pid * 0  # the loop index as a tensor in Triton's interpreter too (there it is an int)
    inf = tl.full([1, 1], float("inf"), tl.float32)  # nothing clips
    acc = stats_init(LANES)
    for g in range(pid, n_groups, tl.num_programs(0)):
        amax = _nf4_group_amax(g + zero, args, K)
        for c in range(0, K[2]):
            x, q, valid, offs = _nf4_chunk(g + zero, c, amax, args, K)
            acc = stats_add(acc, x, q, valid, inf, K[4], False, CAREFUL, INPUT_STATS, 1)
    return acc


@triton.jit
def _nf4_chunked_stats(args, K: tl.constexpr, n_groups, cnt_ptr, sum_ptr, LANES: tl.constexpr,
                       INPUT_STATS: tl.constexpr):  # fmt: skip
    """``_common.stats_program`` for blocks in NCH chunks (tiles of LANES elements, an
    accumulator each): the fast pass, and the careful one, reading everything again, if the
    fast one does not stand."""
    acc = _nf4_chunked_pass(args, K, n_groups, LANES, False, INPUT_STATS)
    if stats_fast_ok(acc):
        stats_store(acc, cnt_ptr, sum_ptr, tl.program_id(0), False, INPUT_STATS)
    else:
        acc = _nf4_chunked_pass(args, K, n_groups, LANES, True, INPUT_STATS)
        stats_store(acc, cnt_ptr, sum_ptr, tl.program_id(0), True, INPUT_STATS)


# The fake-quantization kernel and the statistics kernel, around the tile code.


@triton.jit
def _nf4_fq(x_ptr, out_ptr, mid_ptr, code_ptr, n_blocks, nblk, L, INNER, BLOCK: tl.constexpr, KC: tl.constexpr,
            NCH: tl.constexpr, BPP: tl.constexpr, IN_KIND: tl.constexpr, TRANS: tl.constexpr, FLOOR_BITS: tl.constexpr,
            MAGIC: tl.constexpr, MAGIC_BITS: tl.constexpr, N_CELLS: tl.constexpr, EVEN: tl.constexpr):  # fmt: skip
    """Fake quantization of block group ``pid``: with NCH == 1 its blocks fit one tile and x is
    read once; longer blocks are cut into NCH chunks, read twice (absmax, then quantize)."""
    K: tl.constexpr = (BLOCK, KC, NCH, BPP, IN_KIND, TRANS, FLOOR_BITS, MAGIC, MAGIC_BITS, N_CELLS, EVEN)
    args = (x_ptr, mid_ptr, code_ptr, n_blocks, nblk, L, INNER)
    if NCH == 1:
        fq_program(_nf4_tile, args, K, out_ptr, IN_KIND)
    else:
        pid = tl.program_id(0)
        amax = _nf4_group_amax(pid, args, K)
        for c in range(0, NCH):
            x, q, valid, offs = _nf4_chunk(pid, c, amax, args, K)
            store_out(out_ptr, offs, q, valid, IN_KIND)


@triton.jit
def _nf4_sums(x_ptr, cnt_ptr, sum_ptr, mid_ptr, code_ptr, n_blocks, nblk, L, INNER, n_tiles, BLOCK: tl.constexpr,
              KC: tl.constexpr, NCH: tl.constexpr, BPP: tl.constexpr, IN_KIND: tl.constexpr, TRANS: tl.constexpr,
              FLOOR_BITS: tl.constexpr, MAGIC: tl.constexpr, MAGIC_BITS: tl.constexpr, N_CELLS: tl.constexpr,
              EVEN: tl.constexpr, INPUT_STATS: tl.constexpr, UNROLL: tl.constexpr):  # fmt: skip
    """The fused statistics over ``n_tiles`` block groups (EXACT_OUT False: see the module docstring)."""
    K: tl.constexpr = (BLOCK, KC, NCH, BPP, IN_KIND, TRANS, FLOOR_BITS, MAGIC, MAGIC_BITS, N_CELLS, EVEN)
    args = (x_ptr, mid_ptr, code_ptr, n_blocks, nblk, L, INNER)
    if TRANS:
        R: tl.constexpr = KC
        C: tl.constexpr = BPP
    else:
        R: tl.constexpr = BPP
        C: tl.constexpr = KC
    if NCH == 1:
        # V=1: the table look-ups of step 3 give the tile a layout of one element per thread
        # along the block, in which runs of consecutive elements would be summed across threads.
        stats_program(_nf4_tile, args, K, n_tiles, cnt_ptr, sum_ptr, (R, C), IN_KIND, False, INPUT_STATS, UNROLL, 1)
    else:
        _nf4_chunked_stats(args, K, n_tiles, cnt_ptr, sum_ptr, R * C, INPUT_STATS)


# --------------------------------------------------------------------------- launchers


def _launch_args(x: torch.Tensor, spec: FormatSpec, stats: bool = False) -> tuple[torch.Tensor, int, tuple, dict]:
    """(contiguous x, block groups, runtime args, constexprs) for a non-empty x of dim >= 1, for
    fake quantization or (``stats``) the statistics kernel's smaller tiles."""
    if not -x.dim() <= spec["axis"] < x.dim():
        raise ValueError(f"axis out of range for a {x.dim()}-D tensor")
    axis = spec["axis"] % x.dim()
    xc = x.detach().contiguous()
    L = x.shape[axis]
    inner = math.prod(x.shape[axis + 1 :])
    # A block at least as long as the line is the whole line (the padding zeros change nothing).
    block = min(spec["block"], L)
    trans = inner > 1
    bp2 = triton.next_power_of_2(block)
    tile, whole = TILE_ELEMS, MAX_TILE_BLOCK
    if stats:  # small tiles: a block longer than one is cut into chunks
        tile = min(STATS_TILE_ELEMS, TILE_ELEMS)
        whole = min(tile, MAX_TILE_BLOCK)
    if bp2 <= whole:  # whole blocks in one tile: one read of x
        kc, bpp, nch = bp2, max(1, tile // bp2), 1
    else:  # chunks of the block; across blocks (TRANS) 8 neighbours fill a 32-byte sector
        bpp = 8 if trans else 1
        kc = tile // bpp
        nch = triton.cdiv(block, kc)
    nblk = triton.cdiv(L, block)
    n_blocks = (x.numel() // L) * nblk
    groups = triton.cdiv(n_blocks, bpp)
    c = dict(
        BLOCK=block,
        KC=kc,
        NCH=nch,
        BPP=bpp,
        IN_KIND=IN_KIND[x.dtype],
        TRANS=trans,
        FLOOR_BITS=_FLOOR_BITS,
        MAGIC=_MAGIC,
        MAGIC_BITS=_MAGIC_BITS,
        N_CELLS=_N_CELLS,
        # Rows of whole power-of-two blocks in one tile each: flat runs (no row division).
        EVEN=not trans and nch == 1 and block == bp2 and L % block == 0,
    )
    if not stats:  # (the statistics launcher takes its warps from stats_grid)
        c["num_warps"] = fq_warps("nf4", x.dtype, groups, x.device, kc * bpp)
    mid, code2 = on_device(_MID, x.device), on_device(_CODE2, x.device)
    return xc, groups, (mid, code2, n_blocks, nblk, L, inner), c


def nf4_fake_quantize(x: torch.Tensor, spec: FormatSpec) -> torch.Tensor:
    """``fake_quantize(x, spec, backend="reference")`` for a supported nf4 spec, bit for bit."""
    check_input(x, unsupported_reason(spec), "nf4")
    if x.dim() == 0 or x.numel() == 0:
        from ..reference import fake_quantize_ref

        return fake_quantize_ref(x, spec, None)
    xc, groups, args, c = _launch_args(x, spec)
    out = torch.empty_like(xc)
    _nf4_fq[(groups,)](in_arg(xc), in_arg(out), *args, **c)
    return out


def nf4_sums(x: torch.Tensor, spec: FormatSpec, input_stats: bool = True, cache: dict | None = None) -> ErrorSums:
    """The :class:`ErrorSums` of ``fake_quantize(x, spec)`` (clip bound +Inf, as
    ``kernels.ranges.unit_bound``'s None), fused: no tensor of x's size is written, and x is read
    once (twice for blocks longer than ``STATS_TILE_ELEMS``). ``cache`` is not used (see the module
    docstring)."""
    check_input(x, unsupported_reason(spec), "nf4")
    if x.dim() == 0 or x.numel() == 0:
        from ..ranges import unit_bound
        from ..reference import fake_quantize_ref
        from ..stats import error_sums_ref

        return error_sums_ref(x, fake_quantize_ref(x, spec, None), unit_bound(x, spec), input_stats=input_stats)
    xc, groups, args, c = _launch_args(x, spec, stats=True)
    # (Blocks in chunks, NCH > 1, loop over their chunks instead: UNROLL does not apply.)
    programs, unroll, warps = stats_grid("nf4", x.dtype, groups, x.device)
    cnt, sums_ = partials(programs, x.device)
    _nf4_sums[(programs,)](in_arg(xc), cnt, sums_, *args, n_tiles=groups, INPUT_STATS=bool(input_stats), UNROLL=unroll,
                           num_warps=warps, **c)  # fmt: skip
    return reduce(cnt, sums_, x.numel(), input_stats)


def fake_quantize(x: torch.Tensor, spec: FormatSpec, generator: torch.Generator | None = None) -> torch.Tensor:
    """The module interface's ``fake_quantize`` (the family rounds deterministically: no generator)."""
    return nf4_fake_quantize(x, spec)


sums = nf4_sums
