"""``fqtool plot-loss``: training-loss curves of several runs over a baseline, the gap report, a CI gate.

The numbers come from :mod:`fqtool.losslog` (parse, smooth, gap); this module turns its
:class:`~fqtool.losslog.LossReport` into figure data (:func:`figure_data`, testable without pixels),
draws it (:func:`draw`), renders the report (:func:`render_report`) and registers the command.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

import fqtool

from . import losslog, plotting
from .errors import EXIT_VIOLATION, UsageError
from .losslog import LossReport
from .options import (
    Output,
    OutputFormat,
    Quiet,
    emit,
    err,
    handle_errors,
    output_format_for,
    split_list,
    stdout_is_terminal,
)

BASELINE_COLOR = "#000000"
RUN_COLORS = tuple(c for c in plotting.PALETTE if c != BASELINE_COLOR)
#: Figure sizes (inches) with the gap panel; without it plotting's SCREEN_SIZE / PAPER_SIZE.
SCREEN_SIZE_GAP = (8.0, 6.5)
PAPER_SIZE_GAP = (3.5, 3.4)


# --- figure data ----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Line:
    """One thing drawn: ``kind`` "line", "faint" (raw under a smoothed line), "markers" (validation)
    or "nonfinite" (ticks along the bottom at steps whose loss is NaN/Inf; ``y`` unused)."""

    panel: str  # "loss" or "gap"
    label: str | None  # the legend entry; None for none
    x: np.ndarray
    y: np.ndarray
    color: str
    kind: str = "line"


@dataclass(frozen=True)
class HLine:
    panel: str
    y: float
    label: str | None
    color: str
    style: str


@dataclass(frozen=True, eq=False)
class LossFigure:
    title: str
    xlabel: str
    ylabel: str
    gap_ylabel: str  # the gap panel plots 100 * (run - baseline) / |baseline|, smoothed when the curves are
    legend_title: str | None  # how the curves were smoothed
    log_y: bool
    xlim: tuple[float | None, float | None]
    lines: list[Line]
    hlines: list[HLine]
    gap_panel: bool
    validation: bool  # a "validation loss" legend entry for the markers

    def panel(self, name: str) -> list[Line]:
        return [ln for ln in self.lines if ln.panel == name]


def _fmt_window(steps: tuple[int | None, int | None]) -> str:
    lo, hi = steps
    return "" if lo is None and hi is None else f"{'' if lo is None else lo}:{'' if hi is None else hi}"


def smoothing_text(settings: losslog.Settings) -> str:
    if settings.smooth <= 1:
        return ""
    if settings.smooth_method == "ema":
        return f"EMA, span {settings.smooth} points"
    return f"moving average of {settings.smooth} points"


def figure_data(report: LossReport, *, log_y: bool = False, gap_panel: bool = True) -> LossFigure:
    """What the figure shows, as data: every line's x / y exactly as plotted (gap panel in percent)."""
    s = report.settings
    ratios = {g.run: g for g in report.gaps}
    lines: list[Line] = []
    colors: dict[str, str] = {}
    runs_seen = 0
    for c in report.curves:
        if c.role == "baseline":
            color = BASELINE_COLOR
        else:
            color = RUN_COLORS[runs_seen % len(RUN_COLORS)]
            runs_seen += 1
        colors[c.label] = color
        name = f"{c.label} (baseline)" if c.role == "baseline" else c.label
        g = ratios.get(c.label)
        if g is not None:
            name += f" ({g.mean_ratio:.4f}x)" if g.matched and math.isfinite(g.mean_ratio) else " (no matched steps)"
        if c.smoothed is not None:
            lines.append(Line("loss", None, c.raw.steps, c.raw.values, color, "faint"))
            lines.append(Line("loss", name, c.smoothed.steps, c.smoothed.values, color))
        else:
            lines.append(Line("loss", name, c.raw.steps, c.raw.values, color))
        if c.val is not None and len(c.val):
            lines.append(Line("loss", None, c.val.steps, c.val.values, color, "markers"))  # one legend entry
        bad = c.raw.steps[~np.isfinite(c.raw.values)]
        if len(bad):
            lines.append(Line("loss", f"{c.label}: NaN/Inf loss", bad, np.zeros(len(bad)), color, "nonfinite"))
    show_gap = gap_panel and report.baseline is not None and any(c.rel_gap is not None for c in report.curves)
    hlines: list[HLine] = []
    if show_gap:
        for c in report.curves:
            if c.rel_gap is None:
                continue
            color = colors[c.label]
            # colours as in the loss panel, whose legend names the runs; when smoothing, the smoothed gap
            # only (the raw one is noise that hides it; the table gives the raw numbers)
            g = c.rel_gap_smoothed if c.rel_gap_smoothed is not None else c.rel_gap
            lines.append(Line("gap", None, g.steps, 100 * g.values, color))
        hlines.append(HLine("gap", 0.0, None, "#808080", "-"))
        t = 100 * s.gap_threshold
        hlines += [HLine("gap", t, f"±{t:g}% threshold", "#808080", "--"), HLine("gap", -t, None, "#808080", "--")]
        if s.max_gap is not None:
            m = 100 * s.max_gap
            hlines += [HLine("gap", m, f"±{m:g}% --max-gap", "#D55E00", ":"), HLine("gap", -m, None, "#D55E00", ":")]

    title = "Training loss" if report.baseline is None else f"Training loss vs baseline {report.baseline}"
    window = _fmt_window(s.steps)
    if len(report.gaps) == 1:  # the seed's "Avg Ratio (a-b): r.rrrrx", for the one run
        g = report.gaps[0]
        where = f" (steps {window})" if window else ""
        title += (
            f"\nmean ratio{where}: {g.mean_ratio:.4f}x over {g.matched} matched steps"
            if g.matched
            else "\nno matched steps"
        )
    elif len(report.gaps) > 1:
        title += "\nmean ratio over matched steps in the legend" + (f" (steps {window})" if window else "")
    smoothing = smoothing_text(s)
    return LossFigure(
        title=title,
        xlabel="Iteration (step)",
        ylabel="Loss (log scale)" if log_y else "Loss",
        gap_ylabel="Gap, smoothed (%)" if smoothing else "Gap to baseline (%)",
        legend_title=f"{smoothing}; raw faint" if smoothing else None,
        log_y=log_y,
        xlim=_xlim(report),
        lines=lines,
        hlines=hlines,
        gap_panel=show_gap,
        validation=any(ln.kind == "markers" for ln in lines),
    )


