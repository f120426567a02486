"""The analysis: tensors in, one :class:`~fqtool.results.Row` per tensor x format out. Never prints.

Tensors are read one at a time (``fqtool.io``), moved to the device, fake-quantized to every
format with the error sums fused in (:func:`kernels.stats.format_sums`), and dropped before the
next one is read, so memory stays near the largest tensor whatever the checkpoint's size. On a
CUDA device the next tensors are read and copied while one is analysed (``fqtool.staging``) and
the Triton backend computes each format's sums in one pass without writing the quantized
tensor. Metrics come from the sums (``fqtool.metrics``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

import torch

import kernels
from kernels.stats import format_sums

from . import metrics
from .errors import DeviceError, UsageError
from .io import TensorSource, scan
from .results import Aggregate, Result, Row, TensorInfo, Violation
from .staging import stream_to_cuda

#: Input dtypes the format kernels take as they are; other floating dtypes are analysed as float32
#: (float8 and float16 upcast exactly; float64 is rounded to float32, as every format's kernel
#: quantizes from float32).
NATIVE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

#: progress(tensors_done, tensors_total, bytes_done, bytes_total, current_name)
Progress = Callable[[int, int, int, int, str], None]


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N``, ``npu``, ``npu:N`` or ``auto`` (cuda, else npu, else cpu)."""
    name = name.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("npu") if _npu_available() else torch.device("cpu")
    if name.split(":")[0] == "npu":  # torch knows the "npu" device type only once torch_npu is imported
        if not _npu_available():
            raise DeviceError(
                f"--device {name}: no Ascend NPU is usable (torch_npu is not installed or finds no device); "
                "install torch_npu matching your CANN and torch versions, or use --device cpu"
            )
        return torch.device(name)
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise UsageError(f"--device {name!r}: not a device (use cpu, cuda, cuda:N, npu or auto)") from e
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise DeviceError(
                f"--device {name}: no CUDA GPU is usable (torch {torch.__version__} is {build}); "
                "install a CUDA build of torch on a machine with an NVIDIA GPU, or use --device cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"--device {name}: there are only {torch.cuda.device_count()} CUDA device(s) "
                f"(cuda:0..cuda:{torch.cuda.device_count() - 1})"
            )
        return dev
    raise UsageError(f"--device {name!r}: unsupported device type {dev.type!r} (use cpu, cuda, cuda:N, npu or auto)")


def _npu_available() -> bool:
    try:
        import torch_npu  # noqa: F401  (registers the "npu" device with torch)
    except Exception:  # noqa: BLE001 - any import failure means no NPU
        return False
    npu = getattr(torch, "npu", None)
    return bool(npu is not None and npu.is_available())


def parse_formats(names: Sequence[str]) -> list[kernels.FormatSpec]:
    """Format strings -> specs, in order, duplicates dropped; an unknown one is a UsageError."""
    specs: list[kernels.FormatSpec] = []
    for name in names:
        try:
            spec = kernels.parse(name.strip())
        except kernels.FormatError as e:
            raise UsageError(f"format {name.strip()!r}: {e}") from e
        if spec not in specs:
            specs.append(spec)
    if not specs:
        raise UsageError("no format given: name at least one (see `fqtool formats`)")
    return specs


def analyze_tensor(
    x: torch.Tensor, specs: Sequence[kernels.FormatSpec], backend: str = "auto"
) -> tuple[list[dict[str, float]], dict[str, float]]:
    """Metrics of one tensor for each spec, and the tensor's statistics. ``x`` is not modified."""
    if x.dtype not in NATIVE_DTYPES:
        x = x.to(torch.float32)
    if x.dim() == 0:  # a scalar (a loss scale, a step counter in float): the formats need an axis
        x = x.reshape(1)
    per_format, stats, cache = [], None, {}
    for spec in specs:
        # The input's own moments do not depend on the format: computed with the first one only.
        # On a GPU the Triton backend fuses quantization and sums (no quantized tensor is written);
        # ``cache`` shares per-tensor reductions (the absmax) between the formats.
        sums = format_sums(x, spec, backend=backend, input_stats=stats is None, cache=cache)
        per_format.append(metrics.compute(sums))
        if stats is None:
            stats = metrics.tensor_stats(sums)
    return per_format, stats or {}


