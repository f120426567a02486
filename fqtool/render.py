"""Show a :class:`~fqtool.results.Result`: a rich or plain table, JSON, CSV or Markdown. Never prints.

Every function returns text; the CLI writes it to stdout (data) or stderr (people), or to a file
with :func:`write_atomic`. ``render`` returns a document ending in one newline: write it as is.

Human formats (``table``, plain ``table``, ``markdown``) show the same rounded numbers, made by
:func:`format_metric`: SQNR dB with 2 decimals, NSR / MSE / errors / statistics with 4
significant digits (``1.234e-05``), cosine with 6 decimals, fractions as percentages with 4
significant digits (``0.1234%``), counts as ints, and ``inf`` / ``-inf`` / ``nan`` as such.
Machine formats (``json``, ``csv``) carry full float precision (``repr``, which round-trips) and
do not depend on ``view`` or ``metric``. See :data:`SCHEMA_NOTES` for the encoding of
non-finite floats.
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

import fqtool
from fqtool.errors import UsageError
from fqtool.metrics import METRICS
from fqtool.results import SCHEMA, Aggregate, Result, Row, TensorInfo

FORMATS = ("table", "json", "csv", "markdown")
VIEWS = ("analyze", "compare")

SCHEMA_NOTES = f"""\
JSON output (schema {SCHEMA}) and CSV output of fqtool analyze / compare.

