"""The Triton HiFX v12 kernels (``kernels.triton.hifx``) against the reference, bit for bit, in
Triton's interpreter (``triton_support`` sets ``TRITON_INTERPRET=1`` before triton loads).

The interpreter runs a program per 64 groups in numpy, and the fused statistics kernel is
slower still, so the tensors are small: a few programs each, ragged along both axes.
"""

from __future__ import annotations

import triton_support  # first: it sets TRITON_INTERPRET=1 before triton loads

# isort: split

import math  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from corner_cases import as_dtype, corner_cases  # noqa: E402
from golden import needs_golden  # noqa: E402
from triton_support import DTYPES, SKIP, check, check_golden, check_sums, heavy  # noqa: E402

import kernels  # noqa: E402
from kernels import backends  # noqa: E402

if SKIP:
    pytest.skip(SKIP, allow_module_level=True)

from kernels.triton import hifx as thifx  # noqa: E402

NAMES = ["hifx2_v12", "hifx3_v12", "hifx4_v12", "hifx5_v12"]
VARIANTS = ["torch", "numpy"]


@pytest.fixture(autouse=True)
def _quiet_interpreter():
    w = triton_support.quiet()
    yield
    w.__exit__(None, None, None)


# --------------------------------------------------------------------------- bit-exactness


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_random_matches_reference(name, dtype, variant):
    # 150 = two groups and a 22-element tail along the last axis; 37 a lone short group on axis 0.
    x = heavy((37, 150), seed=len(name) + len(variant)).to(dtype)
    check(x, f"{name}:variant={variant}")
    check(x, f"{name}:variant={variant},axis=0")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_corner_cases_match_reference(dtype):
    for case in corner_cases().values():
        x = as_dtype(case, dtype)
        if x is None:
            continue
        check(x, "hifx4_v12")
        if dtype == torch.float32:  # the variants share everything but the exponent rules
            check(x, "hifx3_v12:variant=numpy")
        if x.dim() > 1:
            check(x, "hifx5_v12:axis=0")


def test_three_d_axes_and_one_d():
    x = heavy((3, 70, 5), seed=4)
    for axis in (0, 1, 2, -1):
        check(x, f"hifx4_v12:axis={axis}")
    check(x.to(torch.bfloat16), "hifx2_v12:axis=1,variant=numpy")
    check(heavy((1000,), seed=5), "hif4")
    check(heavy((64,), seed=6), "hifx3_v12")


def _spec_example_groups() -> torch.Tensor:
    """The worked examples of formats-hifloat.md §5.3 and §5.5, one 64-group per row."""
    rows = [
        [1.0, 0.5, 0.3, 0, 0, 0, 0, 0, 0.01],
        [1.9, 0.6, 0.07],
        [0.99999994, 0.3, 0.1],
        [7.0, 2.5, 1.5, 0.5],
        [1e6, 1.0],
        [2.0**-50, 2.0**-52],
        [1.0, math.inf],
    ]
    x = torch.zeros(len(rows) + 1, 64)
    for i, r in enumerate(rows):
        x[i, : len(r)] = torch.tensor(r)
    for pos, v in ((0, 5.0), (8, 1.2), (12, 0.3), (16, 0.3), (20, 0.05), (24, 0.9)):
        x[len(rows), pos] = v
    return x


def test_spec_worked_examples():
    """Values from the spec's tables, not only the reference (saturation, clipped L1, tiny groups)."""
    x = _spec_example_groups()
    q = kernels.fake_quantize(x, "hifx4_v12", backend="triton")
    assert q[0, :9].tolist() == [1.0, 0.5, 0.25, 0, 0, 0, 0, 0, 0]
    assert q[1, :3].tolist() == [1.75, 0.5, 0]
    assert q[2, :3].tolist() == [0.875, 0.25, 0.125]
    assert q[3, :4].tolist() == [7, 3, 2, 1]
    assert q[4, :2].tolist() == [983040, 0]  # L1 clipped at 16: no saturation
    assert q[5, :2].tolist() == [0, 0]  # below ~2^-44 the 2^-45 offset flushes
    assert q[6, :2].tolist() == [0, math.inf]
    assert q[7, [0, 8, 12, 16, 20, 24]].tolist() == [5.0, 1.25, 0.25, 0.25, 0, 1.0]
    numpy = kernels.fake_quantize(x, "hifx4_v12:variant=numpy", backend="triton")
    assert numpy[4, :2].tolist() == [917504, 0]  # no L1 clip: saturates
    assert numpy[5, :2].tolist() == [2.0**-50, 2.0**-52]  # no offset
    assert numpy[6].isnan().all()  # Inf poisons the group
    assert numpy[7, [0, 8, 12, 16, 20, 24]].tolist() == [5.0, 1.25, 0.25, 0.25, 0, 1.0]
    assert kernels.fake_quantize(torch.zeros(64, 2), "hifx4_v12:variant=numpy,axis=0", backend="triton").eq(0).all()
    row = torch.tensor([1.0, 0.3, 0.7, 0.1, 1.9])
    want = {2: [1, 0, 1, 0, 1], 3: [1, 0.5, 0.5, 0, 1.5], 5: [1, 0.25, 0.75, 0.125, 1.875]}
    for n, w in want.items():
        assert kernels.fake_quantize(row, f"hifx{n}_v12", backend="triton").tolist() == w
    for variant in VARIANTS:
        check(x, f"hifx4_v12:variant={variant}")
        check_sums(x, f"hifx4_v12:variant={variant}")


