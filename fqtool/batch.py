"""``fqtool batch``: the seed's test_dtype_batch.sh tables (seed-utilities.md section 2) over a tree of
fake_quant_ops dump files: one table per pass (FORWARD / BACKWARD), a row per format, a column per
tensor kind (input, weight, query, ...), each cell the metric of one layer or aggregated over a
layer range.

Unlike the seed, every file counts: dumps of the same pass, kind and layers from several ranks,
iterations, groups or timestamps are aggregated explicitly (mean, median, min, max or the
numel-weighted "pooled" aggregate of ``compare``) and each cell says how many files it holds;
the seed's associative array kept only the last one. Files whose names (or embedded metadata)
lack a layer, a pass or a tensor kind are skipped and listed. Per-file values stay in the JSON
("samples"), the counterpart of the seed's per-run logs.

The numbers come from ``fqtool.analysis`` (per file) and ``fqtool.metrics`` (the pooled
aggregate); this module only selects, groups and lays them out.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

import fqtool

from . import analysis, metrics, render
from .errors import InputError, UsageError
from .io import scan
from .metrics import METRICS
from .options import (
    Backend,
    Device,
    Exclude,
    Include,
    Output,
    OutputFormat,
    ProgressOnStderr,
    Quiet,
    emit,
    err,
    handle_errors,
    output_format_for,
    split_list,
    stdout_is_terminal,
)
from .results import Result, Row

SCHEMA = "fqtool.batch/1"

#: The seed's formats (HiF8, MXFP8 E4M3 / E5M2) plus the 4-bit ones its tables left out (section 2, Fix).
DEFAULT_FORMATS = "hif8,mxfp8_e4m3,mxfp8_e5m2,mxfp4_e2m1,nvfp4,hifx4_v12"

PASSES = ("forward", "backward")

#: Column order: the saver's tensor names (section 0.2), forward ones first; others follow alphabetically.
KIND_ORDER = (
    "input",
    "weight",
    "output",
    "query",
    "key",
    "value",
    "attention_weights",
    "attention_probs",
    "matmul_input_buffer",
    "batch1",
    "batch2",
    "input_A_quantized",
    "input_B_quantized",
    "grad_output",
    "grad_input",
    "grad_input_A",
    "grad_input_B",
    "grad_attention_probs",
    "grad_query",
    "grad_key",
    "grad_value",
    "grad_matmul_input_buffer",
    "grad_batch1",
    "grad_batch2",
)

#: The name fields a cell aggregates over, listed in its JSON ("over").
OVER_FIELDS = ("layer", "rank", "iteration", "group", "layer_type", "phase", "component")


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


#: How a cell's files are combined. The first four take each file's metric value; "pooled" is
#: fqtool's numel-weighted aggregate over the files' tensors (``metrics.aggregate``), as in compare.
AGGREGATES: dict[str, Callable[[Sequence[float]], float] | None] = {
    "mean": _mean,
    "median": statistics.median,
    "min": min,
    "max": max,
    "pooled": None,
}

# --- layers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layers:
    """A --layers selection: "all", "3", "1-16" or a list such as "1,3,8-12"."""

    text: str
    layers: frozenset[int] | None  # None: every layer

    def __contains__(self, layer: int) -> bool:
        return self.layers is None or layer in self.layers


def parse_layers(text: str) -> Layers:
    text = text.strip()
    if text.lower() == "all":
        return Layers("all", None)
    layers: set[int] = set()
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            a, b = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise UsageError(f"--layers {text!r}: use all, a layer (3), a range (1-16) or a list (1,3,8-12)") from None
        if a < 0 or b < a:
            raise UsageError(f"--layers {text!r}: {part.strip()!r} is not a range of layers (low-high, low <= high)")
        layers.update(range(a, b + 1))
    return Layers(text, frozenset(layers))


# --- selecting the dump files ------------------------------------------------------------------------


@dataclass(frozen=True)
class Skip:
    file: str
    name: str
    reason: str


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def classify(meta: dict) -> tuple[str | None, str | None, int | None, str | None]:
    """(pass, kind, layer, why not usable) from a tensor's dump fields."""
    op = str(meta.get("operation", "")).lower() or None
    kind = meta.get("tensor_name") if isinstance(meta.get("tensor_name"), str) else None
    layer = _as_int(meta.get("layer"))
    if not meta:
        return None, None, None, "not a fake_quant_ops dump name"
    if op not in PASSES:
        return op, kind, layer, "no pass (forward/backward)" if op is None else f"pass {op!r} is not forward/backward"
    if layer is None:
        return op, kind, None, "no layer (_L<n>_)"
    if not kind:
        return op, None, layer, "no tensor kind"
    return op, kind, layer, None


