"""fqtool.render: every output format from hand-built Results, checked against each other."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest

from fqtool import render as rd
from fqtool.errors import UsageError
from fqtool.metrics import METRICS
from fqtool.results import SCHEMA, Aggregate, Result, Row, Skipped, TensorInfo, Violation

ANSI = re.compile(r"\x1b\[[0-9;]*m")
BOX = re.compile(r"[\u2500-\u257f]")  # box-drawing characters
FORMATS = ("mxfp8_e4m3", "mxfp4_e2m1", "hif8")
ODD_NAME = "bias,with|pipe"  # a comma for CSV quoting, a pipe for Markdown escaping


def metrics(sqnr: float, **overrides: float) -> dict[str, float]:
    m = {
        "sqnr_db": sqnr,
        "nsr": 10 ** (-sqnr / 10) if math.isfinite(sqnr) else (0.0 if sqnr > 0 else math.nan),
        "mse": 0.1 + 0.2,  # 0.30000000000000004: only repr keeps every digit
        "rmse": 1.2345678901234567e-05,
        "max_abs_err": 0.015625,
        "mean_abs_err": 3.3333333333333335e-06,
        "cosine": 0.9999876543,
        "clipped_frac": 0.00123456,
        "flushed_frac": 0.0,
        "nan_in": 0,
        "inf_in": 0,
        "nan_out": 0,
        "inf_out": 0,
    }
    m.update(overrides)
    return m


def stats(**overrides: float) -> dict[str, float]:
    s = {"absmax": 4.5, "mean": -0.001953125, "std": 0.7071067811865476, "min": -4.5, "max": 3.25, "nan": 0, "inf": 0}
    s.update(overrides)
    return s


WEIGHT = TensorInfo("layers.0.weight", "model.safetensors", (4096, 1024), "bfloat16", 4096 * 1024, stats())
ODD = TensorInfo(ODD_NAME, "model.safetensors", (8,), "float32", 8, stats(inf=1), {"layer": 3, "pass": "fwd"})
ALLNAN = TensorInfo("scalar", "extra.pt", (), "float16", 1, stats(absmax=math.nan, mean=math.nan, std=math.nan, nan=1))

# Per tensor: its SQNR in (mxfp8, mxfp4, hif8) and its other metrics. WEIGHT's best is hif8, ODD
# ties mxfp8 / hif8 at inf, ALLNAN has no number at all.
TENSORS = (
    (WEIGHT, (33.0712, 17.5, 40.25), {}),
    (ODD, (math.inf, 21.0, math.inf), {"inf_in": 1, "inf_out": 2, "clipped_frac": 0.125}),
    (ALLNAN, (math.nan,) * 3, {"nan_in": 1, "nan_out": 1, "mse": math.nan}),
)


def sample_result(**changes) -> Result:
    rows = []
    for tensor, sqnrs, extra in TENSORS:
        for fmt, sqnr in zip(FORMATS, sqnrs, strict=True):
            rows.append(Row(tensor, fmt, metrics(sqnr, **extra)))
    numel = WEIGHT.numel + ODD.numel + ALLNAN.numel
    aggregates = (
        Aggregate("mxfp8_e4m3", 8.25, 3, numel, metrics(33.0712, inf_out=2), rank=2),
        Aggregate("mxfp4_e2m1", 4.25, 3, numel, metrics(17.5, mse=1.5e-3), rank=3),
        Aggregate("hif8", 8.0, 3, numel, metrics(40.25, max_abs_err=math.inf), rank=1),
    )
    fields = dict(
        command="compare",
        inputs=("model.safetensors", "extra.pt"),
        device="cpu",
        formats=FORMATS,
        rows=tuple(rows),
        aggregates=aggregates,
        skipped=tuple(Skipped(f"ids{i}", "model.safetensors", "int64: not floating point") for i in range(5)),
        violations=(
            Violation("layers.0.weight", "mxfp4_e2m1", "sqnr_db", 17.5, 20.0),
            Violation("(all)", "mxfp4_e2m1", "mse", 1.5e-3, 1e-4),
        ),
        gates={"min_snr": 20.0, "max_mse": 1e-4},
        elapsed_s=1.25,
    )
    fields.update(changes)
    return Result(**fields)


def raise_on_constant(name: str):
    raise AssertionError(f"not strict JSON: {name}")


def load_json(result: Result) -> dict:
    return json.loads(rd.render(result, "json"), parse_constant=raise_on_constant)


def decoded(json_value):
    """A JSON number back as a float or int: non-finite floats arrive as "inf" / "-inf" / "nan"."""
    return float(json_value) if isinstance(json_value, str) else json_value


def same(a: float, b: float) -> bool:
    """Exactly equal, NaN equal to NaN."""
    return (math.isnan(a) and math.isnan(b)) or a == b


def plain_blocks(text: str) -> list[list[list[str]]]:
    """The plain table's sections (blank-line separated), each a list of split lines; comments dropped."""
    blocks = [b for b in text.strip("\n").split("\n\n") if not b.startswith("#")]
    return [[line.split() for line in b.splitlines()] for b in blocks]


