"""Value sets of the ≤ 8-bit elements, checked against the spec's own numbers."""

from __future__ import annotations

import pytest
import torch
from golden import GOLDEN

import kernels
from kernels.grid import MINIFLOATS


@pytest.mark.parametrize(
    "fmt,n_positive,max_value,min_positive",
    [
        ("mxfp8_e4m3", 126, 448.0, 2.0**-9),  # formats-mx.md §1.1
        ("mxfp8_e5m2", 123, 57344.0, 2.0**-16),
        ("mxfp6_e3m2", 31, 28.0, 0.0625),
        ("mxfp6_e2m3", 31, 7.5, 0.125),
        ("mxfp4_e2m1", 7, 6.0, 0.5),
        ("mxint8", 127, 127 / 64, 1 / 64),
        ("hif8", 126, 32768.0, 2.0**-22),  # formats-hifloat.md §3.1
        ("hifx4_v12", 7, 1.75, 0.25),
        ("hif4_paper", 7, 1.75, 0.25),
        ("nf4B4b64", 7, 1.0, 1 / 7),
        ("tmx6", 15, 1.875, 0.125),
    ],
)
def test_value_counts_and_ranges(fmt, n_positive, max_value, min_positive):
    v = kernels.representable_values(fmt)
    assert v.dtype == torch.float64
    assert torch.all(v[1:] > v[:-1]), "sorted, no duplicates"
    pos = v[v > 0]
    assert len(pos) == n_positive
    assert pos.max().item() == max_value and pos.min().item() == min_positive
    assert torch.equal(v, -v.flip(0)) or fmt == "nf4"


def test_spec_value_lists():
    assert kernels.representable_values("mxfp4_e2m1")[7:].tolist() == [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    e3m2 = kernels.representable_values("mxfp6_e3m2")
    assert e3m2[e3m2 >= 16].tolist() == [16, 20, 24, 28]
    e4m3 = kernels.representable_values("mxfp8_e4m3")
    assert e4m3[-7:].tolist() == [256, 288, 320, 352, 384, 416, 448]
    assert kernels.representable_values("mxfp8_e5m2")[-4:].tolist() == [32768, 40960, 49152, 57344]


def test_nf4_code_book():
    v = kernels.representable_values("nf4")
    assert len(v) == 16 and v[0] == -1 and v[-1] == 1 and v[7] == 0
    assert (v < 0).sum() == 7  # asymmetric: 7 negative levels, 8 positive


def test_hif8_values_match_the_golden_list():
    path = GOLDEN / "hif" / "hif8_values.txt"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    want = sorted(float.fromhex(line) for line in path.read_text().split())
    v = kernels.representable_values("hif8")
    assert v[v >= 0].tolist() == want


def test_minifloats_agree_with_torch_float8():
    for name, dt in [("fp8_e4m3", torch.float8_e4m3fn), ("fp8_e5m2", torch.float8_e5m2)]:
        codes = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(dt).float()
        finite = codes[torch.isfinite(codes)].double().unique()
        mine = torch.tensor(MINIFLOATS[name].magnitudes(), dtype=torch.float64)
        assert torch.equal(finite[finite >= 0], mine)


def test_wide_elements_are_not_enumerated():
    with pytest.raises(ValueError, match="more than 8 bits"):
        kernels.representable_values("fp16")
