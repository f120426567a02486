"""Error sums of a fake quantization: the float64 accumulators every error metric is made from.

:func:`error_sums_ref` is the definition (pure PyTorch, any device). ``kernels.chunked`` computes
the same sums piece by piece on the CPU, fused with the quantization, and merges them with
:meth:`ErrorSums.merge`; the counts are then identical and the sums equal up to float64 rounding
(a different summation order).

With ``x`` the input, ``q`` its fake quantization and ``d = q - x`` (computed in float64, so
exactly for every float32/bfloat16/float16 pair), over the ``n`` elements where x and q are both
finite: sum_x2, sum_q2, sum_xq, sum_d2, sum_ad (sum |d|), max_ad (max |d|). ``clipped`` counts
finite x with |x| above ``bound`` (the largest magnitude x's scaling unit can represent,
:func:`kernels.ranges.unit_bound`); ``flushed`` counts finite x != 0 with q == 0. The input's
own statistics (over its finite elements) are kept as count, mean and sum of squared deviations
(merged with Chan et al.'s formula, which stays accurate when the mean dwarfs the spread).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, fields

import numpy as np
import torch

from .formats import FormatSpec, parse

__all__ = ["ErrorSums", "error_sums", "error_sums_ref", "quantize_with_sums", "format_sums"]


@dataclass
class ErrorSums:
    numel: int = 0
    nan_in: int = 0
    inf_in: int = 0
    nan_out: int = 0
    inf_out: int = 0
    n: int = 0  # elements with x and q both finite
    sum_x2: float = 0.0
    sum_q2: float = 0.0
    sum_xq: float = 0.0
    sum_d2: float = 0.0
    sum_ad: float = 0.0
    max_ad: float = 0.0
    clipped: int = 0
    flushed: int = 0
    nx: int = 0  # finite elements of x
    mean_x: float = 0.0
    m2_x: float = 0.0  # sum of (x - mean_x)^2
    min_x: float = math.inf
    max_x: float = -math.inf

    def merge(self, o: ErrorSums) -> ErrorSums:
        """The sums of the concatenation of both pieces (returns self, updated)."""
        nx = self.nx + o.nx
        if nx:
            delta = o.mean_x - self.mean_x
            self.m2_x = self.m2_x + o.m2_x + delta * delta * self.nx * o.nx / nx
            self.mean_x = self.mean_x + delta * o.nx / nx
        self.nx = nx
        for f in ("numel", "nan_in", "inf_in", "nan_out", "inf_out", "n", "clipped", "flushed"):
            setattr(self, f, getattr(self, f) + getattr(o, f))
        for f in ("sum_x2", "sum_q2", "sum_xq", "sum_d2", "sum_ad"):
            setattr(self, f, getattr(self, f) + getattr(o, f))
        self.max_ad = max(self.max_ad, o.max_ad)
        self.min_x = min(self.min_x, o.min_x)
        self.max_x = max(self.max_x, o.max_x)
        return self

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def error_sums_ref(
    x: torch.Tensor, q: torch.Tensor, bound: torch.Tensor | None = None, *, input_stats: bool = True
) -> ErrorSums:
    """The error sums of ``q = fake_quantize(x, ...)``; ``bound`` (same shape as x, or None for
    "never clips") is the largest magnitude each element's scaling unit can represent."""
    if x.shape != q.shape:
        raise ValueError(f"x {tuple(x.shape)} and q {tuple(q.shape)} differ in shape")
    x64 = x.detach().reshape(-1).double()
    q64 = q.detach().reshape(-1).double()
    fx, fq = torch.isfinite(x64), torch.isfinite(q64)
    both = fx & fq
    xs, qs = x64[both], q64[both]
    d = qs - xs
    xf = x64[fx]
    s = ErrorSums(
        numel=x64.numel(),
        nan_in=int(torch.isnan(x64).sum()),
        inf_in=int(torch.isinf(x64).sum()),
        nan_out=int(torch.isnan(q64).sum()),
        inf_out=int(torch.isinf(q64).sum()),
        n=int(both.sum()),
        sum_x2=float((xs * xs).sum()),
        sum_q2=float((qs * qs).sum()),
        sum_xq=float((xs * qs).sum()),
        sum_d2=float((d * d).sum()),
        sum_ad=float(d.abs().sum()),
        max_ad=float(d.abs().max()) if d.numel() else 0.0,
        flushed=int((fx & (x64 != 0) & (q64 == 0)).sum()),
        nx=int(xf.numel()) if input_stats else 0,
    )
    if bound is not None:
        b = bound.detach().reshape(-1).double()
        s.clipped = int((fx & (x64.abs() > b)).sum())
    if s.nx:
        s.mean_x = float(xf.mean())
        s.m2_x = float(((xf - s.mean_x) ** 2).sum())
        s.min_x = float(xf.min())
        s.max_x = float(xf.max())
    return s


