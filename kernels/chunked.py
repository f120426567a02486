"""The ``cpu-fast`` backend: the reference kernels run on cache-sized pieces, in parallel.

Why this is fast: the reference kernels make a few dozen elementwise passes. On
a whole 4096x4096 tensor each pass streams 64 MB through memory (~3 G elem/s
here); on a 256K-element piece that stays in L2 the same pass runs at ~10 G
elem/s. Splitting also lets each core work on its own pieces (one torch thread
per worker: torch's intra-op threads on small pieces cost more than they gain).

Why it is exact: a piece is always a set of whole scaling units (blocks, rows,
groups), so every piece computes exactly what the reference computes on the
whole tensor. Per-tensor scales are computed once over the whole tensor first
and passed to each piece. ``tests/kernels/test_chunked.py`` checks bit-equality
with the reference on random and corner-case tensors.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

from .formats import FormatSpec

__all__ = ["fake_quantize_chunked", "layout", "CHUNK_ELEMS"]

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
    """How a format may be split: ``("elementwise", None)``, ``("tensor", None)`` (one
    scale over the whole tensor, then elementwise), or ``("axis", unit)``: independent
    units of ``unit`` consecutive elements along the axis (``None``: the whole axis)."""
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
    if f in ("fp8tensor", "nvfp4"):
        return "tensor", None
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

        def ref(p, s, g, _fast=fast, _amax=amax):  # noqa: F811 - the pieces run the fast kernel
            return _fast(p, s, _amax)

        if kind == "tensor":
            kind = "elementwise"  # with the amax known, every element is independent
    if x.numel() < MIN_SPLIT_ELEMS or kind == "tensor":
        return ref(x, spec, generator)
    if kind == "elementwise":
        flat = x.reshape(-1)
        return _run(flat, spec, [(s,) for s in _ranges(flat.numel(), CHUNK_ELEMS)], ref, generator).view(x.shape)

    axis = spec["axis"] % x.dim()
    n_axis, outer = x.shape[axis], math.prod(x.shape[:axis])
    inner = math.prod(x.shape[axis + 1 :])
    v = x.reshape(outer, n_axis, inner)  # [outer, axis, inner]: a view when x is contiguous
    s1 = spec.replace(axis=1)
    if inner == 1 and n_axis > CHUNK_ELEMS and unit:
        # Long rows: cut each row at unit boundaries (the ragged tail stays in the last piece).
        per = CHUNK_ELEMS // unit * unit or unit
        idx = [(slice(r, r + 1), s, slice(None)) for r in range(outer) for s in _ranges(n_axis, per)]
    elif outer >= inner:
        rows = max(1, CHUNK_ELEMS // (n_axis * inner))
        idx = [(s,) for s in _ranges(outer, rows)]
    else:
        cols = max(1, CHUNK_ELEMS // (n_axis * outer))
        idx = [(slice(None), slice(None), s) for s in _ranges(inner, cols)]
    return _run(v, s1, idx, ref, generator).view(x.shape)


def _amax(x: torch.Tensor) -> torch.Tensor:
    """max |x| over the whole tensor as a 0-dim float32 tensor (NaN if any element is NaN)."""
    flat = x.reshape(-1)
    if flat.numel() < MIN_SPLIT_ELEMS:
        return flat.abs().amax().float()
    parts = list(_get_pool().map(lambda s: flat[s].abs().amax(), _ranges(flat.numel(), CHUNK_ELEMS)))
    return torch.stack(parts).amax().float()


def _run(v: torch.Tensor, spec: FormatSpec, idx: list[tuple[slice, ...]], ref, generator) -> torch.Tensor:
    """``out[i] = ref(v[i])`` for every index tuple, in the worker pool; returns ``out`` (shape of v)."""
    first = ref(v[idx[0]], spec, generator)
    out = torch.empty(v.shape, dtype=first.dtype, device=first.device)
    out[idx[0]] = first

    def work(i: tuple[slice, ...]) -> None:
        out[i] = ref(v[i], spec, generator)

    if len(idx) > 1:
        list(_get_pool().map(work, idx[1:]))
    return out
