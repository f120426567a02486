"""``fqtool outliers``: how heavy-tailed each tensor is, and how that spreads over a folder.

The seed's ``outliers.py`` (seed-utilities.md §7, §16 item 8) without its data manipulation
(§17): values are reported **raw**. The seed multiplied small ratios by 4 or 2, halved large ones,
then halved all of them, and printed a hard-coded mean (10.1082); fqtool applies no transform of
any kind, so scaling a tensor by any factor leaves every ratio below unchanged.

Per tensor, in float64, over its finite elements (NaN/Inf are counted and left out), one tensor
at a time:

- ``absmax``, ``mean``, ``std`` (population): ``fqtool.metrics.tensor_stats``, the statistics
  ``fqtool analyze`` reports;
- ``smax_over_sigma`` = absmax / std (the seed's Smax/σ; undefined, NaN, when std = 0);
- ``excess_kurtosis`` = mean((x - mean)^4) / std^4 - 3 (0 for a Gaussian, 3 for a Laplacian);
- for each k in ``--sigmas`` (3, 6, 10): the count and share of elements with
  |x - mean| > k·std;
- for tensors of 2 or more dims, rows = every dim but the last (flattened) and channels = the last
  dim: per k, the rows and the channels holding such an element; the ``--top-channels`` channels
  with the largest max|x| (their index, max|x| and max|x|/std); and max / median of the channel
  maxima (the median of an even count is the mean of the two middle ones).

Over the tensors: the distribution of ``smax_over_sigma`` in unit bins [i, i+1) from 0, up to
ceil(max) when max <= 20 (the last bin closed), else 0..20 and one ``20+`` bin [20, inf) (the
seed's bins), with the share of tensors per bin; and min, p25, median, mean, p75, p95, p99, max
and population std (``numpy.percentile``, linear interpolation). Tensors whose ratio is undefined
are counted apart.

``--json`` writes all of it (schema ``fqtool.outliers/1``); ``--replot`` draws the figures again
from such a file without reading any tensor.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer
from rich.console import Console

import fqtool
from kernels.stats import error_sums_ref

from . import metrics, plotting, render
from .analysis import NATIVE_DTYPES, resolve_device
from .errors import InputError, UsageError
from .io import scan
from .options import (
    Device,
    Exclude,
    Include,
    Output,
    OutputFormat,
    Quiet,
    TensorLines,
    emit,
    err,
    handle_errors,
    output_format_for,
    split_list,
    stdout_is_terminal,
)
from .results import Skipped, TensorInfo
from .sweep import (
    ImageFormat,
    OutputDir,
    Paper,
    _safe,
    check_image_format,
    check_writable,
    figure_dir,
    read_json_file,
    tables_text,
)

__all__ = [
    "SCHEMA",
    "ChannelStats",
    "TensorOutliers",
    "Distribution",
    "OutliersResult",
    "tensor_outliers",
    "distribution",
    "run",
    "to_json",
    "from_json",
    "load_json",
    "histogram_data",
    "channel_data",
    "write_figures",
    "render_result",
    "register",
]

SCHEMA = "fqtool.outliers/1"
DEFAULT_SIGMAS = (3.0, 6.0, 10.0)
#: Unit bins up to here, then one overflow bin (the seed's "20+").
OVERFLOW_AT = 20
PERCENTILES = ("min", "p25", "median", "mean", "p75", "p95", "p99", "max", "std")


# --------------------------------------------------------------------------- results (plain data)


@dataclass(frozen=True)
class ChannelStats:
    """Rows (all dims but the last, flattened) and channels (the last dim) of a 2-D+ tensor."""

    rows: int
    channels: int
    rows_with_outliers: dict[float, int]  # k -> rows holding an element with |x - mean| > k·std
    channels_with_outliers: dict[float, int]  # k -> channels holding one
    top: tuple[tuple[int, float, float], ...]  # (channel index, max|x|, max|x| / std), largest first
    absmax_max_over_median: float  # max / median of the channel maxima
    outlier_channel_count: int  # channels holding an element with |x - mean| > channel_sigma·std
    absmax: tuple[float, ...] | None = None  # every channel's max|x| (per-tensor mode, for the figure)
    outlier_channels: tuple[int, ...] | None = None  # channels beyond --channel-sigma (per-tensor mode)


@dataclass(frozen=True)
class TensorOutliers:
    tensor: TensorInfo  # stats: fqtool.metrics.tensor_stats (absmax, mean, std, min, max, nan, inf)
    smax_over_sigma: float
    excess_kurtosis: float
    counts: dict[float, int]  # k -> elements with |x - mean| > k·std
    fracs: dict[float, float]  # k -> their share of the finite elements
    channels: ChannelStats | None  # None for 0-D and 1-D tensors


@dataclass(frozen=True)
class Distribution:
    """smax_over_sigma over the tensors."""

    edges: tuple[float, ...]  # bin edges; the last may be inf (the 20+ bin)
    counts: tuple[int, ...]
    fracs: tuple[float, ...]  # share of the tensors with a defined ratio
    stats: dict[str, float]  # PERCENTILES
    tensors: int  # tensors with a defined ratio
    undefined: int  # tensors with std = 0 (or no finite element)

    @property
    def labels(self) -> tuple[str, ...]:
        out = []
        for lo, hi in zip(self.edges[:-1], self.edges[1:], strict=True):
            out.append(f"{lo:g}+" if math.isinf(hi) else f"{lo:g}-{hi:g}")
        return tuple(out)


@dataclass(frozen=True)
class OutliersResult:
    inputs: tuple[str, ...]
    device: str
    sigmas: tuple[float, ...]
    channel_sigma: float
    top_channels: int
    tensors: tuple[TensorOutliers, ...]
    distribution: Distribution
    skipped: tuple[Skipped, ...] = ()
    elapsed_s: float = 0.0


# --------------------------------------------------------------------------- computation


def tensor_outliers(
    x: torch.Tensor,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    *,
    channel_sigma: float = 6.0,
    top_channels: int = 8,
    keep_channels: bool = False,
) -> tuple[dict[str, float], float, float, dict[float, int], dict[float, float], ChannelStats | None]:
    """(tensor_stats, smax_over_sigma, excess_kurtosis, counts, fracs, channel stats) of one tensor,
    from its raw values in float64. ``keep_channels`` keeps every channel's max|x| (for the figure).
    ``x`` is not modified."""
    x = x.detach()
    if x.dtype not in NATIVE_DTYPES and x.dtype != torch.float64:
        x = x.to(torch.float32)  # float8 inputs: exact in float32
    # The statistics fqtool analyze reports (metrics.tensor_stats), from the same sums code.
    stats = metrics.tensor_stats(error_sums_ref(x, x))
    mean, std, absmax = stats["mean"], stats["std"], stats["absmax"]
    # A copy (also of a float64 x, which .double() would return itself): it becomes |x| in place
    # below, so peak memory is about three float64 copies of x.
    a = x.to(torch.float64, copy=True)
    finite = torch.isfinite(a)
    n = int(finite.sum())
    # Deviations and magnitudes with the non-finite elements set to 0: they count nowhere.
    d = a - mean
    if n != a.numel():
        d.masked_fill_(~finite, 0.0)
        a.masked_fill_(~finite, 0.0)
    del finite
    a.abs_()
    defined = n > 0 and std > 0
    smax = absmax / std if defined else math.nan
    if defined:
        d2 = d.reshape(-1).square()
        kurt = float(torch.dot(d2, d2)) / n / std**4 - 3.0  # sum (x - mean)^4
        del d2
    else:
        kurt = math.nan
    dev = d.abs_()
    counts = {k: int((dev > k * std).sum()) if n else 0 for k in sigmas}
    fracs = {k: counts[k] / n if n else math.nan for k in sigmas}
    channels = None
    if a.ndim >= 2:
        c = a.shape[-1]
        dev2, a2 = dev.reshape(-1, c), a.reshape(-1, c)
        rows_with, ch_with = {}, {}
        for k in sigmas:
            beyond = dev2 > k * std
            rows_with[k] = int(beyond.any(dim=1).sum())
            ch_with[k] = int(beyond.any(dim=0).sum())
        ch_absmax = a2.amax(dim=0).cpu().numpy()
        order = np.argsort(-ch_absmax, kind="stable")[: max(0, top_channels)]
        top = tuple((int(i), float(ch_absmax[i]), float(ch_absmax[i]) / std if std > 0 else math.nan) for i in order)
        median = float(np.median(ch_absmax))
        ratio = float(ch_absmax.max()) / median if median > 0 else (math.nan if ch_absmax.max() == 0 else math.inf)
        marks = (dev2 > channel_sigma * std).any(dim=0).cpu().numpy()
        kept = outlier_idx = None
        if keep_channels:
            kept = tuple(float(v) for v in ch_absmax)
            outlier_idx = tuple(int(i) for i in np.flatnonzero(marks))
        channels = ChannelStats(dev2.shape[0], c, rows_with, ch_with, top, ratio, int(marks.sum()), kept, outlier_idx)
    return stats, smax, kurt, counts, fracs, channels


def distribution(values: Sequence[float]) -> Distribution:
    """The folder distribution of smax_over_sigma (module docstring); NaN values are counted as undefined."""
    v = np.array([x for x in values], dtype=np.float64)
    ok = v[~np.isnan(v)]
    undefined = int(v.size - ok.size)
    if ok.size == 0:
        return Distribution((), (), (), {name: math.nan for name in PERCENTILES}, 0, undefined)
    top = float(ok.max())
    if top <= OVERFLOW_AT:
        edges = np.arange(0, max(1, math.ceil(top)) + 1, dtype=np.float64)
    else:
        edges = np.append(np.arange(0, OVERFLOW_AT + 1, dtype=np.float64), np.inf)
    counts, _ = np.histogram(ok, bins=edges)
    p = np.percentile(ok, [25, 50, 75, 95, 99])
    stats = {
        "min": float(ok.min()),
        "p25": float(p[0]),
        "median": float(p[1]),
        "mean": float(ok.mean()),
        "p75": float(p[2]),
        "p95": float(p[3]),
        "p99": float(p[4]),
        "max": top,
        "std": float(ok.std()),
    }
    return Distribution(
        tuple(float(e) for e in edges),
        tuple(int(c) for c in counts),
        tuple(float(c) / ok.size for c in counts),
        stats,
        int(ok.size),
        undefined,
    )


def _parse_sigmas(text: str | None) -> tuple[float, ...]:
    try:
        ks = sorted({float(p) for p in split_list([text or ""])})
    except ValueError:
        ks = []
    if not ks or any(not math.isfinite(k) or k <= 0 for k in ks):
        raise UsageError(f"--sigmas {text!r}: give positive numbers, comma-separated (e.g. 3,6,10)")
    return tuple(ks)


def run(
    paths: Sequence[str],
    *,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    channel_sigma: float = 6.0,
    top_channels: int = 8,
    keep_channels: bool = False,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    device: str = "cpu",
    progress=None,
) -> OutliersResult:
    """Scan ``paths`` and measure every floating tensor (one at a time). Never prints."""
    t0 = time.perf_counter()
    dev = resolve_device(device)
    sources, skipped = scan(paths, include, exclude)
    out = []
    for i, src in enumerate(sources):
        if progress:
            progress(i, len(sources), src.name)
        x = src.load().to(dev)
        stats, smax, kurt, counts, fracs, ch = tensor_outliers(
            x, sigmas, channel_sigma=channel_sigma, top_channels=top_channels, keep_channels=keep_channels
        )
        del x
        info = TensorInfo(
            name=src.name,
            file=src.file,
            shape=tuple(src.shape),
            dtype=str(src.dtype).removeprefix("torch."),
            numel=math.prod(src.shape),
            stats=stats,
            meta=dict(src.meta),
        )
        out.append(TensorOutliers(info, smax, kurt, counts, fracs, ch))
    return OutliersResult(
        inputs=tuple(str(p) for p in paths),
        device=str(dev),
        sigmas=tuple(sigmas),
        channel_sigma=channel_sigma,
        top_channels=top_channels,
        tensors=tuple(out),
        distribution=distribution([t.smax_over_sigma for t in out]),
        skipped=tuple(skipped),
        elapsed_s=time.perf_counter() - t0,
    )


# --------------------------------------------------------------------------- JSON


def _channels_json(c: ChannelStats | None) -> dict | None:
    if c is None:
        return None
    return {
        "rows": c.rows,
        "channels": c.channels,
        "rows_with_outliers": [{"sigma": k, "count": v} for k, v in c.rows_with_outliers.items()],
        "channels_with_outliers": [{"sigma": k, "count": v} for k, v in c.channels_with_outliers.items()],
        "top": [{"index": i, "absmax": a, "absmax_over_sigma": r} for i, a, r in c.top],
        "absmax_max_over_median": c.absmax_max_over_median,
        "outlier_channel_count": c.outlier_channel_count,
        "absmax": None if c.absmax is None else list(c.absmax),
        "outlier_channels": None if c.outlier_channels is None else list(c.outlier_channels),
    }


def to_json(result: OutliersResult) -> dict:
    d = result.distribution
    doc = {
        "schema": SCHEMA,
        "fqtool_version": fqtool.__version__,
        "command": "outliers",
        "values": "raw: no rescaling or other transform is applied",
        "inputs": list(result.inputs),
        "device": result.device,
        "sigmas": list(result.sigmas),
        "channel_sigma": result.channel_sigma,
        "top_channels": result.top_channels,
        "definitions": {
            "smax_over_sigma": "max|x| / std (population), finite elements",
            "excess_kurtosis": "mean((x-mean)^4) / std^4 - 3",
            "outliers": "elements with |x - mean| > sigma * std",
            "rows": "all dims but the last, flattened; channels: the last dim",
            "outlier_channel_count": "channels holding an element with |x - mean| > channel_sigma * std",
            "bins": "[lo, hi), the last finite bin closed; hi = inf is the overflow bin",
            "percentiles": "numpy.percentile (linear) over the tensors' smax_over_sigma; std: population",
        },
        "tensors": [
            {
                "name": t.tensor.name,
                "file": t.tensor.file,
                "shape": list(t.tensor.shape),
                "dtype": t.tensor.dtype,
                "numel": t.tensor.numel,
                "stats": t.tensor.stats,
                "meta": t.tensor.meta,
                "smax_over_sigma": t.smax_over_sigma,
                "excess_kurtosis": t.excess_kurtosis,
                "outliers": [{"sigma": k, "count": t.counts[k], "frac": t.fracs[k]} for k in result.sigmas],
                "channels": _channels_json(t.channels),
            }
            for t in result.tensors
        ],
        "distribution": {
            "tensors": d.tensors,
            "undefined": d.undefined,
            "bins": [
                {"label": lab, "lo": lo, "hi": hi, "count": c, "frac": f}
                for lab, lo, hi, c, f in zip(d.labels, d.edges[:-1], d.edges[1:], d.counts, d.fracs, strict=True)
            ],
            "statistics": d.stats,
        },
        "skipped": [{"name": s.name, "file": s.file, "reason": s.reason} for s in result.skipped],
        "elapsed_s": result.elapsed_s,
    }
    return render.jsonable(doc)


def _num(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise ValueError(f"expected a number, got {v!r}")
    return float(v)


def _channels_from(c: dict | None) -> ChannelStats | None:
    if c is None:
        return None
    return ChannelStats(
        rows=int(c["rows"]),
        channels=int(c["channels"]),
        rows_with_outliers={_num(e["sigma"]): int(e["count"]) for e in c["rows_with_outliers"]},
        channels_with_outliers={_num(e["sigma"]): int(e["count"]) for e in c["channels_with_outliers"]},
        top=tuple((int(e["index"]), _num(e["absmax"]), _num(e["absmax_over_sigma"])) for e in c["top"]),
        absmax_max_over_median=_num(c["absmax_max_over_median"]),
        outlier_channel_count=int(c["outlier_channel_count"]),
        absmax=None if c.get("absmax") is None else tuple(_num(v) for v in c["absmax"]),
        outlier_channels=None if c.get("outlier_channels") is None else tuple(int(i) for i in c["outlier_channels"]),
    )


def from_json(doc: Any, source: str = "JSON") -> OutliersResult:
    """An :class:`OutliersResult` from :func:`to_json`'s document; InputError if it is not one."""
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        found = doc.get("schema") if isinstance(doc, dict) else None
        raise InputError(
            f"{source}: not a fqtool outliers result (schema {found!r}, expected {SCHEMA!r}); "
            "write one with fqtool outliers ... --json FILE"
        )
    try:
        sigmas = tuple(_num(k) for k in doc["sigmas"])
        tensors = []
        for t in doc["tensors"]:
            info = TensorInfo(
                name=str(t["name"]),
                file=str(t["file"]),
                shape=tuple(int(s) for s in t["shape"]),
                dtype=str(t["dtype"]),
                numel=int(t["numel"]),
                stats={k: _num(v) for k, v in t["stats"].items()},
                meta=dict(t.get("meta", {})),
            )
            out = {_num(e["sigma"]): e for e in t["outliers"]}
            tensors.append(
                TensorOutliers(
                    info,
                    _num(t["smax_over_sigma"]),
                    _num(t["excess_kurtosis"]),
                    {k: int(out[k]["count"]) for k in sigmas},
                    {k: _num(out[k]["frac"]) for k in sigmas},
                    _channels_from(t["channels"]),
                )
            )
        d = doc["distribution"]
        bins = d["bins"]
        edges = tuple(_num(b["lo"]) for b in bins) + ((_num(bins[-1]["hi"]),) if bins else ())
        dist = Distribution(
            edges,
            tuple(int(b["count"]) for b in bins),
            tuple(_num(b["frac"]) for b in bins),
            {name: _num(d["statistics"][name]) for name in PERCENTILES},
            int(d["tensors"]),
            int(d["undefined"]),
        )
        return OutliersResult(
            inputs=tuple(str(p) for p in doc["inputs"]),
            device=str(doc["device"]),
            sigmas=sigmas,
            channel_sigma=_num(doc["channel_sigma"]),
            top_channels=int(doc["top_channels"]),
            tensors=tuple(tensors),
            distribution=dist,
            skipped=tuple(Skipped(str(s["name"]), str(s["file"]), str(s["reason"])) for s in doc.get("skipped", [])),
            elapsed_s=_num(doc.get("elapsed_s", 0.0)),
        )
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise InputError(
            f"{source}: malformed {SCHEMA} document ({type(e).__name__}: {e}); "
            "write it again with fqtool outliers --json"
        ) from e


