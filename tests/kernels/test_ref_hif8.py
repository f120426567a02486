"""Tests for kernels/reference/hif8.py: the HiF8 element rule and the ``hif8`` recipe.

Spec formats-hifloat.md §3 and §4.1; golden folders hif8, hif8_core, hif8_paper,
hif8_qfuncs, hif8_tof8 and the hifp_matmul operands (CONTRACT.json).
"""

from __future__ import annotations

import fnmatch
import math

import pytest
import torch
from golden import GOLDEN, assert_bits_equal, case_files, contract, load, needs_golden

from kernels.reference._bits import exp2i, floor_log2, round_half_away
from kernels.reference.hif8 import hif8_round, quantize_hif8_ref

F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16
INF, NAN = math.inf, math.nan

# ----------------------------------------------------------------------------- golden

#: CONTRACT format strings of this module -> quantize_hif8_ref keyword arguments.
FORMATS = {
    "hif8": {},
    "hif8:emulate=seed": {"emulate": "seed"},
    "hif8:scale=none": {"scale": "none"},
    "hif8:scale=none,emulate=seed": {"scale": "none", "emulate": "seed"},
    "hif8:variant=paper": {"variant": "paper"},
    "hif8:scale=none,underflow=flush": {"scale": "none", "underflow": "flush"},
    "hif8:scale=none,underflow=flush,emulate=seed": {
        "scale": "none",
        "underflow": "flush",
        "emulate": "seed",
    },
    "hif8:scale=none,underflow=flush,overflow=tof8": {
        "scale": "none",
        "underflow": "flush",
        "overflow": "tof8",
    },
    "hif8:scale=none,underflow=flush,overflow=tof8,emulate=seed": {
        "scale": "none",
        "underflow": "flush",
        "overflow": "tof8",
        "emulate": "seed",
    },
}
STEMS = {"hif8", "hif8_core", "hif8_paper", "hif8_qfuncs", "hif8_tof8", "hifp_matmul"}


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def golden_cases(stems: set[str]) -> list:
    """(entry, file) pairs of every hif CONTRACT entry with a format on these stems."""
    cases = []
    for i, entry in enumerate(contract()):
        if entry.get("family") != "hif" or entry["stem"] not in stems or "format" not in entry:
            continue
        for path in case_files("hif", entry["stem"]):
            if "cases" in entry and not any(fnmatch.fnmatch(path.stem, c) for c in entry["cases"]):
                continue
            if any(fnmatch.fnmatch(path.stem, c) for c in entry.get("skip_cases", [])):
                continue
            x = load(path)[0][entry.get("input", "input")]
            if entry["dtypes"] != "all" and _dtype_name(x) not in entry["dtypes"]:
                continue
            tag = "req" if entry["required"] else "opt"
            cases.append(pytest.param(entry, path, id=f"{tag}-{i}-{entry['format']}-{path.stem}"))
    return cases


@needs_golden
def test_every_contract_format_is_mapped():
    formats = {e["format"] for e in contract() if e.get("family") == "hif" and e["stem"] in STEMS and "format" in e}
    assert formats, "no CONTRACT entries found"
    assert formats <= FORMATS.keys(), formats - FORMATS.keys()


@needs_golden
@pytest.mark.parametrize(("entry", "path"), golden_cases(STEMS))
def test_golden_contract(entry, path):
    """Required and optional entries alike: all of them are reproduced bit for bit."""
    tensors, _ = load(path)
    x = tensors[entry.get("input", "input")]
    want = tensors[entry["against"]]
    before = x.clone()
    got = quantize_hif8_ref(x, **FORMATS[entry["format"]])
    assert got.dtype == want.dtype
    assert_bits_equal(got, want, f"{entry['format']} vs {path.parent.name}/{path.stem}:{entry['against']}")
    assert_bits_equal(x, before, "input modified")


@needs_golden
def test_golden_seed_fp16_branch_is_not_the_default():
    """The fp16 core file: default = expected_fp32_semantics != the seed's fp16 branch."""
    tensors, meta = load(GOLDEN / "hif" / "hif8_core" / "mix_f16_4096.safetensors")
    x = tensors["input"]
    exact = quantize_hif8_ref(x, scale="none")
    seed = quantize_hif8_ref(x, scale="none", emulate="seed")
    n = int((exact.double() != seed.double()).sum())
    assert n == int(meta["n_diff_expected_vs_expected_exact"]) == 365