Standard JSON has no Infinity or NaN, so every non-finite float is written as a string:
"inf", "-inf" or "nan" (e.g. "sqnr_db": "inf" when a format is exact). Python's json.loads
and jq parse the output as is; float(value) turns all three back into floats in Python, and
in jq a non-finite value is the one whose type is "string". Finite floats carry full
precision (they round-trip exactly); counts are ints.
CSV writes the same values unquoted: inf, -inf, nan (float() reads all three). Its header is
fixed (it does not depend on the data); kind is "tensor" for a tensor x format row and
"aggregate" for a format's numel-weighted aggregate over all tensors (tensor "(all)").
"""

#: The CSV header: the same columns for every run, so scripts can rely on positions.
CSV_HEADER: tuple[str, ...] = (
    "kind",
    "tensor",
    "file",
    "format",
    "bits_per_value",
    "dtype",
    "shape",
    "numel",
    *METRICS,
    "absmax",
    "mean",
    "std",
)
_CSV_STATS = ("absmax", "mean", "std")

# --- numbers for humans -------------------------------------------------------------------------


def _fixed2(v: float) -> str:
    return f"{v:.2f}"


def _fixed6(v: float) -> str:
    return f"{v:.6f}"


def _sci(v: float) -> str:
    return f"{v:.3e}"  # 4 significant digits: 1.234e-05


def _percent(v: float) -> str:
    return f"{100 * v:.4g}%"


def _count(v: float) -> str:
    return str(int(v))


#: Metric or statistic name -> how a human sees it. Names not listed use 4-digit scientific.
_HUMAN: dict[str, Callable[[float], str]] = {
    "sqnr_db": _fixed2,
    "cosine": _fixed6,
    "clipped_frac": _percent,
    "flushed_frac": _percent,
    "nan_in": _count,
    "inf_in": _count,
    "nan_out": _count,
    "inf_out": _count,
    "nan": _count,  # the statistics' NaN / Inf element counts
    "inf": _count,
}


def format_metric(name: str, value: float | None) -> str:
    """``value`` of metric (or statistic) ``name`` as every human format shows it; "-" when missing."""
    if value is None:
        return "-"
    if not math.isfinite(value):
        return repr(float(value))  # "inf", "-inf", "nan"
    return _HUMAN.get(name, _sci)(value)


def _bits_text(bits: float | None) -> str:
    return "-" if bits is None else f"{bits:.4g}"


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)  # "4096x1024"; "" for a scalar


# --- the entry point ----------------------------------------------------------------------------


def render(
    result: Result,
    output_format: str,
    *,
    view: str = "analyze",
    metric: str = "sqnr_db",
    plain: bool = False,
    width: int | None = None,
) -> str:
    """``result`` as ``output_format`` (one of :data:`FORMATS`), ending in one newline.

    ``view`` ("analyze" or "compare") and ``metric`` (the compare grid's metric) shape the human
    formats only; ``plain`` turns the rich table into whitespace-aligned columns without colours
    or box characters (for pipes); ``width`` is the rich table's terminal width (default 200).
    """
    _check_choice("output format", output_format, FORMATS)
    _check_choice("view", view, VIEWS)
    _check_choice("metric", metric, tuple(METRICS))
    if output_format == "json":
        return json.dumps(to_json(result), indent=2, allow_nan=False) + "\n"
    if output_format == "csv":
        return to_csv(result)
    if output_format == "markdown":
        return markdown_sections(_sections(result, view, metric, "full"), _skipped_line(result))
    if plain:
        return plain_sections(_sections(result, view, metric, "full"), _skipped_line(result))
    return _rich(result, view, metric, width or 200)


def _check_choice(what: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise UsageError(f"unknown {what} {value!r}; choose one of: {', '.join(choices)}")


# --- JSON ---------------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """``value`` with non-finite floats as "inf" / "-inf" / "nan" and anything unknown as a string."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        v = float(value)
        return v if math.isfinite(v) else repr(v)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return str(value)


def to_json(result: Result) -> dict:
    """The JSON document (see :data:`SCHEMA_NOTES`); ``json.dumps`` of it is strict JSON."""
    bits = _bits_by_format(result)
    doc = {
        "schema": SCHEMA,
        "fqtool_version": fqtool.__version__,
        "command": result.command,
        "inputs": list(result.inputs),
        "device": result.device,
        "formats": [{"format": f, "bits_per_value": bits.get(f)} for f in result.formats],
        "tensors": [
            {
                "name": t.name,
                "file": t.file,
                "shape": list(t.shape),
                "dtype": t.dtype,
                "numel": t.numel,
                "stats": t.stats,
                "meta": t.meta,
            }
            for t in _unique_tensors(result)
        ],
        "rows": [
            {"tensor": r.tensor.name, "file": r.tensor.file, "format": r.format, "metrics": r.metrics}
            for r in result.rows
        ],
        "aggregates": [
            {
                "format": a.format,
                "bits_per_value": a.bits_per_value,
                "rank": a.rank,
                "tensors": a.tensors,
                "numel": a.numel,
                "metrics": a.metrics,
            }
            for a in result.aggregates
        ],
        "skipped": [{"name": s.name, "file": s.file, "reason": s.reason} for s in result.skipped],
        "gates": result.gates,
        "violations": [
            {"tensor": v.tensor, "format": v.format, "metric": v.metric, "value": v.value, "limit": v.limit}
            for v in result.violations
        ],
        "elapsed_s": result.elapsed_s,
    }
    return jsonable(doc)


def _bits_by_format(result: Result) -> dict[str, float]:
    return {a.format: a.bits_per_value for a in result.aggregates}


def _unique_tensors(result: Result) -> list[TensorInfo]:
    """Each analysed tensor once, in row order (a tensor is its (file, name))."""
    seen: dict[tuple[str, str], TensorInfo] = {}
    for row in result.rows:
        seen.setdefault((row.tensor.file, row.tensor.name), row.tensor)
    return list(seen.values())


# --- CSV ----------------------------------------------------------------------------------------


def csv_number(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, numbers.Integral):
        return str(int(value))
    return repr(float(value))  # full precision; "inf", "-inf", "nan"


def to_csv(result: Result) -> str:
    """One "tensor" row per tensor x format, then one "aggregate" row per format; header :data:`CSV_HEADER`."""
    bits = _bits_by_format(result)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for row in result.rows:
        t = row.tensor
        writer.writerow(
            [
                "tensor",
                t.name,
                t.file,
                row.format,
                csv_number(bits.get(row.format)),
                t.dtype,
                _shape_text(t.shape),
                t.numel,
                *(csv_number(row.metrics.get(name)) for name in METRICS),
                *(csv_number(t.stats.get(name)) for name in _CSV_STATS),
            ]
        )
    for agg in result.aggregates:
        writer.writerow(
            [
                "aggregate",
                "(all)",
                "",
                agg.format,
                csv_number(agg.bits_per_value),
                "",
                "",
                agg.numel,
                *(csv_number(agg.metrics.get(name)) for name in METRICS),
                *("" for _ in _CSV_STATS),
            ]
        )
    return out.getvalue()


# --- the human tables, as data ------------------------------------------------------------------
# Col / Section and the writers rich_table, plain_sections, markdown_sections are the table building
# blocks other commands (sweep, outliers) lay their own tables out with, so every table looks alike.


@dataclass(frozen=True)
class Col:
    key: str  # the plain-mode header: no spaces (the JSON / CSV name where there is one)
    label: str  # the rich / markdown header
    right: bool = True  # numbers are right-aligned


@dataclass(frozen=True)
class Section:
    """One table of a human format; the writers below only lay it out."""

    title: str
    cols: list[Col]
    rows: list[list[str]]
    best: set[tuple[int, int]] = field(default_factory=set)  # (row, column) cells to highlight


@dataclass(frozen=True)
class _MetricField:
    col: Col
    text: Callable[[Mapping[str, float]], str]


def _metric_field(name: str) -> _MetricField:
    return _MetricField(Col(name, METRICS[name].label), lambda m: format_metric(name, m.get(name)))


# Both output counts in one narrow column, for the rich table only.
_NAN_INF_OUT = _MetricField(
    Col("nan_out/inf_out", "NaN/Inf out"),
    lambda m: f"{format_metric('nan_out', m.get('nan_out'))}/{format_metric('inf_out', m.get('inf_out'))}",
)


def _fields(*names: str) -> list[_MetricField]:
    return [_metric_field(n) for n in names]


# "full": plain and markdown (every metric); "wide" / "compact": the rich table, wide if it fits.
_METRIC_FIELDS: dict[str, dict[str, list[_MetricField]]] = {
    "full": {"rows": _fields(*METRICS), "ranking": _fields(*METRICS)},
    "wide": {
        "rows": [
            *_fields("sqnr_db", "nsr", "mse", "max_abs_err", "mean_abs_err", "cosine", "clipped_frac", "flushed_frac"),
            _NAN_INF_OUT,
        ],
        "ranking": _fields("sqnr_db", "nsr", "mse", "max_abs_err", "cosine", "clipped_frac", "flushed_frac"),
    },
    "compact": {
        "rows": _fields("sqnr_db", "mse", "max_abs_err", "clipped_frac", "flushed_frac"),
        "ranking": _fields("sqnr_db", "mse", "max_abs_err", "clipped_frac", "flushed_frac"),
    },
}


def _tensor_labels(result: Result) -> dict[tuple[str, str], str]:
    """(file, name) -> the name shown; "file:name" only where one name occurs in several files."""
    keys = [(t.file, t.name) for t in _unique_tensors(result)]
    counts = Counter(name for _, name in keys)
    return {(f, n): f"{f}:{n}" if counts[n] > 1 else n for f, n in keys}


def _sections(result: Result, view: str, metric: str, detail: str) -> list[Section]:
    if view == "compare":
        return [_grid_section(result, metric), _ranking_section(result, detail)]
    return [_rows_section(result, detail), _aggregate_section(result, detail)]


def _rows_section(result: Result, detail: str) -> Section:
    labels = _tensor_labels(result)
    fields = _METRIC_FIELDS[detail]["rows"]
    describe = detail != "compact"  # dtype, shape and numel, when there is room
    cols = [Col("tensor", "tensor", right=False), Col("format", "format", right=False)]
    if describe:
        cols += [Col("dtype", "dtype", right=False), Col("shape", "shape"), Col("numel", "numel")]
    cols += [f.col for f in fields]
    rows = []
    for row in result.rows:
        t = row.tensor
        cells = [labels[(t.file, t.name)], row.format]
        if describe:
            cells += [t.dtype, _shape_text(t.shape) or "()", str(t.numel)]
        rows.append(cells + [f.text(row.metrics) for f in fields])
    return Section("per tensor x format", cols, rows)


def _aggregate_section(result: Result, detail: str) -> Section:
    fields = _METRIC_FIELDS[detail]["rows"]
    counts = detail != "compact"  # tensors and numel, when there is room
    cols = [Col("format", "format", right=False), Col("bits_per_value", "bits/value")]
    if counts:
        cols += [Col("tensors", "tensors"), Col("numel", "numel")]
    cols += [f.col for f in fields]
    rows = []
    for a in result.aggregates:
        cells = [a.format, _bits_text(a.bits_per_value)]
        if counts:
            cells += [str(a.tensors), str(a.numel)]
        rows.append(cells + [f.text(a.metrics) for f in fields])
    return Section("aggregate per format (numel-weighted over all tensors)", cols, rows)


def _grid_section(result: Result, metric: str) -> Section:
    """One row per tensor, one column per format: ``metric``, the best format per tensor marked."""
    labels = _tensor_labels(result)
    by_tensor: dict[tuple[str, str], dict[str, Row]] = {}
    for row in result.rows:
        by_tensor.setdefault((row.tensor.file, row.tensor.name), {})[row.format] = row
    higher = METRICS[metric].higher_is_better  # None: a count or fraction, no "best"
    rows, best = [], set()
    for i, (key, per_format) in enumerate(by_tensor.items()):
        values = [per_format[f].metrics.get(metric) if f in per_format else None for f in result.formats]
        rows.append([labels[key], *(format_metric(metric, v) for v in values)])
        scored = [v for v in values if v is not None and not math.isnan(v)]
        if higher is None or len(result.formats) < 2 or not scored:
            continue
        top = max(scored) if higher else min(scored)
        best |= {(i, j + 1) for j, v in enumerate(values) if v == top}  # ties are all best
    cols = [Col("tensor", "tensor", right=False), *(Col(f, f) for f in result.formats)]
    return Section(f"{METRICS[metric].label} per tensor", cols, rows, best)


def _ranking_section(result: Result, detail: str) -> Section:
    fields = _METRIC_FIELDS[detail]["ranking"]
    ranked: list[Aggregate] = sorted(result.aggregates, key=lambda a: (a.rank <= 0, a.rank))  # unranked last
    cols = [
        Col("rank", "rank"),
        Col("format", "format", right=False),
        Col("bits_per_value", "bits/value"),
        *(f.col for f in fields),
    ]
    rows = [
        [_rank_text(a.rank), a.format, _bits_text(a.bits_per_value), *(f.text(a.metrics) for f in fields)]
        for a in ranked
    ]
    return Section("ranking (aggregate over all tensors, 1 = best)", cols, rows)


def _rank_text(rank: int) -> str:
    return str(rank) if rank > 0 else "-"  # 0: not ranked


def _skipped_line(result: Result, first: int = 3) -> str | None:
    if not result.skipped:
        return None
    named = ", ".join(f"{s.name} ({s.reason})" for s in result.skipped[:first])
    more = len(result.skipped) - first
    return f"skipped {_plural(len(result.skipped), 'tensor')}: {named}" + (f", and {more} more" if more > 0 else "")


# --- the human tables, laid out ------------------------------------------------------------------

_BEST_STYLE = "bold green"
_MIN_NAME_WIDTH = 12


def _rich(result: Result, view: str, metric: str, width: int) -> str:
    tables = [rich_table(s) for s in _sections(result, view, metric, "wide")]
    if max(_table_width(t, "maximum") for t in tables) > width:
        tables = [rich_table(s) for s in _sections(result, view, metric, "compact")]
        # Narrower than even the compact table: overflow (the terminal wraps) rather than crop numbers.
        width = max(width, *(_table_width(t, "minimum") for t in tables))
    console = Console(
        file=io.StringIO(),
        width=width,
        force_terminal=True,
        color_system="standard",
        highlight=False,
        emoji=False,
        legacy_windows=False,
    )
    for i, table in enumerate(tables):
        if i:
            console.print()
        console.print(table)
    skipped = _skipped_line(result)
    if skipped:
        console.print(Text(skipped, style="dim"))
    return console.file.getvalue()


def _table_width(table: Table, which: str) -> int:
    """The table's natural ("maximum") or narrowest ("minimum") width, unconstrained by a terminal."""
    console = Console(file=io.StringIO(), width=100_000)
    return getattr(Measurement.get(console, console.options, table), which)


def rich_table(section: Section) -> Table:
    title = section.title + (f" (best in {_BEST_STYLE})" if section.best else "")
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        header_style="bold",
    )
    for j, col in enumerate(section.cols):
        longest = max([len(col.label)] + [len(cells[j]) for cells in section.rows])
        # Never shorten a number, and keep names legible: when the terminal is too narrow, names
        # fold onto several lines (a truncated tensor name is a wrong name) and numbers stay whole.
        table.add_column(
            col.label,
            justify="right" if col.right else "left",
            overflow="fold",
            no_wrap=col.right,
            min_width=longest if col.right else min(longest, _MIN_NAME_WIDTH),
        )
    for i, cells in enumerate(section.rows):
        # Text, not markup: a name such as "layers[0]" must not be read as a style.
        table.add_row(*(Text(c, style=_BEST_STYLE if (i, j) in section.best else "") for j, c in enumerate(cells)))
    return table


