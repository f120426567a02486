"""How the fused Triton kernels reach the analysis: ``kernels.stats.format_sums`` takes a
backend's fused ``sums`` when it has one, and ``fqtool analyze`` gets the same numbers through
it as through the reference (run here in Triton's interpreter, by name, on CPU tensors)."""

from __future__ import annotations

import triton_support

# isort: split

import dataclasses  # noqa: E402
import math  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from triton_support import SKIP, heavy  # noqa: E402

import kernels  # noqa: E402
from fqtool import analysis  # noqa: E402
from kernels import backends  # noqa: E402
from kernels.stats import format_sums, quantize_with_sums  # noqa: E402

if SKIP:
    pytest.skip(SKIP, allow_module_level=True)

#: One format per family module (every one of them runs on the triton backend).
FORMATS = ["mxfp8_e4m3", "mxfp4_e2m1:block=16,axis=0", "mxfp4", "nvfp4", "nvf4", "nf4", "fp8_e4m3", "int8sym",
           "bf16", "hif8", "hifx4_v12"]  # fmt: skip


def _supported() -> list[str]:
    ok = [f for f in FORMATS if backends.REGISTRY["triton"].check(torch.device("cpu"), kernels.parse(f)) is None]
    assert ok == FORMATS, sorted(set(FORMATS) - set(ok))
    return ok


@pytest.fixture(autouse=True)
def _quiet_interpreter():
    w = triton_support.quiet()
    yield
    w.__exit__(None, None, None)


@pytest.fixture
def calls(monkeypatch):
    """Counts the calls of the triton backend's fused sums."""
    seen = []
    tb = backends.REGISTRY["triton"]

    def counted(x, spec, **kw):
        seen.append(str(spec))
        return tb.sums(x, spec, **kw)

    monkeypatch.setitem(backends.REGISTRY, "triton", dataclasses.replace(tb, sums=counted))
    return seen


def _close(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-300)


def test_format_sums_takes_the_fused_kernel(calls):
    x = heavy((48, 96), seed=3).to(torch.bfloat16)
    for fmt in _supported():
        cache: dict = {}
        got = format_sums(x, fmt, backend="triton", cache=cache)
        want = quantize_with_sums(x, fmt, backend="reference")[1]
        for k, v in want.as_dict().items():
            assert _close(getattr(got, k), v), (fmt, k, getattr(got, k), v)
        assert calls[-1] == str(kernels.parse(fmt))
        lean = format_sums(x, fmt, backend="triton", input_stats=False, cache=cache)
        assert lean.nx == 0 and lean.sum_d2 == got.sum_d2
    assert len(calls) == 2 * len(_supported())


def test_format_sums_without_a_fused_kernel(calls):
    x = heavy((16, 64), seed=4)
    got = format_sums(x, "mxfp8_e4m3", backend="reference")
    assert calls == [] and got.numel == x.numel()
    # Stochastic rounding draws from the generator like fake_quantize: the unfused path.
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a = format_sums(x, "mxfp8_e4m3:round=dither", backend="reference", generator=g1)
    b = quantize_with_sums(x, "mxfp8_e4m3:round=dither", backend="reference", generator=g2)[1]
    assert calls == [] and a.as_dict() == b.as_dict()


def test_analyze_tensor_same_metrics_through_triton(calls):
    x = heavy((64, 128), seed=8)
    x[1, 2], x[3, 4] = math.nan, -math.inf
    specs = analysis.parse_formats(_supported())
    got, got_stats = analysis.analyze_tensor(x, specs, "triton")
    want, want_stats = analysis.analyze_tensor(x, specs, "reference")
    assert len(calls) == len(specs)
    for spec, g, w in zip(specs, got, want, strict=True):
        for k in w:
            assert _close(g[k], w[k]), (str(spec), k, g[k], w[k])
    for k in want_stats:
        assert _close(got_stats[k], want_stats[k]), k


