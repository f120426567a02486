"""Tests for kernels/hifp.py: the seed's public HiFloat API (spec formats-hifloat.md §4).

Golden folders hifp_matmul and hifp_baddbmm (CONTRACT op entries); the operands
A_q, B_q, grad_out_q are checked bit for bit in test_ref_hif8.py and here again
through quant_hif8.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from golden import assert_bits_equal, case_files, contract, load, needs_golden

import kernels.hifp as hifp
from kernels.hifp import hifp_baddbmm, hifp_matmul, quant_hif8
from kernels.reference.hif8 import quantize_hif8_ref

F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16


def _op_cases() -> list:
    return [
        pytest.param(entry, path, id=f"{entry['stem']}-{path.stem}")
        for entry in contract()
        if entry.get("family") == "hif" and "op" in entry
        for path in case_files("hif", entry["stem"])
    ]


@needs_golden
def test_op_entries_exist():
    assert {p.values[0]["op"] for p in _op_cases()} == {"kernels.hifp.hifp_matmul", "kernels.hifp.hifp_baddbmm"}


@needs_golden
@pytest.mark.parametrize(("entry", "path"), _op_cases())
def test_golden_op_contract(entry, path):
    """Run exactly as CONTRACT.json describes: inputs positionally, kwargs (from the
    metadata), out.backward(grad_output), then dtype, shape and allclose per tensor."""
    tensors, meta = load(path)
    module, name = entry["op"].rsplit(".", 1)
    op = getattr(importlib.import_module(module), name)
    inputs = {n: tensors[n].clone().requires_grad_(True) for n in entry["inputs"]}
    kwargs = dict(entry.get("kwargs", {}))
    kwargs.update({k: float(meta[v]) for k, v in entry.get("kwargs_from_metadata", {}).items()})
    out = op(*inputs.values(), **kwargs)
    out.backward(tensors[entry["grad_output"]])
    for what, ref_name in entry["against"].items():
        got = out if what == "out" else inputs[what.removeprefix("grad:")].grad
        ref = tensors[ref_name]
        assert got.dtype == ref.dtype and got.shape == ref.shape, what
        atol = entry["atol"] * ref.abs().max().item()
        assert torch.allclose(got.float(), ref.float(), rtol=entry["rtol"], atol=atol), what
    for n, t in inputs.items():
        assert_bits_equal(t.detach(), tensors[n], f"input {n} modified")


@needs_golden
def test_golden_matmul_operands_bit_exact():
    tensors, _ = load(case_files("hif", "hifp_matmul")[0])
    for src, q in (("A", "A_q"), ("B", "B_q"), ("grad_out", "grad_out_q")):
        got = quant_hif8(tensors[src])
        assert got.dtype == tensors[q].dtype
        assert_bits_equal(got, tensors[q], q)


# -------------------------------------------------------------------- quant_hif8


@pytest.mark.parametrize("dtype", [F32, BF16, F16])
def test_quant_hif8_forward_and_identity_ste(dtype):
    x = (torch.randn(6, 40) * 5).to(dtype).requires_grad_(True)
    out = quant_hif8(x, Q="ignored", qdim=0)
    assert out.dtype == BF16
    assert_bits_equal(out, quantize_hif8_ref(x.detach()))
    out.backward(torch.ones_like(out))
    assert x.grad.dtype == dtype
    assert torch.equal(x.grad, torch.ones_like(x))
    # A non-uniform upstream gradient passes through unchanged (up to the dtype cast).
    x.grad = None
    w = torch.randn(6, 40).to(BF16)
    quant_hif8(x).backward(w)
    assert torch.equal(x.grad, w.to(dtype))


def test_quant_hif8_does_not_modify_input():
    x = torch.tensor([1e-9, -3e-8, 0.5, -7.0, 1000.0, 0.0]).repeat(3, 512)
    before = x.clone()
    quant_hif8(x)
    assert torch.equal(x, before)


def test_single_quantizer_route(monkeypatch):
    """Every quantization of the module goes through kernels.hifp._hif8."""
    calls = []

    def spy(x):
        calls.append(tuple(x.shape))
        return quantize_hif8_ref(x.detach())

    monkeypatch.setattr(hifp, "_hif8", spy)
    a = torch.randn(4, 8, requires_grad=True)
    b = torch.randn(8, 3, requires_grad=True)
    quant_hif8(a)
    assert calls == [(4, 8)]
    hifp_matmul(a, b).sum().backward()
    assert calls[1:] == [(4, 8), (8, 3), (4, 3)]
    calls.clear()
    inp = torch.randn(2, 4, 3, requires_grad=True)
    hifp_baddbmm(inp, torch.randn(2, 4, 8), torch.randn(2, 8, 3)).sum().backward()
    assert len(calls) == 3  # batch1, batch2 forward; grad in backward


# -------------------------------------------------------------------- hifp_matmul


def test_matmul_forward_and_gradients_match_4_2():
    torch.manual_seed(0)
    a = torch.randn(16, 64, requires_grad=True)
    b = (torch.randn(64, 24) * 3).requires_grad_(True)
    g = torch.randn(16, 24) * 0.1
    a0, b0 = a.detach().clone(), b.detach().clone()
    out = hifp_matmul(a, b, "fp8_e5m2", block_size=32)  # extra seed arguments ignored
    # The output is bf16, so autograd hands backward the gradient rounded to bf16.
    aq, bq, gq = (quantize_hif8_ref(t) for t in (a0, b0, g.to(BF16)))
    assert out.dtype == BF16
    assert_bits_equal(out, aq @ bq, "forward in bf16")
    out.backward(g)
    assert a.grad.dtype == F32 and b.grad.dtype == F32
    assert_bits_equal(a.grad, (gq @ bq.t()).float(), "grad_A = Gq Bq^T")
    assert_bits_equal(b.grad, (aq.t() @ gq).float(), "grad_B = Aq^T Gq")
    assert_bits_equal(a.detach(), a0)
    assert_bits_equal(b.detach(), b0)
    # Not the unquantized straight-through gradient of the NPU copy.
    assert not torch.equal(a.grad, g @ b0.t())


def test_matmul_only_requested_grads_and_batches():
    a = torch.randn(3, 5, 8, requires_grad=True)
    b = torch.randn(8, 2)
    out = hifp_matmul(a, b)
    assert out.shape == (3, 5, 2)
    out.sum().backward()
    assert b.grad is None and a.grad.shape == a.shape


# ------------------------------------------------------------------ hifp_baddbmm


def test_baddbmm_forward_and_gradients_match_4_3():
    torch.manual_seed(1)
    inp = torch.randn(2, 8, 12, requires_grad=True)
    b1 = torch.randn(2, 8, 32, requires_grad=True)
    b2 = torch.randn(2, 32, 12, requires_grad=True)
    g = torch.randn(2, 8, 12)
    beta, alpha = 0.5, 2.0
    out = hifp_baddbmm(inp, b1, b2, beta=beta, alpha=alpha)
    b1q, b2q, gq = (quantize_hif8_ref(t.detach()) for t in (b1, b2, g))
    assert out.dtype == F32  # float32 input + bf16 product
    assert_bits_equal(out, beta * inp.detach() + alpha * (b1q @ b2q), "input not quantized")
    out.backward(g)
    mm_grad = alpha * gq  # rounded to bf16
    assert mm_grad.dtype == BF16
    assert_bits_equal(inp.grad, (beta * gq).float(), "grad_input = beta Gq")
    assert_bits_equal(b1.grad, (mm_grad @ b2q.transpose(-2, -1)).float(), "grad_batch1")
    assert_bits_equal(b2.grad, (b1q.transpose(-2, -1) @ mm_grad).float(), "grad_batch2")
    assert inp.grad.dtype == b1.grad.dtype == b2.grad.dtype == F32


def test_baddbmm_one_amax_per_tensor_and_broadcasting():
    b1 = torch.randn(3, 4, 5)
    b1[0] *= 100  # one batch entry dominates the shared amax
    b2 = torch.randn(5, 6, requires_grad=True)
    inp = torch.randn(6, requires_grad=True)
    out = hifp_baddbmm(inp, b1, b2)
    assert_bits_equal(out, inp.detach() + quantize_hif8_ref(b1) @ quantize_hif8_ref(b2.detach()))
    out.sum().backward()
    assert b2.grad.shape == (5, 6) and inp.grad.shape == (6,)