def load_json(path: Path) -> OutliersResult:
    return from_json(read_json_file(path, "fqtool outliers --json"), str(path))


# --------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class HistogramData:
    title: str
    lefts: tuple[float, ...]  # bar i covers [lefts[i], lefts[i] + 1) on the axis; the 20+ bin sits at 20
    labels: tuple[str, ...]
    percent: tuple[float, ...]  # % of tensors with a defined ratio
    counts: tuple[int, ...]
    markers: tuple[tuple[str, float], ...]  # (name, value) drawn as vertical lines: median, p95


def histogram_data(result: OutliersResult) -> HistogramData:
    d = result.distribution
    n = d.tensors
    title = f"Smax/σ over {n} tensor{'s' if n != 1 else ''} (raw values)"
    if d.undefined:
        title += f"; {d.undefined} with σ = 0 left out"
    if n:
        title += "\n" + ", ".join(f"{name} {d.stats[name]:.2f}" for name in ("median", "p95", "max"))
    # Lines only where they can be placed: a value in the overflow bin has no position on the axis.
    overflow = bool(d.edges) and math.isinf(d.edges[-1])
    markers = tuple(
        (name, d.stats[name])
        for name in ("median", "p95")
        if math.isfinite(d.stats[name]) and not (overflow and d.stats[name] >= d.edges[-2])
    )
    return HistogramData(
        title,
        tuple(d.edges[:-1]),
        d.labels,
        tuple(100.0 * f for f in d.fracs),
        d.counts,
        markers,
    )


