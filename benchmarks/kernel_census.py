"""Instruction census of the Triton kernels, compiled ahead of time for a GPU on any machine.

No GPU needed: the family modules' launchers run on small CPU tensors with every kernel launch
captured instead of run, and each captured kernel is compiled with ``triton.compile`` for an
sm_90 (H100/H200) target. Prints, per kernel, the lines of PTX one thread executes (a tile's
code is unrolled, so for a fake-quantization kernel this is a faithful proxy for the
instructions per element between two versions of it; a statistics kernel holds its loop body
twice, fast and careful pass, plus the reductions) and its ``cvt`` instructions (type
conversions; the float ones issue at 16 per SM and clock on sm_90, an eighth of the float32
rate), its ``shfl`` (exchanges between threads) and ``bar`` (block barriers) instructions,
the registers per thread and bytes spilled that ``ptxas -v`` reports (Triton's bundled ptxas;
registers bound how many warps an SM holds), the machine instructions (SASS, from Triton's
bundled ``nvdisasm``) in the body of its first loop (a statistics kernel's fast pass: divided
by the elements one thread takes per iteration, the instructions per element, which bound the
statistics on the GPU), and whether it compiled. A cheap way to see what a kernel change does to
the instruction count before spending GPU time, and to check that the kernels compile with the
Triton version the GPU machine has:

    python3 benchmarks/kernel_census.py
    PYTHONPATH=/path/to/triton-3.6 python3 benchmarks/kernel_census.py "mxfp8_e4m3;nvfp4"

Launches are captured by replacing ``JITFunction.__getitem__``; the launchers' own host code
runs for real (on garbage partials), which is harmless on CPU tensors.
"""

from __future__ import annotations

import collections
import inspect
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # compiled kernels, not the interpreter
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

FORMATS = "mxfp8_e4m3;mxfp4;nvfp4;nvf4;nf4;fp8_e4m3;int8sym;bf16;hif8;hifx4_v12"
_TYPES = {
    torch.float32: "fp32",
    torch.bfloat16: "bf16",
    torch.float16: "fp16",
    torch.float64: "fp64",
    torch.int64: "i64",
    torch.int32: "i32",
    torch.int16: "i16",
    torch.int8: "i8",
    torch.uint8: "u8",
}


def capture(formats: list[str], dtype: torch.dtype, shape: tuple[int, int]) -> list[tuple]:
    """(kernel, args, kwargs) of every launch that fake_quantize and the fused sums make."""
    launches = []

    class Recorder:
        def __init__(self, fn):
            self.fn = fn

        def __call__(self, *args, **kwargs):
            launches.append((self.fn, args, kwargs))

    JITFunction.__getitem__ = lambda self, grid: Recorder(self)
    import kernels
    import kernels.triton as kt

    for fmt in formats:
        spec = kernels.parse(fmt)
        x = torch.randn(shape).to(dtype)
        for stats in (None, True, False):
            try:
                if stats is None:
                    kt.fake_quantize_triton(x, spec, torch.Generator().manual_seed(0))
                else:
                    kt.sums(x, spec, input_stats=stats, cache={})
            except Exception:  # noqa: BLE001 - the host code past a launch reads garbage; the launch is captured
                pass
    return launches


def signature(fn, args, kwargs) -> tuple[dict, dict, dict, dict]:
    """(signature, constexprs, options, attrs) of one launch for ``triton.compile``; attrs marks
    the pointers and the integers divisible by 16 as such, as Triton's launcher specializes
    them (torch allocations are 16-byte aligned), so that loads vectorize as on the GPU."""
    params = inspect.signature(fn.fn).parameters
    names = list(params)
    options = {k: kwargs.pop(k) for k in list(kwargs) if k in ("num_warps", "num_stages", "enable_fp_fusion")}
    bound = dict(zip(params, args, strict=False))  # the defaults of trailing parameters stay unbound
    bound.update(kwargs)
    sig, consts, attrs = {}, {}, {}
    for name, value in bound.items():
        if "constexpr" in str(params[name].annotation) or name in kwargs:
            sig[name], consts[name] = "constexpr", value
        elif isinstance(value, torch.Tensor):
            sig[name] = "*" + _TYPES[value.dtype]
            attrs[(names.index(name),)] = [["tt.divisibility", 16]]
        elif isinstance(value, bool):
            sig[name] = "i1"
        elif isinstance(value, int):
            sig[name] = "i64" if abs(value) >= 2**31 - 1 else "i32"
            if value % 16 == 0:
                attrs[(names.index(name),)] = [["tt.divisibility", 16]]
        elif isinstance(value, float):
            sig[name] = "fp32"
        else:
            sig[name], consts[name] = "constexpr", value
    return sig, consts, options, attrs


