"""Fast CPU kernels: the same results as ``kernels.reference``, bit for bit, in far fewer cycles.

The ``cpu-fast`` backend runs these on cache-sized pieces (``kernels.chunked``); a format
whose options have no fast kernel here runs its reference kernel the same way.

What makes a kernel fast on this CPU build of torch (measured on 256K-element float32
pieces, one thread; see ``_ops.py``): plain float arithmetic, ``floor``, ``round``,
``abs``, int32 shifts/adds/``&``/``|`` and in-place ``clamp_`` run at ~30-70 us per
pass; anything that makes or reads a ``bool`` tensor (comparisons, ``where``,
``masked_fill``, ``isnan``) costs 4-60x more, as do ``trunc``, ``log2``,
``bucketize`` and float8 casts. So fast kernels decide with arithmetic and bits:
exponents from ``view(int32) >> 23``, powers of two built from bits, ties-away
rounding as ``floor(a + (0.5 - 2^-25))`` (``_ops.round_half_away_``), NaN carried by arithmetic instead of masks.

Every kernel here must equal its reference kernel bit for bit on every input
(``tests/kernels/test_fast.py`` checks random and corner-case tensors).

A fast kernel has the signature ``kernel(x, spec, amax) -> Tensor``: ``x`` is one piece
(float32, bfloat16 or float16; the blocked axis is ``spec["axis"]``), ``amax`` is the
whole tensor's max |x| as a 0-dim float32 tensor for per-tensor formats, else None.
A kernel may also take a keyword ``out`` (a tensor of the result's shape and dtype, any
strides) and write its result there; ``kernels.chunked`` then passes each piece's slice
of the final result instead of copying a new piece into it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..formats import FormatSpec

__all__ = ["lookup", "register"]

FastKernel = Callable[[torch.Tensor, FormatSpec, "torch.Tensor | None"], torch.Tensor]

#: family -> (supports(spec) -> bool, kernel)
_REGISTRY: dict[str, tuple[Callable[[FormatSpec], bool], FastKernel]] = {}
_loaded = False


def register(family: str, supports: Callable[[FormatSpec], bool], kernel: FastKernel) -> None:
    _REGISTRY[family] = (supports, kernel)


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib
    import pkgutil

    for m in pkgutil.iter_modules(__path__):
        if not m.name.startswith("_"):
            importlib.import_module(f"{__name__}.{m.name}")  # each module calls register()


def lookup(spec: FormatSpec) -> FastKernel | None:
    """The fast kernel for this spec, or None when its options are not covered."""
    _load()
    entry = _REGISTRY.get(spec.family)
    if entry is None or not entry[0](spec):
        return None
    return entry[1]
