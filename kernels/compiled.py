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


@cache
def _cpu_compiler() -> str | None:
    return None if any(shutil.which(c) for c in ("g++", "c++", "clang++")) else "no C++ compiler on PATH"


def unavailable_reason(device: torch.device, spec: FormatSpec) -> str | None:
    """None when ``torch.compile`` can run ``spec`` on ``device``, else why not."""
    if not hasattr(torch, "compile"):
        return "this torch has no torch.compile"
    if spec.family == "mx" and spec["round"] == "dither":
        return "stochastic rounding draws from a generator, which compiled graphs do not take"
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
    return torch.compile(run, dynamic=None)


def fake_quantize_compiled(x: torch.Tensor, fmt: str | FormatSpec) -> torch.Tensor:
    from .formats import parse

    return _compiled(parse(fmt))(x)
