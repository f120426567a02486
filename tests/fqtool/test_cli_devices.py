"""fqtool on a GPU: the same rows as on the CPU, to float64 rounding (run with -m cuda)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fqtool.cli import app

SAMPLES = Path(__file__).resolve().parents[2] / "sample_tensors"
FORMATS = "mxfp8_e4m3,mxfp6_e2m3,mxfp4_e2m1,mxint8,nvfp4,nf4,fp8_e4m3,hif8,hifx4_v12,int8sym,fp16,tmx4"

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _run(device: str) -> dict:
    r = CliRunner().invoke(app, ["compare", str(SAMPLES), "--formats", FORMATS, "-o", "json", "-d", device, "-q"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def _close(a, b) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    if isinstance(a, int) and isinstance(b, int):
        return a == b  # counts are exact
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-300)


@pytest.mark.cuda
@cuda
def test_cuda_rows_equal_cpu_rows():
    cpu, gpu = _run("cpu"), _run("cuda")
    assert gpu["device"].startswith("cuda")
    assert len(cpu["rows"]) == len(gpu["rows"])
    for rc, rg in zip(cpu["rows"], gpu["rows"], strict=True):
        assert (rc["tensor"], rc["format"]) == (rg["tensor"], rg["format"])
        for k, v in rc["metrics"].items():
            assert _close(v, rg["metrics"][k]), (rc["tensor"], rc["format"], k, v, rg["metrics"][k])
    for tc, tg in zip(cpu["tensors"], gpu["tensors"], strict=True):
        for k, v in tc["stats"].items():
            assert _close(v, tg["stats"][k]), (tc["name"], k)


@pytest.mark.cuda
@cuda
def test_cuda_index_device():
    r = CliRunner().invoke(app, ["analyze", str(SAMPLES / "weights.safetensors"), "-f", "hif8", "-d", "cuda:0", "-q"])
    assert r.exit_code == 0, r.output
    n = torch.cuda.device_count()
    r = CliRunner().invoke(app, ["analyze", str(SAMPLES / "weights.safetensors"), "-f", "hif8", "-d", f"cuda:{n}"])
    assert r.exit_code == 2 and "only" in r.stderr