def select(paths: Sequence[str], layers: Layers, include, exclude) -> tuple[list[str], list[Skip], int]:
    """The dump files to analyse, the ones skipped (and why), and how many lie outside ``layers``."""
    sources, skipped = scan(paths, include, exclude)
    files: dict[str, None] = {}  # ordered, each file once
    skips, outside = [Skip(s.file, s.name, s.reason) for s in skipped], 0
    for src in sources:
        _, _, layer, why = classify(src.meta)
        if why:
            skips.append(Skip(src.file, src.name, why))
        elif layer not in layers:
            outside += 1
        else:
            files[src.file] = None
    return list(files), skips, outside


# --- the tables -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    value: float
    n: int  # files aggregated (those with a number for the metric)
    over: dict[str, list]  # name field -> its distinct values among those files


@dataclass(frozen=True)
class Table:
    pass_: str
    quant_type: str | None  # set when the tree holds dumps of several quant types: one table each
    formats: tuple[str, ...]
    kinds: tuple[str, ...]
    cells: dict[tuple[str, str], Cell]  # (format, kind) -> cell

    @property
    def uniform_n(self) -> int | None:
        ns = {c.n for c in self.cells.values()}
        return ns.pop() if len(ns) == 1 else None


@dataclass(frozen=True)
class Batch:
    inputs: tuple[str, ...]
    device: str
    formats: tuple[str, ...]
    metric: str
    aggregate: str
    layers: str
    tables: tuple[Table, ...]
    rows: tuple[Row, ...]  # every file x format analysed
    skipped: tuple[Skip, ...] = ()
    outside: int = 0  # usable files left out by --layers
    elapsed_s: float = 0.0


def _kind_key(kind: str) -> tuple[int, str]:
    return (KIND_ORDER.index(kind), "") if kind in KIND_ORDER else (len(KIND_ORDER), kind)


def _values(rows: Sequence[Row], metric: str, how: str) -> tuple[float, int]:
    """(the aggregated value, the files it counts): NaN per-file values are left out."""
    if how == "pooled":
        used = [r for r in rows if not math.isnan(r.metrics[metric])]
        value = metrics.aggregate([r.metrics for r in used], [r.tensor.numel for r in used])[metric]
        return value, len(used)
    values = [float(r.metrics[metric]) for r in rows if not math.isnan(r.metrics[metric])]
    return (AGGREGATES[how](values) if values else math.nan), len(values)


def _over(rows: Sequence[Row]) -> dict[str, list]:
    out = {}
    for name in OVER_FIELDS:
        values = {r.tensor.meta[name] for r in rows if name in r.tensor.meta}
        if values:
            out[name] = sorted(values, key=lambda v: (isinstance(v, str), v))
    return out


def pivot(result: Result, metric: str, how: str) -> list[Table]:
    """Group the rows by (pass, [quant type,] kind, format) and aggregate each group's files."""
    groups: dict[tuple[str, str | None], dict[tuple[str, str], list[Row]]] = {}
    split = len({r.tensor.meta.get("quant_type") for r in result.rows}) > 1
    for r in result.rows:
        op, kind, _, why = classify(r.tensor.meta)
        if why:  # select() let only usable files through; a dump's embedded metadata cannot change that
            continue
        key = (op, r.tensor.meta.get("quant_type") if split else None)
        groups.setdefault(key, {}).setdefault((r.format, kind), []).append(r)
    tables = []
    for (op, qt), cells in sorted(groups.items(), key=lambda kv: (PASSES.index(kv[0][0]), str(kv[0][1]))):
        kinds = tuple(sorted({k for _, k in cells}, key=_kind_key))
        out = {}
        for key, rows in cells.items():
            value, n = _values(rows, metric, how)
            out[key] = Cell(value, n, _over(rows))
        tables.append(Table(op, qt, result.formats, kinds, out))
    return tables


def run(
    paths: Sequence[str],
    formats: Sequence[str],
    *,
    layers: str = "all",
    metric: str = "nsr",
    aggregate: str = "mean",
    device: str = "cpu",
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    backend: str = "auto",
    progress=None,
) -> Batch:
    """Select the dump files under ``paths``, analyse them in every format, pivot."""
    t0 = time.perf_counter()
    if metric not in METRICS:
        raise UsageError(f"--metric {metric!r}: use one of {', '.join(METRICS)}")
    if aggregate not in AGGREGATES:
        raise UsageError(f"--aggregate {aggregate!r}: use one of {', '.join(AGGREGATES)}")
    sel = parse_layers(layers)
    analysis.parse_formats(formats)  # an unknown format fails before any file is read
    files, skips, outside = select(paths, sel, include, exclude)
    if not files:
        raise InputError(_nothing_message(paths, sel, skips, outside))
    result = analysis.run(
        "analyze", files, formats, device=device, include=include, exclude=exclude, backend=backend,
        progress=progress,
    )  # fmt: skip
    return Batch(
        inputs=tuple(str(p) for p in paths),
        device=result.device,
        formats=result.formats,
        metric=metric,
        aggregate=aggregate,
        layers=sel.text,
        tables=tuple(pivot(result, metric, aggregate)),
        rows=result.rows,
        skipped=tuple(skips),
        outside=outside,
        elapsed_s=time.perf_counter() - t0,
    )


