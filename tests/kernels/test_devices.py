"""Every format gives the same bits on every device (CUDA and Ascend NPU when present; they skip otherwise)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from corner_cases import as_dtype, corner_cases
from golden import case_files, contract, load, mismatches, needs_golden

import kernels

FORMATS = [str(s) for s in kernels.list_formats()] + [
    "mxfp4_e2m1:round=even",
    "mxfp8_e4m3:emulate=seed",
    "mxfp6_e3m2:scale=rceil",
    "mxfp8_e4m3:axis=0",
    "hif8:scale=none",
    "hif8:variant=paper",
    "hif8:emulate=seed",
    "hifx4_v12:emulate=seed",
    "nf4B4b64:emulate=seed",
    "nvf4:emulate=seed",
    "fp8_e4m3:emulate=seed",
    "int8sym:emulate=seed",
    "tmx6:emulate=seed",
]


def _devices():
    out = []
    out.append(
        pytest.param(
            "cuda",
            marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")],
        )
    )
    has_npu = importlib.util.find_spec("torch_npu") is not None
    out.append(
        pytest.param(
            "npu", marks=[pytest.mark.npu, pytest.mark.skipif(not has_npu, reason="needs torch_npu and an Ascend NPU")]
        )
    )
    return out


def _to(device: str):
    if device == "npu":
        import torch_npu  # noqa: F401
    return torch.device(device)


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("fmt", FORMATS)
def test_same_bits_as_cpu(device, fmt):
    dev = _to(device)
    bad = []
    for name, x in corner_cases().items():
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            xd = as_dtype(x, dtype)
            if xd is None:
                continue
            want = kernels.fake_quantize(xd, fmt, backend="reference")
            on_dev = xd.to(dev)
            before = on_dev.clone()
            got = kernels.fake_quantize(on_dev, fmt)
            assert torch.equal(on_dev, before) or torch.equal(on_dev.isnan(), before.isnan()), "input modified"
            if got.dtype != want.dtype or mismatches(got.cpu(), want):
                bad.append(f"{name}/{dtype}")
    assert not bad, f"{fmt} on {device} differs from CPU: {bad}"


@needs_golden
@pytest.mark.parametrize("device", _devices())
def test_required_golden_contract(device):
    dev = _to(device)
    failures, n = [], 0
    for entry in contract():
        if not entry["required"] or "format" not in entry:
            continue
        for path in case_files(entry["family"], entry["stem"]):
            tensors, meta = load(path)
            x = tensors[entry.get("input", "input")]
            names = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
            if entry["dtypes"] != "all" and names[x.dtype] not in entry["dtypes"]:
                continue
            import fnmatch

            if "cases" in entry and not any(fnmatch.fnmatch(path.stem, p) for p in entry["cases"]):
                continue
            if "skip_cases" in entry and any(fnmatch.fnmatch(path.stem, p) for p in entry["skip_cases"]):
                continue
            got = kernels.fake_quantize(x.to(dev), entry["format"].format(**meta))
            n += 1
            if mismatches(got.cpu(), tensors[entry["against"]]):
                failures.append(f"{entry['format']} {path.stem}")
    assert n > 100 and not failures, failures
