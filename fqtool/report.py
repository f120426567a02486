"""``fqtool report``: one run of ``compare`` written as a report directory, optionally diffed against
a baseline run and gated on regressions.

    DIR/report.html   self-contained (inline CSS and script, figures as base64 PNG): opens from disk
    DIR/report.md     GitHub-flavoured Markdown for a CI job summary, kept under GitHub's 1 MB limit
    DIR/results.json  exactly ``render.to_json(result)`` plus a "report" section (the baseline diff)

Compute first, render second: :func:`build` makes a :class:`Report` (the analysis ``Result`` and
its :class:`Diff` against the baseline); :func:`to_json`, :func:`to_markdown` and :func:`to_html`
only lay it out, with every human number rounded by ``render.format_metric``.

Baselines are fqtool analysis JSON (``analyze -o json``, ``compare -o json`` or a previous report's
results.json). :data:`UPGRADES` is the schema dispatch table: a baseline written under an older
schema is brought forward one version at a time, so supporting the previous version after a bump
is one entry there.
"""

from __future__ import annotations

import base64
import fnmatch
import html
import io
import json
import math
import os
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import typer

import fqtool

from . import analysis, plotting, render
from .errors import EXIT_VIOLATION, InputError, UsageError
from .metrics import METRICS
from .options import (
    Backend,
    Device,
    Exclude,
    Include,
    MaxMse,
    MinSnr,
    ProgressOnStderr,
    Quiet,
    err,
    handle_errors,
    split_list,
)
from .results import SCHEMA, Aggregate, Result, Row

FILES = ("report.html", "report.md", "results.json")

#: GitHub refuses a job summary over 1 MiB; stay clearly under it.
MAX_MARKDOWN_BYTES = 1_000_000

# --- baseline: reading and schema dispatch ------------------------------------------------------

#: schema -> (the next schema, a function turning a document of the first into one of the second).
#: When SCHEMA becomes "fqtool.analysis/2", add ``"fqtool.analysis/1": ("fqtool.analysis/2", _1_to_2)``
#: and baselines written by the previous version keep working. Empty while /1 is the first schema.
UPGRADES: dict[str, tuple[str, Callable[[dict], dict]]] = {}


def readable_schemas() -> list[str]:
    """Every schema a baseline may have: the current one and each one an upgrade path starts from."""
    return [SCHEMA, *(s for s in UPGRADES if s != SCHEMA)]


def upgrade(doc: dict, source: str) -> dict:
    """``doc`` brought forward to :data:`SCHEMA`; an InputError naming ``source`` when it cannot be."""
    seen = set()
    while doc.get("schema") != SCHEMA:
        schema = doc.get("schema")
        if schema not in UPGRADES or schema in seen:
            raise InputError(_schema_message(source, doc))
        seen.add(schema)
        _, step = UPGRADES[schema]
        doc = step(doc)
    return doc


def _schema_message(source: str, doc: dict) -> str:
    schema = doc.get("schema")
    readable = " and ".join(readable_schemas())
    line = f"baseline {source} has schema {schema!r}; this fqtool ({fqtool.__version__}) reads {readable}"
    by = f" (written by fqtool {doc['fqtool_version']})" if doc.get("fqtool_version") else ""
    family, _, version = str(schema).rpartition("/")
    if family == SCHEMA.rpartition("/")[0] and version.isdigit():
        if int(version) > int(SCHEMA.rpartition("/")[2]):
            return f"{line}: it is newer{by}; upgrade fqtool, or re-run the baseline with this version"
        return f"{line}: it is older{by}; re-run the baseline with this fqtool (fqtool compare -o json)"
    return f"{line}: give the JSON of `fqtool analyze -o json`, `fqtool compare -o json` or a report's results.json"


def load_baseline(path: Path) -> dict:
    """A baseline results document, upgraded to :data:`SCHEMA` and checked; InputError if it is not one."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"baseline {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"baseline {path}: cannot read it ({e}); give a fqtool results JSON file") from e
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(
            f"baseline {path} is not JSON ({e.msg} at line {e.lineno}); give the JSON of "
            "`fqtool compare -o json` or a report's results.json"
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("schema"), str):
        raise InputError(
            f'baseline {path} is not fqtool results JSON (no "schema" field); give the JSON of '
            "`fqtool analyze -o json`, `fqtool compare -o json` or a report's results.json"
        )
    doc = upgrade(doc, str(path))
    rows = doc.get("rows")
    if not isinstance(rows, list):
        raise InputError(f'baseline {path}: no "rows" list; the file is incomplete, regenerate it')
    for i, r in enumerate(rows):
        ok = isinstance(r, dict) and isinstance(r.get("tensor"), str) and isinstance(r.get("format"), str)
        if not ok or not isinstance(r.get("metrics"), dict):
            raise InputError(
                f"baseline {path}: rows[{i}] lacks tensor, format or metrics; the file is damaged, regenerate it"
            )
    return doc


def _number(value: Any) -> float | None:
    """A JSON metric value as a float ("inf", "-inf", "nan" are the non-finite ones); None if not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value in ("inf", "-inf", "nan"):
        return float(value)
    return None


@dataclass(frozen=True)
class BaselineRow:
    tensor: str
    file: str
    format: str
    metrics: dict[str, float]


def _baseline_rows(doc: dict) -> list[BaselineRow]:
    out = []
    for r in doc["rows"]:
        values = {k: v for k, v in ((k, _number(v)) for k, v in r["metrics"].items()) if v is not None}
        out.append(BaselineRow(r["tensor"], str(r.get("file", "")), r["format"], values))
    return out


# --- thresholds -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Threshold:
    """How much worse a metric may get before it is a regression: ``abs`` in the metric's units, or
    ``rel`` as a fraction of the baseline's magnitude. Worse means lower for metrics where higher is
    better (SQNR, cosine) and higher for every other one (errors, fractions, counts)."""

    kind: str  # "abs" or "rel"
    value: float

    def __str__(self) -> str:
        return f"{self.value * 100:g}%" if self.kind == "rel" else f"{self.value:g}"


#: Built-in limits; None: diffed and shown, not gated. SQNR 0.1 dB is a 2.3% rise of the noise power;
#: MSE is also gated on its own (1%) because it moves when the inputs change while SQNR need not;
#: cosine drops of 1e-5 are visible at 6 decimals; 0.001 = 0.1 percentage points more elements
#: clipped / flushed; any new NaN / Inf in the output is a regression.
DEFAULT_THRESHOLDS: dict[str, Threshold | None] = {
    "sqnr_db": Threshold("abs", 0.1),
    "nsr": None,
    "mse": Threshold("rel", 0.01),
    "rmse": None,
    "max_abs_err": None,
    "mean_abs_err": None,
    "cosine": Threshold("abs", 1e-5),
    "clipped_frac": Threshold("abs", 0.001),
    "flushed_frac": Threshold("abs", 0.001),
    "nan_in": None,
    "inf_in": None,
    "nan_out": Threshold("abs", 0),
    "inf_out": Threshold("abs", 0),
}


