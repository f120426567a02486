"""Tests of the MX reference kernel ``kernels.reference.mx.quantize_mx_ref``.

- every golden file of the MX stems: exact mode vs ``expected_exact``, seed mode vs
  ``expected`` (float32, and bf16 computed in bf16), and every peer tensor the
  contract maps to an MX option; plus ``alt_seed_quantize_mx_floor`` / torchao
  peers stored in the QType stems;
- the worked examples of spec formats-mx.md §11.2, rows 1-13, with the literal
  values of the table;
- shapes, axes, dtypes, options, dither, and that the input is never modified.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from golden import assert_bits_equal, block_of, case_files, load, needs_golden
from golden import assert_leading as check
from golden import int_view as _bits

from kernels.reference.mx import MX_ELEMENTS, SQRT2_UP, f32_ceil, quantize_mx_ref, resolve_mx_element

F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16
FLT_MAX = torch.finfo(F32).max
INF, NAN = math.inf, math.nan


def block(values, dtype=F32, n=32) -> torch.Tensor:
    """One block of ``n`` (the §11.2 convention: the given values, then zeros)."""
    return block_of(values, n, dtype)


def run(x: torch.Tensor, **kw) -> torch.Tensor:
    """quantize_mx_ref, asserting the input is left bit-for-bit unchanged and shape/dtype kept."""
    before = x.clone()
    y = quantize_mx_ref(x, **kw)
    assert torch.equal(_bits(x), _bits(before)), "input was modified"
    assert y.shape == x.shape and y.dtype == x.dtype
    return y


# --------------------------------------------------------------------------- golden files

# stem -> (element, axis, block), as the golden README's format table says.
MX_STEMS = {
    "mxfp8_e4m3": ("fp8_e4m3", -1, 32),
    "mxfp8_e5m2": ("fp8_e5m2", -1, 32),
    "mxfp6_e3m2": ("fp6_e3m2", -1, 32),
    "mxfp6_e2m3": ("fp6_e2m3", -1, 32),
    "mxfp4_e2m1": ("fp4_e2m1", -1, 32),
    "mxint8": ("int8", -1, 32),
    "mxfp8_e4m3_axis-2": ("fp8_e4m3", -2, 32),
    "mxfp4_e2m1_bs16": ("fp4_e2m1", -1, 16),
}
# QType stems hold MX tensors too (same element and block through _quantize_mx / torchao).
QTYPE_STEMS_MX = {
    "qtype_mxfp4": ("fp4_e2m1", -1, 32),
    "qtype_mxfp8e4m3": ("fp8_e4m3", -1, 32),
    "qtype_mxfp8e5m2": ("fp8_e5m2", -1, 32),
    "qtype_mxfp6e3m2": ("fp6_e3m2", -1, 32),
    "qtype_e2m3k8b32c": ("fp6_e2m3", -1, 32),
    "qtype_e3m2k8b16c": ("fp6_e3m2", -1, 16),
    "qtype_e2m1k8b32": ("fp4_e2m1", -1, 32),
    "qtype_e4m3k8b32c_dim-2": ("fp8_e4m3", -2, 32),
}

# tensor -> (options, cast the input to float32 first)
MX_CHECKS = {
    "expected_exact": ({}, False),
    "expected": ({"emulate": "seed"}, False),
    "peer_microxcaling": ({"emulate": "seed"}, False),
    "alt_seed_round_even": ({"round": "even", "emulate": "seed"}, False),
    "alt_seed_minus_exp_0": ({"minus_exp": 0, "emulate": "seed"}, False),
    "alt_seed_fp32_compute": ({"emulate": "seed"}, True),
    "peer_torchao_floor": ({"round": "even"}, False),
    "ref_ocp_numpy": ({"round": "even"}, False),
    "peer_torchao_ceil": ({"round": "even", "scale": "ceil"}, False),
    "peer_torchao_rceil": ({"round": "even", "scale": "rceil"}, False),
    "peer_torchao_even": ({"round": "even", "scale": "even"}, False),
}
QTYPE_MX_CHECKS = {
    "alt_seed_quantize_mx_floor": ({"emulate": "seed"}, False),
    "peer_torchao_floor": ({"round": "even"}, False),
    "peer_torchao_even": ({"round": "even", "scale": "even"}, False),
}


@functools.cache
def _file(path):
    return load(path)


def _golden_params():
    out = []
    for stems, checks in ((MX_STEMS, MX_CHECKS), (QTYPE_STEMS_MX, QTYPE_MX_CHECKS)):
        for stem, cfg in stems.items():
            for path in case_files("mx", stem):
                tensors, _ = _file(path)
                for name in checks:
                    if name in tensors:
                        out.append(pytest.param(stem, cfg, path, name, checks[name], id=f"{stem}/{path.stem}-{name}"))
    return out


@needs_golden
@pytest.mark.parametrize("stem,cfg,path,name,check_", _golden_params())
def test_golden(stem, cfg, path, name, check_):
    tensors, meta = _file(path)
    elem, axis, blk = cfg
    opts, cast = check_
    x = tensors["input"].to(F32) if cast else tensors["input"]
    got = run(x, elem=elem, axes=axis, block=blk, **opts)
    assert got.dtype == x.dtype
    assert_bits_equal(got, tensors[name], f"{stem}/{path.stem} {name} {opts}")


@needs_golden
@pytest.mark.parametrize("stem", sorted(MX_STEMS))
def test_golden_metadata_matches_stem_table(stem):
    """The stem table above and the element constants agree with the files' own metadata."""
    import json

    paths = case_files("mx", stem)
    assert paths, f"no golden files for {stem}"
    elem, axis, blk = MX_STEMS[stem]
    for path in paths:
        params = json.loads(_file(path)[1]["params"])
        assert resolve_mx_element(params["elem_format"]).name == elem
        assert (params["axes"], params["block_size"]) == (axis, blk)
        assert MX_ELEMENTS[elem].emax == params["elem_emax"]
        assert MX_ELEMENTS[elem].max_norm == params["elem_max_norm"]


