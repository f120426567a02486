"""The ``fqtool`` command line (Typer)."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

import kernels

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Quantization-error analysis for low-precision formats."
)


@app.callback()
def _root() -> None:
    """Quantization-error analysis for low-precision formats."""


@app.command()
def formats() -> None:
    """List every format with its resolved rules and bits per value."""
    table = Table("format", "element", "block", "axis", "scale", "rounding", "bits/value")
    table.columns[0].no_wrap = True
    for spec in kernels.list_formats():
        r = spec.rules()
        table.add_row(str(spec), r.element, r.block, r.axis, r.scale, r.rounding, f"{r.bits_per_value:.4g}")
    Console().print(table)


def main() -> None:
    app()