def _xlim(report: LossReport) -> tuple[float | None, float | None]:
    """The step window; an open end at the data's first / last step (no margin before step 0)."""
    lo, hi = report.settings.steps
    firsts = [c.raw.steps[0] for c in report.curves if len(c.raw)]
    lasts = [c.raw.steps[-1] for c in report.curves if len(c.raw)]
    lo = lo if lo is not None else (min(firsts) if firsts else None)
    hi = hi if hi is not None else (max(lasts) if lasts else None)
    if lo is not None and hi is not None and lo == hi:  # one step: give the point some room
        return lo - 1, hi + 1
    return (None if lo is None else float(lo)), (None if hi is None else float(hi))


def _step_text(v: float, _pos=None) -> str:
    """Tick labels: 500, 12k, 1.5M."""
    for factor, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(v) >= 10 * factor or (abs(v) >= factor and suffix == "M"):
            return f"{v / factor:g}{suffix}"
    return f"{v:g}"


def draw(data: LossFigure, path: str | Path, *, paper: bool = False) -> Path:
    """Draw ``data`` and write it to ``path`` (.png / .pdf / .svg) atomically."""
    from matplotlib.ticker import AutoMinorLocator, FuncFormatter, LogFormatter, MaxNLocator

    with plotting.style(paper):
        if data.gap_panel:
            size = PAPER_SIZE_GAP if paper else SCREEN_SIZE_GAP
            fig, (ax, gx) = plotting.figure(
                paper, size=size, nrows=2, sharex=True, gridspec_kw={"height_ratios": [2.2, 1]}
            )
        else:
            fig, ax = plotting.figure(paper)
            gx = None
        fig.set_layout_engine("constrained")  # the axes fill the stated size; "tight" saving then trims little
        lw = 0.8 if paper else 1.2
        for ln in data.lines:
            target = ax if ln.panel == "loss" else gx
            if ln.kind == "faint":
                target.plot(ln.x, ln.y, color=ln.color, linewidth=lw * 0.6, alpha=0.25)
            elif ln.kind == "markers":
                target.plot(
                    ln.x, ln.y, linestyle="none", marker="o", markersize=2.5 if paper else 4,
                    markerfacecolor="white", markeredgecolor=ln.color, markeredgewidth=lw * 0.8,
                )  # fmt: skip
            elif ln.kind == "nonfinite":
                # at the bottom edge, whatever the y range: x in data units, y in axes units
                target.plot(
                    ln.x, np.zeros(len(ln.x)), linestyle="none", marker="x", markersize=3 if paper else 6,
                    color=ln.color, transform=target.get_xaxis_transform(), clip_on=False, label=ln.label,
                )  # fmt: skip
            else:
                target.plot(ln.x, ln.y, color=ln.color, linewidth=lw, label=ln.label)
        if data.validation:  # one neutral entry for every run's markers (their colours name the run)
            ax.plot(
                [], [], linestyle="none", marker="o", markersize=2.5 if paper else 4, markerfacecolor="white",
                markeredgecolor="#808080", label="validation loss",
            )  # fmt: skip
        if data.log_y:
            ax.set_yscale("log")
            # plain "2", "3", "10" rather than 2x10^0; minor ticks labelled when the range is under 2 decades
            ax.yaxis.set_major_formatter(LogFormatter())
            ax.yaxis.set_minor_formatter(LogFormatter(minor_thresholds=(2, 0.5)))
        ax.set_ylabel(data.ylabel)
        ax.set_title(data.title)
        ax.legend(loc="upper right", framealpha=0.85, title=data.legend_title, title_fontsize="small")
        bottom = gx if gx is not None else ax
        if gx is not None:
            for h in data.hlines:
                gx.axhline(h.y, color=h.color, linestyle=h.style, linewidth=lw * 0.7, label=h.label)
            gx.set_ylabel(data.gap_ylabel)
            gx.yaxis.set_major_locator(MaxNLocator(5))
            if any(h.label for h in data.hlines):
                gx.legend(loc="best", ncol=2, framealpha=0.85)
        ax.set_xlim(*data.xlim)
        bottom.set_xlabel(data.xlabel)
        bottom.xaxis.set_major_locator(MaxNLocator(6 if paper else 8))
        bottom.xaxis.set_major_formatter(FuncFormatter(_step_text))
        for a in (ax, gx) if gx is not None else (ax,):
            a.xaxis.set_minor_locator(AutoMinorLocator())
            if not (a is ax and data.log_y):
                a.yaxis.set_minor_locator(AutoMinorLocator())
            a.grid(True, which="minor", alpha=0.12)
        fig.align_ylabels()
        return plotting.save(fig, path, paper)


