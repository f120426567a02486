"""What every fqtool command shares: option types (declared once, so a flag means the same
everywhere), error-to-exit-code mapping, and writing data to stdout or a file.

A command module defines ``register(app)`` adding its commands to the Typer app, decorates each
command with :func:`handle_errors`, and takes its options from here.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from . import render
from .errors import EXIT_ERROR, FqtoolError, UsageError

# Options shared by the commands: declared once.
Include = Annotated[
    list[str] | None,
    typer.Option(
        "--include", "-i", metavar="GLOB", help="Only tensors whose name matches this glob (repeatable, or a,b,c)."
    ),
]
Exclude = Annotated[
    list[str] | None,
    typer.Option(
        "--exclude", "-x", metavar="GLOB", help="Skip tensors whose name matches this glob (repeatable, or a,b,c)."
    ),
]
Device = Annotated[
    str,
    typer.Option("--device", "-d", metavar="DEVICE", help="cpu, cuda, cuda:N, npu or auto (cuda, else npu, else cpu)."),
]
OutputFormat = Annotated[
    str | None,
    typer.Option(
        "--output-format",
        "-o",
        metavar="FORMAT",
        help="table, json, csv or markdown [default: table; with --output, from its suffix].",
    ),
]
Output = Annotated[
    Path | None,
    typer.Option("--output", metavar="FILE", help="Write the result to this file (atomically) instead of stdout."),
]
Top = Annotated[
    int | None, typer.Option("--top", min=1, metavar="N", help="Show only the N worst tensors (lowest SQNR).")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary on stderr.")]
MinSnr = Annotated[
    float | None,
    typer.Option("--min-snr", metavar="DB", help="CI gate: exit 1 when any tensor x format has SQNR below this (dB)."),
]
MaxMse = Annotated[
    float | None,
    typer.Option("--max-mse", metavar="X", help="CI gate: exit 1 when any tensor x format has MSE above this."),
]
Backend = Annotated[
    str,
    typer.Option(
        "--backend",
        metavar="NAME",
        help="Kernel backend: auto, reference, cpu-fast, triton, compile (see `fqtool env`).",
    ),
]

SUFFIX_FORMATS = {".json": "json", ".csv": "csv", ".md": "markdown", ".markdown": "markdown"}


def handle_errors(fn):
    """Map FqtoolError (and anything unexpected) to one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except FqtoolError as e:
            if os.environ.get("FQTOOL_DEBUG"):
                raise
            err(f"fqtool: error: {e}")
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err("fqtool: interrupted")
            raise typer.Exit(130) from None
        except Exception as e:  # noqa: BLE001 - an internal error still gets one line and exit 2
            if os.environ.get("FQTOOL_DEBUG"):
                raise
            err(f"fqtool: internal error: {type(e).__name__}: {e} (run with FQTOOL_DEBUG=1 for the traceback)")
            raise typer.Exit(EXIT_ERROR) from None

    return wrapper


def err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def split_list(values: list[str] | None) -> list[str]:
    """Repeatable options that also take comma-separated lists."""
    out: list[str] = []
    for v in values or []:
        out.extend(p.strip() for p in v.split(",") if p.strip())
    return out


def output_format_for(output_format: str | None, output: Path | None) -> str:
    if output_format is None:
        return SUFFIX_FORMATS.get(output.suffix.lower(), "table") if output else "table"
    fmt = output_format.strip().lower()
    if fmt not in render.FORMATS:
        raise UsageError(f"--output-format {output_format!r}: use one of {', '.join(render.FORMATS)}")
    return fmt


def emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        try:
            render.write_atomic(output, text)
        except OSError as e:
            raise UsageError(f"--output {output}: cannot write it ({e.strerror or e}); nothing was written") from e


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


class ProgressOnStderr:
    """A rich progress bar on stderr (tensors, bytes, rate, ETA), shown only on a terminal and
    only once a run has taken longer than ``delay_s``: short runs print nothing."""

    def __init__(self, enabled: bool, delay_s: float = 1.0):
        self.enabled = enabled and sys.stderr.isatty()
        self.delay_s = delay_s
        self.t0 = time.perf_counter()
        self.bar = None
        self.task = None

    def __call__(self, done: int, total: int, bytes_done: int, bytes_total: int, name: str) -> None:
        if not self.enabled or done >= total:
            self.close()
            return
        if self.bar is None:
            if time.perf_counter() - self.t0 < self.delay_s:
                return
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task("", total=bytes_total)
        self.bar.update(self.task, completed=bytes_done, description=f"tensor {done + 1}/{total} {name[-40:]}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


class TensorLines:
    """Progress as one stderr line per tensor (``command: tensor 3/40 name``), on a terminal only."""

    def __init__(self, command: str, enabled: bool):
        self.command = command
        self.enabled = enabled and sys.stderr.isatty()

    def __call__(self, done: int, total: int, name: str) -> None:
        if self.enabled:
            err(f"{self.command}: tensor {done + 1}/{total} {name}")
