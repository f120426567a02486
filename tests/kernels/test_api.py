"""kernels.fake_quantize and backend selection: input checks, gradients, explicit backends."""

from __future__ import annotations

import pytest
import torch

import kernels
from kernels import backends


def test_straight_through_gradient_in_the_input_dtype():
    x = torch.randn(4, 64, dtype=torch.float32, requires_grad=True)
    y = kernels.fake_quantize(x, "hif8")  # bf16 out
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert x.grad.dtype == torch.float32 and torch.equal(x.grad, torch.ones_like(x))


def test_no_grad_result_does_not_require_grad():
    x = torch.randn(4, 64)
    assert not kernels.fake_quantize(x, "mxfp8_e4m3").requires_grad


def test_rejects_non_tensors_and_integer_tensors():
    with pytest.raises(TypeError, match="torch.Tensor"):
        kernels.fake_quantize([1.0, 2.0], "mxfp8_e4m3")
    with pytest.raises(TypeError, match="floating-point"):
        kernels.fake_quantize(torch.arange(4), "mxfp8_e4m3")


def test_explicit_backend_that_cannot_run_fails_loudly():
    x = torch.randn(4)
    with pytest.raises(kernels.BackendError, match="not available here"):
        kernels.fake_quantize(x, "mxfp8_e4m3", backend="no-such-backend")
    spec = kernels.parse("mxfp8_e4m3")
    with pytest.raises(kernels.BackendError, match="CPU only"):
        backends.select("meta", spec, "cpu-fast")


def test_auto_prefers_cpu_fast_on_cpu_and_falls_back_to_reference_elsewhere():
    spec = kernels.parse("mxfp8_e4m3")
    assert backends.select("cpu", spec).name == "cpu-fast"
    assert backends.select("meta", spec).name == "reference"


def test_format_options_as_keywords():
    x = torch.randn(8, 64)
    assert torch.equal(
        kernels.fake_quantize(x, "mxfp4_e2m1", block=16), kernels.fake_quantize(x, "mxfp4_e2m1:block=16")
    )


def test_non_contiguous_input():
    x = torch.randn(64, 96)
    assert torch.equal(kernels.fake_quantize(x.T, "mxfp8_e4m3"), kernels.fake_quantize(x.T.contiguous(), "mxfp8_e4m3"))