# --- the report -----------------------------------------------------------------------------------

RUN_COLUMNS = tuple(losslog.RunStats.__dataclass_fields__)
GAP_COLUMNS = (
    "matched",
    "mean_ratio",
    "mean_gap",
    "mean_abs_gap",
    "max_abs_gap",
    "max_abs_gap_step",
    "max_rel_gap",
    "max_rel_gap_step",
    "first_exceed_step",
    "final_rel_gap",
    "nonfinite",
)
#: CSV: one row per run (the baseline's gap cells empty), always these columns.
CSV_HEADER = (*RUN_COLUMNS, *GAP_COLUMNS, "violation")


def _num(v, digits: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if not math.isfinite(v):
        return repr(float(v))
    return format(v, digits)


def _pct(v: float | None) -> str:
    return "-" if v is None else (repr(float(v)) if not math.isfinite(v) else f"{100 * v:+.3g}%")


def _human_runs(report: LossReport) -> list[dict]:
    out = []
    for st in report.stats:
        out.append(
            {
                "run": st.label,
                "role": st.role,
                "format": st.format,
                "points": str(st.points),
                "steps": "-" if st.first_step is None else f"{st.first_step}-{st.last_step}",
                "final_loss": _num(st.final_loss, ".4f"),
                "min_loss": _num(st.min_loss, ".4f"),
                "nan_inf_loss": str(st.nonfinite_losses),
                "skipped_iters": _num(st.skipped_iterations, ""),
                "nan_iters": _num(st.nan_iterations, ""),
                "duplicates": str(st.duplicates_replaced),
                "partial_lines": str(st.partial_lines),
            }
        )
    return out


def _human_gaps(report: LossReport) -> list[dict]:
    bad = {v.run for v in report.violations}
    out = []
    for g in report.gaps:
        row = {
            "run": g.run,
            "matched": str(g.matched),
            "mean_ratio": _num(g.mean_ratio, ".5f"),
            "mean_gap": _num(g.mean_gap, "+.4f"),
            "max_abs_gap": _num(g.max_abs_gap, ".4f"),
            "max_rel_gap": _pct(g.max_rel_gap).lstrip("+"),
            "at_step": _num(g.max_rel_gap_step, ""),
            f"first_step_over_{100 * g.threshold:g}%": _num(g.first_exceed_step, ""),
            "final_rel_gap": _pct(g.final_rel_gap),
            "nan_inf": str(g.nonfinite),
        }
        if report.settings.max_gap is not None:
            row["gate"] = "FAIL" if g.run in bad else "ok"
        out.append(row)
    return out


def _gap_title(report: LossReport) -> str:
    s = report.settings
    what = "smoothed" if s.gap_on_smoothed and s.smooth > 1 else "raw"
    window = _fmt_window(s.steps)
    return (
        f"gap to baseline {report.baseline} at matched steps ({what} losses"
        + (f", steps {window}" if window else "")
        + "; rel gap = (run - base) / |base|)"
    )


def to_json(report: LossReport, figure: str | None = None) -> dict:
    """The JSON document (schema ``fqtool.loss/1``); non-finite floats as "inf" / "-inf" / "nan"."""
    from .render import jsonable  # the one encoding of non-finite floats, shared with fqtool.analysis/1

    s = report.settings
    doc = {
        "schema": losslog.SCHEMA,
        "fqtool_version": fqtool.__version__,
        "baseline": report.baseline,
        "settings": {
            "steps": list(s.steps),
            "smooth": s.smooth if s.smooth > 1 else None,
            "smooth_method": s.smooth_method if s.smooth > 1 else None,
            "gap_on": "smoothed" if s.gap_on_smoothed and s.smooth > 1 else "raw",
            "gap_threshold": s.gap_threshold,
            "max_gap": s.max_gap,
        },
        "runs": [asdict(st) for st in report.stats],
        "gaps": [asdict(g) for g in report.gaps],
        "violations": [asdict(v) for v in report.violations],
        "figure": figure,
    }
    return jsonable(doc)


def _csv_cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, float):
        return repr(v)  # full precision; inf, -inf, nan
    return str(v)