# --- every format -------------------------------------------------------------------------------


@pytest.mark.parametrize("view", rd.VIEWS)
@pytest.mark.parametrize("output_format", rd.FORMATS)
@pytest.mark.parametrize("plain", [False, True])
def test_every_format_renders(output_format, view, plain):
    text = rd.render(sample_result(), output_format, view=view, plain=plain)
    assert text.endswith("\n") and not text.endswith("\n\n")
    assert "layers.0.weight" in text
    has_ansi = bool(ANSI.search(text))
    assert has_ansi == (output_format == "table" and not plain)


def test_an_empty_result_renders():
    empty = Result("analyze", (), "cpu", ("mxfp8_e4m3",), (), ())
    for output_format in rd.FORMATS:
        for view in rd.VIEWS:
            assert rd.render(empty, output_format, view=view).endswith("\n")


@pytest.mark.parametrize(
    "kwargs", [{"output_format": "yaml"}, {"view": "sideways"}, {"metric": "snr"}], ids=["format", "view", "metric"]
)
def test_unknown_choices_are_usage_errors(kwargs):
    args = {"output_format": "table"} | kwargs
    with pytest.raises(UsageError, match="choose one of"):
        rd.render(sample_result(), args.pop("output_format"), **args)


# --- numbers for humans -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, value, text",
    [
        ("sqnr_db", 12.3456, "12.35"),
        ("sqnr_db", math.inf, "inf"),
        ("sqnr_db", -math.inf, "-inf"),
        ("sqnr_db", math.nan, "nan"),
        ("mse", 1.23456e-5, "1.235e-05"),
        ("nsr", 0.0, "0.000e+00"),
        ("max_abs_err", math.inf, "inf"),
        ("cosine", 0.99912345, "0.999123"),
        ("clipped_frac", 0.00123456, "0.1235%"),
        ("flushed_frac", 0.0, "0%"),
        ("flushed_frac", 1.0, "100%"),
        ("clipped_frac", math.nan, "nan"),
        ("nan_out", 3, "3"),
        ("inf_in", 0.0, "0"),
        ("absmax", 4.5, "4.500e+00"),
        ("nan", 2, "2"),
        ("mse", None, "-"),
    ],
)
def test_format_metric_follows_the_documented_rounding(name, value, text):
    assert rd.format_metric(name, value) == text


# --- JSON ---------------------------------------------------------------------------------------


