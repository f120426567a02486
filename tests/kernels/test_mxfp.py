"""kernels.mxfp: the seed's MX API (formats-mx.md §2.1, §2.6, §2.9), including gradients."""

from __future__ import annotations

import pytest
import torch

import kernels
from kernels.mxfp import _quantize_mx, mxfp_baddbmm, mxfp_matmul, quant_dequant_qkv, quant_dequant_tensor


def _mx(x, elem="fp8_e5m2", block=32, axis=-1):
    return kernels.fake_quantize(x, {"fp8_e5m2": "mxfp8_e5m2", "fp8_e4m3": "mxfp8_e4m3"}[elem], block=block, axis=axis)


def test_quantize_mx_matches_the_format_string():
    x = torch.randn(16, 100)
    got = _quantize_mx(x, 8, "fp4_e2m1", axes=-1, block_size=16, round="even")
    assert torch.equal(got, kernels.fake_quantize(x, "mxfp4_e2m1:block=16,round=even"))
    got = _quantize_mx(x, 8, "FP8_E4M3", axes=[0], block_size=32, emulate="seed")
    assert torch.equal(got, kernels.fake_quantize(x, "mxfp8_e4m3:axis=0,emulate=seed"))


def test_quantize_mx_none_format_returns_input():
    x = torch.randn(4)
    assert _quantize_mx(x, 8, None) is x


def test_quantize_mx_rejects_bad_scale_bits():
    with pytest.raises(ValueError, match="scale_bits"):
        _quantize_mx(torch.randn(4), 0, "fp8_e4m3")


def test_quantize_mx_tiles_and_whole_axes():
    """Several axes tile the tensor (32x32 blocks); block_size 0 shares one scale per row."""
    x = torch.randn(64, 64)
    x[0, 0] = 1e6  # an outlier flushes the rest of its tile only (E4M3 step there is 2^-9 * 2^11 = 4)
    tiles = _quantize_mx(x, 8, "fp8_e4m3", axes=[-1, -2], block_size=32)
    assert (tiles[:32, :32][1:] == 0).float().mean() > 0.5
    assert torch.equal(tiles[32:, 32:], _quantize_mx(x[32:, 32:], 8, "fp8_e4m3", axes=[-1, -2], block_size=32))
    rows = _quantize_mx(x, 8, "int4", axes=-1, block_size=0)
    assert torch.equal(rows[1], _quantize_mx(x[1:2], 8, "int4", axes=-1, block_size=0)[0])


def test_quantize_mx_is_straight_through():
    x = torch.randn(8, 64, requires_grad=True)
    _quantize_mx(x, 8, "fp8_e4m3", axes=-1, block_size=32).mul(torch.arange(64.0)).sum().backward()
    assert torch.equal(x.grad, torch.arange(64.0).expand(8, 64))
    # Tiled blocks and the int4 element have no format string: the reference runs directly, same STE.
    y = torch.randn(64, 64, requires_grad=True)
    _quantize_mx(y, 8, "int4", axes=[-1, -2], block_size=32).mul(2.0).sum().backward()
    assert torch.equal(y.grad, torch.full_like(y, 2.0))


def test_mxfp_matmul_forward_and_backward_follow_the_spec():
    """§2.9: out = A_q @ B_q; dA = G_q @ B_q^T, dB = A_q^T @ G_q with G_q = MX(G, axis -1)."""
    torch.manual_seed(0)
    A = torch.randn(24, 64, requires_grad=True)
    B = torch.randn(64, 40, requires_grad=True)
    G = torch.randn(24, 40)
    out = mxfp_matmul(A, B, elem_format="fp8_e4m3", block_size=32)
    out.backward(G)
    Aq, Bq, Gq = _mx(A.detach(), "fp8_e4m3"), _mx(B.detach(), "fp8_e4m3", axis=-2), _mx(G, "fp8_e4m3")
    assert torch.equal(out, Aq @ Bq)
    assert torch.allclose(A.grad, Gq @ Bq.T, rtol=0, atol=1e-5)
    assert torch.allclose(B.grad, Aq.T @ Gq, rtol=0, atol=1e-5)
    assert not torch.allclose(A.grad, G @ B.detach().T, atol=1e-3)  # not straight-through


def test_mxfp_matmul_batched_broadcast_gradient():
    A = torch.randn(3, 8, 32, requires_grad=True)
    B = torch.randn(32, 16, requires_grad=True)
    mxfp_matmul(A, B).sum().backward()
    assert A.grad.shape == A.shape and B.grad.shape == B.shape


def test_mxfp_baddbmm():
    torch.manual_seed(1)
    inp = torch.randn(2, 8, 16, requires_grad=True)
    b1 = torch.randn(2, 8, 32, requires_grad=True)
    b2 = torch.randn(2, 32, 16, requires_grad=True)
    G = torch.randn(2, 8, 16)
    out = mxfp_baddbmm(inp, b1, b2, beta=0.5, alpha=2.0)
    assert torch.allclose(out, 0.5 * inp + 2.0 * (_mx(b1.detach()) @ _mx(b2.detach(), axis=-2)), atol=1e-5)
    out.backward(G)
    assert torch.allclose(inp.grad, 0.5 * G)
    Gq = _mx(2.0 * G)
    assert torch.allclose(b1.grad, Gq @ _mx(b2.detach(), axis=-2).transpose(-1, -2), atol=1e-4)


def test_quant_dequant_tensor_and_qkv_use_block_16():
    x = torch.randn(4, 48)
    assert torch.equal(quant_dequant_tensor(x), _mx(x, "fp8_e5m2", block=16))
    q, k, v = quant_dequant_qkv(x, 2 * x, 3 * x, elem_format="fp8_e4m3")
    assert torch.equal(k, _mx(2 * x, "fp8_e4m3", block=16))
