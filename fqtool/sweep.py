"""``fqtool sweep``: how the error of an MX format changes when its shared exponent is lowered.

The seed's MX scaling test (seed-utilities.md §3-§6, §16 items 5-7), with the exponent rule made
explicit. For an MX format, every tensor is quantized at each point of the grid

    strategy in (simple, auto)  x  rule in (floor, ceil, rceil, even, carry)  x  offset k in 0..7

and each point gets the metrics of ``fqtool.metrics`` (the same code as ``fqtool analyze``).

**What a point means** (formats-mx.md §2.3 and §11.2; ``E`` is a block's shared exponent, the
scale is ``2^(E - emax)`` clamped to the scale range as the kernel does):

- ``simple, rule, k``: every block uses ``E = E_rule(amax) - k``. k = 0 is exactly the kernel's
  ``scale=rule``. The kernel's own offset option, the integer ``minus_exp = m``, is ceil-based
  (``E = ceil(log2 amax) - m``) and overrides ``scale``, so it gives "rule minus k" directly only
  for the ceil rule. For every rule ``E_rule = E_ceil - delta`` with ``delta`` in {0, 1} per block
  (each rule rounds log2 amax down or up, never further; the kernel's
  ``kernels.reference.mx.exact_block_scale`` gives both exponents from the block amax), so for
  k >= 1 the point is computed exactly with the kernel itself: blocks with ``delta = 0`` are taken
  from ``fake_quantize(x, minus_exp=k)``, blocks with ``delta = 1`` from
  ``fake_quantize(x, minus_exp=k+1)``. Both have ``E = E_rule - k``, with the kernel's clamping,
  NaN blocks and ``flush_fp32_subnorms`` rule applied to that exponent. (One corner differs from
  k = 0 only for ``scale=even``: a block whose amax rounds up past float32's largest power of two
  is NaN at k = 0, as in torchao, and uses ``E = 128 - k`` at k >= 1.)
- ``auto, rule, k``: per block, the better of offset 0 and offset k under the same rule: the one
  with the lower squared error over the block (float64 sums; a tie or a NaN error keeps offset 0).
  This is the seed's ``minus_exp="auto"`` (k = 1, ceil) and ``"auto-2"`` (k = 2) generalised to
  every rule and level, except that the comparison uses the format's own rounding (the seed
  always compared with ``round=nearest``). auto at k = 0 is the simple k = 0 point.

Blocks run along the format's axis in groups of ``block`` (0: the whole axis; ``shared_exp=none``:
each element), the last one possibly shorter (a ragged tail). Besides the metrics every point has
``blocks_lowered_frac`` (share of blocks whose exponent is lowered by k: 1 for simple k >= 1, the
auto choice otherwise) and ``mse_gain_pct`` = (MSE at k = 0 - MSE) / MSE at k = 0 x 100 under the
same rule (seed §5 names). The **best** point has the lowest MSE; ties go to the smaller k, then
the earlier rule (in ``--rules`` order), then simple before auto. Over several tensors each point
is aggregated numel-weighted (``fqtool.metrics.aggregate``; the overall best uses that MSE, the
MSE over all elements), with the mean and population std of the per-tensor MSEs (the seed's
curves; the folder figure draws them, its star marks the lowest mean).

Nothing is cached: every run computes every point. ``--json`` writes every point (schema
``fqtool.sweep/1``); ``--replot`` draws the figures again from such a file without computing.
"""

from __future__ import annotations

import io
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer
from rich.console import Console
from rich.text import Text

import fqtool
import kernels
from kernels import chunked
from kernels.ranges import unit_bound
from kernels.reference.mx import SCALE_RULES, exact_block_scale, resolve_mx_element
from kernels.stats import ErrorSums, error_sums

from . import metrics, plotting, render
from .analysis import NATIVE_DTYPES, parse_formats, resolve_device
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
    Quiet,
    TensorLines,
    emit,
    err,
    handle_errors,
    output_format_for,
    split_list,
    stdout_is_terminal,
)
from .results import Skipped, TensorInfo

__all__ = [
    "SCHEMA",
    "RULES",
    "STRATEGIES",
    "Point",
    "TensorSweep",
    "AggregatePoint",
    "SweepResult",
    "check_format",
    "parse_offsets",
    "parse_rules",
    "sweep_tensor",
    "run",
    "to_json",
    "from_json",
    "load_json",
    "figure_data",
    "write_figures",
    "render_result",
    "register",
]

SCHEMA = "fqtool.sweep/1"
RULES: tuple[str, ...] = SCALE_RULES  # floor, ceil, rceil, even, carry: the kernel's scale rules
STRATEGIES = ("simple", "auto")
DEFAULT_OFFSETS = "0:7"
#: Offsets beyond this are meaningless: the 8-bit scale range is 254 binades wide.
MAX_OFFSET = 254
MX_EXAMPLES = "mxfp8_e4m3, mxfp8_e5m2, mxfp6_e3m2, mxfp6_e2m3, mxfp4_e2m1, mxint8 (options as mxfp4_e2m1:block=16)"


# --------------------------------------------------------------------------- results (plain data)


@dataclass(frozen=True)
class Point:
    """One (strategy, rule, k) of one tensor."""

    strategy: str
    rule: str
    k: int
    metrics: dict[str, float]  # fqtool.metrics.compute of the point's error sums
    blocks_lowered_frac: float
    mse_gain_pct: float


@dataclass(frozen=True)
class TensorSweep:
    tensor: TensorInfo
    blocks: int  # scaling blocks in the tensor (a ragged tail counts as one)
    points: tuple[Point, ...]  # strategy-major, then rule (``rules`` order), then k ascending
    best: Point


