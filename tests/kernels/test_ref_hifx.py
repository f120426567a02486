"""Tests for kernels/reference/hifx.py: HiFX v12 (hifx2..5_v12, HiF4 = hifx4_v12).

Spec formats-hifloat.md §5.2-§5.5; golden folders hifx2_v12 … hifx5_v12 and hifx4_numpy.
"""

from __future__ import annotations

import fnmatch
import math
import re
import struct

import pytest
import torch
from golden import assert_bits_equal, case_files, contract, load, needs_golden

from kernels.reference.hifx import quantize_hifx_ref

F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16
INF, NAN = math.inf, math.nan
STEMS = {"hifx2_v12", "hifx3_v12", "hifx4_v12", "hifx5_v12", "hifx4_numpy"}

# ----------------------------------------------------------------------------- golden


def parse_hifx(fmt: str) -> dict:
    """``hifxN_v12[:k=v,...]`` / ``hif4[:...]`` -> quantize_hifx_ref keyword arguments."""
    m = re.fullmatch(r"(?:hifx([2-5])_v12|hif4)(?::(.*))?", fmt)
    assert m, fmt
    kwargs: dict = {"n": int(m.group(1) or 4)}
    for item in filter(None, (m.group(2) or "").split(",")):
        key, value = item.split("=")
        assert key in ("axis", "variant", "emulate"), key
        kwargs[key] = int(value) if key == "axis" else value
    return kwargs


def golden_cases() -> list:
    cases = []
    for i, entry in enumerate(contract()):
        if entry.get("family") != "hif" or entry["stem"] not in STEMS:
            continue
        for path in case_files("hif", entry["stem"]):
            if "cases" in entry and not any(fnmatch.fnmatch(path.stem, c) for c in entry["cases"]):
                continue
            if any(fnmatch.fnmatch(path.stem, c) for c in entry.get("skip_cases", [])):
                continue
            dtype = str(load(path)[0]["input"].dtype).removeprefix("torch.")
            if entry["dtypes"] != "all" and dtype not in entry["dtypes"]:
                continue
            tag = "req" if entry["required"] else "opt"
            cases.append(pytest.param(entry, path, id=f"{tag}-{i}-{entry['format']}-{path.stem}"))
    return cases


@needs_golden
def test_contract_has_hifx_entries():
    assert len(golden_cases()) >= 50


@needs_golden
@pytest.mark.parametrize(("entry", "path"), golden_cases())
def test_golden_contract(entry, path):
    """Required and optional entries alike: all of them are reproduced bit for bit."""
    tensors, meta = load(path)
    x = tensors["input"]
    want = tensors[entry["against"]]
    before = x.clone()
    got = quantize_hifx_ref(x, **parse_hifx(entry["format"]))
    assert got.dtype == want.dtype
    assert_bits_equal(got, want, f"{entry['format']} vs {path.parent.name}/{path.stem}:{entry['against']}")
    assert_bits_equal(x, before, "input modified")


def _seed_compute_matches_emulation(path) -> bool:
    """emulate=seed computes in the input dtype: files made with force_fp32=True do not."""
    meta = load(path)[1]
    return meta["compute_dtype"] == meta["output_dtype"]


@needs_golden
@pytest.mark.parametrize(
    "path", [p for p in case_files("hif", "hifx4_v12") if _seed_compute_matches_emulation(p)], ids=lambda p: p.stem
)
def test_golden_default_differs_from_seed_where_metadata_says(path):
    """The two modes really differ: exactly n_diff_expected_vs_expected_exact elements."""
    tensors, meta = load(path)
    axis = 0 if "axis0" in path.stem else -1
    exact = quantize_hifx_ref(tensors["input"], n=4, axis=axis)
    seed = quantize_hifx_ref(tensors["input"], n=4, axis=axis, emulate="seed")
    a, b = exact.double().nan_to_num(7.0), seed.double().nan_to_num(7.0)
    assert int((a != b).sum()) == int(meta["n_diff_expected_vs_expected_exact"])


# ---------------------------------------------------------------- worked examples §5.3