def test_json_is_strict_and_has_the_schema_keys():
    doc = load_json(sample_result())
    assert list(doc) == [
        "schema",
        "fqtool_version",
        "command",
        "inputs",
        "device",
        "formats",
        "tensors",
        "rows",
        "aggregates",
        "skipped",
        "gates",
        "violations",
        "elapsed_s",
    ]
    assert doc["schema"] == SCHEMA
    assert doc["formats"] == [
        {"format": "mxfp8_e4m3", "bits_per_value": 8.25},
        {"format": "mxfp4_e2m1", "bits_per_value": 4.25},
        {"format": "hif8", "bits_per_value": 8.0},
    ]
    assert [t["name"] for t in doc["tensors"]] == ["layers.0.weight", ODD_NAME, "scalar"]  # each tensor once
    assert set(doc["tensors"][0]) == {"name", "file", "shape", "dtype", "numel", "stats", "meta"}
    assert doc["tensors"][1]["meta"] == {"layer": 3, "pass": "fwd"}
    assert doc["tensors"][2]["shape"] == []
    assert set(doc["rows"][0]) == {"tensor", "file", "format", "metrics"}
    assert set(doc["aggregates"][0]) == {"format", "bits_per_value", "rank", "tensors", "numel", "metrics"}
    assert doc["skipped"][0] == {"name": "ids0", "file": "model.safetensors", "reason": "int64: not floating point"}
    assert doc["violations"][0] == {
        "tensor": "layers.0.weight",
        "format": "mxfp4_e2m1",
        "metric": "sqnr_db",
        "value": 17.5,
        "limit": 20.0,
    }
    assert doc["gates"] == {"min_snr": 20.0, "max_mse": 1e-4}
    assert doc["command"] == "compare" and doc["inputs"] == ["model.safetensors", "extra.pt"]


def test_json_round_trips_every_number_exactly():
    result = sample_result()
    doc = load_json(result)
    assert len(doc["rows"]) == len(result.rows)
    for row, out in zip(result.rows, doc["rows"], strict=True):
        assert (out["tensor"], out["file"], out["format"]) == (row.tensor.name, row.tensor.file, row.format)
        assert list(out["metrics"]) == list(METRICS)
        for name, value in row.metrics.items():
            assert same(decoded(out["metrics"][name]), value), (row.tensor.name, row.format, name)
            assert type(decoded(out["metrics"][name])) is type(value)  # counts stay ints
    for agg, out in zip(result.aggregates, doc["aggregates"], strict=True):
        assert (out["rank"], out["numel"], out["tensors"]) == (agg.rank, agg.numel, agg.tensors)
        for name, value in agg.metrics.items():
            assert same(decoded(out["metrics"][name]), value)
    assert doc["rows"][0]["metrics"]["mse"] == 0.30000000000000004
    assert doc["rows"][0]["metrics"]["nan_in"] == 0 and isinstance(doc["rows"][0]["metrics"]["nan_in"], int)


def test_json_writes_non_finite_floats_as_strings():
    doc = load_json(sample_result())
    odd_mxfp8 = doc["rows"][3]["metrics"]
    assert odd_mxfp8["sqnr_db"] == "inf"
    assert doc["rows"][6]["metrics"]["sqnr_db"] == "nan"
    assert doc["aggregates"][2]["metrics"]["max_abs_err"] == "inf"
    assert doc["tensors"][2]["stats"]["absmax"] == "nan"
    for text in ('"inf"', '"-inf"', '"nan"'):
        assert text in rd.SCHEMA_NOTES
    assert "inf" in rd.__doc__ and "SCHEMA_NOTES" in rd.__doc__


def test_json_accepts_numpy_and_odd_meta_values():
    tensor = TensorInfo(
        "t", "f.npy", (2,), "float32", 2, stats(), {"scale": np.float32("nan"), "step": np.int64(7), "path": Path("x")}
    )
    result = sample_result(rows=(Row(tensor, "hif8", metrics(-math.inf)),), violations=())
    doc = load_json(result)
    assert doc["tensors"][0]["meta"] == {"scale": "nan", "step": 7, "path": "x"}
    assert doc["rows"][0]["metrics"]["sqnr_db"] == "-inf"


# --- CSV ----------------------------------------------------------------------------------------


def test_csv_header_is_fixed_whatever_the_data():
    expected = "kind,tensor,file,format,bits_per_value,dtype,shape,numel," + ",".join(METRICS) + ",absmax,mean,std"
    empty = Result("analyze", (), "cpu", (), (), ())
    for result in (sample_result(), empty):
        assert rd.render(result, "csv").splitlines()[0] == expected
    assert ",".join(rd.CSV_HEADER) == expected