# --------------------------------------------------------------------------- spec §11.2 worked examples

E4M3_FLOOR_MAX = 448 * 2.0**119  # the spec's 2.977e38
E4M3_1E38 = 144 * 2.0**119  # the spec's 9.57e37


def test_spec_literals_are_the_exact_values_used():
    assert f"{E4M3_FLOOR_MAX:.3e}" == "2.977e+38" and f"{E4M3_1E38:.2e}" == "9.57e+37"
    assert f"{127 / 64 * 2.0**127:.3e}" == "3.376e+38"
    assert f"{320 * 2.0**-108:.2e}" == "9.86e-31" and f"{96 * 2.0**-108:.2e}" == "2.96e-31"


SEED = {"emulate": "seed"}
EVEN = {"round": "even"}

# (row, elem, input, dtype, options, expected leading values)
ROWS = [
    # row 1: MXFP4, X = 1, ties
    ("1", "fp4_e2m1", [4, 5, 0.25, 2.5, 1.25, -3.5], F32, SEED, [4, 6, 0.5, 3, 1.5, -4]),
    ("1", "fp4_e2m1", [4, 5, 0.25, 2.5, 1.25, -3.5], F32, {}, [4, 6, 0.5, 3, 1.5, -4]),
    ("1", "fp4_e2m1", [4, 5, 0.25, 2.5, 1.25, -3.5], F32, {**SEED, **EVEN}, [4, 4, 0, 2, 1, -4]),
    ("1", "fp4_e2m1", [4, 5, 0.25, 2.5, 1.25, -3.5], F32, {**SEED, "minus_exp": 0}, [4, 6, 0, 3, 1, -4]),
    ("1", "fp4_e2m1", [4, 5, 0.25, 2.5, 1.25, -3.5], F32, EVEN, [4, 4, 0, 2, 1, -4]),
    ("1", "fp4_e2m1", [4, 5, 0.25, 2.5, 1.25, -3.5], F32, {**EVEN, "scale": "rceil"}, [4, 4, 0, 2, 1, -4]),
    ("1", "fp4_e2m1", [4, 5, 0.25, 2.5, 1.25, -3.5], F32, {**EVEN, "scale": "ceil"}, [4, 4, 0, 2, 1, -4]),
    ("1", "fp4_e2m1", [4, 5, 0.25, 2.5, 1.25, -3.5], F32, {**EVEN, "scale": "even"}, [4, 4, 0, 2, 1, -4]),
    # row 2: MXFP4 [7, 0.3, -5]
    ("2", "fp4_e2m1", [7, 0.3, -5], F32, SEED, [6, 0.5, -6]),
    ("2", "fp4_e2m1", [7, 0.3, -5], F32, {**SEED, **EVEN}, [6, 0.5, -4]),
    ("2", "fp4_e2m1", [7, 0.3, -5], F32, {**SEED, "minus_exp": 0}, [8, 0, -6]),
    ("2", "fp4_e2m1", [7, 0.3, -5], F32, EVEN, [6, 0.5, -4]),
    ("2", "fp4_e2m1", [7, 0.3, -5], F32, {**EVEN, "scale": "rceil"}, [8, 0, -4]),
    ("2", "fp4_e2m1", [7, 0.3, -5], F32, {**EVEN, "scale": "ceil"}, [8, 0, -4]),
    ("2", "fp4_e2m1", [7, 0.3, -5], F32, {**EVEN, "scale": "even"}, [8, 0, -4]),
    # row 3: E4M3, amax a few ulps below 32 (artifact b in the seed)
    ("3", "fp8_e4m3", [31.999998, 1, 0.0625, 17], F32, SEED, [32, 1, 0.0625, 18]),
    ("3", "fp8_e4m3", [31.999998, 1, 0.0625, 17], F32, {**SEED, **EVEN}, [32, 1, 0.0625, 16]),
    ("3", "fp8_e4m3", [31.999998, 1, 0.0625, 17], F32, {**SEED, "minus_exp": 0}, [32, 1, 0.0625, 18]),
    ("3", "fp8_e4m3", [31.999998, 1, 0.0625, 17], F32, EVEN, [28, 1, 0.0625, 16]),
    ("3", "fp8_e4m3", [31.999998, 1, 0.0625, 17], F32, {**EVEN, "scale": "rceil"}, [32, 1, 0.0625, 16]),
    ("3", "fp8_e4m3", [31.999998, 1, 0.0625, 17], F32, {**EVEN, "scale": "ceil"}, [32, 1, 0.0625, 16]),
    ("3", "fp8_e4m3", [31.999998, 1, 0.0625, 17], F32, {**EVEN, "scale": "even"}, [32, 1, 0.0625, 16]),
    # row 4: E4M3 at FLT_MAX
    ("4", "fp8_e4m3", [FLT_MAX, 1e38, 1], F32, SEED, [INF, E4M3_1E38, 0]),
    ("4", "fp8_e4m3", [FLT_MAX, 1e38, 1], F32, {**SEED, **EVEN}, [INF]),
    ("4", "fp8_e4m3", [FLT_MAX, 1e38, 1], F32, {**SEED, "minus_exp": 0}, [INF]),
    ("4", "fp8_e4m3", [FLT_MAX, 1e38, 1], F32, EVEN, [E4M3_FLOOR_MAX, E4M3_1E38, 0]),
    ("4", "fp8_e4m3", [FLT_MAX, 1e38, 1], F32, {**EVEN, "scale": "rceil"}, [INF]),
    ("4", "fp8_e4m3", [FLT_MAX, 1e38, 1], F32, {**EVEN, "scale": "ceil"}, [INF]),
    ("4", "fp8_e4m3", [FLT_MAX, 1e38, 1], F32, {**EVEN, "scale": "even"}, [NAN] * 32),
    # row 5: MXINT8 at FLT_MAX
    ("5", "int8", [FLT_MAX, 1], F32, SEED, [NAN, NAN]),
    ("5", "int8", [FLT_MAX, 1], F32, {**SEED, **EVEN}, [NAN, NAN]),
    ("5", "int8", [FLT_MAX, 1], F32, {**SEED, "minus_exp": 0}, [NAN, NAN]),
    ("5", "int8", [FLT_MAX, 1], F32, EVEN, [127 / 64 * 2.0**127, 0]),
    # row 6: Inf in the block
    ("6", "fp8_e4m3", [INF, 1, 2], F32, SEED, [NAN] * 32),
    ("6", "fp8_e4m3", [INF, 1, 2], F32, {**SEED, **EVEN}, [NAN] * 32),
    ("6", "fp8_e4m3", [INF, 1, 2], F32, {**SEED, "minus_exp": 0}, [NAN] * 32),
    *[
        ("6", "fp8_e4m3", [INF, 1, 2], F32, {**EVEN, "scale": r}, [NAN] * 32)
        for r in ("floor", "rceil", "ceil", "even")
    ],
    # row 7: MXFP4 bf16 (seed computes log2 in bf16) and row 7' in float32
    ("7", "fp4_e2m1", [127.5, 1, 0.4], BF16, SEED, [128, 0, 0]),
    ("7", "fp4_e2m1", [127.5, 1, 0.4], BF16, {**SEED, **EVEN}, [128, 0, 0]),
    ("7", "fp4_e2m1", [127.5, 1, 0.4], BF16, {**SEED, "minus_exp": 0}, [128, 0, 0]),
    ("7", "fp4_e2m1", [127.5, 1, 0.4], BF16, EVEN, [96, 0, 0]),
    ("7", "fp4_e2m1", [127.5, 1, 0.4], BF16, {**EVEN, "scale": "rceil"}, [128, 0, 0]),
    ("7", "fp4_e2m1", [127.5, 1, 0.4], BF16, {**EVEN, "scale": "ceil"}, [128, 0, 0]),
    ("7", "fp4_e2m1", [127.5, 1, 0.4], BF16, {**EVEN, "scale": "even"}, [128, 0, 0]),
    ("7'", "fp4_e2m1", [127.5, 1, 0.4], F32, SEED, [96, 0, 0]),
    ("7'", "fp4_e2m1", [127.5, 1, 0.4], F32, {**SEED, **EVEN}, [96]),
    ("7'", "fp4_e2m1", [127.5, 1, 0.4], F32, {**SEED, "minus_exp": 0}, [128]),
    ("7'", "fp4_e2m1", [127.5, 1, 0.4], F32, EVEN, [96]),
    ("7'", "fp4_e2m1", [127.5, 1, 0.4], F32, {**EVEN, "scale": "rceil"}, [128]),
    ("7'", "fp4_e2m1", [127.5, 1, 0.4], F32, {**EVEN, "scale": "ceil"}, [128]),
    ("7'", "fp4_e2m1", [127.5, 1, 0.4], F32, {**EVEN, "scale": "even"}, [128]),
    # row 8: artifact (c), 0.49999997 of the smallest step
    ("8", "fp4_e2m1", [4, 0.249999985], F32, SEED, [4, 0.5]),
    ("8", "fp4_e2m1", [4, 0.249999985], F32, {**SEED, **EVEN}, [4, 0.5]),
    ("8", "fp4_e2m1", [4, 0.249999985], F32, {**SEED, "minus_exp": 0}, [4, 0.5]),
    *[
        ("8", "fp4_e2m1", [4, 0.249999985], F32, {**EVEN, "scale": r}, [4, 0])
        for r in ("floor", "rceil", "ceil", "even")
    ],
    # row 9: tiny block
    ("9", "fp8_e4m3", [1e-30, 3e-31], F32, SEED, [320 * 2.0**-108, 96 * 2.0**-108]),
    ("9", "fp8_e4m3", [1e-30, 3e-31], F32, {**SEED, **EVEN}, [320 * 2.0**-108, 96 * 2.0**-108]),
    ("9", "fp8_e4m3", [1e-30, 3e-31], F32, {**SEED, "minus_exp": 0}, [320 * 2.0**-108, 96 * 2.0**-108]),
    *[
        ("9", "fp8_e4m3", [1e-30, 3e-31], F32, {**EVEN, "scale": r}, [320 * 2.0**-108, 96 * 2.0**-108])
        for r in ("floor", "rceil", "ceil", "even")
    ],
    # row 10: E5M2 saturation
    ("10", "fp8_e5m2", [57344, 61440, 1, 24, 40], F32, SEED, [57344, 57344, 1, 24, 40]),
    ("10", "fp8_e5m2", [57344, 61440, 1, 24, 40], F32, {**SEED, **EVEN}, [57344, 57344, 1, 24, 40]),
    ("10", "fp8_e5m2", [57344, 61440, 1, 24, 40], F32, {**SEED, "minus_exp": 0}, [57344, 65536]),
    ("10", "fp8_e5m2", [57344, 61440, 1, 24, 40], F32, EVEN, [57344, 57344]),
    ("10", "fp8_e5m2", [57344, 61440, 1, 24, 40], F32, {**EVEN, "scale": "rceil"}, [57344, 65536]),
    ("10", "fp8_e5m2", [57344, 61440, 1, 24, 40], F32, {**EVEN, "scale": "ceil"}, [57344, 65536]),
    ("10", "fp8_e5m2", [57344, 61440, 1, 24, 40], F32, {**EVEN, "scale": "even"}, [57344, 65536]),
    # row 11: E3M2
    ("11", "fp6_e3m2", [16, 30, 0.0625, 0.03125, 0.09375, 18], F32, SEED, [16, 28, 0.0625, 0.0625, 0.125, 20]),
    ("11", "fp6_e3m2", [16, 30, 0.0625, 0.03125, 0.09375, 18], F32, {**SEED, **EVEN}, [16, 28, 0.0625, 0, 0.125, 16]),
    (
        "11",
        "fp6_e3m2",
        [16, 30, 0.0625, 0.03125, 0.09375, 18],
        F32,
        {**SEED, "minus_exp": 0},
        [16, 32, 0.125, 0, 0.125, 20],
    ),
    ("11", "fp6_e3m2", [16, 30, 0.0625, 0.03125, 0.09375, 18], F32, EVEN, [16, 28, 0.0625, 0, 0.125, 16]),
    *[
        ("11", "fp6_e3m2", [16, 30, 0.0625, 0.03125, 0.09375, 18], F32, {**EVEN, "scale": r}, [16, 32, 0, 0, 0.125, 16])
        for r in ("rceil", "ceil", "even")
    ],
    # row 12: E2M3
    ("12", "fp6_e2m3", [4, 7.75, 0.125, 0.0625, 4.25, 1.0625], F32, SEED, [4, 7.5, 0.125, 0.125, 4.5, 1.125]),
    ("12", "fp6_e2m3", [4, 7.75, 0.125, 0.0625, 4.25, 1.0625], F32, {**SEED, **EVEN}, [4, 7.5, 0.125, 0, 4, 1]),
    ("12", "fp6_e2m3", [4, 7.75, 0.125, 0.0625, 4.25, 1.0625], F32, {**SEED, "minus_exp": 0}, [4, 8, 0.25, 0, 4.5, 1]),
    ("12", "fp6_e2m3", [4, 7.75, 0.125, 0.0625, 4.25, 1.0625], F32, EVEN, [4, 7.5, 0.125, 0, 4, 1]),
    *[
        ("12", "fp6_e2m3", [4, 7.75, 0.125, 0.0625, 4.25, 1.0625], F32, {**EVEN, "scale": r}, [4, 8, 0, 0, 4, 1])
        for r in ("rceil", "ceil", "even")
    ],
    # row 13: MXINT8
    (
        "13",
        "int8",
        [1, 0.5078125, -0.5078125, 0.0078125, 1.9921875],
        F32,
        SEED,
        [1, 0.515625, -0.515625, 0.015625, 1.984375],
    ),
    (
        "13",
        "int8",
        [1, 0.5078125, -0.5078125, 0.0078125, 1.9921875],
        F32,
        {**SEED, **EVEN},
        [1, 0.5, -0.5, 0, 1.984375],
    ),
    (
        "13",
        "int8",
        [1, 0.5078125, -0.5078125, 0.0078125, 1.9921875],
        F32,
        {**SEED, "minus_exp": 0},
        [1, 0.5, -0.5, 0, 2.0],
    ),
    ("13", "int8", [1, 0.5078125, -0.5078125, 0.0078125, 1.9921875], F32, EVEN, [1, 0.5, -0.5, 0, 1.984375]),
]