def _group(values: dict[int, float] | list[float], dtype=F32, length: int = 64) -> torch.Tensor:
    x = torch.zeros(length, dtype=F32)
    items = values.items() if isinstance(values, dict) else enumerate(values)
    for i, v in items:
        x[i] = v
    return x.to(dtype)


_PREV1 = struct.unpack("f", struct.pack("I", 0x3F7FFFFF))[0]  # 0.99999994 = prevfloat(1)
EXAMPLES_5_3 = [
    ([1.0, 0.5, 0.3, 0, 0, 0, 0, 0, 0.01], [1.0, 0.5, 0.25, 0, 0, 0, 0, 0, 0]),
    ([1.9, 0.6, 0.07], [1.75, 0.5, 0.0]),
    ([_PREV1, 0.3, 0.1], [0.875, 0.25, 0.125]),
    ([7.0, 2.5, 1.5, 0.5], [7.0, 3.0, 2.0, 1.0]),
    ({0: 5.0, 8: 1.2, 12: 0.3, 16: 0.3, 20: 0.05, 24: 0.9}, {0: 5.0, 8: 1.25, 12: 0.25, 16: 0.25, 20: 0.0, 24: 1.0}),
]


@pytest.mark.parametrize(("inp", "want"), EXAMPLES_5_3)
@pytest.mark.parametrize("emulate", ["exact", "seed"])
def test_worked_examples_hifx4(inp, want, emulate):
    got = quantize_hifx_ref(_group(inp), n=4, emulate=emulate)
    assert_bits_equal(got, _group(want))


@pytest.mark.parametrize(
    ("n", "want"),
    [(2, [1, 0, 1, 0, 1]), (3, [1, 0.5, 0.5, 0, 1.5]), (5, [1, 0.25, 0.75, 0.125, 1.875])],
)
def test_worked_example_other_widths(n, want):
    x = _group([1.0, 0.3, 0.7, 0.1, 1.9])
    assert_bits_equal(quantize_hifx_ref(x, n=n), _group(want), f"hifx{n}")


# ----------------------------------------------------------- §5.4 seed artefacts


def test_artefact_log2_rounding():
    prev8 = struct.unpack("f", struct.pack("I", 0x40FFFFFF))[0]  # 7.9999995
    x = _group([prev8, 1.0, 3.0])
    assert quantize_hifx_ref(x, n=4)[:3].tolist() == [7.0, 1.0, 3.0]
    assert quantize_hifx_ref(x, n=4, emulate="seed")[:3].tolist() == [8.0, 2.0, 4.0]


def test_artefact_floor_half():
    prev = struct.unpack("f", struct.pack("I", 0x3DFFFFFF))[0]  # prevfloat(0.125)
    x = _group([1.0, prev])
    assert quantize_hifx_ref(x, n=4)[:2].tolist() == [1.0, 0.0]
    assert quantize_hifx_ref(x, n=4, emulate="seed")[:2].tolist() == [1.0, 0.25]


def test_artefact_native_bf16_compute():
    x = _group([31.75, 5.0], dtype=BF16)
    assert quantize_hifx_ref(x, n=4)[:2].tolist() == [28.0, 4.0]
    assert quantize_hifx_ref(x, n=4, emulate="seed")[:2].tolist() == [32.0, 8.0]


# ------------------------------------------------------------------ special values


def test_nan_poisons_exactly_its_group():
    x = torch.randn(3, 128)
    x[1, 70] = NAN
    got = quantize_hifx_ref(x, n=4)
    assert bool(got[1, 64:].isnan().all())
    assert not bool(got[1, :64].isnan().any()) and not bool(got[[0, 2]].isnan().any())
    assert_bits_equal(got[[0, 2]], quantize_hifx_ref(x[[0, 2]], n=4))


@pytest.mark.parametrize("emulate", ["exact", "seed"])
def test_inf_kept_rest_of_group_on_coarse_grid(emulate):
    got = quantize_hifx_ref(_group({0: 1.0, 1: INF, 2: -INF, 3: 3e5, 4: 1e5, 8: 7e4}), n=4, emulate=emulate)
    # L1 clips to 16. The Inf micro-group has S = 18 (step 2^16): 1.0 -> 0, 3e5 -> 5·2^16.
    # Its neighbour (same sub-block, E4 = 16) has S = 17: 1e5 -> 3·2^15. The next
    # sub-block (E8 = 16) has S = 16: 7e4 -> 4·2^14.
    assert got[[0, 1, 2, 3, 4, 8]].tolist() == [0.0, INF, -INF, 327680.0, 98304.0, 65536.0]


