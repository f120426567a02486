"""The fqtool command line, through Typer's runner and as a subprocess: every command and output
format, exit codes, JSON that parses and agrees with the table, sharded and corrupt inputs, piping."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import kernels
from fqtool.cli import app
from fqtool.metrics import METRICS

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_tensors"
WEIGHTS = SAMPLES / "weights.safetensors"
INDEX = SAMPLES / "sharded" / "model.safetensors.index.json"


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def no_nonfinite(text: str) -> dict:
    def bad(c):
        raise ValueError(f"JSON constant {c} is not valid JSON")

    return json.loads(text, parse_constant=bad)


def num(v) -> float:
    return float(v) if isinstance(v, str) else v


def file_hashes(*paths: Path) -> dict[Path, str]:
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*")))]
    return {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.is_file()}


# --------------------------------------------------------------------------- info commands


def test_formats_lists_every_format():
    r = invoke("formats")
    assert r.exit_code == 0, r.output
    for spec in kernels.list_formats():
        assert str(spec) in r.stdout
    assert "8.25" in r.stdout  # mxfp8_e4m3 bits per value


def test_formats_as_json_and_csv():
    data = no_nonfinite(invoke("formats", "-o", "json").stdout)
    by_name = {d["format"]: d for d in data}
    assert by_name["mxfp4_e2m1"]["bits_per_value"] == 4.25
    rows = list(csv.DictReader(io.StringIO(invoke("formats", "-o", "csv").stdout)))
    assert len(rows) == len(kernels.list_formats())


def test_explain_shows_constants_and_values():
    r = invoke("explain", "mxfp4_e2m1")
    assert r.exit_code == 0, r.output
    assert "max_normal" in r.stdout and "6" in r.stdout
    doc = no_nonfinite(invoke("explain", "mxfp4_e2m1", "-o", "json").stdout)
    assert doc["values"]["unit_scale"] == [-6, -4, -3, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 3, 4, 6]
    assert doc["element"]["max_normal"] == 6.0 and doc["rules"]["bits_per_value"] == 4.25


def test_explain_unknown_format_is_exit_2_with_close_matches():
    r = invoke("explain", "mxfp4_e2m2")
    assert r.exit_code == 2
    assert r.stdout == ""
    line = r.stderr.strip()
    assert "\n" not in line and "mxfp4_e2m2" in line and "mxfp4_e2m1" in line


def test_env_reports_versions_and_backends():
    r = invoke("env")
    assert r.exit_code == 0, r.output
    assert torch.__version__ in r.stdout and "cpu-fast" in r.stdout


# --------------------------------------------------------------------------- analyze


def _analyze_json(*args) -> dict:
    r = invoke("analyze", *args, "-o", "json", "--device", "cpu")
    assert r.exit_code == 0, r.output
    return no_nonfinite(r.stdout)


def test_analyze_json_rows_equal_a_direct_computation():
    doc = _analyze_json(WEIGHTS, "-f", "mxfp4_e2m1", "-f", "hif8")
    tensors = load_file(WEIGHTS)
    assert doc["schema"] == "fqtool.analysis/1"
    assert len(doc["rows"]) == 2 * len(tensors)
    for row in doc["rows"]:
        x = tensors[row["tensor"]]
        q = kernels.fake_quantize(x, row["format"])
        d = q.double() - x.double()
        m = row["metrics"]
        assert num(m["mse"]) == pytest.approx(float(d.pow(2).mean()), rel=1e-9)
        assert num(m["max_abs_err"]) == float(d.abs().max())
        sqnr = 10 * math.log10(float(x.double().pow(2).sum() / d.pow(2).sum()))
        assert num(m["sqnr_db"]) == pytest.approx(sqnr, rel=1e-9)
        cos = float((x.double() * q.double()).sum() / (x.double().norm() * q.double().norm()))
        assert num(m["cosine"]) == pytest.approx(cos, rel=1e-12)
        flushed = int(((x != 0) & (q == 0)).sum())
        assert num(m["flushed_frac"]) == flushed / x.numel()
    agg = {a["format"]: a for a in doc["aggregates"]}
    assert set(agg) == {"mxfp4_e2m1", "hif8"}
    assert agg["mxfp4_e2m1"]["numel"] == sum(t.numel() for t in tensors.values())


def test_plain_table_agrees_with_json():
    args = (WEIGHTS, "-f", "mxfp8_e4m3", "--device", "cpu")
    doc = _analyze_json(*args)
    table = invoke("analyze", *args).stdout  # the runner is not a terminal: plain columns
    assert "\x1b[" not in table and "│" not in table and "┃" not in table
    for row in doc["rows"]:
        line = next(ln for ln in table.splitlines() if ln.split() and ln.split()[0] == row["tensor"])
        assert f"{num(row['metrics']['sqnr_db']):.2f}" in line.split()


def test_csv_has_a_stable_header_and_one_row_per_tensor_and_format():
    r = invoke("analyze", WEIGHTS, SAMPLES / "gradients.safetensors", "-f", "nvfp4,nf4", "-o", "csv", "-d", "cpu")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    header = r.stdout.splitlines()[0].split(",")
    assert header[:8] == ["kind", "tensor", "file", "format", "bits_per_value", "dtype", "shape", "numel"]
    assert [h for h in header if h in METRICS] == list(METRICS)
    n_tensors = len(load_file(WEIGHTS)) + len(load_file(SAMPLES / "gradients.safetensors"))
    assert sum(r["kind"] == "tensor" for r in rows) == 2 * n_tensors
    assert sum(r["kind"] == "aggregate" for r in rows) == 2


def test_markdown_output():
    r = invoke("analyze", WEIGHTS, "-f", "hif8", "-o", "markdown", "-d", "cpu")
    assert r.exit_code == 0, r.output
    assert r.stdout.count("\n|") >= len(load_file(WEIGHTS)) + 2


def test_sharded_checkpoint_through_its_index():
    doc = _analyze_json(INDEX, "-f", "mxfp6_e2m3")
    names = {t["name"] for t in doc["tensors"]}
    index = json.loads(INDEX.read_text())
    assert names == set(index["weight_map"])


def test_include_exclude_and_top():
    all_names = list(load_file(WEIGHTS))
    doc = _analyze_json(WEIGHTS, "-f", "hif8", "--exclude", all_names[0])
    assert {t["name"] for t in doc["tensors"]} == set(all_names[1:])
    doc = _analyze_json(WEIGHTS, "-f", "hif8", "--include", all_names[0])
    assert {t["name"] for t in doc["tensors"]} == {all_names[0]}
    doc = _analyze_json(WEIGHTS, "-f", "hif8,mxfp4_e2m1", "--top", "1")
    assert len({r["tensor"] for r in doc["rows"]}) == 1
    assert doc["aggregates"][0]["tensors"] == len(all_names)  # aggregates still cover every tensor
    worst = min(doc["rows"], key=lambda r: num(r["metrics"]["sqnr_db"]))
    full = _analyze_json(WEIGHTS, "-f", "hif8,mxfp4_e2m1")
    assert num(worst["metrics"]["sqnr_db"]) == min(num(r["metrics"]["sqnr_db"]) for r in full["rows"])


# --------------------------------------------------------------------------- compare


def test_compare_without_paths_runs_on_the_samples_and_ranks():
    r = invoke("compare", "--formats", "hif8,mxfp4_e2m1,mxfp8_e4m3", "-o", "json", "-d", "cpu")
    assert r.exit_code == 0, r.output
    doc = no_nonfinite(r.stdout)
    n_samples = sum(len(load_file(f)) for f in SAMPLES.rglob("*.safetensors"))
    assert len(doc["tensors"]) == n_samples  # the two shards are read once, through their index
    ranks = {a["format"]: a["rank"] for a in doc["aggregates"]}
    assert sorted(ranks.values()) == [1, 2, 3]
    by_rank = sorted(doc["aggregates"], key=lambda a: a["rank"])
    sq = [num(a["metrics"]["sqnr_db"]) for a in by_rank]
    assert sq == sorted(sq, reverse=True)
    assert ranks["mxfp8_e4m3"] < ranks["mxfp4_e2m1"]


def test_compare_table():
    r = invoke("compare", WEIGHTS, "--formats", "hif8,mxfp4", "-d", "cpu")
    assert r.exit_code == 0, r.output
    for name in load_file(WEIGHTS):
        assert name in r.stdout
    assert "hif8" in r.stdout and "mxfp4" in r.stdout


# --------------------------------------------------------------------------- gates and exit codes


def test_min_snr_gate():
    r = invoke("analyze", WEIGHTS, "-f", "mxfp4_e2m1", "--min-snr", "200", "-d", "cpu")
    assert r.exit_code == 1
    assert r.stdout  # the result is still printed
    assert "mxfp4_e2m1" in r.stderr and "sqnr" in r.stderr.lower()
    assert invoke("analyze", WEIGHTS, "-f", "mxfp4_e2m1", "--min-snr", "1", "-d", "cpu").exit_code == 0


def test_max_mse_gate():
    assert invoke("analyze", WEIGHTS, "-f", "mxfp4_e2m1", "--max-mse", "1e-30", "-d", "cpu").exit_code == 1
    assert invoke("analyze", WEIGHTS, "-f", "mxfp4_e2m1", "--max-mse", "1", "-d", "cpu").exit_code == 0


def _one_line_error(r, *words):
    assert r.exit_code == 2, r.output
    assert r.stdout == ""
    err = r.stderr.strip()
    assert "\n" not in err and "Traceback" not in err, err
    for w in words:
        assert w in err, err


def test_missing_file(tmp_path):
    _one_line_error(invoke("analyze", tmp_path / "nope.safetensors", "-f", "hif8"), "nope.safetensors")


def test_wrong_extension(tmp_path):
    p = tmp_path / "w.txt"
    p.write_text("hello")
    _one_line_error(invoke("analyze", p, "-f", "hif8"), "w.txt")


def test_unknown_format():
    _one_line_error(invoke("analyze", WEIGHTS, "-f", "mxfp9"), "mxfp9")


def test_corrupt_and_truncated_safetensors_write_nothing(tmp_path):
    good = tmp_path / "good.safetensors"
    save_file({"w": torch.randn(64, 64)}, good)
    truncated = tmp_path / "trunc.safetensors"
    truncated.write_bytes(good.read_bytes()[:-100])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    for bad in (truncated, garbage):
        out = tmp_path / "out.json"
        r = invoke("analyze", good, bad, "-f", "hif8", "--output", out)
        _one_line_error(r, bad.name)
        assert not out.exists()
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".") or "tmp" in p.name] == []


def test_empty_tensor_is_an_error_that_names_it(tmp_path):
    p = tmp_path / "e.safetensors"
    save_file({"ok": torch.randn(8), "empty": torch.zeros(0, 4)}, p)
    _one_line_error(invoke("analyze", p, "-f", "hif8"), "empty")
    assert invoke("analyze", p, "-f", "hif8", "--exclude", "empty", "-d", "cpu").exit_code == 0


def test_scalar_tensors_are_analysed(tmp_path):
    """A 0-d tensor (a loss scale saved with the weights) is analysed as one element in every family."""
    p = tmp_path / "s.safetensors"
    save_file({"scale": torch.tensor(2.5), "w": torch.randn(4, 8)}, p)
    fmts = "mxfp8_e4m3,mxfp4,nvfp4,nf4,fp8_e4m3,int8sym,hif8,hifx4_v12,tmx4,bf16"
    r = invoke("analyze", p, "-f", fmts, "-d", "cpu", "-o", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [t["shape"] for t in doc["tensors"] if t["name"] == "scale"] == [[]]
    rows = [row for row in doc["rows"] if row["tensor"] == "scale"]
    assert len(rows) == 10 and all(row["metrics"]["mse"] >= 0 for row in rows)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_missing_cuda_device():
    _one_line_error(invoke("analyze", WEIGHTS, "-f", "hif8", "--device", "cuda"), "cuda")


def test_missing_npu_device():
    try:
        import torch_npu  # noqa: F401

        pytest.skip("torch_npu is installed")
    except ImportError:
        pass
    _one_line_error(invoke("analyze", WEIGHTS, "-f", "hif8", "--device", "npu"), "torch_npu")


def test_bad_output_format():
    _one_line_error(invoke("analyze", WEIGHTS, "-f", "hif8", "-o", "yaml"), "yaml")


def test_unwritable_output_leaves_nothing(tmp_path):
    r = invoke("analyze", WEIGHTS, "-f", "hif8", "-d", "cpu", "--output", tmp_path / "missing_dir" / "out.json")
    assert r.exit_code == 2
    assert not (tmp_path / "missing_dir").exists()


def test_nan_and_inf_in_data_are_reported_not_fatal(tmp_path):
    x = torch.randn(128, 64)
    x[0, 0] = float("nan")
    x[5, 3] = float("inf")
    p = tmp_path / "nan.safetensors"
    save_file({"w": x, "steps": torch.arange(4)}, p)
    doc = _analyze_json(p, "-f", "mxfp8_e4m3")
    (row,) = doc["rows"]
    assert row["metrics"]["nan_in"] == 1 and row["metrics"]["inf_in"] == 1
    assert math.isfinite(num(row["metrics"]["mse"]))
    assert [s["name"] for s in doc["skipped"]] == ["steps"]  # not floating: skipped and counted


def test_output_file_and_inputs_unchanged(tmp_path):
    before = file_hashes(SAMPLES)
    out = tmp_path / "r.csv"
    r = invoke("compare", "--formats", "nvfp4,hif8", "--output", out, "-d", "cpu")
    assert r.exit_code == 0, r.output
    assert r.stdout == ""
    assert out.read_text().startswith("kind,tensor,")  # format taken from the suffix
    assert file_hashes(SAMPLES) == before


def test_seed_dump_files(tmp_path):
    name = "20250923_100142_0001_iter000_linear_L1_forward_pre_linear_bf16_rank00_group000_input.pt"
    torch.save(
        {"tensor": torch.randn(16, 64).bfloat16(), "tensor_info": {}, "metadata": {"phase": "pre"}}, tmp_path / name
    )
    torch.save(torch.randn(32), tmp_path / "bare.pt")
    doc = _analyze_json(tmp_path, "-f", "mxfp8_e4m3")
    metas = {t["name"]: t for t in doc["tensors"]}
    assert metas[Path(name).stem]["meta"]["layer"] == 1
    assert metas[Path(name).stem]["dtype"] == "bfloat16"
    assert "bare" in metas


# --------------------------------------------------------------------------- as a subprocess


def _fqtool_cmd() -> list[str]:
    return [sys.executable, "-m", "fqtool"]


def _sub(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(_fqtool_cmd() + [str(a) for a in args], capture_output=True, text=True, timeout=300, **kw)


def test_python_dash_m_and_piping_json():
    cmd = _fqtool_cmd() + ["compare", "--formats", "hif8,mxfp4", "-o", "json", "-d", "cpu"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd="/")
    assert r.returncode == 0, r.stderr
    doc = no_nonfinite(r.stdout)
    assert {a["format"] for a in doc["aggregates"]} == {"hif8", "mxfp4"}
    assert "tensors" in r.stderr  # the summary line goes to stderr, never into the data


def test_piped_table_is_plain():
    cmd = _fqtool_cmd() + ["analyze", str(WEIGHTS), "-f", "hif8", "-d", "cpu", "-q"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "\x1b[" not in r.stdout and r.stderr == ""


def test_subprocess_exit_codes():
    bad = subprocess.run(
        _fqtool_cmd() + ["analyze", "/nonexistent.safetensors", "-f", "hif8"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and bad.stdout == "" and len(bad.stderr.strip().splitlines()) == 1
    gate = _sub("analyze", WEIGHTS, "-f", "mxfp4_e2m1", "--min-snr", "99", "-d", "cpu")
    assert gate.returncode == 1
    usage = _sub("analyze")
    assert usage.returncode == 2


@pytest.mark.skipif(shutil.which("fqtool") is None, reason="the fqtool console script is not installed")
def test_console_script():
    r = subprocess.run(["fqtool", "formats", "-o", "json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and no_nonfinite(r.stdout)


def test_metric_help_lists_every_metric():
    r = invoke("analyze", "--help")
    text = re.sub(r"\s+", " ", r.stdout)
    for m in METRICS.values():
        assert m.name in text


def test_debug_env_gives_traceback(tmp_path):
    env = dict(os.environ, FQTOOL_DEBUG="1")
    r = subprocess.run(
        _fqtool_cmd() + ["analyze", str(tmp_path / "x.npy"), "-f", "hif8"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_progress_shows_only_on_a_terminal_and_only_for_long_runs(monkeypatch):
    from fqtool import options

    assert not options.ProgressOnStderr(enabled=True, delay_s=0).enabled  # stderr is not a terminal here
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    long_run = options.ProgressOnStderr(enabled=True, delay_s=0)
    long_run(0, 3, 0, 300, "a")
    assert long_run.bar is not None
    long_run(3, 3, 300, 300, "")
    assert long_run.bar is None  # closed at the end
    short_run = options.ProgressOnStderr(enabled=True, delay_s=60)
    short_run(0, 3, 0, 300, "a")
    assert short_run.bar is None
    assert not options.ProgressOnStderr(enabled=False, delay_s=0).enabled  # --quiet
