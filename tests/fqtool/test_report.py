"""fqtool report: the three files (self-contained HTML, Markdown for a job summary, JSON equal to
compare's), the baseline diff and its exit codes, threshold files, and the schema dispatch."""

from __future__ import annotations

import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
import typer
from safetensors.torch import save_file
from typer.testing import CliRunner

import fqtool
from fqtool import analysis, render
from fqtool import report as rp
from fqtool.errors import InputError, UsageError
from fqtool.results import SCHEMA

FORMATS = ("mxfp8_e4m3", "mxfp4_e2m1")
TENSORS = ("blocks.0.attn.weight", "blocks.0.mlp.input", "blocks.0.norm.bias")

app = typer.Typer()
rp.register(app)


@app.callback()
def _root() -> None:
    """A local app: fqtool.cli registers the same module."""


def invoke(*args) -> object:
    return CliRunner().invoke(app, ["report", *map(str, args)])


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    g = torch.Generator().manual_seed(7)
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    heavy = torch.randn(32, 64, generator=g) * torch.exp(torch.randn(32, 64, generator=g))
    save_file(
        {TENSORS[0]: torch.randn(64, 64, generator=g), TENSORS[1]: heavy, TENSORS[2]: torch.randn(64, generator=g)},
        str(path),
    )
    return path


def args(model: Path, out: Path, *extra) -> list:
    return [model, "--formats", ",".join(FORMATS), "--output-dir", out, "-d", "cpu", *extra]


@pytest.fixture(scope="module")
def first(model, tmp_path_factory) -> Path:
    """One full report (real figures) that the file-format tests read."""
    out = tmp_path_factory.mktemp("rep") / "report"
    r = invoke(*args(model, out))
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def result(model):
    return analysis.run("compare", [str(model)], FORMATS, device="cpu")


@pytest.fixture
def fast_figures(monkeypatch):
    """The gate tests need the diff and exit codes, not the figures: a 1x1 PNG stands in."""
    png = bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
    monkeypatch.setattr(rp, "FIGURES", {k: (lambda rep: png) for k in rp.FIGURES})


def baseline_from(doc: dict, path: Path, edit=None) -> Path:
    doc = json.loads(json.dumps(doc))
    if edit:
        edit(doc)
    path.write_text(json.dumps(doc))
    return path


def row_of(doc: dict, tensor: str, fmt: str) -> dict:
    return next(r for r in doc["rows"] if r["tensor"] == tensor and r["format"] == fmt)


# --------------------------------------------------------------------------- the files


class _Html(HTMLParser):
    VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source", "wbr"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.refs, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            if key in a:
                self.refs.append((tag, key, a[key]))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def test_report_writes_three_files_and_nothing_else(first):
    assert sorted(p.name for p in first.iterdir()) == sorted(rp.FILES)
    assert not list(first.parent.glob(".*tmp"))  # the temp directory was renamed, not left behind


def test_html_is_self_contained_and_well_formed(first):
    text = (first / "report.html").read_text()
    p = _Html()
    p.feed(text)
    p.close()
    assert not p.errors and p.stack == []
    imgs = [v for tag, _, v in p.refs if tag == "img"]
    assert len(imgs) == len(rp.FIGURES)
    assert all(v.startswith("data:image/png;base64,") for v in imgs)
    assert all(tag == "img" for tag, _, _ in p.refs)  # no <link href>, no <script src>, no anchors out
    assert not re.search(r"https?://", text)
    assert "<style>" in text and "<script>" in text
    body = "".join(p.text)
    for name in (*TENSORS, *FORMATS, fqtool.__version__, "cpu", "model.safetensors"):
        assert name in body


def test_html_figures_are_real_pngs(first):
    import base64

    text = (first / "report.html").read_text()
    for data in re.findall(r'src="data:image/png;base64,([^"]+)"', text):
        png = base64.b64decode(data)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def md_tables(text: str) -> list[list[list[str]]]:
    tables, cur = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            cur.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
        elif cur:
            tables.append(cur)
            cur = []
    return tables + ([cur] if cur else [])


def test_markdown_has_summary_ranking_and_collapsed_tensor_table(first):
    text = (first / "report.md").read_text()
    assert text.startswith("## fqtool report\n")
    assert "**pass**" in text
    tables = md_tables(text)
    ranking, tensors = tables
    assert ranking[0][:3] == ["rank", "format", "bits/value"]
    assert {r[1] for r in ranking[2:]} == set(FORMATS)
    assert all(re.fullmatch(r":?---:?", c) for c in ranking[1])
    assert len(tensors) == 2 + len(TENSORS) * len(FORMATS)
    assert all(len(r) == len(tensors[0]) for t in tables for r in t if t is tensors)
    assert "<details><summary>" in text and "</details>" in text


