"""kernels.stats: the error sums' definition on hand cases, and the CPU piece path against it."""

from __future__ import annotations

import math

import pytest
import torch

import kernels
import kernels.ranges
from kernels import chunked
from kernels.stats import ErrorSums, _sums_np, error_sums_ref, quantize_with_sums

COUNTS = ("numel", "nan_in", "inf_in", "nan_out", "inf_out", "n", "clipped", "flushed", "nx")
SUMS = ("sum_x2", "sum_q2", "sum_xq", "sum_d2", "sum_ad", "max_ad", "mean_x", "m2_x", "min_x", "max_x")


def assert_same_sums(a: ErrorSums, b: ErrorSums, rel: float = 1e-12) -> None:
    for f in COUNTS:
        assert getattr(a, f) == getattr(b, f), f
    for f in SUMS:
        va, vb = getattr(a, f), getattr(b, f)
        assert va == pytest.approx(vb, rel=rel, abs=1e-300), f


def test_hand_case():
    x = torch.tensor([1.0, -2.0, 0.0, 3.0, 0.25, float("nan"), float("inf")])
    q = torch.tensor([1.0, -2.5, 0.0, 2.0, 0.0, float("nan"), 6.0])
    bound = torch.full_like(x, 2.0)
    s = error_sums_ref(x, q, bound)
    assert (s.numel, s.nan_in, s.inf_in, s.nan_out, s.inf_out) == (7, 1, 1, 1, 0)
    assert s.n == 5  # the NaN pair and the inf input are left out
    assert s.sum_d2 == 0.25 + 1.0 + 0.0625
    assert s.sum_ad == 0.5 + 1.0 + 0.25
    assert s.max_ad == 1.0
    assert s.sum_x2 == 1 + 4 + 9 + 0.0625
    assert s.sum_xq == 1 + 5 + 6
    assert s.flushed == 1  # 0.25 -> 0; the exact 0 is not flushed
    assert s.clipped == 1  # |3| > 2 (inf is not finite, so not counted)
    assert s.nx == 5 and s.min_x == -2.0 and s.max_x == 3.0
    assert s.mean_x == pytest.approx(2.25 / 5)


def test_difference_is_exact_in_float64():
    x = torch.tensor([1.0 + 2**-23, 3e38], dtype=torch.float32)
    q = torch.tensor([1.0, -3e38], dtype=torch.float32)
    s = error_sums_ref(x, q)
    assert s.max_ad == float(x[1].double() * 2)  # 6e38 overflows float32, not float64
    assert s.sum_ad == pytest.approx(float(x[1].double() * 2) + 2**-23, rel=1e-15)


def _cases():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(300, 70, generator=g) * torch.logspace(-3, 3, 70)
    with_specials = base.clone()
    with_specials[3, 5] = float("nan")
    with_specials[7, 0] = float("inf")
    with_specials[9, 1] = -float("inf")
    with_specials[10, :] = 0
    return {"plain": base, "specials": with_specials, "bf16": with_specials.bfloat16(), "f16": base.half()}


@pytest.mark.parametrize("case", ["plain", "specials", "bf16", "f16"])
@pytest.mark.parametrize("fmt", ["mxfp4_e2m1", "hif8", "fp16", "nvfp4"])
def test_numpy_piece_sums_equal_the_reference(case, fmt):
    x = _cases()[case]
    q = kernels.fake_quantize(x, fmt)
    bound = torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) * 100
    assert_same_sums(_sums_np(x, q, bound), error_sums_ref(x, q, bound))
    assert_same_sums(_sums_np(x, q, None), error_sums_ref(x, q, None))


def test_merge_equals_whole():
    x = _cases()["specials"].reshape(-1)
    q = kernels.fake_quantize(x, "mxfp6_e3m2")
    whole = error_sums_ref(x, q)
    merged = ErrorSums()
    for a, b in ((0, 1), (1, 5000), (5000, 5001), (5001, x.numel())):
        merged.merge(error_sums_ref(x[a:b], q[a:b]))
    assert_same_sums(merged, whole, rel=1e-11)


def test_merge_keeps_the_variance_accurate_when_the_mean_dwarfs_it():
    x = 1e6 + torch.arange(1000, dtype=torch.float64).float() * 1e-2
    parts = ErrorSums()
    for i in range(0, 1000, 100):
        parts.merge(error_sums_ref(x[i : i + 100], x[i : i + 100]))
    var = float(x.double().var(unbiased=False))
    assert parts.m2_x / parts.nx == pytest.approx(var, rel=1e-6)


@pytest.fixture
def small_pieces(monkeypatch):
    """Make the CPU path split small tensors into many pieces."""
    monkeypatch.setattr(chunked, "CHUNK_ELEMS", 1 << 10)
    monkeypatch.setattr(chunked, "MIN_SPLIT_ELEMS", 1 << 11)


@pytest.mark.parametrize(
    "fmt", ["mxfp4_e2m1", "mxfp8_e4m3:block=16,axis=0", "nvfp4", "fp8_e4m3", "hif8", "nf4", "int8sym", "fp16"]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_pieces_equal_the_reference_on_the_whole_tensor(small_pieces, fmt, dtype):
    from kernels.ranges import unit_bound

    x = _cases()["specials"].to(dtype)
    q, sums = quantize_with_sums(x, fmt)
    spec = kernels.parse(fmt)
    q_ref = kernels.fake_quantize(x, spec, backend="reference")
    assert torch.equal(q.isnan(), q_ref.isnan()) and torch.equal(q.nan_to_num(0.0), q_ref.nan_to_num(0.0))
    ref = error_sums_ref(x, q_ref, unit_bound(x, spec))
    assert_same_sums(sums, ref, rel=1e-10)
    assert math.isfinite(sums.sum_d2)


def test_public_error_sums_equals_the_reference():
    from kernels.stats import error_sums

    x = _cases()["specials"]
    q = kernels.fake_quantize(x, "mxfp4_e2m1")
    bound = kernels.ranges.unit_bound(x, "mxfp4_e2m1")
    assert_same_sums(error_sums(x, q, bound), error_sums_ref(x, q, bound))


@pytest.mark.parametrize("case", ["plain", "specials", "bf16"])
def test_input_stats_can_be_skipped_without_changing_the_error_sums(small_pieces, case):
    x = _cases()[case]
    _, full = quantize_with_sums(x, "nvfp4")
    _, lean = quantize_with_sums(x, "nvfp4", input_stats=False)
    assert full.nx > 0 and lean.nx == 0 and lean.m2_x == 0 and lean.min_x == math.inf
    for f in COUNTS + SUMS:
        if f not in ("nx", "mean_x", "m2_x", "min_x", "max_x"):
            assert getattr(lean, f) == getattr(full, f), f
    ref = error_sums_ref(x, kernels.fake_quantize(x, "nvfp4"), input_stats=False)
    assert ref.nx == 0 and ref.n == full.n
