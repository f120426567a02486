"""One figure style for every fqtool plot, and the one way figures are written.

Every plotting module builds its figures through :func:`figure` and writes them with
:func:`save`: the same fonts, sizes, grid and palette everywhere, the paper-size option
(3.5 x 2.5 in single-column, 600 dpi) in one place, PNG/PDF/SVG chosen by the file suffix, and
atomic writes (a temp file in the same directory, then a rename). matplotlib's object API only:
no pyplot state machine, so figures can be built from several threads.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UsageError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# matplotlib is imported on first use (0.6 s here), so commands that draw nothing start as fast.

#: Suffix -> matplotlib format. PNG for screens and reports, PDF/SVG for papers.
FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}

#: Figure sizes in inches: screen (reports, quick looks) and paper (one column of a two-column paper).
SCREEN_SIZE = (8.0, 5.0)
PAPER_SIZE = (3.5, 2.5)
SCREEN_DPI = 150
PAPER_DPI = 600

#: A colour-blind-safe cycle (Okabe-Ito), used in this order for runs / formats.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")

_RC = {
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.05,
}

_PAPER_RC = {
    "font.size": 7,
    "axes.titlesize": 7,
    "axes.labelsize": 7,
    "legend.fontsize": 6,
    "xtick.labelsize": 6,
    "ytick.labelsize": 6,
    "lines.linewidth": 0.8,
}


@contextmanager
def style(paper: bool = False):
    """fqtool's rcParams for building (and saving) one figure."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    rc = dict(_RC, **(_PAPER_RC if paper else {}), **{"axes.prop_cycle": matplotlib.cycler(color=PALETTE)})
    with matplotlib.rc_context(rc):
        yield


def figure(paper: bool = False, size: tuple[float, float] | None = None, **subplots) -> tuple[Figure, object]:
    """A new figure and its axes (``Figure.subplots(**subplots)``), in fqtool's style.

    Build and save it inside ``with style(paper):`` so fonts apply; ``size`` overrides the
    screen/paper size (inches)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size or (PAPER_SIZE if paper else SCREEN_SIZE), dpi=PAPER_DPI if paper else SCREEN_DPI)
    axes = fig.subplots(**subplots) if subplots else fig.subplots()
    return fig, axes


def image_format(path: str | Path) -> str:
    """The matplotlib format for ``path``'s suffix; a UsageError for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(f"{path}: figures are written as {', '.join(FORMATS)}; use one of those suffixes")
    return FORMATS[suffix]


def save(fig: Figure, path: str | Path, paper: bool = False) -> Path:
    """Write ``fig`` to ``path`` atomically (format from the suffix); returns the path."""
    path = Path(path)
    fmt = image_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format=fmt, dpi=PAPER_DPI if paper else SCREEN_DPI)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