def test_csv_rows_equal_the_json_values():
    result = sample_result()
    doc = load_json(result)
    rows = list(csv.DictReader(io.StringIO(rd.render(result, "csv"))))
    tensor_rows = [r for r in rows if r["kind"] == "tensor"]
    aggregate_rows = [r for r in rows if r["kind"] == "aggregate"]
    assert len(tensor_rows) == len(doc["rows"]) and len(aggregate_rows) == len(doc["aggregates"])
    tensors = {(t["file"], t["name"]): t for t in doc["tensors"]}
    bits = {f["format"]: f["bits_per_value"] for f in doc["formats"]}
    for line, out in zip(tensor_rows, doc["rows"], strict=True):
        info = tensors[(out["file"], out["tensor"])]
        assert (line["tensor"], line["file"], line["format"]) == (out["tensor"], out["file"], out["format"])
        assert line["dtype"] == info["dtype"] and int(line["numel"]) == info["numel"]
        assert line["shape"] == "x".join(map(str, info["shape"]))
        assert float(line["bits_per_value"]) == bits[out["format"]]
        for name in METRICS:
            assert same(decoded(out["metrics"][name]), float(line[name]))
        for name in ("absmax", "mean", "std"):
            assert same(decoded(info["stats"][name]), float(line[name]))
    for line, out in zip(aggregate_rows, doc["aggregates"], strict=True):
        assert (line["tensor"], line["file"], line["dtype"], line["shape"]) == ("(all)", "", "", "")
        assert line["format"] == out["format"] and int(line["numel"]) == out["numel"]
        for name in METRICS:
            assert same(decoded(out["metrics"][name]), float(line[name]))
    assert tensor_rows[0]["shape"] == "4096x1024" and tensor_rows[0]["mse"] == "0.30000000000000004"
    assert tensor_rows[3]["tensor"] == ODD_NAME  # quoted by the csv module, read back whole
    assert tensor_rows[3]["sqnr_db"] == "inf" and tensor_rows[6]["sqnr_db"] == "nan"


# --- the plain table ----------------------------------------------------------------------------


@pytest.mark.parametrize("view", rd.VIEWS)
def test_plain_table_has_no_escapes_or_box_characters(view):
    text = rd.render(sample_result(), "table", view=view, plain=True, width=40)
    assert "\x1b" not in text and not BOX.search(text)
    assert "…" not in text  # never truncated, whatever the width
    for block in plain_blocks(text):
        assert len({len(cells) for cells in block}) == 1  # every line splits into the header's columns


def test_plain_numbers_equal_the_json_values_after_rounding():
    result = sample_result(command="analyze")
    doc = load_json(result)
    rows_block, aggregate_block = plain_blocks(rd.render(result, "table", plain=True))
    header = rows_block[0]
    assert header[:5] == ["tensor", "format", "dtype", "shape", "numel"] and header[5:] == list(METRICS)
    assert len(rows_block) - 1 == len(doc["rows"])
    for cells, out in zip(rows_block[1:], doc["rows"], strict=True):
        line = dict(zip(header, cells, strict=True))
        assert line["tensor"] == out["tensor"] and line["format"] == out["format"]
        for name in METRICS:
            value = decoded(out["metrics"][name])
            assert line[name] == rd.format_metric(name, value)
            shown = float(line[name].rstrip("%")) / (100 if line[name].endswith("%") else 1)
            if math.isnan(value):
                assert math.isnan(shown)
            else:
                # SQNR: 2 decimals; cosine: 6 decimals; others: 4 significant digits.
                tolerance = {"sqnr_db": 0.005, "cosine": 5e-7}.get(name, 5e-4 * abs(value))
                assert shown == value or abs(shown - value) <= tolerance, (name, line[name], value)
    assert aggregate_block[0][:4] == ["format", "bits_per_value", "tensors", "numel"]
    assert [cells[0] for cells in aggregate_block[1:]] == list(FORMATS)


def test_plain_cells_never_contain_spaces():
    spaced = TensorInfo("emb weight", "f.pt", (2, 3), "float32", 6, stats())
    text = rd.render(sample_result(rows=(Row(spaced, "hif8", metrics(10.0)),)), "table", plain=True)
    assert "emb_weight" in text
    assert ODD_NAME in rd.render(sample_result(), "table", plain=True)