def plot_histogram(h: HistogramData, path: Path, paper: bool = False) -> Path:
    """Bars: % of tensors per unit bin of Smax/σ (the overflow bin labelled 20+), median and p95 lines."""
    with plotting.style(paper):
        fig, ax = plotting.figure(paper)
        fig.set_layout_engine("constrained")
        xs = np.array(h.lefts) + 0.5
        ax.bar(xs, h.percent, width=0.85, color=plotting.PALETTE[0])
        tallest = max(h.percent, default=0.0)
        for x, p, c in zip(xs, h.percent, h.counts, strict=True):
            if c and p >= max(0.5, 0.03 * tallest):
                ax.annotate(
                    str(c), (x, p), xytext=(0, 1.5), textcoords="offset points", ha="center", va="bottom",
                    fontsize="x-small",
                )  # fmt: skip
        styles = {"median": "--", "p95": ":"}
        top_edge = h.lefts[-1] + 1 if h.lefts else 1
        for (name, v), colour in zip(h.markers, (plotting.PALETTE[1], plotting.PALETTE[2]), strict=False):
            ax.axvline(v, color=colour, linestyle=styles[name], linewidth=1.0, label=name)
        step = 1 if len(h.lefts) <= (10 if paper else 22) else 2
        ax.set_xticks([x for i, x in enumerate(xs) if i % step == 0])
        ax.set_xticklabels([lab for i, lab in enumerate(h.labels) if i % step == 0], rotation=45, ha="right")
        ax.set_xlim(0, top_edge)
        ax.set_ylim(0, max(tallest * 1.12, 1.0))
        ax.set_xlabel("Smax/σ = max|x| / std(x)  (unit bins)")
        ax.set_ylabel("tensors (%)")
        ax.set_title(h.title)
        if h.markers:
            ax.legend(loc="best", frameon=False)
        return plotting.save(fig, path, paper)


