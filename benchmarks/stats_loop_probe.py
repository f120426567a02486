"""What bounds the fused statistics on a GPU (a probe, not fqtool's kernels): one loop kernel,
each program accumulating per lane over every num_programs-th tile like
``kernels.triton._common.stats_program``, on a stand-in quantization (a round trip through
float16), bfloat16 and float32 8192x8192, in these modes:

0. float64 sums (x^2, q^2, xq, d^2, |d|, max |d|) and two counts: what fqtool computes;
1. mode 0 plus the input's moments (shifted float64 sums);
2. the float64 sums alone;
3. the counts alone (no float64 at all);
4. the same sums in float32 (inexact, for the ceiling);
5. fqtool's own loop: ``kernels.triton.scaled._cast_tile`` (the cast to float16) through
   ``_common.stats_add``'s fast pass, one accumulator per element (V = 1), 1 and 4 tiles per
   iteration;
6. the same with one accumulator per run of V elements a thread holds (``_common.lanes_v``),
   summed within the thread first: what ``stats_add`` does for most families since 2026-12-01.

Prints GB/s of bytes read and the fraction of a device copy's GB/s for tile sizes, warps and
programs per SM, then checks mode 0's sums against ``error_sums_ref``. Needs a CUDA GPU:

    python3 benchmarks/stats_loop_probe.py
"""

# ruff: noqa: B023 (each lambda runs inside its loop iteration)

import statistics
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kernels.stats import error_sums_ref  # noqa: E402
from kernels.triton._common import IN_KIND, in_arg, lanes_v, load_f32, round_out, stats_add, stats_init  # noqa: E402
from kernels.triton.scaled import _cast_tile  # noqa: E402

dev = torch.device("cuda")
SM = torch.cuda.get_device_properties(dev).multi_processor_count
flushbuf = torch.empty(64 << 20, dtype=torch.int32, device=dev)


def bench(fn, reps=15):
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        flushbuf.fill_(1)
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) / 1e3)
    return statistics.median(ts)


