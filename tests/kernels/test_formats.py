"""The format-string parser: every name, options, canonical strings, and clear errors."""

from __future__ import annotations

import json

import pytest
from golden import contract, needs_golden

import kernels
from kernels.formats import FAMILIES, FormatError, parse


def test_every_listed_format_round_trips():
    for spec in kernels.list_formats():
        assert parse(str(spec)) == spec
        r = spec.rules()
        assert r.bits_per_value > 0 and r.element


@needs_golden
def test_every_contract_format_string_parses():
    for entry in contract():
        if "format" in entry:
            spec = parse(entry["format"].replace("{amax}", "1.0"))
            assert parse(str(spec)) == spec


@pytest.mark.parametrize(
    "text,canonical",
    [
        ("mxfp8_e4m3", "mxfp8_e4m3"),
        ("mxfp4_e2m1:block=16, round=even", "mxfp4_e2m1:block=16,round=even"),
        ("mxfp4_e2m1:block=32", "mxfp4_e2m1"),  # defaults are not printed
        ("nvfp8_e4m3", "fp8_e4m3"),
        ("hif4", "hifx4_v12"),
        ("hif4:axis=0", "hifx4_v12:axis=0"),
        ("e4m3k8b32C", "e4m3k8b32c"),  # C means carry, like c
        ("e2m1K4k4B8b4c", "e2m1K4k4B8b4c"),
        ("e0m3K1k4B1b64Coff38", "e0m3K1k4B1b64coff38"),
        ("nf4B4b64:axis=0", "nf4B4b64:axis=0"),
        ("dhif8:amax=358400", "dhif8:amax=358400.0"),
        ("mxfp8_e4m3:minus_exp=auto-2", "mxfp8_e4m3:minus_exp=auto-2"),
        ("hif8:out=bfloat16", "hif8:out=bf16"),
    ],
)
def test_canonical_strings(text, canonical):
    assert str(parse(text)) == canonical
    assert parse(canonical) == parse(text)


def test_keyword_options_override_the_string():
    assert parse("mxfp8_e4m3:block=16", block=64)["block"] == 64
    assert kernels.parse(parse("nf4"), block=32) == parse("nf4:block=32")


def test_qtype_fields_come_from_the_name():
    s = parse("e2m1K4k4B8b4c")
    assert (s["E"], s["M"], s["K"], s["k"], s["B"], s["b"], s["carry"]) == (2, 1, 4, 4, 8, 4, True)
    assert parse("mxfp6e3m2")["E"] == 3  # the OPS parser's E3M2, not the NPU parser's E2M3 bug


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("mxfp8e4m4", "did you mean mxfp8e4m3"),
        ("MXFP8_E4M3", "did you mean mxfp8_e4m3"),
        ("hifx4", "did you mean"),
        ("", "no format name"),
        ("mxfp8_e4m3:blk=16", "no option 'blk' (did you mean 'block'?)"),
        ("mxfp8_e4m3:round=up", "expected one of nearest, even, floor, dither"),
        ("mxfp8_e4m3:block", "is not key=value"),
        ("mxfp8_e4m3:block=1,block=2", "given twice"),
        ("mxfp8_e4m3:block=-1", "block must be >= 0"),
        ("mxfp8_e4m3:scale_bits=9", "scale_bits"),
        ("e1m2k8b32", "E != 1"),
        ("tmx1", "3 <= N"),
        ("nvfp4:emulate=seed", "no option 'emulate'"),
        ("dhif8:amax=inf", "finite"),
        ("hif8:k=0", "k must be > 0"),
    ],
)
def test_bad_format_strings_say_what_is_wrong(text, fragment):
    with pytest.raises(FormatError) as e:
        parse(text)
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_non_string_format_is_rejected():
    with pytest.raises(FormatError, match="must be a string"):
        parse(42)


def test_every_family_documents_its_options():
    for fam in FAMILIES.values():
        assert fam.description
        for o in fam.options:
            assert o.help, (fam.name, o.key)


def test_rules_and_bits_per_value():
    assert kernels.format_rules("mxfp8_e4m3").bits_per_value == 8.25
    assert kernels.format_rules("mxfp4_e2m1:block=16").bits_per_value == 4.5
    assert kernels.format_rules("nvfp4").bits_per_value == 4.5
    assert kernels.format_rules("e2m1K4k4B8b4c").bits_per_value == pytest.approx(4 + 4 / 4 + 4 / 32)
    assert kernels.format_rules("hifx4_v12").bits_per_value == pytest.approx(4 + 30 / 64)
    r = kernels.format_rules("mxfp4")
    assert (r.element, r.block, r.rounding) == ("e2m1", "32", "nearest, ties away from zero")
    assert "carry" in r.scale
    assert kernels.format_rules("mxfp4_e2m1:round=even").rounding == "nearest, ties to even"


def test_list_formats_covers_the_issue_names():
    names = {s.name for s in kernels.list_formats()}
    for n in [
        "mxfp8_e4m3",
        "mxfp8_e5m2",
        "mxfp6_e3m2",
        "mxfp6_e2m3",
        "mxfp4_e2m1",
        "mxint8",
        "mxfp4",
        "mxfp6e3m2",
        "mxfp8e4m3",
        "mxfp8e5m2",
        "nvf4",
        "nvfp4",
        "nf4",
        "fp8_e4m3",
        "fp8_e5m2",
        "fp16",
        "bf16",
        "fp32",
        "int8sym",
        "hif8",
        "hifx2_v12",
        "hifx3_v12",
        "hifx4_v12",
        "hifx5_v12",
        "hif4_paper",
        "dhif8",
        "nf4B4b64",
        "tmx6",
    ]:
        assert n in names, n
    json.dumps([str(s) for s in kernels.list_formats()])  # names are plain strings