@dataclass(frozen=True)
class AggregatePoint:
    """One (strategy, rule, k) over all tensors."""

    strategy: str
    rule: str
    k: int
    metrics: dict[str, float]  # fqtool.metrics.aggregate: numel-weighted
    mse_mean: float  # mean of the per-tensor MSEs
    mse_std: float  # their population standard deviation
    blocks_lowered_frac: float  # lowered blocks / all blocks, over all tensors
    mse_gain_pct: float  # of the aggregate MSE against the same rule's aggregate at k = 0


@dataclass(frozen=True)
class SweepResult:
    format: str  # the canonical MX format string the sweep starts from (its scale rule is swept)
    element: str
    block: int
    axis: int
    rules: tuple[str, ...]
    offsets: tuple[int, ...]  # always starts with 0, the baseline
    inputs: tuple[str, ...]
    device: str
    tensors: tuple[TensorSweep, ...]
    aggregate: tuple[AggregatePoint, ...]
    best: AggregatePoint | None  # lowest aggregate (numel-weighted) MSE
    best_by_mean: AggregatePoint | None  # lowest mean-over-tensors MSE (the folder figure's star)
    skipped: tuple[Skipped, ...] = ()
    elapsed_s: float = 0.0


# --------------------------------------------------------------------------- arguments


def check_format(fmt: str) -> kernels.FormatSpec:
    """The MX format to sweep; a UsageError saying what to do for anything else."""
    spec = parse_formats([fmt])[0]
    if spec.family != "mx":
        raise UsageError(
            f"--format {fmt!r} is a {spec.family} format; sweep varies the shared exponent of an MX format: "
            f"use one of {MX_EXAMPLES}"
        )
    if spec["minus_exp"] is not None:
        raise UsageError(f"--format {fmt!r}: sweep sets the exponent offset itself; drop minus_exp and use --offsets")
    if spec["scale"] != "floor":
        raise UsageError(f"--format {fmt!r}: sweep tries every scale rule itself; drop scale= and use --rules")
    if spec.emulate != "exact":
        raise UsageError(f"--format {fmt!r}: sweep evaluates the exact kernel only; drop emulate={spec.emulate}")
    if spec["round"] == "dither":
        raise UsageError(
            f"--format {fmt!r}: round=dither is random, so the points could not be compared; "
            "use round=nearest, even or floor"
        )
    return spec


def parse_rules(text: str | None) -> tuple[str, ...]:
    rules = tuple(dict.fromkeys(r.lower() for r in split_list([text or ""])))
    bad = [r for r in rules if r not in RULES]
    if bad or not rules:
        raise UsageError(f"--rules {text!r}: use scale rules from {', '.join(RULES)} (comma-separated)")
    return rules


def parse_offsets(text: str) -> tuple[int, ...]:
    """``A:B`` (inclusive) or ``a,b,c``; 0, the baseline, is always included."""
    try:
        if ":" in text:
            lo, hi = (int(p) for p in text.split(":"))
            ks = list(range(lo, hi + 1))
        else:
            ks = [int(p) for p in split_list([text])]
    except ValueError:
        ks = []
    if not ks or min(ks) < 0 or max(ks) > MAX_OFFSET:
        raise UsageError(f"--offsets {text!r}: give A:B (e.g. 0:7) or a,b,c with integers from 0 to {MAX_OFFSET}")
    return tuple(sorted({0, *ks}))


# --------------------------------------------------------------------------- the sweep of one tensor


@dataclass(frozen=True)
class _Blocking:
    """The format's scaling blocks: the axis moved last, rows flattened, zero-padded to whole blocks."""

    shape: tuple[int, ...]
    axis: int
    block: int

    @staticmethod
    def of(x: torch.Tensor, spec: kernels.FormatSpec) -> _Blocking:
        axis = spec["axis"]
        if not -x.ndim <= axis < x.ndim:
            raise ValueError(f"axis {axis} is out of range for a {x.ndim}-D tensor; pick the axis with :axis=N")
        axis %= x.ndim
        if spec["shared_exp"] == "none":
            block = 1  # §2.3 step 1: every element is its own block
        else:
            block = spec["block"] or x.shape[axis]  # block 0: one scale over the whole axis (§2.2-3)
        return _Blocking(tuple(x.shape), axis, block)

    @property
    def n(self) -> int:
        return self.shape[self.axis]

    def view(self, t: torch.Tensor) -> torch.Tensor:
        """(rows, blocks, block); padding is zeros, which change no block's max or error sum."""
        t = t.movedim(self.axis, -1).reshape(-1, self.n)
        pad = (-self.n) % self.block
        if pad:
            t = torch.nn.functional.pad(t, (0, pad))
        return t.reshape(t.shape[0], -1, self.block)

    def spread(self, per_block: torch.Tensor) -> torch.Tensor:
        """A (rows, blocks) tensor repeated over each block's elements, in the tensor's shape."""
        rows, nb = per_block.shape
        t = per_block.unsqueeze(-1).expand(rows, nb, self.block).reshape(rows, nb * self.block)[:, : self.n]
        moved = self.shape[: self.axis] + self.shape[self.axis + 1 :] + (self.n,)
        return t.reshape(moved).movedim(-1, self.axis)


@dataclass
class _Quantized:
    """One quantization of x: q, each block's clip bound and squared error, and its error sums."""

    q: torch.Tensor
    bound: torch.Tensor | None  # (rows, blocks), or None: cannot clip
    err: torch.Tensor  # (rows, blocks) float64 sum of (q - x)^2
    sums: ErrorSums


