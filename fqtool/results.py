"""The analysis results: plain frozen data, computed by ``fqtool.analysis``, shown by ``fqtool.render``.

Nothing here prints. ``metrics`` dicts map the names in ``fqtool.metrics.METRICS`` to floats
(``math.inf`` / ``math.nan`` allowed) or ints (the counts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Bumped whenever a field of the JSON output changes meaning or is removed (adding fields is compatible).
SCHEMA = "fqtool.analysis/1"


@dataclass(frozen=True)
class TensorInfo:
    """One analysed tensor: where it came from and its statistics (over its finite elements)."""

    name: str  # the safetensors key, the dotted key path in a .pt state dict, the file stem for a one-tensor file
    file: str  # the file it was read from, as given (or resolved from an index)
    shape: tuple[int, ...]
    dtype: str  # torch dtype without the "torch." prefix, e.g. "float32"
    numel: int
    stats: dict[str, float]  # absmax, mean, std, min, max, nan, inf (counts of the input's NaN / Inf elements)
    meta: dict[str, Any] = field(default_factory=dict)  # seed dump fields: layer, pass, rank, iteration, ...


@dataclass(frozen=True)
class Row:
    """One tensor x one format."""

    tensor: TensorInfo
    format: str  # the canonical format string (str(FormatSpec))
    metrics: dict[str, float]


@dataclass(frozen=True)
class Aggregate:
    """One format over all analysed tensors: numel-weighted (see ``fqtool.metrics.aggregate``)."""

    format: str
    bits_per_value: float
    tensors: int
    numel: int
    metrics: dict[str, float]
    rank: int = 0  # 1 = best (highest aggregate SQNR) in ``compare``


@dataclass(frozen=True)
class Violation:
    """A gate that failed: ``--min-snr`` (metric sqnr_db) or ``--max-mse`` (metric mse)."""

    tensor: str  # tensor name, or "(all)" for an aggregate
    format: str
    metric: str
    value: float
    limit: float


@dataclass(frozen=True)
class Skipped:
    """A tensor that was not analysed, and why (e.g. "int64: not floating point")."""

    name: str
    file: str
    reason: str


@dataclass(frozen=True)
class Result:
    """Everything one ``analyze`` / ``compare`` run found."""

    command: str  # "analyze" or "compare"
    inputs: tuple[str, ...]
    device: str
    formats: tuple[str, ...]  # canonical format strings, in the order asked for
    rows: tuple[Row, ...]  # tensor-major: all formats of tensor 1, then tensor 2, ...
    aggregates: tuple[Aggregate, ...]  # one per format, in ``formats`` order
    skipped: tuple[Skipped, ...] = ()
    violations: tuple[Violation, ...] = ()
    gates: dict[str, float] = field(default_factory=dict)  # {"min_snr": 20.0, "max_mse": 1e-4} as given
    elapsed_s: float = 0.0
