"""fqtool batch: pass x kind x format tables over a seed dump tree, every cell checked against the
per-file metrics of fqtool analyze aggregated by hand; skipped files, outputs and bad options."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from fqtool import analysis, metrics
from fqtool import batch as bt
from fqtool.errors import InputError, UsageError

FORMATS = ("mxfp8_e4m3", "mxfp4_e2m1")
FORWARD = ("input", "weight", "query")
BACKWARD = ("grad_output", "grad_input")
LAYERS = (1, 2, 3)
UPDATE = "20250101_000000_iter000_linear_L1_update_pre_linear_bf16_rank00_input"

app = typer.Typer()
bt.register(app)


@app.callback()
def _root() -> None:
    """A local app: fqtool.cli registers the same module."""


def invoke(*args):
    return CliRunner().invoke(app, ["batch", *map(str, args)], env={"COLUMNS": "200"})


def _name(layer: int, op: str, kind: str, rank: int, iteration: int, megatron: bool) -> str:
    """Both generations of seed dump names (seed-utilities.md section 0.2)."""
    if megatron:  # global counter after the timestamp, group after the rank
        return f"20250923_100142_{rank + 1:04d}_iter{iteration:03d}_linear_L{layer}_{op}_pre_linear_bf16_rank{rank:02d}_group000_{kind}.pt"  # noqa: E501
    return f"20250101_000000_iter{iteration:03d}_linear_L{layer}_{op}_pre_linear_bf16_rank{rank:02d}_{kind}.pt"


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """3 layers x (3 forward + 2 backward kinds) x ranks 0-1 (old names, saver dicts) and rank 2
    (Megatron names, bare tensors), iterations 0 and 1 for rank 0: 4 files per layer, pass and kind.
    Scales differ per file, so a "last file wins" pivot would give other numbers."""
    root = tmp_path_factory.mktemp("dumps")
    (root / "bf16").mkdir()
    g = torch.Generator().manual_seed(3)
    for layer in LAYERS:
        for op, kinds in (("forward", FORWARD), ("backward", BACKWARD)):
            for kind in kinds:
                for rank, iteration, megatron in ((0, 0, False), (0, 1, False), (1, 0, False), (2, 0, True)):
                    x = torch.randn(16, 64, generator=g) * torch.exp(torch.randn(16, 64, generator=g) * (1 + rank))
                    path = root / "bf16" / _name(layer, op, kind, rank, iteration, megatron)
                    meta = {"operation": op, "layer_idx": layer, "tensor_name": kind, "rank": rank}
                    torch.save(x if megatron else {"tensor": x, "tensor_info": {}, "metadata": meta}, path)
    torch.save(torch.randn(32), root / "notes.pt")  # not a dump name
    torch.save(
        torch.randn(32), root / "20250101_000000_iter000_linear_forward_pre_linear_bf16_rank00_input.pt"
    )  # no layer
    torch.save(torch.randn(32), root / f"{UPDATE}.pt")  # a pass that is neither forward nor backward
    return root


@pytest.fixture(scope="module")
def per_file(tree):
    """What fqtool analyze says about every file: the truth each cell is built from."""
    return analysis.run("analyze", [str(tree)], FORMATS, device="cpu")


def by_hand(per_file, metric: str, how: str, layers=LAYERS) -> dict:
    """(pass, kind, format) -> (value, n), straight from the per-file rows."""
    groups: dict = {}
    for r in per_file.rows:
        m = r.tensor.meta
        if m.get("layer") in layers and m.get("operation") in ("forward", "backward") and "tensor_name" in m:
            groups.setdefault((m["operation"], m["tensor_name"], r.format), []).append(r)
    out = {}
    for key, rows in groups.items():
        vals = [r.metrics[metric] for r in rows]
        if how == "pooled":
            value = metrics.aggregate([r.metrics for r in rows], [r.tensor.numel for r in rows])[metric]
        else:
            value = {"mean": statistics.fmean, "median": statistics.median, "max": max, "min": min}[how](vals)
        out[key] = (value, len(rows))
    return out


def cells(b: bt.Batch) -> dict:
    return {(t.pass_, k, f): (c.value, c.n) for t in b.tables for (f, k), c in t.cells.items()}


@pytest.mark.parametrize(
    ("metric", "how", "layers", "selected"),
    [
        ("nsr", "mean", "all", LAYERS),
        ("sqnr_db", "median", "1-2", (1, 2)),
        ("mse", "max", "3", (3,)),
        ("nsr", "pooled", "1,3", (1, 3)),
        ("cosine", "min", "2-3", (2, 3)),
    ],
)
def test_every_cell_is_the_hand_aggregate_of_its_files(tree, per_file, metric, how, layers, selected):
    b = bt.run([str(tree)], FORMATS, layers=layers, metric=metric, aggregate=how, device="cpu")
    got, want = cells(b), by_hand(per_file, metric, how, selected)
    assert got.keys() == want.keys()
    for key, (value, n) in want.items():
        assert got[key][1] == n == 4 * len(selected)  # 4 files (ranks, iterations) per layer: none dropped
        assert got[key][0] == pytest.approx(value, rel=1e-12), key


def test_tables_per_pass_rows_formats_columns_kinds_in_order(tree):
    b = bt.run([str(tree)], FORMATS, layers="2", device="cpu")
    assert [t.pass_ for t in b.tables] == ["forward", "backward"]
    assert [t.kinds for t in b.tables] == [FORWARD, BACKWARD]
    assert all(t.formats == FORMATS for t in b.tables)
    cell = b.tables[0].cells[("mxfp4_e2m1", "query")]
    assert cell.over == {"layer": [2], "rank": [0, 1, 2], "iteration": [0, 1], "group": [0],
                         "layer_type": ["linear"], "phase": ["pre"], "component": ["linear"]}  # fmt: skip
    assert b.outside == 2 * 5 * 4  # the other two layers' files were not analysed
    assert len({r.tensor.file for r in b.rows}) == 5 * 4


def test_skipped_files_are_named(tree):
    b = bt.run([str(tree)], FORMATS, device="cpu")
    reasons = {s.name: s.reason for s in b.skipped}
    assert reasons == {
        "notes": "not a fake_quant_ops dump name",
        "20250101_000000_iter000_linear_forward_pre_linear_bf16_rank00_input": "no layer (_L<n>_)",
        UPDATE: "pass 'update' is not forward/backward",
    }
    r = invoke(tree, "--formats", "mxfp8_e4m3", "-d", "cpu", "--layers", "1")
    assert r.exit_code == 0, r.output
    assert "skipped 3 file(s): " in r.stderr and "notes (not a fake_quant_ops dump name)" in r.stderr
    assert "skipped" not in r.stdout


def test_json_output(tree, per_file):
    r = invoke(tree, "--formats", ",".join(FORMATS), "-d", "cpu", "-o", "json", "--metric", "sqnr_db")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["schema"] == bt.SCHEMA == "fqtool.batch/1"
    assert (doc["metric"], doc["aggregate"], doc["layers"]) == ("sqnr_db", "mean", "all")
    want = by_hand(per_file, "sqnr_db", "mean")
    for t in doc["tables"]:
        assert t["kinds"] == list(FORWARD if t["pass"] == "forward" else BACKWARD)
        for c in t["cells"]:
            value, n = want[(t["pass"], c["kind"], c["format"])]
            assert c["n"] == n and c["value"] == pytest.approx(value, rel=1e-12)
            assert c["over"]["layer"] == list(LAYERS)
    assert len(doc["samples"]) == 3 * 5 * 4 * len(FORMATS)
    assert {s["pass"] for s in doc["samples"]} == {"forward", "backward"}
    assert len(doc["skipped"]) == 3


def test_csv_markdown_and_plain_table(tree):
    args = (tree, "--formats", ",".join(FORMATS), "-d", "cpu", "--layers", "1-2")
    rows = list(csv.DictReader(io.StringIO(invoke(*args, "-o", "csv").stdout)))
    assert tuple(rows[0]) == bt.CSV_HEADER
    assert len(rows) == len(FORMATS) * (len(FORWARD) + len(BACKWARD))
    assert {r["layer"] for r in rows} == {"1;2"} and {r["n"] for r in rows} == {"8"}
    assert all(math.isfinite(float(r["value"])) for r in rows)

    md = invoke(*args, "-o", "markdown").stdout
    assert md.count("### ") == 2 and "### FORWARD: NSR (nsr), mean over layers 1-2, 8 file(s) per cell" in md
    assert "| format | input | weight | query |" in md

    plain = invoke(*args).stdout  # piped: plain columns, titles as comments, no cell with a space
    lines = [x for x in plain.splitlines() if x and not x.startswith("#")]
    assert lines[0].split() == ["format", *FORWARD]
    assert all(len(x.split()) == 4 for x in lines[:3])


def test_uneven_counts_show_n_per_cell(tree, tmp_path):
    """A cell with fewer files than the others says so (n=...)."""
    extra = tmp_path / "extra"
    extra.mkdir()
    name = _name(1, "forward", "input", 5, 0, False)
    torch.save({"tensor": torch.randn(8, 32), "metadata": {"operation": "forward"}}, extra / name)
    b = bt.run([str(tree), str(extra)], ("mxfp8_e4m3",), layers="1", device="cpu")
    fwd = b.tables[0]
    assert fwd.uniform_n is None and fwd.cells[("mxfp8_e4m3", "input")].n == 5
    text = bt.render_batch(b, "markdown")
    assert "(n=5)" in text and "(n=4)" in text


def test_dumps_of_several_quant_types_get_one_table_each(tmp_path):
    for qt in ("bf16", "mxfp8e4m3"):
        name = f"20250101_000000_iter000_linear_L1_forward_pre_linear_{qt}_rank00_input.pt"
        torch.save(torch.randn(8, 32), tmp_path / name)
    b = bt.run([str(tmp_path)], ("mxfp8_e4m3",), device="cpu")
    assert [(t.pass_, t.quant_type) for t in b.tables] == [("forward", "bf16"), ("forward", "mxfp8e4m3")]
    assert "FORWARD, dumps of mxfp8e4m3" in bt.render_batch(b, "markdown")


def test_bad_input_and_options_exit_2(tree, tmp_path):
    torch.save(torch.randn(4), tmp_path / "plain.pt")
    for extra, message in [
        ((tmp_path,), "no fake_quant_ops dump file with a layer"),
        ((tree, "--layers", "9"), "no dump file of layers 9"),
        ((tree, "--layers", "3-1"), "is not a range of layers"),
        ((tree, "--layers", "x"), "use all, a layer"),
        ((tree, "--aggregate", "mode"), "--aggregate 'mode'"),
        ((tree, "--metric", "snr"), "--metric 'snr'"),
        ((tree, "--formats", "mxfp9"), "format 'mxfp9'"),
    ]:
        r = invoke(*extra, "-d", "cpu")
        assert r.exit_code == 2, (extra, r.output)
        assert message in r.stderr and r.stderr.count("\n") == 1, r.stderr
        assert r.stdout == ""


def test_parse_layers():
    assert bt.parse_layers("all").layers is None
    assert bt.parse_layers(" 1-3, 7 ").layers == {1, 2, 3, 7}
    assert 5 in bt.parse_layers("all") and 5 not in bt.parse_layers("1-4")
    with pytest.raises(UsageError):
        bt.parse_layers("1-")
    with pytest.raises(InputError):
        bt.run(["/nonexistent/dumps"], FORMATS, device="cpu")