def run(
    command: str,
    paths: Sequence[str],
    formats: Sequence[str],
    *,
    device: str = "cpu",
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    min_snr: float | None = None,
    max_mse: float | None = None,
    backend: str = "auto",
    progress: Progress | None = None,
) -> Result:
    """Scan ``paths``, analyse every floating tensor in every format, aggregate, check the gates."""
    t0 = time.perf_counter()
    specs = parse_formats(formats)
    dev = resolve_device(device)
    sources, skipped = scan(paths, include, exclude)
    total_bytes = sum(s.nbytes for s in sources)
    rows: list[Row] = []
    done_bytes = 0
    for k, (src, x) in enumerate(_tensors(sources, dev)):
        if progress:
            progress(k, len(sources), done_bytes, total_bytes, src.name)
        per_format, stats = analyze_tensor(x, specs, backend)
        del x
        info = _info(src, stats)
        rows.extend(Row(info, str(spec), m) for spec, m in zip(specs, per_format, strict=True))
        done_bytes += src.nbytes
    if progress:
        progress(len(sources), len(sources), done_bytes, total_bytes, "")
    aggregates = _aggregates(rows, specs, rank=command == "compare")
    gates = {k: v for k, v in (("min_snr", min_snr), ("max_mse", max_mse)) if v is not None}
    return Result(
        command=command,
        inputs=tuple(str(p) for p in paths),
        device=str(dev),
        formats=tuple(str(s) for s in specs),
        rows=tuple(rows),
        aggregates=tuple(aggregates),
        skipped=tuple(skipped),
        violations=tuple(check_gates(rows, min_snr, max_mse)),
        gates=gates,
        elapsed_s=time.perf_counter() - t0,
    )


def _tensors(sources: Sequence[TensorSource], dev: torch.device) -> Iterator[tuple[TensorSource, torch.Tensor]]:
    """Each source's tensor on ``dev``: on a CUDA device streamed ahead of the analysis
    (``fqtool.staging``: pinned staging, asynchronous copies, bounded memory), elsewhere read
    one at a time."""
    if dev.type == "cuda":
        yield from stream_to_cuda(sources, dev)
        return
    for src in sources:
        yield src, src.load().to(dev)


def _info(src: TensorSource, stats: dict[str, float]) -> TensorInfo:
    return TensorInfo(
        name=src.name,
        file=src.file,
        shape=tuple(src.shape),
        dtype=str(src.dtype).removeprefix("torch."),
        numel=math.prod(src.shape),
        stats=stats,
        meta=dict(src.meta),
    )


def _aggregates(rows: Sequence[Row], specs: Sequence[kernels.FormatSpec], rank: bool) -> list[Aggregate]:
    out = []
    for spec in specs:
        mine = [r for r in rows if r.format == str(spec)]
        out.append(
            Aggregate(
                format=str(spec),
                bits_per_value=spec.rules().bits_per_value,
                tensors=len(mine),
                numel=sum(r.tensor.numel for r in mine),
                metrics=metrics.aggregate([r.metrics for r in mine], [r.tensor.numel for r in mine]),
            )
        )
    if rank:  # best first: highest aggregate SQNR, then fewest bits per value, then the order asked for
        order = sorted(range(len(out)), key=lambda i: (-_rank_key(out[i]), out[i].bits_per_value, i))
        ranks = {i: r + 1 for r, i in enumerate(order)}
        out = [replace(a, rank=ranks[i]) for i, a in enumerate(out)]
    return out


def _rank_key(a: Aggregate) -> float:
    v = a.metrics["sqnr_db"]
    return -math.inf if math.isnan(v) else v


def check_gates(rows: Sequence[Row], min_snr: float | None, max_mse: float | None) -> list[Violation]:
    """Every tensor x format whose SQNR is below ``min_snr`` dB (or NaN) or whose MSE exceeds ``max_mse``."""
    out = []
    for r in rows:
        s, m = r.metrics["sqnr_db"], r.metrics["mse"]
        if min_snr is not None and (math.isnan(s) or s < min_snr):
            out.append(Violation(r.tensor.name, r.format, "sqnr_db", s, min_snr))
        if max_mse is not None and (math.isnan(m) or m > max_mse):
            out.append(Violation(r.tensor.name, r.format, "mse", m, max_mse))
    return out


def worst_tensors(result: Result, n: int) -> Result:
    """The result with only the rows of its ``n`` worst tensors (lowest SQNR over the formats),
    worst first; aggregates, skipped and violations still cover every tensor."""
    by_tensor: dict[tuple[str, str], list[Row]] = {}
    for r in result.rows:
        by_tensor.setdefault((r.tensor.file, r.tensor.name), []).append(r)

    def worst(rs: list[Row]) -> float:
        vals = [r.metrics["sqnr_db"] for r in rs]
        return -math.inf if any(math.isnan(v) for v in vals) else min(vals)

    keep = sorted(by_tensor.values(), key=worst)[: max(0, n)]
    return replace(result, rows=tuple(r for rs in keep for r in rs))


__all__ = ["run", "analyze_tensor", "resolve_device", "parse_formats", "check_gates", "worst_tensors"]