# The statistics driver (kernels.triton._common.stats_program): on the CPU three programs share
# the tiles (stats_grid), each runs a fast pass and, if that does not stand, a careful one.


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_stats_programs_mix_fast_and_careful_passes(dtype):
    """Programs that see a NaN or an Inf take the careful pass, the others stay on the fast one:
    together they equal the reference. (The fast pass's bfloat16 check of q, for the families
    whose q is normally a bfloat16, is exercised by the MX tests' subnormal corner cases.)"""
    from kernels.triton import _common

    n = 7 * 1024  # 7 tiles of the scaled family's statistics: programs take tiles {0,3,6}, {1,4}, {2,5}
    assert _common.stats_grid("fp8", torch.float32, 7, torch.device("cpu")) == (3, 1, 8)
    g = torch.Generator().manual_seed(5)
    base = torch.randn(n, generator=g)
    nan = base.clone()
    nan[3 * 1024 + 17] = float("nan")  # program 0 only
    inf = base.clone()
    inf[4 * 1024 + 5] = float("-inf")  # program 1 only
    for x, fmt in ((base, "bf16"), (nan, "bf16"), (inf, "fp8_e4m3"), (nan, "fp16"), (base, "int8sym")):
        triton_support.check_sums(x.to(dtype).reshape(7, 1024), fmt)


def test_stats_moments_far_from_zero():
    """The input's mean and M2 stay exact to float64 rounding when the mean is 10^6 standard
    deviations away from zero (the lanes' moments are taken around a shift of their own)."""
    g = torch.Generator().manual_seed(6)
    x = 1000.0 + 1e-3 * torch.randn(3 * 1024 + 100, generator=g)
    triton_support.check_sums(x, "bf16")
    triton_support.check_sums(x.reshape(-1, 4), "int8sym")


@pytest.mark.parametrize("programs", [3, 1100, 4500])
def test_reduce_merges_many_partial_rows(programs):
    """``_common.reduce`` over as many partial rows as the GPU grids give (one step of the merge
    kernel, several, and a second merge launch past 2048 rows), with and without the moments,
    against the merge written out in float64 on the host."""
    from kernels.triton import _common

    g = torch.Generator().manual_seed(programs)
    n = torch.randint(0, 50, (programs,), generator=g)
    cnt = torch.zeros((programs, 9), dtype=torch.int32)
    cnt[:, 0] = n + 3  # numel: 3 elements per program that are not finite pairs
    cnt[:, 1:5] = torch.randint(0, 2, (programs, 4), generator=g)
    cnt[:, 5] = n  # both finite
    cnt[:, 6:8] = torch.randint(0, 9, (programs, 2), generator=g)
    cnt[:, 8] = n + 1  # finite x
    sums = torch.rand((programs, 10), generator=g, dtype=torch.float64) * 100
    sums[:, 6] = 1e6 + torch.randn(programs, generator=g, dtype=torch.float64)  # means far from 0
    sums[:, 8] = -sums[:, 8]
    numel = int(cnt[:, 0].sum())
    for moments in (True, False):
        got = _common.reduce(cnt.clone(), sums.clone(), numel, input_stats=moments)
        c = cnt.to(torch.int64).sum(0).tolist()
        assert (got.numel, got.nan_in, got.inf_in, got.nan_out, got.inf_out) == (numel, *c[1:5])
        assert (got.n, got.clipped, got.flushed) == (c[5], c[6], c[7])
        for i, k in enumerate(("sum_x2", "sum_q2", "sum_xq", "sum_d2", "sum_ad")):
            assert math.isclose(getattr(got, k), float(sums[:, i].sum()), rel_tol=1e-12), k
        assert got.max_ad == float(sums[:, 5].max())
        if moments:
            ni = cnt[:, 8].double()
            mean = float((ni * sums[:, 6]).sum() / ni.sum())
            m2 = float((sums[:, 7] + ni * (sums[:, 6] - mean) ** 2).sum())
            assert got.nx == c[8] and math.isclose(got.mean_x, mean, rel_tol=1e-14)
            assert math.isclose(got.m2_x, m2, rel_tol=1e-9)
            assert (got.min_x, got.max_x) == (float(sums[:, 8].min()), float(sums[:, 9].max()))
        else:
            assert got.nx == 0 and got.mean_x == 0.0 and got.m2_x == 0.0


