"""The Triton kernels compiled for a GPU against the reference on the same GPU, at full size.

Run by ``test_triton_cuda.py`` in a subprocess (Triton must not be in interpreter mode), or
directly: ``python3 tests/kernels/triton_cuda_check.py [--quick] [--families=mx,nf4]
[--formats="a;b"] [--golden-only]``.
For every format in :data:`FORMATS` that the triton backend accepts, on tensors of a ragged shape
(float32, bfloat16 and float16, or bfloat16 only for option variants) and of a shape made of
whole blocks (bfloat16), with values over ~60 binades, ties, zeros, NaN, ±Inf and subnormals:

- ``fake_quantize(backend="triton")`` equals the reference bit for bit (NaN == NaN, ±0 distinct);
- the fused sums, with the input's moments and without, equal ``error_sums_ref`` of the
  reference output: counts exactly, sums to 1e-10 relative;
- the input is unchanged;

and every golden vector of ``CONTRACT.json`` whose format the backend accepts is reproduced on
the GPU. Prints one line per format and a summary; every mismatch is listed, then it exits 1.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kernels  # noqa: E402
from kernels import backends  # noqa: E402
from kernels.ranges import unit_bound  # noqa: E402
from kernels.stats import error_sums_ref, format_sums  # noqa: E402

#: (format, run on every dtype?) — option variants run on bfloat16 only to bound compile time.
FORMATS = [
    *((f, True) for f in ("mxfp8_e4m3", "mxfp4_e2m1", "mxint8")),
    *((f, False) for f in ("mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3")),
    ("mxfp8_e4m3:block=16,axis=0", False),
    ("mxfp4_e2m1:scale=rceil,round=even", False),
    ("mxfp8_e4m3:block=0", False),
    ("mxfp8_e4m3:shared_exp=none", False),
    ("mxfp8_e4m3:minus_exp=auto", False),
    ("mxfp4_e2m1:minus_exp=auto-fix", False),
    ("mxfp8_e4m3:emulate=seed", False),
    *((f, True) for f in ("mxfp4", "e2m1K4k4B8b4c")),
    *((f, False) for f in ("mxfp8e4m3", "e4m3k8b32c")),
    ("mxfp6e3m2:axis=0", False),
    *((f, False) for f in ("e0m3K1k4B1b64Coff38", "e0m7k8b16c", "e3m2K2k3B3b5coff5", "e8m3k8b16c")),
    ("e4m3K0k8B1b32off400", False),
    *((f, True) for f in ("nvf4", "nvfp4", "nf4", "fp8_e4m3", "int8sym", "bf16")),
    *((f, False) for f in ("fp8_e5m2", "fp16")),
    ("nvfp4:axis=0", False),
    ("nvf4:emulate=seed", False),
    ("nf4:block=32,axis=0", False),
    ("int8sym:axis=0", False),
    *((f, False) for f in ("fp8_e4m3:emulate=seed", "int8sym:emulate=seed", "int8sym:axis=0,emulate=seed")),
    *((f, False) for f in ("fp16:emulate=seed", "fp32")),
    *((f, True) for f in ("hif8", "hifx4_v12")),
    ("hif8:scale=none", False),
    ("hif8:variant=paper", False),
    ("hifx4_v12:axis=0", False),
    ("hifx4_v12:variant=numpy", False),
    ("hifx2_v12", False),
]
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def data(shape, dtype, g) -> torch.Tensor:
    x = torch.randn(shape, device="cuda", generator=g)
    x = x * torch.exp2(torch.randint(-30, 30, shape, device="cuda", generator=g).float())
    ties = (torch.randint(0, 64, shape, device="cuda", generator=g).float() + 0.5) / 8
    pick = torch.rand(shape, device="cuda", generator=g)
    x = torch.where(pick < 0.1, ties, x)
    x = torch.where(pick > 0.98, 0.0, x)
    x[0, :6] = torch.tensor([math.nan, math.inf, -math.inf, 1e-40, -0.0, 3e38])
    x[7, :] = 1e-42  # a row of fp32 subnormals (zero in bf16/fp16)
    x[8, :] = torch.randn(shape[1], device="cuda", generator=g) * 1e-39  # fp32 normals and bf16 subnormals
    return x.to(dtype)


def bits(t: torch.Tensor) -> torch.Tensor:
    i = t.view({2: torch.int16, 4: torch.int32}[t.element_size()]).to(torch.int64)
    return torch.where(torch.isnan(t), torch.full_like(i, -(2**40)), i)


def check_format(fmt: str, x: torch.Tensor) -> None:
    spec = kernels.parse(fmt)
    before = bits(x)
    want = kernels.fake_quantize(x, spec, backend="reference")
    got = kernels.fake_quantize(x, spec, backend="triton")
    what = f"{fmt} {x.dtype} {tuple(x.shape)}"
    assert got.dtype == want.dtype and got.shape == want.shape, what
    bad = bits(got) != bits(want)
    if bad.any():
        i = int(bad.flatten().nonzero()[0])
        first = f"[{i}] {got.flatten()[i]!r} vs {want.flatten()[i]!r}"
        raise AssertionError(f"{what}: {int(bad.sum())} differ, first {first}")
    # The first format on a tensor (with the input's moments), then a next one (without them).
    cache: dict = {}
    scale = 1e-300
    for input_stats in (True, False):
        ref = error_sums_ref(x, want, unit_bound(x, spec), input_stats=input_stats)
        s = format_sums(x, spec, backend="triton", cache=cache, input_stats=input_stats)
        if input_stats:
            scale = max(abs(ref.max_x), abs(ref.min_x), scale)
        for k, v in ref.as_dict().items():
            w = getattr(s, k)
            ok = w == v or math.isclose(w, v, rel_tol=1e-10, abs_tol=1e-12 * scale)
            assert ok, f"{what} (input_stats={input_stats}): sums.{k} {w!r} != {v!r}"
    assert torch.equal(bits(x), before), f"{what}: input modified"


def golden(triton_ok, failures: list[str]) -> int:
    from golden import format_cases

    ran = 0
    for case in format_cases(triton_ok):
        got = kernels.fake_quantize(case.x.cuda(), case.spec, backend="triton").cpu()
        a = torch.where(torch.isnan(got.double()), 0.123456789, got.double()) + 0.0
        e = torch.where(torch.isnan(case.want.double()), 0.123456789, case.want.double()) + 0.0
        if not (got.shape == case.want.shape and torch.equal(a, e)):
            failures.append(f"golden {case.what}: {int((a != e).sum())} differ")
        ran += 1
    return ran


def main() -> int:
    quick = "--quick" in sys.argv
    only = next((a.split("=", 1)[1].split(",") for a in sys.argv if a.startswith("--families=")), None)
    pick = next((a.split("=", 1)[1].split(";") for a in sys.argv if a.startswith("--formats=")), None)
    if "--golden-only" in sys.argv:
        pick = []
    assert "TRITON_INTERPRET" not in os.environ or os.environ["TRITON_INTERPRET"] != "1"
    tb = backends.REGISTRY["triton"]
    dev = torch.device("cuda")

    def triton_ok(spec) -> bool:
        return tb.check(dev, spec) is None

    g = torch.Generator(device="cuda").manual_seed(0)
    shape = (515, 1031) if quick else (1531, 4099)
    even = (128, 1024) if quick else (512, 8192)
    checked, refused, failures, t0 = 0, [], [], time.perf_counter()
    for fmt, all_dtypes in FORMATS:
        spec = kernels.parse(fmt)
        if (only and spec.family not in only) or (pick is not None and fmt not in pick):
            continue
        why = tb.check(dev, spec)
        if why:
            refused.append(f"{fmt}: {why}")
            continue
        assert backends.select(dev, spec).name == "triton", fmt
        bad = []
        # The ragged shape in every dtype asked for, and a shape whose rows split into whole
        # blocks (the kernels' contiguous fast paths) in bfloat16.
        runs = [(shape, d) for d in (DTYPES if all_dtypes else (torch.bfloat16,))] + [(even, torch.bfloat16)]
        for shp, dtype in runs:
            try:
                check_format(fmt, data(shp, dtype, g))
            except Exception as e:  # noqa: BLE001 - every failure is reported, then the run fails
                bad.append(f"{type(e).__name__}: {str(e)[:300]}")
            checked += 1
        failures += bad
        print(f"{'FAIL' if bad else 'ok'}  {fmt}" + "".join(f"\n      {b}" for b in bad), flush=True)
    if not pick:  # all formats, or --golden-only
        n_golden = golden(lambda spec: triton_ok(spec) and (not only or spec.family in only), failures)
    else:
        n_golden = 0
    print(f"{checked} (format, dtype, shape) runs on {tuple(shape)} and {tuple(even)}; {n_golden} golden files; "
          f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
    for r in refused:
        print(f"refused  {r}")
    for f in failures:
        print(f"FAILED  {f}")
    if failures:
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
