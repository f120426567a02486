"""CPU throughput of ``kernels.fake_quantize`` for every format (a benchmark, not a test).

For each format and input dtype: million elements per second on a 4096x4096 tensor,
median of ``--reps`` timed calls after one warm-up call, for each backend asked for,
measured side by side in one run. Writes a Markdown table (with the machine, versions
and date) to ``--out``.

    python benchmarks/bench_kernels.py                      # cpu-fast vs reference, all formats
    python benchmarks/bench_kernels.py --backends cpu-fast,compile --formats mxfp8_e4m3,hif8
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import kernels  # noqa: E402


def _cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def _time(fn, reps: int) -> float:
    fn()  # warm-up (and, for compile, the compilation)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4096, help="tensor is SIZE x SIZE (default 4096)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--formats", default="", help="comma-separated; default: every format of kernels.list_formats()")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--backends", default="cpu-fast,reference", help="cpu-fast, reference, compile")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "cpu.md"))
    args = ap.parse_args(argv)

    formats = args.formats.split(",") if args.formats else [str(s) for s in kernels.list_formats()]
    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    backends = args.backends.split(",")
    n = args.size * args.size
    g = torch.Generator().manual_seed(0)
    base = torch.randn(args.size, args.size, generator=g)

    rows = []
    for fmt in formats:
        for dt in dtypes:
            x = base.to(dt)
            cells = []
            for b in backends:
                if b == "compile":
                    from kernels.compiled import fake_quantize_compiled

                    def fn(x=x, fmt=fmt):
                        return fake_quantize_compiled(x, fmt)
                else:

                    def fn(x=x, fmt=fmt, b=b):
                        return kernels.fake_quantize(x, fmt, backend=b)

                try:
                    cells.append(n / _time(fn, args.reps) / 1e6)
                except Exception as e:  # a backend that cannot run a format is recorded, not fatal
                    print(f"{fmt} {dt} {b}: {type(e).__name__}: {e}", file=sys.stderr)
                    cells.append(float("nan"))
            rows.append((fmt, str(dt).replace("torch.", ""), cells))
            speeds = "  ".join(f"{b}={c:8.1f}" for b, c in zip(backends, cells, strict=True))
            print(f"{fmt:32s} {rows[-1][1]:9s} {speeds}", flush=True)

    head = "| format | dtype | " + " | ".join(f"{b} (M elem/s)" for b in backends) + " |"
    if len(backends) > 1:
        head += f" {backends[0]} / {backends[1]} |"
    lines = [
        "# CPU throughput of `kernels.fake_quantize`",
        "",
        f"- date: {datetime.date.today().isoformat()}",
        f"- machine: {_cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; Python {platform.python_version()}",
        f"- input: {args.size}x{args.size} standard normal; median of {args.reps} calls after one warm-up; "
        "all backends measured side by side in this run",
        f"- command: `python benchmarks/bench_kernels.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        "",
        head,
        "|" + "---|" * (head.count("|") - 1),
    ]
    for fmt, dt, cells in rows:
        line = f"| `{fmt}` | {dt} | " + " | ".join(f"{c:.1f}" for c in cells) + " |"
        if len(backends) > 1:
            line += f" {cells[0] / cells[1]:.1f}x |"
        lines.append(line)
    first = [c[0] for _, _, c in rows]
    lines += [
        "",
        f"Slowest `{backends[0]}`: {min(first):.1f} M elem/s; median over formats: "
        f"{statistics.median(first):.1f} M elem/s.",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