def test_results_json_is_compare_json_plus_the_report_section(first, result):
    doc = json.loads((first / "results.json").read_text())
    section = doc.pop("report")
    expected = render.to_json(result)
    for d in (doc, expected):
        d.pop("elapsed_s")
    assert doc == expected
    assert doc["schema"] == SCHEMA
    assert section["baseline"] is None and section["passed"] is True
    assert section["thresholds"]["defaults"]["sqnr_db"] == "0.1"


def test_markdown_is_cut_to_fit_with_a_note(result):
    rep = rp.build(result)
    full = rp.to_markdown(rep)
    small = rp.to_markdown(rep, max_bytes=len(full.encode()) - 200)
    assert len(small.encode()) <= len(full.encode()) - 200
    assert "more rows not shown here" in small
    assert rp.MAX_MARKDOWN_BYTES <= 1024 * 1024


# --------------------------------------------------------------------------- baseline diff


def test_identical_baseline_has_no_regressions(first, model, tmp_path, fast_figures):
    out = tmp_path / "again"
    r = invoke(*args(model, out, "--baseline", first / "results.json"))
    assert r.exit_code == 0, r.output
    section = json.loads((out / "results.json").read_text())["report"]
    assert section["summary"] == {"matched": 6, "regressions": 0, "improvements": 0, "new": 0, "missing": 0}
    assert section["regressions"] == [] and section["passed"]
    assert len(section["diff"]) == 6 and all(not d["regressions"] for d in section["diff"])
    assert "0 regressions" in (out / "report.md").read_text()


def _better_baseline(doc):
    """A baseline that was better than today on three metrics of one row."""
    row = row_of(doc, TENSORS[0], "mxfp4_e2m1")["metrics"]
    row["sqnr_db"] += 0.5  # today dropped 0.5 dB: beyond 0.1
    row["mse"] /= 1.05  # today's MSE is 5% higher: beyond 1%
    row["cosine"] = min(1.0, row["cosine"] + 1e-3)
    row["nsr"] /= 2  # not gated by default: never a regression


def test_worse_current_is_a_regression_exit_1(first, model, tmp_path, fast_figures):
    base = baseline_from(json.loads((first / "results.json").read_text()), tmp_path / "base.json", _better_baseline)
    out = tmp_path / "rep"
    r = invoke(*args(model, out, "--baseline", base))
    assert r.exit_code == 1, r.output
    section = json.loads((out / "results.json").read_text())["report"]
    regs = section["regressions"]
    assert {(g["tensor"], g["format"], g["metric"]) for g in regs} == {
        (TENSORS[0], "mxfp4_e2m1", m) for m in ("sqnr_db", "mse", "cosine")
    }
    sqnr = next(g for g in regs if g["metric"] == "sqnr_db")
    assert sqnr["delta"] == pytest.approx(-0.5) and sqnr["threshold"] == "0.1"
    lines = [x for x in r.stderr.splitlines() if x.startswith("regression:")]
    assert len(lines) == 3 and all(TENSORS[0] in x and "mxfp4_e2m1" in x for x in lines)
    md = (out / "report.md").read_text()
    assert "**fail**" in md and md.index("### Regressions (3)") < md.index("### Ranking")
    assert 'class="status fail"' in (out / "report.html").read_text()


def test_better_current_is_an_improvement_exit_0(first, model, tmp_path, fast_figures):
    def worse(doc):
        row_of(doc, TENSORS[1], "mxfp8_e4m3")["metrics"]["sqnr_db"] -= 3
        row_of(doc, TENSORS[1], "mxfp8_e4m3")["metrics"]["clipped_frac"] += 0.01

    base = baseline_from(json.loads((first / "results.json").read_text()), tmp_path / "base.json", worse)
    out = tmp_path / "rep"
    r = invoke(*args(model, out, "--baseline", base))
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "results.json").read_text())["report"]["summary"]
    assert summary["regressions"] == 0 and summary["improvements"] == 2


