"""The seed's public HiFloat API (``quant/ops/hifp.py``), ported onto the fqtool kernels.

Same names and arguments as the seed, so code written against it ports by changing its
imports (spec formats-hifloat.md §4):

* :func:`quant_hif8` - per-tensor HiF8 fake quantization, bf16 out, identity
  straight-through gradient (§4.1).
* :func:`hifp_matmul` - ``matmul(hif8(A), hif8(B))`` in bf16, with gradients built
  from the quantized operands and the quantized incoming gradient (§4.2).
* :func:`hifp_baddbmm` - ``beta·input + alpha·hifp_matmul(batch1, batch2)``, ``input``
  unquantized but its gradient quantized (§4.3).

Every HiF8 tensor quantization goes through :func:`_hif8`.
"""

from __future__ import annotations

import torch
from torch.autograd import Function

from . import fake_quantize

__all__ = ["HIFPBAddBmm", "HIFPMatMul", "hifp_baddbmm", "hifp_matmul", "quant_hif8"]


def _hif8(x: torch.Tensor) -> torch.Tensor:
    """The seed's ``quant_hif8`` forward: per-tensor scale to 8, HiF8 variant A, bf16.

    The single place where this module quantizes; no autograd through it. Goes through
    the dispatcher, so the fastest backend for x's device computes it."""
    return fake_quantize(x.detach(), "hif8")


class _QuantHif8(Function):
    """Identity straight-through estimator around :func:`_hif8` (§4.1 step 7)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.in_dtype = x.dtype
        return _hif8(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # d out / d x = 1; the gradient arrives in x's dtype, as through the seed's casts.
        return grad.to(ctx.in_dtype)


def quant_hif8(x: torch.Tensor, Q=None, qdim: int = -1) -> torch.Tensor:
    """HiF8 fake quantization of ``x`` with one per-tensor scale; returns bfloat16.

    ``Q`` and ``qdim`` are accepted for compatibility and ignored, as in the seed.
    The gradient is straight-through (identity), cast to x's dtype.
    """
    return _QuantHif8.apply(x)


def _t(m: torch.Tensor) -> torch.Tensor:
    return m.transpose(-2, -1)


class HIFPMatMul(Function):
    """``matmul(hif8(A), hif8(B))`` with the seed's quantized backward (§4.2).

    Forward: both operands bf16, so the product runs and returns in bf16. Backward with
    Gq = hif8(grad): grad_A = Gq·Bqᵀ, grad_B = Aqᵀ·Gq, cast to the operands' dtypes.
    The seed recomputes Aq and Bq in backward; quantization is deterministic, so saving
    them (bf16, half the memory of float32 operands) gives the same numbers.
    """

    @staticmethod
    def forward(ctx, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        a_q, b_q = _hif8(A), _hif8(B)
        ctx.save_for_backward(a_q, b_q)
        ctx.dtypes = (A.dtype, B.dtype)
        return torch.matmul(a_q, b_q)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        a_q, b_q = ctx.saved_tensors
        g_q = _hif8(grad_output)
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = torch.matmul(g_q, _t(b_q)).to(ctx.dtypes[0])
        if ctx.needs_input_grad[1]:
            grad_b = torch.matmul(_t(a_q), g_q).to(ctx.dtypes[1])
        return grad_a, grad_b


def hifp_matmul(A: torch.Tensor, B: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """HiF8 matmul of the seed (§4.2); returns bfloat16.

    Extra arguments (the seed's ``elem_format``, ``block_size``) are accepted and
    ignored, as the seed ignores them.
    """
    return HIFPMatMul.apply(A, B)


class HIFPBAddBmm(Function):
    """``beta·input + alpha·(hif8(batch1) @ hif8(batch2))`` with the seed's backward (§4.3).

    batch1 and batch2 each get one amax over the whole tensor; any broadcastable batch
    shapes work (``torch.matmul``). The output dtype follows type promotion, so a float32
    ``input`` gives float32. Backward with Gq = hif8(grad): grad_input = beta·Gq (bf16),
    and with mm_grad = bf16(alpha·Gq): grad_batch1 = mm_grad·b2qᵀ, grad_batch2 =
    b1qᵀ·mm_grad; each cast to its input's dtype.
    """

    @staticmethod
    def forward(ctx, input, batch1, batch2, beta=1.0, alpha=1.0):
        b1_q, b2_q = _hif8(batch1), _hif8(batch2)
        ctx.save_for_backward(b1_q, b2_q)
        ctx.beta, ctx.alpha = beta, alpha
        ctx.dtypes = (input.dtype, batch1.dtype, batch2.dtype)
        # The seed's expression: alpha·mm is rounded in bf16 before the promotion.
        return beta * input + alpha * torch.matmul(b1_q, b2_q)

    @staticmethod
    def backward(ctx, grad_output):
        b1_q, b2_q = ctx.saved_tensors
        g_q = _hif8(grad_output)
        grad_input = grad_b1 = grad_b2 = None
        if ctx.needs_input_grad[0]:
            grad_input = (ctx.beta * g_q).to(ctx.dtypes[0])
        mm_grad = ctx.alpha * g_q  # bf16
        if ctx.needs_input_grad[1]:
            grad_b1 = torch.matmul(mm_grad, _t(b2_q)).to(ctx.dtypes[1])
        if ctx.needs_input_grad[2]:
            grad_b2 = torch.matmul(_t(b1_q), mm_grad).to(ctx.dtypes[2])
        return grad_input, grad_b1, grad_b2, None, None


def hifp_baddbmm(input, batch1, batch2, beta=1.0, alpha=1.0, *args, **kwargs) -> torch.Tensor:
    """The seed's HiF8 baddbmm (§4.3): ``beta·input + alpha·hifp_matmul(batch1, batch2)``.

    ``input`` is not quantized in the forward pass, but its gradient is. Extra
    arguments are accepted and ignored.
    """
    return HIFPBAddBmm.apply(input, batch1, batch2, beta, alpha)