@dataclass(frozen=True)
class Rule:
    """Limits for the tensor x format rows whose tensor name and format match the globs."""

    tensor: str
    format: str
    limits: dict[str, Threshold | None]

    def matches(self, tensor: str, fmt: str) -> bool:
        return fnmatch.fnmatchcase(tensor, self.tensor) and fnmatch.fnmatchcase(fmt, self.format)


@dataclass(frozen=True)
class Thresholds:
    defaults: dict[str, Threshold | None] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    rules: tuple[Rule, ...] = ()
    source: str | None = None  # the file they came from

    def limit(self, tensor: str, fmt: str, metric: str) -> Threshold | None:
        """The limit for one cell: the last matching rule that names the metric, else the default."""
        for rule in reversed(self.rules):
            if metric in rule.limits and rule.matches(tensor, fmt):
                return rule.limits[metric]
        return self.defaults.get(metric)

    def to_json(self) -> dict:
        def limits(d: Mapping[str, Threshold | None]) -> dict:
            return {m: None if t is None else str(t) for m, t in d.items()}

        return {
            "source": self.source,
            "defaults": limits(self.defaults),
            "rules": [{"tensor": r.tensor, "format": r.format, **limits(r.limits)} for r in self.rules],
        }


def parse_threshold(value: Any, where: str) -> Threshold | None:
    """A number (absolute), "N%" (relative to the baseline), or false / "off" (not gated)."""
    if value is False or (isinstance(value, str) and value.strip().lower() == "off"):
        return None
    if isinstance(value, str) and value.strip().endswith("%"):
        kind, text = "rel", value.strip()[:-1]
    elif isinstance(value, (int, float, str)) and not isinstance(value, bool):
        kind, text = "abs", value
    else:
        raise UsageError(f'{where}: {value!r} is not a limit; use a number (absolute), "N%" (relative) or "off"')
    try:
        number = float(text)
    except ValueError:
        raise UsageError(
            f'{where}: {value!r} is not a limit; use a number (absolute), "N%" (relative) or "off"'
        ) from None
    if not math.isfinite(number) or number < 0:
        raise UsageError(f"{where}: {value!r}: a limit is a finite number >= 0")
    return Threshold(kind, number / 100 if kind == "rel" else number)


def _limits(table: Mapping[str, Any], where: str, extra: Sequence[str] = ()) -> dict[str, Threshold | None]:
    out = {}
    for key, value in table.items():
        if key in extra:
            continue
        if key not in METRICS:
            raise UsageError(f"{where}: unknown key {key!r}; limits are set per metric: {', '.join(METRICS)}")
        out[key] = parse_threshold(value, f"{where}: {key}")
    return out


def _toml():
    try:
        import tomllib  # Python 3.11+
    except ModuleNotFoundError:
        raise UsageError("TOML thresholds need Python 3.11 or newer; write the same table as JSON") from None
    return tomllib