@dataclass(frozen=True)
class ChannelData:
    title: str
    absmax: tuple[float, ...]  # per channel
    outliers: tuple[int, ...]  # highlighted channel indices
    threshold: float  # |mean| + K·std: a channel above it holds an outlier
    threshold_label: str
    top: tuple[tuple[int, float], ...]  # (index, absmax) of the labelled channels


def channel_data(result: OutliersResult, i: int) -> ChannelData | None:
    t = result.tensors[i]
    c = t.channels
    if c is None or c.absmax is None:
        return None
    k = result.channel_sigma
    outl = c.outlier_channels or ()
    title = f"{t.tensor.name}\n{len(outl)} of {c.channels} channels hold an element with |x − mean| > {k:g}σ"
    mean, std = t.tensor.stats["mean"], t.tensor.stats["std"]
    return ChannelData(
        title,
        c.absmax,
        tuple(outl),
        abs(mean) + k * std,
        f"|mean| + {k:g}σ",
        tuple((idx, a) for idx, a, _ in c.top[:3]),
    )


def plot_channels(cd: ChannelData, path: Path, paper: bool = False) -> Path:
    """Max |x| per channel (last dim), the channels holding an outlier highlighted and marked."""
    with plotting.style(paper):
        fig, ax = plotting.figure(paper)
        fig.set_layout_engine("constrained")
        a = np.array(cd.absmax, dtype=np.float64)
        idx = np.arange(a.size)
        mark = np.zeros(a.size, dtype=bool)
        mark[list(cd.outliers)] = True
        ax.bar(idx[~mark], a[~mark], width=1.0, linewidth=0, color=plotting.PALETTE[0], label="channel max |x|")
        if mark.any():
            ax.bar(idx[mark], a[mark], width=1.0, linewidth=0, color=plotting.PALETTE[1])
            ax.plot(
                idx[mark], a[mark], linestyle="none", marker="v", markersize=3 if paper else 5,
                color=plotting.PALETTE[1], label="channel with an outlier",
            )  # fmt: skip
        if math.isfinite(cd.threshold):
            ax.axhline(cd.threshold, color="0.3", linestyle=":", linewidth=1.0, label=cd.threshold_label)
        for i, v in cd.top:
            ax.annotate(
                f"#{i}", (i, v), xytext=(0, 4), textcoords="offset points", fontsize="x-small", ha="center",
                va="bottom",
            )  # fmt: skip
        ax.set_xlim(-0.5, a.size - 0.5)
        ax.set_ylim(0, max(float(a.max(initial=0.0)), cd.threshold if math.isfinite(cd.threshold) else 0.0) * 1.15 or 1)
        ax.set_xlabel("channel (index along the last dim)")
        ax.set_ylabel("max |x| in the channel (tensor units)")
        ax.set_title(cd.title)
        fig.legend(loc="outside lower center", ncol=3, frameon=False)
        return plotting.save(fig, path, paper)