def test_skipped_tensors_get_one_line_in_the_human_formats():
    result = sample_result()
    expected = "skipped 5 tensors: ids0 (int64: not floating point), ids1 (int64: not floating point), "
    plain = rd.render(result, "table", plain=True)
    assert plain.splitlines()[-1].startswith("# " + expected) and plain.rstrip().endswith("and 2 more")
    assert "Skipped 5 tensors: ids0" in rd.render(result, "markdown")
    assert ANSI.sub("", rd.render(result, "table")).count("skipped 5 tensors") == 1
    assert "skipped" not in rd.render(sample_result(skipped=()), "table", plain=True)


# --- the rich table -----------------------------------------------------------------------------


def test_rich_table_shows_the_same_numbers():
    result = sample_result(command="analyze")
    text = ANSI.sub("", rd.render(result, "table", width=200))
    assert BOX.search(text)
    lines = [line for line in text.splitlines() if "layers.0.weight" in line]
    assert len(lines) == len(FORMATS)
    for line, row in zip(lines, result.rows[:3], strict=True):
        for name in ("sqnr_db", "nsr", "mse", "max_abs_err", "mean_abs_err", "cosine", "clipped_frac"):
            assert rd.format_metric(name, row.metrics[name]) in line.split()


@pytest.mark.parametrize("width", [30, 80])
def test_rich_table_on_a_narrow_terminal_is_compact_and_keeps_numbers_whole(width):
    result = sample_result(command="analyze")
    text = ANSI.sub("", rd.render(result, "table", width=width))
    assert "dtype" not in text and "…" not in text  # compact: the descriptive columns go first
    sqnr = {rd.format_metric("sqnr_db", r.metrics["sqnr_db"]) for r in result.rows}
    assert sqnr <= set(text.split())
    assert "1.235e-05" not in text and "1.562e-02" in text  # rmse is not shown, max_abs_err is


def test_rich_table_reads_names_as_text_not_markup():
    tensor = TensorInfo("layers[0].w[bold]", "f.pt", (2,), "float32", 2, stats())
    text = ANSI.sub("", rd.render(sample_result(rows=(Row(tensor, "hif8", metrics(10.0)),)), "table"))
    assert "layers[0].w[bold]" in text


# --- Markdown -----------------------------------------------------------------------------------


def markdown_tables(text: str) -> dict[str, list[str]]:
    """Section heading -> its table lines."""
    tables: dict[str, list[str]] = {}
    for block in text.split("### ")[1:]:
        heading, _, body = block.partition("\n")
        tables[heading] = [line for line in body.splitlines() if line.startswith("|")]
    return tables


@pytest.mark.parametrize("view, sizes", [("analyze", (9, 3)), ("compare", (3, 3))])
def test_markdown_tables_have_one_line_per_row(view, sizes):
    tables = markdown_tables(rd.render(sample_result(), "markdown", view=view))
    assert [len(lines) - 2 for lines in tables.values()] == list(sizes)  # minus header and rule
    for lines in tables.values():
        pipes = {len(re.findall(r"(?<!\\)\|", line)) for line in lines}
        assert len(pipes) == 1  # the escaped pipe in ODD_NAME does not add a column
    assert "bias,with\\|pipe" in rd.render(sample_result(), "markdown")


# --- compare ------------------------------------------------------------------------------------


def test_compare_ranking_follows_rank():
    result = sample_result()
    _, ranking = plain_blocks(rd.render(result, "table", view="compare", plain=True))
    assert ranking[0][:3] == ["rank", "format", "bits_per_value"]
    assert [(cells[0], cells[1]) for cells in ranking[1:]] == [("1", "hif8"), ("2", "mxfp8_e4m3"), ("3", "mxfp4_e2m1")]
    rich_text = ANSI.sub("", rd.render(result, "table", view="compare"))
    ranking_text = rich_text[rich_text.index("ranking") :]
    assert ranking_text.index("hif8") < ranking_text.index("mxfp8_e4m3") < ranking_text.index("mxfp4_e2m1")


def test_compare_marks_the_best_format_per_tensor():
    result = sample_result()
    grid, _ = plain_blocks(rd.render(result, "table", view="compare", plain=True))
    assert grid[0] == ["tensor", *FORMATS]
    assert grid[1] == ["layers.0.weight", "33.07", "17.50", "40.25*"]
    assert grid[2] == [ODD_NAME, "inf*", "21.00", "inf*"]  # ties are all best
    assert grid[3] == ["scalar", "nan", "nan", "nan"]  # nothing to pick
    markdown = rd.render(result, "markdown", view="compare")
    assert "| layers.0.weight | 33.07 | 17.50 | 40.25* |" in markdown
    rich_text = rd.render(result, "table", view="compare")
    assert re.search(r"\x1b\[1;32m\s*40\.25\x1b\[0m", rich_text)  # bold green
    assert not re.search(r"\x1b\[1;32m\s*17\.50", rich_text)


