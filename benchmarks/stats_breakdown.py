"""Where a fused statistics call spends its GPU time, and how the statistics loop's tuning moves
it (a benchmark, not a test). Needs a CUDA GPU and Triton.

    python3 benchmarks/stats_breakdown.py                 # both parts
    python3 benchmarks/stats_breakdown.py --no-sweep --sizes 1024,4096

Two parts, on standard normal bfloat16 and float32 tensors:

- **breakdown** (``--sizes``, square): the device time of every kernel and copy that one
  ``kernels.stats.format_sums`` call runs (medians of ``--reps`` calls, from the profiler's
  records), for the first format on a tensor (absmax pass, input moments) and a next one: how
  much is the statistics kernel itself, and how much the absmax pass, the merge of the
  per-program partials and the transfer to the host. The merge's fixed cost shows on small
  tensors (it was 16-22 us per call until 2026-12-01).
- **sweep** (8192x8192, next formats): the fraction of a device copy's GB/s for every
  ``kernels.triton._common.STATS_UNROLL`` value (tiles per loop iteration) and programs per SM,
  per family, by setting both tables before each run. The table in ``_common`` records what
  measured fastest; ``benchmarks/results/h200.md`` the sweep of 2026-12-01 (within 2-3 points,
  but for 4 tiles per iteration on the heavy tiles).
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gpu import Flusher, kernel_time  # noqa: E402

from kernels.stats import format_sums  # noqa: E402

#: One format per statistics kernel family: format -> (its ``STATS_UNROLL`` key, its module).
FAMILIES = {
    "mxfp8_e4m3": ("mx", "mx"),
    "bf16": ("cast", "scaled"),
    "fp8_e4m3": ("fp8", "scaled"),
    "int8sym": ("int8sym", "scaled"),
    "hif8": ("hif8", "hif8"),
    "nvfp4": ("nvfp", "nvfp"),
    "nvf4": ("nvfp", "nvfp"),
    "mxfp8e4m3": ("qtype", "qtype"),
    "hifx4_v12": ("hifx", "hifx"),
    "nf4": ("nf4", "nf4"),
}


def breakdown(x: torch.Tensor, fmt: str, reps: int) -> str:
    """``name median-us`` of every device activity of one call, first format and next."""
    from torch.profiler import ProfilerActivity, profile

    cache: dict = {}
    format_sums(x, fmt, backend="triton", cache=cache)  # compiles, fills the cache
    format_sums(x, fmt, backend="triton", cache=cache, input_stats=False)
    torch.cuda.synchronize()
    out = []
    for first in (True, False):
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(reps):
                format_sums(x, fmt, backend="triton", cache={} if first else cache, input_stats=first)
            torch.cuda.synchronize()
        times: dict[str, list[float]] = {}
        for e in prof.events():
            if e.device_type.name == "CUDA":
                name = e.name.split("<")[0].split("(")[0].strip()[:32]
                times.setdefault(name, []).append(e.time_range.elapsed_us())
        parts = ", ".join(f"{k} {statistics.median(v):.1f} us" for k, v in times.items())
        out.append(f"  {'first' if first else 'next '}: {parts}")
    return "\n".join(out)


def sweep(formats: list[str], dtype: torch.dtype, reps: int, flush: Flusher, size: int = 8192) -> list[str]:
    from kernels.triton import _common

    x = torch.randn(size, size, device="cuda").to(dtype)
    nb = x.numel() * x.element_size()
    y = torch.empty_like(x)
    copy = 2 * nb / kernel_time(lambda: y.copy_(x), reps, flush)
    lines = [f"{dtype} {size}x{size}, copy {copy / 1e9:.0f} GB/s; next formats, % of copy, best first"]
    for fmt in formats:
        key, module = FAMILIES[fmt]
        importlib.import_module(f"kernels.triton.{module}")
        saved = dict(_common.STATS_UNROLL[key]), dict(_common.PROGRAMS_PER_SM)
        cache: dict = {}
        format_sums(x, fmt, backend="triton", cache=cache)
        results = []
        try:
            for unroll in (1, 2, 4):
                _common.STATS_UNROLL[key][dtype] = unroll
                for per_sm in (2, 4, 8, 16):
                    _common.PROGRAMS_PER_SM[unroll] = per_sm

                    def call(fmt=fmt, cache=cache):
                        return format_sums(x, fmt, backend="triton", cache=cache, input_stats=False)

                    t = kernel_time(call, reps, flush)
                    results.append((100 * nb / t / copy, unroll, per_sm))
        finally:
            _common.STATS_UNROLL[key].clear()
            _common.STATS_UNROLL[key].update(saved[0])
            _common.PROGRAMS_PER_SM.clear()
            _common.PROGRAMS_PER_SM.update(saved[1])
        results.sort(reverse=True)
        cells = "  ".join(f"U{u}xP{p} {pct:.0f}%" for pct, u, p in results)
        lines.append(f"  {fmt:12s} {cells}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--formats", default=",".join(FAMILIES), help=f"of {', '.join(FAMILIES)}")
    ap.add_argument("--sizes", default="1024,4096,8192")
    ap.add_argument("--dtypes", default="bfloat16,float32")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--no-sweep", action="store_true", help="only the per-kernel breakdown")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("stats_breakdown needs a CUDA GPU", file=sys.stderr)
        return 2
    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    for dtype in dtypes:
        for size in (int(s) for s in args.sizes.split(",")):
            x = torch.randn(size, size, device="cuda").to(dtype)
            for fmt in args.formats.split(","):
                print(f"{fmt} {dtype} {size}x{size}\n{breakdown(x, fmt, args.reps)}", flush=True)
    if not args.no_sweep:
        flush = Flusher()
        for dtype in dtypes:
            print("\n".join(sweep(args.formats.split(","), dtype, args.reps, flush)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
