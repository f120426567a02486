"""Training-loss logs: parse them, smooth them, and measure each run's gap to a baseline. Pure: never prints.

Replaces the seed's ``utils/draw/plot_loss_curve.py`` (seed-utilities.md §10, §16 item 11); the figure,
the tables and the ``plot-loss`` command live in :mod:`fqtool.lossplot`.

Three log formats, chosen by suffix (``.jsonl``/``.json`` JSON lines, ``.csv`` CSV) or, for any other
suffix, by the first non-blank line (``{`` JSON lines, a header naming a step and a loss column CSV,
anything else Megatron-LM):

* Megatron-LM training lines, the seed's regex kept: ``iteration N/ M | ... | lm loss: X | ...``
  (case-insensitive, scientific notation, ``nan``/``inf``). The same line may also give
  ``learning rate``, ``loss scale``, ``grad norm``, ``number of skipped iterations`` and
  ``number of nan iterations``; ``validation loss at iteration N ... | lm loss value: X`` lines give
  a separate validation series. A line with the iteration counter but no readable loss (a truncated
  last line, a cut-off field) is ignored and counted.
* JSON lines: one object per line with a step key (:data:`STEP_KEYS`) and a loss key (:data:`LOSS_KEYS`).
  Objects with a validation key (:data:`VAL_KEYS`) but no loss (HF Trainer eval records) feed the
  validation series; objects with neither are ignored and counted.
* CSV with a header naming a step and a loss column (same names); empty cells mean "not logged here".

Every series is sorted by step with one value per step: a step logged twice (a restart from a
checkpoint) keeps its last occurrence, and the replaced ones are counted. A Megatron log whose total
iterations (the M of N/M) change part-way holds several runs ("mixed runs"): it is split into one run
per M, labelled ``"<label> (M iters)"``, and a note says so. A file with no loss line is an
:class:`~fqtool.errors.InputError` naming the file and the formats accepted.

Gap to a baseline (:func:`gap`), at the steps both logged with a finite baseline loss ("matched"):
``ratio = run / baseline`` (the seed's ``loss_ratio``), ``gap = run - baseline``,
``rel_gap = |run - baseline| / |baseline|``. A non-finite run loss where the baseline is finite is an
infinite gap (a diverged run must fail a gate); steps with a zero baseline loss are left out of the
ratio and relative gaps.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import InputError, UsageError

SCHEMA = "fqtool.loss/1"

#: Candidate keys / column names, tried in this order (``--step-key`` / ``--loss-key`` override).
STEP_KEYS = ("step", "iteration", "iter", "global_step", "train/global_step", "_step")
LOSS_KEYS = ("loss", "lm_loss", "train/loss", "train_loss", "train/lm_loss")
VAL_KEYS = ("val_loss", "eval_loss", "validation_loss", "val/loss", "eval/loss", "validation/loss")
#: JSON / CSV keys of the per-step extras (series name -> candidate keys).
EXTRA_KEYS = {
    "grad_norm": ("grad_norm", "train/grad_norm"),
    "learning_rate": ("learning_rate", "lr", "train/learning_rate"),
    "loss_scale": ("loss_scale",),
}
#: Megatron field names of the per-step extras (series name -> field before the colon).
MEGATRON_EXTRAS = {
    "learning_rate": "learning rate",
    "loss_scale": "loss scale",
    "grad_norm": "grad norm",
    "skipped_iterations": "number of skipped iterations",
    "nan_iterations": "number of nan iterations",
}
MEGATRON_LOSS_KEY = "lm loss"
#: What a directory contributes: these suffixes, sorted by name, not recursive.
LOG_SUFFIXES = (".log", ".txt", ".jsonl", ".csv")
FORMATS_ACCEPTED = (
    "fqtool plot-loss reads Megatron-LM logs ('iteration N/ M | ... | lm loss: X'), JSON lines with a step key "
    f"({', '.join(STEP_KEYS[:4])}) and a loss key ({', '.join(LOSS_KEYS[:4])}), and CSV files with such columns "
    "(--step-key / --loss-key name others)"
)

_ITERATION = re.compile(r"iteration\s+(\d+)\s*/\s*(\d+)", re.IGNORECASE)
_VALIDATION = re.compile(r"validation loss at iteration\s+(\d+)", re.IGNORECASE)
_NUMBER = r"([-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf(?:inity)?))"


# --- series and runs ----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Series:
    """Values by step: ``steps`` int64 ascending and unique, ``values`` float64 of the same length."""

    steps: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.steps)

    def window(self, lo: int | None, hi: int | None) -> Series:
        """The points with ``lo <= step <= hi`` (an open end when None)."""
        keep = np.ones(len(self.steps), dtype=bool)
        if lo is not None:
            keep &= self.steps >= lo
        if hi is not None:
            keep &= self.steps <= hi
        return Series(self.steps[keep], self.values[keep])

    @classmethod
    def from_points(cls, points: dict[int, float]) -> Series:
        steps = np.array(sorted(points), dtype=np.int64)
        return cls(steps, np.array([points[s] for s in steps.tolist()], dtype=np.float64))


@dataclass(frozen=True, eq=False)
class Run:
    """One training run read from a log: its loss series and what the parser saw on the way."""

    label: str
    path: str
    format: str  # "megatron", "jsonl" or "csv"
    loss: Series
    val_loss: Series | None = None
    #: Per-step extras the log gave: grad_norm, learning_rate, loss_scale, skipped_iterations, nan_iterations.
    extras: dict[str, Series] = field(default_factory=dict)
    total_iters: int | None = None  # Megatron's M in "iteration N/ M"
    duplicates: int = 0  # logged steps replaced by a later line for the same step
    partial_lines: int = 0  # lines that looked like loss lines but could not be read
    first_partial_line: int | None = None  # its 1-based line number
    ignored_records: int = 0  # JSON/CSV records with neither a loss nor a validation loss
    notes: tuple[str, ...] = ()  # what a person should know (mixed runs split, ...)


# --- reading ------------------------------------------------------------------------------------


def expand(paths: Iterable[str | Path]) -> list[tuple[Path, bool]]:
    """Each file, and each log (:data:`LOG_SUFFIXES`) of each directory, sorted; ``(path, from_directory)``."""
    out: list[tuple[Path, bool]] = []
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in LOG_SUFFIXES)
            if not files:
                raise InputError(f"{p}: a directory with no {', '.join('*' + s for s in LOG_SUFFIXES)} files in it")
            out.extend((f, True) for f in files)
        elif p.is_file():
            out.append((p, False))
        elif p.exists():
            raise InputError(f"{p}: not a regular file or directory; give a log file or a directory of logs")
        else:
            raise InputError(f"{p}: no such file or directory")
    return out


def read_log(
    path: str | Path, *, label: str | None = None, step_key: str | None = None, loss_key: str | None = None
) -> list[Run]:
    """The run(s) in one log file: one, or one per total-iteration count for a mixed Megatron log.

    ``label`` defaults to the file stem. Raises InputError (naming the file) when nothing in it is a
    loss line, when it cannot be read, or when ``step_key`` / ``loss_key`` are not in its header.
    """
    path = Path(path)
    label = label or path.stem
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as e:
        raise InputError(f"{path}: cannot read it ({e.strerror or e})") from e
    if not text.strip():
        raise InputError(f"{path}: the file is empty; {FORMATS_ACCEPTED}")
    kind = sniff(path, text)
    if kind == "jsonl":
        runs = [_read_jsonl(path, text, label, step_key, loss_key)]
    elif kind == "csv":
        runs = [_read_csv(path, text, label, step_key, loss_key)]
    else:  # --step-key does not apply: Megatron counts "iteration N/ M"
        runs = _read_megatron(path, text, label, loss_key or MEGATRON_LOSS_KEY)
    return runs


def sniff(path: Path, text: str) -> str:
    """``"jsonl"``, ``"csv"`` or ``"megatron"``: by suffix, else by the first non-blank line."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if first.startswith("{"):
        return "jsonl"
    if "," in first and _ITERATION.search(first) is None:
        header = {c.strip() for c in first.split(",")}
        if header & set(STEP_KEYS) and header & set(LOSS_KEYS):
            return "csv"
    return "megatron"


def _lines(text: str) -> Iterator[tuple[int, str, bool]]:
    """(1-based line number, line without its end, whether the line was cut off: last and unterminated)."""
    lines = text.splitlines()
    unterminated = not text.endswith(("\n", "\r"))
    for i, line in enumerate(lines):
        yield i + 1, line, unterminated and i == len(lines) - 1


class _Points:
    """One series being read: last value per step wins, replaced ones counted."""

    def __init__(self) -> None:
        self.points: dict[int, float] = {}
        self.duplicates = 0

    def add(self, step: int, value: float) -> None:
        if step in self.points:
            self.duplicates += 1
        self.points[step] = value

    def series(self) -> Series:
        return Series.from_points(self.points)


class _Builder:
    """The series of one run being read, plus its partial-line count."""

    def __init__(self) -> None:
        self.loss = _Points()
        self.val = _Points()
        self.extras: dict[str, _Points] = {}
        self.partial = 0
        self.first_partial: int | None = None
        self.ignored = 0

    def add(self, step: int, loss: float, extras: dict[str, float]) -> None:
        self.loss.add(step, loss)
        for name, value in extras.items():
            self.extras.setdefault(name, _Points()).add(step, value)

    def bad_line(self, lineno: int) -> None:
        self.partial += 1
        if self.first_partial is None:
            self.first_partial = lineno

    def run(self, path: Path, label: str, fmt: str, **kw) -> Run:
        return Run(
            label=label,
            path=str(path),
            format=fmt,
            loss=self.loss.series(),
            val_loss=self.val.series() if self.val.points else None,
            extras={name: pts.series() for name, pts in self.extras.items()},
            duplicates=self.loss.duplicates,
            partial_lines=self.partial,
            first_partial_line=self.first_partial,
            ignored_records=self.ignored,
            **kw,
        )


def _field_pattern(key: str) -> tuple[re.Pattern, re.Pattern]:
    """``key: number`` as a whole ``|``-separated field (so "loss" does not match "lm loss"), and
    anywhere after a non-word character (lines without ``|``)."""
    k = r"\s+".join(map(re.escape, key.split()))
    return (
        re.compile(rf"(?:^|\|)\s*{k}\s*:\s*{_NUMBER}(?=\s*(?:\||$))", re.IGNORECASE),
        re.compile(rf"(?<!\w){k}\s*:\s*{_NUMBER}(?=\s|$)", re.IGNORECASE),
    )


def _field(text: str, patterns: tuple[re.Pattern, re.Pattern], cut: bool) -> float | None:
    """The number of a ``key: number`` field in ``text``; None when absent or possibly cut off
    (``cut``: the line is the file's unterminated last line and the number ends it)."""
    m = patterns[0 if "|" in text else 1].search(text)
    if m is None or (cut and not text[m.end() :].strip()):
        return None
    return float(m.group(1))


def _read_megatron(path: Path, text: str, label: str, loss_key: str) -> list[Run]:
    loss_pat = _field_pattern(loss_key)
    val_pat = _field_pattern(f"{loss_key} value")
    extra_pats = {name: _field_pattern(key) for name, key in MEGATRON_EXTRAS.items()}
    builders: dict[int, _Builder] = {}  # total iterations M -> its run, in order of first appearance
    current: _Builder | None = None
    pending_val: list[tuple[int, float]] = []  # validation lines before any training line
    for lineno, line, cut in _lines(text):
        m = _ITERATION.search(line)
        if m is not None:
            step, total = int(m.group(1)), int(m.group(2))
            current = builders.setdefault(total, _Builder())
            rest = line[m.end() :]
            loss = _field(rest, loss_pat, cut)
            if loss is None:
                current.bad_line(lineno)
                continue
            extras = {name: v for name, pat in extra_pats.items() if (v := _field(rest, pat, cut)) is not None}
            current.add(step, loss, extras)
            continue
        v = _VALIDATION.search(line)
        if v is not None and "test set" not in line.lower():
            value = _field(line[v.end() :], val_pat, cut)
            if value is not None:
                if current is None:
                    pending_val.append((int(v.group(1)), value))
                else:
                    current.val.add(int(v.group(1)), value)
    if not builders or not any(b.loss.points for b in builders.values()):
        partial = sum(b.partial for b in builders.values())
        why = f" ({partial} iteration lines without a readable '{loss_key}')" if partial else ""
        raise InputError(f"{path}: no training-loss line found{why}; {FORMATS_ACCEPTED}")
    first = next(iter(builders.values()))
    for step, value in pending_val:
        first.val.add(step, value)
    if len(builders) == 1:
        total, b = next(iter(builders.items()))
        return [b.run(path, label, "megatron", total_iters=total)]
    runs = [b.run(path, label, "megatron", total_iters=total) for total, b in builders.items() if b.loss.points]
    return _relabel(path, runs, label)


def _relabel(path: Path, runs: list[Run], label: str) -> list[Run]:
    """``runs`` of one log named ``label``: as is for one run, ``"label (M iters)"`` and a note for mixed runs."""
    if len(runs) == 1:
        return [replace(runs[0], label=label)]
    totals = [r.total_iters for r in runs]
    names = [f"{label} ({t} iters)" for t in totals]
    note = (
        f"{path}: total iterations change within the file ({' -> '.join(map(str, totals))}): mixed runs, "
        f"split into one run per total: {', '.join(map(repr, names))}"
    )
    return [replace(r, label=n, notes=(note,)) for r, n in zip(runs, names, strict=True)]


def _pick(keys: Iterable[str], given: str | None, candidates: tuple[str, ...]) -> str | None:
    """The key to use among ``keys``: ``given`` if set (None when absent), else the first candidate present."""
    keys = list(keys)
    if given is not None:
        return given if given in keys else None
    return next((k for k in candidates if k in keys), None)


def _number(value) -> float | None:
    """A loss value as float (None stays "not logged", unreadable -> ValueError)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(value)
    return float(value)


def _step(value) -> int:
    f = float(value)
    if not math.isfinite(f) or f != int(f):
        raise ValueError(value)
    return int(f)


def _record(b: _Builder, rec: dict, keys: dict[str, str | None], lineno: int) -> None:
    """Add one JSON object / CSV row; ``keys`` maps step/loss/val/extras to the key in ``rec``."""
    try:
        step_raw = rec.get(keys["step"]) if keys["step"] else None
        loss = _number(rec.get(keys["loss"])) if keys["loss"] else None
        val = _number(rec.get(keys["val"])) if keys["val"] else None
        if step_raw is None or (loss is None and val is None):
            b.ignored += 1
            return
        step = _step(step_raw)
        extras = {}
        for name in EXTRA_KEYS:
            k = keys.get(name)
            if k and (x := _number(rec.get(k))) is not None:
                extras[name] = x
    except (TypeError, ValueError, OverflowError):
        b.bad_line(lineno)
        return
    if loss is not None:
        b.add(step, loss, extras)
    if val is not None:
        b.val.add(step, val)


def _no_keys(path: Path, what: str, keys: Iterable[str], step_key: str | None, loss_key: str | None) -> InputError:
    given = " / ".join(f"{o} {k!r}" for o, k in (("--step-key", step_key), ("--loss-key", loss_key)) if k)
    want = f"the {given} you gave" if given else f"a step ({', '.join(STEP_KEYS)}) and a loss ({', '.join(LOSS_KEYS)})"
    found = ", ".join(map(str, list(keys)[:12])) or "none"
    return InputError(f"{path}: no {what} has {want}; its {what}s have: {found}; name them with --step-key/--loss-key")


def _read_jsonl(path: Path, text: str, label: str, step_key: str | None, loss_key: str | None) -> Run:
    b = _Builder()
    seen_keys: dict[str, None] = {}
    for lineno, line, _cut in _lines(text):
        s = line.strip()
        if not s:
            continue
        try:
            rec = json.loads(s)
        except ValueError:
            b.bad_line(lineno)  # a truncated last line, a stray print: not a record
            continue
        if not isinstance(rec, dict):
            b.bad_line(lineno)
            continue
        seen_keys.update(dict.fromkeys(rec))
        keys = _keys_for(rec, step_key, loss_key)
        _record(b, rec, keys, lineno)
    if not b.loss.points:
        if not seen_keys:
            raise InputError(f"{path}: no JSON object on any line; {FORMATS_ACCEPTED}")
        raise _no_keys(path, "record", seen_keys, step_key, loss_key)
    return b.run(path, label, "jsonl")


def _keys_for(names: Iterable[str], step_key: str | None, loss_key: str | None) -> dict[str, str | None]:
    names = list(names)
    keys = {
        "step": _pick(names, step_key, STEP_KEYS),
        "loss": _pick(names, loss_key, LOSS_KEYS),
        "val": _pick(names, None, VAL_KEYS),
    }
    for name, candidates in EXTRA_KEYS.items():
        keys[name] = _pick(names, None, candidates)
    return keys


def _read_csv(path: Path, text: str, label: str, step_key: str | None, loss_key: str | None) -> Run:
    rows = list(csv.reader(io.StringIO(text)))
    rows = [(i + 1, r) for i, r in enumerate(rows) if any(c.strip() for c in r)]
    if not rows:
        raise InputError(f"{path}: no CSV header; {FORMATS_ACCEPTED}")
    header = [c.strip() for c in rows[0][1]]
    keys = _keys_for(header, step_key, loss_key)
    if keys["step"] is None or keys["loss"] is None:
        raise _no_keys(path, "CSV header", header, step_key, loss_key)
    b = _Builder()
    cut_last = not text.endswith(("\n", "\r"))
    for n, (lineno, cells) in enumerate(rows[1:], start=1):
        if len(cells) < len(header) and cut_last and n == len(rows) - 1:
            b.bad_line(lineno)  # the unterminated last row is short: cut off mid-write
            continue
        rec = {h: (c.strip() or None) for h, c in zip(header, cells, strict=False)}
        _record(b, rec, keys, lineno)
    if not b.loss.points:
        raise InputError(f"{path}: no row has a readable {keys['step']!r} and {keys['loss']!r}; {FORMATS_ACCEPTED}")
    return b.run(path, label, "csv")


def load_runs(
    paths: Iterable[str | Path],
    *,
    labels: list[str] | None = None,
    exclude: Path | None = None,
    step_key: str | None = None,
    loss_key: str | None = None,
    taken: Iterable[str] = (),
) -> tuple[list[Run], list[str]]:
    """Every run in ``paths`` (files and directories) and the notes for stderr.

    A file found in a directory that holds no loss line is skipped with a note; a file named
    directly is an error. ``labels`` name the logs read, in order (a directory's in name order);
    ``exclude`` (the baseline) is left out when it appears among them. Labels are made unique (also against
    ``taken``, the baseline's label). Only the baseline among ``paths`` gives no run and no error.
    """
    files = expand(paths)
    notes: list[str] = []
    if exclude is not None:
        kept = [(f, d) for f, d in files if f.resolve() != exclude.resolve()]
        if len(kept) != len(files):
            notes.append(f"{exclude}: it is the baseline; not repeated as a run")
        files = kept
        if not files:
            return [], notes
    default = _default_labels([f for f, _ in files])
    parsed: list[tuple[Path, list[Run]]] = []
    for i, (f, from_dir) in enumerate(files):
        try:
            parsed.append((f, read_log(f, label=default[i], step_key=step_key, loss_key=loss_key)))
        except InputError as e:
            if not from_dir:
                raise
            notes.append(f"skipped {e}")
    if not parsed:
        raise InputError(f"{', '.join(map(str, paths))}: no log with training-loss lines; {FORMATS_ACCEPTED}")
    if labels:  # one per log that gave runs, in order; a mixed log's runs keep their "(M iters)"
        if len(labels) != len(parsed):
            names = ", ".join(str(f) for f, _ in parsed)
            raise UsageError(f"--label: {len(labels)} labels for {len(parsed)} logs ({names}); give one label per log")
        parsed = [(f, _relabel(f, found, label)) for (f, found), label in zip(parsed, labels, strict=True)]
    runs = [r for _, found in parsed for r in found]
    notes.extend(dict.fromkeys(n for r in runs for n in r.notes))
    return unique_labels(runs, taken), notes


def _default_labels(files: list[Path]) -> list[str]:
    """File stems; ``parent/stem`` where two files share a stem."""
    stems = [f.stem for f in files]
    return [f"{f.parent.name}/{f.stem}" if stems.count(f.stem) > 1 else f.stem for f in files]


def unique_labels(runs: list[Run], taken: Iterable[str] = ()) -> list[Run]:
    """``runs`` with ``#2``, ``#3``... appended to labels seen before (or in ``taken``)."""
    seen = set(taken)
    out = []
    for r in runs:
        label, n = r.label, 1
        while label in seen:
            n += 1
            label = f"{r.label} #{n}"
        seen.add(label)
        out.append(r if label == r.label else replace(r, label=label))
    return out


# --- analysis -----------------------------------------------------------------------------------


def parse_steps(text: str | None) -> tuple[int | None, int | None]:
    """``"A:B"``, ``"A:"`` or ``":B"`` -> (A, B), both ends included; None -> no window."""
    if text is None:
        return None, None
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        lo, hi = (int(p) if p.strip() else None for p in parts)
    except ValueError:
        raise UsageError(
            f"--steps {text!r}: give a step window as A:B, A: or :B (integers, both ends included)"
        ) from None
    if lo is not None and hi is not None and lo > hi:
        raise UsageError(f"--steps {text!r}: the first step is after the last")
    return lo, hi


SMOOTH_METHODS = ("mean", "ema")


def smooth(series: Series, window: int, method: str = "mean") -> Series:
    """Causal smoothing over logged points, ignoring non-finite values.

    ``mean``: the mean of the finite values among the last ``window`` logged points (fewer at the
    start); ``ema``: an exponential moving average with span ``window`` (alpha = 2 / (window + 1))
    over the finite values. A non-finite point stays as it is (a NaN loss is not smoothed away: it
    still fails a gate on smoothed gaps); a point whose window holds no finite value is NaN.
    ``window`` <= 1 returns the series unchanged.
    """
    if window <= 1 or not len(series):
        return series
    import pandas as pd  # only here: rolling / ewm with their well-known NaN rules

    values = pd.Series(np.where(np.isfinite(series.values), series.values, np.nan))
    if method == "mean":
        out = values.rolling(window, min_periods=1).mean()
    elif method == "ema":
        out = values.ewm(span=window, adjust=False, ignore_na=True).mean()
    else:
        raise UsageError(f"--smooth-method {method!r}: use one of {', '.join(SMOOTH_METHODS)}")
    out = out.to_numpy(dtype=np.float64)
    return Series(series.steps, np.where(np.isfinite(series.values), out, series.values))


@dataclass(frozen=True)
class Gap:
    """One run against the baseline at their matched steps (see the module docstring)."""

    run: str
    baseline: str
    matched: int  # steps both logged, baseline finite
    mean_ratio: float  # mean of run / baseline (finite run, baseline != 0)
    mean_gap: float  # mean of run - baseline (finite run)
    mean_abs_gap: float
    max_abs_gap: float  # inf when the run is non-finite at a matched step
    max_abs_gap_step: int | None
    max_rel_gap: float  # max |run - baseline| / |baseline|
    max_rel_gap_step: int | None
    first_exceed_step: int | None  # first matched step with rel gap > threshold
    final_rel_gap: float  # signed (run - baseline) / |baseline| at the last matched step
    nonfinite: int  # matched steps where the run's loss is NaN/Inf
    threshold: float


def gap(run: Series, base: Series, threshold: float, *, run_label: str = "", base_label: str = "") -> Gap:
    """The gap of ``run`` to ``base`` at their matched steps (both already windowed)."""
    steps, r, b = matched(run, base)
    nan = math.nan
    if not len(steps):
        return Gap(run_label, base_label, 0, nan, nan, nan, nan, None, nan, None, None, nan, 0, threshold)
    finite = np.isfinite(r)
    d = r - b
    abs_gap = np.where(finite, np.abs(d), np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(b != 0, abs_gap / np.abs(b), np.nan)  # zero baseline: no relative gap
        ok = finite & (b != 0)
        ratio = r[ok] / b[ok]
    has_rel = ~np.isnan(rel)
    exceed = np.flatnonzero(has_rel & (rel > threshold))
    i_abs = int(np.argmax(abs_gap))
    i_rel = int(np.nanargmax(rel)) if has_rel.any() else None
    last = np.flatnonzero(b != 0)
    return Gap(
        run=run_label,
        baseline=base_label,
        matched=len(steps),
        mean_ratio=float(ratio.mean()) if len(ratio) else nan,
        mean_gap=float(d[finite].mean()) if finite.any() else nan,
        mean_abs_gap=float(np.abs(d[finite]).mean()) if finite.any() else nan,
        max_abs_gap=float(abs_gap[i_abs]),
        max_abs_gap_step=int(steps[i_abs]),
        max_rel_gap=float(rel[i_rel]) if i_rel is not None else nan,
        max_rel_gap_step=int(steps[i_rel]) if i_rel is not None else None,
        first_exceed_step=int(steps[exceed[0]]) if len(exceed) else None,
        final_rel_gap=float(d[last[-1]] / abs(b[last[-1]])) if len(last) else nan,
        nonfinite=int((~finite).sum()),
        threshold=threshold,
    )


def matched(run: Series, base: Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, run values, baseline values) at the steps both logged where the baseline is finite."""
    steps, ir, ib = np.intersect1d(run.steps, base.steps, assume_unique=True, return_indices=True)
    r, b = run.values[ir], base.values[ib]
    keep = np.isfinite(b)
    return steps[keep], r[keep], b[keep]


def relative_gap(run: Series, base: Series) -> Series:
    """Signed ``(run - baseline) / |baseline|`` at matched steps where both are finite and baseline != 0."""
    steps, r, b = matched(run, base)
    keep = np.isfinite(r) & (b != 0)
    return Series(steps[keep], (r[keep] - b[keep]) / np.abs(b[keep]))


@dataclass(frozen=True)
class Settings:
    """What ``plot-loss`` was asked to compute."""

    steps: tuple[int | None, int | None] = (None, None)
    smooth: int = 0  # window in logged points; 0 or 1 = none
    smooth_method: str = "mean"
    gap_on_smoothed: bool = False
    gap_threshold: float = 0.02
    max_gap: float | None = None


@dataclass(frozen=True)
class RunStats:
    """One run within the step window."""

    label: str
    role: str  # "baseline" or "run"
    file: str
    format: str
    total_iters: int | None
    points: int
    first_step: int | None
    last_step: int | None
    final_loss: float  # the last finite loss
    min_loss: float
    nonfinite_losses: int
    skipped_iterations: int | None  # Megatron's per-line counts, summed; None when the log has none
    nan_iterations: int | None
    duplicates_replaced: int  # over the whole file
    partial_lines: int  # over the whole file


@dataclass(frozen=True)
class Violation:
    run: str
    max_rel_gap: float
    step: int | None
    limit: float


@dataclass(frozen=True, eq=False)
class Curves:
    """One run's series as shown: raw and smoothed loss within the window, its validation loss, and
    its relative gap to the baseline (raw and, when smoothing, smoothed)."""

    label: str
    role: str
    raw: Series
    smoothed: Series | None
    val: Series | None
    rel_gap: Series | None = None
    rel_gap_smoothed: Series | None = None


@dataclass(frozen=True, eq=False)
class LossReport:
    settings: Settings
    runs: list[Run]  # the baseline first when there is one
    baseline: str | None  # its label
    stats: list[RunStats]
    gaps: list[Gap]
    violations: list[Violation]
    curves: list[Curves]


def run_stats(run: Run, role: str, lo: int | None, hi: int | None) -> RunStats:
    loss = run.loss.window(lo, hi)
    finite = loss.values[np.isfinite(loss.values)]

    def total(name: str) -> int | None:
        s = run.extras.get(name)
        return int(np.nansum(s.window(lo, hi).values)) if s is not None else None

    return RunStats(
        label=run.label,
        role=role,
        file=run.path,
        format=run.format,
        total_iters=run.total_iters,
        points=len(loss),
        first_step=int(loss.steps[0]) if len(loss) else None,
        last_step=int(loss.steps[-1]) if len(loss) else None,
        final_loss=float(finite[-1]) if len(finite) else math.nan,
        min_loss=float(finite.min()) if len(finite) else math.nan,
        nonfinite_losses=int(len(loss) - len(finite)),
        skipped_iterations=total("skipped_iterations"),
        nan_iterations=total("nan_iterations"),
        duplicates_replaced=run.duplicates,
        partial_lines=run.partial_lines,
    )


def analyse(runs: list[Run], baseline: Run | None, settings: Settings) -> LossReport:
    """Everything ``plot-loss`` shows: per-run statistics, gaps to the baseline, gate violations, curves.

    Smoothing runs over the whole series, then the window is applied (a smoothed point near the
    window's start still averages the points before it). Gaps use the raw losses unless
    ``settings.gap_on_smoothed``. A ``max_gap`` gate with a run sharing no step with the baseline is
    a UsageError: a gate that cannot be evaluated must not pass.
    """
    lo, hi = settings.steps
    every = ([baseline] if baseline else []) + list(runs)
    role = {id(r): "baseline" if r is baseline else "run" for r in every}

    def shown(s: Series) -> Series:
        return smooth(s, settings.smooth, settings.smooth_method).window(lo, hi)

    smoothing = settings.smooth > 1
    base_raw = baseline.loss.window(lo, hi) if baseline else None
    base_smooth = shown(baseline.loss) if baseline and smoothing else None
    curves, gaps = [], []
    for r in every:
        raw = r.loss.window(lo, hi)
        sm = shown(r.loss) if smoothing else None
        val = r.val_loss.window(lo, hi) if r.val_loss is not None else None
        c = Curves(r.label, role[id(r)], raw, sm, val)
        if baseline is not None and r is not baseline:
            c = replace(
                c,
                rel_gap=relative_gap(raw, base_raw),
                rel_gap_smoothed=relative_gap(sm, base_smooth) if smoothing else None,
            )
            on_smoothed = settings.gap_on_smoothed and smoothing
            g = gap(
                sm if on_smoothed else raw,
                base_smooth if on_smoothed else base_raw,
                settings.gap_threshold,
                run_label=r.label,
                base_label=baseline.label,
            )
            gaps.append(g)
        curves.append(c)
    violations = []
    if settings.max_gap is not None:
        for g in gaps:
            if g.matched == 0:
                raise UsageError(
                    f"--max-gap: run {g.run!r} shares no step with the baseline {g.baseline!r}"
                    f"{_window_text(settings.steps)}; nothing to gate (check the logs and --steps)"
                )
            if g.max_rel_gap > settings.max_gap:
                violations.append(Violation(g.run, g.max_rel_gap, g.max_rel_gap_step, settings.max_gap))
    return LossReport(
        settings=settings,
        runs=every,
        baseline=baseline.label if baseline else None,
        stats=[run_stats(r, role[id(r)], lo, hi) for r in every],
        gaps=gaps,
        violations=violations,
        curves=curves,
    )


def _window_text(steps: tuple[int | None, int | None]) -> str:
    lo, hi = steps
    if lo is None and hi is None:
        return ""
    return f" within steps {'' if lo is None else lo}:{'' if hi is None else hi}"
