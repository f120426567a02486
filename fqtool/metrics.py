"""Every metric fqtool reports: one table of name -> definition, and pure functions computing them.

Sums come from :func:`kernels.stats.error_sums` (float64 accumulation over the elements where
both the input ``x`` and its fake-quantized ``q`` are finite); the README's metric table and
``fqtool analyze --help`` are both generated from :data:`METRICS`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from kernels.stats import ErrorSums


@dataclass(frozen=True)
class Metric:
    name: str
    label: str  # short column header
    formula: str  # the definition, as shown in the README and --help
    higher_is_better: bool | None  # None: a count or a fraction that is information, not a score
    aggregate: str  # how a format's aggregate over tensors is formed


_W = "numel-weighted mean over tensors"

#: name -> Metric, in display order. x = input, q = fake-quantized, d = q - x; sums run over the
#: n elements where x and q are both finite; N = numel.
METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("sqnr_db", "SQNR dB", "10*log10(sum x^2 / sum d^2)  (inf when d = 0)", True, "-10*log10(aggregate nsr)"),
        Metric("nsr", "NSR", "sum d^2 / sum x^2  (the seed's test_dtype 'relative error')", False, _W),
        Metric("mse", "MSE", "sum d^2 / n", False, _W + " (= over all elements)"),
        Metric("rmse", "RMSE", "sqrt(mse)", False, "sqrt(aggregate mse)"),
        Metric("max_abs_err", "max|err|", "max |d|", False, "max over tensors"),
        Metric("mean_abs_err", "mean|err|", "sum |d| / n", False, _W + " (= over all elements)"),
        Metric("cosine", "cosine", "sum x*q / sqrt(sum x^2 * sum q^2)  (1 if both are 0, 0 if one is)", True, _W),
        Metric(
            "clipped_frac",
            "clipped",
            "share of elements with finite |x| above the largest magnitude its scaling unit can represent",
            None,
            _W + " (= over all elements)",
        ),
        Metric(
            "flushed_frac",
            "flushed",
            "share of elements with finite x != 0 and q == 0",
            None,
            _W + " (= over all elements)",
        ),
        Metric("nan_in", "NaN in", "NaN elements in x", None, "sum"),
        Metric("inf_in", "Inf in", "+-Inf elements in x", None, "sum"),
        Metric("nan_out", "NaN out", "NaN elements in q", None, "sum"),
        Metric("inf_out", "Inf out", "+-Inf elements in q", None, "sum"),
    )
}

#: Tensor statistics (of x, over its finite elements), format-independent.
TENSOR_STATS: dict[str, str] = {
    "absmax": "max |x|",
    "mean": "mean of x",
    "std": "population standard deviation of x",
    "min": "min x",
    "max": "max x",
    "nan": "NaN elements",
    "inf": "+-Inf elements",
}


def markdown_table() -> str:
    """The metric definitions as the Markdown table in the README (a test keeps the two equal)."""
    lines = ["| metric | definition (per tensor x format) | aggregate over tensors |", "|---|---|---|"]
    for m in METRICS.values():
        lines.append(f"| `{m.name}` | {m.formula.replace('|', chr(92) + '|')} | {m.aggregate} |")
    return "\n".join(lines) + "\n"


def nsr(sum_d2: float, sum_x2: float) -> float:
    if sum_d2 == 0:
        return 0.0
    return sum_d2 / sum_x2 if sum_x2 > 0 else math.inf


def sqnr_db(nsr_value: float) -> float:
    if nsr_value == 0:
        return math.inf
    if math.isinf(nsr_value) or math.isnan(nsr_value):
        return -math.inf if math.isinf(nsr_value) else math.nan
    return -10.0 * math.log10(nsr_value)


def cosine(sum_xq: float, sum_x2: float, sum_q2: float) -> float:
    if sum_x2 == 0 and sum_q2 == 0:
        return 1.0
    if sum_x2 == 0 or sum_q2 == 0:
        return 0.0
    return sum_xq / math.sqrt(sum_x2 * sum_q2)


def compute(s: ErrorSums) -> dict[str, float]:
    """The per tensor x format metrics from one tensor's sums."""
    n = s.n
    r = nsr(s.sum_d2, s.sum_x2)
    mse = s.sum_d2 / n if n else math.nan
    return {
        "sqnr_db": sqnr_db(r) if n else math.nan,
        "nsr": r if n else math.nan,
        "mse": mse,
        "rmse": math.sqrt(mse) if n else math.nan,
        "max_abs_err": s.max_ad if n else math.nan,
        "mean_abs_err": s.sum_ad / n if n else math.nan,
        "cosine": cosine(s.sum_xq, s.sum_x2, s.sum_q2) if n else math.nan,
        "clipped_frac": s.clipped / s.numel if s.numel else math.nan,
        "flushed_frac": s.flushed / s.numel if s.numel else math.nan,
        "nan_in": s.nan_in,
        "inf_in": s.inf_in,
        "nan_out": s.nan_out,
        "inf_out": s.inf_out,
    }


def tensor_stats(s: ErrorSums) -> dict[str, float]:
    """Statistics of the input x (over its finite elements) from its sums."""
    nx = s.nx
    return {
        "absmax": max(abs(s.min_x), abs(s.max_x)) if nx else math.nan,
        "mean": s.mean_x if nx else math.nan,
        "std": math.sqrt(s.m2_x / nx) if nx else math.nan,
        "min": s.min_x if nx else math.nan,
        "max": s.max_x if nx else math.nan,
        "nan": s.nan_in,
        "inf": s.inf_in,
    }


def _weighted_mean(values: Sequence[float], weights: Sequence[int]) -> float:
    pairs = [(v, w) for v, w in zip(values, weights, strict=True) if not math.isnan(v) and w > 0]
    total = sum(w for _, w in pairs)
    if not total:
        return math.nan
    if any(math.isinf(v) for v, _ in pairs):
        return math.fsum(v for v, _ in pairs if math.isinf(v))  # +inf, -inf, or nan when both
    return math.fsum(v * w for v, w in pairs) / total


def aggregate(per_tensor: Sequence[dict[str, float]], numels: Sequence[int]) -> dict[str, float]:
    """One format's metrics over several tensors, each tensor weighted by its numel (see METRICS)."""
    if not per_tensor:
        return {name: math.nan for name in METRICS}
    out: dict[str, float] = {}
    for name in ("nsr", "mse", "mean_abs_err", "cosine", "clipped_frac", "flushed_frac"):
        out[name] = _weighted_mean([m[name] for m in per_tensor], numels)
    out["sqnr_db"] = sqnr_db(out["nsr"]) if not math.isnan(out["nsr"]) else math.nan
    out["rmse"] = math.sqrt(out["mse"]) if not math.isnan(out["mse"]) else math.nan
    errs = [m["max_abs_err"] for m in per_tensor if not math.isnan(m["max_abs_err"])]
    out["max_abs_err"] = max(errs) if errs else math.nan
    for name in ("nan_in", "inf_in", "nan_out", "inf_out"):
        out[name] = sum(m[name] for m in per_tensor)
    return {name: out[name] for name in METRICS}