def load_thresholds(path: Path | None) -> Thresholds:
    """The built-in limits, overridden by ``path`` (JSON or TOML; see the README)."""
    if path is None:
        return Thresholds()
    suffix = path.suffix.lower()
    if suffix not in (".json", ".toml"):
        raise UsageError(f"--thresholds {path}: use a .json or .toml file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UsageError(f"--thresholds {path}: cannot read it ({e.strerror or e})") from e
    try:
        doc = json.loads(raw) if suffix == ".json" else _toml().loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise UsageError(f"--thresholds {path}: not valid {suffix[1:].upper()} ({e})") from None
    if not isinstance(doc, dict):
        raise UsageError(f"--thresholds {path}: expected a table of metric = limit and optional [[rules]]")
    rules_raw = doc.get("rules", [])
    if not isinstance(rules_raw, list) or not all(isinstance(r, dict) for r in rules_raw):
        raise UsageError(f'--thresholds {path}: "rules" must be a list of tables ([[rules]] in TOML)')
    defaults = dict(DEFAULT_THRESHOLDS)
    defaults.update(_limits(doc, f"--thresholds {path}", extra=("rules",)))
    rules = []
    for i, r in enumerate(rules_raw):
        where = f"--thresholds {path}: rules[{i}]"
        for key in ("tensor", "format"):
            if not isinstance(r.get(key, "*"), str):
                raise UsageError(f"{where}: {key} must be a glob string")
        rules.append(Rule(r.get("tensor", "*"), r.get("format", "*"), _limits(r, where, extra=("tensor", "format"))))
    return Thresholds(defaults, tuple(rules), str(path))


# --- the diff ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One metric of one matched tensor x format: baseline vs current."""

    tensor: str
    file: str
    format: str
    metric: str
    baseline: float
    current: float
    threshold: Threshold | None
    regression: bool

    @property
    def delta(self) -> float:
        return 0.0 if _same(self.current, self.baseline) else self.current - self.baseline

    @property
    def rel_delta(self) -> float:
        if _same(self.current, self.baseline):
            return 0.0
        return self.delta / abs(self.baseline) if self.baseline != 0 else math.copysign(math.inf, self.delta)


@dataclass(frozen=True)
class Pair:
    current: Row
    baseline: BaselineRow
    changes: tuple[Change, ...]


@dataclass(frozen=True)
class Missing:
    """A tensor x format in one run and not the other."""

    tensor: str
    file: str
    format: str


@dataclass(frozen=True)
class Diff:
    path: str
    header: dict  # the baseline's schema, fqtool_version, command, inputs, device
    pairs: tuple[Pair, ...]
    new: tuple[Missing, ...]  # in the current run only
    missing: tuple[Missing, ...]  # in the baseline only
    new_formats: tuple[str, ...]
    missing_formats: tuple[str, ...]
    baseline_aggregates: dict[str, dict[str, float]]  # format -> its aggregate metrics in the baseline

    @property
    def regressions(self) -> list[Change]:
        return [c for p in self.pairs for c in p.changes if c.regression]

    @property
    def improvements(self) -> list[Change]:
        """Changes for the better by more than the limit (time to refresh the baseline)."""
        return [c for p in self.pairs for c in p.changes if c.threshold and _worse_by(c) < -c.threshold.value]


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _worse_by(c: Change) -> float:
    """How much worse the current value is (negative: better), in the threshold's kind."""
    if _same(c.current, c.baseline):
        return 0.0
    if math.isnan(c.current):
        return math.inf  # a number became NaN
    if math.isnan(c.baseline):
        return -math.inf  # NaN became a number
    worse = c.baseline - c.current if METRICS[c.metric].higher_is_better else c.current - c.baseline
    if c.threshold is not None and c.threshold.kind == "rel":
        return worse / abs(c.baseline) if c.baseline != 0 else math.copysign(math.inf, worse)
    return worse


def _changes(row: Row, base: BaselineRow, thresholds: Thresholds) -> tuple[Change, ...]:
    out = []
    for metric in METRICS:  # metrics the baseline lacks (an older fqtool) are not compared
        if metric not in row.metrics or metric not in base.metrics:
            continue
        limit = thresholds.limit(row.tensor.name, row.format, metric)
        c = Change(row.tensor.name, row.tensor.file, row.format, metric, base.metrics[metric],
                   float(row.metrics[metric]), limit, False)  # fmt: skip
        if limit is not None and _worse_by(c) > limit.value:
            c = replace(c, regression=True)
        out.append(c)
    return tuple(out)


def _basename(file: str) -> str:
    return PurePosixPath(file.replace("\\", "/")).name


def match(current: Sequence[Row], baseline: Sequence[BaselineRow]) -> tuple[list[tuple[Row, BaselineRow]], list, list]:
    """Pair rows by (tensor name, format); where a name occurs in several files, the file breaks the
    tie: the same path, then the same file name. (Paths differ between checkouts and CI workspaces,
    so the tensor name is the key, not the path.) Returns (pairs, current-only rows, baseline-only rows)."""
    cur: dict[tuple[str, str], list[Row]] = {}
    base: dict[tuple[str, str], list[BaselineRow]] = {}
    for r in current:
        cur.setdefault((r.tensor.name, r.format), []).append(r)
    for b in baseline:
        base.setdefault((b.tensor, b.format), []).append(b)
    pairs, new, gone = [], [], []
    for key in {**dict.fromkeys(cur), **dict.fromkeys(base)}:
        cs, bs = list(cur.get(key, [])), list(base.get(key, []))
        if len(cs) > 1 or len(bs) > 1:
            for same in (
                lambda r, b: r.tensor.file == b.file,
                lambda r, b: _basename(r.tensor.file) == _basename(b.file),
            ):
                for r in list(cs):
                    hits = [b for b in bs if same(r, b)]
                    if len(hits) == 1:
                        pairs.append((r, hits[0]))
                        cs.remove(r)
                        bs.remove(hits[0])
        if len(cs) == 1 and len(bs) == 1:
            pairs.append((cs.pop(), bs.pop()))
        new += cs
        gone += bs
    return pairs, new, gone


def diff(result: Result, doc: dict, path: str, thresholds: Thresholds) -> Diff:
    """Every tensor x format x metric of ``result`` against the baseline document ``doc``."""
    base_rows = _baseline_rows(doc)
    pairs, new, gone = match(result.rows, base_rows)
    order = {id(r): i for i, r in enumerate(result.rows)}
    pairs.sort(key=lambda p: order[id(p[0])])
    base_formats = list(dict.fromkeys(
        [f["format"] for f in doc.get("formats", []) if isinstance(f, dict) and isinstance(f.get("format"), str)]
        + [b.format for b in base_rows]
    ))  # fmt: skip
    aggs = {}
    for a in doc.get("aggregates", []):
        if isinstance(a, dict) and isinstance(a.get("format"), str) and isinstance(a.get("metrics"), dict):
            aggs[a["format"]] = {k: v for k, v in ((k, _number(v)) for k, v in a["metrics"].items()) if v is not None}
    header = {k: doc.get(k) for k in ("schema", "fqtool_version", "command", "inputs", "device")}
    return Diff(
        path=path,
        header=header,
        pairs=tuple(Pair(r, b, _changes(r, b, thresholds)) for r, b in pairs),
        new=tuple(Missing(r.tensor.name, r.tensor.file, r.format) for r in new),
        missing=tuple(Missing(b.tensor, b.file, b.format) for b in gone),
        new_formats=tuple(f for f in result.formats if f not in base_formats),
        missing_formats=tuple(f for f in base_formats if f not in result.formats),
        baseline_aggregates=aggs,
    )


def _tensor_names(items: Sequence[Missing], formats_listed: Sequence[str]) -> list[str]:
    """Tensor names of unmatched rows, leaving out rows already explained by a new / missing format."""
    return list(dict.fromkeys(m.tensor for m in items if m.format not in formats_listed))


# --- the report -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    result: Result
    diff: Diff | None
    thresholds: Thresholds
    strict: bool = False
    generated: str = ""  # ISO 8601 UTC

    @property
    def regressions(self) -> list[Change]:
        return self.diff.regressions if self.diff else []

    @property
    def unmatched(self) -> int:
        return len(self.diff.new) + len(self.diff.missing) if self.diff else 0

    @property
    def failed(self) -> bool:
        return bool(self.regressions or self.result.violations or (self.strict and self.unmatched))


def build(
    result: Result,
    baseline: Path | None = None,
    thresholds: Thresholds | None = None,
    strict: bool = False,
    baseline_doc: dict | None = None,
) -> Report:
    """The report of ``result``, diffed against ``baseline`` (read here unless ``baseline_doc``, the
    document :func:`load_baseline` gave for it, is passed)."""
    thresholds = thresholds or Thresholds()
    d = None
    if baseline is not None:
        doc = baseline_doc if baseline_doc is not None else load_baseline(baseline)
        d = diff(result, doc, str(baseline), thresholds)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    return Report(result, d, thresholds, strict, now)


# --- JSON ---------------------------------------------------------------------------------------------


def _change_json(c: Change) -> dict:
    return {
        "tensor": c.tensor,
        "file": c.file,
        "format": c.format,
        "metric": c.metric,
        "baseline": c.baseline,
        "current": c.current,
        "delta": c.delta,
        "rel_delta": c.rel_delta,
        "threshold": None if c.threshold is None else str(c.threshold),
    }


def report_section(rep: Report) -> dict:
    """The "report" section of results.json (see the README's schema notes)."""
    d = rep.diff
    section: dict[str, Any] = {
        "generated": rep.generated,
        "strict": rep.strict,
        "thresholds": rep.thresholds.to_json(),
        "baseline": None,
        "passed": not rep.failed,
    }
    if d is not None:
        section["baseline"] = {"path": d.path, **d.header}
        section["summary"] = {
            "matched": len(d.pairs),
            "regressions": len(d.regressions),
            "improvements": len(d.improvements),
            "new": len(d.new),
            "missing": len(d.missing),
        }
        section["regressions"] = [_change_json(c) for c in d.regressions]
        section["new"] = [{"tensor": m.tensor, "file": m.file, "format": m.format} for m in d.new]
        section["missing"] = [{"tensor": m.tensor, "file": m.file, "format": m.format} for m in d.missing]
        section["new_formats"] = list(d.new_formats)
        section["missing_formats"] = list(d.missing_formats)
        section["diff"] = [
            {
                "tensor": p.current.tensor.name,
                "file": p.current.tensor.file,
                "baseline_file": p.baseline.file,
                "format": p.current.format,
                "metrics": {
                    c.metric: {"baseline": c.baseline, "current": c.current, "delta": c.delta} for c in p.changes
                },
                "regressions": [c.metric for c in p.changes if c.regression],
            }
            for p in d.pairs
        ]
    return section


def to_json(rep: Report) -> dict:
    """``render.to_json(result)`` with the "report" section added (schema stays fqtool.analysis/1:
    adding a field is compatible)."""
    doc = render.to_json(rep.result)
    doc["report"] = render.jsonable(report_section(rep))
    return doc


# --- shared pieces of the human formats -------------------------------------------------------------

# The metrics the compact tables show, in order.
_KEY_METRICS = ("sqnr_db", "nsr", "mse", "max_abs_err", "cosine", "clipped_frac", "flushed_frac")


def _signed(name: str, value: float) -> str:
    """A change as text: format_metric's rounding with an explicit sign for increases."""
    text = render.format_metric(name, value)
    return "+" + text if value > 0 and math.isfinite(value) else text


def _labels(result: Result) -> dict[tuple[str, str], str]:
    """(file, name) -> the name shown; "file-name:name" where one name occurs in several files."""
    keys = list(dict.fromkeys((r.tensor.file, r.tensor.name) for r in result.rows))
    count: dict[str, int] = {}
    for _, n in keys:
        count[n] = count.get(n, 0) + 1
    return {(f, n): f"{_basename(f)}:{n}" if count[n] > 1 else n for f, n in keys}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _status(rep: Report) -> tuple[bool, str]:
    """(passed, one sentence) for the top of the report."""
    r, d = rep.result, rep.diff
    tensors = len({(row.tensor.file, row.tensor.name) for row in r.rows})
    parts = [f"{_plural(tensors, 'tensor')} x {_plural(len(r.formats), 'format')} on {r.device}"]
    if d is not None:
        parts.append(
            f"{_plural(len(d.regressions), 'regression')} vs the baseline "
            f"({len(d.pairs)} tensor x format rows matched, {len(d.new)} new, {len(d.missing)} only in the baseline"
            + (", which fail under --strict" if rep.strict and rep.unmatched else "")
            + ")"
        )
    if r.gates:
        parts.append(f"{_plural(len(r.violations), 'gate violation')}")
    return not rep.failed, "; ".join(parts)


def _limit_text(metric: str, threshold: Threshold | None) -> str:
    """ "drop > 0.10" (SQNR), "rise > 1%" (MSE, relative), "rise > 0.1%" (a fraction, absolute)."""
    if threshold is None:
        return "-"
    direction = "drop" if METRICS[metric].higher_is_better else "rise"
    if threshold.kind == "rel":
        return f"{direction} > {threshold}"
    return f"{direction} > {render.format_metric(metric, threshold.value)}"


def _regression_rows(rep: Report, labels) -> list[list[str]]:
    return [
        [
            labels.get((c.file, c.tensor), c.tensor),
            c.format,
            METRICS[c.metric].label,
            render.format_metric(c.metric, c.baseline),
            render.format_metric(c.metric, c.current),
            _signed(c.metric, c.delta),
            _limit_text(c.metric, c.threshold),
        ]
        for c in rep.regressions
    ]


_REGRESSION_COLS = ["tensor", "format", "metric", "baseline", "current", "change", "limit"]


def _ranked(result: Result) -> list[Aggregate]:
    return sorted(result.aggregates, key=lambda a: (a.rank <= 0, a.rank))


def _ranking_rows(rep: Report) -> tuple[list[str], list[list[str]]]:
    cols = ["rank", "format", "bits/value", *(METRICS[m].label for m in _KEY_METRICS)]
    if rep.diff:
        cols.insert(4, "Δ SQNR dB")
    rows = []
    for a in _ranked(rep.result):
        cells = [str(a.rank) if a.rank > 0 else "-", a.format, f"{a.bits_per_value:g}"]
        cells += [render.format_metric(m, a.metrics.get(m)) for m in _KEY_METRICS]
        if rep.diff:
            delta = _aggregate_sqnr_change(rep, a)
            cells.insert(4, "-" if delta is None else _signed("sqnr_db", delta))
        rows.append(cells)
    return cols, rows


def _aggregate_sqnr_change(rep: Report, a: Aggregate) -> float | None:
    """Today's aggregate SQNR of a format minus the baseline's; None when the baseline lacks it."""
    b = rep.diff.baseline_aggregates.get(a.format, {}).get("sqnr_db") if rep.diff else None
    if b is None:
        return None
    return 0.0 if _same(a.metrics["sqnr_db"], b) else a.metrics["sqnr_db"] - b


def _pair_index(rep: Report) -> dict[int, Pair]:
    return {id(p.current): p for p in rep.diff.pairs} if rep.diff else {}


def _sqnr_change(p: Pair | None) -> str:
    if p is None:
        return "new"
    c = next((c for c in p.changes if c.metric == "sqnr_db"), None)
    return "-" if c is None else _signed("sqnr_db", c.delta)


def _worst_first(result: Result) -> list[Row]:
    def key(r: Row) -> float:
        v = r.metrics.get("sqnr_db", math.nan)
        return -math.inf if math.isnan(v) else v

    return sorted(result.rows, key=key)


# --- Markdown ---------------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


_TEXT_COLS = {"tensor", "format", "metric", "limit"}  # left-aligned; every other column holds numbers


def _md_table(cols: Sequence[str], rows: Sequence[Sequence[str]], limit: int | None, what: str) -> str:
    """A GitHub table; rows beyond ``limit`` are left out with a note saying where the rest is."""
    shown = rows if limit is None else rows[:limit]
    align = "|".join(":---" if c in _TEXT_COLS else "---:" for c in cols)
    lines = ["| " + " | ".join(_md_cell(c) for c in cols) + " |", f"|{align}|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in shown]
    if len(shown) < len(rows):
        lines += [
            "",
            f"_{len(rows) - len(shown)} more {what} not shown here (size limit): see report.html or results.json._",
        ]
    return "\n".join(lines)


def _md_names(names: Sequence[str], first: int = 20) -> str:
    shown = ", ".join(f"`{n}`" for n in names[:first])
    return shown + (f" and {len(names) - first} more" if len(names) > first else "")


def to_markdown(rep: Report, max_bytes: int = MAX_MARKDOWN_BYTES) -> str:
    """report.md: the summary line, regressions first (with a baseline), the ranking, then the
    per-tensor table in a collapsed block; long tables are cut until the text fits ``max_bytes``."""
    limits = {"regressions": 500, "violations": 500, "tensors": 2000}
    while True:
        text = _markdown(rep, limits)
        if len(text.encode("utf-8")) <= max_bytes or not any(limits.values()):
            return text
        limits = {k: v // 2 for k, v in limits.items()}


def _markdown(rep: Report, limits: dict[str, int]) -> str:
    r, d = rep.result, rep.diff
    labels = _labels(r)
    passed, sentence = _status(rep)
    out = [
        "## fqtool report",
        "",
        f"{'✅ **pass**' if passed else '❌ **fail**'}: {sentence}.",
        "",
        f"Inputs: {', '.join(f'`{p}`' for p in r.inputs)}; fqtool {fqtool.__version__}; {rep.generated}.",
    ]
    if d is not None:
        out += ["", f"Baseline: `{d.path}` (fqtool {d.header.get('fqtool_version') or '?'})."]
        if d.regressions:
            out += ["", f"### Regressions ({len(d.regressions)})", ""]
            out.append(_md_table(_REGRESSION_COLS, _regression_rows(rep, labels), limits["regressions"], "regressions"))
        notes = _new_missing_lines(rep)
        if notes:
            out += ["", "### New and missing", "", *(f"- {n}" for n in notes)]
    if r.violations:
        lines = render.violations_text(r).splitlines()
        cut = len(lines) - limits["violations"]
        out += ["", f"### Gate violations ({len(lines)})", "", "```", *lines[: limits["violations"]], "```"]
        if cut > 0:
            out += ["", f"_{cut} more violations not shown here (size limit): see report.html or results.json._"]
    cols, rows = _ranking_rows(rep)
    out += ["", "### Ranking (aggregate over all tensors, 1 = best)", "", _md_table(cols, rows, None, "formats")]
    out += ["", _md_details(rep, labels, limits["tensors"])]
    if r.skipped:
        out += ["", f"Skipped {_plural(len(r.skipped), 'tensor')}: "
                + _md_names([f"{s.name} ({s.reason})" for s in r.skipped], 10) + "."]  # fmt: skip
    return "\n".join(out) + "\n"


def _new_missing_lines(rep: Report) -> list[str]:
    d = rep.diff
    lines = []
    if d.new_formats:
        lines.append(f"new formats (not in the baseline): {_md_names(list(d.new_formats))}")
    if d.missing_formats:
        lines.append(f"missing formats (in the baseline only): {_md_names(list(d.missing_formats))}")
    new = _tensor_names(d.new, d.new_formats)
    gone = _tensor_names(d.missing, d.missing_formats)
    if new:
        lines.append(f"new tensors ({len(new)}, not in the baseline): {_md_names(new)}")
    if gone:
        lines.append(f"missing tensors ({len(gone)}, in the baseline only): {_md_names(gone)}")
    if lines:
        lines.append(
            "not regressions"
            + ("; they fail the report under --strict" if rep.strict else " (use --strict to fail on them)")
        )
    return lines


def _tensor_table(rep: Report, labels) -> tuple[list[str], list[list[str]]]:
    """Per tensor x format, worst SQNR first: the key metrics (and the SQNR change with a baseline)."""
    cols = ["tensor", "format", *(METRICS[m].label for m in _KEY_METRICS)]
    pairs = _pair_index(rep)
    if rep.diff:
        cols.insert(3, "Δ SQNR dB")
    rows = []
    for row in _worst_first(rep.result):
        cells = [labels[(row.tensor.file, row.tensor.name)], row.format]
        cells += [render.format_metric(m, row.metrics.get(m)) for m in _KEY_METRICS]
        if rep.diff:
            cells.insert(3, _sqnr_change(pairs.get(id(row))))
        rows.append(cells)
    return cols, rows


def _md_details(rep: Report, labels, limit: int) -> str:
    cols, rows = _tensor_table(rep, labels)
    # GitHub renders a table inside <details> only with blank lines around it.
    return "\n".join([
        f"<details><summary>Per tensor x format ({len(rows)} rows, worst SQNR first)</summary>",
        "",
        _md_table(cols, rows, limit, "rows"),
        "",
        "</details>",
    ])  # fmt: skip


# --- figures ----------------------------------------------------------------------------------------


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=plotting.SCREEN_DPI)
    return buf.getvalue()


def _by_bits(result: Result) -> list[Aggregate]:
    return sorted(result.aggregates, key=lambda a: (a.bits_per_value, a.rank))


def _bar_label(ax, x: float, y: float, text: str, **kw) -> None:
    """A value label just above (or, for a negative bar, below) the end of a bar."""
    up = y >= 0
    ax.annotate(text, (x, y), xytext=(0, 2 if up else -2), textcoords="offset points", ha="center",
                va="bottom" if up else "top", **kw)  # fmt: skip


def _format_ticks(ax, labels: Sequence[str]) -> None:
    crowded = len(labels) > 6
    ax.set_xticks(range(len(labels)), labels, rotation=30 if crowded else 0, ha="right" if crowded else "center")


def fig_sqnr_bars(rep: Report) -> bytes:
    """Aggregate SQNR per format, formats ordered by bits per value; the baseline as black ticks."""
    aggs = _by_bits(rep.result)
    values = [a.metrics["sqnr_db"] for a in aggs]
    base_aggs = rep.diff.baseline_aggregates if rep.diff else {}
    base = {x: base_aggs[a.format]["sqnr_db"] for x, a in enumerate(aggs) if "sqnr_db" in base_aggs.get(a.format, {})}
    finite = [v for v in [*values, *base.values()] if math.isfinite(v)]
    top, bottom = max([1.0, *finite]), min([0.0, *finite])
    exact_at = top + 0.12 * (top - bottom)  # where the bar of an exact format (inf dB) ends
    with plotting.style():
        fig, ax = plotting.figure(size=(max(5.5, 1.2 + 0.9 * len(aggs)), 4.0))
        for x, v in enumerate(values):
            if math.isnan(v) or v == -math.inf:
                _bar_label(ax, x, 0, render.format_metric("sqnr_db", v), fontsize=8)
                continue
            exact = v == math.inf
            height = exact_at if exact else v
            ax.bar(x, height, width=0.7, color=plotting.PALETTE[0], hatch="//" if exact else None,
                   alpha=0.55 if exact else 1.0)  # fmt: skip
            text = "exact" if exact else render.format_metric("sqnr_db", v)
            if abs(height) > 0.15 * (exact_at - bottom):  # inside the bar's end: clear of the baseline tick
                ax.annotate(text, (x, height), xytext=(0, -5 if height > 0 else 5), textcoords="offset points",
                            ha="center", va="top" if height > 0 else "bottom", fontsize=8,
                            color="black" if exact else "white",
                            bbox={"facecolor": "white", "edgecolor": "none", "pad": 1} if exact else None)  # fmt: skip
            else:
                _bar_label(ax, x, height, text, fontsize=8)
        if base:
            ys = [exact_at if b == math.inf else b for b in base.values()]
            ax.scatter(list(base), ys, marker="_", s=600, color="black", linewidths=2, zorder=3, label="baseline")
            ax.legend(loc="upper left", frameon=False)
        _format_ticks(ax, [f"{a.format}\n{a.bits_per_value:g} bits/value" for a in aggs])
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_ylim(bottom * 1.1, exact_at + 0.1 * (top - bottom))
        ax.set_ylabel("aggregate SQNR (dB), higher is better")
        ax.set_title("SQNR per format over all tensors (numel-weighted), by bits per value")
        ax.grid(axis="x", visible=False)
        return _png(fig)


#: The heatmap shows at most this many tensors (the ones with the lowest SQNR), to stay legible.
HEATMAP_MAX_TENSORS = 60


def _short(label: str, n: int = 48) -> str:
    return label if len(label) <= n else "…" + label[-(n - 1) :]


def fig_sqnr_heatmap(rep: Report) -> bytes:
    """Per-tensor SQNR, tensors x formats, each cell annotated (when the grid is small enough)."""
    import numpy as np

    r = rep.result
    labels = _labels(r)
    grid: dict[tuple[str, str], dict[str, float]] = {}
    for row in r.rows:
        grid.setdefault((row.tensor.file, row.tensor.name), {})[row.format] = row.metrics.get("sqnr_db", math.nan)
    keys = list(grid)
    title = "SQNR (dB) per tensor and format"
    if not keys:  # every tensor was skipped (e.g. all integer): say so rather than draw an empty grid
        with plotting.style():
            fig, ax = plotting.figure(size=(4.5, 1.2))
            ax.set_axis_off()
            ax.text(0.5, 0.5, "no tensor was analysed (see Skipped)", ha="center", va="center")
            ax.set_title(title)
            return _png(fig)
    if len(keys) > HEATMAP_MAX_TENSORS:

        def worst(k):
            vals = [v for v in grid[k].values() if not math.isnan(v)]
            return min(vals) if vals else -math.inf

        keep = set(sorted(keys, key=worst)[:HEATMAP_MAX_TENSORS])
        keys = [k for k in keys if k in keep]
        title += f" (the {HEATMAP_MAX_TENSORS} of {len(grid)} tensors with the lowest SQNR)"
    data = np.array([[grid[k].get(f, math.nan) for f in r.formats] for k in keys], dtype=float)
    finite = data[np.isfinite(data)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    shown = np.where(data == np.inf, hi, np.where(data == -np.inf, lo, data))
    nt, nf = data.shape
    annotate = nt <= 40 and nf <= 14
    with plotting.style():
        import matplotlib

        cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#d9d9d9")  # grey: no value (NaN)
        fig, ax = plotting.figure(size=(max(4.5, 1.5 + 0.95 * nf), max(2.6, 1.2 + 0.3 * nt)))
        im = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, vmin=lo, vmax=hi, aspect="auto")
        ax.grid(False)
        ax.set_xticks(range(nf), list(r.formats), rotation=30, ha="right")
        ax.set_yticks(range(nt), [_short(labels[k]) for k in keys], fontsize=7 if nt > 25 else 8)
        if annotate:
            for i in range(nt):
                for j in range(nf):
                    v = data[i, j]
                    text = "exact" if v == math.inf else render.format_metric("sqnr_db", v)
                    light = math.isnan(v) or (shown[i, j] - lo) / (hi - lo) > 0.6
                    ax.text(j, i, text, ha="center", va="center", fontsize=7, color="black" if light else "white")
        fig.colorbar(im, ax=ax, label="SQNR (dB)", fraction=0.04, pad=0.02)
        ax.set_title(title)
        return _png(fig)


def fig_clip_flush(rep: Report) -> bytes:
    """Aggregate share of clipped and of flushed elements per format, in percent."""
    aggs = _by_bits(rep.result)
    series = (("clipped_frac", "clipped (|x| above the scaling unit's max)"), ("flushed_frac", "flushed to zero"))
    with plotting.style():
        fig, ax = plotting.figure(size=(max(5.5, 1.2 + 0.9 * len(aggs)), 3.6))
        width = 0.38
        peak = 0.0
        for k, (metric, label) in enumerate(series):
            xs = [x + (k - 0.5) * width for x in range(len(aggs))]
            vals = [a.metrics.get(metric, math.nan) for a in aggs]
            pct = [100 * v if math.isfinite(v) else 0.0 for v in vals]
            peak = max([peak, *pct])
            ax.bar(xs, pct, width=width, color=plotting.PALETTE[1 + k], label=label)
            for x, p, v in zip(xs, pct, vals, strict=True):
                _bar_label(ax, x, p, render.format_metric(metric, v), fontsize=7, rotation=90)
        if peak == 0:
            ax.text(0.5, 0.6, "no element clipped or flushed in any format", transform=ax.transAxes, ha="center")
        ax.set_ylim(0, (peak or 1.0) * 1.45)
        _format_ticks(ax, [a.format for a in aggs])
        ax.set_ylabel("share of all elements (%)")
        ax.set_title("Clipped and flushed elements per format (over all tensors)")
        ax.legend(loc="upper left", frameon=False)
        ax.grid(axis="x", visible=False)
        return _png(fig)


FIGURES: dict[str, Callable[[Report], bytes]] = {
    "sqnr_by_format": fig_sqnr_bars,
    "sqnr_heatmap": fig_sqnr_heatmap,
    "clipped_flushed": fig_clip_flush,
}


# --- HTML -------------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1f24;margin:0 auto;
max-width:1280px;padding:1.5em 2em}
h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.2em;margin:1.8em 0 .5em;border-bottom:1px solid #d0d7de}
.status{font-size:1.1em;padding:.6em .9em;border-radius:6px}.pass{background:#dafbe1}.fail{background:#ffebe9}
table{border-collapse:collapse;margin:.4em 0 1em;font-variant-numeric:tabular-nums}
th,td{padding:.25em .7em;border-bottom:1px solid #e4e7eb;text-align:left;white-space:nowrap}
td.n{text-align:right;font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.93em}
table.data th{background:#f6f8fa;cursor:pointer;user-select:none}.scroll{overflow-x:auto}
table.data th::after{content:" \\2195";color:#8c959f;font-size:.8em}
table.data th[data-dir=asc]::after{content:" \\25B2"}table.data th[data-dir=desc]::after{content:" \\25BC"}
table.data tbody tr:nth-child(even){background:#fafbfc}table.data tbody tr:hover{background:#eef4ff}
td.best{font-weight:600;color:#116329}td.bad,tr.bad td{color:#a40e26}
table.meta th{width:11em;color:#57606a;font-weight:normal;vertical-align:top}table.meta td{white-space:normal}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eaeef2}
figcaption,.note{color:#57606a;font-size:.92em}details summary{cursor:pointer;margin:.5em 0}
code{background:#f6f8fa;padding:0 .25em;border-radius:3px}
"""

# Click a header to sort its table (numbers by their data-v value, text alphabetically).
_SCRIPT = """
document.querySelectorAll("table.data th").forEach(function(th){th.addEventListener("click",function(){
var t=th.closest("table"),b=t.tBodies[0],i=th.cellIndex,asc=th.dataset.dir!=="asc";
t.querySelectorAll("th").forEach(function(h){delete h.dataset.dir});th.dataset.dir=asc?"asc":"desc";
function key(r){var c=r.cells[i];return c.dataset.v!==undefined?parseFloat(c.dataset.v):c.textContent}
Array.from(b.rows).sort(function(p,q){var x=key(p),y=key(q),s;
if(typeof x==="number"){if(x===y||(isNaN(x)&&isNaN(y)))return 0;if(isNaN(x))return 1;if(isNaN(y))return -1;s=x<y?-1:1}
else s=String(x).localeCompare(String(y));return asc?s:-s}).forEach(function(r){b.appendChild(r)})})});
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _sort_value(v: float | None) -> str:
    if v is None or math.isnan(v):
        return "NaN"
    return "Infinity" if v == math.inf else "-Infinity" if v == -math.inf else repr(float(v))


@dataclass(frozen=True)
class _Cell:
    text: str
    value: float | None = None  # numeric cells sort by this and are right-aligned
    numeric: bool = False
    css: str = ""


def _num(name: str, v: float | None, css: str = "") -> _Cell:
    return _Cell(render.format_metric(name, v), v, True, css)


def _html_table(cols: Sequence[str], rows: Sequence[Sequence[_Cell]], row_css: Sequence[str] = ()) -> str:
    out = ['<div class="scroll"><table class="data"><thead><tr>', *(f"<th>{_e(c)}</th>" for c in cols)]
    out.append("</tr></thead><tbody>")
    for i, cells in enumerate(rows):
        css = row_css[i] if i < len(row_css) and row_css[i] else ""
        out.append(f'<tr class="{css}">' if css else "<tr>")
        for c in cells:
            classes = " ".join(x for x in ("n" if c.numeric else "", c.css) if x)
            attrs = (f' class="{classes}"' if classes else "") + (
                f' data-v="{_sort_value(c.value)}"' if c.numeric else ""
            )
            out.append(f"<td{attrs}>{_e(c.text)}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _img(name: str, png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img alt="{_e(name)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _meta_table(rep: Report) -> str:
    r, d = rep.result, rep.diff
    items = [
        ("inputs", ", ".join(r.inputs)),
        ("formats", ", ".join(r.formats)),
        ("device", r.device),
        ("fqtool", fqtool.__version__),
        ("generated", rep.generated),
        ("analysis time", f"{r.elapsed_s:.1f} s"),
    ]
    if r.gates:
        items.append(("gates", ", ".join(f"{k} {v:g}" for k, v in r.gates.items())))
    if d is not None:
        items.append(("baseline", f"{d.path} (fqtool {d.header.get('fqtool_version') or '?'}, "
                      f"inputs {', '.join(map(str, d.header.get('inputs') or [])) or '?'})"))  # fmt: skip
        t = rep.thresholds
        limits = ", ".join(f"{METRICS[m].label} {_limit_text(m, x)}" for m, x in t.defaults.items() if x)
        if t.rules:
            limits += f"; {len(t.rules)} rule(s) from {t.source}"
        items.append(("regression limits", limits))
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in items)
    return f'<table class="meta">{rows}</table>'


def _html_ranking(rep: Report) -> str:
    cols, text_rows = _ranking_rows(rep)
    rows = []
    for a, texts in zip(_ranked(rep.result), text_rows, strict=True):
        cells = [_Cell(texts[0], a.rank if a.rank > 0 else None, True), _Cell(a.format),
                 _Cell(texts[2], a.bits_per_value, True)]  # fmt: skip
        cells += [_num(m, a.metrics.get(m)) for m in _KEY_METRICS]
        if rep.diff:
            cells.insert(4, _Cell(texts[4], _aggregate_sqnr_change(rep, a), True))
        rows.append(cells)
    return _html_table(cols, rows)


def _html_grid(rep: Report) -> str:
    """SQNR per tensor (rows) and format (columns), the best format of each tensor in bold."""
    r = rep.result
    labels = _labels(r)
    grid: dict[tuple[str, str], dict[str, float]] = {}
    for row in r.rows:
        grid.setdefault((row.tensor.file, row.tensor.name), {})[row.format] = row.metrics.get("sqnr_db")
    rows = []
    for key, per in grid.items():
        vals = [per.get(f) for f in r.formats]
        scored = [v for v in vals if v is not None and not math.isnan(v)]
        top = max(scored) if scored and len(r.formats) > 1 else None
        rows.append(
            [_Cell(labels[key]), *(_num("sqnr_db", v, "best" if v is not None and v == top else "") for v in vals)]
        )
    return _html_table(["tensor", *r.formats], rows)


def _html_tensors(rep: Report) -> str:
    r = rep.result
    labels = _labels(r)
    pairs = _pair_index(rep)
    cols = ["tensor", "format", "dtype", "shape", "numel"]
    if rep.diff:
        cols.append("Δ SQNR dB")
    cols += [METRICS[m].label for m in METRICS]
    rows, css = [], []
    for row in _worst_first(r):
        t = row.tensor
        cells = [_Cell(labels[(t.file, t.name)]), _Cell(row.format), _Cell(t.dtype),
                 _Cell("x".join(map(str, t.shape)) or "()"), _Cell(str(t.numel), t.numel, True)]  # fmt: skip
        p = pairs.get(id(row))
        if rep.diff:
            c = next((c for c in p.changes if c.metric == "sqnr_db"), None) if p else None
            cells.append(_Cell(_sqnr_change(p), None if c is None else c.delta, True))
        cells += [_num(m, row.metrics.get(m)) for m in METRICS]
        rows.append(cells)
        css.append("bad" if p and any(c.regression for c in p.changes) else "")
    return _html_table(cols, rows, css)


def to_html(rep: Report, figures: Mapping[str, bytes] | None = None) -> str:
    """report.html: one file, no network: inline CSS and script, figures as data: URIs."""
    figures = dict(figures) if figures is not None else {k: f(rep) for k, f in FIGURES.items()}
    r, d = rep.result, rep.diff
    labels = _labels(r)
    passed, sentence = _status(rep)
    body = [
        "<h1>fqtool report</h1>",
        f'<p class="status {"pass" if passed else "fail"}"><b>{"PASS" if passed else "FAIL"}</b>: {_e(sentence)}.</p>',
        _meta_table(rep),
    ]
    if d is not None:
        body.append(f"<h2>Regressions ({len(d.regressions)})</h2>")
        if d.regressions:
            rows = [[_Cell(x) for x in cells] for cells in _regression_rows(rep, labels)]
            for cells, c in zip(rows, d.regressions, strict=True):
                cells[3] = _Cell(cells[3].text, c.baseline, True)
                cells[4] = _Cell(cells[4].text, c.current, True)
                cells[5] = _Cell(cells[5].text, c.delta, True, "bad")
            body.append(_html_table(_REGRESSION_COLS, rows))
        else:
            body.append(f'<p class="note">No metric got worse than its limit in the {len(d.pairs)} matched rows.</p>')
        notes = _new_missing_lines(rep)
        if notes:
            body += [
                "<h2>New and missing</h2>",
                "<ul>",
                *(f"<li>{_e(n.replace('`', ''))}</li>" for n in notes),
                "</ul>",
            ]
    if r.violations:
        lines = render.violations_text(r).splitlines()
        body += [f"<h2>Gate violations ({len(lines)})</h2>", "<ul>", *(f"<li>{_e(x)}</li>" for x in lines), "</ul>"]
    body += [
        "<h2>Ranking</h2>",
        '<p class="note">Aggregate over all tensors (numel-weighted), 1 = best (highest SQNR). '
        "Click a header to sort.</p>",
        _html_ranking(rep),
        _img("sqnr_by_format", figures["sqnr_by_format"],
             "Aggregate SQNR per format, ordered by bits per value" + ("; black ticks: the baseline." if d else ".")),
        "<h2>SQNR per tensor</h2>",
        _img("sqnr_heatmap", figures["sqnr_heatmap"], "Per-tensor SQNR (dB); grey: no value; 'exact': no error."),
        "<details><summary>The same as a table</summary>",
        _html_grid(rep),
        "</details>",
        "<h2>Clipped and flushed elements</h2>",
        _img("clipped_flushed", figures["clipped_flushed"],
             "Share of elements above the largest magnitude their scaling unit can represent (clipped) "
             "and of non-zero elements quantized to zero (flushed), over all tensors."),
        f"<h2>Per tensor x format ({len(r.rows)} rows)</h2>",
        '<p class="note">Worst SQNR first' + (", rows with a regression in red" if d else "") + ".</p>",
        _html_tensors(rep),
    ]  # fmt: skip
    if r.skipped:
        body += [f"<h2>Skipped ({len(r.skipped)})</h2>", "<ul>",
                 *(f"<li>{_e(s.file)}: {_e(s.name)} ({_e(s.reason)})</li>" for s in r.skipped), "</ul>"]  # fmt: skip
    body += [
        "<h2>Metric definitions</h2>",
        '<p class="note">x input, q fake-quantized, d = q - x; sums over the elements where x and q are finite.</p>',
        '<table class="meta">',
        *(f"<tr><th><code>{_e(m.name)}</code></th><td>{_e(m.formula)}; aggregate: {_e(m.aggregate)}</td></tr>"
          for m in METRICS.values()),
        "</table>",
    ]  # fmt: skip
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>fqtool report: {_e(', '.join(r.formats))}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + f"\n<script>{_SCRIPT}</script>\n</body></html>\n"
    )


# --- writing ----------------------------------------------------------------------------------------


def documents(rep: Report) -> dict[str, str]:
    """File name -> text of every report file, all computed before anything is written."""
    return {
        "report.html": to_html(rep),
        "report.md": to_markdown(rep),
        "results.json": json.dumps(to_json(rep), indent=2, allow_nan=False) + "\n",
    }


def write_dir(out_dir: Path, docs: Mapping[str, str]) -> None:
    """Write the report files. A new directory appears whole (built beside it, then renamed); in an
    existing one each file is replaced atomically and nothing else there is touched."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--output-dir {out_dir} is a file; give a directory (it is created if missing)")
    try:
        if out_dir.is_dir():
            for name, text in docs.items():
                render.write_atomic(out_dir / name, text)
            return
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        # os.mkdir (not mkdtemp, which makes 0700) so the directory gets the usual permissions.
        tmp = out_dir.parent / f".{out_dir.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        os.mkdir(tmp)
        try:
            for name, text in docs.items():
                render.write_atomic(tmp / name, text)
            os.rename(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    except OSError as e:
        raise UsageError(
            f"--output-dir {out_dir}: cannot write the report ({e.strerror or e}); nothing was written"
        ) from e


# --- the command --------------------------------------------------------------------------------------

_MAX_LISTED = 20


def _change_line(c: Change) -> str:
    label = METRICS[c.metric].label
    return (
        f"regression: {c.tensor} @ {c.format}: {label} {render.format_metric(c.metric, c.baseline)} -> "
        f"{render.format_metric(c.metric, c.current)} ({_signed(c.metric, c.delta)}; "
        f"limit: {_limit_text(c.metric, c.threshold)})"
    )


def register(app: typer.Typer) -> None:
    @app.command(
        help="Run compare and write DIR/report.html (self-contained), DIR/report.md (for a CI job summary) and "
        "DIR/results.json. With --baseline, diff every tensor x format metric against a previous fqtool JSON "
        "and exit 1 on any regression beyond the limits (see README: report)."
    )
    @handle_errors
    def report(
        output_dir: Annotated[
            Path, typer.Option("--output-dir", metavar="DIR", help="Where report.html, report.md, results.json go.")
        ],
        paths: Annotated[
            list[str] | None,
            typer.Argument(metavar="PATH", help="Files or directories (as for analyze); default: the sample tensors."),
        ] = None,
        formats: Annotated[
            str | None,
            typer.Option("--formats", "-F", metavar="A,B,...", help="Comma-separated formats [default: compare's]."),
        ] = None,
        baseline: Annotated[
            Path | None,
            typer.Option(
                "--baseline", metavar="JSON", help="Previous results (compare/analyze -o json, results.json)."
            ),
        ] = None,
        thresholds: Annotated[
            Path | None,
            typer.Option(
                "--thresholds", metavar="FILE", help="Regression limits per metric / format / tensor (JSON or TOML)."
            ),
        ] = None,
        strict: Annotated[
            bool, typer.Option("--strict", help="New or missing tensors / formats vs the baseline also fail (exit 1).")
        ] = False,
        include: Include = None,
        exclude: Exclude = None,
        device: Device = "auto",
        quiet: Quiet = False,
        min_snr: MinSnr = None,
        max_mse: MaxMse = None,
        backend: Backend = "auto",
    ) -> None:
        from .cli import DEFAULT_COMPARE  # here: cli imports this module to register it
        from .samples import sample_dir

        limits = load_thresholds(thresholds)  # bad options fail before the analysis runs
        doc = load_baseline(baseline) if baseline is not None else None
        if baseline is None and (thresholds or strict):
            err("fqtool: note: --thresholds and --strict apply to a --baseline comparison; there is none")
        if baseline is not None:
            if (output_dir / "results.json").resolve() == baseline.resolve():
                raise UsageError(
                    f"--baseline {baseline} would be overwritten by the report; copy it elsewhere or use another "
                    "--output-dir"
                )
        progress = ProgressOnStderr(enabled=not quiet)
        try:
            result = analysis.run(
                "compare",
                list(paths or [str(sample_dir())]),
                split_list([formats or DEFAULT_COMPARE]),
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
        rep = build(result, baseline, limits, strict, baseline_doc=doc)
        write_dir(output_dir, documents(rep))
        if not quiet:
            err(render.summary_line(result))
            err(f"report: {', '.join(str(output_dir / f) for f in FILES)}")
        regressions = rep.regressions
        for c in regressions[:_MAX_LISTED]:
            err(_change_line(c))
        if len(regressions) > _MAX_LISTED:
            err(f"... and {len(regressions) - _MAX_LISTED} more regressions: see {output_dir / 'report.md'}")
        if rep.strict and rep.unmatched:
            err(f"--strict: {rep.unmatched} tensor x format rows are new or missing vs the baseline")
        if result.violations:
            err(render.violations_text(result))
        if rep.diff is not None and not quiet:
            err(_status(rep)[1])
        if rep.failed:
            raise typer.Exit(EXIT_VIOLATION)


__all__ = [
    "DEFAULT_THRESHOLDS",
    "UPGRADES",
    "Report",
    "Thresholds",
    "build",
    "diff",
    "load_baseline",
    "load_thresholds",
    "register",
    "to_html",
    "to_json",
    "to_markdown",
]
