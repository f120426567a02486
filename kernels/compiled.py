"""The optional ``compile`` backend: the reference kernels fused into loops by ``torch.compile``.

Opt-in only (``backend="compile"``); ``auto`` never picks it, because the first call per
format and shape compiles for seconds and it needs a C++ compiler (CPU) or Triton (CUDA).
The compiled code evaluates the same float operations as the reference, so the results are
the same bits (``tests/kernels/test_compiled.py`` checks a sample when a compiler is there).
"""

from __future__ import annotations

import shutil
import types
from functools import cache, lru_cache

import torch

from .formats import FormatSpec

__all__ = ["unavailable_reason", "fake_quantize_compiled"]


#: Families whose compiled graphs gave wrong values in tests/kernels/test_compiled.py (torch 2.13,
#: TorchInductor CPU): garbage such as 4.5e27 for zero inputs in some rows of a mixed tensor.
_MISCOMPILED = {
    "nf4": "torch.compile returns wrong values for nf4 here; use the cpu-fast backend",
    "hif4_paper": "torch.compile returns wrong values for hif4_paper here; use the cpu-fast backend",
}


@cache
def _cpu_compiler() -> str | None:
    return None if any(shutil.which(c) for c in ("g++", "c++", "clang++")) else "no C++ compiler on PATH"


def unavailable_reason(device: torch.device, spec: FormatSpec) -> str | None:
    """None when ``torch.compile`` can run ``spec`` on ``device``, else why not."""
    if not hasattr(torch, "compile"):
        return "this torch has no torch.compile"
    if spec.family == "mx" and spec["round"] == "dither":
        return "stochastic rounding draws from a generator, which compiled graphs do not take"
    if spec.family in _MISCOMPILED:
        return _MISCOMPILED[spec.family]
    if device.type == "cpu":
        return _cpu_compiler()
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "Triton is not installed"
        return None
    return f"torch.compile is not set up for {device.type} here"


@lru_cache(maxsize=256)
def _compiled(spec: FormatSpec):
    from .reference import fake_quantize_ref

    def run(x: torch.Tensor) -> torch.Tensor:
        return fake_quantize_ref(x, spec, None)

    # torch.compile keeps its compiled graphs, and its recompile limit, per code object; every
    # closure of ``run`` shares one, so after a few formats it would stop compiling. A copy of
    # the code object per format gives each format its own cache.
    code = run.__code__.replace(co_name=f"fake_quantize_{abs(hash(spec)):x}")
    run = types.FunctionType(code, run.__globals__, code.co_name, run.__defaults__, run.__closure__)
    # Inductor drops the rounding of a float32 -> bf16/fp16 -> float32 round trip unless told
    # to emulate it; the casts are the whole point of several formats (fp16, bf16, hif4_paper).
    return torch.compile(run, dynamic=None, options={"emulate_precision_casts": True})


def fake_quantize_compiled(x: torch.Tensor, fmt: str | FormatSpec) -> torch.Tensor:
    from .formats import parse

    return _compiled(parse(fmt))(x)