@pytest.mark.parametrize(
    "row,elem,values,dtype,opts,want",
    ROWS,
    ids=[
        f"row{r[0]}-{r[1]}-{'-'.join(f'{k}={v}' for k, v in r[4].items()) or 'exact'}-{i}" for i, r in enumerate(ROWS)
    ],
)
def test_spec_11_2(row, elem, values, dtype, opts, want):
    got = run(block(values, dtype), elem=elem, **opts)
    check(got, want, f"§11.2 row {row} {elem} {opts}")


# The QType "c" column of §11.2: scale=carry is the same shared-exponent rule (spec §12).
CARRY_ROWS = [
    ("fp4_e2m1", [4, 5, 0.25, 2.5, 1.25, -3.5], [4, 6, 0.5, 3, 1.5, -4]),
    ("fp4_e2m1", [7, 0.3, -5], [8, 0, -6]),
    ("fp8_e4m3", [31.999998, 1, 0.0625, 17], [32, 1, 0.0625, 18]),
    ("fp8_e5m2", [57344, 61440, 1, 24, 40], [57344, 65536]),
    ("fp6_e3m2", [16, 30, 0.0625, 0.03125, 0.09375, 18], [16, 32, 0.125, 0, 0.125, 20]),
    ("fp6_e2m3", [4, 7.75, 0.125, 0.0625, 4.25, 1.0625], [4, 8, 0.25, 0, 4.5, 1]),
]