def _bundled_tool(tool: str, data: bytes, *args: str) -> str | None:
    """The output (stdout and stderr) of Triton's bundled NVIDIA ``tool`` run with ``args`` on
    ``data`` written to a file (its path takes the place of ``{}`` in ``args``), or None when
    that Triton has no such tool."""
    import triton.backends.nvidia as nv

    exe = Path(nv.__file__).parent / "bin" / tool
    if not exe.exists():
        return None
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "input"
        src.write_bytes(data)
        argv = [str(exe), *(str(src) if a == "{}" else a.replace("{out}", str(Path(d) / "out")) for a in args)]
        r = subprocess.run(argv, capture_output=True, text=True)
    return r.stdout + r.stderr


def ptxas_usage(ptx: str) -> str:
    """``regs N, spill B`` from Triton's bundled ptxas run with -v on ``ptx`` for sm_90a, or ''
    when that ptxas is not there."""
    out = _bundled_tool("ptxas", ptx.encode(), "-v", "--gpu-name", "sm_90a", "{}", "-o", "{out}")
    if out is None:
        return ""
    regs = re.search(r"Used (\d+) registers", out)
    spill = re.search(r"(\d+) bytes spill stores", out)
    return f", {regs.group(1) if regs else '?'} regs, {spill.group(1) if spill else '?'} B spilled"


def loop_sass(cubin: bytes) -> str:
    """``, loop N SASS (OP n, ...)`` for the first loop of a compiled kernel (the statistics
    kernels' fast pass; a fake-quantization kernel has none): its body's instructions, from
    Triton's bundled ``nvdisasm``, and the commonest opcodes; '' without a loop or nvdisasm."""
    sass = _bundled_tool("nvdisasm", cubin, "-c", "{}")
    if sass is None:
        return ""
    ops, labels = [], {}
    for line in sass.splitlines():
        label = re.match(r"\s*\.(L_x_\d+):", line)
        if label:
            labels[label.group(1)] = len(ops)
        ins = re.match(r"\s*/\*[0-9a-f]{4,}\*/\s+(.*?);", line)
        if ins:
            ops.append(ins.group(1))
    for i, op in enumerate(ops):
        target = re.search(r"BRA\s.*?`\(\.(L_x_\d+)\)", op)
        if target and labels.get(target.group(1), i) < i:  # the first backward branch
            body = [re.sub(r"^@!?U?P\w+\s+", "", o).split()[0] for o in ops[labels[target.group(1)] : i + 1]]
            top = collections.Counter(body).most_common(4)
            return f", loop {len(body)} SASS ({', '.join(f'{o} {n}' for o, n in top)})"
    return ""


def main() -> int:
    formats = (sys.argv[1] if len(sys.argv) > 1 else FORMATS).split(";")
    target = GPUTarget("cuda", 90, 32)
    lines: dict[str, list[int]] = collections.defaultdict(list)
    seen, failed = set(), 0
    for fn, args, kwargs in capture(formats, torch.bfloat16, (64, 8192)):
        sig, consts, options, attrs = signature(fn, args, dict(kwargs))
        key = (fn.fn.__name__, tuple(sorted(sig.items())), tuple(sorted((k, repr(v)) for k, v in consts.items())))
        if key in seen:
            continue
        seen.add(key)
        t = time.perf_counter()
        try:
            src = ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
            k = triton.compile(src, target=target, options=options)
        except Exception as e:  # noqa: BLE001 - a kernel that does not compile is the finding
            failed += 1
            print(f"FAIL {fn.fn.__name__}: {str(e)[:400]}", flush=True)
            continue
        ptx = k.asm["ptx"].splitlines()
        n = len(ptx)
        cvt = sum(1 for line in ptx if line.lstrip().startswith("cvt."))
        shfl = sum(1 for line in ptx if line.lstrip().startswith("shfl."))
        bar = sum(1 for line in ptx if line.lstrip().startswith(("bar.", "barrier.")))
        lines[fn.fn.__name__].append(n)
        usage = ptxas_usage(k.asm["ptx"]) + loop_sass(k.asm["cubin"])
        counts = f"{n} PTX lines, {cvt} cvt, {shfl} shfl, {bar} bar{usage}"
        print(f"  {fn.fn.__name__}: {counts} ({time.perf_counter() - t:.1f} s)", flush=True)
    print(f"triton {triton.__version__}, sm_90, bf16 64x8192: {len(seen) - failed} kernels compiled, {failed} failed")
    for name, ns in sorted(lines.items()):
        print(f"  {name:24s} {len(ns)} variant(s), PTX lines per thread {min(ns)}..{max(ns)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
