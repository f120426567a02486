"""The Triton backend: fake quantization and fused error sums on CUDA GPUs, for the MX, QType,
nvf4/nvfp4, nf4, per-tensor FP8, int8sym, cast, hif8 and HiFloat X families.

The backend ``triton`` registers when a ``triton`` package is installed; ``triton`` itself is
imported on first use (by :func:`check` or a run), not by ``import kernels``: that keeps the
import fast, and Triton decides when it is imported and when ``@triton.jit`` decorates whether
kernels compile or run in its interpreter (``TRITON_INTERPRET=1``, read at that moment). A
``triton`` that is installed but fails to import makes :func:`check` return the error, so
``auto`` falls back to the reference and ``backend="triton"`` fails loudly with it; when the
very lookup of the package fails, ``kernels.backends`` skips this module altogether.

Each family lives in one module (:data:`MODULES`) with the same four names: ``FAMILIES``
(the families it runs), ``unsupported_reason(spec)``, ``fake_quantize(x, spec, generator=None)`` and
``sums(x, spec, input_stats=True, cache=None)`` — the fused quantize + statistics kernel,
which writes no tensor of x's size and returns :class:`kernels.stats.ErrorSums`. ``cache`` is
a dict the caller keeps for one tensor, in which per-tensor reductions that do not depend on
the format (an absmax) are computed once and shared by every format run on that tensor.
:func:`sums` here dispatches to them.

Selection (``kernels.backends.select``): on a CUDA tensor the backend supports every spec
its family module accepts, with priority 20 (``auto`` picks it over the reference) when a
GPU is present. CPU tensors run only in Triton's interpreter (``TRITON_INTERPRET=1``, for
tests), and only by name: without a GPU the backend registers with priority -5, which
``auto`` never picks.
"""

from __future__ import annotations

import importlib
import importlib.util
import os

import torch

from ..backends import Backend, register
from ..formats import FormatSpec

__all__ = ["fake_quantize_triton", "sums", "check", "MODULES"]

#: family -> the module of kernels.triton that runs it.
MODULES = {
    "mx": "mx",
    "qtype": "qtype",
    "nvf4": "nvfp",
    "nvfp4": "nvfp",
    "fp8tensor": "scaled",
    "int8sym": "scaled",
    "cast": "scaled",
    "nf4": "nf4",
    "hif8": "hif8",
    "hifx": "hifx",
}


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def check(device: torch.device, spec: FormatSpec) -> str | None:
    """None when the triton backend can run ``spec`` on ``device``, else why not."""
    device = torch.device(device)
    if device.type == "cpu" and not _interpret():
        return "triton runs on CUDA devices (CPU tensors only in Triton's interpreter, TRITON_INTERPRET=1)"
    if device.type not in ("cuda", "cpu"):
        return f"triton runs on CUDA devices, not {device.type}"
    if spec.family not in MODULES:
        return f"the triton backend has no kernels for the {spec.family} family"
    try:
        impl = _module(spec.family)
    except Exception as e:  # an installed but broken triton (driver, ABI, version mismatch)
        return f"triton is installed but does not import: {type(e).__name__}: {e}"
    return impl.unsupported_reason(spec)


def _module(family: str):
    return importlib.import_module(f"{__name__}.{MODULES[family]}")


def fake_quantize_triton(x: torch.Tensor, spec: FormatSpec, generator: torch.Generator | None = None) -> torch.Tensor:
    """``fake_quantize(x, spec)`` on the Triton kernels (the spec must pass :func:`check`);
    ``generator`` feeds stochastic rounding (``round=dither``) as it feeds the reference."""
    return _module(spec.family).fake_quantize(x, spec, generator=generator)


def sums(x: torch.Tensor, spec: FormatSpec, input_stats: bool = True, cache: dict | None = None):
    """``kernels.stats.ErrorSums`` of the fake quantization of ``x`` to ``spec`` (which must
    pass :func:`check`), fused in one pass that writes no tensor of x's size."""
    return _module(spec.family).sums(x, spec, input_stats=input_stats, cache=cache)


if importlib.util.find_spec("triton") is None:
    raise ImportError("triton is not installed (pip install triton)")

register(
    Backend(
        "triton",
        20 if torch.cuda.is_available() else -5,
        check,
        fake_quantize_triton,
        "fused Triton kernels (fake quantization, one-pass error statistics); CUDA, or CPU in the interpreter by name",
        sums=sums,
    )
)