@pytest.mark.parametrize(
    ("inp", "torch_want", "numpy_want"),
    [
        ([0.0, -0.0], [0.0, 0.0], [0.0, 0.0]),
        ([1e6, 1.0], [983040.0, 0.0], [917504.0, 0.0]),
        ([2.0**-50, 2.0**-52], [0.0, 0.0], [2.0**-50, 2.0**-52]),
    ],
)
def test_special_groups_table_5_5(inp, torch_want, numpy_want):
    x = _group(inp)
    assert quantize_hifx_ref(x, n=4)[:2].tolist() == torch_want
    assert quantize_hifx_ref(x, n=4, variant="numpy")[:2].tolist() == numpy_want
    assert not bool(quantize_hifx_ref(x, n=4, variant="numpy").isnan().any())


def test_numpy_seed_emulation_all_zero_group_is_nan_and_float64():
    x = torch.zeros(128, 3)  # six column groups of 64 rows, all zero but one
    x[5, 1] = 1.5
    got = quantize_hifx_ref(x, n=4, axis=0, variant="numpy", emulate="seed")
    assert got.dtype == torch.float64
    assert bool(got[:, [0, 2]].isnan().all()) and bool(got[64:, 1].isnan().all())
    assert got[5, 1].item() == 1.5 and not bool(got[:64, 1].isnan().any())
    exact = quantize_hifx_ref(x, n=4, axis=0, variant="numpy")
    assert exact.dtype == F32 and not bool(exact.isnan().any())


def test_numpy_variant_inf_makes_group_nan():
    x = _group([1.0, INF])
    assert bool(quantize_hifx_ref(x, n=4, variant="numpy").isnan().all())


# ---------------------------------------------------- an independent per-group oracle


def _f32(v: float) -> float:
    return struct.unpack("f", struct.pack("f", v))[0]


def _floor_log2(v: float) -> int:
    return math.frexp(v)[1] - 1


