"""Shared by the Triton kernel tests: import this module *first* in a test module.

Triton decides at ``@triton.jit`` time whether a kernel compiles or runs in its interpreter,
so ``TRITON_INTERPRET=1`` is set here, before ``triton`` or any ``kernels.triton`` module is
imported; the kernels then run on CPU tensors. Not on a machine with a CUDA GPU (unless the
variable is set already): there the interpreter would also take over the session's GPU
tests, and the compiled kernels are checked by ``test_triton_cuda.py`` instead. :data:`SKIP`
says why the Triton tests cannot run here (None when they can); test modules turn it into a
module-level skip.

The checks: :func:`check` compares ``fake_quantize(backend="triton")`` with the reference bit
for bit (NaN == NaN, ±0 distinct) and verifies that the input is untouched; :func:`check_sums`
compares the fused statistics kernel with ``error_sums_ref`` of the reference output — the
counts exactly, the sums to float64 rounding.
"""

from __future__ import annotations

import math
import os
import sys
import warnings

import torch  # importing torch does not import triton

# On a machine with a GPU the interpreter would also take over the CUDA tests of the same
# session (fqtool --device cuda); there the compiled kernels are checked at full size by
# test_triton_cuda.py instead, and these tests skip.
_GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
_WAS_LOADED = ("triton" in sys.modules or "kernels.triton.mx" in sys.modules) and os.environ.get(
    "TRITON_INTERPRET"
) != "1"
if not _GPU:
    os.environ["TRITON_INTERPRET"] = "1"

import importlib.util  # noqa: E402

import kernels  # noqa: E402
from kernels import backends  # noqa: E402
from kernels.ranges import unit_bound  # noqa: E402
from kernels.stats import ErrorSums, error_sums_ref  # noqa: E402

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
COUNT_FIELDS = ("numel", "nan_in", "inf_in", "nan_out", "inf_out", "n", "clipped", "flushed", "nx")

if importlib.util.find_spec("triton") is None:
    SKIP: str | None = "triton is not installed"
elif _GPU:
    SKIP = "a CUDA GPU is present: the compiled kernels are checked by test_triton_cuda.py (-m cuda)"
elif "triton" not in backends.REGISTRY:
    SKIP = "the triton backend did not register (triton is broken here)"
elif _WAS_LOADED:
    SKIP = "triton was imported before the tests could ask for its interpreter (TRITON_INTERPRET=1)"
else:
    SKIP = None


def quiet():
    """A context in which the interpreter's numpy overflow warnings are silent (the kernels
    rely on float overflow, Inf·2^64 and the like, which the GPU does silently)."""
    w = warnings.catch_warnings()
    w.__enter__()
    warnings.simplefilter("ignore", RuntimeWarning)
    return w


def bits(t: torch.Tensor) -> torch.Tensor:
    """Bit patterns as int64, every NaN mapped to one pattern (NaN == NaN; ±0 stay distinct)."""
    i = t.view({2: torch.int16, 4: torch.int32}[t.element_size()]).to(torch.int64)
    return torch.where(torch.isnan(t), torch.full_like(i, -(2**40)), i)


