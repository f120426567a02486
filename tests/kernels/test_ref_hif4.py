"""Tests for kernels/reference/hif4.py: paper-aligned HiF4 (``hif4_paper``, spec §5.6, §5.7)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from golden import assert_bits_equal, case_files, contract, load, needs_golden

from kernels.reference.hif4 import _bf, quantize_hif4_paper_ref

F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16


def golden_cases() -> list:
    return [
        pytest.param(entry, path, id=f"{entry['against']}-{path.stem}")
        for entry in contract()
        if entry.get("family") == "hif" and entry["stem"] == "hif4_paper"
        for path in case_files("hif", "hif4_paper")
    ]


@needs_golden
def test_contract_entries_exist():
    entries = [e for e in contract() if e.get("family") == "hif" and e["stem"] == "hif4_paper"]
    assert {e["format"] for e in entries} == {"hif4_paper"} and len(golden_cases()) >= 2


@needs_golden
@pytest.mark.parametrize(("entry", "path"), golden_cases())
def test_golden_contract(entry, path):
    tensors, _ = load(path)
    x = tensors["input"]
    before = x.clone()
    got = quantize_hif4_paper_ref(x)
    want = tensors[entry["against"]]
    assert got.dtype == want.dtype
    assert_bits_equal(got, want, f"hif4_paper vs {path.stem}:{entry['against']}")
    assert_bits_equal(x, before, "input modified")


# ------------------------------------------------------------ §5.7 worked examples


def _group(values: list[float]) -> torch.Tensor:
    x = torch.zeros(64)
    x[: len(values)] = torch.tensor(values)
    return x.to(BF16)


EXAMPLES_5_7 = [
    ([1.0, 0.5, 0.3, 0, 0, 0, 0, 0, 0.01], [0.9375, 0.46875, 0.3125, 0, 0, 0, 0, 0, 0]),
    ([7.0, 2.5, 1.5, 0.5], [7.0, 2.0, 2.0, 0.0]),  # RNE on the element code
    ([0.99999994, 0.3, 0.1], [0.9375, 0.3125, 0.15625]),
    ([1.0, 0.375, 0.625], [0.9375, 0.3125, 0.625]),
    ([1e6, 1.0], [344064.0, 0.0]),  # saturates at 1.75 · 49152 · 4
    ([2.0**-50, 2.0**-52], [0.0, 0.0]),  # Ea = 0: the group flushes
]


@pytest.mark.parametrize(("inp", "want"), EXAMPLES_5_7)
def test_worked_examples_5_7(inp, want):
    got = quantize_hif4_paper_ref(_group(inp))
    assert got.dtype == BF16
    assert got[: len(want)].float().tolist() == want
    assert not bool(got[len(want) :].float().any())


def test_levels_step_by_step():
    """Ma = 7: sf = bf(7 · bf(1/7)) = bf(0.998046875) = 1 (a bf16 tie, to even), so
    Ea = 1 and rA = 1; Mb = 7 >= 4 gives Eb = 1; 7/2 >= 2 gives Ec = 1; 7 -> 1.75 · 4."""
    x = _group([7.0, 0, 0, 0, 0.3, 0, 0, 0, 3.9, 1.9])
    got = quantize_hif4_paper_ref(x).float()
    # micro-group 1 (same sub-block, Ec = 0): scale 1/2, 0.3 -> 0.15 -> 0.25 · 2 = 0.5.
    # sub-block 1: Mb = 3.9 < 4 so Eb = 0; Mc = 3.9 >= 2 so Ec = 1: 3.9/2 -> 2 (1.75 sat).
    assert got[[0, 4, 8, 9]].tolist() == [7.0, 0.5, 3.5, 2.0]


# ---------------------------------------------------------------- bf16 roundings


def test_level_tests_use_bf16_rounded_products():
    """Ma = 12.25 gives Ea = 1.75 and rA = bf(4/7) = 0.5703125. In sub-block 1, Mb = 7:
    7 · rA = 3.9921875 is a bf16 tie that rounds (to even) to 4, so Eb = 1 (step 4 tests
    the rounded product) and 7 comes back exactly; unrounded it would give 6.125."""
    x = _group([12.25, 0, 0, 0, 0, 0, 0, 0, 7.0])
    assert quantize_hif4_paper_ref(x)[[0, 8]].float().tolist() == [12.25, 7.0]


def _rne_bf16(q: Fraction) -> float:
    """Exact RNE of a positive rational to bf16 (8 significant bits)."""
    e = math.floor(math.log2(q))
    while Fraction(2) ** e > q:
        e -= 1
    while Fraction(2) ** (e + 1) <= q:
        e += 1
    scaled = q / Fraction(2) ** (e - 7)
    k = math.floor(scaled)
    rest = scaled - k
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and k % 2):
        k += 1
    return float(k * Fraction(2) ** (e - 7))


@pytest.mark.parametrize("den", [Fraction(7), Fraction(1), Fraction(5, 4), Fraction(3, 2), Fraction(7, 4)])
def test_reciprocals_round_once(den):
    """bf(1/7) and rA = bf(1/Ea) for every E6M2 mantissa: float32 division then bf16
    equals the exact RNE of the rational (no double-rounding tie)."""
    got = _bf(torch.tensor(1.0, dtype=F32) / float(den)).item()
    assert got == _rne_bf16(1 / den)


# ------------------------------------------------------------- shapes, dtypes, specials


def test_float32_input_is_rounded_to_bf16_first():
    x = torch.randn(4, 128) * 5
    got = quantize_hif4_paper_ref(x)
    assert got.dtype == F32
    assert_bits_equal(got, quantize_hif4_paper_ref(x.to(BF16)).float())
    assert quantize_hif4_paper_ref(x.to(F16)).dtype == F16


def test_ragged_tail_axis_and_3d():
    x = (torch.randn(3, 100, 5) * 3).to(BF16)
    got = quantize_hif4_paper_ref(x, axis=1)
    assert got.shape == x.shape
    ref = quantize_hif4_paper_ref(x.movedim(1, -1)).movedim(-1, 1)
    assert_bits_equal(got, ref)
    padded = torch.cat([x.movedim(1, -1), torch.zeros(3, 5, 28, dtype=BF16)], dim=-1)
    assert_bits_equal(ref, quantize_hif4_paper_ref(padded)[..., :100].movedim(-1, 1))
    v = torch.randn(70).to(BF16)
    assert_bits_equal(quantize_hif4_paper_ref(v), quantize_hif4_paper_ref(v[None])[0])


def test_all_zero_group_and_signs():
    x = torch.zeros(2, 64, dtype=BF16)
    x[1, :4] = torch.tensor([-1.0, 1.0, -0.5, 0.25])
    got = quantize_hif4_paper_ref(x).float()
    assert not bool(got[0].any()) and not bool(got.isnan().any())
    assert got[1, :4].tolist() == [-0.9375, 0.9375, -0.46875, 0.3125]


def test_non_finite_documented_behaviour():
    x = torch.zeros(2, 64, dtype=BF16)
    x[0, 3], x[0, 7] = float("nan"), 1.0
    x[1, 3], x[1, 7] = -float("inf"), 1.0
    got = quantize_hif4_paper_ref(x).float()
    assert bool(got[0].isnan().all())
    assert got[1, 3].item() == -344064.0 and not bool(got[1].isnan().any())


@pytest.mark.parametrize("dtype", [F32, BF16, F16])
def test_input_not_modified(dtype):
    x = (torch.randn(8, 128) * 3).to(dtype)
    before = x.clone()
    quantize_hif4_paper_ref(x)
    assert torch.equal(x, before)