@triton.jit
def read_kernel(x_ptr, out_ptr, N, TILE: tl.constexpr, IN_KIND: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * TILE + tl.arange(0, TILE)
    x = load_f32(x_ptr, offs, offs < N, IN_KIND)
    tl.store(out_ptr + pid, tl.sum(x, axis=0))


@triton.jit
def loop_kernel(x_ptr, out_ptr, N, n_tiles, TILE: tl.constexpr, IN_KIND: tl.constexpr, MODE: tl.constexpr):
    # MODE 0: f64 sums (5 + max), counts (clip, flush) int, finite flag; 1: + input moments (shifted);
    # 2: f64 sums only; 3: counts only; 4: f32 sums (inexact, for the ceiling)
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    zf = tl.zeros([TILE], tl.float64)
    s_x2 = zf
    s_q2 = zf
    s_xq = zf
    s_d2 = zf
    s_ad = zf
    m_ad = zf
    s1 = zf
    s2 = zf
    f32z = tl.zeros([TILE], tl.float32)
    a_x2 = f32z
    a_q2 = f32z
    a_xq = f32z
    a_d2 = f32z
    a_ad = f32z
    cnt = tl.zeros([TILE], tl.int32)
    for t in range(pid, n_tiles, nprog):
        offs = t.to(tl.int64) * TILE + tl.arange(0, TILE)
        valid = offs < N
        x = load_f32(x_ptr, offs, valid, IN_KIND)
        q = round_out(x.to(tl.float16).to(tl.float32), IN_KIND)
        if MODE != 3 and MODE != 4:
            x64 = x.to(tl.float64)
            q64 = q.to(tl.float64)
            d = q64 - x64
            s_x2 += x64 * x64
            s_q2 += q64 * q64
            s_xq += x64 * q64
            s_d2 += d * d
            ad = tl.abs(d)
            s_ad += ad
            m_ad = tl.maximum(m_ad, ad)
            if MODE == 1:
                s1 += x64
                s2 += x64 * x64
        if MODE == 4:
            dd = q - x
            a_x2 += x * x
            a_q2 += q * q
            a_xq += x * q
            a_d2 += dd * dd
            a_ad += tl.abs(dd)
        if MODE != 2:
            xa = tl.abs(x)
            cnt += (xa > 65504.0).to(tl.int32) + (((x != 0.0) & (q == 0.0)).to(tl.int32) << 16)
    if MODE == 4:
        s_x2 = a_x2.to(tl.float64)
        s_q2 = a_q2.to(tl.float64)
        s_xq = a_xq.to(tl.float64)
        s_d2 = a_d2.to(tl.float64)
        s_ad = a_ad.to(tl.float64)
    base = pid.to(tl.int64) * 10
    tl.store(out_ptr + base + 0, tl.sum(s_x2, axis=0))
    tl.store(out_ptr + base + 1, tl.sum(s_q2, axis=0))
    tl.store(out_ptr + base + 2, tl.sum(s_xq, axis=0))
    tl.store(out_ptr + base + 3, tl.sum(s_d2, axis=0))
    tl.store(out_ptr + base + 4, tl.sum(s_ad, axis=0))
    tl.store(out_ptr + base + 5, tl.max(m_ad, axis=0))
    tl.store(out_ptr + base + 6, tl.sum(s1, axis=0))
    tl.store(out_ptr + base + 7, tl.sum(s2, axis=0))
    tl.store(out_ptr + base + 8, tl.sum(cnt & 0xFFFF, axis=0).to(tl.float64))
    tl.store(out_ptr + base + 9, tl.sum(cnt >> 16, axis=0).to(tl.float64))


@triton.jit
def cast_stats_kernel(x_ptr, out_ptr, n, n_tiles, TR: tl.constexpr, TC: tl.constexpr, IN_KIND: tl.constexpr,
                      UNROLL: tl.constexpr, V: tl.constexpr):  # fmt: skip
    # Modes 5 (V=1) and 6 (V>1): the cast to float16, the output in x's dtype.
    pid = tl.program_id(0)
    step = tl.num_programs(0)
    zero = pid * 0
    K: tl.constexpr = (TR, TC, IN_KIND, 2, True)
    acc = stats_init(TR * TC // V)
    for t0 in range(pid, n_tiles, step * UNROLL):
        for u in tl.static_range(UNROLL):
            t = t0 + zero + u * step
            x, q, valid, offs, bound = _cast_tile(tl.minimum(t, n_tiles - 1), (x_ptr, n, 65504.0), K)
            live = valid & (t < n_tiles)
            x = tl.where(live, x, 0.0)
            acc = stats_add(acc, x, q, live, bound, IN_KIND, False, False, False, V)
    base = pid.to(tl.int64) * 10
    for i in tl.static_range(5):
        tl.store(out_ptr + base + i, tl.sum(acc[i], axis=0))
    tl.store(out_ptr + base + 5, tl.max(acc[5], axis=0))
    tl.store(out_ptr + base + 9, tl.sum(acc[18], axis=0).to(tl.float64))


for dtype in (torch.bfloat16, torch.float32):
    x = torch.randn(8192, 8192, device=dev).to(dtype)
    N = x.numel()
    nb = N * x.element_size()
    k = IN_KIND[dtype]
    y = torch.empty_like(x)
    copy = 2 * nb / bench(lambda: y.copy_(x)) / 1e9
    print(f"== {dtype} copy {copy:.0f} GB/s", flush=True)

    def rep(name, t):
        g = nb / t / 1e9
        print(f"{name}: {g:.0f} GB/s ({100 * g / copy:.0f}%)", flush=True)

    for TILE in (2048, 4096):
        out = torch.empty(triton.cdiv(N, TILE), device=dev)
        rep(
            f"read tile {TILE}",
            bench(lambda: read_kernel[(triton.cdiv(N, TILE),)](in_arg(x), out, N, TILE=TILE, IN_KIND=k)),
        )
    for TILE, w in ((512, 4), (1024, 4), (1024, 8), (2048, 8)):
        n_tiles = triton.cdiv(N, TILE)
        for mult in (2, 4, 8):
            P = SM * mult
            out = torch.empty((P, 10), dtype=torch.float64, device=dev)
            for mode in (0, 1, 2, 3, 4):
                try:
                    t = bench(
                        lambda: loop_kernel[(P,)](
                            in_arg(x), out, N, n_tiles, TILE=TILE, IN_KIND=k, MODE=mode, num_warps=w
                        )
                    )
                    rep(f"loop tile {TILE} w{w} P={P} mode {mode}", t)
                except Exception as e:
                    print("fail", TILE, w, mult, mode, type(e).__name__, str(e)[:300], flush=True)
    for runs in (False, True):
        for unroll, mult in ((1, 8), (4, 2), (4, 4)):
            for tr, w in ((8, 8), (16, 8)):
                n_tiles = triton.cdiv(N, tr * 128)
                P = min(n_tiles, SM * mult)
                out = torch.empty((P, 10), dtype=torch.float64, device=dev)
                v = lanes_v((tr, 128), dtype, w, 1, True) if runs else 1
                kw = dict(TR=tr, TC=128, IN_KIND=k, UNROLL=unroll, V=v, num_warps=w)
                t = bench(lambda: cast_stats_kernel[(P,)](in_arg(x), out, N, n_tiles, **kw))
                rep(f"fqtool loop, cast tile {tr}x128 w{w} unroll {unroll} P={P} V={v} mode {6 if runs else 5}", t)
                tot = out.sum(0).tolist()
                want = error_sums_ref(x, x.to(torch.float16).to(dtype), None, input_stats=False)
                print("  sum_d2", tot[3], "ref", want.sum_d2, "flushed", tot[9], "ref", want.flushed, flush=True)
    # the loop's sums against the reference sums
    P = SM * 4
    out = torch.empty((P, 10), dtype=torch.float64, device=dev)
    loop_kernel[(P,)](in_arg(x), out, N, triton.cdiv(N, 1024), TILE=1024, IN_KIND=k, MODE=0, num_warps=4)
    tot = out.sum(0).tolist()
    ref = error_sums_ref(
        x, x.to(torch.float16).to(dtype), torch.full(x.shape, 65504.0, dtype=torch.float64, device=dev)
    )
    print("loop vs ref d2", tot[3], ref.sum_d2, "x2", tot[0], ref.sum_x2, "flush", tot[9], ref.flushed, flush=True)