class _Sweeper:
    def __init__(self, x: torch.Tensor, spec: kernels.FormatSpec, backend: str):
        self.x, self.spec, self.backend = x, spec, backend
        self.blk = _Blocking.of(x, spec)
        self.x64 = self.blk.view(x.double())
        self.blocks = self.x64.shape[0] * self.x64.shape[1]
        el = resolve_mx_element(spec["element"])
        # Block amax in float32 (exact for every input dtype); NaN propagates (§2.3 step 1).
        amax = self.blk.view(x.float().abs()).amax(dim=-1)
        self.exponent: Callable[[str], torch.Tensor] = lambda rule: exact_block_scale(
            amax, el, spec["scale_bits"], rule
        )[0]

    def _bound_blocks(self, b: torch.Tensor | None) -> torch.Tensor | None:
        # The bound is one value per block; the first element of every block is a real one.
        return None if b is None else self.blk.view(b)[..., 0]

    def quantize(self, spec: kernels.FormatSpec) -> _Quantized:
        q = kernels.fake_quantize(self.x, spec, backend=self.backend)
        b = unit_bound(self.x, spec)
        err = (self.blk.view(q.double()) - self.x64).square().sum(dim=-1)
        return _Quantized(q, self._bound_blocks(b), err, error_sums(self.x, q, b))

    def select(self, take_a: torch.Tensor, a: _Quantized, b: _Quantized) -> _Quantized:
        """Blocks where ``take_a`` from ``a``, the others from ``b``."""
        if not bool(take_a.any()):
            return b
        if bool(take_a.all()):
            return a
        q = torch.where(self.blk.spread(take_a), a.q, b.q)
        bound = None
        if a.bound is not None and b.bound is not None:
            bound = torch.where(take_a, a.bound, b.bound)
        full = None if bound is None else self.blk.spread(bound)
        err = torch.where(take_a, a.err, b.err)
        return _Quantized(q, bound, err, error_sums(self.x, q, full))


def _gain_pct(mse0: float, mse: float) -> float:
    if math.isnan(mse0) or math.isnan(mse):
        return math.nan
    if mse0 == 0:
        return 0.0 if mse == 0 else -math.inf
    return (mse0 - mse) / mse0 * 100.0


def _sweep_piece(
    x: torch.Tensor, spec: kernels.FormatSpec, rules: Sequence[str], offsets: Sequence[int], backend: str
) -> tuple[dict[tuple[str, str, int], tuple[ErrorSums, int]], int]:
    """Every point's error sums and lowered-block count on a piece of whole blocks, and its block count."""
    sw = _Sweeper(x, spec, backend)
    e_ceil = sw.exponent("ceil")
    # delta = E_ceil - E_rule, in {0, 1} for finite blocks; a NaN block is NaN at every offset.
    lowered_by_one = {r: (e_ceil - sw.exponent(r)) == 1 for r in rules}
    base = {r: sw.quantize(spec.replace(scale=r)) for r in rules}  # k = 0: the kernel's own rule
    out: dict[tuple[str, str, int], tuple[ErrorSums, int]] = {}
    for r in rules:
        out[("simple", r, 0)] = out[("auto", r, 0)] = (base[r].sums, 0)
    ceil_minus: dict[int, _Quantized] = {}  # minus_exp = m quantizations, two alive at a time
    for k in (k for k in offsets if k > 0):
        for m in [m for m in ceil_minus if m < k]:
            del ceil_minus[m]
        for m in (k, k + 1):
            if m not in ceil_minus:
                ceil_minus[m] = sw.quantize(spec.replace(minus_exp=m))
        for r in rules:
            simple = sw.select(lowered_by_one[r], ceil_minus[k + 1], ceil_minus[k])
            out[("simple", r, k)] = (simple.sums, sw.blocks)
            choose_k = simple.err < base[r].err  # strict: a tie or a NaN error keeps offset 0
            out[("auto", r, k)] = (sw.select(choose_k, simple, base[r]).sums, int(choose_k.sum()))
    return out, sw.blocks


def sweep_tensor(
    x: torch.Tensor,
    spec: kernels.FormatSpec,
    rules: Sequence[str] = RULES,
    offsets: Sequence[int] = tuple(range(8)),
    backend: str = "auto",
) -> tuple[list[Point], int, ErrorSums]:
    """Every (strategy, rule, k) point of one tensor (see the module docstring), the number of
    blocks, and the k = 0 sums of the first rule (for the tensor's statistics). ``x`` is not modified.

    On the CPU the tensor is cut into cache-sized pieces of whole blocks (``kernels.chunked``, the
    cut ``fake_quantize`` itself uses), swept in its worker pool, and each point's sums are merged in
    piece order: every block is quantized exactly as in the whole tensor, and memory stays near a few
    pieces whatever the tensor's size. Elsewhere the tensor is one piece."""
    if x.dtype not in NATIVE_DTYPES:
        x = x.to(torch.float32)  # like fqtool analyze: the kernels quantize from float32
    if x.ndim == 0:
        x = x.reshape(1)
    rules, offsets = tuple(rules), sorted({0, *offsets})
    kind, unit = chunked.layout(spec)
    if kind == "elementwise":  # shared_exp=none: one scale per element, whatever the axis
        spec = spec.replace(axis=-1)
    _Blocking.of(x, spec)  # a bad axis fails here, naming the tensor's shape
    if x.device.type == "cpu":
        v, piece_spec, idx = chunked.split(x, spec, kind, unit)
        parts = chunked.map_pieces(lambda i: _sweep_piece(v[i], piece_spec, rules, offsets, backend), idx)
    else:
        parts = [_sweep_piece(x, spec, rules, offsets, backend)]
    blocks = sum(b for _, b in parts)
    total = {key: (ErrorSums(), 0) for key in parts[0][0]}
    for part, _ in parts:
        for key, (sums, lowered) in part.items():
            acc, n = total[key]
            total[key] = (acc.merge(sums), n + lowered)
    points = []
    for strategy in STRATEGIES:
        for r in rules:
            mse0 = metrics.compute(total[(strategy, r, 0)][0])["mse"]
            for k in offsets:
                sums, lowered = total[(strategy, r, k)]
                m = metrics.compute(sums)
                points.append(Point(strategy, r, k, m, lowered / blocks, _gain_pct(mse0, m["mse"])))
    return points, blocks, total[("simple", rules[0], 0)][0]