def _nothing_message(paths, sel: Layers, skips: Sequence[Skip], outside: int) -> str:
    where = ", ".join(str(p) for p in paths)
    if outside:
        return (
            f"{where}: no dump file of layers {sel.text} ({outside} usable files lie outside it); "
            "choose other --layers, or --layers all"
        )
    return (
        f"{where}: no fake_quant_ops dump file with a layer, a pass (forward/backward) and a tensor kind in its name "
        f"({_skipped_text(skips)}); batch reads files named like "
        "20250101_000000_iter000_linear_L1_forward_pre_linear_bf16_rank00_input.pt"
    )


def _skipped_text(skips: Sequence[Skip], first: int = 3) -> str:
    named = ", ".join(f"{s.name} ({s.reason})" for s in skips[:first])
    more = len(skips) - first
    return f"skipped {len(skips)} file(s): {named}" + (f" and {more} more" if more > 0 else "")


# --- rendering --------------------------------------------------------------------------------------


def _title(b: Batch, t: Table) -> str:
    layers = "all layers" if b.layers == "all" else f"layers {b.layers}"
    what = f"{METRICS[b.metric].label} ({b.metric}), {b.aggregate} over {layers}"
    qt = f", dumps of {t.quant_type}" if t.quant_type else ""
    n = t.uniform_n
    return f"{t.pass_.upper()}{qt}: {what}" + (f", {n} file(s) per cell" if n is not None else ", (n) files per cell")


def _cell_text(b: Batch, t: Table, key: tuple[str, str], sep: str) -> str:
    c = t.cells.get(key)
    if c is None:
        return "-"
    text = render.format_metric(b.metric, c.value)
    return text if t.uniform_n is not None else f"{text}{sep}(n={c.n})"


def _number(value: float) -> str:
    return repr(float(value))  # full precision; inf, -inf, nan


CSV_HEADER = ("pass", "quant_type", "format", "kind", "metric", "aggregate", "value", "n", *OVER_FIELDS)