def test_thresholds_file_overrides_defaults_and_rules(first, model, tmp_path, fast_figures):
    base = baseline_from(json.loads((first / "results.json").read_text()), tmp_path / "base.json", _better_baseline)
    loose = tmp_path / "loose.toml"
    loose.write_text('sqnr_db = 1.0\nmse = "10%"\ncosine = "off"\n')
    r = invoke(*args(model, tmp_path / "a", "--baseline", base, "--thresholds", loose))
    assert r.exit_code == 0, r.output

    # A rule for the mxfp4 rows tightens SQNR again; the later rule wins over the earlier one.
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({
        "sqnr_db": 1.0, "mse": "10%", "cosine": False,
        "rules": [
            {"format": "mxfp4*", "sqnr_db": 5},
            {"tensor": "blocks.0.attn.*", "format": "mxfp4*", "sqnr_db": 0.2},
        ],
    }))  # fmt: skip
    r = invoke(*args(model, tmp_path / "b", "--baseline", base, "--thresholds", rules))
    assert r.exit_code == 1, r.output
    regs = json.loads((tmp_path / "b" / "results.json").read_text())["report"]["regressions"]
    assert [(g["metric"], g["threshold"]) for g in regs] == [("sqnr_db", "0.2")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sqnr = 1", "unknown key 'sqnr'"),
        ("sqnr_db = -1", "finite number >= 0"),
        ('mse = "lots"', "is not a limit"),
        ("rules = 3", "list of tables"),
        ("sqnr_db = ", "not valid TOML"),
    ],
)
def test_bad_thresholds_file_is_a_usage_error(tmp_path, text, message):
    path = tmp_path / "t.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=re.escape(message)):
        rp.load_thresholds(path)


def test_missing_and_new_tensors_are_listed_not_failed_unless_strict(first, model, tmp_path, fast_figures):
    def edit(doc):
        doc["rows"] = [r for r in doc["rows"] if r["tensor"] != TENSORS[2]]
        doc["rows"].append({"tensor": "gone.weight", "file": "old.safetensors", "format": "mxfp8_e4m3",
                            "metrics": {"sqnr_db": 30.0}})  # fmt: skip
        doc["formats"].append({"format": "nvfp4", "bits_per_value": 4.5})
        doc["rows"].append({"tensor": TENSORS[0], "file": "x", "format": "nvfp4", "metrics": {"sqnr_db": 20.0}})

    base = baseline_from(json.loads((first / "results.json").read_text()), tmp_path / "base.json", edit)
    r = invoke(*args(model, tmp_path / "a", "--baseline", base))
    assert r.exit_code == 0, r.output
    md = (tmp_path / "a" / "report.md").read_text()
    assert f"new tensors (1, not in the baseline): `{TENSORS[2]}`" in md
    assert "missing tensors (1, in the baseline only): `gone.weight`" in md
    assert "missing formats (in the baseline only): `nvfp4`" in md
    section = json.loads((tmp_path / "a" / "results.json").read_text())["report"]
    assert section["missing_formats"] == ["nvfp4"] and section["summary"]["new"] == 2
    assert {m["tensor"] for m in section["missing"]} == {"gone.weight", TENSORS[0]}

    r = invoke(*args(model, tmp_path / "b", "--baseline", base, "--strict"))
    assert r.exit_code == 1 and "--strict" in r.stderr


def test_unknown_schema_is_refused_clearly(model, tmp_path):
    for doc, message in [
        ({"schema": "fqtool.analysis/9", "fqtool_version": "3.0", "rows": []},
         "has schema 'fqtool.analysis/9'; this fqtool (0.1.0) reads fqtool.analysis/1: it is newer (written by "
         "fqtool 3.0); upgrade fqtool"),
        ({"schema": "fqtool.analysis/0", "rows": []}, "reads fqtool.analysis/1: it is older; re-run the baseline"),
        ({"schema": "fqtool.batch/1", "tables": []}, "has schema 'fqtool.batch/1'; this fqtool (0.1.0) reads"),
        ({"rows": []}, 'is not fqtool results JSON (no "schema" field)'),
        ([1, 2], "is not fqtool results JSON"),
    ]:  # fmt: skip
        base = tmp_path / "base.json"
        base.write_text(json.dumps(doc))
        out = tmp_path / "rep"
        r = invoke(*args(model, out, "--baseline", base))
        assert r.exit_code == 2, r.output
        line = r.stderr.strip()
        assert line.count("\n") == 0 and str(base) in line and message in line, line
        assert not out.exists()  # refused before anything was analysed or written
    base.write_text("{not json")
    r = invoke(*args(model, out, "--baseline", base))
    assert r.exit_code == 2 and "is not JSON" in r.stderr