def _best(items: Sequence, rules: Sequence[str], value: Callable[[Any], float]):
    """Lowest value; ties: smaller k, then rule order, then simple before auto. NaN never wins."""
    if not items:
        return None

    def key(p):
        v = value(p)
        return (math.isnan(v), v, p.k, rules.index(p.rule), STRATEGIES.index(p.strategy))

    return min(items, key=key)


def _aggregate(tensors: Sequence[TensorSweep], rules: Sequence[str], offsets: Sequence[int]) -> list[AggregatePoint]:
    if not tensors:
        return []
    numels = [t.tensor.numel for t in tensors]
    blocks = [t.blocks for t in tensors]
    by_key = [{(p.strategy, p.rule, p.k): p for p in t.points} for t in tensors]
    agg: dict[tuple[str, str, int], dict[str, float]] = {}
    for strategy in STRATEGIES:
        for r in rules:
            for k in offsets:
                pts = [d[(strategy, r, k)] for d in by_key]
                agg[(strategy, r, k)] = metrics.aggregate([p.metrics for p in pts], numels)
    out = []
    for strategy in STRATEGIES:
        for r in rules:
            for k in offsets:
                pts = [d[(strategy, r, k)] for d in by_key]
                mses = np.array([p.metrics["mse"] for p in pts], dtype=np.float64)
                mses = mses[~np.isnan(mses)]
                lowered = math.fsum(p.blocks_lowered_frac * b for p, b in zip(pts, blocks, strict=True))
                m = agg[(strategy, r, k)]
                out.append(
                    AggregatePoint(
                        strategy,
                        r,
                        k,
                        m,
                        float(mses.mean()) if mses.size else math.nan,
                        float(mses.std()) if mses.size else math.nan,
                        lowered / sum(blocks),
                        _gain_pct(agg[(strategy, r, 0)]["mse"], m["mse"]),
                    )
                )
    return out


#: progress(tensors_done, tensors_total, current_name)
Progress = Callable[[int, int, str], None]


def run(
    paths: Sequence[str],
    fmt: str,
    *,
    rules: Sequence[str] = RULES,
    offsets: Sequence[int] = tuple(range(8)),
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    device: str = "cpu",
    backend: str = "auto",
    progress: Progress | None = None,
) -> SweepResult:
    """Scan ``paths`` and sweep every floating tensor (one at a time). Never prints."""
    t0 = time.perf_counter()
    spec = check_format(fmt)
    rules = tuple(rules)
    offsets = tuple(sorted({0, *offsets}))
    dev = resolve_device(device)
    sources, skipped = scan(paths, include, exclude)
    tensors = []
    for i, src in enumerate(sources):
        if progress:
            progress(i, len(sources), src.name)
        x = src.load().to(dev)
        try:
            points, blocks, sums = sweep_tensor(x, spec, rules, offsets, backend)
        except (ValueError, TypeError) as e:
            raise InputError(f"{src.file}: tensor '{src.name}' {list(src.shape)}: {e}") from e
        del x
        info = TensorInfo(
            name=src.name,
            file=src.file,
            shape=tuple(src.shape),
            dtype=str(src.dtype).removeprefix("torch."),
            numel=math.prod(src.shape),
            stats=metrics.tensor_stats(sums),
            meta=dict(src.meta),
        )
        tensors.append(TensorSweep(info, blocks, tuple(points), _best(points, rules, lambda p: p.metrics["mse"])))
    aggregate = _aggregate(tensors, rules, offsets)
    return SweepResult(
        format=str(spec),
        element=spec["element"],
        block=spec["block"],
        axis=spec["axis"],
        rules=rules,
        offsets=offsets,
        inputs=tuple(str(p) for p in paths),
        device=str(dev),
        tensors=tuple(tensors),
        aggregate=tuple(aggregate),
        best=_best(aggregate, rules, lambda p: p.metrics["mse"]),
        best_by_mean=_best(aggregate, rules, lambda p: p.mse_mean),
        skipped=tuple(skipped),
        elapsed_s=time.perf_counter() - t0,
    )


# --------------------------------------------------------------------------- JSON


def _point_json(p: Point | AggregatePoint) -> dict:
    d = {
        "strategy": p.strategy,
        "rule": p.rule,
        "k": p.k,
        "metrics": p.metrics,
        "blocks_lowered_frac": p.blocks_lowered_frac,
        "mse_gain_pct": p.mse_gain_pct,
    }
    if isinstance(p, AggregatePoint):
        d |= {"mse_mean": p.mse_mean, "mse_std": p.mse_std}
    return d


def _key(p: Point | AggregatePoint | None) -> dict | None:
    return None if p is None else {"strategy": p.strategy, "rule": p.rule, "k": p.k}