# The launch tables and the rounding helpers every family shares (kernels.triton._common).


def test_fq_warps_scales_with_the_tile_and_small_tensors(monkeypatch):
    """The table per family and dtype; proportionally more warps for longer tiles (32 at most);
    at least 16 on a GPU for a tensor of fewer than 4 tiles per SM, never on the CPU."""
    from kernels.triton import _common

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setitem(_common._SMS, None, 132)  # a GPU of 132 SMs, without asking CUDA
    bf16, f32 = torch.bfloat16, torch.float32
    assert _common.fq_warps("mx", bf16, 10, cpu) == 8 and _common.fq_warps("mx", f32, 10, cpu) == 16
    assert _common.fq_warps("mx", bf16, 10, cpu, tile=8192) == 16
    assert _common.fq_warps("mx", f32, 10, cpu, tile=16384) == 32  # 64 capped
    assert _common.fq_warps("hifx", bf16, 527, gpu) == 16  # 527 tiles < 4 x 132
    assert _common.fq_warps("hifx", bf16, 528, gpu) == 8
    assert _common.fq_warps("nvf4", f32, 10, gpu) == 32
    for family in ("mx", "qtype", "nvf4", "nvfp4", "nf4", "fp8", "int8sym", "hif8", "hifx", "cast"):
        assert family in _common.FQ_WARPS
    assert set(_common.STATS_WARPS) == set(_common.STATS_UNROLL)


import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from kernels.triton._common import rha, rha_small, rne_small  # noqa: E402


@triton.jit
def _rounding_kernel(t_ptr, out_ptr, n, BLOCK: tl.constexpr):
    i = tl.arange(0, BLOCK)
    m = i < n
    t = tl.load(t_ptr + i, mask=m, other=0.0)
    tl.store(out_ptr + i, rne_small(t), mask=m)
    tl.store(out_ptr + n + i, rha_small(t), mask=m)
    tl.store(out_ptr + 2 * n + i, rha(t), mask=m)


def test_rounding_helpers_match_torch():
    """``rne_small`` (ties to even, t in [0, 2^23]), ``rha_small`` (ties away, same range) and
    ``rha`` (any t >= 0, +Inf, NaN) against torch on exact ties at every binade up to 2^23,
    their neighbours one float away, and random values."""
    g = torch.Generator().manual_seed(3)
    ties = torch.cat([torch.arange(0, 64) + 0.5, torch.ldexp(torch.ones(22), torch.arange(1, 23)) - 0.5])
    ties = torch.cat([ties, torch.tensor([2.0**22 + 0.5, 2.0**23 - 0.5, 2.0**22, 2.0**23, 0.0, 0.25, 0.75])])
    t = torch.cat([ties, torch.nextafter(ties, torch.tensor(0.0)), torch.nextafter(ties, torch.tensor(1e9))])
    t = torch.cat([t, torch.rand(2000, generator=g) * torch.exp2(torch.randint(-30, 24, (2000,), generator=g))])
    t = t[t <= 2.0**23].float().contiguous()
    big = torch.tensor([2.0**23 + 2, 2.0**24 + 4, 3.0e38, float("inf"), float("nan")])
    n = t.numel()
    out = torch.empty(3 * n)
    _rounding_kernel[(1,)](t, out, n, BLOCK=triton.next_power_of_2(n))
    away = torch.floor(t.double() + 0.5).float()  # exact in float64 for t <= 2^23
    assert torch.equal(out[:n], torch.round(t))
    assert torch.equal(out[n : 2 * n], away)
    assert torch.equal(out[2 * n :], away)
    ob = torch.empty(3 * big.numel())
    _rounding_kernel[(1,)](big, ob, big.numel(), BLOCK=8)
    r = ob[2 * big.numel() :]
    assert torch.equal(r[:4], big[:4]) and r[4].isnan()
