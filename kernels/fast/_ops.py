"""Building blocks for the fast CPU kernels (see the package docstring for why these).

All take float32 tensors unless said otherwise and avoid bool tensors.
"""

from __future__ import annotations

import contextlib
import math
import threading

import torch

F32, I32 = torch.float32, torch.int32


def pow2_biased(eb: torch.Tensor) -> torch.Tensor:
    """``2^(eb - 127)`` as float32 for int32 ``eb`` in [1, 254] (a normal power of two)."""
    return (eb << 23).view(F32)


# --------------------------------------------------------------------------- block kernels (mx, qtype, tmx)

#: The float32 just below 1/2, 0.5 - 2^-25. ``floor(a + NEXT_BELOW_HALF)`` rounds ties away.
NEXT_BELOW_HALF = 0.5 - 2.0**-25

#: The sign bit of a float32 (as int32) and of a 16-bit float (as int16).
SIGN32, SIGN16 = -(2**31), -(2**15)


def round_half_away_(a: torch.Tensor) -> torch.Tensor:
    """Round non-negative float32 ``a`` in place to the nearest integer, ties away; exact
    for every such float32 (and +Inf, NaN stay).

    ``floor(a + c)`` with c = 0.5 - 2^-25: two passes, where ``floor(2a) - floor(a)`` takes four.
    Why it equals ties-away (n = RNA(a)): from below, a >= n - 1/2 gives
    a + c >= n - 2^-25, which rounds to n or more (for n >= 1 the float32 grid just
    below n is 2^-24 or coarser, and a midpoint goes to the even n). From above,
    a <= n + 1/2 - ulp(a), so the exact sum stays at least ulp(a) + 2^-25 below n + 1,
    more than half the grid step below n + 1 (a >= n - 1/2 is at most one binade
    below n + 1): it cannot round up to n + 1. From 2^23 up every float32 is an integer
    and a + c rounds back to a. Checked exhaustively on [2^-4, 2^27) (below 2^-4 the sum
    stays under 1).
    """
    return a.add_(NEXT_BELOW_HALF).floor_()


#: Scratch buffers larger than this (elements) are not kept between calls; the pieces of
#: ``kernels.chunked`` are 256K elements, so a thread keeps a few MB.
SCRATCH_KEEP_ELEMS = 1 << 20

_scratch = threading.local()


def scratch(name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A per-thread buffer for temporaries, reused across calls under the same ``name``.

    Fresh tensors of a piece's size cost more than the arithmetic on them here: the
    allocator hands 1 MB blocks back to the OS and every first touch of a page faults
    (measured: a 256K-element MX piece ran 2x slower with fresh temporaries). Never
    return a scratch buffer: the next call on the thread overwrites it. The same tensor
    object comes back for the same name and shape (views cost ~1-2 us each here), so do
    not change its shape or strides in place.
    """
    shape = tuple(shape)
    device = getattr(_scratch, "device", None)
    if device is not None:  # inside on_device(): a plain tensor there, nothing kept
        return torch.empty(shape, dtype=dtype, device=device)
    bufs = _scratch.__dict__.setdefault("bufs", {})
    entry = bufs.get((name, dtype))
    if entry is not None and shape in entry[1]:
        return entry[1][shape]  # the usual case: same piece shape as last time
    n = math.prod(shape)
    if n > SCRATCH_KEEP_ELEMS:
        return torch.empty(shape, dtype=dtype)
    if entry is None or entry[0].numel() < n:
        entry = bufs[(name, dtype)] = (torch.empty(n, dtype=dtype), {})
    view = entry[0][:n].view(shape)
    if len(entry[1]) < 8:  # a few shapes per name: pieces, tails, small tensors
        entry[1][shape] = view
    return view


@contextlib.contextmanager
def on_device(device: torch.device):
    """Make :func:`scratch` hand out fresh tensors on ``device`` (for this thread), so helpers
    written for CPU pieces also run on a GPU (``kernels.ranges`` reuses them there)."""
    if torch.device(device).type == "cpu":
        yield
        return
    before = getattr(_scratch, "device", None)
    _scratch.device = torch.device(device)
    try:
        yield
    finally:
        _scratch.device = before


def magnitudes(x: torch.Tensor, axis: int, unit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, x3)``: ``x3`` is ``x`` viewed as (outer, n, inner) around ``axis``, and ``A`` a
    scratch float32 tensor (outer, n_pad, inner) holding ``|x3|`` zero-padded along the axis
    to a multiple of ``unit`` (at least one unit), like the reference kernels' padding."""
    a = axis % x.dim()
    n = x.shape[a]
    x3 = x.reshape(math.prod(x.shape[:a]), n, math.prod(x.shape[a + 1 :]))
    n_pad = max(1, -(-n // unit)) * unit
    A = scratch("magnitudes", (x3.shape[0], n_pad, x3.shape[2]), F32)
    if n_pad > n:
        A[:, n:].zero_()
    head = A[:, :n] if n_pad > n else A
    if x3.dtype == F32:
        torch.abs(x3, out=head)
    else:
        head.copy_(x3).abs_()  # float32 holds every bf16/fp16 value exactly
    return A, x3


def with_signs(A: torch.Tensor, x3: torch.Tensor, shape: torch.Size, out: torch.Tensor | None = None) -> torch.Tensor:
    """The result in ``x3``'s dtype and ``shape``: the quantized magnitudes ``A`` (from
    :func:`magnitudes`, padding dropped) rounded to that dtype (RNE, as the reference's
    ``.to(x.dtype)``) with the sign bits of ``x3`` ORed in. Written into ``out`` when given
    (any strides, ``x3``'s shape and dtype), else into a new tensor.

    A sign bit ORed into a non-negative float negates it exactly, and into a NaN leaves a
    NaN; ORing bits is ~3x cheaper than ``copysign`` here.
    """
    if out is not None and out.shape != x3.shape and not out.is_contiguous():
        return out.copy_(with_signs(A, x3, shape))  # no (outer, n, inner) view of it
    n = x3.shape[1]
    head = A[:, :n] if A.shape[1] > n else A
    result = torch.empty(x3.shape, dtype=x3.dtype) if out is None else out.view(x3.shape)
    if x3.dtype == F32:
        sign = torch.bitwise_and(x3.view(I32), SIGN32, out=scratch("signs", x3.shape, I32))
        torch.bitwise_or(head.view(I32), sign, out=result.view(I32))
    elif x3.dtype in (torch.bfloat16, torch.float16):
        result.copy_(head)
        sign = torch.bitwise_and(x3.view(torch.int16), SIGN16, out=scratch("signs16", x3.shape, torch.int16))
        result.view(torch.int16).bitwise_or_(sign)
    else:
        torch.copysign(head.to(x3.dtype), x3, out=result)
    return result.view(shape) if out is None else out


def pow2_wide(e: torch.Tensor) -> torch.Tensor:
    """``2^e`` exactly as float32 for int32 ``e`` in [-149, 127], subnormal results included.

    The product of two normal powers of two 2^h·2^(e-h), h = floor(e/2): a product of
    powers of two is exact whenever it is representable, as 2^-149 <= 2^e <= 2^127 is.
    Seven int/float passes where ``_bits.exp2i`` needs a dozen with three ``where``; meant
    for small per-block tensors.
    """
    h = e >> 1
    return pow2_biased(h + 127) * pow2_biased((e - h) + 127)