@pytest.mark.parametrize("elem,values,want", CARRY_ROWS)
def test_scale_carry_matches_qtype_c_column(elem, values, want):
    check(run(block(values), elem=elem, scale="carry"), want, f"carry {elem}")


def test_exact_default_removes_artifacts():
    """The default (exact) differs from the seed exactly where §2.8 says."""
    # (b): amax 31.999998 keeps E = 4, so the block max saturates at 448·2^-4 = 28.
    check(run(block([31.999998, 1, 0.0625, 17]), elem="fp8_e4m3"), [28, 1, 0.0625, 18])
    # (b)+(d): FLT_MAX gives 448·2^119, not +Inf; MXINT8 gives 127/64·2^127, not a NaN block.
    check(run(block([FLT_MAX, 1e38, 1]), elem="fp8_e4m3"), [E4M3_FLOOR_MAX, E4M3_1E38, 0])
    check(run(block([FLT_MAX, 1]), elem="int8"), [127 / 64 * 2.0**127, 0])
    # (c): 0.49999997 of the smallest step rounds to 0.
    check(run(block([4, 0.249999985]), elem="fp4_e2m1"), [4, 0])
    # bf16 input is upcast: like row 7' in float32, not row 7.
    check(run(block([127.5, 1, 0.4], BF16), elem="fp4_e2m1"), [96, 0, 0])


# --------------------------------------------------------------------------- element table


def test_element_table_matches_spec_2_1():
    want = {  # name: (ebits, mbits, emax, max_norm, emin)
        "fp8_e4m3": (4, 5, 8, 448.0, -6),
        "fp8_e5m2": (5, 4, 15, 57344.0, -14),
        "fp6_e3m2": (3, 4, 4, 28.0, -2),
        "fp6_e2m3": (2, 5, 2, 7.5, 0),
        "fp4_e2m1": (2, 3, 2, 6.0, 0),
        "int8": (0, 8, 0, 127 / 64, 0),
        "int4": (0, 4, 0, 7 / 4, 0),
        "int2": (0, 2, 0, 1.0, 0),
        "fp16": (5, 12, 15, 65504.0, -14),
        "bf16": (8, 9, 127, 255 * 2.0**120, -126),
    }
    assert set(MX_ELEMENTS) == set(want)
    for name, (eb, mb, emax, mx, emin) in want.items():
        e = MX_ELEMENTS[name]
        assert (e.ebits, e.mbits, e.emax, e.max_norm, e.emin, e.is_int) == (eb, mb, emax, mx, emin, eb == 0), name
    assert resolve_mx_element("FP4") is MX_ELEMENTS["fp4_e2m1"]
    assert resolve_mx_element("float16") is MX_ELEMENTS["fp16"]
    assert resolve_mx_element("bfloat16") is MX_ELEMENTS["bf16"]
    with pytest.raises(ValueError):
        resolve_mx_element("fp5")


