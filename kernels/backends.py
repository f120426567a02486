"""Backends are records in one registry; :func:`select` is the only place that chooses one.

A backend says which (device, format) pairs it supports. ``auto`` picks the
highest-priority backend that supports the pair and falls back quietly to the
reference; naming a backend explicitly that cannot run fails loudly, saying
what is missing. Optional backends (Triton, NPU) register themselves only when
their imports succeed, so ``import kernels`` never breaks because of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .formats import FormatSpec

__all__ = ["Backend", "BackendError", "register", "select", "available", "REGISTRY"]


class BackendError(RuntimeError):
    """An explicitly requested backend cannot run here."""


@dataclass(frozen=True)
class Backend:
    name: str
    priority: int
    #: (device, spec) -> None when supported, else the reason it is not.
    check: Callable[[torch.device, FormatSpec], str | None]
    run: Callable[[torch.Tensor, FormatSpec, torch.Generator | None], torch.Tensor]
    description: str = ""
    #: Optional fused quantize + statistics: (x, spec, input_stats, cache) -> kernels.stats.ErrorSums
    #: without writing the quantized tensor (``kernels.stats.format_sums`` uses it).
    sums: Callable[..., object] | None = None


REGISTRY: dict[str, Backend] = {}


def register(backend: Backend) -> None:
    REGISTRY[backend.name] = backend


def available() -> list[str]:
    return sorted(REGISTRY, key=lambda n: -REGISTRY[n].priority)


def select(device: torch.device | str, spec: FormatSpec, backend: str = "auto") -> Backend:
    device = torch.device(device)
    if backend != "auto":
        b = REGISTRY.get(backend)
        if b is None:
            known = ", ".join(available())
            raise BackendError(f"backend {backend!r} is not available here (available: {known})")
        why = b.check(device, spec)
        if why:
            raise BackendError(f"backend {backend!r} cannot run {spec} on {device}: {why}")
        return b
    for name in available():
        b = REGISTRY[name]
        if b.priority >= 0 and b.check(device, spec) is None:
            return b
    raise BackendError(f"no backend supports {spec} on {device}")  # unreachable: reference supports all


def _reference_run(x, spec, generator):
    from .reference import fake_quantize_ref

    return fake_quantize_ref(x, spec, generator)


register(Backend("reference", 0, lambda device, spec: None, _reference_run, "pure PyTorch ground truth; any device"))


def _cpu_fast_check(device: torch.device, spec: FormatSpec) -> str | None:
    return None if device.type == "cpu" else f"cpu-fast runs on the CPU only, not {device.type}"


def _cpu_fast_run(x, spec, generator):
    from .chunked import fake_quantize_chunked
    from .fast import lookup
    from .reference import fake_quantize_ref

    return fake_quantize_chunked(x, spec, generator, fake_quantize_ref, lookup(spec))


register(
    Backend(
        "cpu-fast",
        10,
        _cpu_fast_check,
        _cpu_fast_run,
        "the reference kernels on cache-sized pieces in parallel threads; CPU",
    )
)


def _compile_check(device: torch.device, spec: FormatSpec) -> str | None:
    from .compiled import unavailable_reason

    return unavailable_reason(device, spec)


def _compile_run(x, spec, generator):
    from .compiled import fake_quantize_compiled

    return fake_quantize_compiled(x, spec)


# Negative priority: only used when asked for by name.
register(
    Backend(
        "compile",
        -10,
        _compile_check,
        _compile_run,
        "the reference kernels fused by torch.compile (opt-in; compiles per format and shape)",
    )
)


# Optional backends register themselves when their imports work (DESIGN.md: triton/, npu/).
try:
    from . import triton as _triton  # noqa: F401
except Exception:  # triton missing or broken: the backend is simply not there
    pass
