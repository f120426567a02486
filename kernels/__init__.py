"""fqtool's format kernels: fake quantization (quantize, then dequantize) for every format.

>>> import torch, kernels
>>> y = kernels.fake_quantize(torch.randn(4, 64), "mxfp8_e4m3:block=16")

``kernels`` depends on torch only. The seed library's Python API lives in
:mod:`kernels.mxfp`, :mod:`kernels.hifp` and :mod:`kernels.qtype`.
"""

from __future__ import annotations

import torch

from . import backends
from .backends import BackendError
from .formats import FormatError, FormatSpec, Rules, list_formats, parse

__all__ = [
    "fake_quantize",
    "parse",
    "list_formats",
    "format_rules",
    "representable_values",
    "FormatSpec",
    "FormatError",
    "BackendError",
    "Rules",
]

__version__ = "0.1.0"


class _StraightThrough(torch.autograd.Function):
    """Forward: the fake-quantized tensor. Backward: the gradient unchanged (cast to x's dtype)."""

    @staticmethod
    def forward(ctx, x, run):  # noqa: D401 - autograd signature
        ctx.in_dtype = x.dtype
        return run(x.detach())

    @staticmethod
    def backward(ctx, grad):
        return grad.to(ctx.in_dtype), None


def fake_quantize(
    x: torch.Tensor,
    fmt: str | FormatSpec,
    *,
    backend: str = "auto",
    generator: torch.Generator | None = None,
    **options,
) -> torch.Tensor:
    """Quantize ``x`` to ``fmt`` and dequantize it back; same shape, never modifies ``x``.

    ``fmt`` is ``NAME[:key=value,...]`` (see :func:`list_formats`) or a parsed
    :class:`FormatSpec`; keyword ``options`` override the string's. The output
    dtype is the input's, except where a format's spec says otherwise (``hif8``
    returns bfloat16 like the seed's ``quant_hif8``; ``emulate=seed`` returns
    what the seed returned). Gradients pass straight through.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"fake_quantize expects a torch.Tensor, not {type(x).__name__}")
    if not (x.is_floating_point()):
        raise TypeError(f"fake_quantize expects a floating-point tensor, not {x.dtype}")
    spec = parse(fmt, **options)
    impl = backends.select(x.device, spec, backend)

    def run(t: torch.Tensor) -> torch.Tensor:
        return impl.run(t, spec, generator)

    if x.requires_grad and torch.is_grad_enabled():
        return _StraightThrough.apply(x, run)
    with torch.no_grad():
        return run(x)


def format_rules(fmt: str | FormatSpec) -> Rules:
    """The resolved rules of a format: element, block, axis, scale rule, rounding, bits per value."""
    return parse(fmt).rules()


def representable_values(fmt: str | FormatSpec) -> torch.Tensor:
    """Every value of the format's element (≤ 8 bits), at unit scale, sorted, as float64."""
    from .grid import element_values

    return element_values(parse(fmt))