def assert_same(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape, (
        f"{what}: {got.dtype} {tuple(got.shape)} vs {want.dtype} {tuple(want.shape)}"
    )
    bad = bits(got) != bits(want)
    if bad.any():
        idx = bad.flatten().nonzero().flatten()[:5].tolist()
        g, w = got.flatten(), want.flatten()
        raise AssertionError(
            f"{what}: {int(bad.sum())} differ: " + ", ".join(f"[{i}] {g[i]!r} vs {w[i]!r}" for i in idx)
        )


def check(x: torch.Tensor, fmt: str) -> None:
    """Triton's fake_quantize equals the reference's bit for bit, and leaves x alone."""
    spec = kernels.parse(fmt)
    before = x.clone()
    got = kernels.fake_quantize(x, spec, backend="triton")
    assert_same(got, kernels.fake_quantize(x, spec, backend="reference"), f"{fmt} {x.dtype} {tuple(x.shape)}")
    assert torch.equal(bits(x), bits(before)), "input modified"


def heavy(shape, seed: int) -> torch.Tensor:
    """Heavy-tailed values over ~40 binades, exact ties, zeros and a few outliers."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * torch.exp2(torch.randint(-20, 20, shape, generator=g).float())
    ties = (torch.randint(0, 64, shape, generator=g).float() + 0.5) / 8
    pick = torch.rand(shape, generator=g)
    x = torch.where(pick < 0.2, ties, x)
    x = torch.where(pick > 0.97, 0.0, x)
    return torch.where(pick > 0.995, x * 1e4, x)


def assert_sums_equal(got: ErrorSums, want: ErrorSums, what: str, scale: float) -> None:
    for k in COUNT_FIELDS:
        assert getattr(got, k) == getattr(want, k), f"{what}: {k} {getattr(got, k)} != {getattr(want, k)}"
    for k in ("sum_x2", "sum_q2", "sum_xq", "sum_d2", "sum_ad", "max_ad", "min_x", "max_x", "m2_x"):
        g, w = getattr(got, k), getattr(want, k)
        assert g == w or math.isclose(g, w, rel_tol=1e-12), f"{what}: {k} {g!r} != {w!r}"
    # The mean of signed values can cancel: relative to the magnitudes summed.
    assert math.isclose(got.mean_x, want.mean_x, rel_tol=1e-12, abs_tol=1e-12 * scale), f"{what}: mean_x"


def check_golden(accept) -> list:
    """Run every golden format case whose spec ``accept`` takes through the triton backend and
    compare with the reference vector (values bit for bit after widening, NaN == NaN; the dtype
    too where the output is the input's). Returns the cases run, for the caller's count."""
    from golden import format_cases

    ran = []
    for case in format_cases(accept):
        got = kernels.fake_quantize(case.x, case.spec, backend="triton")
        if "output_dtype" not in case.entry:
            assert got.dtype == case.want.dtype, f"{case.what}: {got.dtype} != {case.want.dtype}"
        g, w = got.double(), case.want.double()
        same = (g == w) | (torch.isnan(g) & torch.isnan(w))
        assert got.shape == case.want.shape and bool(same.all()), f"{case.what}: {int((~same).sum())} differ"
        ran.append(case)
    return ran


def check_sums(x: torch.Tensor, fmt: str, cache: dict | None = None) -> None:
    """The fused kernel's ErrorSums equal error_sums_ref of the reference output (with
    unit_bound's clip bound); ``input_stats=False`` leaves the input's moments empty."""
    from kernels.triton import sums

    spec = kernels.parse(fmt)
    q = kernels.fake_quantize(x, spec, backend="reference")
    want = error_sums_ref(x, q, unit_bound(x, spec))
    got = sums(x, spec, cache=cache)
    finite = x[torch.isfinite(x)].double()
    scale = float(finite.abs().max()) if finite.numel() else 0.0
    what = f"{fmt} {x.dtype} {tuple(x.shape)}"
    assert_sums_equal(got, want, what, scale)
    # A next format on the tensor: no moments (and, in the fast pass, no element counts: reduce
    # recovers them from the tensor's size), the same sums to float64 rounding.
    lean = sums(x, spec, input_stats=False, cache=cache)
    assert lean.nx == 0, what
    assert_sums_equal(lean, error_sums_ref(x, q, unit_bound(x, spec), input_stats=False), f"{what} lean", scale)


if SKIP is None:
    import triton
    import triton.language as tl

    from kernels.triton._common import div_by_reciprocal, split_divisor

    @triton.jit
    def _div_by_reciprocal_kernel(a_ptr, d_ptr, r_ptr, out_ptr, n, BLOCK: tl.constexpr):
        i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        m = i < n
        a = tl.load(a_ptr + i, mask=m, other=1.0)
        d = tl.load(d_ptr + i, mask=m, other=1.0)
        r = tl.load(r_ptr + i, mask=m, other=1.0)
        tl.store(out_ptr + i, div_by_reciprocal(a, d, r), mask=m)

    @triton.jit
    def _split_divide_kernel(a_ptr, d_ptr, out_ptr, n, BLOCK: tl.constexpr):
        i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        m = i < n
        a = tl.load(a_ptr + i, mask=m, other=1.0)
        m_, m_inv, p2 = split_divisor(tl.load(d_ptr + i, mask=m, other=1.0))
        tl.store(out_ptr + i, div_by_reciprocal(a, m_, m_inv) * p2, mask=m)


def _elementwise(kernel, a: torch.Tensor, *more: torch.Tensor) -> torch.Tensor:
    """``kernel(a, *more, out, n, BLOCK)`` over float32 ``a`` and ``more`` (broadcast to a's shape)
    in Triton's interpreter, in blocks of up to 2^18 elements."""
    a = a.float().contiguous()
    more = tuple(m.float().expand_as(a).contiguous() for m in more)
    out = torch.empty_like(a)
    block = min(1 << 18, triton.next_power_of_2(max(a.numel(), 1)))
    kernel[(triton.cdiv(a.numel(), block),)](a, *more, out, a.numel(), BLOCK=block)
    return out


def split_divide(a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """fl(a / d) as fp8tensor and hif8 compute it: ``_common.split_divisor`` of d, then
    ``div_by_reciprocal`` by its significand times its power of two, run in Triton's interpreter
    (elementwise here; the kernels split one scalar d per program) on float32 ``a`` and ``d``."""
    return _elementwise(_split_divide_kernel, a, d)


def divide_by_reciprocal(a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """fl(a / d) as the kernels compute it, ``_common.div_by_reciprocal`` with fl(1/d), run in
    Triton's interpreter (whose FMAs round once, as the GPU's) on float32 ``a`` and ``d``."""
    d = d.float().expand_as(a)
    return _elementwise(_div_by_reciprocal_kernel, a, d, 1.0 / d)
