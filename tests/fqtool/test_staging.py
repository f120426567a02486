"""fqtool.staging: tensors streamed to a CUDA device through pinned buffers (run with -m cuda)."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from fqtool import analysis
from fqtool.errors import InputError
from fqtool.io import scan
from fqtool.staging import stream_to_cuda

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    a = {
        "w.bf16": torch.randn(300, 257, generator=g).to(torch.bfloat16),
        "w.f32": torch.randn(1000, 33, generator=g),
        "w.f64": torch.randn(17, generator=g).double(),
        "w.fp8": torch.randn(64, 64, generator=g).to(torch.float8_e4m3fn),
        "scalar": torch.tensor(2.5),
        "ids": torch.arange(10),  # skipped: not floating point
    }
    b = {"w.f16": torch.randn(5, 7, 9, generator=g).half(), "big": torch.randn(2048, 1024, generator=g)}
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file(b, str(tmp_path / "b.safetensors"))
    np.save(tmp_path / "c.npy", np.arange(12, dtype=np.float32).reshape(3, 4))
    return tmp_path


def _digest(files) -> list[str]:
    return [hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in sorted(files)]


@pytest.mark.parametrize(("chunk", "ring", "budget"), [(4096, 2, 1), (1 << 20, 4, None), (1000, 3, 1 << 30)])
def test_streamed_tensors_equal_loaded_ones(checkpoint, chunk, ring, budget):
    files = list(checkpoint.iterdir())
    before = _digest(files)
    sources, skipped = scan([str(checkpoint)], (), ())
    assert [s.name for s in skipped] == ["ids"]
    seen = []
    for src, x in stream_to_cuda(sources, torch.device("cuda"), chunk=chunk, ring=ring, budget=budget):
        want = src.load()
        assert x.device.type == "cuda" and x.dtype == want.dtype and tuple(x.shape) == tuple(want.shape), src.name
        assert torch.equal(x.cpu().reshape(-1).view(torch.uint8), want.reshape(-1).view(torch.uint8)), src.name
        seen.append(src.name)
    assert seen == [s.name for s in sources]
    assert _digest(files) == before


def test_stopping_early_and_errors(checkpoint, tmp_path):
    sources, _ = scan([str(checkpoint)], (), ())
    for _src, _x in stream_to_cuda(sources, torch.device("cuda"), chunk=4096):
        break  # the reader thread stops; nothing hangs
    # A file that got shorter after the scan: the error comes out at its tensor, naming it.
    f = tmp_path / "short.safetensors"
    save_file({"t": torch.randn(1000, 100)}, str(f))
    srcs, _ = scan([str(f)], (), ())
    with open(f, "r+b") as fh:
        fh.truncate(f.stat().st_size - 4000)
    with pytest.raises(InputError, match="short.safetensors"):
        for _ in stream_to_cuda(srcs, torch.device("cuda"), chunk=4096):
            pass


def test_analysis_on_cuda_equals_cpu(checkpoint):
    fmts = ["mxfp8_e4m3", "mxfp4_e2m1", "nvfp4", "hif8"]
    cpu = analysis.run("analyze", [str(checkpoint)], fmts, device="cpu")
    gpu = analysis.run("analyze", [str(checkpoint)], fmts, device="cuda")
    assert [(r.tensor.name, r.format) for r in cpu.rows] == [(r.tensor.name, r.format) for r in gpu.rows]
    for a, b in zip(cpu.rows, gpu.rows, strict=True):
        for k, v in a.metrics.items():
            w = b.metrics[k]
            assert v == w or (math.isnan(v) and math.isnan(w)) or math.isclose(v, w, rel_tol=1e-9), (a.tensor.name, k)