def test_compare_best_follows_the_metric_direction():
    result = sample_result()
    grid, _ = plain_blocks(rd.render(result, "table", view="compare", metric="nsr", plain=True))
    nsr = [rd.format_metric("nsr", row.metrics["nsr"]) for row in result.rows[:3]]
    assert grid[1] == ["layers.0.weight", nsr[0], nsr[1], nsr[2] + "*"]  # the lowest NSR is best
    grid, _ = plain_blocks(rd.render(result, "table", view="compare", metric="clipped_frac", plain=True))
    assert not any(cell.endswith("*") for cells in grid for cell in cells)  # information, not a score


def test_a_name_in_two_files_is_shown_with_its_file():
    twin = TensorInfo("layers.0.weight", "other.safetensors", (2,), "float32", 2, stats())
    rows = (Row(WEIGHT, "hif8", metrics(30.0)), Row(twin, "hif8", metrics(31.0)))
    result = sample_result(rows=rows, formats=("hif8",), aggregates=())
    grid, _ = plain_blocks(rd.render(result, "table", view="compare", plain=True))
    assert [cells[0] for cells in grid[1:]] == [
        "model.safetensors:layers.0.weight",
        "other.safetensors:layers.0.weight",
    ]
    assert len(load_json(result)["tensors"]) == 2


# --- lines for stderr ---------------------------------------------------------------------------


def test_summary_line():
    result = sample_result()
    # bfloat16 4194304 x 2 B + float32 8 x 4 B + float16 1 x 2 B = 8388642 B
    assert rd.summary_line(result) == (
        "3 tensors (4.19 M elements, 8.39 MB) x 3 formats in 1.2 s; skipped 5 tensors (int64: not floating point)"
    )
    one = sample_result(rows=(Row(ODD, "hif8", metrics(10.0)),), formats=("hif8",), skipped=(), elapsed_s=0.042)
    assert rd.summary_line(one) == "1 tensor (8 elements, 32 B) x 1 format in 42 ms"
    mixed = sample_result(skipped=(Skipped("a", "f", "int64: not floating point"), Skipped("b", "f", "empty")))
    assert rd.summary_line(mixed).endswith("skipped 2 tensors (1 int64: not floating point, 1 empty)")


def test_violations_text():
    lines = rd.violations_text(sample_result()).splitlines()
    assert lines == [
        "violation: layers.0.weight @ mxfp4_e2m1: SQNR dB 17.50 is below the minimum 20.00",
        "violation: (all) @ mxfp4_e2m1: MSE 1.500e-03 is above the maximum 1.000e-04",
    ]
    assert rd.violations_text(sample_result(violations=())) == ""


# --- write_atomic -------------------------------------------------------------------------------


def test_write_atomic_writes_and_replaces(tmp_path):
    target = tmp_path / "report.csv"
    rd.write_atomic(target, "first\n")
    rd.write_atomic(str(target), "a,b\nü\n")
    assert target.read_bytes() == "a,b\nü\n".encode()
    assert os.listdir(tmp_path) == ["report.csv"]  # no temp file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_write_atomic_failure_raises_and_leaves_nothing(tmp_path):
    target = tmp_path / "out"
    target.mkdir()  # the rename onto a directory fails
    with pytest.raises(IsADirectoryError):
        rd.write_atomic(target, "data\n")
    assert os.listdir(tmp_path) == ["out"] and os.listdir(target) == []
    with pytest.raises(FileNotFoundError):
        rd.write_atomic(tmp_path / "missing" / "out.json", "{}\n")
    assert os.listdir(tmp_path) == ["out"]


def test_write_atomic_interrupted_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "out.json"
    target.write_text("old\n")

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(rd.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        rd.write_atomic(target, "new\n")
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["out.json"]