def to_csv(report: LossReport) -> str:
    gaps = {g.run: g for g in report.gaps}
    bad = {v.run for v in report.violations}
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_HEADER)
    for st in report.stats:
        g = gaps.get(st.label)
        gap_cells = [getattr(g, c) if g else None for c in GAP_COLUMNS]
        gate = None if report.settings.max_gap is None or g is None else st.label in bad
        w.writerow([_csv_cell(v) for v in (*(getattr(st, c) for c in RUN_COLUMNS), *gap_cells, gate)])
    return out.getvalue()


def render_report(report: LossReport, output_format: str, *, plain: bool = False, figure: str | None = None) -> str:
    """The report as table (rich, or plain columns when piped), json, csv or markdown; ends in a newline."""
    from .describe import render_records

    if output_format == "json":
        return json.dumps(to_json(report, figure), indent=2, allow_nan=False) + "\n"
    if output_format == "csv":
        return to_csv(report)
    parts = [render_records(_human_runs(report), output_format, title="runs", plain=plain)]
    if report.gaps:
        parts.append(render_records(_human_gaps(report), output_format, title=_gap_title(report), plain=plain))
    if plain and output_format == "table":  # plain columns have no titles: say which table is which
        parts = [f"# {t}\n{p}" for t, p in zip(["runs", _gap_title(report)], parts, strict=False)]
    return "\n".join(parts)


