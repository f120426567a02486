"""The ``fqtool`` command line (Typer): one short function per command; numbers come from
``fqtool.analysis`` and are shown by ``fqtool.render``. Exit codes: 0 ok, 1 a --min-snr /
--max-mse gate was violated, 2 bad usage or input (one line on stderr; the traceback only with
FQTOOL_DEBUG=1)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

import kernels

from . import analysis, batch, describe, hist, lossplot, outliers, render, report, sweep
from .errors import EXIT_VIOLATION, UsageError
from .metrics import METRICS
from .options import (
    Backend,
    Device,
    Exclude,
    Include,
    MaxMse,
    MinSnr,
    Output,
    OutputFormat,
    ProgressOnStderr,
    Quiet,
    Top,
    emit,
    err,
    handle_errors,
    output_format_for,
    split_list,
    stdout_is_terminal,
)
from .samples import sample_dir

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Quantization-error analysis for low-precision formats (MXFP8/6/4, HiFloat8/4, NVFP4, NF4, FP8, ...).",
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)

# "\b" keeps click from re-wrapping the definition lines into one paragraph.
_METRIC_HELP = (
    "Metrics (x input, q fake-quantized, d = q - x; sums over the elements where x and q are finite):\n\n\b\n"
    + "\n".join(f"{m.name:13s} {m.formula}" for m in METRICS.values())
)


def _run_analysis(
    command: str,
    paths: list[str],
    formats: list[str],
    *,
    view: str,
    metric: str,
    include,
    exclude,
    device: str,
    output_format: str | None,
    output: Path | None,
    top: int | None,
    quiet: bool,
    min_snr: float | None,
    max_mse: float | None,
    backend: str,
) -> None:
    fmt = output_format_for(output_format, output)
    if metric not in METRICS:
        raise UsageError(f"--metric {metric!r}: use one of {', '.join(METRICS)}")
    progress = ProgressOnStderr(enabled=not quiet)
    try:
        result = analysis.run(
            command,
            paths,
            formats,
            device=device,
            include=split_list(include),
            exclude=split_list(exclude),
            min_snr=min_snr,
            max_mse=max_mse,
            backend=backend,
            progress=progress,
        )
    finally:
        progress.close()
    shown = analysis.worst_tensors(result, top) if top else result
    plain = output is not None or not stdout_is_terminal()
    width = None if plain else shutil.get_terminal_size().columns
    emit(render.render(shown, fmt, view=view, metric=metric, plain=plain, width=width), output)
    if not quiet:
        err(render.summary_line(result))
    if result.violations:
        err(render.violations_text(result))
        raise typer.Exit(EXIT_VIOLATION)


@app.callback()
def _root() -> None:
    """Quantization-error analysis for low-precision formats."""


@app.command(help="One row per tensor x format: how much error each format introduces.\n\n" + _METRIC_HELP)
@handle_errors
def analyze(
    paths: Annotated[
        list[str],
        typer.Argument(
            metavar="PATH",
            help="Files or directories: .safetensors (or a sharded *.safetensors.index.json), .pt/.pth/.bin, .npy.",
        ),
    ],
    format: Annotated[
        list[str] | None,
        typer.Option(
            "--format", "-f", metavar="F", help="A format (repeatable, or a,b,c); `fqtool formats` lists them."
        ),
    ] = None,
    include: Include = None,
    exclude: Exclude = None,
    device: Device = "auto",
    output_format: OutputFormat = None,
    output: Output = None,
    top: Top = None,
    quiet: Quiet = False,
    min_snr: MinSnr = None,
    max_mse: MaxMse = None,
    backend: Backend = "auto",
) -> None:
    formats = split_list(format)
    if not formats:
        raise UsageError("give at least one --format (e.g. --format mxfp8_e4m3); `fqtool formats` lists them")
    _run_analysis(
        "analyze", paths, formats, view="analyze", metric="sqnr_db", include=include, exclude=exclude,
        device=device, output_format=output_format, output=output, top=top, quiet=quiet, min_snr=min_snr,
        max_mse=max_mse, backend=backend,
    )  # fmt: skip


DEFAULT_COMPARE = "mxfp8_e4m3,mxfp6_e2m3,mxfp4_e2m1,nvfp4,nf4,hif8,hifx4_v12"


@app.command(
    help="The formats side by side for each tensor and in aggregate, ranked by SQNR. "
    "With no PATH it runs on the bundled sample tensors.\n\n" + _METRIC_HELP
)
@handle_errors
def compare(
    paths: Annotated[
        list[str] | None,
        typer.Argument(metavar="PATH", help="Files or directories (as for analyze); default: the sample tensors."),
    ] = None,
    formats: Annotated[
        str, typer.Option("--formats", "-F", metavar="A,B,...", help="Comma-separated formats to compare.")
    ] = DEFAULT_COMPARE,
    metric: Annotated[
        str, typer.Option("--metric", "-m", metavar="METRIC", help="The metric in the per-tensor grid.")
    ] = "sqnr_db",
    include: Include = None,
    exclude: Exclude = None,
    device: Device = "auto",
    output_format: OutputFormat = None,
    output: Output = None,
    top: Top = None,
    quiet: Quiet = False,
    min_snr: MinSnr = None,
    max_mse: MaxMse = None,
    backend: Backend = "auto",
) -> None:
    _run_analysis(
        "compare", list(paths or [str(sample_dir())]), split_list([formats]), view="compare", metric=metric,
        include=include, exclude=exclude, device=device, output_format=output_format, output=output, top=top,
        quiet=quiet, min_snr=min_snr, max_mse=max_mse, backend=backend,
    )  # fmt: skip


@app.command()
@handle_errors
def formats(output_format: OutputFormat = None, output: Output = None) -> None:
    """List every format with its resolved rules and bits per value."""
    fmt = output_format_for(output_format, output)
    plain = output is not None or not stdout_is_terminal()
    emit(describe.render_records(describe.format_records(), fmt, title="formats", plain=plain), output)


@app.command()
@handle_errors
def explain(
    format: Annotated[
        str, typer.Argument(metavar="FORMAT", help="A format string, e.g. mxfp4_e2m1 or mxfp8_e4m3:block=16.")
    ],
    output_format: Annotated[
        str, typer.Option("--output-format", "-o", metavar="FORMAT", help="text or json.")
    ] = "text",
) -> None:
    """A format's rules, options, element constants and representable values."""
    try:
        doc = describe.explain(format)
    except kernels.FormatError as e:  # an unknown name or bad option, with close matches
        raise UsageError(f"format {format!r}: {e}") from e
    if output_format == "json":
        import json

        emit(json.dumps(doc, indent=2) + "\n", None)
    elif output_format == "text":
        emit(describe.explain_text(doc), None)
    else:
        raise UsageError(f"--output-format {output_format!r}: use text or json")


@app.command()
@handle_errors
def env(output_format: OutputFormat = None) -> None:
    """Versions, devices and the kernel backends usable here."""
    fmt = output_format_for(output_format, None)
    emit(
        describe.render_records(describe.env_records(), fmt, title="environment", plain=not stdout_is_terminal()), None
    )


# Commands that live in their own modules: each module's register(app) adds them.
for _module in (hist, sweep, outliers, lossplot, report, batch):
    _module.register(app)


def main() -> None:
    app(prog_name="fqtool")