def _oracle_group(vals: list[float], n: int, variant: str) -> list[float]:
    """§5.3 (torch) / §5.5 (numpy, exact) for one 64-group of float32 values, in Python."""
    m = n - 1
    if any(math.isnan(v) for v in vals) or (variant == "numpy" and any(math.isinf(v) for v in vals)):
        return [NAN] * 64
    a = [abs(v) for v in vals]
    m4 = [max(a[4 * j : 4 * j + 4]) for j in range(16)]
    if variant == "torch":
        e4 = [1000 if math.isinf(v) else _floor_log2(_f32(v + 2.0**-45)) for v in m4]
    else:
        if max(m4) == 0:
            return [0.0] * 64
        e4 = [_floor_log2(v) if v > 0 else -(10**6) for v in m4]
    e8 = [max(e4[2 * b], e4[2 * b + 1]) for b in range(8)]
    l1 = max(e8) - 2
    if variant == "torch":
        l1 = min(max(l1, -46), 16)
    out = []
    for i, x in enumerate(vals):
        d8 = min(max(e8[i // 8] - l1 - 1, 0), 1)
        d4 = min(max(e4[i // 4] - l1 - d8, 0), 1)
        s = l1 + d8 + d4
        if math.isinf(x):
            out.append(x)
            continue
        k = math.floor(a[i] * 2.0 ** (m - 1 - s) + 0.5)  # exact in float64 for float32 a
        if (variant == "torch" and k == 2**m) or (variant == "numpy" and k >= 2**m):
            k = 2**m - 1
        out.append(math.copysign(_f32(k * 2.0 ** (s - m + 1)), x))
    return out


def _structured(n_groups: int, seed: int) -> torch.Tensor:
    """Groups at exponents 2^-60..2^30 with zero micro-groups, lattice ties, sat. edges."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_groups, 64, generator=g)
    x *= torch.exp2(torch.randint(-60, 30, (n_groups, 1), generator=g).float())
    x *= (
        torch.exp2(-torch.randint(0, 4, (n_groups, 16, 1), generator=g).float())
        .repeat_interleave(4, 1)
        .view(n_groups, 64)
    )
    x[::5, :16] = 0.0
    x[1::5] = torch.randint(-32, 33, (64,), generator=g).float() / 16
    x[2::5, 0] = torch.tensor([1.75, 1.875, 1.9, 1.99, 8.0]).repeat(n_groups)[: len(x[2::5])]
    x[3::7, 9] = INF
    x[4::9, 60] = NAN
    return x


@pytest.mark.parametrize("variant", ["torch", "numpy"])
@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_matches_python_oracle(n, variant):
    x = _structured(60, seed=n)
    got = quantize_hifx_ref(x, n=n, variant=variant)
    want = torch.tensor([_oracle_group(row, n, variant) for row in x.tolist()], dtype=F32)
    assert_bits_equal(got, want, f"hifx{n} {variant}")


# ------------------------------------------------------------- shapes and dtypes


def test_ragged_tail_is_zero_padded():
    x = torch.randn(5, 70) * 4
    got = quantize_hifx_ref(x, n=4)
    padded = torch.cat([x, torch.zeros(5, 58)], dim=1)
    assert_bits_equal(got, quantize_hifx_ref(padded, n=4)[:, :70])
    assert_bits_equal(got[:, 64:], quantize_hifx_ref(x[:, 64:], n=4), "tail group alone")


@pytest.mark.parametrize("variant", ["torch", "numpy"])
def test_axis_is_a_transpose(variant):
    x = torch.randn(130, 7) * 3
    got = quantize_hifx_ref(x, n=3, axis=0, variant=variant)
    assert got.shape == x.shape and got.is_contiguous()
    assert_bits_equal(got, quantize_hifx_ref(x.t(), n=3, variant=variant).t())
    assert_bits_equal(quantize_hifx_ref(x, n=3, axis=-2, variant=variant), got)


def test_three_d_and_one_d():
    x = torch.randn(3, 100, 5)
    got = quantize_hifx_ref(x, n=5, axis=1)
    assert_bits_equal(got, quantize_hifx_ref(x.movedim(1, -1), n=5).movedim(-1, 1))
    v = torch.randn(77)
    assert_bits_equal(quantize_hifx_ref(v, n=2), quantize_hifx_ref(v[None], n=2)[0])


@pytest.mark.parametrize("dtype", [BF16, F16])
def test_low_precision_inputs_compute_in_float32(dtype):
    x = _structured(20, seed=9).nan_to_num(0.0, 0.0, 0.0).clamp(-6e4, 6e4).to(dtype)
    got = quantize_hifx_ref(x, n=4)
    assert got.dtype == dtype
    assert_bits_equal(got, quantize_hifx_ref(x.float(), n=4).to(dtype))


def test_empty():
    assert quantize_hifx_ref(torch.empty(3, 0), n=4).shape == (3, 0)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"emulate": "seed"}, {"axis": 0}, {"variant": "numpy"}, {"variant": "numpy", "emulate": "seed"}],
)
@pytest.mark.parametrize("dtype", [F32, BF16, F16])
def test_input_not_modified(kwargs, dtype):
    x = (torch.randn(128, 64) * 3).to(dtype)
    before = x.clone()
    quantize_hifx_ref(x, n=4, **kwargs)
    assert torch.equal(x, before)


def test_invalid_arguments():
    x = torch.ones(64)
    with pytest.raises(ValueError):
        quantize_hifx_ref(x, n=6)
    with pytest.raises(ValueError):
        quantize_hifx_ref(x, n=4, variant="cuda")
    with pytest.raises(ValueError):
        quantize_hifx_ref(x, n=4, emulate="npu")
    with pytest.raises(ValueError):
        quantize_hifx_ref(x, n=3, variant="numpy", emulate="seed")
    with pytest.raises(ValueError):
        quantize_hifx_ref(torch.tensor(1.0), n=4)