def to_json(result: SweepResult) -> dict:
    """The JSON document: every point, strict JSON (non-finite floats as "inf" / "-inf" / "nan")."""
    doc = {
        "schema": SCHEMA,
        "fqtool_version": fqtool.__version__,
        "command": "sweep",
        "format": result.format,
        "element": result.element,
        "block": result.block,
        "axis": result.axis,
        "rules": list(result.rules),
        "offsets": list(result.offsets),
        "strategies": list(STRATEGIES),
        "definitions": {
            "simple": "every block: E = E_rule(block amax) - k",
            "auto": "per block, offset 0 or k under the rule, whichever has the lower block squared error "
            "(ties keep 0)",
            "blocks_lowered_frac": "share of blocks whose exponent is lowered by k",
            "mse_gain_pct": "(mse at k=0 - mse) / mse at k=0 * 100, same rule",
            "best": "lowest mse; ties: smaller k, then rule order, then simple before auto",
            "aggregate": "metrics numel-weighted over tensors (fqtool.metrics.aggregate); mse_mean/mse_std over "
            "tensors (population std)",
        },
        "inputs": list(result.inputs),
        "device": result.device,
        "tensors": [
            {
                "name": t.tensor.name,
                "file": t.tensor.file,
                "shape": list(t.tensor.shape),
                "dtype": t.tensor.dtype,
                "numel": t.tensor.numel,
                "blocks": t.blocks,
                "stats": t.tensor.stats,
                "meta": t.tensor.meta,
                "best": _key(t.best),
                "points": [_point_json(p) for p in t.points],
            }
            for t in result.tensors
        ],
        "aggregate": {
            "tensors": len(result.tensors),
            "numel": sum(t.tensor.numel for t in result.tensors),
            "best": _key(result.best),
            "best_by_mean": _key(result.best_by_mean),
            "points": [_point_json(p) for p in result.aggregate],
        },
        "skipped": [{"name": s.name, "file": s.file, "reason": s.reason} for s in result.skipped],
        "elapsed_s": result.elapsed_s,
    }
    return render.jsonable(doc)


