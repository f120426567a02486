"""The Triton backend: MX fake quantization and fused error sums on CUDA GPUs.

The backend ``triton`` registers when a ``triton`` package is installed; ``triton`` itself is
imported on first use (by :func:`check` or a run), not by ``import kernels``: that keeps the
import fast, and Triton decides when it is imported and when ``@triton.jit`` decorates whether
kernels compile or run in its interpreter (``TRITON_INTERPRET=1``, read at that moment). A
``triton`` that is installed but fails to import makes :func:`check` return the error, so
``auto`` falls back to the reference and ``backend="triton"`` fails loudly with it; when the
very lookup of the package fails, ``kernels.backends`` skips this module altogether.

Selection (``kernels.backends.select``): on a CUDA tensor the backend supports every spec
that ``mx.unsupported_reason`` accepts, with priority 20 (``auto`` picks it over the
reference) when a GPU is present. CPU tensors run only in Triton's interpreter
(``TRITON_INTERPRET=1``, for tests), and only by name: without a GPU the backend registers
with priority -5, which ``auto`` never picks. The kernels live in :mod:`kernels.triton.mx`.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from ..backends import Backend, register
from ..formats import FormatSpec

__all__ = ["fake_quantize_triton", "mx_sums", "check"]


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def check(device: torch.device, spec: FormatSpec) -> str | None:
    """None when the triton backend can run ``spec`` on ``device``, else why not."""
    device = torch.device(device)
    if device.type == "cpu" and not _interpret():
        return "triton runs on CUDA devices (CPU tensors only in Triton's interpreter, TRITON_INTERPRET=1)"
    if device.type not in ("cuda", "cpu"):
        return f"triton runs on CUDA devices, not {device.type}"
    try:
        from .mx import unsupported_reason
    except Exception as e:  # an installed but broken triton (driver, ABI, version mismatch)
        return f"triton is installed but does not import: {type(e).__name__}: {e}"
    return unsupported_reason(spec)


def fake_quantize_triton(x: torch.Tensor, spec: FormatSpec, generator: torch.Generator | None = None) -> torch.Tensor:
    """``fake_quantize(x, spec)`` on the Triton kernels (the spec must pass :func:`check`)."""
    from .mx import mx_fake_quantize

    return mx_fake_quantize(x, spec)


def mx_sums(x: torch.Tensor, spec: FormatSpec):
    """``kernels.stats.ErrorSums`` of the MX fake quantization of ``x``, fused in one pass."""
    from .mx import mx_sums as _mx_sums

    return _mx_sums(x, spec)


if importlib.util.find_spec("triton") is None:
    raise ImportError("triton is not installed (pip install triton)")

register(
    Backend(
        "triton",
        20 if torch.cuda.is_available() else -5,
        check,
        fake_quantize_triton,
        "Triton kernels for the MX family (exact emulation); CUDA, or CPU in Triton's interpreter by name",
    )
)