def _marked(section: Section, i: int, j: int, cell: str) -> str:
    return cell + "*" if (i, j) in section.best else cell


def plain_sections(sections: list[Section], skipped: str | None) -> str:
    """Whitespace-aligned columns for awk / grep: one header line, no cell contains a space."""
    blocks = []
    for s in sections:
        grid = [[c.key for c in s.cols]]
        grid += [[_no_space(_marked(s, i, j, c)) for j, c in enumerate(cells)] for i, cells in enumerate(s.rows)]
        widths = [max(len(r[j]) for r in grid) for j in range(len(s.cols))]
        blocks.append("\n".join(_plain_line(r, widths, s.cols) for r in grid))
    if skipped:
        blocks.append(f"# {skipped}")  # a comment line, easy to drop with grep -v '^#'
    return "\n\n".join(blocks) + "\n"


def _plain_line(cells: list[str], widths: list[int], cols: list[Col]) -> str:
    padded = (c.rjust(w) if col.right else c.ljust(w) for c, w, col in zip(cells, widths, cols, strict=True))
    return "  ".join(padded).rstrip()


def _no_space(cell: str) -> str:
    return re.sub(r"\s", "_", cell) or "-"


def markdown_sections(sections: list[Section], skipped: str | None) -> str:
    blocks = []
    for s in sections:
        title = s.title + (" (* = best)" if s.best else "")
        lines = [f"### {title[0].upper()}{title[1:]}", ""]
        lines.append("| " + " | ".join(_md_cell(c.label) for c in s.cols) + " |")
        lines.append("|" + "|".join("---:" if c.right else ":---" for c in s.cols) + "|")
        for i, cells in enumerate(s.rows):
            lines.append("| " + " | ".join(_md_cell(_marked(s, i, j, c)) for j, c in enumerate(cells)) + " |")
        blocks.append("\n".join(lines))
    if skipped:
        blocks.append(skipped[0].upper() + skipped[1:] + ".")
    return "\n\n".join(blocks) + "\n"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# --- lines for stderr ---------------------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _si(n: float, unit: str = "") -> str:
    """3200000 -> "3.2 M", 12800000 bytes -> "12.8 MB" (decimal prefixes)."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= factor:
            return f"{n / factor:.3g} {prefix}{unit}"
    return f"{n:.0f} {unit}".rstrip()


def _itemsize(dtype: str) -> int | None:
    import torch  # only here: the size of a dtype named by its torch name ("bfloat16")

    dt = getattr(torch, dtype, None)
    return dt.itemsize if isinstance(dt, torch.dtype) else None


def summary_line(result: Result) -> str:
    """One line for stderr: what was analysed, how long it took, what was skipped."""
    tensors = _unique_tensors(result)
    numel = sum(t.numel for t in tensors)
    sizes = [_itemsize(t.dtype) for t in tensors]
    size = [f"{_si(numel)} elements"]
    if None not in sizes:  # an unknown dtype would make the byte count a guess
        size.append(_si(sum(t.numel * s for t, s in zip(tensors, sizes, strict=True)), "B"))
    seconds = f"{result.elapsed_s:.1f} s" if result.elapsed_s >= 0.1 else f"{result.elapsed_s * 1000:.0f} ms"
    line = (
        f"{_plural(len(tensors), 'tensor')} ({', '.join(size)}) x {_plural(len(result.formats), 'format')} in {seconds}"
    )
    if result.skipped:
        reasons = Counter(s.reason for s in result.skipped)
        why = ", ".join(r if len(reasons) == 1 else f"{n} {r}" for r, n in reasons.items())
        line += f"; skipped {_plural(len(result.skipped), 'tensor')} ({why})"
    return line


def violations_text(result: Result) -> str:
    """One line per gate violation (no trailing newline); "" when every gate passed."""
    lines = []
    for v in result.violations:
        higher = METRICS[v.metric].higher_is_better if v.metric in METRICS else None
        label = METRICS[v.metric].label if v.metric in METRICS else v.metric
        if math.isnan(v.value) or higher is None:
            verdict = "fails the limit"
        else:
            verdict = "is below the minimum" if higher else "is above the maximum"
        lines.append(
            f"violation: {v.tensor} @ {v.format}: {label} {format_metric(v.metric, v.value)} {verdict}"
            f" {format_metric(v.metric, v.limit)}"
        )
    return "\n".join(lines)


# --- files --------------------------------------------------------------------------------------


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temp file in the same directory and ``os.replace``.

    An interrupted or failed write leaves ``path`` as it was and no temp file behind (DESIGN
    principle 10). A failure raises the ``OSError`` unchanged, for the caller to name the option.
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise
