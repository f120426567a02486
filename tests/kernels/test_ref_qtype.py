"""Tests of the QType reference kernel ``kernels.reference.qtype`` (seed ``quant_py``, spec formats-mx.md §3).

- every golden file of the ``qtype_*`` stems (exact vs ``expected_exact``, seed vs
  ``expected`` and ``alt_seed_fp32_compute``, the NPU-parser variant), and the
  ``alt_seed_qtype_*`` tensors stored in the MX stems;
- ``qtype_fields`` against §3.2 and against every file's parsed-field metadata;
- the "seed QType c" column of §11.2 and the consequences listed in §3.4
  (E > 0 and E = 0), with literal values;
- shapes, axes, dtypes, and that the input is never modified.
"""

from __future__ import annotations

import functools
import json
import math

import pytest
import torch
from golden import assert_bits_equal, block_of, case_files, load, needs_golden
from golden import assert_leading as check
from golden import int_view as _bits

import kernels
from kernels.reference.qtype import qtype_fields, quantize_qtype_ref

F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16
FLT_MAX = torch.finfo(F32).max
INF, NAN = math.inf, math.nan


def block(values, dtype=F32, n=32) -> torch.Tensor:
    """One block of ``n`` (the §11.2 convention: the given values, then zeros)."""
    return block_of(values, n, dtype)


def parse(desc: str) -> dict:
    """Keyword arguments of ``quantize_qtype_ref`` for a QType string, read from fqtool's parser."""
    spec = kernels.parse(desc)
    keys = ("exp_bits", "man_bits", "k_outer_bits", "k_bits", "blk_outer_size", "blk_size", "carry", "off")
    return dict(zip(keys, (spec[k] for k in ("E", "M", "K", "k", "B", "b", "carry", "off")), strict=True))


def run(x: torch.Tensor, desc: str, **kw) -> torch.Tensor:
    """quantize_qtype_ref for a QType string, asserting the input is unchanged and shape/dtype kept."""
    before = x.clone()
    y = quantize_qtype_ref(x, **parse(desc), **kw)
    assert torch.equal(_bits(x), _bits(before)), "input was modified"
    assert y.shape == x.shape and y.dtype == x.dtype
    return y


# --------------------------------------------------------------------------- golden files

# stem -> (QType string, axis)
QTYPE_STEMS = {
    "qtype_mxfp4": ("mxfp4", -1),
    "qtype_mxfp8e4m3": ("mxfp8e4m3", -1),
    "qtype_mxfp8e5m2": ("mxfp8e5m2", -1),
    "qtype_mxfp6e3m2": ("mxfp6e3m2", -1),
    "qtype_e2m3k8b32c": ("e2m3k8b32c", -1),
    "qtype_e3m2k8b16c": ("e3m2k8b16c", -1),
    "qtype_e2m1k8b32": ("e2m1k8b32", -1),
    "qtype_e4m3k8b32c_dim-2": ("e4m3k8b32c", -2),
    "qtype_e2m1K4k4B8b4c": ("e2m1K4k4B8b4c", -1),
}
MX_STEM_AXIS = {
    "mxfp8_e4m3": -1,
    "mxfp8_e5m2": -1,
    "mxfp6_e3m2": -1,
    "mxfp6_e2m3": -1,
    "mxfp4_e2m1": -1,
    "mxfp8_e4m3_axis-2": -2,
    "mxfp4_e2m1_bs16": -1,
}


@functools.cache
def _file(path):
    return load(path)


def _golden_params():
    out = []
    for stem, (desc, axis) in QTYPE_STEMS.items():
        for path in case_files("mx", stem):
            tensors, _ = _file(path)
            checks = [
                ("expected_exact", desc, {}, False),
                ("expected", desc, {"emulate": "seed"}, False),
                ("alt_seed_fp32_compute", desc, {"emulate": "seed"}, True),
                # the NPU-tree parser reads mxfp6e3m2 as E2M3 (§3.5)
                ("alt_seed_npu_qtype", "e2m3k8b32c", {"emulate": "seed"}, False),
            ]
            for name, d, opts, cast in checks:
                if name in tensors:
                    out.append(pytest.param(path, name, d, axis, opts, cast, id=f"{stem}/{path.stem}-{name}"))
    for stem, axis in MX_STEM_AXIS.items():
        for path in case_files("mx", stem):
            for name in _file(path)[0]:
                if name.startswith("alt_seed_qtype_"):
                    d = name[len("alt_seed_qtype_") :]
                    out.append(
                        pytest.param(path, name, d, axis, {"emulate": "seed"}, False, id=f"{stem}/{path.stem}-{name}")
                    )
    return out


@needs_golden
@pytest.mark.parametrize("path,name,desc,axis,opts,cast", _golden_params())
def test_golden(path, name, desc, axis, opts, cast):
    tensors, _ = _file(path)
    x = tensors["input"].to(F32) if cast else tensors["input"]
    assert_bits_equal(run(x, desc, axis=axis, **opts), tensors[name], f"{path} {name} {desc} {opts}")


@needs_golden
@pytest.mark.parametrize("stem", sorted(QTYPE_STEMS))
def test_qtype_fields_match_golden_metadata(stem):
    desc, _ = QTYPE_STEMS[stem]
    f = qtype_fields(**parse(desc))
    paths = case_files("mx", stem)
    assert paths
    for path in paths:
        p = json.loads(_file(path)[1]["params"])
        got = {
            k: getattr(f, k)
            for k in (
                "exp_bits",
                "man_bits",
                "k_bits",
                "k_outer_bits",
                "blk_size",
                "blk_outer_size",
                "exp_max",
                "exp_min",
                "k_max",
                "fp_val_max",
                "exp_offset",
            )
        }
        got["do_carry"] = f.carry
        assert got == p


# --------------------------------------------------------------------------- §3.2 fields


@pytest.mark.parametrize(
    "desc,exp_max,exp_min,fp_val_max",
    [
        ("e4m3k8b32c", 8, -6, 448.0),
        ("e5m2k8b32c", 15, -14, 57344.0),
        ("e3m2k8b32c", 4, -2, 28.0),
        ("e2m3k8b32c", 2, 0, 7.5),
        ("e2m1k8b32c", 2, 0, 6.0),
        ("e5m3k8b32", 16, -14, 2.0**16 * 15 / 8),
    ],
)
def test_qtype_fields_spec_3_2(desc, exp_max, exp_min, fp_val_max):
    f = qtype_fields(**parse(desc))
    assert (f.exp_max, f.exp_min, f.fp_val_max, f.k_max, f.exp_offset) == (exp_max, exp_min, fp_val_max, 127, exp_max)
    assert (f.exp_lo, f.exp_hi) == (-127 - exp_max, 127 - exp_max)


def test_qtype_fields_two_level_offset_and_integer():
    # HiFX-style E = 0: exp_max = M - 1, exp_min = 0; k_max = 2^(k+K-1) - 1; off N moves the window.
    f = qtype_fields(**parse("e0m3K1k4B1b64Coff38"))
    assert (f.exp_max, f.exp_min, f.k_max, f.exp_offset, f.carry) == (2, 0, 15, 38 - 15 - 1 + 2, True)
    g = qtype_fields(**parse("e2m1K4k4B8b4c"))
    assert (g.k_max, g.max_inner_drop, g.blk_outer_size) == (127, 15, 8)
    # fp_val_max is capped at 1e38.
    assert qtype_fields(**parse("e8m3k8b32")).fp_val_max == 1e38


def test_qtype_fields_rejects_invalid():
    for kw in ({"exp_bits": 1, "man_bits": 2}, {"exp_bits": 2, "man_bits": 0}):
        with pytest.raises(ValueError):
            qtype_fields(k_bits=8, blk_size=32, **kw)
    with pytest.raises(ValueError):
        qtype_fields(2, 1, 8, 0)


# --------------------------------------------------------------------------- §11.2 "seed QType c" column

E4M3_SAT = 448 * 2.0**119  # the spec's 2.977e38
C_ROWS = [  # (row, QType, input, dtype, want) -- the same in seed and exact mode
    ("1", "e2m1k8b32c", [4, 5, 0.25, 2.5, 1.25, -3.5], F32, [4, 6, 0.5, 3, 1.5, -4]),
    ("2", "e2m1k8b32c", [7, 0.3, -5], F32, [8, 0, -6]),
    ("3", "e4m3k8b32c", [31.999998, 1, 0.0625, 17], F32, [32, 1, 0.0625, 18]),
    ("4", "e4m3k8b32c", [FLT_MAX, 1e38, 1], F32, [E4M3_SAT, 144 * 2.0**119, 0]),
    ("6", "e4m3k8b32c", [INF, 1, 2], F32, [E4M3_SAT, 0, 0]),
    ("7", "e2m1k8b32c", [127.5, 1, 0.4], BF16, [128, 0, 0]),
    ("7'", "e2m1k8b32c", [127.5, 1, 0.4], F32, [128]),
    ("9", "e4m3k8b32c", [1e-30, 3e-31], F32, [0, 0]),
    ("10", "e5m2k8b32c", [57344, 61440, 1, 24, 40], F32, [57344, 65536]),
    ("11", "e3m2k8b32c", [16, 30, 0.0625, 0.03125, 0.09375, 18], F32, [16, 32, 0.125, 0, 0.125, 20]),
    ("12", "e2m3k8b32c", [4, 7.75, 0.125, 0.0625, 4.25, 1.0625], F32, [4, 8, 0.25, 0, 4.5, 1]),
]


@pytest.mark.parametrize("emulate", ["seed", "exact"])
@pytest.mark.parametrize("row,desc,values,dtype,want", C_ROWS, ids=[f"row{r[0]}" for r in C_ROWS])
def test_spec_11_2_qtype_c(emulate, row, desc, values, dtype, want):
    check(run(block(values, dtype), desc, emulate=emulate), want, f"§11.2 row {row} {desc} {emulate}")


def test_spec_11_2_row8_artifact_c_only_in_seed_mode():
    x = block([4, 0.249999985])
    check(run(x, "e2m1k8b32c", emulate="seed"), [4, 0.5])
    check(run(x, "e2m1k8b32c"), [4, 0])


# --------------------------------------------------------------------------- §3.4 consequences, E > 0


@pytest.mark.parametrize("emulate", ["seed", "exact"])
def test_carry_scale_mxfp4_amax_7(emulate):
    # With carry, amax 7 gives X = 2 and 7 -> RNA(3.5) = 4 -> 8; without carry X = 1 and 7 saturates at 6.
    check(run(block([7.0]), "mxfp4", emulate=emulate), [8])
    check(run(block([7.0]), "e2m1k8b32", emulate=emulate), [6])


@pytest.mark.parametrize("emulate", ["seed", "exact"])
def test_eps_pins_tiny_block_scale(emulate):
    # amax below ~1e-6: the shared exponent is floor(log2(9.6e-7)) - 8 = -28 for e4m3, so 1e-9
    # comes out as 9·2^-33 (1.0477e-9), and values below ~2^(-20-8-6-3-1) become 0.
    check(run(block([1e-9]), "mxfp8e4m3", emulate=emulate), [9 * 2.0**-33])
    check(run(block([1e-12]), "mxfp8e4m3", emulate=emulate), [0])


@pytest.mark.parametrize("emulate", ["seed", "exact"])
def test_nan_makes_the_outer_block_nan(emulate):
    x = torch.linspace(-3, 3, 64)
    x[5] = NAN
    y = run(x, "e2m1K4k4B8b4c", emulate=emulate)
    assert torch.isnan(y[:32]).all() and not torch.isnan(y[32:]).any()
    y1 = run(x, "e2m1k8b32c", emulate=emulate)
    assert torch.isnan(y1[:32]).all() and not torch.isnan(y1[32:]).any()


@pytest.mark.parametrize("emulate", ["seed", "exact"])
def test_inf_saturates_and_flushes_the_rest(emulate):
    # ±Inf: scale saturates at k_max - exp_offset; Inf -> ±fp_val_max·2^(k_max - exp_offset).
    check(run(block([-INF, 1, 2]), "mxfp8e4m3", emulate=emulate), [-E4M3_SAT, 0, 0])
    check(run(block([INF, 1]), "mxfp4", emulate=emulate), [6 * 2.0**125, 0])


@pytest.mark.parametrize("emulate", ["seed", "exact"])
def test_two_level_constraint(emulate):
    # Outer block of 8 inner blocks of 4: inner block 0 has max 4 (g = 0), inner block 1 has
    # max 2^-20 (g = -21), raised to G - 15 = -15, where 2^-20 rounds to 0. With B = 1 it survives.
    x = block([4, 0, 0, 0, 2.0**-20], n=64)
    check(run(x, "e2m1K4k4B8b4c", emulate=emulate)[[0, 4]], [4, 0])
    check(run(x, "e2m1K4k4B1b4c", emulate=emulate)[[0, 4]], [4, 2.0**-20])


@pytest.mark.parametrize("emulate", ["seed", "exact"])
def test_tiny_scale_flush(emulate):
    # §3.4 step 7: s < -127 gives 0. For e8m3 (exp_max 128) any block max below 2 has s <= -128.
    check(run(block([1.0, 0.5]), "e8m3k8b32", emulate=emulate), [0, 0])


# --------------------------------------------------------------------------- §3.4, E = 0


@pytest.mark.parametrize("emulate", ["seed", "exact"])
def test_integer_mantissa(emulate):
    # e0m4: exp_max 3; amax 7.5 -> g = 2 - 3 = -1, mant = RNA(2x) clipped to 15.
    check(run(block([7.5, 1, 0.3], n=8), "e0m4k8b8", emulate=emulate), [7.5, 1, 0.5])


@pytest.mark.parametrize("emulate", ["seed", "exact"])
def test_integer_mantissa_carry(emulate):
    # 7.8·2 = 15.6 rounds to 16 > 15: carry bumps g to 0 (mant 8 -> 8); without carry it clips to 15 -> 7.5.
    check(run(block([7.8], n=8), "e0m4k8b8c", emulate=emulate), [8])
    check(run(block([7.8], n=8), "e0m4k8b8", emulate=emulate), [7.5])


@pytest.mark.parametrize("emulate", ["seed", "exact"])
def test_integer_mantissa_underflow_and_nan(emulate):
    # e0m4k4: k_max 7, exp_offset 3, window [-10, 4]. Below (2 - 2^-4)·2^-9 = 0.00378 -> 0.
    check(run(block([0.004, 0.003], n=8), "e0m4k4b8", emulate=emulate), [0.00390625, 0])
    # Reaching 2^(4 + 3)·(2 - 2^-4) = 248 makes the whole outer block NaN; 247 does not.
    x = block([248, 1], n=16)
    y = run(x, "e0m4k4b8", emulate=emulate)
    assert torch.isnan(y[:8]).all() and (y[8:] == 0).all()
    check(run(block([247, 1], n=8), "e0m4k4b8", emulate=emulate), [240, 0])
    for bad in (INF, -INF, NAN):
        y = run(block([1, bad], n=16), "e0m4k4b8", emulate=emulate)
        assert torch.isnan(y[:8]).all() and (y[8:] == 0).all()


# --------------------------------------------------------------------------- shapes, axes, dtypes


def _randn(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * torch.exp2(torch.randint(-8, 8, shape[:-1] + (1,), generator=g).float())


@pytest.mark.parametrize("emulate", ["exact", "seed"])
@pytest.mark.parametrize("desc", ["mxfp8e4m3", "e2m1K4k4B8b4c", "e0m4k4b8c"])
def test_axis0_and_3d_equal_last_axis(emulate, desc):
    x = _randn(70, 9)
    assert_bits_equal(
        run(x, desc, axis=0, emulate=emulate), run(x.t().contiguous(), desc, emulate=emulate).t(), "axis 0"
    )
    x3 = _randn(3, 40, 5)
    want = run(x3.transpose(1, 2).contiguous(), desc, emulate=emulate).transpose(1, 2)
    assert_bits_equal(run(x3, desc, axis=1, emulate=emulate), want, "axis 1 of 3-D")


@pytest.mark.parametrize("emulate", ["exact", "seed"])
def test_ragged_tail_and_1d(emulate):
    x = _randn(5, 45)
    padded = torch.cat([x, torch.zeros(5, 19)], dim=1)
    assert_bits_equal(
        run(x, "e2m1K4k4B8b4c", emulate=emulate), run(padded, "e2m1K4k4B8b4c", emulate=emulate)[:, :45], "ragged"
    )
    assert_bits_equal(run(x[3], "mxfp4", emulate=emulate), run(x, "mxfp4", emulate=emulate)[3], "1-D")


@pytest.mark.parametrize("dtype", [BF16, F16])
@pytest.mark.parametrize("desc", ["mxfp8e4m3", "mxfp4", "e2m1K4k4B8b4c"])
def test_half_inputs_keep_dtype_and_round_the_float32_result(dtype, desc):
    x = _randn(8, 64).to(dtype)
    got = run(x, desc)
    assert_bits_equal(got, quantize_qtype_ref(x.float(), **parse(desc)).to(dtype), f"{desc}")


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        run(block([1.0]), "mxfp4", emulate="fast")
    with pytest.raises(ValueError):
        run(block([1.0]), "mxfp4", axis=1)