def test_every_exponent_level_boundary():
    """Group maxima at every binade from the L1 clip at -46 to past 16 (and float32's ends),
    a power of two minus one ulp beside each: every clamp of §5.3 steps 5-7 in both variants."""
    e = torch.arange(-149, 128, dtype=torch.float32)
    top = torch.exp2(e)
    m = torch.stack([top, top * (1 - 2**-24), top * 0.26, top * 0.49, top * 0.126, -top * 0.75, top * 2**-3, top * 0.5])
    x = m.t().repeat(1, 8)  # 277 groups of 64: 8 distinct values per micro-group pair, repeated
    for name in ("hifx4_v12", "hifx2_v12:variant=numpy", "hifx5_v12:variant=numpy"):
        check(x, name)
    check_sums(x[::5], "hifx3_v12")


@needs_golden
def test_golden_contract_hifx_entries():
    """The contract's HiFX entries whose options the kernels cover (one test: the interpreter is slow)."""
    cases = check_golden(lambda spec: spec.family == "hifx" and thifx.unsupported_reason(spec) is None)
    ran, stems = len(cases), {case.entry["stem"] for case in cases}
    assert ran >= 39 and len(stems) == 5, (ran, stems)


# --------------------------------------------------------------------------- fused sums


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_sums_match_reference(dtype, variant):
    x = heavy((37, 100), seed=7)
    x[3, 4], x[5, 60], x[9, 1], x[30, 99] = math.nan, math.inf, -math.inf, 1e30
    x = x.to(dtype)
    n = 4 if dtype == torch.float32 else 2 + DTYPES.index(dtype) + (variant == "numpy")
    check_sums(x, f"hifx{n}_v12:variant={variant}")
    check_sums(x, f"hifx{n}_v12:variant={variant},axis=0")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_sums_corner_cases(dtype):
    cases = corner_cases()
    names = ("zeros", "neg_zeros", "f32_subnormals", "huge", "ties", "nan_in_block", "inf_in_block", "ragged_3d")
    for name in names:
        x = as_dtype(cases[name], dtype)
        if x is not None:
            check_sums(x, "hifx4_v12")
            if dtype == torch.float32 and name in ("zeros", "f32_subnormals", "huge", "inf_in_block"):
                check_sums(x, "hifx4_v12:variant=numpy")


def test_sums_clipped_level1_saturation_edge():
    """Groups whose L1 is clipped at 16 (a 2^20 element): a micro-group with E4 = 19 gets
    S = 18 (d8 and d4 clamped at 1), so its max has v = 2^M + 1/2 exactly, rounds to k = 2^M + 1
    and keeps it (no top: bound +Inf, nothing clipped); one ulp below it rounds to 2^M,
    saturates, and counts as clipped."""
    for n in (2, 3, 4, 5):
        m = n - 1
        tie = (2**m + 0.5) * 2.0 ** (19 - m)  # v = x·2^(M-1-18)
        x = torch.zeros(2, 64)
        x[:, 0] = 2.0**20
        x[0, 8] = tie
        x[1, 8] = torch.nextafter(torch.tensor(tie), torch.tensor(0.0))
        check(x, f"hifx{n}_v12")
        check_sums(x, f"hifx{n}_v12")


def test_sums_many_programs_merge():
    """Several programs whose means dwarf the spread: the host merge stays exact to float64 rounding."""
    check_sums(heavy((130, 64), seed=5) + 1000.0, "hifx5_v12")


def test_sums_cache_is_reusable():
    """hifx has no per-tensor reduction: along the last axis a caller's cache dict is left as it
    was, and the sums do not depend on it; along another axis it keeps the moved copy."""
    x = heavy((20, 130), seed=9)
    spec = kernels.parse("hifx4_v12")
    cache = {("absmax",): torch.tensor(1.0)}  # another family's entry stays untouched
    first = thifx.sums(x, spec, cache=cache)
    second = thifx.sums(x, spec, cache=cache)
    assert first == second == thifx.sums(x, spec)
    assert list(cache) == [("absmax",)]
    check_sums(x, "hifx2_v12:variant=numpy", cache=cache)
    y = heavy((128, 20), seed=10)
    check_sums(y, "hifx4_v12:axis=0", cache=cache)
    assert torch.equal(cache[("contiguous_along", 0)], y.t().contiguous())
    check_sums(y, "hifx3_v12:axis=0", cache=cache)  # the second format reads the kept copy


def test_empty_inputs():
    for x in (torch.zeros(0, 64), torch.zeros(4, 0)):
        check(x, "hifx4_v12")
        check(x, "hifx4_v12:variant=numpy")
    empty = thifx.sums(torch.zeros(0, 64), kernels.parse("hifx4_v12"))
    assert empty.numel == 0 and empty.n == 0


# --------------------------------------------------------------------------- registration


def test_backend_selection():
    for fmt in ("hifx4_v12", "hif4", "hifx2_v12:variant=numpy,axis=0", "hifx5_v12:axis=1"):
        spec = kernels.parse(fmt)
        assert thifx.unsupported_reason(spec) is None, fmt
        assert backends.select("cpu", spec, "triton").name == "triton"
        if not torch.cuda.is_available():
            assert backends.select("cpu", spec).name != "triton"
    for fmt in ("hifx4_v12:emulate=seed", "hifx4_v12:variant=numpy,emulate=seed", "hifx2_v12:emulate=seed"):
        spec = kernels.parse(fmt)
        assert isinstance(backends.REGISTRY["triton"].check(torch.device("cuda"), spec), str), fmt
        with pytest.raises(backends.BackendError):
            backends.select("cpu", spec, "triton")
        assert backends.select("cuda", spec).name == "reference"
    with pytest.raises(TypeError):
        thifx.fake_quantize(torch.zeros(4, 64, dtype=torch.float64), kernels.parse("hifx4_v12"))