def test_minimal_handwritten_v1_baseline_is_accepted(result, tmp_path):
    base = tmp_path / "mini.json"
    base.write_text(json.dumps({
        "schema": "fqtool.analysis/1",
        "rows": [{"tensor": TENSORS[0], "format": "mxfp8_e4m3", "metrics": {"sqnr_db": "inf", "nan_out": 0}}],
    }))  # fmt: skip
    rep = rp.build(result, base)
    assert len(rep.diff.pairs) == 1 and len(rep.diff.new) == len(result.rows) - 1
    # inf dB (exact) in the baseline, finite today: a drop beyond any limit
    assert [(c.metric, c.baseline) for c in rep.regressions] == [("sqnr_db", math.inf)]
    assert rp.to_markdown(rep) and rp.to_json(rep)["report"]["regressions"][0]["baseline"] == "inf"


def test_upgrade_table_is_one_entry_per_version(result, tmp_path, monkeypatch):
    def from_0(doc):  # a pretend previous schema that called the rows "results"
        return {**doc, "schema": "fqtool.analysis/1", "rows": doc["results"]}

    monkeypatch.setitem(rp.UPGRADES, "fqtool.analysis/0", ("fqtool.analysis/1", from_0))
    base = tmp_path / "old.json"
    base.write_text(json.dumps({
        "schema": "fqtool.analysis/0",
        "results": [{"tensor": TENSORS[0], "format": "mxfp8_e4m3", "metrics": {"sqnr_db": 1000.0}}],
    }))  # fmt: skip
    assert rp.readable_schemas() == ["fqtool.analysis/1", "fqtool.analysis/0"]
    assert len(rp.build(result, base).diff.pairs) == 1
    base.write_text(json.dumps({"schema": "fqtool.analysis/7", "rows": []}))
    with pytest.raises(InputError, match="reads fqtool.analysis/1 and fqtool.analysis/0"):
        rp.load_baseline(base)


def test_rows_match_by_name_and_format_with_the_file_as_tiebreak(result):
    rows = [r for r in result.rows if r.tensor.name == TENSORS[0]]
    from dataclasses import replace

    twin = [replace(r, tensor=replace(r.tensor, file="/ci/other/b.safetensors")) for r in rows]
    base = [rp.BaselineRow(r.tensor.name, "/old/checkout/b.safetensors", r.format, {}) for r in rows]
    base += [rp.BaselineRow(r.tensor.name, "/old/checkout/model.safetensors", r.format, {}) for r in rows]
    pairs, new, gone = rp.match(rows + twin, base)
    assert not new and not gone
    assert all(Path(r.tensor.file).name == Path(b.file).name for r, b in pairs)
    # A single row on each side matches whatever the paths.
    pairs, new, gone = rp.match(rows[:1], base[:1])
    assert len(pairs) == 1


@pytest.mark.parametrize(
    ("metric", "base", "cur", "regression"),
    [
        ("sqnr_db", 30.0, 29.95, False),
        ("sqnr_db", 30.0, 29.8, True),
        ("sqnr_db", math.inf, math.inf, False),
        ("sqnr_db", 30.0, math.nan, True),
        ("sqnr_db", math.nan, 30.0, False),
        ("mse", 0.0, 0.0, False),
        ("mse", 0.0, 1e-30, True),
        ("mse", 1.0, 1.009, False),
        ("mse", 1.0, 1.02, True),
        ("clipped_frac", 0.01, 0.0105, False),
        ("clipped_frac", 0.01, 0.0115, True),
        ("nan_out", 0, 1, True),
        ("max_abs_err", 1.0, 100.0, False),  # not gated by default
    ],
)
def test_regression_rule_per_metric(metric, base, cur, regression):
    limit = rp.DEFAULT_THRESHOLDS[metric]
    c = rp.Change("t", "f", "mxfp8_e4m3", metric, base, cur, limit, False)
    assert (limit is not None and rp._worse_by(c) > limit.value) is regression


def test_gates_and_bad_output_dir(first, model, tmp_path, fast_figures):
    out = tmp_path / "gated"
    r = invoke(*args(model, out, "--min-snr", "100"))
    assert r.exit_code == 1 and "violation:" in r.stderr
    assert (out / "report.md").exists() and "### Gate violations" in (out / "report.md").read_text()

    (tmp_path / "file").write_text("x")
    r = invoke(*args(model, tmp_path / "file"))
    assert r.exit_code == 2 and "is a file" in r.stderr

    # A report written into an existing directory keeps the other files there.
    keep = tmp_path / "existing"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    assert invoke(*args(model, keep)).exit_code == 0
    assert (keep / "notes.txt").read_text() == "mine" and (keep / "report.html").exists()

    # Reading a report's own results.json as the baseline would overwrite it: refused.
    r = invoke(*args(model, keep, "--baseline", keep / "results.json"))
    assert r.exit_code == 2 and "would be overwritten" in r.stderr