def figure_paths(result: OutliersResult, out_dir: Path, image_format: str, per_tensor: bool) -> dict:
    paths: dict[int | None, Path] = {None: out_dir / f"outliers_smax_over_sigma.{image_format}"}
    if per_tensor:
        for i, t in enumerate(result.tensors):
            if t.channels is not None and t.channels.absmax is not None:
                paths[i] = out_dir / f"outliers_channels_{i:03d}_{_safe(t.tensor.name)}.{image_format}"
    return paths


def write_figures(
    result: OutliersResult, out_dir: Path, image_format: str = "png", per_tensor: bool = False, paper: bool = False
) -> list[Path]:
    if per_tensor and any(t.channels is not None and t.channels.absmax is None for t in result.tensors):
        raise UsageError(
            "--per-tensor: this result has no per-channel maxima; compute it with fqtool outliers --per-tensor"
        )
    written = []
    for which, path in figure_paths(result, out_dir, image_format, per_tensor).items():
        if which is None:
            if result.distribution.tensors:
                written.append(plot_histogram(histogram_data(result), path, paper))
        else:
            written.append(plot_channels(channel_data(result, which), path, paper))
    return written


# --------------------------------------------------------------------------- tables


def _fixed(v: float, digits: int = 2) -> str:
    return f"{v:.{digits}f}" if math.isfinite(v) else repr(float(v))