# ------------------------------------------------------------------- §3.3 worked examples

_P = 2.0**-22
#: input, then the columns of spec §3.3: A, B, C, D (NPU kernel), paper TA, paper saturating.
TABLE_3_3 = [
    (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    (-0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    (1e-30, _P, 0.0, 0.0, 0.0, 0.0, 0.0),
    (-1e-30, -_P, 0.0, 0.0, 0.0, 0.0, 0.0),
    (2.0**-24, _P, 0.0, 0.0, 0.0, 0.0, 0.0),
    (2.0**-23, _P, _P, _P, _P, _P, _P),
    (1.5 * 2.0**-23, _P, _P, _P, _P, _P, _P),
    (1.5 * 2.0**-16, 2.0**-15, 2.0**-15, 2.0**-15, 2.0**-15, 2.0**-15, 2.0**-15),
    (1.0625, 1.125, 1.125, 1.125, 1.125, 1.125, 1.125),
    (1.1875, 1.25, 1.25, 1.25, 1.25, 1.25, 1.25),
    (17.0, 16.0, 16.0, 16.0, 16.0, 16.0, 16.0),
    (18.0, 20.0, 20.0, 20.0, 20.0, 20.0, 20.0),
    (28671.0, 24576.0, 24576.0, 24576.0, 24576.0, 24576.0, 24576.0),
    (28672.0, 32768.0, 32768.0, 32768.0, 32768.0, 32768.0, 32768.0),
    (40959.0, 32768.0, 32768.0, 32768.0, 32768.0, 32768.0, 32768.0),
    (40960.0, 32768.0, 32768.0, 49152.0, INF, INF, 32768.0),
    (45000.0, 32768.0, 32768.0, 49152.0, INF, INF, 32768.0),
    (49152.0, 32768.0, 32768.0, INF, INF, INF, 32768.0),
    (1e6, 32768.0, 32768.0, INF, INF, INF, 32768.0),
    (INF, 32768.0, 32768.0, INF, INF, INF, INF),
    (-INF, -32768.0, -32768.0, -INF, -INF, -INF, -INF),
    (NAN, NAN, NAN, NAN, 0.0, NAN, NAN),
]
_COLUMNS = {
    "A": {"scale": "none"},
    "B": {"scale": "none", "underflow": "flush"},
    "C": {"scale": "none", "underflow": "flush", "overflow": "tof8"},
    "D": {"scale": "none", "underflow": "flush", "overflow": "inf"},
    "paper": {"variant": "paper"},
    "paper_sat": {"variant": "paper", "overflow": "saturate"},
}


def _table_column(i: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.tensor([row[0] for row in TABLE_3_3], dtype=F32)
    want = torch.tensor([row[i] for row in TABLE_3_3], dtype=F32)
    return x, want


@pytest.mark.parametrize(("column", "i"), [(c, i + 1) for i, c in enumerate(_COLUMNS)])
def test_worked_examples_3_3(column, i):
    x, want = _table_column(i)
    got = quantize_hif8_ref(x, **_COLUMNS[column])
    if column == "D":
        # The NPU kernel's NaN -> 0 (read, unverified) is not modelled: NaN stays NaN.
        want[-1] = NAN
    assert_bits_equal(got, want, column)
    # +0 for both zeros, in every variant (§3.2 step 2).
    assert not torch.signbit(got[:2]).any()


@pytest.mark.parametrize(("column", "i"), [("A", 1), ("B", 2), ("C", 3)])
def test_worked_examples_3_3_seed_emulation(column, i):
    x, want = _table_column(i)
    got = quantize_hif8_ref(x, **_COLUMNS[column], emulate="seed")
    assert got.dtype == (torch.float64 if column == "C" else F32)
    assert_bits_equal(got, want, column)


def test_hif8_round_matches_table_for_modes():
    x, want_a = _table_column(1)
    assert_bits_equal(hif8_round(x), want_a, "default modes = variant A")
    x, want_c = _table_column(3)
    assert_bits_equal(hif8_round(x, underflow="flush", overflow="tof8"), want_c, "tof8")
    assert hif8_round(x.to(BF16)).dtype == F32


# ----------------------------------------------------------------- the 126 HiF8 values


def _hif8_values() -> torch.Tensor:
    lines = (GOLDEN / "hif" / "hif8_values.txt").read_text().split()
    return torch.tensor([float.fromhex(v) for v in lines], dtype=torch.float64)


@needs_golden
def test_value_list_shape():
    v = _hif8_values()
    assert v.numel() == 127 and v[0] == 0 and v[1] == 2.0**-22 and v[-1] == 32768.0
    assert bool((v[1:] > v[:-1]).all())


_ALL_MODES = [dict(underflow=u, overflow=o) for u in ("min", "flush") for o in ("saturate", "inf", "tof8")]


@needs_golden
@pytest.mark.parametrize("modes", _ALL_MODES, ids=lambda m: f"{m['underflow']}-{m['overflow']}")
def test_values_are_fixed_points(modes):
    v = _hif8_values()[1:].to(F32)
    x = torch.cat([v, -v])
    assert_bits_equal(hif8_round(x, **modes), x, "positive/negative HiF8 values")


@needs_golden
@pytest.mark.parametrize("emulate", ["exact", "seed"])
def test_values_are_fixed_points_seed_functions(emulate):
    v = _hif8_values()[1:].to(F32)
    x = torch.cat([v, -v])
    for modes in ({"underflow": "min"}, {"underflow": "flush"}, {"underflow": "flush", "overflow": "tof8"}):
        assert_bits_equal(hif8_round(x, **modes, emulate=emulate), x, str(modes))
    # Every HiF8 value is exact in bf16 and fp16. The seed's fp16 branch is excluded:
    # its 2^-14 offset moves small values (§3.5, tested below).
    for dtype in (BF16, F16) if emulate == "exact" else (BF16,):
        xd = x.to(dtype)
        assert_bits_equal(quantize_hif8_ref(xd, scale="none", emulate=emulate), xd, str(dtype))


@needs_golden
@pytest.mark.parametrize("emulate", ["exact", "seed"])
def test_midpoints_round_away_and_neighbours_do_not(emulate):
    v = _hif8_values()  # float64, with 0 first
    lo, hi = v[1:-1], v[2:]  # neighbours among the positive values
    mid = ((lo + hi) / 2).to(F32)
    assert bool((mid.double() == (lo + hi) / 2).all()), "midpoints are exact in float32"
    below = torch.nextafter(mid, torch.zeros_like(mid))
    above = torch.nextafter(mid, torch.full_like(mid, INF))
    for sign in (1.0, -1.0):
        got = hif8_round(sign * torch.cat([mid, below, above]), emulate=emulate)
        want = sign * torch.cat([hi, lo, hi]).to(F32)
        assert_bits_equal(got, want, f"sign {sign}")
    # Between 0 and 2^-22 the midpoint 2^-23 also rounds away, in both underflow modes;
    # just below it, mode "flush" gives 0 and mode "min" 2^-22.
    t = torch.tensor(2.0**-23, dtype=F32)
    half = torch.stack([t, torch.nextafter(t, torch.zeros_like(t))])
    assert hif8_round(half, underflow="flush", emulate=emulate).tolist() == [2.0**-22, 0.0]
    assert hif8_round(half, emulate=emulate).tolist() == [2.0**-22, 2.0**-22]


# -------------------------------------------------------- the rule against an oracle


def _oracle(y: torch.Tensor, underflow: str, overflow: str) -> torch.Tensor:
    """§3.2 written step by step with the _bits helpers (independent of the LUT kernel)."""
    a = y.abs().double()
    zero = (y == 0) | ((a < 2.0**-23) if underflow == "flush" else False)
    a = torch.where(a < 2.0**-22, 2.0**-22, a)  # RHA to 2^-22 from 2^-23 up; "min" below
    finite = a.clamp(max=32768.0).to(F32)
    e = floor_log2(finite)
    ae = e.abs()
    w = torch.where(ae <= 3, 3, torch.where(ae <= 7, 2, torch.where(ae <= 15, 1, 0))).to(torch.int32)
    q = round_half_away(finite * exp2i(w - e)) * exp2i(e - w)
    q = torch.where(zero, 0.0, q).double()
    if overflow == "inf":
        q = torch.where(a >= 40960, INF, q)
    elif overflow == "tof8":
        q = torch.where(a >= 40960, torch.where(a >= 49152, INF, 49152.0), q)
    q = torch.where(y.isnan(), NAN, q)
    return torch.where(y < 0, -q, q).to(F32)


def _wide_sample(n: int, seed: int) -> torch.Tensor:
    """Random float32 bit patterns spread over exponents 2^-30 .. 2^17, plus specials."""
    g = torch.Generator().manual_seed(seed)
    biased = torch.randint(127 - 30, 127 + 17, (n,), generator=g, dtype=torch.int32)
    mant = torch.randint(0, 1 << 23, (n,), generator=g, dtype=torch.int32)
    sign = torch.randint(0, 2, (n,), generator=g, dtype=torch.int32) << 31
    x = (sign | (biased << 23) | mant).view(F32)
    specials = torch.tensor([0.0, -0.0, INF, -INF, NAN, 1e-45, 3e38, -3e38], dtype=F32)
    return torch.cat([x, specials])


@pytest.mark.parametrize("modes", _ALL_MODES, ids=lambda m: f"{m['underflow']}-{m['overflow']}")
def test_rule_matches_oracle_on_random_bit_patterns(modes):
    x = _wide_sample(200_000, seed=1)
    assert_bits_equal(hif8_round(x, **modes), _oracle(x, **modes), str(modes))


@pytest.mark.parametrize("underflow", ["min", "flush"])
def test_seed_emulation_equals_exact_on_float32(underflow):
    """§3.5: with float32 compute, the seed's log2 artefact never changes a HiF8 result."""
    x = _wide_sample(100_000, seed=2)
    assert_bits_equal(hif8_round(x, underflow=underflow, emulate="seed"), hif8_round(x, underflow=underflow), underflow)


# --------------------------------------------------------------- dtypes and shapes


@pytest.mark.parametrize("dtype", [BF16, F16])
def test_low_precision_inputs_upcast_then_round_back(dtype):
    x = _wide_sample(10_000, seed=3).clamp(-60000, 60000).to(dtype)
    got = quantize_hif8_ref(x, scale="none")
    assert got.dtype == dtype
    assert_bits_equal(got, hif8_round(x.float()).to(dtype), str(dtype))


def test_fp16_seed_branch_examples_3_5():
    """§3.5: fp16 compute adds 2^-14 before log2 and so coarsens small values."""
    x = torch.tensor([2.0**-20, 2.0**-16, 1.5 * 2.0**-14], dtype=F16)
    seed = quantize_hif8_ref(x, scale="none", emulate="seed")
    exact = quantize_hif8_ref(x, scale="none")
    assert seed.tolist() == [0.0, 2.0**-15, 2.0**-13]
    assert exact.tolist() == x.tolist()


@pytest.mark.parametrize("shape", [(7,), (3, 5, 11), (2, 1, 4, 3)])
def test_shapes_preserved(shape):
    x = torch.randn(shape) * 10
    for kwargs in ({}, {"scale": "none"}, {"variant": "paper"}):
        got = quantize_hif8_ref(x, **kwargs)
        assert got.shape == x.shape
    assert_bits_equal(quantize_hif8_ref(x, scale="none").flatten(), hif8_round(x.flatten()), "elementwise")


def test_non_contiguous_input():
    x = torch.randn(33, 40) * 100
    xt = x.t()
    assert not xt.is_contiguous()
    assert_bits_equal(quantize_hif8_ref(xt, scale="none"), quantize_hif8_ref(xt.contiguous(), scale="none"))
    assert_bits_equal(quantize_hif8_ref(xt), quantize_hif8_ref(xt.contiguous()))


def test_empty_tensor():
    x = torch.empty(0, 4)
    assert quantize_hif8_ref(x).shape == (0, 4)
    assert quantize_hif8_ref(x).dtype == BF16
    assert quantize_hif8_ref(x, scale="none").shape == (0, 4)


# -------------------------------------------------------------- the §4.1 recipe


def test_recipe_examples_4_1():
    small = quantize_hif8_ref(torch.tensor([1e-8, 5e-9]))
    assert small.dtype == BF16
    assert small.float().tolist() == pytest.approx([1.0070e-8, 5.035e-9], rel=3e-3)
    got = quantize_hif8_ref(torch.tensor([1.0, 0.3, -0.7, 1e-9]))
    assert got.float()[:3].tolist() == [1.0, 0.3125, -0.6875]
    assert got.float()[3].item() == pytest.approx(2.98e-8, rel=1e-2)
    # With underflow flush the tiny element becomes 0 instead of ±2^-22/s.
    assert quantize_hif8_ref(torch.tensor([1.0, 1e-9]), underflow="flush").float().tolist() == [1.0, 0.0]


def test_recipe_is_scale_rule_then_elements():
    """out = bf16(fl32(q / s)), q = hif8(x·s), s = 8 / (amax + 2^-23), all float32."""
    x = torch.randn(64, 33) * 3
    s = torch.tensor(8.0) / (x.abs().amax() + 2.0**-23)
    want = (hif8_round(x * s) / s).to(BF16)
    assert_bits_equal(quantize_hif8_ref(x), want)
    # k and out_dtype are honoured.
    s4 = torch.tensor(4.0) / (x.abs().amax() + 2.0**-23)
    assert_bits_equal(quantize_hif8_ref(x, k=4.0, out_dtype=F32), hif8_round(x * s4) / s4)


@pytest.mark.parametrize("bad", [INF, -INF, NAN])
def test_recipe_non_finite_poisons_the_tensor(bad):
    x = torch.randn(4, 16)
    x[1, 3] = bad
    assert bool(quantize_hif8_ref(x).isnan().all())
    assert bool(quantize_hif8_ref(x, emulate="seed").isnan().all())


def test_recipe_all_zero_and_output_dtype():
    for dtype in (F32, BF16, F16):
        got = quantize_hif8_ref(torch.zeros(3, 5, dtype=dtype))
        assert got.dtype == BF16 and not bool(got.any())


def test_recipe_seed_adds_eps_in_input_dtype():
    """emulate=seed on bf16: amax + 2^-23 is rounded in bf16; the default adds it in
    float32 (README "Decisions behind the defaults"). With a tiny amax they differ."""
    # amax = 2^-23·(1 + 2^-7): amax + 2^-23 = 2^-22·(1 + 2^-8) is a bf16 tie (-> 2^-22).
    x = (torch.linspace(-1, 1, 257) * (2.0**-23 * (1 + 2.0**-7))).to(BF16)
    exact = quantize_hif8_ref(x)
    seed = quantize_hif8_ref(x, emulate="seed")
    amax = x.abs().amax()
    s_seed = torch.tensor(8.0) / (amax + 2.0**-23)  # bf16 sum, float32 quotient
    y = x.float() * s_seed
    q = hif8_round(y, emulate="seed").to(BF16)
    assert_bits_equal(seed, ((y + (q - y)) / s_seed).to(BF16), "seed expression")
    assert not torch.equal(exact, seed)


def test_paper_variant_is_elementwise_and_keeps_dtype():
    x = torch.tensor([1e-30, 45000.0, -INF, 18.0], dtype=F32)
    assert quantize_hif8_ref(x, variant="paper").tolist() == [0.0, INF, -INF, 20.0]
    # variant=paper implies scale=none even though scale defaults to "tensor".
    assert quantize_hif8_ref(x, variant="paper", scale="tensor").dtype == F32
    assert quantize_hif8_ref(x.to(BF16), variant="paper").dtype == BF16


# -------------------------------------------------------------- hygiene


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"emulate": "seed"},
        {"scale": "none"},
        {"scale": "none", "underflow": "flush", "emulate": "seed"},
        {"scale": "none", "underflow": "flush", "overflow": "tof8", "emulate": "seed"},
        {"variant": "paper"},
    ],
)
@pytest.mark.parametrize("dtype", [F32, BF16, F16])
def test_input_not_modified(kwargs, dtype):
    # Tiny values: the seed's variant B zeroes them in its input (§3.2 notes).
    x = torch.tensor([1e-9, -3e-8, 0.5, -7.0, 1000.0, 0.0], dtype=dtype).repeat(2, 256)
    before = x.clone()
    quantize_hif8_ref(x, **kwargs)
    assert torch.equal(x, before)


def test_invalid_options_raise():
    x = torch.ones(4)
    for kwargs in (
        {"scale": "block"},
        {"variant": "npu"},
        {"underflow": "zero"},
        {"overflow": "clip"},
        {"emulate": "fast"},
    ):
        with pytest.raises(ValueError):
            quantize_hif8_ref(x, **kwargs)
    with pytest.raises(ValueError, match="no seed function"):
        hif8_round(x, overflow="inf", emulate="seed")
    with pytest.raises(TypeError):
        quantize_hif8_ref(torch.ones(4, dtype=torch.int32))
