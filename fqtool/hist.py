"""``fqtool hist``: value and error histograms of tensors against a format's grid, per tensor and
aggregated over a folder (seed-utilities.md §11 distribution.py, §12 dist_distribution.py, §9 code
occupancy, §13 grid panels; §16 items 10 and 12).

Compute first (:func:`run` returns a :class:`HistResult`: plain data, never prints), render second
(:func:`write_figures`, :func:`render_table`, :func:`to_json`).

What is shown, per tensor x format (one figure each, four panels):

(a) **values**: the density histogram of x with the tensor's statistics (n, min, max, mean, std,
    median, the Laplace fit: location = median, scale = mean |x - median|, drawn as a dashed PDF)
    and the format's *block-scaled range*: every element's clip bound (``kernels.ranges.unit_bound``,
    the largest magnitude its scaling unit can output) summarized over the elements as the median
    (dashed), the 5-95 % band and the largest bound (dotted). One line when the format has one
    scale per tensor. The representable values are NOT drawn here: they sit at a different place
    in every block, so any single overlay in the value domain would be wrong for block formats
    (the seed's §13 flaw).
(b) **element domain**: x divided by its own block scale, ``x * max|grid| / bound`` (the bound is
    the grid's top times the unit's scale), with the format's representable values at unit scale
    as vertical lines and the element maximum (beyond it, elements saturate). This is the honest
    place for the grid overlay; the seed's §9 code occupancy used the same domain.
(c) **error**: the density histogram of d = q - x, with MSE, SQNR, max |d| and mean |d| from
    ``fqtool.metrics``.
(d) **code occupancy**: the share of elements on each representable element value (q divided by
    its block scale, snapped to the nearest grid value), the zero code and the top codes
    (+-max, saturated) highlighted: the seed's "zeroing loss" view.

Panels (b) and (d) need a grid (elements of 8 bits or fewer, ``kernels.representable_values``)
and a clip bound; formats without one (the bf16/fp16/fp32 casts; ``nf4``, whose bound
``kernels.ranges`` leaves undefined because it never clips) show why instead.

Aggregated over all tensors (``--aggregate``), exactly and in bounded memory: pass 1 reads every
tensor once for the ranges (finite min/max of x, max |d| and the element-domain range per format),
pass 2 counts every histogram on those fixed global edges (``--range A:B`` fixes the value edges;
values outside are counted as below/above). Counts are exact (they equal one histogram of the
concatenated tensors); moments are exact float64 (``ErrorSums.merge``, Chan et al.); percentiles,
the median and the Laplace scale come from a log2-bucketed histogram (64 buckets per octave per
sign), within 0.8 % of the true value whatever the dynamic range. Code occupancy is
pooled over all elements, with the mean and std of the per-tensor shares as error bars, and a
zero-code vs top-code scatter over tensors marks the most zeroed tensor (largest zero-code share).
``--clip-threshold T`` counts |x| > T with the seed's verdict bands (< 1 % EXCELLENT, < 5 % GOOD,
< 10 % CAUTION, else POOR).

Mode: ``--per-tensor`` and/or ``--aggregate``; with neither, per tensor when PATH is one file with
at most :data:`AUTO_PER_TENSOR_MAX` tensors (after --include/--exclude), else aggregate.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer

import fqtool
import kernels
from kernels.ranges import unit_bound
from kernels.stats import ErrorSums, quantize_with_sums

from . import metrics, plotting
from .analysis import NATIVE_DTYPES, parse_formats, resolve_device
from .describe import render_records
from .errors import InputError, UsageError
from .io import TensorSource, scan
from .options import (
    Backend,
    Device,
    Exclude,
    Include,
    Output,
    OutputFormat,
    Quiet,
    Top,
    emit,
    err,
    handle_errors,
    output_format_for,
    split_list,
    stdout_is_terminal,
)
from .render import format_metric, jsonable, write_atomic
from .results import Skipped

__all__ = [
    "SCHEMA",
    "Histogram",
    "BoundStats",
    "FormatHist",
    "TensorHist",
    "AggregateHist",
    "HistResult",
    "run",
    "bin_count",
    "verdict",
    "occupancy",
    "grid_lines",
    "figure_paths",
    "write_figures",
    "to_json",
    "render_table",
    "register",
]

SCHEMA = "fqtool.hist/1"
#: With neither --per-tensor nor --aggregate: per tensor for one file with at most this many tensors.
AUTO_PER_TENSOR_MAX = 16
#: Bins: clamp(sqrt(n), 50, 200) as the seed's distribution.py, unless --bins.
MIN_BINS, MAX_BINS = 50, 200
#: Elements per numpy chunk: bounded temporaries whatever the tensor's size.
CHUNK = 1 << 20
#: Buckets per octave (per sign) for the aggregate percentiles and the clip-bound distribution:
#: a bucket's centre is within QUANTILE_RESOLUTION of every value in it.
BUCKETS_PER_OCTAVE = 64
QUANTILE_RESOLUTION = 2.0**-7  # half a bucket, relative: 0.8 %
#: The seed's usability bands for the share of |x| above the clip threshold (dist_distribution.py).
VERDICTS = ((0.01, "EXCELLENT"), (0.05, "GOOD"), (0.10, "CAUTION"))
PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
#: At most about this many representable-value lines across the element-domain axis.
GRID_LINES_MAX = 250
#: Code-occupancy panels of more codes than this show no error bars (and use a log axis).
ERROR_BARS_MAX_CODES = 32
#: The x-range of a value histogram: the data range plus this share on each side (the seed's 15 %).
MARGIN = 0.15
PANELS = ("values", "element", "error", "codes")
AGGREGATE_PANELS = (*PANELS, "scatter")
NOTES = {
    "percentiles": "aggregate percentiles and median (the value of rank ceil(p n)): the centre of its bucket "
    "in a histogram of x by float32 sign, exponent and 6 leading mantissa bits (64 buckets per octave), so "
    "within 0.8 % of the true value; the Laplace scale from the same buckets; per tensor, median and "
    "Laplace scale are exact",
    "moments": "n, mean, std, min, max are exact (float64, over finite elements)",
    "bound": "clip bound = the largest magnitude each element's scaling unit can output (kernels.ranges); "
    "its percentiles are element-weighted, within 0.8 % (buckets as for the percentiles)",
    "element_domain": "x / block scale = x * max|grid| / bound",
    "codes": "q / block scale snapped to the nearest representable value; shares of the coded elements "
    "(finite q in a unit with a finite, nonzero scale)",
}


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Histogram:
    """Counts on fixed edges (float64, ``len(counts) + 1``); finite values outside are ``below`` /
    ``above``. Bins are [e_i, e_i+1), the last one closed, as ``numpy.histogram``."""

    edges: np.ndarray
    counts: np.ndarray
    below: int = 0
    above: int = 0

    @property
    def total(self) -> int:
        return int(self.counts.sum()) + self.below + self.above

    def density(self) -> np.ndarray:
        """Counts / (all finite values x bin width): integrates to the in-range share."""
        total = self.total
        if not total:
            return np.zeros(len(self.counts))
        return self.counts / (total * np.diff(self.edges))

    def as_dict(self) -> dict:
        return {"edges": self.edges.tolist(), "counts": self.counts.tolist(), "below": self.below, "above": self.above}


@dataclass(frozen=True)
class BoundStats:
    """The clip bound over the elements (element-weighted): exact min/max of the positive finite
    bounds, percentiles within 0.8 %; counts of zero (flushed units), +Inf (no top) and NaN."""

    min: float
    p05: float
    median: float
    p95: float
    max: float
    finite: int
    zero: int
    unbounded: int
    nan: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class FormatHist:
    """One tensor (or the aggregate) x one format."""

    format: str
    bits_per_value: float
    metrics: dict[str, float]  # fqtool.metrics.compute (a tensor) or .aggregate (all tensors)
    error: Histogram | None  # d = q - x (None: not computed in this mode)
    bound: BoundStats | None  # None: the format never clips (no unit bound)
    element: Histogram | None  # x / block scale
    grid: np.ndarray | None  # representable values at unit scale, ascending
    codes: np.ndarray | None  # elements on each grid value
    coded: int = 0  # elements with a code (finite q, finite positive bound)
    note: str = ""  # why the element domain / codes are missing
    code_share_mean: np.ndarray | None = None  # aggregate: mean over tensors of the per-tensor shares
    code_share_std: np.ndarray | None = None  # aggregate: their population std
    per_tensor: tuple[tuple[str, float, float], ...] = ()  # aggregate: (tensor, zero-code, top-code share)

    @property
    def vmax(self) -> float:
        return float(np.abs(self.grid).max()) if self.grid is not None else math.nan

    @property
    def zero_code_frac(self) -> float:
        if self.codes is None or not self.coded:
            return math.nan
        return float(self.codes[self.grid == 0].sum()) / self.coded

    @property
    def top_code_frac(self) -> float:
        if self.codes is None or not self.coded:
            return math.nan
        return float(self.codes[np.abs(self.grid) == self.vmax].sum()) / self.coded

    @property
    def most_zeroed(self) -> tuple[str, float, float] | None:
        """Aggregate: the tensor with the largest zero-code share (the seed's maximum zeroing loss)."""
        rows = [r for r in self.per_tensor if not math.isnan(r[1])]
        return max(rows, key=lambda r: (r[1], -r[2])) if rows else None


@dataclass(frozen=True)
class ClipCount:
    threshold: float
    count: int
    frac: float

    @property
    def verdict(self) -> str:
        return verdict(self.frac)

    def as_dict(self) -> dict:
        return {"threshold": self.threshold, "count": self.count, "frac": self.frac, "verdict": self.verdict}


@dataclass(frozen=True)
class TensorHist:
    name: str
    file: str
    shape: tuple[int, ...]
    dtype: str
    numel: int
    stats: dict[str, float]  # n, min, max, mean, std (fqtool.metrics), median, laplace_loc/scale, nan, inf
    values: Histogram | None  # None when only aggregating
    clip: ClipCount | None
    formats: tuple[FormatHist, ...]
    key: str = ""  # the safe, unique name used in figure files


@dataclass(frozen=True)
class AggregateHist:
    tensors: int
    numel: int
    stats: dict[str, float]
    percentiles: dict[str, float]  # p1 ... p99, within 0.8 % (QUANTILE_RESOLUTION)
    values: Histogram
    clip: ClipCount | None
    formats: tuple[FormatHist, ...]


@dataclass(frozen=True)
class HistResult:
    inputs: tuple[str, ...]
    device: str
    formats: tuple[str, ...]
    per_tensor: bool
    aggregate_mode: bool
    bins: int | None  # as asked (None: clamp(sqrt(n), 50, 200))
    value_range: tuple[float, float] | None
    clip_threshold: float | None
    tensors: tuple[TensorHist, ...]  # every tensor, in scan order
    aggregate: AggregateHist | None
    skipped: tuple[Skipped, ...] = ()
    elapsed_s: float = 0.0


# --------------------------------------------------------------------------- small pure helpers


def bin_count(n: int, bins: int | None = None) -> int:
    """``bins`` if given, else clamp(sqrt(n), 50, 200) (the seed's rule)."""
    if bins is not None:
        return bins
    return int(min(MAX_BINS, max(MIN_BINS, int(math.isqrt(max(n, 0))))))


def verdict(frac: float) -> str:
    """The seed's usability verdict for the share of elements above the clip threshold."""
    for limit, word in VERDICTS:
        if frac < limit:
            return word
    return "POOR"


def _edges(lo: float, hi: float) -> tuple[float, float]:
    """A non-empty range: numpy's rule (+-0.5) for a single value, [-1, 1] for no data."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return -1.0, 1.0
    return (lo - 0.5, hi + 0.5) if lo == hi else (lo, hi)


def occupancy(fh: FormatHist) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """What the code-occupancy panel draws: (grid values, share of coded elements in %, the std in
    % of the per-tensor shares as error bars, or None: a single tensor, or more than
    :data:`ERROR_BARS_MAX_CODES` codes, where error bars would hide the bars)."""
    if fh.codes is None or fh.grid is None:
        return np.zeros(0), np.zeros(0), None
    shares = 100.0 * fh.codes / fh.coded if fh.coded else np.zeros(len(fh.codes))
    std = None
    if fh.code_share_std is not None and fh.grid.size <= ERROR_BARS_MAX_CODES:
        std = 100.0 * fh.code_share_std
    return fh.grid, shares, std


def grid_lines(fh: FormatHist, lo: float, hi: float) -> np.ndarray:
    """The representable values the element-domain panel draws between lo and hi, ascending: all
    of them, except that on each side of 0, walking down from the largest magnitude, a value
    closer than 1/:data:`GRID_LINES_MAX` of the axis to the last line drawn is left out, so a wide
    grid (the 253 E4M3 values crowd near 0) stays legible. 0 and +-max are always drawn."""
    if fh.grid is None:
        return np.zeros(0)
    gap = (hi - lo) / GRID_LINES_MAX
    kept = [0.0] if np.any(fh.grid == 0) else []
    for sign in (1.0, -1.0):
        last = math.inf
        for m in np.sort(sign * fh.grid[sign * fh.grid > 0])[::-1]:  # magnitudes, largest first
            if last - m >= gap:
                kept.append(sign * float(m))
                last = m
    lines = np.array(sorted(kept))
    return lines[(lines >= lo) & (lines <= hi)]


def safe_name(text: str) -> str:
    """A file-name-safe form of a tensor or format name."""
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text).strip("._") or "tensor"


def _chunks(n: int):
    for i in range(0, n, CHUNK):
        yield slice(i, min(i + CHUNK, n))


# --------------------------------------------------------------------------- accumulators


class _HistAcc:
    """Exact counts on the fixed edges ``linspace(lo, hi, bins + 1)`` (numpy's own edges)."""

    def __init__(self, lo: float, hi: float, bins: int):
        self.lo, self.hi = _edges(lo, hi)
        self.bins = bins
        self.counts = np.zeros(bins, dtype=np.int64)
        self.below = self.above = 0

    def add(self, a: np.ndarray) -> None:
        """Add finite values."""
        if not a.size:
            return
        self.counts += np.histogram(a, bins=self.bins, range=(self.lo, self.hi))[0]
        self.below += int(np.count_nonzero(a < self.lo))
        self.above += int(np.count_nonzero(a > self.hi))

    def result(self) -> Histogram:
        edges = np.histogram_bin_edges(np.zeros(0), bins=self.bins, range=(self.lo, self.hi))
        return Histogram(edges, self.counts.copy(), self.below, self.above)


class _LogHist:
    """Finite float32 values bucketed by their bit pattern without the low 17 mantissa bits: sign,
    exponent and 6 leading mantissa bits, i.e. :data:`BUCKETS_PER_OCTAVE` buckets per octave on each
    sign. A bucket's centre is within 2^-7 (0.8 %) of every normal value in it, whatever the dynamic
    range (heavy-tailed activations, 1e-5 gradients and weights in one folder), and within 2^-133 of
    a subnormal or zero; 32768 counters, exact min and max."""

    _SHIFT = 17
    _HALF = 1 << (31 - _SHIFT)  # buckets per sign; the sign bit comes next

    def __init__(self):
        self.counts = np.zeros(2 * self._HALF, dtype=np.int64)
        self.min, self.max = math.inf, -math.inf

    def add(self, a: np.ndarray) -> None:
        """Add finite float32 values."""
        if not a.size:
            return
        k = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32) >> self._SHIFT
        self.counts += np.bincount(k, minlength=2 * self._HALF)
        self.min, self.max = min(self.min, float(a.min())), max(self.max, float(a.max()))

    def merge(self, o: _LogHist) -> None:
        self.counts += o.counts
        self.min, self.max = min(self.min, o.min), max(self.max, o.max)

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def _ordered(self) -> tuple[np.ndarray, np.ndarray]:
        """(counts, bucket centres) in ascending value order, centres within [min, max]."""
        k = np.arange(self._HALF)
        exponent, top = k >> 6, (k & 63) + 0.5  # the float32 exponent field and the 6 leading mantissa bits
        normal = exponent > 0
        centres = np.ldexp(np.where(normal, 1 + top / 64, top / 64), np.where(normal, exponent - 127, -126))
        pos, neg = self.counts[: self._HALF], self.counts[self._HALF :]
        values = np.clip(np.concatenate([-centres[::-1], centres]), self.min, self.max)
        return np.concatenate([neg[::-1], pos]), values

    def quantile(self, p: float) -> float:
        """The p-quantile (0..1), the value of rank ceil(p n): the centre of its bucket."""
        n = self.n
        if not n:
            return math.nan
        counts, values = self._ordered()
        return float(values[int(np.searchsorted(np.cumsum(counts), max(p * n, 1), side="left"))])

    def mean_abs_dev(self, loc: float) -> float:
        """mean |x - loc| from the bucket centres (to about 1 % of the values)."""
        n = self.n
        if not n or not math.isfinite(loc):
            return math.nan
        counts, values = self._ordered()
        return float((counts * np.abs(values - loc)).sum() / n)


class _BoundAcc:
    """The clip bound's distribution over the elements: positive finite bounds in a :class:`_LogHist`,
    counts of zero (a flushed unit), +Inf (no top) and NaN bounds."""

    def __init__(self):
        self.hist = _LogHist()
        self.zero = self.unbounded = self.nan = 0

    def add(self, b: np.ndarray) -> None:
        self.nan += int(np.count_nonzero(np.isnan(b)))
        self.unbounded += int(np.count_nonzero(np.isposinf(b)))
        self.zero += int(np.count_nonzero(b == 0))
        self.hist.add(b[np.isfinite(b) & (b > 0)])

    def merge(self, o: _BoundAcc) -> None:
        self.hist.merge(o.hist)
        self.zero += o.zero
        self.unbounded += o.unbounded
        self.nan += o.nan

    def result(self) -> BoundStats:
        h = self.hist
        finite = h.n
        return BoundStats(
            min=h.min if finite else math.nan,
            p05=h.quantile(0.05),
            median=h.quantile(0.5),
            p95=h.quantile(0.95),
            max=h.max if finite else math.nan,
            finite=finite,
            zero=self.zero,
            unbounded=self.unbounded,
            nan=self.nan,
        )


class _CodeAcc:
    """Elements per grid value: q / block scale (``q * max|grid| / bound``) snapped to the nearest
    representable value. For power-of-two scales (MX, QType, HiFX, TMX) the quotient is exact; for
    the others (NVFP4, int8sym, HiF8 with a bf16 output, ...) it is within a small fraction of the
    local grid gap, so the nearest value is the code."""

    def __init__(self, grid: np.ndarray):
        self.grid = grid
        self.vmax = float(np.abs(grid).max())
        self.mid = (grid[1:] + grid[:-1]) / 2
        self.counts = np.zeros(len(grid), dtype=np.int64)
        self.coded = 0
        self.zero_index = int(np.flatnonzero(grid == 0)[0]) if np.any(grid == 0) else None

    def add(self, q: np.ndarray, b: np.ndarray) -> None:
        """q, b: float64 chunks of the output and each element's clip bound."""
        fq = np.isfinite(q)
        ok = fq & np.isfinite(b) & (b > 0)
        if self.zero_index is not None:  # a unit flushed to a zero scale: its elements are code 0
            flushed = int(np.count_nonzero(fq & (b == 0) & (q == 0)))
            self.counts[self.zero_index] += flushed
            self.coded += flushed
        if not ok.all():
            q, b = q[ok], b[ok]
        c = q * self.vmax / b
        self.counts += np.bincount(np.searchsorted(self.mid, c), minlength=len(self.grid))
        self.coded += int(c.size)

    def merge(self, o: _CodeAcc) -> None:
        self.counts += o.counts
        self.coded += o.coded


# --------------------------------------------------------------------------- per tensor x format work


@dataclass
class _Format:
    """A format and what every tensor needs of it."""

    spec: kernels.FormatSpec
    grid: np.ndarray | None
    grid_note: str

    @classmethod
    def of(cls, spec: kernels.FormatSpec) -> _Format:
        try:
            grid = kernels.representable_values(spec).numpy()
            return cls(spec, grid, "")
        except ValueError:
            return cls(spec, None, f"{spec.element} has more than 8 bits: no enumerated grid")

    @property
    def vmax(self) -> float:
        return float(np.abs(self.grid).max())


@dataclass
class _Quantized:
    """One tensor in one format: flat float32 numpy arrays on the CPU."""

    q: np.ndarray
    bound: np.ndarray | None
    sums: ErrorSums


def _quantize(x: torch.Tensor, fmt: _Format, backend: str) -> _Quantized:
    q, sums = quantize_with_sums(x, fmt.spec, backend=backend)
    q_np = q.detach().to("cpu", torch.float32).reshape(-1).numpy()
    del q
    b = unit_bound(x, fmt.spec)
    b_np = None if b is None else b.detach().to("cpu", torch.float32).reshape(-1).numpy()
    return _Quantized(q_np, b_np, sums)


def _element_note(fmt: _Format, qz: _Quantized) -> str:
    if fmt.grid is None:
        return fmt.grid_note
    if qz.bound is None:
        return f"{fmt.spec.family} never clips: no per-unit bound, so no block scale to divide by"
    return ""


def _element_range(x: np.ndarray, b: np.ndarray, vmax: float) -> tuple[float, float]:
    lo, hi = math.inf, -math.inf
    for s in _chunks(x.size):
        e = _element_values(x[s], b[s], vmax)
        if e.size:
            lo, hi = min(lo, float(e.min())), max(hi, float(e.max()))
    return lo, hi


def _element_values(x: np.ndarray, b: np.ndarray, vmax: float) -> np.ndarray:
    """x / block scale for the finite x in units with a finite positive bound (float64)."""
    ok = np.isfinite(x) & np.isfinite(b) & (b > 0)
    return x[ok].astype(np.float64) * vmax / b[ok]


def _x_range(x: np.ndarray) -> tuple[float, float, int]:
    """Finite min, max and count of x."""
    lo, hi, n = math.inf, -math.inf, 0
    for s in _chunks(x.size):
        xf = x[s][np.isfinite(x[s])]
        if xf.size:
            lo, hi, n = min(lo, float(xf.min())), max(hi, float(xf.max())), n + xf.size
    return lo, hi, n


def _absmax(lo: float, hi: float) -> float:
    return max(abs(lo), abs(hi)) if math.isfinite(lo) else math.nan


def _error_range(d_max: float, absmax: float) -> tuple[float, float]:
    """Symmetric edges for d = q - x: +-max |d|."""
    if d_max > 0 and math.isfinite(d_max):
        return -d_max, d_max
    half = 0.5 * absmax if absmax > 0 and math.isfinite(absmax) else 0.5  # d = 0 everywhere: a spike at 0
    return -half, half


class _ValueAcc:
    """The value histogram and the clip-threshold count of one tensor or of all tensors."""

    def __init__(self, lo: float, hi: float, bins: int, clip_threshold: float | None):
        self.hist = _HistAcc(lo, hi, bins)
        self.clip_threshold = clip_threshold
        self.clipped = self.nx = 0

    def add(self, xf: np.ndarray) -> None:
        """xf: finite x."""
        self.hist.add(xf)
        self.nx += xf.size
        if self.clip_threshold is not None:
            self.clipped += int(np.count_nonzero(np.abs(xf) > self.clip_threshold))

    def clip(self) -> ClipCount | None:
        if self.clip_threshold is None:
            return None
        return ClipCount(self.clip_threshold, self.clipped, self.clipped / self.nx if self.nx else math.nan)


class _FormatAcc:
    """One format's error and element-domain histograms on fixed edges (one tensor or all)."""

    def __init__(self, d_max: float, absmax: float, e_lo: float, e_hi: float, bins: int, element: bool):
        self.error = _HistAcc(*_error_range(d_max, absmax), bins)
        self.element = _HistAcc(e_lo, e_hi, bins) if element else None


def _count_format(
    x: np.ndarray,
    qz: _Quantized,
    fmt: _Format,
    accs: Sequence[_FormatAcc],
    codes: _CodeAcc | None,
    bounds: _BoundAcc | None,
) -> None:
    """Count one tensor in one format into every accumulator (the tensor's own and/or the global
    one); codes and bounds (edge-free) into the tensor's, which the caller merges."""
    for s in _chunks(x.size):
        xs, qs = x[s].astype(np.float64), qz.q[s].astype(np.float64)
        both = np.isfinite(xs) & np.isfinite(qs)
        d = qs[both] - xs[both]  # exact: both are float32 values
        for a in accs:
            a.error.add(d)
        if qz.bound is None:
            continue
        bounds.add(qz.bound[s])
        if codes is None:
            continue
        bs = qz.bound[s].astype(np.float64)
        e = _element_values(xs, bs, fmt.vmax)
        for a in accs:
            if a.element is not None:
                a.element.add(e)
        codes.add(qs, bs)


def _median_laplace(x: np.ndarray) -> tuple[float, float]:
    """The exact median of the finite x and the Laplace scale mean |x - median| (float64)."""
    xf = x[np.isfinite(x)]  # a float32 copy, partitioned in place
    if not xf.size:
        return math.nan, math.nan
    n = xf.size
    xf.partition([(n - 1) // 2, n // 2])
    med = (float(xf[(n - 1) // 2]) + float(xf[n // 2])) / 2  # the mean of the middle two, in float64
    acc = 0.0
    for s in _chunks(xf.size):
        acc += float(np.abs(xf[s].astype(np.float64) - med).sum())
    return med, acc / xf.size


def _x_stats(sums: ErrorSums) -> dict[str, float]:
    """n, min, max, mean, std (population), NaN and Inf counts of x, from fqtool.metrics."""
    st = metrics.tensor_stats(sums)
    return {"n": sums.nx, **{k: st[k] for k in ("min", "max", "mean", "std", "nan", "inf")}}


def _load(src: TensorSource, dev: torch.device) -> tuple[torch.Tensor, np.ndarray]:
    """The tensor on the device (float32 unless the kernels take its dtype) and its flat float32 CPU copy."""
    x = src.load()
    if x.dtype not in NATIVE_DTYPES:
        x = x.to(torch.float32)
    x_np = x.reshape(-1).to(torch.float32).numpy()  # a view for float32, else a float32 copy
    return x.to(dev), x_np


def _format_hist(
    fmt: _Format,
    m: dict[str, float],
    acc: _FormatAcc | None,
    codes: _CodeAcc | None,
    bounds: _BoundAcc | None,
    note: str,
    **extra,
) -> FormatHist:
    return FormatHist(
        format=str(fmt.spec),
        bits_per_value=fmt.spec.bits_per_value,
        metrics=m,
        error=acc.error.result() if acc else None,
        bound=bounds.result() if bounds is not None else None,
        element=acc.element.result() if acc and acc.element is not None and not note else None,
        grid=fmt.grid,
        codes=codes.counts.copy() if codes is not None else None,
        coded=codes.coded if codes is not None else 0,
        note=note,
        **extra,
    )


def _unique_keys(sources: Sequence[TensorSource]) -> list[str]:
    seen = {"aggregate"}  # the aggregate figure's stem
    keys = []
    for src in sources:
        base = safe_name(src.name)
        key, k = base, 2
        while key in seen:
            key, k = f"{base}-{k}", k + 1
        seen.add(key)
        keys.append(key)
    return keys


class _Global:
    """Pass 1 over every tensor (the global ranges), then the accumulators of pass 2."""

    def __init__(self, sources, fmts: Sequence[_Format], dev, backend: str, bins, value_range, clip_threshold):
        lo, hi, nx = math.inf, -math.inf, 0
        d_max = [0.0] * len(fmts)
        e_lo, e_hi = [math.inf] * len(fmts), [-math.inf] * len(fmts)
        for src in sources:
            x, x_np = _load(src, dev)
            t_lo, t_hi, t_n = _x_range(x_np)
            lo, hi, nx = min(lo, t_lo), max(hi, t_hi), nx + t_n
            for k, fmt in enumerate(fmts):
                qz = _quantize(x, fmt, backend)
                if qz.sums.n:
                    d_max[k] = max(d_max[k], qz.sums.max_ad)
                if not _element_note(fmt, qz):
                    a, b = _element_range(x_np, qz.bound, fmt.vmax)
                    e_lo[k], e_hi[k] = min(e_lo[k], a), max(e_hi[k], b)
                del qz
            del x, x_np
        n_bins = bin_count(nx, bins)
        self.values = _ValueAcc(*(value_range or (lo, hi)), n_bins, clip_threshold)
        self.log = _LogHist()  # percentiles, median and Laplace scale of all finite x
        self.formats = [
            _FormatAcc(d_max[k], _absmax(lo, hi), e_lo[k], e_hi[k], n_bins, fmts[k].grid is not None)
            for k in range(len(fmts))
        ]
        self.sums: ErrorSums = ErrorSums()
        self.metrics: list[list[dict]] = [[] for _ in fmts]
        self.codes = [_CodeAcc(f.grid) if f.grid is not None else None for f in fmts]
        self.coded_any = [False] * len(fmts)
        self.bounds = [_BoundAcc() for _ in fmts]
        self.bounded_any = [False] * len(fmts)
        self.shares: list[list[np.ndarray]] = [[] for _ in fmts]
        self.notes = [""] * len(fmts)

    def add(self, k: int, m: dict, codes: _CodeAcc | None, bounds: _BoundAcc | None, note: str) -> None:
        self.metrics[k].append(m)
        self.notes[k] = self.notes[k] or note
        if bounds is not None:
            self.bounded_any[k] = True
            self.bounds[k].merge(bounds)
        if codes is not None:
            self.coded_any[k] = True
            self.codes[k].merge(codes)
            if codes.coded:
                self.shares[k].append(codes.counts / codes.coded)

    def result(self, fmts: Sequence[_Format], tensors: Sequence[TensorHist]) -> AggregateHist:
        values = self.values.hist.result()
        stats = _x_stats(self.sums)
        stats["median"] = stats["laplace_loc"] = self.log.quantile(0.5)
        stats["laplace_scale"] = self.log.mean_abs_dev(stats["median"])
        numels = [t.numel for t in tensors]
        fhs = []
        for k, fmt in enumerate(fmts):
            extra = {}
            if self.shares[k]:
                shares = np.stack(self.shares[k])
                extra = {"code_share_mean": shares.mean(axis=0), "code_share_std": shares.std(axis=0)}
            per = tuple((t.name, t.formats[k].zero_code_frac, t.formats[k].top_code_frac) for t in tensors)
            fhs.append(
                _format_hist(
                    fmt,
                    metrics.aggregate(self.metrics[k], numels),
                    self.formats[k],
                    self.codes[k] if self.coded_any[k] else None,
                    self.bounds[k] if self.bounded_any[k] else None,
                    self.notes[k],
                    per_tensor=per,
                    **extra,
                )
            )
        return AggregateHist(
            tensors=len(tensors),
            numel=sum(numels),
            stats=stats,
            percentiles={f"p{p}": self.log.quantile(p / 100) for p in PERCENTILES},
            values=values,
            clip=self.values.clip(),
            formats=tuple(fhs),
        )


def run(
    paths: Sequence[str],
    formats: Sequence[str],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    per_tensor: bool | None = None,
    aggregate: bool | None = None,
    bins: int | None = None,
    value_range: tuple[float, float] | None = None,
    clip_threshold: float | None = None,
    device: str = "cpu",
    backend: str = "auto",
) -> HistResult:
    """Every histogram of ``fqtool hist`` (see the module docstring). Never prints.

    ``per_tensor`` / ``aggregate``: the modes; with neither, per tensor for one file with at most
    :data:`AUTO_PER_TENSOR_MAX` tensors, else aggregate. Tensors are read one at a time; each is
    quantized in one format at a time (memory: the tensor, one output and its bounds).
    """
    t0 = time.perf_counter()
    fmts = [_Format.of(s) for s in parse_formats(formats)]
    dev = resolve_device(device)
    sources, skipped = scan(paths, include, exclude)
    if not sources:
        reasons = "; ".join(f"{s.name}: {s.reason}" for s in skipped[:3])
        raise InputError(f"{', '.join(map(str, paths))}: no floating-point tensor to histogram ({reasons})")
    if not per_tensor and not aggregate:
        one_file = len(paths) == 1 and Path(paths[0]).is_file()
        per_tensor = one_file and len(sources) <= AUTO_PER_TENSOR_MAX
        aggregate = not per_tensor
    keys = _unique_keys(sources)
    pooled = _Global(sources, fmts, dev, backend, bins, value_range, clip_threshold) if aggregate else None

    tensors: list[TensorHist] = []
    for src, key in zip(sources, keys, strict=True):
        x, x_np = _load(src, dev)
        lo, hi, nx = _x_range(x_np)
        n_bins = bin_count(nx, bins)
        # The tensor's own value histogram (one bin when only aggregating: then just its clip count).
        own = _ValueAcc(*(value_range or (lo, hi)), n_bins if per_tensor else 1, clip_threshold)
        value_accs = [own] + ([pooled.values] if pooled else [])
        for s in _chunks(x_np.size):
            xf = x_np[s][np.isfinite(x_np[s])]
            for v in value_accs:
                v.add(xf)
            if pooled:
                pooled.log.add(xf)
        stats: dict[str, float] = {}
        fhs = []
        for k, fmt in enumerate(fmts):
            qz = _quantize(x, fmt, backend)
            if k == 0:
                stats = _x_stats(qz.sums)
                if pooled:
                    pooled.sums.merge(qz.sums)
            m = metrics.compute(qz.sums)
            note = _element_note(fmt, qz)
            coded = not note
            accs, mine = [], None
            if per_tensor:
                e_lo, e_hi = _element_range(x_np, qz.bound, fmt.vmax) if coded else (math.nan, math.nan)
                mine = _FormatAcc(qz.sums.max_ad if qz.sums.n else 0.0, _absmax(lo, hi), e_lo, e_hi, n_bins, coded)
                accs.append(mine)
            if pooled:
                accs.append(pooled.formats[k])
            codes = _CodeAcc(fmt.grid) if coded else None
            bounds = _BoundAcc() if qz.bound is not None else None
            _count_format(x_np, qz, fmt, accs, codes, bounds)
            del qz
            fhs.append(_format_hist(fmt, m, mine, codes, bounds, note))
            if pooled:
                pooled.add(k, m, codes, bounds, note)
        del x
        stats["median"], stats["laplace_scale"] = _median_laplace(x_np)
        stats["laplace_loc"] = stats["median"]
        del x_np
        tensors.append(
            TensorHist(
                name=src.name,
                file=src.file,
                shape=tuple(src.shape),
                dtype=str(src.dtype).removeprefix("torch."),
                numel=math.prod(src.shape),
                stats=stats,
                values=own.hist.result() if per_tensor else None,
                clip=own.clip(),
                formats=tuple(fhs),
                key=key,
            )
        )
    return HistResult(
        inputs=tuple(str(p) for p in paths),
        device=str(dev),
        formats=tuple(str(f.spec) for f in fmts),
        per_tensor=bool(per_tensor),
        aggregate_mode=bool(aggregate),
        bins=bins,
        value_range=value_range,
        clip_threshold=clip_threshold,
        tensors=tuple(tensors),
        aggregate=pooled.result(fmts, tensors) if pooled else None,
        skipped=tuple(skipped),
        elapsed_s=time.perf_counter() - t0,
    )


def worst_tensors(result: HistResult, n: int | None) -> list[TensorHist]:
    """The ``n`` tensors with the lowest SQNR over the formats (NaN first), worst first; all if n is None."""
    if n is None:
        return list(result.tensors)

    def worst(t: TensorHist) -> float:
        vals = [f.metrics["sqnr_db"] for f in t.formats]
        return -math.inf if any(math.isnan(v) for v in vals) else min(vals)

    return sorted(result.tensors, key=worst)[:n]


# --------------------------------------------------------------------------- figures


def figure_paths(
    result: HistResult, out_dir: Path, image_format: str = "png", paper: bool = False, top: int | None = None
) -> dict[tuple[str, str], list[Path]]:
    """(tensor key or "aggregate", format) -> the figure files ``write_figures`` writes: one per
    tensor x format (``<tensor>.<format>.<ext>``; with ``paper`` one per panel,
    ``<tensor>.<format>.<panel>.<ext>``), and ``aggregate.<format>...`` when aggregating."""
    out: dict[tuple[str, str], list[Path]] = {}

    def files(stem: str, panels: Sequence[str]) -> list[Path]:
        if paper:
            return [out_dir / f"{stem}.{p}.{image_format}" for p in panels]
        return [out_dir / f"{stem}.{image_format}"]

    if result.per_tensor:
        for t in worst_tensors(result, top):
            for fh in t.formats:
                out[(t.key, fh.format)] = files(f"{t.key}.{safe_name(fh.format)}", PANELS)
    if result.aggregate is not None:
        for fh in result.aggregate.formats:
            out[("aggregate", fh.format)] = files(f"aggregate.{safe_name(fh.format)}", AGGREGATE_PANELS)
    return out


def write_figures(
    result: HistResult,
    out_dir: Path,
    *,
    image_format: str = "png",
    paper: bool = False,
    log_y: bool = False,
    top: int | None = None,
) -> dict[tuple[str, str], list[Path]]:
    """Write every figure of :func:`figure_paths` (atomically); returns the paths."""
    paths = figure_paths(result, out_dir, image_format, paper, top)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--output-dir {out_dir}: cannot create it ({e.strerror or e})") from e
    by_key = {t.key: t for t in result.tensors}
    for (key, fmt), files in paths.items():
        if key == "aggregate":
            agg = result.aggregate
            fh = next(f for f in agg.formats if f.format == fmt)
            _write(files, paper, _aggregate_panels(agg, fh, log_y, paper), f"all {agg.tensors} tensors · {fmt}", fmt)
        else:
            t = by_key[key]
            fh = next(f for f in t.formats if f.format == fmt)
            _write(files, paper, _tensor_panels(t, fh, log_y, paper), _tensor_title(t, fmt), fmt)
    return paths


def _tensor_title(t: TensorHist, fmt: str) -> str:
    name = t.name if len(t.name) <= 60 else "..." + t.name[-57:]
    return f"{name} [{'x'.join(map(str, t.shape))} {t.dtype}] · {fmt}"


def _write(files: list[Path], paper: bool, panels: list, title: str, fmt: str) -> None:
    """One figure of all panels, or with ``paper`` one single-column figure per panel (titled with the format)."""
    try:
        if paper:
            for path, draw in zip(files, panels, strict=True):
                with plotting.style(paper=True):
                    fig, ax = plotting.figure(paper=True)
                    draw(ax)
                    ax.set_title(f"{ax.get_title()} · {fmt}")
                    plotting.save(fig, path, paper=True)
            return
        with plotting.style():
            rows = 2
            cols = (len(panels) + 1) // 2
            fig, axes = plotting.figure(size=(6.0 * cols, 9.0), nrows=rows, ncols=cols)
            axes = list(axes.ravel())
            for ax, draw in zip(axes, panels, strict=False):
                draw(ax)
            for ax in axes[len(panels) :]:
                ax.set_axis_off()
            fig.suptitle(title, fontsize=11)
            fig.tight_layout()
            plotting.save(fig, files[0])
    except OSError as e:
        raise UsageError(f"{files[0].parent}: cannot write the figure ({e.strerror or e})") from e


def _tensor_panels(t: TensorHist, fh: FormatHist, log_y: bool, paper: bool) -> list:
    return [
        lambda ax: _draw_values(ax, t.values, t.stats, fh, t.clip, log_y, paper, exact=True),
        lambda ax: _draw_element(ax, fh, log_y, paper),
        lambda ax: _draw_error(ax, fh, log_y, paper),
        lambda ax: _draw_codes(ax, fh, paper),
    ]


def _aggregate_panels(agg: AggregateHist, fh: FormatHist, log_y: bool, paper: bool) -> list:
    panels = [
        lambda ax: _draw_values(
            ax, agg.values, agg.stats, fh, agg.clip, log_y, paper, exact=False, pct=agg.percentiles
        ),
        lambda ax: _draw_element(ax, fh, log_y, paper),
        lambda ax: _draw_error(ax, fh, log_y, paper),
        lambda ax: _draw_codes(ax, fh, paper),
        lambda ax: _draw_scatter(ax, fh, paper),
    ]
    if not paper:
        panels.append(lambda ax: _draw_summary(ax, agg, fh))
    return panels


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if math.isfinite(v) else repr(float(v))


def _pct(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{100 * v:.4g}%"


def _box(ax, lines: list[str], paper: bool, loc: str = "left") -> None:
    x, ha = (0.02, "left") if loc == "left" else (0.98, "right")
    ax.text(
        x,
        0.98,
        "\n".join(lines),
        transform=ax.transAxes,
        ha=ha,
        va="top",
        family="monospace",
        fontsize=4.5 if paper else 7,
        bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "0.7", "alpha": 0.85},
        zorder=5,
    )


def _na(ax, title: str, note: str) -> None:
    ax.set_title(title)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.text(0.5, 0.5, f"n/a\n{note}", transform=ax.transAxes, ha="center", va="center", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def _xlim(h: Histogram) -> tuple[float, float]:
    lo, hi = float(h.edges[0]), float(h.edges[-1])
    pad = MARGIN * (hi - lo)
    return lo - pad, hi + pad


def _headroom(ax, log: bool, heights: np.ndarray) -> None:
    """y-limits with room above the data for the legend and the stats box (on a log axis, from the
    smallest positive height: empty bins would otherwise drag the axis to 1e-300)."""
    pos = heights[np.isfinite(heights) & (heights > 0)]
    if not pos.size:
        return
    lo, hi = float(pos.min()), float(pos.max())
    if log:
        lo = min(lo, hi / 10) / 2
        ax.set_ylim(lo, hi * (hi / lo) ** 0.45)
    else:
        ax.set_ylim(0, hi * 1.45)


def _draw_values(
    ax, h, stats, fh: FormatHist, clip: ClipCount | None, log_y: bool, paper: bool, exact: bool, pct=None
) -> None:
    title = "(a) values x and the block-scaled range"
    if h is None or not h.total:
        nonfinite = f"no finite values ({stats.get('nan', 0):,} NaN, {stats.get('inf', 0):,} Inf)"
        _na(ax, title, "not computed" if h is None else nonfinite)
        return
    ax.set_title(title)
    ax.stairs(h.density(), h.edges, fill=True, color=plotting.PALETTE[0], alpha=0.55, label="x")
    lo, hi = _xlim(h)
    loc, b = stats.get("laplace_loc", math.nan), stats.get("laplace_scale", math.nan)
    peak = 0.0
    if math.isfinite(b) and b > 0:
        peak = min(1 / (2 * b), 2 * float(h.density().max()))  # the y-axis follows the histogram
        xs = np.sort(np.append(np.linspace(lo, hi, 600), loc))  # the cusp at loc, however narrow
        ax.plot(
            xs,
            np.exp(-np.abs(xs - loc) / b) / (2 * b),
            ls="--",
            color="0.35",
            lw=0.8 if paper else 1.2,
            label=f"Laplace fit (μ={loc:.3g}, b={b:.3g})",
        )
    ax.axvline(0, color="black", lw=0.5, alpha=0.6)
    colour = plotting.PALETTE[1]
    bd = fh.bound
    if bd is not None and bd.finite:
        if bd.min == bd.max:
            for sgn in (-1, 1):
                ax.axvline(sgn * bd.max, color=colour, lw=1.0, label=f"clip bound ±{bd.max:.3g}" if sgn > 0 else None)
        else:
            for sgn in (-1, 1):
                first = sgn > 0
                lo_b, hi_b = sorted((sgn * bd.p05, sgn * bd.p95))
                ax.axvspan(
                    lo_b,
                    hi_b,
                    color=colour,
                    alpha=0.12,
                    lw=0,
                    label="block bounds, 5-95 % of elements" if first else None,
                )
                ax.axvline(
                    sgn * bd.median,
                    color=colour,
                    ls="--",
                    lw=0.9,
                    label=f"median block bound ±{bd.median:.3g}" if first else None,
                )
                ax.axvline(
                    sgn * bd.max,
                    color=colour,
                    ls=":",
                    lw=1.1,
                    label=f"largest block bound ±{bd.max:.3g}" if first else None,
                )
    if clip is not None:
        for sgn in (-1, 1):
            ax.axvline(
                sgn * clip.threshold,
                color=plotting.PALETTE[3],
                ls="-.",
                lw=1.0,
                label=f"±T={clip.threshold:g}: {_pct(clip.frac)} beyond ({clip.verdict})" if sgn > 0 else None,
            )
    ax.set_xlim(lo, hi)
    if log_y:
        ax.set_yscale("log")
    _headroom(ax, log_y, np.append(h.density(), peak))
    if int(h.counts.max()) >= 0.5 * h.total:  # a spike: say how to see the distribution
        where = f" (p1..p99: {_fmt(pct['p1'])}..{_fmt(pct['p99'])})" if pct else ""
        ax.text(
            0.5,
            0.02,
            f"half the values fall in one bin: zoom with --range A:B{where} or use --log-y",
            transform=ax.transAxes,
            ha="center",
            va="bottom",
            fontsize=4.5 if paper else 7,
            color="0.3",
        )
    ax.set_xlabel("x (tensor value)")
    ax.set_ylabel("probability density (1 / unit of x)")
    approx = "" if exact else "≈"
    lines = [
        f"n      {stats['n']:,}",
        f"min    {_fmt(stats['min'])}",
        f"max    {_fmt(stats['max'])}",
        f"mean   {_fmt(stats['mean'])}",
        f"std    {_fmt(stats['std'])}",
        f"median {approx}{_fmt(stats['median'])}",
        f"Lap. b {approx}{_fmt(stats['laplace_scale'])}",
        f"clipped {_pct(fh.metrics['clipped_frac'])}",
    ]
    if h.below or h.above:
        lines.append(f"outside range {h.below + h.above:,}")
    if stats.get("nan") or stats.get("inf"):
        lines.append(f"NaN/Inf {stats['nan']:,}/{stats['inf']:,}")
    _box(ax, lines, paper)
    ax.legend(loc="upper right", fontsize=4.5 if paper else 7, framealpha=0.85)


def _draw_element(ax, fh: FormatHist, log_y: bool, paper: bool) -> None:
    title = "(b) element domain: x / block scale"
    if fh.element is None or not fh.element.total:
        _na(ax, title, fh.note or ("not computed" if fh.element is None else "no finite x with a finite block scale"))
        return
    h = fh.element
    ax.set_title(title)
    ax.stairs(h.density(), h.edges, fill=True, color=plotting.PALETTE[0], alpha=0.55, label="x / block scale")
    lo, hi = _xlim(h)
    lines = grid_lines(fh, lo, hi)
    if lines.size:
        ax.vlines(
            lines,
            0,
            1,
            transform=ax.get_xaxis_transform(),
            colors=plotting.PALETTE[1],
            lw=0.3 if lines.size > 64 else 0.6,
            alpha=0.5 if lines.size > 64 else 0.7,
            label=f"representable values ({fh.grid.size}"
            + (
                f", {lines.size} drawn at this scale)"
                if lines.size < np.count_nonzero((fh.grid >= lo) & (fh.grid <= hi))
                else ")"
            ),
        )
    for sgn in (-1, 1):
        ax.axvline(
            sgn * fh.vmax,
            color=plotting.PALETTE[2],
            lw=1.2,
            label=f"element max ±{fh.vmax:g}: beyond it saturates" if sgn > 0 else None,
        )
    ax.set_xlim(lo, hi)
    if log_y:
        ax.set_yscale("log")
    _headroom(ax, log_y, h.density())
    ax.set_xlabel("x / block scale (element units)")
    ax.set_ylabel("probability density (1 / element unit)")
    _box(ax, [f"clipped {_pct(fh.metrics['clipped_frac'])}", f"flushed {_pct(fh.metrics['flushed_frac'])}"], paper)
    ax.legend(loc="upper right", fontsize=4.5 if paper else 7, framealpha=0.85)


def _draw_error(ax, fh: FormatHist, log_y: bool, paper: bool) -> None:
    title = "(c) quantization error d = q - x"
    if fh.error is None or not fh.error.total:
        _na(ax, title, "not computed" if fh.error is None else "no element with finite x and q")
        return
    h = fh.error
    ax.set_title(title)
    ax.stairs(h.density(), h.edges, fill=True, color=plotting.PALETTE[2], alpha=0.6, label="d")
    ax.axvline(0, color="black", lw=0.5, alpha=0.6)
    ax.set_yscale("log")  # always: the rare large errors (clipped elements) are what matters
    _headroom(ax, True, h.density())
    ax.set_xlim(float(h.edges[0]), float(h.edges[-1]))
    ax.set_xlabel("d = q - x (unit of x)")
    ax.set_ylabel("probability density (1 / unit of x)")
    m = fh.metrics
    _box(
        ax,
        [
            f"SQNR {format_metric('sqnr_db', m['sqnr_db'])} dB",
            f"MSE  {format_metric('mse', m['mse'])}",
            f"max|d| {format_metric('max_abs_err', m['max_abs_err'])}",
            f"mean|d| {format_metric('mean_abs_err', m['mean_abs_err'])}",
        ],
        paper,
    )


def _draw_codes(ax, fh: FormatHist, paper: bool) -> None:
    title = "(d) code occupancy"
    grid, shares, std = occupancy(fh)
    if not grid.size or not fh.coded:
        _na(ax, title, fh.note or "no element has a finite, nonzero block scale")
        return
    ax.set_title(title)
    pos = np.arange(grid.size)
    colours = np.array([plotting.PALETTE[5]] * grid.size, dtype=object)
    top = np.abs(grid) == fh.vmax
    colours[top] = plotting.PALETTE[0]
    colours[grid == 0] = plotting.PALETTE[1]
    many = grid.size > ERROR_BARS_MAX_CODES
    ax.bar(
        pos,
        shares,
        width=0.8 if not many else 1.0,
        color=list(colours),
        lw=0,
        yerr=std,
        error_kw={"elinewidth": 0.6, "capsize": 0 if many else 2, "ecolor": "0.3"},
    )
    if many:
        ax.set_yscale("log")
        spread = np.linspace(0, grid.size - 1, 7).round().astype(int)
        ticks = np.unique(np.concatenate([spread, np.flatnonzero(grid == 0)]))
        ax.set_xticks(ticks, [f"{grid[i]:g}" for i in ticks], rotation=45)
        ax.set_xlabel("element value at unit scale (codes in value order)")
    else:
        ax.set_xticks(pos, [f"{v:g}" for v in grid], rotation=90 if grid.size > 16 else 0)
        ax.set_xlabel("element value at unit scale")
    ax.set_ylabel("share of elements (%)")
    _headroom(ax, many, shares + (std if std is not None else 0))
    ax.grid(axis="x", visible=False)
    from matplotlib.patches import Patch

    handles = [
        Patch(color=plotting.PALETTE[1], label=f"zero code: {_pct(fh.zero_code_frac)}"),
        Patch(color=plotting.PALETTE[0], label=f"top code ±{fh.vmax:g} (saturated): {_pct(fh.top_code_frac)}"),
        Patch(color=plotting.PALETTE[5], label="other codes" + (" (±std over tensors)" if std is not None else "")),
    ]
    ax.legend(handles=handles, loc="upper right", fontsize=4.5 if paper else 7, framealpha=0.85)


def _draw_scatter(ax, fh: FormatHist, paper: bool) -> None:
    title = "(e) zero code vs top code, per tensor"
    rows = [r for r in fh.per_tensor if not math.isnan(r[1])]
    if not rows:
        _na(ax, title, fh.note or "no codes")
        return
    ax.set_title(title)
    top = np.array([100 * r[2] for r in rows])
    zero = np.array([100 * r[1] for r in rows])
    ax.scatter(top, zero, s=6 if paper else 14, color=plotting.PALETTE[0], alpha=0.8, label="tensors", lw=0)
    hi = max(float(top.max()), float(zero.max())) * 1.08 or 1.0  # all zero: a 0-1 % axis
    ax.plot([0, hi], [0, hi], color="0.5", lw=0.7, ls="--", label="zero = top")
    worst = fh.most_zeroed
    if worst is not None and worst[1] > 0:
        ax.scatter(
            [100 * worst[2]],
            [100 * worst[1]],
            marker="*",
            s=60 if paper else 140,
            color=plotting.PALETTE[1],
            zorder=4,
            label=f"most zeroed: {worst[0][-40:]}",
        )
    ax.set_xlim(-0.02 * hi, hi)
    ax.set_ylim(-0.02 * hi, hi)
    ax.set_xlabel("top-code share (%)")
    ax.set_ylabel("zero-code share (%)")
    ax.legend(loc="lower right", fontsize=4.5 if paper else 7, framealpha=0.85)


def _draw_summary(ax, agg: AggregateHist, fh: FormatHist) -> None:
    ax.set_axis_off()
    ax.set_title("summary (all tensors)")
    st, m = agg.stats, fh.metrics
    lines = [
        f"tensors          {agg.tensors:,}",
        f"elements         {agg.numel:,}  (finite {st['n']:,})",
        f"mean / std       {_fmt(st['mean'])} / {_fmt(st['std'])}",
        f"min / max        {_fmt(st['min'])} / {_fmt(st['max'])}",
        f"median           ≈{_fmt(st['median'])}  (to 0.8 %)",
        "p1 / p99         " + f"{_fmt(agg.percentiles['p1'])} / {_fmt(agg.percentiles['p99'])}",
        f"SQNR (agg.)      {format_metric('sqnr_db', m['sqnr_db'])} dB",
        f"MSE (agg.)       {format_metric('mse', m['mse'])}",
        f"clipped          {_pct(m['clipped_frac'])}",
        f"flushed          {_pct(m['flushed_frac'])}",
        f"zero / top code  {_pct(fh.zero_code_frac)} / {_pct(fh.top_code_frac)}",
    ]
    if agg.clip is not None:
        c = agg.clip
        lines.append(f"{f'|x| > {c.threshold:g}':17s}{_pct(c.frac)}  -> {c.verdict}")
    if fh.most_zeroed is not None and fh.most_zeroed[1] > 0:
        lines.append(f"most zeroed      {fh.most_zeroed[0][-34:]}")
    ax.text(0.0, 1.0, "\n".join(lines), transform=ax.transAxes, ha="left", va="top", family="monospace", fontsize=8)


# --------------------------------------------------------------------------- table / JSON


def _rows(result: HistResult, paths: dict, top: int | None) -> list[dict]:
    rows = []
    for t in worst_tensors(result, top):
        for fh in t.formats:
            files = paths.get((t.key, fh.format), [])
            rows.append(_row(t.name, t.file, t.numel, fh, files))
    if result.aggregate is not None:
        for fh in result.aggregate.formats:
            files = paths.get(("aggregate", fh.format), [])
            rows.append(_row("(all)", "", result.aggregate.numel, fh, files))
    return rows


def _row(name: str, file: str, numel: int, fh: FormatHist, files: list[Path]) -> dict:
    return {
        "tensor": name,
        "file": file,
        "format": fh.format,
        "numel": numel,
        "clipped_frac": fh.metrics["clipped_frac"],
        "flushed_frac": fh.metrics["flushed_frac"],
        "zero_code_frac": fh.zero_code_frac,
        "top_code_frac": fh.top_code_frac,
        "sqnr_db": fh.metrics["sqnr_db"],
        "figure": str(files[0]) if files else "",
    }


def render_table(
    result: HistResult, output_format: str, paths: dict, *, top: int | None = None, plain: bool = False
) -> str:
    """The per tensor x format table (and the "(all)" rows) as table / csv / markdown / json."""
    if output_format == "json":
        return json.dumps(to_json(result, paths, top), indent=2, allow_nan=False) + "\n"
    rows = _rows(result, paths, top)
    if output_format == "csv":
        return render_records(rows, "csv")
    human = [
        {
            "tensor": r["tensor"],
            "format": r["format"],
            "n": f"{r['numel']:,}",
            "clipped": format_metric("clipped_frac", r["clipped_frac"]),
            "flushed": format_metric("flushed_frac", r["flushed_frac"]),
            "zero-code": _pct(r["zero_code_frac"]),
            "top-code": _pct(r["top_code_frac"]),
            "SQNR dB": format_metric("sqnr_db", r["sqnr_db"]),
            "figure": r["figure"] or "-",
        }
        for r in rows
    ]
    return render_records(human, output_format, title="fqtool hist", plain=plain)


def _fh_json(fh: FormatHist, files: list[Path]) -> dict:
    return {
        "format": fh.format,
        "bits_per_value": fh.bits_per_value,
        "metrics": fh.metrics,
        "zero_code_frac": fh.zero_code_frac,
        "top_code_frac": fh.top_code_frac,
        "codes": None
        if fh.codes is None
        else {
            "values": fh.grid.tolist(),
            "counts": fh.codes.tolist(),
            "coded": fh.coded,
            **({"share_mean": fh.code_share_mean.tolist()} if fh.code_share_mean is not None else {}),
            **({"share_std": fh.code_share_std.tolist()} if fh.code_share_std is not None else {}),
        },
        "bound": fh.bound.as_dict() if fh.bound else None,
        "element": fh.element.as_dict() if fh.element else None,
        "error": fh.error.as_dict() if fh.error else None,
        "note": fh.note or None,
        "figures": [str(p) for p in files],
    }


def to_json(result: HistResult, paths: dict | None = None, top: int | None = None) -> dict:
    """The JSON document (schema ``fqtool.hist/1``; non-finite floats as "inf"/"-inf"/"nan")."""
    paths = paths or {}
    doc = {
        "schema": SCHEMA,
        "fqtool_version": fqtool.__version__,
        "command": "hist",
        "inputs": list(result.inputs),
        "device": result.device,
        "formats": list(result.formats),
        "mode": {"per_tensor": result.per_tensor, "aggregate": result.aggregate_mode},
        "bins": result.bins,
        "range": list(result.value_range) if result.value_range else None,
        "clip_threshold": result.clip_threshold,
        "notes": NOTES,
        "tensors": [
            {
                "name": t.name,
                "file": t.file,
                "shape": list(t.shape),
                "dtype": t.dtype,
                "numel": t.numel,
                "stats": t.stats,
                "clip": t.clip.as_dict() if t.clip else None,
                "values": t.values.as_dict() if t.values else None,
                "formats": [_fh_json(fh, paths.get((t.key, fh.format), [])) for fh in t.formats],
            }
            for t in worst_tensors(result, top)
        ],
        "aggregate": None,
        "skipped": [{"name": s.name, "file": s.file, "reason": s.reason} for s in result.skipped],
    }
    a = result.aggregate
    if a is not None:
        doc["aggregate"] = {
            "tensors": a.tensors,
            "numel": a.numel,
            "stats": a.stats,
            "percentiles": a.percentiles,
            "percentile_relative_resolution": QUANTILE_RESOLUTION,
            "values": a.values.as_dict(),
            "clip": a.clip.as_dict() if a.clip else None,
            "formats": [
                {
                    **_fh_json(fh, paths.get(("aggregate", fh.format), [])),
                    "per_tensor": [
                        {"tensor": n, "zero_code_frac": z, "top_code_frac": tp} for n, z, tp in fh.per_tensor
                    ],
                    "most_zeroed": fh.most_zeroed[0] if fh.most_zeroed else None,
                }
                for fh in a.formats
            ],
        }
    return jsonable(doc)


# --------------------------------------------------------------------------- the command


def _parse_range(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    parts = text.split(":")
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise UsageError(f"--range {text!r}: give A:B, two numbers, e.g. --range=-4:4") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise UsageError(f"--range {text!r}: A must be finite and below B, e.g. --range=-4:4")
    return lo, hi


def register(app: typer.Typer) -> None:
    """Add ``fqtool hist`` to ``app``."""

    @app.command(
        help="Value histograms with the format's grid (element domain) and block-scaled range, error "
        "histograms and code occupancy, per tensor and aggregated over a folder, as figures plus a table.\n\n"
        "Per tensor (one figure per tensor x format): (a) x with its stats, Laplace fit and the clip bounds "
        "of its blocks; (b) x / block scale with the representable values; (c) d = q - x with MSE/SQNR; "
        "(d) the share of elements on each code (zero and top codes highlighted). --aggregate: the same "
        "over all tensors, exact two-pass histograms on global edges, plus a zero-vs-top-code scatter. "
        "Default mode: per tensor for one file with at most 16 tensors, else aggregate."
    )
    @handle_errors
    def hist(
        paths: Annotated[
            list[str],
            typer.Argument(metavar="PATH", help="Files or directories (.safetensors, *.index.json, .pt/.bin, .npy)."),
        ],
        format: Annotated[
            list[str] | None,
            typer.Option("--format", "-f", metavar="F", help="A format (repeatable, or a,b,c): one figure each."),
        ] = None,
        per_tensor: Annotated[bool, typer.Option("--per-tensor", help="One figure per tensor x format.")] = False,
        aggregate: Annotated[
            bool, typer.Option("--aggregate", help="Histograms over all tensors (two exact passes).")
        ] = False,
        include: Include = None,
        exclude: Exclude = None,
        top: Top = None,
        bins: Annotated[
            int | None, typer.Option("--bins", min=2, metavar="N", help="Bins [default: clamp(sqrt(n), 50, 200)].")
        ] = None,
        value_range: Annotated[
            str | None,
            typer.Option("--range", metavar="A:B", help="Fix the value histogram's range (e.g. --range=-4:4)."),
        ] = None,
        log_y: Annotated[
            bool, typer.Option("--log-y", help="Log density axes for the value and element panels (error: always).")
        ] = False,
        clip_threshold: Annotated[
            float | None,
            typer.Option("--clip-threshold", min=0.0, metavar="T", help="Count |x| > T, with a usability verdict."),
        ] = None,
        output_dir: Annotated[Path, typer.Option("--output-dir", metavar="DIR", help="Where the figures go.")] = Path(
            "fqtool-hist"
        ),
        image_format: Annotated[str, typer.Option("--image-format", metavar="EXT", help="png, pdf or svg.")] = "png",
        paper: Annotated[
            bool, typer.Option("--paper", help="Single-column 3.5x2.5 in, 600 dpi figures: one file per panel.")
        ] = False,
        no_figures: Annotated[bool, typer.Option("--no-figures", help="Only the table / JSON.")] = False,
        json_file: Annotated[
            Path | None, typer.Option("--json", metavar="FILE", help="Also write the JSON stats here.")
        ] = None,
        device: Device = "auto",
        backend: Backend = "auto",
        output_format: OutputFormat = None,
        output: Output = None,
        quiet: Quiet = False,
    ) -> None:
        formats = split_list(format)
        if not formats:
            raise UsageError("give at least one --format (e.g. --format mxfp4_e2m1); `fqtool formats` lists them")
        fmt_out = output_format_for(output_format, output)
        ext = image_format.lower().lstrip(".")
        if "." + ext not in plotting.FORMATS:
            raise UsageError(f"--image-format {image_format!r}: use png, pdf or svg")
        result = run(
            paths,
            formats,
            include=split_list(include),
            exclude=split_list(exclude),
            per_tensor=per_tensor or None,
            aggregate=aggregate or None,
            bins=bins,
            value_range=_parse_range(value_range),
            clip_threshold=clip_threshold,
            device=device,
            backend=backend,
        )
        if no_figures:
            paths_out = {}
        else:
            n_files = sum(len(v) for v in figure_paths(result, output_dir, ext, paper, top).values())
            if n_files > 50 and not quiet:
                err(f"fqtool hist: writing {n_files} figures to {output_dir}; limit them with --top or --include")
            paths_out = write_figures(result, output_dir, image_format=ext, paper=paper, log_y=log_y, top=top)
        if json_file is not None:
            try:
                write_atomic(json_file, json.dumps(to_json(result, paths_out, top), indent=2, allow_nan=False) + "\n")
            except OSError as e:
                raise UsageError(f"--json {json_file}: cannot write it ({e.strerror or e}); nothing was written") from e
        plain = output is not None or not stdout_is_terminal()
        emit(render_table(result, fmt_out, paths_out, top=top, plain=plain), output)
        if not quiet:
            modes = " + ".join(
                m for m, on in (("per tensor", result.per_tensor), ("aggregate", result.aggregate_mode)) if on
            )
            n_fig = sum(len(v) for v in paths_out.values())
            where = f"; {n_fig} figure(s) in {output_dir}" if n_fig else ""
            skipped = f"; {len(result.skipped)} non-floating tensor(s) skipped" if result.skipped else ""
            err(
                f"fqtool hist: {len(result.tensors)} tensor(s) x {len(result.formats)} format(s), {modes}"
                f"{where}{skipped} ({result.elapsed_s:.1f} s)"
            )
