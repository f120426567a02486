"""The ``cpu-fast`` backend: the reference kernels run on cache-sized pieces, in parallel.

Why this is fast: the reference kernels make a few dozen elementwise passes. On
a whole 4096x4096 tensor each pass streams 64 MB through memory (~3 G elem/s
here); on a 256K-element piece that stays in L2 the same pass runs at ~10 G
elem/s. Splitting also lets each core work on its own pieces (one torch thread
per worker: torch's intra-op threads on small pieces cost more than they gain).

Three more details matter on a small shared machine: every piece runs in the pool,
the first one too (an OpenMP team in the calling thread stalls on a busy core, see
``_run``); the result is allocated with huge-page advice (first-touch page faults on
a fresh 64 MB result cost as much as the fast kernels' arithmetic, ``_empty_output``);
and a fast kernel that takes ``out=`` writes each piece straight into the result.

Why it is exact: a piece is always a set of whole scaling units (blocks, rows,
groups), so every piece computes exactly what the reference computes on the
whole tensor. Per-tensor scales are computed once over the whole tensor first
and passed to each piece. ``tests/kernels/test_chunked.py`` checks bit-equality
with the reference on random and corner-case tensors.
"""

from __future__ import annotations

import inspect
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

from .formats import FormatSpec

__all__ = ["fake_quantize_chunked", "layout", "split", "map_pieces", "CHUNK_ELEMS"]

#: Elements per piece: ~1 MB of float32, leaving room for the temporaries in a 2 MB L2.
CHUNK_ELEMS = 1 << 18
#: Below this size splitting buys nothing; run the reference directly.
MIN_SPLIT_ELEMS = 1 << 20

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _workers() -> int:
    return max(1, min(os.cpu_count() or 1, torch.get_num_threads()))


def _get_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            # torch's thread count is per calling thread (OpenMP), so this affects the workers only.
            _pool = ThreadPoolExecutor(
                _workers(), thread_name_prefix="fqtool-cpu", initializer=torch.set_num_threads, initargs=(1,)
            )
        return _pool


def layout(spec: FormatSpec) -> tuple[str, int | None]:
    """How a format may be split: ``("elementwise", None)``; ``("tensor", unit)``: one scale
    over the whole tensor, then elementwise (``unit`` None) or in independent units of
    ``unit`` along the axis (NVFP4's blocks of 16); or ``("axis", unit)``: independent units
    of ``unit`` consecutive elements along the axis (``None``: the whole axis)."""
    f = spec.family
    if f == "mx":
        if spec["shared_exp"] == "none":
            return "elementwise", None
        return "axis", spec["block"] or None
    if f == "qtype":
        return "axis", spec["b"] * spec["B"]
    if f == "nf4grid":
        return "axis", spec["b"] * spec["B"]
    if f in ("tmx", "nvf4"):
        return "axis", 16
    if f == "nf4":
        return "axis", spec["block"]
    if f in ("hifx", "hif4_paper"):
        return "axis", 64
    if f == "int8sym":
        return "axis", None
    if f == "cast":
        return "elementwise", None
    if f == "hif8":
        scaled = spec["scale"] == "tensor" and spec["variant"] == "seed"
        return ("tensor", None) if scaled else ("elementwise", None)
    if f == "dhif8":
        return ("tensor", None) if spec["amax"] is None else ("elementwise", None)
    if f == "fp8tensor":
        return "tensor", None
    if f == "nvfp4":
        return "tensor", 16  # one scale over the whole tensor, then independent blocks of 16
    raise AssertionError(f)


def _ranges(n: int, step: int) -> list[slice]:
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def fake_quantize_chunked(
    x: torch.Tensor, spec: FormatSpec, generator: torch.Generator | None, ref, fast=None
) -> torch.Tensor:
    """Compute ``ref(x, spec, generator)`` piece by piece; bit-identical to one call on the whole tensor.

    With a ``fast`` kernel (``kernels.fast``), the pieces run that instead of ``ref``; per-tensor
    formats then get the whole tensor's amax, computed first in one parallel pass.
    """
    kind, unit = layout(spec)
    dither = spec.family == "mx" and spec["round"] == "dither"  # random draws must stay in order
    if dither or x.numel() == 0:
        return ref(x, spec, generator)
    if fast is not None:
        amax = _amax(x) if kind == "tensor" else None

        def ref(p, s, g, _fast=fast, _amax=amax, **out):  # noqa: F811 - the pieces run the fast kernel
            return _fast(p, s, _amax, **out)

        # A kernel with an ``out`` parameter writes each piece straight into the result.
        ref.writes_out = "out" in inspect.signature(fast).parameters
        if kind == "tensor":  # with the amax known, every element (block of ``unit``) is independent
            kind = "axis" if unit else "elementwise"
    if x.numel() < MIN_SPLIT_ELEMS or kind == "tensor":
        return ref(x, spec, generator)
    v, s1, idx = split(x, spec, kind, unit)
    return _run(v, s1, idx, ref, generator).view(x.shape)


