"""The seed library's README examples, with ``quant.`` replaced by ``kernels.``, run as tests.

Each example is kept as the README wrote it (``.cuda()`` becomes the test's device); the
asserts check what the README promises: shapes, dtypes, gradients, and error magnitudes.
"""

from __future__ import annotations

import pytest
import torch

DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
    ),
]


@pytest.mark.parametrize("device", DEVICES)
def test_basic_quantization_example(device):
    from kernels.hifp import hifp_matmul, quant_hif8  # noqa: F401 - imported as in the README
    from kernels.mxfp import _quantize_mx, mxfp_matmul  # noqa: F401
    from kernels.qtype import QType  # noqa: F401

    torch.manual_seed(0)
    x = torch.randn(1024, 1024).to(device)
    x_mxfp8 = _quantize_mx(x, scale_bits=8, elem_format="fp8_e4m3", shared_exp_method="max", axes=-1, block_size=16)
    x_hif8 = quant_hif8(x)
    assert x_mxfp8.shape == x.shape and x_hif8.shape == x.shape
    assert x_mxfp8.dtype == torch.float32 and x_hif8.dtype == torch.bfloat16  # quant_hif8 returns bf16 (spec §4.1)
    # Both keep 3 mantissa bits around |x| ~ 1: the error is at most half a step, 2^-4 relative,
    # so the MSE lies below 2^-8·E[x^2] (the seed README's "~1e-4" for MXFP8 was optimistic:
    # E4M3 on N(0,1) gives ~1e-3).
    mse_mxfp8 = torch.mean((x - x_mxfp8) ** 2).item()
    mse_hif8 = torch.mean((x - x_hif8.float()) ** 2).item()
    assert 2**-14 < mse_mxfp8 < 2**-8
    assert 2**-14 < mse_hif8 < 2**-8
    # The floor scale puts a block max with significand above 1.75 past E4M3's 448 = 1.75·2^8, where it
    # saturates: the worst error is (2 - 1.75)/2 = 1/8 of the block max (formats-mx.md §2.4 step 5).
    err = torch.max(torch.abs(x - x_mxfp8)).item()
    assert 2**-5 * x.abs().max().item() < err <= 2**-3 * x.abs().max().item()


@pytest.mark.parametrize("device", DEVICES)
def test_matmul_example(device):
    from kernels.hifp import hifp_matmul
    from kernels.mxfp import mxfp_matmul

    torch.manual_seed(1)
    A = torch.randn(1024, 1024).to(device)
    B = torch.randn(1024, 1024).to(device)
    C_mxfp8 = mxfp_matmul(A, B, elem_format="fp8_e4m3", block_size=32)
    C_hif8 = hifp_matmul(A, B)
    C_fp32 = torch.matmul(A, B)
    mse_mx = torch.mean((C_fp32 - C_mxfp8) ** 2).item()
    mse_hif = torch.mean((C_fp32 - C_hif8.float()) ** 2).item()
    # C has variance 1024; each quantized operand adds relative noise below 2^-8 (3 mantissa bits).
    assert 0 < mse_mx < 1024 * 2**-7
    assert 0 < mse_hif < 1024 * 2**-7


def test_qtype_examples():
    from kernels.qtype import QType

    qtype_mxfp4 = QType("mxfp4")
    qtype_mxfp8_e4m3 = QType("mxfp8e4m3")
    qtype_hif8 = QType("hif8")
    qtype_custom = QType("e3m2k8b16c")
    qtype_with_dim = QType("hif8").dim(-1)
    assert (qtype_mxfp4.exp_bits, qtype_mxfp4.man_bits, qtype_mxfp4.blk_size, qtype_mxfp4.do_carry) == (2, 1, 32, True)
    assert vars(qtype_mxfp4) == {**vars(QType("e2m1k8b32c")), "desc": "mxfp4", "_format": "mxfp4"}
    assert (qtype_mxfp8_e4m3.exp_bits, qtype_mxfp8_e4m3.man_bits, qtype_mxfp8_e4m3.fp_val_max) == (4, 3, 448.0)
    assert (qtype_custom.exp_bits, qtype_custom.man_bits, qtype_custom.k_bits, qtype_custom.blk_size) == (3, 2, 8, 16)
    assert qtype_with_dim.q_dim == -1 and qtype_hif8.desc == "hif8"


def test_qkv_example():
    from kernels.mxfp import quant_dequant_qkv

    torch.manual_seed(2)
    q = torch.randn(32, 128, 1024, requires_grad=True)
    k = torch.randn(32, 128, 1024)
    v = torch.randn(32, 128, 1024)
    q_q, k_q, v_q = quant_dequant_qkv(q, k, v, elem_format="fp8_e4m3")
    assert q_q.shape == q.shape and not torch.equal(q_q, q.detach())
    q_q.sum().backward()  # "保持梯度": the gradient passes straight through
    assert torch.equal(q.grad, torch.ones_like(q))


def test_tensor_example():
    from kernels.mxfp import quant_dequant_tensor

    x = torch.randn(1024, 1024)
    x_quantized = quant_dequant_tensor(x, elem_format="fp8_e5m2")
    assert x_quantized.shape == x.shape
    assert 0 < ((x - x_quantized) ** 2).mean() < 1e-2


def test_baddbmm_example():
    from kernels.hifp import hifp_baddbmm
    from kernels.mxfp import mxfp_baddbmm

    torch.manual_seed(3)
    batch1 = torch.randn(10, 1024, 512)
    batch2 = torch.randn(10, 512, 1024)
    input_tensor = torch.randn(10, 1024, 1024)
    output_mxfp = mxfp_baddbmm(input_tensor, batch1, batch2, beta=1.0, alpha=1.0, elem_format="fp8_e4m3", block_size=32)
    output_hif = hifp_baddbmm(input_tensor, batch1, batch2, beta=1.0, alpha=1.0)
    exact = torch.baddbmm(input_tensor, batch1, batch2)
    assert output_mxfp.shape == output_hif.shape == exact.shape
    assert 0 < ((output_mxfp - exact) ** 2).mean() < 512 * 2**-7
    assert 0 < ((output_hif.float() - exact) ** 2).mean() < 512 * 2**-7