def to_csv(b: Batch) -> str:
    """Long form: one line per table cell; the name fields it aggregates as ;-separated values."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_HEADER)
    for t in b.tables:
        for f in t.formats:
            for k in t.kinds:
                c = t.cells.get((f, k))
                if c is None:
                    continue
                over = [";".join(str(v) for v in c.over.get(name, [])) for name in OVER_FIELDS]
                w.writerow([t.pass_, t.quant_type or "", f, k, b.metric, b.aggregate, _number(c.value), c.n, *over])
    return out.getvalue()


def to_json(b: Batch) -> dict:
    """The "fqtool.batch/1" document (see the README); non-finite floats as "inf" / "-inf" / "nan"."""
    doc = {
        "schema": SCHEMA,
        "fqtool_version": fqtool.__version__,
        "inputs": list(b.inputs),
        "device": b.device,
        "formats": list(b.formats),
        "metric": b.metric,
        "aggregate": b.aggregate,
        "layers": b.layers,
        "tables": [
            {
                "pass": t.pass_,
                "quant_type": t.quant_type,
                "kinds": list(t.kinds),
                "cells": [
                    {"format": f, "kind": k, "value": c.value, "n": c.n, "over": c.over}
                    for f in t.formats
                    for k in t.kinds
                    if (c := t.cells.get((f, k))) is not None
                ],
            }
            for t in b.tables
        ],
        "samples": [
            {
                "file": r.tensor.file,
                "tensor": r.tensor.name,
                "format": r.format,
                "pass": r.tensor.meta.get("operation"),
                "kind": r.tensor.meta.get("tensor_name"),
                **{name: r.tensor.meta.get(name) for name in ("layer", "rank", "iteration", "group", "quant_type")},
                "numel": r.tensor.numel,
                "value": r.metrics[b.metric],
            }
            for r in b.rows
        ],
        "skipped": [{"file": s.file, "name": s.name, "reason": s.reason} for s in b.skipped],
        "outside_layers": b.outside,
        "elapsed_s": b.elapsed_s,
    }
    return render.jsonable(doc)


def _grid(b: Batch, t: Table, sep: str) -> list[list[str]]:
    """The table as text: a header row (format, kinds...), then one row per format."""
    return [["format", *t.kinds]] + [[f, *(_cell_text(b, t, (f, k), sep) for k in t.kinds)] for f in t.formats]


def _markdown(title: str, grid: list[list[str]]) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(grid[0]) + " |", "|:---|" + "---:|" * (len(grid[0]) - 1)]
    return "\n".join(lines + ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in grid[1:]])


def _plain(title: str, grid: list[list[str]]) -> str:
    """Whitespace-aligned columns for awk (no cell has a space); the title is a comment line."""
    widths = [max(len(row[j]) for row in grid) for j in range(len(grid[0]))]
    lines = ["  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in grid]  # fmt: skip
    return f"# {title}\n" + "\n".join(x.rstrip() for x in lines)


def _rich(title: str, grid: list[list[str]]) -> str:
    table = RichTable(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for j, head in enumerate(grid[0]):
        table.add_column(head, justify="left" if j == 0 else "right", no_wrap=True)
    for row in grid[1:]:
        table.add_row(*(Text(c) for c in row))  # Text: a tensor kind is never read as markup
    console = Console(file=io.StringIO(), width=200, force_terminal=True, color_system="standard", highlight=False)
    console.print(Text(title, style="bold"))
    console.print(table)
    return console.file.getvalue().rstrip("\n")


def render_batch(b: Batch, output_format: str, plain: bool = False) -> str:
    """The tables as ``output_format`` (table, json, csv, markdown), ending in one newline; ``plain``:
    the table as whitespace-aligned columns (for pipes)."""
    if output_format == "json":
        return json.dumps(to_json(b), indent=2, allow_nan=False) + "\n"
    if output_format == "csv":
        return to_csv(b)
    if output_format == "markdown":
        blocks = [_markdown(_title(b, t), _grid(b, t, " ")) for t in b.tables]
    elif plain:
        blocks = [_plain(_title(b, t), _grid(b, t, "")) for t in b.tables]
    else:
        blocks = [_rich(_title(b, t), _grid(b, t, " ")) for t in b.tables]
    return "\n\n".join(blocks) + "\n"


def summary_line(b: Batch) -> str:
    files = len({r.tensor.file for r in b.rows})
    line = f"{files} dump file(s) x {len(b.formats)} format(s) in {b.elapsed_s:.1f} s"
    if b.outside:
        line += f"; {b.outside} outside --layers {b.layers} left out"
    if b.skipped:
        line += f"; {_skipped_text(b.skipped)}"
    return line


# --- the command --------------------------------------------------------------------------------------


def register(app: typer.Typer) -> None:
    @app.command(
        help="Pass x tensor-kind x format tables over a tree of fake_quant_ops dump files (the seed's "
        "test_dtype_batch.sh): one table per pass, a row per format, a column per tensor kind; each cell the "
        "metric aggregated over the files of the selected layers (every rank, iteration and group), with counts."
    )
    @handle_errors
    def batch(
        paths: Annotated[
            list[str], typer.Argument(metavar="PATH", help="Dump files or directories (searched recursively).")
        ],
        formats: Annotated[
            str, typer.Option("--formats", "-F", metavar="A,B,...", help="Comma-separated formats.")
        ] = DEFAULT_FORMATS,
        layers: Annotated[
            str,
            typer.Option(
                "--layers", "-l", metavar="SPEC", help="all, a layer (3), a range (1-16) or a list (1,3,8-12)."
            ),
        ] = "all",
        aggregate: Annotated[
            str,
            typer.Option(
                "--aggregate",
                "-a",
                metavar="HOW",
                help="mean, median, min, max, or pooled (numel-weighted, as compare).",
            ),
        ] = "mean",
        metric: Annotated[
            str,
            typer.Option(
                "--metric", "-m", metavar="METRIC", help="The metric in the cells (nsr = the seed's 'relative error')."
            ),
        ] = "nsr",
        include: Include = None,
        exclude: Exclude = None,
        device: Device = "auto",
        output_format: OutputFormat = None,
        output: Output = None,
        quiet: Quiet = False,
        backend: Backend = "auto",
    ) -> None:

        fmt = output_format_for(output_format, output)
        progress = ProgressOnStderr(enabled=not quiet)
        try:
            b = run(
                paths, split_list([formats]), layers=layers, metric=metric, aggregate=aggregate, device=device,
                include=split_list(include), exclude=split_list(exclude), backend=backend, progress=progress,
            )  # fmt: skip
        finally:
            progress.close()
        plain = output is not None or not stdout_is_terminal()
        emit(render_batch(b, fmt, plain=plain), output)
        if not quiet:
            err(summary_line(b))


__all__ = ["SCHEMA", "AGGREGATES", "Batch", "Table", "Cell", "parse_layers", "pivot", "run", "render_batch", "register"]