def _sections(result: OutliersResult) -> list:
    C = render.Col
    fm = render.format_metric
    ks = result.sigmas
    cs = result.channel_sigma
    cols = [
        C("tensor", "tensor", right=False),
        C("shape", "shape"),
        C("absmax", "max|x|"),
        C("std", "std"),
        C("smax_over_sigma", "Smax/σ"),
        C("excess_kurtosis", "kurtosis"),
        *(C(f"frac_gt_{k:g}sigma", f">{k:g}σ") for k in ks),
        C(f"channels_gt_{cs:g}sigma", f"channels >{cs:g}σ"),
        C("channel_max_over_median", "ch max/median"),
        C("top_channels", "top channels", right=False),
    ]
    rows = []
    for t in result.tensors:
        c = t.channels
        if c is not None:
            ch_text = f"{c.outlier_channel_count}/{c.channels}"
            ratio = _fixed(c.absmax_max_over_median)
            top = ",".join(str(i) for i, _, _ in c.top[:5]) or "-"
        else:
            ch_text = ratio = top = "-"
        rows.append(
            [
                t.tensor.name,
                "x".join(map(str, t.tensor.shape)) or "()",
                fm("absmax", t.tensor.stats["absmax"]),
                fm("std", t.tensor.stats["std"]),
                _fixed(t.smax_over_sigma),
                _fixed(t.excess_kurtosis),
                *(fm("clipped_frac", t.fracs[k]) for k in ks),
                ch_text,
                ratio,
                top,
            ]
        )
    per_tensor = render.Section("per tensor (raw values)", cols, rows)
    d = result.distribution
    stats = render.Section(
        f"Smax/σ over {d.tensors} tensor{'s' if d.tensors != 1 else ''}",
        [C(name, name) for name in PERCENTILES],
        [[_fixed(d.stats[name]) for name in PERCENTILES]],
    )
    bins = render.Section(
        "Smax/σ per unit bin",
        [C("bin", "Smax/σ", right=False), C("tensors", "tensors"), C("percent", "% of tensors")],
        [[lab, str(c), f"{100 * f:.1f}%"] for lab, c, f in zip(d.labels, d.counts, d.fracs, strict=True)],
    )
    return [per_tensor, stats, bins]


