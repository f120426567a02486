"""The seed's MX Python API (``quant/ops/mxfp.py``, ``quant_npu/mxfp_npu.py``), ported.

Code written against ``fake_quant_ops`` ports by changing ``quant.`` to
``kernels.``. The quantizers compute fqtool's default semantics (the seed's
algorithm evaluated exactly in float32); pass ``emulate="seed"`` to
``_quantize_mx`` to get the seed's own float arithmetic bit for bit.
Gradients: the quantizers are straight-through; ``mxfp_matmul`` quantizes its
backward GEMMs as formats-mx.md §2.9 describes.
"""

from __future__ import annotations

import torch

from . import _StraightThrough, fake_quantize
from .formats import FormatSpec, parse

__all__ = ["_quantize_mx", "mxfp_matmul", "mxfp_baddbmm", "quant_dequant_qkv", "quant_dequant_tensor"]

# The seed's element names (case-insensitive) -> fqtool's MX preset names.
_PRESET = {
    "fp8_e4m3": "mxfp8_e4m3",
    "fp8_e5m2": "mxfp8_e5m2",
    "fp6_e3m2": "mxfp6_e3m2",
    "fp6_e2m3": "mxfp6_e2m3",
    "fp4": "mxfp4_e2m1",
    "fp4_e2m1": "mxfp4_e2m1",
    "int8": "mxint8",
}


def _single_axis(axes) -> int | None:
    if isinstance(axes, int):
        return axes
    if isinstance(axes, (list, tuple)) and len(axes) == 1 and isinstance(axes[0], int):
        return axes[0]
    return None


def _quantize_mx(
    A: torch.Tensor,
    scale_bits: int,
    elem_format: str | None,
    shared_exp_method: str = "max",
    axes=None,
    block_size: int = 0,
    round: str = "nearest",
    flush_fp32_subnorms: bool = False,
    minus_exp=None,
    minus_level: float = 1.0,
    heuristic_level=None,
    *,
    emulate: str = "exact",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """MX fake quantization with every argument of the seed's ``_quantize_mx`` (formats-mx.md §2.1).

    ``minus_level`` and ``heuristic_level`` are accepted and, as in the seed,
    have no effect here. Returns ``A`` itself when ``elem_format`` is None.
    """
    if elem_format is None:
        return A
    if scale_bits <= 0:
        raise ValueError(f"_quantize_mx: scale_bits must be > 0, got {scale_bits}")
    elem = str(elem_format).lower()
    axis = _single_axis(axes)
    if elem in _PRESET and axis is not None and block_size > 0 and 1 <= scale_bits <= 8:
        # Expressible as a format string: go through the dispatcher so fast backends apply.
        spec = parse(
            _PRESET[elem],
            block=block_size,
            axis=axis,
            round=round,
            minus_exp=minus_exp,
            scale_bits=scale_bits,
            shared_exp=shared_exp_method,
            flush_fp32_subnorms=flush_fp32_subnorms,
            emulate=emulate,
        )
        return fake_quantize(A, spec, generator=generator)

    from .reference.mx import quantize_mx_ref

    def run(x: torch.Tensor) -> torch.Tensor:
        return quantize_mx_ref(
            x,
            elem=elem,
            scale_bits=scale_bits,
            axes=axes,
            block=block_size,
            round=round,
            minus_exp=minus_exp,
            shared_exp_method=shared_exp_method,
            flush_fp32_subnorms=flush_fp32_subnorms,
            emulate=emulate,
            generator=generator,
        )

    if A.requires_grad and torch.is_grad_enabled():
        return _StraightThrough.apply(A, run)
    with torch.no_grad():
        return run(A)


def _mx(x: torch.Tensor, elem: str, block: int, axis: int, minus_exp=None) -> torch.Tensor:
    return _quantize_mx(x.detach(), 8, elem, axes=axis, block_size=block, minus_exp=minus_exp)


def _sum_to(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Reduce a broadcast gradient back to an operand's shape."""
    while grad.dim() > len(shape):
        grad = grad.sum(0)
    for i, n in enumerate(shape):
        if n == 1 and grad.shape[i] != 1:
            grad = grad.sum(i, keepdim=True)
    return grad


class MXFPMatMul(torch.autograd.Function):
    """formats-mx.md §2.9: MX along K for A (axis -1) and B (axis -2); quantized backward GEMMs."""

    @staticmethod
    def forward(ctx, A, B, elem_format="fp8_e5m2", block_size=32, minus_exp=None, heuristic_level=3):
        ctx.save_for_backward(A, B)
        ctx.cfg = (elem_format, block_size, minus_exp)
        A_q = _mx(A, elem_format, block_size, -1, minus_exp)
        B_q = _mx(B, elem_format, block_size, -2, minus_exp)
        return torch.matmul(A_q, B_q)

    @staticmethod
    def backward(ctx, grad_out):
        A, B = ctx.saved_tensors
        elem, block, minus_exp = ctx.cfg
        A_q = _mx(A, elem, block, -1, minus_exp)
        B_q = _mx(B, elem, block, -2, minus_exp)
        G_q = _mx(grad_out, elem, block, -1, minus_exp)
        grad_A = grad_B = None
        if ctx.needs_input_grad[0]:
            grad_A = _sum_to(torch.matmul(G_q, B_q.transpose(-1, -2)), A.shape).to(A.dtype)
        if ctx.needs_input_grad[1]:
            grad_B = _sum_to(torch.matmul(A_q.transpose(-1, -2), G_q), B.shape).to(B.dtype)
        return grad_A, grad_B, None, None, None, None


def mxfp_matmul(A, B, elem_format="fp8_e5m2", block_size=32, minus_exp=None, heuristic_level=3):
    """``A_q @ B_q`` with A blocked along its last axis and B along its second-to-last (both along K)."""
    return MXFPMatMul.apply(A, B, elem_format, block_size, minus_exp, heuristic_level)


def mxfp_baddbmm(input, batch1, batch2, beta=1.0, alpha=1.0, elem_format="fp8_e5m2", block_size=32):
    """``beta * input + alpha * mxfp_matmul(batch1, batch2)``; ``input`` is not quantized.

    The seed's NPU version had a broken backward (formats-mx.md §2.9). Here the
    gradient of ``input`` is ``beta * G`` and the batches get ``mxfp_matmul``'s
    quantized backward applied to ``alpha * G``.
    """
    return beta * input + alpha * mxfp_matmul(batch1, batch2, elem_format, block_size)


def quant_dequant_tensor(t, elem_format="fp8_e5m2"):
    """MX fake quantization along the last axis with blocks of 16 (the seed's NPU helper); straight-through."""
    return _quantize_mx(t, 8, elem_format, axes=-1, block_size=16)


def quant_dequant_qkv(q, k, v, elem_format="fp8_e5m2"):
    """:func:`quant_dequant_tensor` applied to each of q, k and v."""
    return tuple(quant_dequant_tensor(t, elem_format) for t in (q, k, v))


def spec_for(elem_format: str, block_size: int = 32, axis: int = -1) -> FormatSpec:
    """The fqtool format equivalent to ``_quantize_mx(x, 8, elem_format, axes=axis, block_size=block_size)``."""
    return parse(_PRESET[elem_format.lower()], block=block_size, axis=axis)