def error_sums(
    x: torch.Tensor, q: torch.Tensor, bound: torch.Tensor | None = None, *, input_stats: bool = True
) -> ErrorSums:
    """:func:`error_sums_ref`'s sums: on the CPU computed with numpy (several times faster; the
    same counts, sums equal to float64 rounding), elsewhere by the reference on the device."""
    if x.device.type == "cpu":
        return _sums_np(x, q, bound, input_stats)
    return error_sums_ref(x, q, bound, input_stats=input_stats)


def quantize_with_sums(
    x: torch.Tensor,
    fmt: str | FormatSpec,
    *,
    backend: str = "auto",
    generator: torch.Generator | None = None,
    input_stats: bool = True,
) -> tuple[torch.Tensor, ErrorSums]:
    """``q = fake_quantize(x, fmt)`` and its :class:`ErrorSums` (with the clipped count).

    On the CPU the sums run on cache-sized pieces in the worker pool (``kernels.chunked``), each a
    set of whole scaling units so the clip bound of a piece is its units' own; elsewhere they run
    as :func:`error_sums_ref` on the device. ``input_stats=False`` skips the input's own moments
    (nx, mean_x, m2_x, min_x, max_x stay empty): they do not depend on the format, so a caller
    running several formats on one tensor needs them once.
    """
    from . import fake_quantize
    from .ranges import unit_bound

    spec = parse(fmt)
    q = fake_quantize(x, spec, backend=backend, generator=generator)
    if x.device.type != "cpu":
        return q, error_sums_ref(x, q, unit_bound(x, spec), input_stats=input_stats)
    return q, _sums_cpu(x, q, spec, input_stats)


def format_sums(
    x: torch.Tensor,
    fmt: str | FormatSpec,
    *,
    backend: str = "auto",
    generator: torch.Generator | None = None,
    input_stats: bool = True,
    cache: dict | None = None,
) -> ErrorSums:
    """The :class:`ErrorSums` of ``fake_quantize(x, fmt)``, without keeping the quantized tensor.

    A backend with a fused kernel (``Backend.sums``: the Triton backend on a GPU) computes them
    in one pass over x that writes no tensor of x's size; otherwise this is
    :func:`quantize_with_sums`. ``cache`` is a dict the caller keeps for one tensor: fused
    kernels memoize format-independent reductions of x there (its absmax), so several formats
    on one tensor read it once each. Stochastic rounding (``round=dither``) always takes the
    unfused path, which draws from ``generator`` exactly as ``fake_quantize`` does.
    """
    from . import backends

    spec = parse(fmt)
    impl = backends.select(x.device, spec, backend)
    if impl.sums is not None and spec.get("round") != "dither":
        return impl.sums(x, spec, input_stats=input_stats, cache=cache)
    return quantize_with_sums(x, spec, backend=impl.name, generator=generator, input_stats=input_stats)[1]


def _sums_cpu(x: torch.Tensor, q: torch.Tensor, spec: FormatSpec, input_stats: bool = True) -> ErrorSums:
    from . import chunked
    from .ranges import unit_bound

    kind, unit = chunked.layout(spec)
    amax = chunked._amax(x) if kind == "tensor" and x.numel() else None
    if kind == "tensor":  # with the amax known, every element (block of ``unit``) is independent
        kind = "axis" if unit else "elementwise"

    def piece(xp: torch.Tensor, qp: torch.Tensor, sp: FormatSpec) -> ErrorSums:
        return _sums_np(xp, qp, unit_bound(xp, sp, amax), input_stats)

    if x.numel() < chunked.MIN_SPLIT_ELEMS:
        return piece(x, q, spec)
    vx, s1, idx = chunked.split(x, spec, kind, unit)
    vq = q.reshape(vx.shape)  # q has x's shape: the same cut gives the same elements
    total = ErrorSums()
    for part in chunked.map_pieces(lambda i: piece(vx[i], vq[i], s1), idx):
        total.merge(part)  # in piece order: the same sums on every run
    return total


_scratch = threading.local()