def test_f32_ceil():
    assert f32_ceil(0.5) == 0.5 and f32_ceil(1e39) == INF and f32_ceil(1e-50) == 2.0**-149
    third = f32_ceil(1 / 3)
    assert third > 1 / 3 > float(torch.nextafter(torch.tensor(third), torch.tensor(0.0)))


def test_sqrt2_threshold_is_the_smallest_float32_at_or_above_sqrt2():
    t = torch.tensor(SQRT2_UP, dtype=F32)
    below = torch.nextafter(t, torch.tensor(0.0))
    assert t.double() ** 2 >= 2 > below.double() ** 2


# --------------------------------------------------------------------------- shapes, axes, dtypes


def _randn(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * torch.exp2(torch.randint(-8, 8, shape[:-1] + (1,), generator=g).float())


@pytest.mark.parametrize("emulate", ["exact", "seed"])
def test_axis0_equals_transposed_last_axis(emulate):
    x = _randn(70, 9)
    got = run(x, elem="fp6_e2m3", axes=0, emulate=emulate)
    want = run(x.t().contiguous(), elem="fp6_e2m3", axes=-1, emulate=emulate).t()
    assert_bits_equal(got, want, "axis 0")


@pytest.mark.parametrize("emulate", ["exact", "seed"])
def test_ragged_tail_equals_explicit_zero_padding(emulate):
    x = _randn(5, 45)
    got = run(x, elem="fp4_e2m1", emulate=emulate)
    padded = torch.cat([x, torch.zeros(5, 19)], dim=1)
    assert_bits_equal(got, run(padded, elem="fp4_e2m1", emulate=emulate)[:, :45], "ragged")
    # A row shorter than the block is one zero-padded block.
    short = x[:, :7]
    assert_bits_equal(
        run(short, elem="fp4_e2m1", emulate=emulate),
        run(padded[:, :32] * (torch.arange(32) < 7), elem="fp4_e2m1", emulate=emulate)[:, :7],
        "short",
    )


def test_1d_and_3d_equal_2d_rows():
    x = _randn(6, 4, 96)
    want = run(x.reshape(24, 96), elem="fp8_e5m2").reshape(6, 4, 96)
    assert_bits_equal(run(x, elem="fp8_e5m2"), want, "3-D")
    assert_bits_equal(run(x[2, 3], elem="fp8_e5m2"), want[2, 3], "1-D")


def test_3d_middle_axis():
    x = _randn(3, 40, 5)
    got = run(x, elem="int8", axes=1, block=16)
    want = run(x.transpose(1, 2).contiguous(), elem="int8", axes=-1, block=16).transpose(1, 2)
    assert_bits_equal(got, want, "axis 1 of 3-D")


def test_tiles_over_two_axes():
    """axes=(-2, -1) with block 2 gives one scale per 2x2 tile."""
    x = _randn(4, 6)
    got = run(x, elem="fp4_e2m1", axes=(-2, -1), block=2)
    tiles = x.reshape(2, 2, 3, 2).permute(0, 2, 1, 3).reshape(6, 4)  # one tile per row
    want = run(tiles, elem="fp4_e2m1", block=4).reshape(2, 3, 2, 2).permute(0, 2, 1, 3).reshape(4, 6)
    assert_bits_equal(got, want, "2x2 tiles")


def test_block0_is_one_scale_per_whole_axis():
    x = _randn(3, 50)
    padded = torch.cat([x, torch.zeros(3, 14)], dim=1)
    assert_bits_equal(run(x, elem="fp8_e4m3", block=0), run(padded, elem="fp8_e4m3", block=64)[:, :50], "block 0")


def test_no_axes_exact_gives_each_element_its_own_scale():
    x = _randn(4, 32)
    want = run(x, elem="fp4_e2m1", block=1)
    assert_bits_equal(run(x, elem="fp4_e2m1", axes=None), want, "axes=None")
    assert_bits_equal(run(x, elem="fp4_e2m1", axes=[]), want, "axes=[]")
    assert_bits_equal(run(x, elem="fp4_e2m1", shared_exp_method="none"), want, "shared_exp_method=none")
    assert not torch.isnan(want).any()


def test_no_axes_seed_reproduces_negative_nan_bug():
    x = torch.tensor([[1.5, -1.5, 0.0, -3.0]])
    got = run(x, elem="fp4_e2m1", axes=None, emulate="seed")
    assert torch.isnan(got[0, [1, 3]]).all() and got[0, 0] == 1.5 and got[0, 2] == 0


@pytest.mark.parametrize("dtype", [BF16, F16])
@pytest.mark.parametrize("elem", ["fp8_e4m3", "fp4_e2m1", "int8"])
def test_half_inputs_keep_dtype_and_round_the_float32_result(dtype, elem):
    x = _randn(8, 64).to(dtype)
    got = run(x, elem=elem)
    assert got.dtype == dtype
    assert_bits_equal(got, quantize_mx_ref(x.float(), elem=elem).to(dtype), f"{dtype} {elem}")


def test_seed_mode_on_bf16_computes_in_bf16():
    # §2.7: the seed's bf16 log2 of 127.5 rounds to 7 (row 7); float32 arithmetic would give 96.
    x = block([127.5, 1, 0.4], BF16)
    assert run(x, elem="fp4_e2m1", emulate="seed")[0] == 128
    assert run(x.float(), elem="fp4_e2m1", emulate="seed")[0] == 96


def test_output_is_not_an_alias_of_the_input():
    x = torch.zeros(2, 32)
    y = quantize_mx_ref(x, elem="fp8_e4m3")
    y.add_(1)
    assert (x == 0).all()


@pytest.mark.parametrize("elem,dtype", [("fp16", F16), ("bf16", BF16)])
def test_half_precision_elements_equal_a_cast_of_the_scaled_values(elem, dtype):
    # With every block max in [1, 1.5], X = 2^(0 - emax) and y = x / X stays below the element
    # max, so round=even must equal casting y to the element type (RNE, with its subnormals).
    x = torch.rand(64, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    x[:, 0] = 1.25
    x[:, 1] = 2.0**-30
    emax = MX_ELEMENTS[elem].emax
    want = (x * 2.0**emax).to(dtype).float() / 2.0**emax
    assert_bits_equal(run(x, elem=elem, round="even"), want, elem)
    # ties away by default: 1 + 2^-11 in a block with max 1 (spec §7, mxs `nearest`)
    check(run(block([1.0 + 2.0**-11, 1.0]), elem="fp16"), [1.0009765625, 1.0])


@pytest.mark.parametrize("emulate", ["exact", "seed"])
def test_int4_int2_elements(emulate):
    check(run(block([1.75, 0.3, -1.0]), elem="int4", emulate=emulate), [1.75, 0.25, -1.0])
    check(run(block([1.0, 0.5, -0.4]), elem="int2", emulate=emulate), [1.0, 1.0, 0.0])


# --------------------------------------------------------------------------- options


def test_scale_bits_range_and_overflow():
    # scale_bits 4: s in [-7, 7]. amax 2^-20 wants s = -28 (fp8_e4m3), clamped to -7, so
    # 2^-20 / 2^-7 = 2^-13 is below the E4M3 subnormal grid (2^-9) and flushes to 0.
    check(run(block([2.0**-20]), elem="fp8_e4m3", scale_bits=4), [0])
    check(run(block([2.0**-20]), elem="fp8_e4m3"), [2.0**-20])
    # amax 2^20 wants s = 12 > 7: NaN block.
    check(run(block([2.0**20, 1]), elem="fp8_e4m3", scale_bits=4), [NAN] * 32)
    with pytest.raises(ValueError):
        quantize_mx_ref(block([1]), elem="fp8_e4m3", scale_bits=9)


@pytest.mark.parametrize("emulate", ["exact", "seed"])
def test_flush_fp32_subnorms(emulate):
    x = block([1e-40, 3e-41])
    assert run(x, elem="fp8_e4m3", emulate=emulate)[0] != 0
    check(run(x, elem="fp8_e4m3", flush_fp32_subnorms=True, emulate=emulate), [0, 0])
    check(run(block([1.0]), elem="fp8_e4m3", flush_fp32_subnorms=True, emulate=emulate), [1.0])


@pytest.mark.parametrize("emulate", ["exact", "seed"])
def test_round_floor_truncates_magnitudes(emulate):
    check(run(block([4, 5.9, -5.9, 0.7, -0.7]), elem="fp4_e2m1", round="floor", emulate=emulate), [4, 4, -4, 0.5, -0.5])


@pytest.mark.parametrize("emulate", ["exact", "seed"])
def test_minus_exp_integer(emulate):
    # minus_exp=1 equals floor except at an exact power of two amax (§2.3).
    x = block([3.0, 0.3])
    check(run(x, elem="fp4_e2m1", minus_exp=1, emulate=emulate), run(x, elem="fp4_e2m1", emulate=emulate)[:2].tolist())
    p2 = block([4.0, 0.3])
    check(run(p2, elem="fp4_e2m1", minus_exp=1, emulate=emulate), [3, 0.25])  # X = 0.5: 8 saturates at 6
    check(run(p2, elem="fp4_e2m1", emulate=emulate), [4, 0.5])


@pytest.mark.parametrize("emulate", ["exact", "seed"])
@pytest.mark.parametrize(
    "mode,want", [("auto", [3, 0.25]), ("auto-2", [3, 0.5]), ("auto-reverse", [3, 0.5]), ("auto-fix", [1.5, 0.25])]
)
def test_minus_exp_auto(emulate, mode, want):
    # ceil scale X = 1 gives [3, 0.5] (squared error 0.08); X = 0.5 gives [3, 0.25] (0.0425),
    # X = 0.25 saturates (1.5), X = 2 gives [3, 0] (0.13). auto-fix applies floor - d = X 0.25.
    check(run(block([3.2, 0.3]), elem="fp4_e2m1", minus_exp=mode, emulate=emulate), want, mode)


@pytest.mark.parametrize("emulate", ["exact", "seed"])
def test_minus_exp_auto_tie_keeps_d0(emulate):
    # X = 0.5 gives [0.25, 2] and X = 0.25 gives [0.25, 1.5]: both squared errors are 0.0625.
    check(run(block([0.25, 1.75]), elem="fp4_e2m1", minus_exp="auto", emulate=emulate), [0.25, 2])


def test_minus_exp_auto_is_per_block():
    x = torch.stack([block([3.2, 0.3]), block([4.0, 2.0])])
    check(run(x, elem="fp4_e2m1", minus_exp="auto")[0], [3, 0.25])
    check(run(x, elem="fp4_e2m1", minus_exp="auto")[1], [4, 2])


@pytest.mark.parametrize(
    "rule,below,at",
    [
        ("floor", 7.9999995, 8.0),  # floor(log2 a): next binade at 8
        ("ceil", 4.0, 4.0000005),  # ceil(log2 a): bumps just above a power of two
        ("rceil", 6.0, 6.0000005),  # smallest X with a/X <= 6
        ("even", 6.9999995, 7.0),  # bumps at (2 - 2^-2)·2^2 = 7
        ("carry", 4 * 1.4142135, 4 * 1.4142137),  # bumps at sqrt(2)·4; these are the float32 neighbours of it
    ],
)
def test_scale_rule_thresholds(rule, below, at):
    """§11.2 "Scale rules, written out", MXFP4 (emax 2, max 6): X = 1 just below the
    threshold and X = 2 at it, seen on the probe 0.5 (0.5 with X = 1; a tie to 0 with X = 2)."""

    def probe(a):
        return run(block([a, 0.5]), elem="fp4_e2m1", scale=rule, round="even")[1].item()

    assert (probe(below), probe(at)) == (0.5, 0.0)


# --------------------------------------------------------------------------- dither


@pytest.mark.parametrize("emulate", ["exact", "seed"])
def test_dither_reproducible_with_generator(emulate):
    x = _randn(16, 64)
    kw = {"elem": "fp4_e2m1", "round": "dither", "emulate": emulate}
    a = run(x, **kw, generator=torch.Generator().manual_seed(1))
    b = run(x, **kw, generator=torch.Generator().manual_seed(1))
    c = run(x, **kw, generator=torch.Generator().manual_seed(2))
    assert_bits_equal(a, b, "same seed")
    assert not torch.equal(a, c)


@pytest.mark.parametrize("emulate", ["exact", "seed"])
def test_dither_is_unbiased_and_stays_on_the_neighbouring_grid_points(emulate):
    # One block [4, v...] repeated: X = 1, grid step 0.5 below 2 and 1 in [2, 4).
    v = torch.tensor([4.0, 0.3, -0.3, 1.2, 2.25, -3.7, 0.0, 0.5])
    x = block(v.tolist()).repeat(4000, 1)
    y = run(x, elem="fp4_e2m1", round="dither", emulate=emulate, generator=torch.Generator().manual_seed(0))
    lo = run(x[:1], elem="fp4_e2m1", round="floor")[0]
    hi = lo + torch.sign(x[0]) * torch.where(x[0].abs() < 2, 0.5, 1.0)
    on_grid = (y == lo) | ((y == hi) & (x[0] != lo))
    assert on_grid.all()
    mean = y.mean(dim=0)[:8]
    assert torch.allclose(mean, v, atol=0.03), mean
    assert (y[:, 1] == 0.5).any() and (y[:, 1] == 0).any()


# --------------------------------------------------------------------------- errors


def test_rejects_bad_options():
    x = block([1.0])
    for kw in (
        {"round": "up"},
        {"scale": "nearest"},
        {"minus_exp": "auto-3"},
        {"shared_exp_method": "mean"},
        {"emulate": "fast"},
        {"axes": 2},
        {"block": -1},
    ):
        with pytest.raises(ValueError):
            quantize_mx_ref(x, elem="fp8_e4m3", **kw)
    with pytest.raises(ValueError):  # no seed counterpart
        quantize_mx_ref(x, elem="fp8_e4m3", scale="rceil", emulate="seed")
    with pytest.raises(TypeError):
        quantize_mx_ref(torch.ones(32, dtype=torch.int32), elem="fp8_e4m3")