def violations_text(report: LossReport) -> str:
    """One line per --max-gap violation (no trailing newline)."""
    lines = []
    for v in report.violations:
        at = f"at step {_num(v.step, '')}"
        what = (
            f"its loss is NaN/Inf {at} where the baseline {report.baseline} is finite"
            if math.isinf(v.max_rel_gap)
            else f"max relative gap to baseline {report.baseline} {_pct(v.max_rel_gap).lstrip('+')} {at}"
        )
        lines.append(f"violation: {v.run}: {what}; above --max-gap {100 * v.limit:g}%")
    return "\n".join(lines)


def summary_line(report: LossReport, figure: Path | None, output: Path | None = None) -> str:
    points = sum(st.points for st in report.stats)
    n = len(report.stats)
    base = f", baseline {report.baseline}" if report.baseline else ""
    wrote = [str(p) for p in (figure, output) if p is not None]
    return f"{n} run{'s' if n != 1 else ''} ({points} points{base})" + (f"; wrote {', '.join(wrote)}" if wrote else "")


def parse_notes(runs: Iterable[losslog.Run]) -> list[str]:
    """One line per run whose log had replaced duplicates or unreadable lines."""
    out = []
    for r in runs:
        if r.partial_lines:
            where = f"line {r.first_partial_line}" if r.partial_lines == 1 else f"first: line {r.first_partial_line}"
            out.append(f"{r.path}: ignored {r.partial_lines} unreadable loss line(s) ({where}; truncated or cut off?)")
        if r.duplicates:
            out.append(f"{r.path}: {r.duplicates} step(s) logged again (a restart?); kept the last occurrence")
    return out


# --- the command ----------------------------------------------------------------------------------


