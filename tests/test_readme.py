"""The README's quick-start commands work, and CI runs the README's test command."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _quick_start_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, flags=re.S)


def test_quick_start_has_the_two_commands():
    main_job, tests = _quick_start_blocks()[:2]
    assert main_job.startswith("pip install -e . && ")
    assert tests.strip() == "pip install -e '.[dev]' && python -m pytest -q"


def test_main_job_command_runs():
    main_job = _quick_start_blocks()[0].removeprefix("pip install -e . && ").strip()
    assert main_job.startswith("fqtool compare ")
    args = main_job.split()[1:]
    r = subprocess.run([sys.executable, "-m", "fqtool", *args], cwd="/", capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    formats = args[args.index("--formats") + 1].split(",")
    for f in formats:
        assert f in r.stdout
    assert "rank" in r.stdout  # the aggregate ranking follows the per-tensor grid
    assert "tensors" in r.stderr  # the summary line


def test_usage_examples_name_real_commands_options_and_formats():
    """Every `fqtool ...` example line in "Using fqtool" names a real command, real options of that
    command and real formats."""
    import typer

    import kernels
    from fqtool.cli import app

    commands = typer.main.get_command(app).commands
    text = (REPO / "README.md").read_text()
    section = text.split("## Using fqtool", 1)[1].split("\n## ", 1)[0]
    lines = [ln for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S) for ln in block.splitlines()]
    examples = [ln.split("#", 1)[0].split("||")[0].split("|")[0].split() for ln in lines if ln.startswith("fqtool ")]
    assert len(examples) >= 15
    for words in examples:
        assert words[1] in commands, words
        opts = {o for p in commands[words[1]].params for o in (*p.opts, *p.secondary_opts)}
        for w in words[2:]:
            if w.startswith("-"):
                assert w.split("=")[0] in opts, (words, w)
        for flag in ("-f", "--format", "--formats"):
            if flag in words:
                for f in words[words.index(flag) + 1].split(","):
                    kernels.parse(f)


def test_readme_metric_table_is_the_code_s():
    from fqtool.metrics import markdown_table

    assert markdown_table() in (REPO / "README.md").read_text()


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    assert "python3 -m pip install -q -e '.[dev]' && python3 -m pytest -q" in ci


def test_readme_documents_every_json_key():
    from typer.testing import CliRunner

    from fqtool.cli import app

    r = CliRunner().invoke(
        app, ["analyze", str(REPO / "sample_tensors" / "weights.safetensors"), "-f", "hif8", "-o", "json"]
    )
    doc = json.loads(r.stdout)
    text = (REPO / "README.md").read_text()
    section = text.split("### JSON output", 1)[1].split("\n## ", 1)[0]
    for key in doc:
        assert f"`{key}`" in section, key
    for key in doc["tensors"][0]:
        assert key in section, key


def test_readme_lists_the_top_level_keys_of_every_other_json(tmp_path):
    from typer.testing import CliRunner

    from fqtool.cli import app

    samples = REPO / "sample_tensors"
    weights = str(samples / "weights.safetensors")
    log = tmp_path / "a.log"
    log.write_text("".join(f" iteration {i:5d}/  20 | lm loss: {5 - i / 10:.4E} |\n" for i in range(1, 21)))
    runs = {
        "fqtool.hist/1": ["hist", weights, "-f", "mxfp4_e2m1", "--no-figures", "-o", "json", "-q"],
        "fqtool.sweep/1": ["sweep", weights, "-f", "mxfp4_e2m1", "--offsets", "0:1", "-o", "json", "-q"],
        "fqtool.outliers/1": ["outliers", weights, "-o", "json", "-q"],
        "fqtool.loss/1": ["plot-loss", str(log), "-b", str(log), "--no-figure", "-o", "json", "-q"],
    }
    section = (REPO / "README.md").read_text().split("### The other JSON documents", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip().strip("`"): line for line in section.splitlines() if line.startswith("| `")}
    common = {"schema", "fqtool_version", "command", "inputs", "device", "elapsed_s"}
    for schema, args in runs.items():
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 0, r.output
        doc = json.loads(r.stdout)
        assert doc["schema"] == schema
        for key in set(doc) - common:
            assert f"`{key}`" in rows[schema], (schema, key)
