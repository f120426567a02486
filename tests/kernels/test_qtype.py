"""kernels.qtype.QType: the seed's descriptor object, its fields and methods, and its fqtool format."""

from __future__ import annotations

import pytest
import torch

import kernels
from kernels.formats import FormatError
from kernels.qtype import QType


@pytest.mark.parametrize(
    "desc,fields",
    [
        (
            "mxfp4",
            dict(
                exp_bits=2,
                man_bits=1,
                k_bits=8,
                blk_size=32,
                do_carry=True,
                exp_max=2,
                exp_min=0,
                k_max=127,
                fp_val_max=6.0,
                exp_offset=2,
            ),
        ),
        ("mxfp6e3m2", dict(exp_bits=3, man_bits=2, exp_max=4, fp_val_max=28.0)),
        ("mxfp8e4m3", dict(exp_bits=4, man_bits=3, exp_max=8, exp_min=-6, fp_val_max=448.0)),
        ("mxfp8e5m2", dict(exp_bits=5, man_bits=2, exp_max=15, fp_val_max=57344.0)),
        ("e5m3k8b32", dict(exp_max=16, do_carry=False)),  # formats-mx.md §3.2: only e5m2 reserves Inf/NaN
        ("e2m1K4k4B8b4c", dict(k_bits=4, k_outer_bits=4, blk_size=4, blk_outer_size=8, k_max=127)),
        (
            "hifx4_v12",
            dict(
                exp_bits=0,
                man_bits=3,
                k_bits=4,
                k_outer_bits=1,
                blk_size=64,
                exp_max=2,
                k_max=15,
                exp_offset=38 - 15 - 1 + 2,
            ),
        ),
        ("nf4B4b64", dict(blk_size=64, blk_outer_size=4)),
        ("tmx6", dict(blk_size=16, man_bits=4)),
        ("nvf4", dict(blk_size=256)),
        ("hif8", dict(blk_size=512)),
    ],
)
def test_fields(desc, fields):
    q = QType(desc)
    assert q.desc == desc and q.q_dim == -1
    for k, v in fields.items():
        assert getattr(q, k) == v, k


def test_dim_copies_and_dim__mutates():
    q = QType("mxfp4")
    d = q.dim(0)
    assert d is not q and d.q_dim == 0 and q.q_dim == -1
    assert q.dim_(1) is q and q.q_dim == 1
    c = q.copy()
    assert c == q and c is not q
    c.dim_(-1)
    assert q.q_dim == 1
    assert repr(QType("mxfp8e4m3").dim(0)) == "QType(mxfp8e4m3, dim=0, exp_offset=8)"


@pytest.mark.parametrize(
    "desc,fmt",
    [
        ("mxfp4", "mxfp4"),
        ("e4m3k8b32C", "e4m3k8b32c"),
        ("hifx4_v12", "hifx4_v12"),
        ("nf4B4b64", "nf4B4b64"),
        ("tmx6", "tmx6"),
        ("nvf4", "nvf4"),
        ("fp16", "fp16"),
        ("int8sym", "int8sym"),
        ("dhif8", "dhif8"),
        ("hif8", "hif8:scale=none,underflow=flush"),
    ],
)
def test_spec_follows_q_dim(desc, fmt):
    assert str(QType(desc).spec()) == fmt
    if "axis" in dict(kernels.parse(fmt).options):
        assert QType(desc).dim(0).spec() == kernels.parse(fmt, axis=0)


def test_fake_quantize_accepts_a_qtype():
    x = torch.randn(64, 40)
    assert torch.equal(kernels.fake_quantize(x, QType("mxfp4").dim(0)), kernels.fake_quantize(x, "mxfp4:axis=0"))


@pytest.mark.parametrize("desc", ["hif4", "HIFX4_V12", "mxfp6e2m3", "e1m2k8b32", "nf4", "tmx", "foo"])
def test_rejected_names(desc):
    with pytest.raises(FormatError):
        QType(desc)