def register(app: typer.Typer) -> None:
    @app.command(
        "plot-loss",
        help="Training-loss curves of one or more runs, over a baseline: the figure, the gap report at matched "
        "steps (mean ratio run/baseline, mean and max gap, first step over --gap-threshold) and a CI gate "
        "(--max-gap). Reads Megatron-LM logs ('iteration N/ M | ... | lm loss: X'), JSON lines and CSV "
        "with step and loss keys; a directory means every *.log, *.txt, *.jsonl, *.csv in it.",
    )
    @handle_errors
    def plot_loss(
        logs: Annotated[list[str], typer.Argument(metavar="LOG", help="Log files or directories of logs.")],
        baseline: Annotated[
            Path | None,
            typer.Option("--baseline", "-b", metavar="LOG", help="The reference run (e.g. bf16); enables gaps."),
        ] = None,
        label: Annotated[
            list[str] | None,
            typer.Option(
                "--label",
                metavar="NAME",
                help="Names of the logs, in order (repeatable, or a,b,c); default: file stems.",
            ),
        ] = None,
        baseline_label: Annotated[
            str | None, typer.Option("--baseline-label", metavar="NAME", help="Name of the baseline run.")
        ] = None,
        steps: Annotated[
            str | None, typer.Option("--steps", metavar="A:B", help="Step window, both ends included (A: or :B).")
        ] = None,
        smooth: Annotated[
            int, typer.Option("--smooth", min=0, metavar="N", help="Smooth the curves over N logged points.")
        ] = 0,
        smooth_method: Annotated[
            str, typer.Option("--smooth-method", metavar="M", help="mean (trailing window) or ema (span N).")
        ] = "mean",
        gap_on_smoothed: Annotated[
            bool, typer.Option("--gap-on-smoothed", help="Compute gaps on the smoothed curves (default: raw).")
        ] = False,
        gap_threshold: Annotated[
            float,
            typer.Option("--gap-threshold", min=0.0, metavar="X", help="Report the first step with rel gap above X."),
        ] = 0.02,
        max_gap: Annotated[
            float | None,
            typer.Option(
                "--max-gap", min=0.0, metavar="X", help="CI gate: exit 1 when a run's max rel gap is above X."
            ),
        ] = None,
        log_y: Annotated[bool, typer.Option("--log-y", help="Logarithmic loss axis.")] = False,
        gap_panel: Annotated[
            bool, typer.Option("--gap-panel/--no-gap-panel", help="The relative-gap panel (with --baseline).")
        ] = True,
        step_key: Annotated[
            str | None, typer.Option("--step-key", metavar="KEY", help="Step key/column of JSON lines and CSV.")
        ] = None,
        loss_key: Annotated[
            str | None,
            typer.Option("--loss-key", metavar="KEY", help="Loss key/column (Megatron: the field, e.g. 'lm loss')."),
        ] = None,
        figure: Annotated[
            Path, typer.Option("--figure", metavar="FILE", help="Where the figure goes: .png, .pdf or .svg.")
        ] = Path("loss.png"),
        no_figure: Annotated[bool, typer.Option("--no-figure", help="Only the report (e.g. for a CI gate).")] = False,
        paper: Annotated[bool, typer.Option("--paper", help="Paper size: 3.5 in wide, 600 dpi.")] = False,
        output_format: OutputFormat = None,
        output: Output = None,
        quiet: Quiet = False,
    ) -> None:
        fmt = output_format_for(output_format, output)
        if not no_figure:
            plotting.image_format(figure)  # a bad suffix fails before any work
        if smooth_method not in losslog.SMOOTH_METHODS:
            raise UsageError(f"--smooth-method {smooth_method!r}: use one of {', '.join(losslog.SMOOTH_METHODS)}")
        if gap_on_smoothed and smooth <= 1:
            raise UsageError("--gap-on-smoothed needs --smooth N with N > 1")
        if max_gap is not None and baseline is None:
            raise UsageError("--max-gap needs --baseline LOG: the gap is measured against it")
        settings = losslog.Settings(
            steps=losslog.parse_steps(steps),
            smooth=smooth,
            smooth_method=smooth_method,
            gap_on_smoothed=gap_on_smoothed,
            gap_threshold=gap_threshold,
            max_gap=max_gap,
        )
        base = None
        notes: list[str] = []
        if baseline is not None:
            if baseline.is_dir():
                raise UsageError(f"--baseline {baseline}: a directory; give one log file")
            found = losslog.read_log(baseline, label=baseline_label, step_key=step_key, loss_key=loss_key)
            if len(found) > 1:
                totals = ", ".join(str(r.total_iters) for r in found)
                raise UsageError(
                    f"--baseline {baseline}: holds several runs (total iterations {totals}); give a log of one run"
                )
            base = found[0]
        runs, load_notes = losslog.load_runs(
            logs,
            labels=split_list(label) or None,
            exclude=baseline,
            step_key=step_key,
            loss_key=loss_key,
            taken=[base.label] if base else (),
        )
        notes += load_notes + parse_notes(([base] if base else []) + runs)
        report = losslog.analyse(runs, base, settings)
        for note in notes:
            err(f"fqtool: {note}")
        for st in report.stats:
            if st.points == 0:
                err(f"fqtool: warning: {st.label} has no point within --steps {steps}")
        for g in report.gaps:
            if g.matched == 0:
                err(f"fqtool: warning: {g.run} shares no step with the baseline {g.baseline}; no gap to report")
        written = None
        if not no_figure:
            data = figure_data(report, log_y=log_y, gap_panel=gap_panel)
            try:
                written = draw(data, figure, paper=paper)
            except OSError as e:
                raise UsageError(f"--figure {figure}: cannot write it ({e.strerror or e}); nothing was written") from e
        plain = output is not None or not stdout_is_terminal()
        emit(render_report(report, fmt, plain=plain, figure=None if written is None else str(written)), output)
        if not quiet:
            err(f"fqtool: {summary_line(report, written, output)}")
        if report.violations:
            err(violations_text(report))
            raise typer.Exit(EXIT_VIOLATION)