def _buffers(n: int) -> tuple[np.ndarray, ...]:
    """Per-thread float64/float32/bool work arrays of n elements (fresh ones cost page faults)."""
    bufs = getattr(_scratch, "bufs", None)
    if bufs is None or bufs[0].size < n:
        bufs = _scratch.bufs = (
            np.empty(n),
            np.empty(n),
            np.empty(n),
            np.empty(n, np.float32),
            np.empty(n, bool),
            np.empty(n, bool),
        )
    return tuple(b[:n] for b in bufs)


def _np32(t: torch.Tensor) -> np.ndarray:
    """A contiguous float32 numpy array of t's values (exact for float32/bfloat16/float16)."""
    return t.detach().to(torch.float32).contiguous().numpy()


def _sums_np(xt: torch.Tensor, qt: torch.Tensor, bound: torch.Tensor | None, input_stats: bool = True) -> ErrorSums:
    """:func:`error_sums_ref` on one CPU piece, in numpy (whose comparisons and float64 dot
    products are many times faster than torch's on this kind of CPU)."""
    x = _np32(xt)
    q = _np32(qt)
    b = None if bound is None else bound.detach().to(torch.float32).numpy()
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf in these sums just means "not all finite"
        fx_all = bool(np.isfinite(x.sum(dtype=np.float64)))
        fq_all = bool(np.isfinite(q.sum(dtype=np.float64)))
    if fx_all and fq_all:  # the common case: every element finite, no masks needed
        return _finite_sums(x, q, b, input_stats)
    fx, fq = np.isfinite(x), np.isfinite(q)
    both = fx & fq
    s = _finite_sums(x[both], q[both], None, input_stats=False)  # the error sums over the finite pairs
    s.numel = x.size
    s.nan_in = int(np.count_nonzero(np.isnan(x)))
    s.inf_in = x.size - int(np.count_nonzero(fx)) - s.nan_in
    s.nan_out = int(np.count_nonzero(np.isnan(q)))
    s.inf_out = q.size - int(np.count_nonzero(fq)) - s.nan_out
    s.flushed = int(np.count_nonzero(fx & (x != 0) & (q == 0)))
    s.clipped = 0 if b is None else int(np.count_nonzero(fx & (np.abs(x) > b)))
    if input_stats:
        xs = _finite_sums(x[fx], x[fx], None)  # the input's statistics over its finite elements
        s.nx, s.mean_x, s.m2_x, s.min_x, s.max_x = xs.nx, xs.mean_x, xs.m2_x, xs.min_x, xs.max_x
    return s


def _finite_sums(x: np.ndarray, q: np.ndarray, b: np.ndarray | None, input_stats: bool = True) -> ErrorSums:
    """The sums for arrays whose elements are all finite (``b``: the clip bound, or None)."""
    n = x.size
    s = ErrorSums(numel=n, n=n, nx=n if input_stats else 0)
    if n == 0:
        return s
    x64, q64, d, a32, m1, m2 = _buffers(n)
    xf, qf = x.reshape(-1), q.reshape(-1)
    x64[...] = xf
    q64[...] = qf
    np.subtract(q64, x64, out=d)  # exact: both are float32 values, the difference fits float64
    # Dot products through torch (MKL), which keeps to the pool worker's one thread: numpy's
    # np.dot runs OpenBLAS threads of its own that fight the pool for the cores (measured: the
    # 12-format MiniLM run took 11.9 s with np.dot, 4.5 s with OpenBLAS limited to one thread).
    tx, tq, td = torch.from_numpy(x64), torch.from_numpy(q64), torch.from_numpy(d)
    s.sum_d2 = float(torch.dot(td, td))
    s.sum_x2 = float(torch.dot(tx, tx))
    s.sum_q2 = float(torch.dot(tq, tq))
    s.sum_xq = float(torch.dot(tx, tq))
    np.abs(d, out=d)
    s.sum_ad = float(d.sum())
    s.max_ad = float(d.max())
    np.equal(qf, 0, out=m1)
    np.not_equal(xf, 0, out=m2)
    m1 &= m2
    s.flushed = int(np.count_nonzero(m1))
    if b is not None:
        ab = a32.reshape(x.shape)
        np.abs(x, out=ab)
        np.greater(ab, b, out=m1.reshape(x.shape))
        s.clipped = int(np.count_nonzero(m1))
    if not input_stats:
        return s
    s.mean_x = float(x64.sum()) / n
    x64 -= s.mean_x
    s.m2_x = float(torch.dot(tx, tx))
    s.min_x = float(xf.min())
    s.max_x = float(xf.max())
    return s