def render_result(result: OutliersResult, output_format: str, *, plain: bool = True, width: int | None = None) -> str:
    if output_format == "json":
        return json.dumps(to_json(result), indent=2, allow_nan=False) + "\n"
    if output_format == "csv":
        return to_csv(result)
    notes = []
    if result.distribution.undefined:
        notes.append(f"{result.distribution.undefined} tensor(s) with std = 0: Smax/σ undefined, left out")
    if result.skipped:
        notes.append(
            f"skipped {len(result.skipped)} tensor(s): "
            + ", ".join(f"{s.name} ({s.reason})" for s in result.skipped[:3])
        )
    return tables_text(
        _sections(result), output_format, plain=plain, width=width, note="\n".join(notes) if notes else None
    )


def to_csv(result: OutliersResult) -> str:
    """One row per tensor; a fixed header for the given --sigmas."""
    import csv
    import io

    ks = result.sigmas
    header = [
        "tensor", "file", "dtype", "shape", "numel", "absmax", "mean", "std", "smax_over_sigma", "excess_kurtosis",
        *(f"count_gt_{k:g}sigma" for k in ks), *(f"frac_gt_{k:g}sigma" for k in ks), "rows", "channels",
        *(f"channels_gt_{k:g}sigma" for k in ks), *(f"rows_gt_{k:g}sigma" for k in ks), "channel_max_over_median",
        "outlier_channels", "top_channels",
    ]  # fmt: skip
    num = render.csv_number
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(header)
    for t in result.tensors:
        c = t.channels
        st = t.tensor.stats
        w.writerow(
            [t.tensor.name, t.tensor.file, t.tensor.dtype, "x".join(map(str, t.tensor.shape)), t.tensor.numel]
            + [num(st["absmax"]), num(st["mean"]), num(st["std"]), num(t.smax_over_sigma), num(t.excess_kurtosis)]
            + [t.counts[k] for k in ks]
            + [num(t.fracs[k]) for k in ks]
            + ([c.rows, c.channels] if c else ["", ""])
            + ([c.channels_with_outliers[k] for k in ks] if c else ["" for _ in ks])
            + ([c.rows_with_outliers[k] for k in ks] if c else ["" for _ in ks])
            + (
                [num(c.absmax_max_over_median), c.outlier_channel_count, " ".join(str(i) for i, _, _ in c.top)]
                if c
                else ["", "", ""]
            )
        )
    return out.getvalue()