def split(
    x: torch.Tensor, spec: FormatSpec, kind: str, unit: int | None, elems: int | None = None
) -> tuple[torch.Tensor, FormatSpec, list[tuple[slice, ...]]]:
    """Cut ``x`` into pieces of about ``elems`` elements, each a set of whole scaling units.

    ``kind``/``unit`` as :func:`layout` gives them, with ``"tensor"`` already resolved to
    ``"elementwise"`` or ``"axis"`` (the per-tensor amax known). Returns a view ``v`` of x,
    the spec to run on ``v``'s pieces and their indices: piece i is ``v[idx[i]]``.
    """
    elems = elems or CHUNK_ELEMS  # read at call time: tests shrink CHUNK_ELEMS
    if kind == "elementwise":
        flat = x.reshape(-1)
        return flat, spec, [(s,) for s in _ranges(flat.numel(), elems)]
    axis = spec["axis"] % x.dim()
    n_axis, outer = x.shape[axis], math.prod(x.shape[:axis])
    inner = math.prod(x.shape[axis + 1 :])
    v = x.reshape(outer, n_axis, inner)  # [outer, axis, inner]: a view when x is contiguous
    s1 = spec.replace(axis=1)
    if inner == 1 and n_axis > elems and unit:
        # Long rows: cut each row at unit boundaries (the ragged tail stays in the last piece).
        per = elems // unit * unit or unit
        idx = [(slice(r, r + 1), s, slice(None)) for r in range(outer) for s in _ranges(n_axis, per)]
    elif outer >= inner:
        rows = max(1, elems // (n_axis * inner))
        idx = [(s,) for s in _ranges(outer, rows)]
    else:
        cols = max(1, elems // (n_axis * outer))
        idx = [(slice(None), slice(None), s) for s in _ranges(inner, cols)]
    return v, s1, idx


def map_pieces(fn, idx: list[tuple[slice, ...]]) -> list:
    """``[fn(i) for i in idx]``, computed in the worker pool, in order."""
    return list(_get_pool().map(fn, idx))


def _amax(x: torch.Tensor) -> torch.Tensor:
    """max |x| over the whole tensor as a 0-dim float32 tensor (NaN if any element is NaN)."""
    flat = x.reshape(-1)
    if flat.numel() < MIN_SPLIT_ELEMS:
        return flat.abs().amax().float()
    parts = list(_get_pool().map(lambda s: flat[s].abs().amax(), _ranges(flat.numel(), CHUNK_ELEMS)))
    return torch.stack(parts).amax().float()


#: Outputs at least this large (bytes) ask Linux for transparent huge pages.
HUGE_PAGE_BYTES = 4 << 20
_MADV_HUGEPAGE = 14
_madvise = None


def _empty_output(shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``torch.empty`` for the result, backed by 2 MB pages where Linux allows it.

    A fresh result is memory the kernel has never touched, and here the first write to
    each 4 KB page faults: filling a new 64 MB tensor took ~40 ms, as long as the fast
    MX kernels take to compute it. With ``madvise(MADV_HUGEPAGE)`` (honoured when
    /sys/kernel/mm/transparent_hugepage/enabled is ``madvise`` or ``always``) it took
    ~5-15 ms. The advice only changes how the pages are backed, never their contents;
    where it is unavailable the call is skipped.
    """
    global _madvise
    out = torch.empty(shape, dtype=dtype, device=device)
    nbytes = out.numel() * out.element_size()
    if device.type != "cpu" or nbytes < HUGE_PAGE_BYTES or _madvise is False:
        return out
    if _madvise is None:
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            _madvise = libc.madvise
        except (OSError, AttributeError):
            _madvise = False
            return out
    page = 2 << 20
    start = (out.data_ptr() + page - 1) // page * page  # whole huge pages inside the tensor
    end = (out.data_ptr() + nbytes) // page * page
    if end > start:
        _madvise(start, end - start, _MADV_HUGEPAGE)
    return out


def _run(v: torch.Tensor, spec: FormatSpec, idx: list[tuple[slice, ...]], ref, generator) -> torch.Tensor:
    """``out[i] = ref(v[i])`` for every index tuple, in the worker pool; returns ``out`` (shape of v).

    The first piece runs in the pool too, not in the calling thread: that thread may use
    several OpenMP threads, and an OpenMP team waits for all its threads at the end of
    every op. With another busy process on this 2-core machine one of them often has no
    core for a scheduler tick: a 256K-element piece took 128 ms instead of 0.5 ms.
    """
    first = _get_pool().submit(ref, v[idx[0]], spec, generator).result()
    out = _empty_output(v.shape, first.dtype, first.device)
    out[idx[0]] = first
    writes_out = getattr(ref, "writes_out", False)

    def work(i: tuple[slice, ...]) -> None:
        if writes_out:
            ref(v[i], spec, generator, out=out[i])  # saves a fresh piece and its copy
        else:
            out[i] = ref(v[i], spec, generator)

    if len(idx) > 1:
        list(_get_pool().map(work, idx[1:]))
    return out