def _num(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise ValueError(f"expected a number, got {v!r}")
    return float(v)  # "inf", "-inf" and "nan" come back as floats


def _metrics_from(d: dict) -> dict[str, float]:
    return {name: _num(d[name]) for name in METRICS}


def _find(points: Sequence, key: dict | None):
    if key is None:
        return None
    for p in points:
        if (p.strategy, p.rule, p.k) == (key["strategy"], key["rule"], key["k"]):
            return p
    raise ValueError(f"best point {key} is not among the points")


def from_json(doc: Any, source: str = "JSON") -> SweepResult:
    """A :class:`SweepResult` from :func:`to_json`'s document; InputError if it is not one."""
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        found = doc.get("schema") if isinstance(doc, dict) else None
        raise InputError(
            f"{source}: not a fqtool sweep result (schema {found!r}, expected {SCHEMA!r}); "
            "write one with fqtool sweep ... --json FILE"
        )
    try:
        tensors = []
        for t in doc["tensors"]:
            pts = tuple(
                Point(
                    str(p["strategy"]),
                    str(p["rule"]),
                    int(p["k"]),
                    _metrics_from(p["metrics"]),
                    _num(p["blocks_lowered_frac"]),
                    _num(p["mse_gain_pct"]),
                )
                for p in t["points"]
            )
            info = TensorInfo(
                name=str(t["name"]),
                file=str(t["file"]),
                shape=tuple(int(s) for s in t["shape"]),
                dtype=str(t["dtype"]),
                numel=int(t["numel"]),
                stats={k: _num(v) for k, v in t["stats"].items()},
                meta=dict(t.get("meta", {})),
            )
            tensors.append(TensorSweep(info, int(t["blocks"]), pts, _find(pts, t["best"])))
        agg = doc["aggregate"]
        aggregate = tuple(
            AggregatePoint(
                str(p["strategy"]),
                str(p["rule"]),
                int(p["k"]),
                _metrics_from(p["metrics"]),
                _num(p["mse_mean"]),
                _num(p["mse_std"]),
                _num(p["blocks_lowered_frac"]),
                _num(p["mse_gain_pct"]),
            )
            for p in agg["points"]
        )
        return SweepResult(
            format=str(doc["format"]),
            element=str(doc["element"]),
            block=int(doc["block"]),
            axis=int(doc["axis"]),
            rules=tuple(str(r) for r in doc["rules"]),
            offsets=tuple(int(k) for k in doc["offsets"]),
            inputs=tuple(str(p) for p in doc["inputs"]),
            device=str(doc["device"]),
            tensors=tuple(tensors),
            aggregate=aggregate,
            best=_find(aggregate, agg["best"]),
            best_by_mean=_find(aggregate, agg["best_by_mean"]),
            skipped=tuple(Skipped(str(s["name"]), str(s["file"]), str(s["reason"])) for s in doc.get("skipped", [])),
            elapsed_s=_num(doc.get("elapsed_s", 0.0)),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise InputError(
            f"{source}: malformed {SCHEMA} document ({type(e).__name__}: {e}); write it again with fqtool sweep --json"
        ) from e


def read_json_file(path: Path, what: str) -> Any:
    """A JSON file's content; InputError naming the file when it is missing or not JSON."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"{path}: cannot read it ({e.strerror or e}); give the JSON file {what} wrote") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e}); give the JSON file {what} wrote") from e


def load_json(path: Path) -> SweepResult:
    return from_json(read_json_file(path, "fqtool sweep --json"), str(path))


# --------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Curve:
    strategy: str
    rule: str
    ks: tuple[int, ...]
    mse: tuple[float, ...]
    err: tuple[float, ...] | None  # +-1 std, folder figure only


@dataclass(frozen=True)
class FigureData:
    """Everything one sweep figure draws (built from a result, so a replot draws the same)."""

    title: str
    ylabel: str
    curves: tuple[Curve, ...]
    best: tuple[str, str, int, float] | None  # strategy, rule, k, MSE of the starred point
    best_label: str


def _elem_text(result: SweepResult) -> str:
    return f"{result.format} (block {result.block or 'whole axis'}, axis {result.axis})"


def figure_data(result: SweepResult, tensor: int | None = None) -> FigureData:
    """The data of the folder figure (``tensor`` None: mean +- std over tensors) or one tensor's."""
    curves = []
    if tensor is None:
        pts = result.aggregate
        n = len(result.tensors)
        title = f"{_elem_text(result)}: mean over {n} tensor{'s' if n != 1 else ''}"
        ylabel = "MSE, mean over tensors (±1 std)"
        best = result.best_by_mean
        best_label = "lowest mean MSE"
    else:
        t = result.tensors[tensor]
        pts = t.points
        title = f"{t.tensor.name}\n{_elem_text(result)}"
        ylabel = "MSE (squared tensor units)"
        best = t.best
        best_label = "lowest MSE"
    for strategy in STRATEGIES:
        for r in result.rules:
            mine = sorted((p for p in pts if p.strategy == strategy and p.rule == r), key=lambda p: p.k)
            if tensor is None:
                ys = tuple(p.mse_mean for p in mine)
                errs: tuple[float, ...] | None = tuple(p.mse_std for p in mine)
            else:
                ys, errs = tuple(p.metrics["mse"] for p in mine), None
            curves.append(Curve(strategy, r, tuple(p.k for p in mine), ys, errs))
    star = None
    if best is not None:
        y = best.mse_mean if tensor is None else best.metrics["mse"]
        star = (best.strategy, best.rule, best.k, y)
    return FigureData(title, ylabel, tuple(curves), star, best_label)


_LINESTYLE = {"simple": "-", "auto": "--"}
_STRATEGY_TEXT = {"simple": "simple", "auto": "auto"}


def plot_sweep(fd: FigureData, path: Path, paper: bool = False) -> Path:
    """Semilog-y MSE vs offset k: a colour per rule, solid = simple, dashed = auto, best starred.

    The legend sits below the axes inside the figure, so a paper figure keeps its 3.5 in width.
    Error bars (folder figure) are shifted a little per curve so that they do not hide each other."""
    from matplotlib.lines import Line2D

    rules = list(dict.fromkeys(c.rule for c in fd.curves))
    colour = {r: plotting.PALETTE[i % len(plotting.PALETTE)] for i, r in enumerate(rules)}
    with plotting.style(paper):
        fig, ax = plotting.figure(paper)
        fig.set_layout_engine("constrained")
        ax.set_yscale("log", nonpositive="clip")
        marker_size = 2 if paper else 4
        shift = 0.025 * (np.arange(len(fd.curves)) - (len(fd.curves) - 1) / 2)
        for c, dx in zip(fd.curves, shift, strict=True):
            ys = np.array(c.mse, dtype=np.float64)
            if not np.isfinite(ys).any():
                continue
            kw = dict(color=colour[c.rule], linestyle=_LINESTYLE[c.strategy], marker="o", markersize=marker_size)
            if c.err is not None and np.nan_to_num(np.array(c.err, dtype=np.float64)).any():
                _, caps, bars = ax.errorbar(
                    np.array(c.ks) + dx, ys, yerr=np.array(c.err, dtype=np.float64), capsize=1.5 if paper else 2.5,
                    elinewidth=0.5 if paper else 0.8, **kw,
                )  # fmt: skip
                for artist in (*caps, *bars):
                    artist.set_alpha(0.4)  # the spread stays visible without hiding the curves
            else:
                ax.plot(c.ks, ys, **kw)
        handles = [Line2D([], [], color=colour[r], label=r) for r in rules]
        handles += [Line2D([], [], color="0.2", linestyle=_LINESTYLE[s], label=_STRATEGY_TEXT[s]) for s in STRATEGIES]
        if fd.best is not None and math.isfinite(fd.best[3]) and fd.best[3] > 0:
            s, r, k, y = fd.best
            ax.plot(
                [k], [y], marker="*", markersize=8 if paper else 15, color=colour.get(r, "k"),
                markeredgecolor="black", markeredgewidth=0.5, linestyle="none", zorder=5,
            )  # fmt: skip
            handles.append(
                Line2D(
                    [], [], marker="*", color="w", markerfacecolor="0.6", markeredgecolor="black",
                    markersize=6 if paper else 11, label=f"{fd.best_label}: {s} {r} k={k} ({y:.3g})",
                )
            )  # fmt: skip
        ys = np.array([y for c in fd.curves for y in c.mse], dtype=np.float64)
        positive = ys[np.isfinite(ys) & (ys > 0)]
        if positive.size and any(c.err is not None for c in fd.curves):
            # Lower error bars that reach 0 run off the log axis: keep the axis on the curves.
            ax.set_ylim(bottom=positive.min() / 2)
        ks = sorted({k for c in fd.curves for k in c.ks})
        ax.set_xticks(ks)
        ax.set_xlabel("shared-exponent offset k (E = rule's exponent − k)")
        ax.set_ylabel(fd.ylabel)
        ax.set_title(fd.title)
        fig.legend(
            handles=handles, loc="outside lower center", ncol=3 if paper else 4, frameon=False,
            columnspacing=1.0, handlelength=1.8,
        )  # fmt: skip
        return plotting.save(fig, path, paper)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "tensor"


def figure_paths(result: SweepResult, out_dir: Path, image_format: str, per_tensor: bool) -> dict[int | None, Path]:
    """Figure -> file: None is the folder figure; i the i-th tensor's (numbered: names repeat across files)."""
    stem = f"sweep_{_safe(result.format)}"
    paths: dict[int | None, Path] = {None: out_dir / f"{stem}_all.{image_format}"}
    if per_tensor:
        for i, t in enumerate(result.tensors):
            paths[i] = out_dir / f"{stem}_{i:03d}_{_safe(t.tensor.name)}.{image_format}"
    return paths


def write_figures(
    result: SweepResult, out_dir: Path, image_format: str = "png", per_tensor: bool = False, paper: bool = False
) -> list[Path]:
    if not result.tensors:
        return []
    written = []
    for which, path in figure_paths(result, out_dir, image_format, per_tensor).items():
        written.append(plot_sweep(figure_data(result, which), path, paper))
    return written


# --------------------------------------------------------------------------- tables


def tables_text(sections: Sequence, output_format: str, *, plain: bool, width: int | None, note: str | None) -> str:
    """``fqtool.render``'s table layouts (rich, plain columns, Markdown) for other commands' sections."""
    if output_format == "markdown":
        return render.markdown_sections(list(sections), note)
    if plain:
        return render.plain_sections(list(sections), note)
    console = Console(
        file=io.StringIO(), width=width or 200, force_terminal=True, color_system="standard", highlight=False,
        emoji=False, legacy_windows=False,
    )  # fmt: skip
    for i, s in enumerate(sections):
        if i:
            console.print()
        console.print(render.rich_table(s))
    if note:
        console.print(Text(note, style="dim"))
    return console.file.getvalue()


def _pct(v: float) -> str:
    """A gain in percent: 2 decimals, or 2 significant digits when smaller than 0.01 (never a false 0.00)."""
    if not math.isfinite(v):
        return repr(float(v))
    return f"{v:.2f}" if v == 0 or abs(v) >= 0.01 else f"{v:.2g}"


def _label(p) -> str:
    return f"{p.strategy} {p.rule} k={p.k}"


def _sections(result: SweepResult) -> list:
    C = render.Col
    fm = render.format_metric
    cols = [
        C("tensor", "tensor", right=False),
        C("shape", "shape"),
        C("best", "best (strategy rule k)", right=False),
        C("mse", "MSE"),
        C("sqnr_db", "SQNR dB"),
        C("mse_k0", "MSE k=0"),
        C("mse_gain_pct", "gain %"),
        C("blocks_lowered_frac", "lowered"),
    ]
    rows = []
    for t in result.tensors:
        b = t.best
        k0 = next(p for p in t.points if (p.strategy, p.rule, p.k) == ("simple", b.rule, 0))
        rows.append(
            [
                t.tensor.name,
                "x".join(map(str, t.tensor.shape)) or "()",
                _label(b),
                fm("mse", b.metrics["mse"]),
                fm("sqnr_db", b.metrics["sqnr_db"]),
                fm("mse", k0.metrics["mse"]),
                _pct(b.mse_gain_pct),
                fm("clipped_frac", b.blocks_lowered_frac),
            ]
        )
    per_tensor = render.Section(f"best point per tensor ({result.format})", cols, rows)

    cols = [
        C("rule", "rule", right=False),
        C("strategy", "strategy", right=False),
        C("best_k", "best k"),
        C("mse", "MSE"),
        C("sqnr_db", "SQNR dB"),
        C("mse_k0", "MSE k=0"),
        C("mse_gain_pct", "gain %"),
        C("blocks_lowered_frac", "lowered"),
        C("mse_mean", "mean MSE"),
        C("mse_std", "std MSE"),
    ]
    rows, best = [], set()
    for r in result.rules:
        for strategy in STRATEGIES:
            mine = [p for p in result.aggregate if p.rule == r and p.strategy == strategy]
            p = _best(mine, result.rules, lambda p: p.metrics["mse"])
            k0 = next(q for q in mine if q.k == 0)
            if p is result.best:
                best.add((len(rows), 2))
            rows.append(
                [
                    r,
                    strategy,
                    str(p.k),
                    fm("mse", p.metrics["mse"]),
                    fm("sqnr_db", p.metrics["sqnr_db"]),
                    fm("mse", k0.metrics["mse"]),
                    _pct(p.mse_gain_pct),
                    fm("clipped_frac", p.blocks_lowered_frac),
                    fm("mse", p.mse_mean),
                    fm("mse", p.mse_std),
                ]
            )
    n = len(result.tensors)
    title = f"best offset per rule and strategy over {n} tensor{'s' if n != 1 else ''} (numel-weighted MSE)"
    return [per_tensor, render.Section(title, cols, rows, best)]


CSV_HEADER = (
    "kind", "tensor", "file", "format", "strategy", "rule", "k", "numel", *METRICS,
    "blocks_lowered_frac", "mse_gain_pct", "mse_mean", "mse_std",
)  # fmt: skip


def to_csv(result: SweepResult) -> str:
    """Every point: "tensor" rows, then "aggregate" rows (tensor "(all)"); a fixed header."""
    import csv

    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_HEADER)
    num = render.csv_number
    for t in result.tensors:
        for p in t.points:
            w.writerow(
                ["tensor", t.tensor.name, t.tensor.file, result.format, p.strategy, p.rule, p.k, t.tensor.numel]
                + [num(p.metrics[m]) for m in METRICS]
                + [num(p.blocks_lowered_frac), num(p.mse_gain_pct), "", ""]
            )
    numel = sum(t.tensor.numel for t in result.tensors)
    for p in result.aggregate:
        w.writerow(
            ["aggregate", "(all)", "", result.format, p.strategy, p.rule, p.k, numel]
            + [num(p.metrics[m]) for m in METRICS]
            + [num(p.blocks_lowered_frac), num(p.mse_gain_pct), num(p.mse_mean), num(p.mse_std)]
        )
    return out.getvalue()


def render_result(result: SweepResult, output_format: str, *, plain: bool = True, width: int | None = None) -> str:
    if output_format == "json":
        return json.dumps(to_json(result), indent=2, allow_nan=False) + "\n"
    if output_format == "csv":
        return to_csv(result)
    note = None
    if result.best is not None:
        b = result.best
        note = (
            f"best overall: {_label(b)}, MSE {render.format_metric('mse', b.metrics['mse'])} "
            f"({_pct(b.mse_gain_pct)}% below k=0 of {b.rule}); every point: -o json or --json FILE"
        )
    if result.skipped:
        skipped = f"skipped {len(result.skipped)} tensor(s): " + ", ".join(
            f"{s.name} ({s.reason})" for s in result.skipped[:3]
        )
        note = skipped if note is None else f"{note}\n{skipped}"
    return tables_text(_sections(result), output_format, plain=plain, width=width, note=note)


# --------------------------------------------------------------------------- CLI

# Figure options, the same in every command that draws (sweep, outliers).
OutputDir = Annotated[
    Path | None,
    typer.Option("--output-dir", metavar="DIR", help="Write the figures into this directory (created if needed)."),
]
ImageFormat = Annotated[
    str,
    typer.Option(
        "--image-format", metavar="EXT", help="Figure file type: png, pdf or svg (the seed wrote PDF; fqtool: png)."
    ),
]
Paper = Annotated[bool, typer.Option("--paper", help="Paper-size figures: 3.5 x 2.5 in, 600 dpi.")]
PerTensor = Annotated[bool, typer.Option("--per-tensor", help="Also one figure per tensor.")]


def check_image_format(image_format: str) -> str:
    ext = image_format.strip().lower().lstrip(".")
    if "." + ext not in plotting.FORMATS:
        raise UsageError(f"--image-format {image_format!r}: use png, pdf or svg")
    return ext


def check_writable(path: Path | None, option: str) -> None:
    """Fail before computing when an output file's folder does not exist."""
    if path is not None and not Path(path).parent.is_dir():
        raise UsageError(f"{option} {path}: the folder {Path(path).parent} does not exist; create it or pick another")


def figure_dir(output_dir: Path | None, replot: Path | None, per_tensor: bool, paper: bool) -> Path | None:
    """Where figures go: --output-dir, else the replotted JSON's folder, else nowhere."""
    if output_dir is not None:
        return output_dir
    if replot is not None:
        return replot.parent
    if per_tensor or paper:
        raise UsageError("--per-tensor and --paper shape figures: give --output-dir DIR to write them")
    return None


def register(app: typer.Typer) -> None:
    @app.command(
        help="The MX shared-exponent sweep: metrics at each offset k of the block exponent below each scale rule "
        "(floor, ceil, rceil, even, carry), for every block ('simple') or per block when it helps ('auto'); "
        "the best point per tensor and overall. Figures (semilog MSE vs k) with --output-dir; every point in JSON "
        "(--json FILE, schema fqtool.sweep/1), which --replot draws again without computing."
    )
    @handle_errors
    def sweep(
        paths: Annotated[
            list[str] | None,
            typer.Argument(metavar="PATH", help="Files or directories (as for analyze)."),
        ] = None,
        format: Annotated[
            str | None,
            typer.Option("--format", "-f", metavar="F", help=f"The MX format: {MX_EXAMPLES}."),
        ] = None,
        rules: Annotated[
            str, typer.Option("--rules", metavar="A,B,...", help="Scale rules to sweep (comma-separated).")
        ] = ",".join(RULES),
        offsets: Annotated[
            str,
            typer.Option("--offsets", metavar="A:B", help="Exponent offsets k: A:B (inclusive) or a,b,c; 0 always."),
        ] = DEFAULT_OFFSETS,
        include: Include = None,
        exclude: Exclude = None,
        device: Device = "auto",
        output_format: OutputFormat = None,
        output: Output = None,
        json_file: Annotated[
            Path | None, typer.Option("--json", metavar="FILE", help="Also write every point as JSON to FILE.")
        ] = None,
        output_dir: OutputDir = None,
        per_tensor: PerTensor = False,
        image_format: ImageFormat = "png",
        paper: Paper = False,
        replot: Annotated[
            Path | None,
            typer.Option(
                "--replot", metavar="JSON", help="Draw the figures (and print the table) from a --json file; no PATH."
            ),
        ] = None,
        backend: Backend = "auto",
        quiet: Quiet = False,
    ) -> None:
        fmt = output_format_for(output_format, output)
        ext = check_image_format(image_format)
        out_dir = figure_dir(output_dir, replot, per_tensor, paper)
        check_writable(json_file, "--json")
        check_writable(output, "--output")
        if replot is not None:
            if paths or format:
                raise UsageError("--replot draws from its JSON file: give no PATH and no --format with it")
            result = load_json(replot)
        else:
            if not paths:
                raise UsageError("give the tensors to sweep (PATH...) or --replot FILE.json")
            if not format:
                raise UsageError("give the MX format to sweep with --format, e.g. --format mxfp4_e2m1")
            result = run(
                paths, format, rules=parse_rules(rules), offsets=parse_offsets(offsets),
                include=split_list(include), exclude=split_list(exclude), device=device, backend=backend,
                progress=TensorLines("sweep", not quiet),
            )  # fmt: skip
        if json_file is not None:
            _write_json(result, json_file)
        written = write_figures(result, out_dir, ext, per_tensor, paper) if out_dir is not None else []
        plain = output is not None or not stdout_is_terminal()
        width = None if plain else Console().width
        emit(render_result(result, fmt, plain=plain, width=width), output)
        if not quiet:
            n = len(result.tensors)
            numel = sum(t.tensor.numel for t in result.tensors)
            err(
                f"{n} tensor{'s' if n != 1 else ''} ({numel} elements) x {len(result.rules)} rules x "
                f"{len(result.offsets)} offsets x 2 strategies"
                + ("" if replot else f" in {result.elapsed_s:.1f} s")
                + (f"; {len(written)} figure(s) in {out_dir}" if written else "")
            )


def _write_json(result: SweepResult, path: Path) -> None:
    try:
        render.write_atomic(path, json.dumps(to_json(result), indent=2, allow_nan=False) + "\n")
    except OSError as e:
        raise UsageError(f"--json {path}: cannot write it ({e.strerror or e}); nothing was written") from e