# --------------------------------------------------------------------------- CLI


def register(app: typer.Typer) -> None:
    @app.command(
        help="How heavy-tailed each tensor is, from its raw values: Smax/σ (max|x| / std), excess kurtosis, the "
        "share of elements beyond k·σ, rows and channels (last dim) holding them, the largest channels; over a "
        "folder, the distribution of Smax/σ with percentiles. Figures with --output-dir; JSON with --json FILE "
        "(schema fqtool.outliers/1), which --replot draws again without reading tensors."
    )
    @handle_errors
    def outliers(
        paths: Annotated[
            list[str] | None, typer.Argument(metavar="PATH", help="Files or directories (as for analyze).")
        ] = None,
        sigmas: Annotated[
            str, typer.Option("--sigmas", metavar="K,K,...", help="Outlier thresholds: |x - mean| > K·std.")
        ] = "3,6,10",
        channel_sigma: Annotated[
            float,
            typer.Option(
                "--channel-sigma",
                metavar="K",
                help="A channel holding an element with |x - mean| > K·std is an outlier channel (table, figure).",
            ),
        ] = 6.0,
        top_channels: Annotated[
            int, typer.Option("--top-channels", metavar="N", min=0, help="How many of the largest channels to list.")
        ] = 8,
        include: Include = None,
        exclude: Exclude = None,
        device: Device = "auto",
        output_format: OutputFormat = None,
        output: Output = None,
        json_file: Annotated[
            Path | None, typer.Option("--json", metavar="FILE", help="Also write everything as JSON to FILE.")
        ] = None,
        output_dir: OutputDir = None,
        per_tensor: Annotated[
            bool,
            typer.Option(
                "--per-tensor", help="Also a figure of the channel maxima of each 2-D+ tensor (kept in the JSON too)."
            ),
        ] = False,
        image_format: ImageFormat = "png",
        paper: Paper = False,
        replot: Annotated[
            Path | None,
            typer.Option(
                "--replot", metavar="JSON", help="Draw the figures (and print the table) from a --json file; no PATH."
            ),
        ] = None,
        quiet: Quiet = False,
    ) -> None:
        fmt = output_format_for(output_format, output)
        ext = check_image_format(image_format)
        out_dir = figure_dir(output_dir, replot, per_tensor, paper)
        check_writable(json_file, "--json")
        check_writable(output, "--output")
        if replot is not None:
            if paths:
                raise UsageError("--replot draws from its JSON file: give no PATH with it")
            result = load_json(replot)
        else:
            if not paths:
                raise UsageError("give the tensors to measure (PATH...) or --replot FILE.json")
            ks = _parse_sigmas(sigmas)
            if channel_sigma <= 0:
                raise UsageError(f"--channel-sigma {channel_sigma}: give a positive number")
            result = run(
                paths, sigmas=ks, channel_sigma=channel_sigma,
                top_channels=top_channels, keep_channels=per_tensor, include=split_list(include),
                exclude=split_list(exclude), device=device, progress=TensorLines("outliers", not quiet),
            )  # fmt: skip
        if json_file is not None:
            try:
                render.write_atomic(json_file, json.dumps(to_json(result), indent=2, allow_nan=False) + "\n")
            except OSError as e:
                raise UsageError(f"--json {json_file}: cannot write it ({e.strerror or e}); nothing was written") from e
        written = write_figures(result, out_dir, ext, per_tensor, paper) if out_dir is not None else []
        plain = output is not None or not stdout_is_terminal()
        width = None if plain else Console().width
        emit(render_result(result, fmt, plain=plain, width=width), output)
        if not quiet:
            n = len(result.tensors)
            err(
                f"{n} tensor{'s' if n != 1 else ''}"
                + ("" if replot else f" in {result.elapsed_s:.1f} s")
                + (f"; {len(written)} figure(s) in {out_dir}" if written else "")
            )
