"""GPU bandwidth of fqtool's Triton kernels, side by side with a device-to-device copy (a benchmark,
not a test). Needs a CUDA GPU and Triton.

    python3 benchmarks/bench_gpu.py --out benchmarks/results/h200.md
    python3 benchmarks/bench_gpu.py --formats mxfp8_e4m3,nvfp4 --sizes 1024 --no-e2e   # a quick look

One run measures, on float32 and bfloat16 tensors of 8192x8192 and 1024x1024 (standard normal):

- **copy**: ``y.copy_(x)``, GB/s counted as bytes read + bytes written;
- per format, **fake_quantize** (``backend="triton"``): GB/s of bytes read + written, and its
  fraction of the copy's GB/s; for the formats scaled by the tensor's absmax (fp8 per tensor,
  nvfp4, hif8), which must read x once for it before quantizing, also with that absmax already
  in the cache (*fq, absmax cached*): the quantization pass alone;
- per format, the **fused quantize + statistics** kernel (``kernels.stats.format_sums``): GB/s of
  bytes read over the call's device time (its kernels, the merge of the per-program partials
  on the device, the small transfer to the host), and its fraction of the copy's GB/s; twice,
  as ``fqtool analyze`` runs the formats on one tensor: the *1st format* also computes the
  per-tensor absmax (the formats that scale per tensor) and the input's own moments, the
  *next formats* find the absmax in the tensor's cache and skip the moments. *call* is the
  wall time of the whole Python call of a next format, host overheads included;
- for ``--compile-formats``, the reference backend under ``torch.compile``
  (``backend="compile"``): fake quantization and the reference statistics
  (``quantize_with_sums``), for comparison.

Device times are medians over ``--reps`` runs, each after an L2 flush (a 256 MB write), from
the profiler's records of what each call ran on the device (every kernel and copy, without the
host's gaps between them), for the copy, the kernels and the torch.compile reference alike. On
1024x1024 the host's per-call overhead (the *call* column) is far longer than the kernels.

The end-to-end part (``--e2e-gb``, default 16) writes a bf16 safetensors checkpoint of that size
(Llama-like shapes), reads it once so it is in the page cache, and then times in one run:
reading it into GPU memory (fqtool's pinned, asynchronous loader alone, and
``safetensors.torch.load_file(device="cuda")``), and ``fqtool compare`` with 4 formats on it
(in-process, after a warm-up that compiles the kernels). Writes a Markdown report to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import kernels  # noqa: E402
from kernels import backends  # noqa: E402
from kernels.stats import format_sums, quantize_with_sums  # noqa: E402

FORMATS = [
    "mxfp8_e4m3",
    "mxfp8_e5m2",
    "mxfp6_e3m2",
    "mxfp4_e2m1",
    "mxint8",
    "mxfp4",
    "mxfp8e4m3",
    "nvf4",
    "nvfp4",
    "nf4",
    "fp8_e4m3",
    "int8sym",
    "bf16",
    "hif8",
    "hifx4_v12",
]
E2E_FORMATS = "mxfp8_e4m3,mxfp4_e2m1,nvfp4,hif8"


class Flusher:
    """Evicts the L2 cache between timed runs by writing a buffer larger than it, with a kernel of
    its own name so that profiles can tell it apart."""

    def __init__(self):
        import triton
        import triton.language as tl

        @triton.jit
        def l2_flush_kernel(ptr, n, BLOCK: tl.constexpr):
            offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
            tl.store(ptr + offs, tl.full([BLOCK], 1, tl.int32), mask=offs < n)

        self.kernel = l2_flush_kernel
        self.buf = torch.empty(64 << 20, dtype=torch.int32, device="cuda")

    def __call__(self):
        n = self.buf.numel()
        self.kernel[(n // 4096,)](self.buf, n, BLOCK=4096)


def wall_time(fn, reps: int, flush: Flusher) -> float:
    """Median wall seconds of a call of ``fn`` that ends in a host synchronization."""
    fn()
    times = []
    for _ in range(reps):
        flush()
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def kernel_time(fn, reps: int, flush: Flusher) -> float:
    """Median over runs of the summed device time of everything ``fn`` runs on the GPU (its
    kernels and copies, from the profiler's records), without the host's time between them;
    the flush kernel before each run delimits the runs."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            flush()
            fn()
        torch.cuda.synchronize()
    records = sorted((e for e in prof.events() if e.device_type.name == "CUDA"), key=lambda e: e.time_range.start)
    runs: list[float] = []
    for e in records:
        if "l2_flush_kernel" in e.name:
            runs.append(0.0)
        elif runs:
            runs[-1] += e.time_range.elapsed_us() / 1e6
    return statistics.median(runs) if runs else math.nan


def _fq_with_cache(spec):
    """The triton family function ``fn(x, spec, cache)`` of a format that scales by the tensor's
    absmax (kept in ``cache``), or None."""
    from kernels.triton import hif8, nvfp, scaled

    if spec.family == "fp8tensor":
        return scaled.scaled_fake_quantize
    if spec.family == "nvfp4":
        return nvfp.nvfp_fake_quantize
    if spec.family == "hif8" and hif8._modes(spec)[0]:
        return hif8.hif8_fake_quantize
    return None


def bench_tensor(x: torch.Tensor, formats: list[str], args, flush: Flusher, refused: list[str]) -> list[str]:
    """The table of one tensor: the copy, then a row per format the triton backend runs."""
    tb, dev = backends.REGISTRY["triton"], x.device
    nbytes = x.numel() * x.element_size()
    y = torch.empty_like(x)
    t_copy = kernel_time(lambda: y.copy_(x), args.reps, flush)
    copy_bw = 2 * nbytes / t_copy / 1e9
    size = "x".join(map(str, x.shape))
    lines = [
        f"## {str(x.dtype).removeprefix('torch.')} {size} ({nbytes / 2**20:.0f} MiB): "
        f"copy {copy_bw:.0f} GB/s ({t_copy * 1e6:.0f} us)",
        "",
        "| format | fake_quantize GB/s | % copy | fq, absmax cached GB/s | % copy | fused stats, 1st format GB/s "
        "| % copy | fused stats, next formats GB/s | % copy | call us | compile fq GB/s | compile stats GB/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for fmt in formats:
        spec = kernels.parse(fmt)
        why = tb.check(dev, spec)
        if why:
            refused.append(f"{fmt}: {why}")
            continue
        out_bytes = kernels.fake_quantize(x, spec, backend="triton").nbytes

        def fq(spec=spec):
            return kernels.fake_quantize(x, spec, backend="triton")

        def first(spec=spec):  # the first format on a tensor: absmax and input moments computed here
            return format_sums(x, spec, backend="triton", cache={}, input_stats=True)

        cache: dict = {}
        first_of_many = format_sums(x, spec, backend="triton", cache=cache)  # fills the cache

        def nth(spec=spec, cache=cache):  # the next ones: absmax cached, input moments skipped
            return format_sums(x, spec, backend="triton", cache=cache, input_stats=False)

        assert nth().n == first_of_many.n
        fq_bw = (nbytes + out_bytes) / kernel_time(fq, args.reps, flush) / 1e9
        cached = "– | –"
        fq_cached = _fq_with_cache(spec)
        if fq_cached is not None:
            fq_cache: dict = {}
            fq_cached(x, spec, fq_cache)  # fills the cache with the absmax

            def fqc(spec=spec, fn=fq_cached, cache=fq_cache):
                return fn(x, spec, cache)

            fqc_bw = (nbytes + out_bytes) / kernel_time(fqc, args.reps, flush) / 1e9
            cached = f"{fqc_bw:.0f} | {100 * fqc_bw / copy_bw:.0f} %"
        s1_bw = nbytes / kernel_time(first, args.reps, flush) / 1e9
        sn_bw = nbytes / kernel_time(nth, args.reps, flush) / 1e9
        t_call = wall_time(nth, args.reps, flush)
        comp = "– | –"
        compile_here = fmt in args.compile_formats and x.shape[0] in args.compile_sizes
        if compile_here and backends.REGISTRY["compile"].check(dev, spec) is None:
            try:

                def cfq(spec=spec):
                    return kernels.fake_quantize(x, spec, backend="compile")

                def cstats(spec=spec):
                    return quantize_with_sums(x, spec, backend="compile")

                t_cf = kernel_time(cfq, args.reps, flush)
                t_cs = kernel_time(cstats, args.reps, flush)
                comp = f"{(nbytes + out_bytes) / t_cf / 1e9:.0f} | {nbytes / t_cs / 1e9:.0f}"
            except Exception as e:  # noqa: BLE001 - a compile failure is a result too
                comp = f"fails: {type(e).__name__} | –"
        lines.append(
            f"| {fmt} | {fq_bw:.0f} | {100 * fq_bw / copy_bw:.0f} % | {cached} "
            f"| {s1_bw:.0f} | {100 * s1_bw / copy_bw:.0f} % | {sn_bw:.0f} | {100 * sn_bw / copy_bw:.0f} % "
            f"| {t_call * 1e6:.0f} | {comp} |"
        )
        print(lines[-1], flush=True)
    return lines + [""]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--sizes", default="8192,1024")
    ap.add_argument("--dtypes", default="bfloat16,float32")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument(
        "--compile-formats",
        default="mxfp8_e4m3,nvfp4,nf4,hif8",
        help="formats timed through the reference under torch.compile (compiling takes seconds each)",
    )
    ap.add_argument("--compile-sizes", default="8192", help="tensor sizes the torch.compile reference is timed on")
    ap.add_argument("--no-e2e", action="store_true", help="skip the end-to-end checkpoint run")
    ap.add_argument("--e2e-gb", type=float, default=16.0)
    ap.add_argument("--e2e-dir", default=None, help="where to write the checkpoint (default: a temp dir)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA GPU here", file=sys.stderr)
        return 2
    import triton

    dev = torch.device("cuda")
    flush = Flusher()
    formats = [f for f in args.formats.split(",") if f]
    args.compile_formats = set(args.compile_formats.split(",")) - {""}
    args.compile_sizes = {int(v) for v in args.compile_sizes.split(",") if v}
    props = torch.cuda.get_device_properties(dev)
    lines = [
        "# fqtool Triton kernels on the GPU",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- device: {props.name}, {props.total_memory / 2**30:.0f} GiB; host: {platform.node()}",
        f"- torch {torch.__version__}, triton {triton.__version__}, CUDA {torch.version.cuda}, "
        f"Python {platform.python_version()}",
        f"- `python3 benchmarks/bench_gpu.py {' '.join(sys.argv[1:])}`; medians of {args.reps} runs, "
        "L2 flushed before each",
        "",
        "GB/s: fake_quantize counts bytes read + written, the fused statistics bytes read, the copy read + written;",
        "% is of the copy's GB/s on the same tensor, measured in the same run.",
        "",
    ]
    refused: list[str] = []
    for size in (int(s) for s in args.sizes.split(",")):
        for dname in args.dtypes.split(","):
            x = torch.randn(size, size, device=dev).to(getattr(torch, dname))
            lines += bench_tensor(x, formats, args, flush, refused)
            del x
            torch.cuda.empty_cache()
    if refused:
        lines += ["Not run (the triton backend refuses them):", ""] + [f"- {r}" for r in sorted(set(refused))] + [""]
    if not args.no_e2e:
        lines += end_to_end(args, dev)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


# --------------------------------------------------------------------------- end to end

#: (name pattern, shape) of one Llama-like layer in bf16: ~ 0.44 GiB per layer.
_LAYER = [
    ("self_attn.q_proj.weight", (4096, 4096)),
    ("self_attn.k_proj.weight", (1024, 4096)),
    ("self_attn.v_proj.weight", (1024, 4096)),
    ("self_attn.o_proj.weight", (4096, 4096)),
    ("mlp.gate_proj.weight", (14336, 4096)),
    ("mlp.up_proj.weight", (14336, 4096)),
    ("mlp.down_proj.weight", (4096, 14336)),
    ("input_layernorm.weight", (4096,)),
    ("post_attention_layernorm.weight", (4096,)),
]


def write_checkpoint(root: Path, gb: float) -> tuple[list[Path], int]:
    """Shards of ~4 GiB with whole layers of random bf16 weights; (files, total tensor bytes)."""
    from safetensors.torch import save_file

    layer_bytes = sum(2 * math.prod(s) for _, s in _LAYER)
    layers = max(1, round(gb * 2**30 / layer_bytes))
    per_shard = max(1, (4 << 30) // layer_bytes)
    files, total = [], 0
    g = torch.Generator(device="cuda").manual_seed(0)
    for first in range(0, layers, per_shard):
        shard = {}
        for i in range(first, min(layers, first + per_shard)):
            for name, shape in _LAYER:
                t = torch.randn(shape, device="cuda", generator=g, dtype=torch.float32).mul_(0.02).to(torch.bfloat16)
                shard[f"model.layers.{i}.{name}"] = t.cpu()
                total += t.numel() * 2
        f = root / f"model-{len(files):05d}.safetensors"
        save_file(shard, str(f))
        files.append(f)
        del shard
    return files, total


def end_to_end(args, dev) -> list[str]:
    from safetensors.torch import load_file

    from fqtool.analysis import run
    from fqtool.io import scan
    from fqtool.staging import stream_to_cuda

    tmp = tempfile.TemporaryDirectory(dir=args.e2e_dir)
    root = Path(tmp.name)
    t = time.perf_counter()
    files, total = write_checkpoint(root, args.e2e_gb)
    t_write = time.perf_counter() - t
    for f in files:  # into the page cache
        with open(f, "rb") as fh:
            while fh.read(1 << 26):
                pass
    paths = [str(f) for f in files]
    formats = E2E_FORMATS.split(",")

    def read_staged():
        sources, _ = scan(paths, (), ())
        for _src, _x in stream_to_cuda(sources, dev):
            pass
        torch.cuda.synchronize()

    def read_load_file():
        for f in files:
            d = load_file(str(f), device="cuda")
            torch.cuda.synchronize()
            del d

    def compare():
        return run("compare", paths, formats, device="cuda")

    compare_small = [str(files[0])]
    run("compare", compare_small, formats, device="cuda", include=("*layers.0.*",))  # compile the kernels
    res = {}
    for name, fn in (("staged", read_staged), ("load_file", read_load_file), ("compare", compare)):
        times = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        res[name] = (statistics.median(times), times)
    base = min(res["staged"][0], res["load_file"][0])
    gib = total / 2**30
    out = [
        f"## End to end: `fqtool compare` with {len(formats)} formats ({E2E_FORMATS}) "
        f"on a {gib:.1f} GiB bf16 checkpoint",
        "",
        f"{len(files)} shards, {sum(1 for _ in scan(paths, (), ())[0])} tensors (Llama-like layers), written in "
        f"{t_write:.0f} s and read once into the page cache before timing. Medians of 3 runs, in one process:",
        "",
        "| what | median s | GB/s | runs s |",
        "|---|---:|---:|---|",
    ]
    for name, label in (
        ("staged", "read into GPU memory: fqtool.staging (pinned ring, async copies), no analysis"),
        ("load_file", "read into GPU memory: safetensors.torch.load_file(device='cuda'), shard by shard"),
        ("compare", f"fqtool.analysis.run('compare', {len(formats)} formats, device='cuda')"),
    ):
        med, times = res[name]
        out.append(f"| {label} | {med:.2f} | {total / med / 1e9:.1f} | {', '.join(f'{v:.2f}' for v in times)} |")
    out += ["", f"compare / fastest read: **{res['compare'][0] / base:.2f}x** (target <= 1.3x)", ""]
    tmp.cleanup()
    return out


if __name__ == "__main__":
    os.environ.pop("TRITON_INTERPRET", None)
    sys.exit(main())
