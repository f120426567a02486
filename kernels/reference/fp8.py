"""Reference per-tensor FP8 kernel (``fp8_e4m3``, ``fp8_e5m2``; seed aliases ``nvfp8_*``), spec formats-mx.md §6.

:func:`quantize_fp8_tensor_ref` scales the whole tensor by one float32 factor
``scale = max_norm / amax`` so that ``amax`` lands on the FP8 format's largest
value, rounds ``x·scale`` to FP8 (RNE, saturating) and divides the scale back out.

- ``emulate="exact"`` (default, golden ``expected_exact``): ``scale`` is
  ``max_norm / amax`` divided in float64 and rounded once to float32, without
  the seed's ``+eps`` in the denominator (which only guarded against 0/0 and
  kept ``amax`` from mapping exactly to ``max_norm``). This is the arithmetic of
  torchao's float8 tensorwise scaling. bf16/fp16 inputs are upcast and the
  result is rounded back to the input dtype.
- ``emulate="seed"`` (golden ``expected``): the seed's
  ``quant/ops/nvfp.py::_quantize_nvfp_with_torch_dtype``: ``scale =
  max_norm / (amax + eps)`` in double precision with ``eps = 2^-23``, applied as
  a float32 number; the result is float32 whatever the input dtype.

Special cases (both modes):

- ``amax < 2^-23`` (``torch.finfo(float32).eps``), including an all-zero tensor:
  the input is returned unchanged (as a copy; float32 in seed mode). This is
  the seed's explicit guard, kept in exact mode.
- NaN or ±Inf anywhere: ``amax`` is NaN or Inf, the scale NaN or 0, and the
  whole tensor comes out NaN.
- No FP8 overflow is possible: ``|x·scale| <= max_norm`` up to one rounding,
  which the RNE step maps back to ``max_norm``.

The amax stays a 0-dim device tensor throughout (no host synchronisation).

The module also holds the float-grid helpers the NVFP4 and NF4 reference
kernels share: :class:`FloatGrid` (one binary float format with subnormals and
saturation), :func:`round_to_grid` (exact rounding onto it, exponent read from
the float32 bits) and :func:`div_by_const` (true division by a constant on any
device).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._bits import F32, I32, round_half_away, round_half_even

__all__ = [
    "FloatGrid",
    "E4M3",
    "E5M2",
    "E2M1",
    "FP8_ELEMENTS",
    "pow2_floor",
    "round_to_grid",
    "div_by_const",
    "check_emulate",
    "check_float_input",
    "quantize_fp8_tensor_ref",
]

EMULATE_MODES = ("exact", "seed")

#: ``torch.finfo(torch.float32).eps``: the seed's tiny-amax guard and its ``+eps`` (§6 step 1-2).
SEED_EPS = 2.0**-23


@dataclass(frozen=True)
class FloatGrid:
    """A binary float format: ``man_bits`` explicit mantissa bits, smallest normal
    exponent ``emin`` (subnormals below it, step ``2^(emin - man_bits)``), largest
    finite magnitude ``max_norm`` (spec §1.1)."""

    name: str
    man_bits: int
    emin: int
    max_norm: float


E4M3 = FloatGrid("fp8_e4m3", 3, -6, 448.0)
E5M2 = FloatGrid("fp8_e5m2", 2, -14, 57344.0)
E2M1 = FloatGrid("fp4_e2m1", 1, 0, 6.0)

FP8_ELEMENTS: dict[str, FloatGrid] = {"fp8_e4m3": E4M3, "fp8_e5m2": E5M2}


def check_emulate(emulate: str) -> None:
    if emulate not in EMULATE_MODES:
        raise ValueError(f"emulate must be one of {EMULATE_MODES}, got {emulate!r}")


def check_float_input(x: torch.Tensor) -> None:
    """The block kernels compute in float32 (or in the input dtype for ``emulate=seed``),
    so only the three float types the goldens cover are accepted."""
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(f"expected a float32, bfloat16 or float16 tensor, got {x.dtype}")


def pow2_floor(v: torch.Tensor) -> torch.Tensor:
    """``2^floor(log2|v|)`` for float32 ``v`` with ``|v| >= 2^-126`` (normal), exactly; 0 for
    ±0 and subnormals; +Inf for ±Inf and NaN.

    Keeping only the exponent field of the bits is ``exp2i(floor_log2(v))`` for every
    normal ``v`` in two elementwise ops instead of about twenty; the callers clamp the
    result below at a normal power of two, which makes it exact for subnormals too.
    """
    return (v.view(I32) & 0x7F800000).view(F32)


def round_to_grid(v: torch.Tensor, grid: FloatGrid, *, ties: str = "even") -> torch.Tensor:
    """Round float32 ``v`` to the nearest value of ``grid``, exactly, saturating at ±max_norm.

    ``v`` is first clamped to ±max_norm: ``max_norm`` is a grid value and rounding is
    monotone, so this equals rounding then clamping, maps ±Inf to ±max_norm and keeps
    NaN (``clamp`` propagates it). The quantization step is read from the float32
    bits: ``2^max(floor(log2|v|), emin) · 2^-man_bits`` (subnormal grid values below
    ``2^emin``). Dividing by that power of two is exact, so the integer rounding
    (``ties`` "even": RNE as torch's float8 casts; "away": RNA) is the only rounding.
    """
    vc = v.clamp(-grid.max_norm, grid.max_norm)
    step = pow2_floor(vc).clamp(min=2.0**grid.emin) * 2.0**-grid.man_bits
    t = vc / step
    r = round_half_even(t) if ties == "even" else round_half_away(t)
    return r * step


def div_by_const(t: torch.Tensor, c: float) -> torch.Tensor:
    """``t / c`` as a true IEEE division in ``t``'s dtype, on any device.

    The seed divides by Python constants (``/ 6``, ``/ 127``, ...) on CPU, which is
    a true division. CUDA turns division by a CPU scalar into multiplication by its
    reciprocal, which can differ by one ulp, so the constant is made a 0-dim tensor
    on ``t``'s device instead (a fill, no host synchronisation). For bf16/fp16 ``t``
    the constant must be exact in that dtype (all callers use small integers).
    """
    return t / torch.full((), c, dtype=t.dtype, device=t.device)


@torch.no_grad()
def quantize_fp8_tensor_ref(x: torch.Tensor, *, elem: str, emulate: str = "exact") -> torch.Tensor:
    """Fake-quantize ``x`` to FP8 (``elem`` = "fp8_e4m3" | "fp8_e5m2") with one per-tensor scale (§6).

    Output dtype: the input dtype in exact mode, float32 in seed mode (like the seed).
    See the module docstring for the scale, and for NaN/Inf/zero/tiny tensors.
    """
    check_emulate(emulate)
    check_float_input(x)
    if elem not in FP8_ELEMENTS:
        raise ValueError(f"elem must be one of {sorted(FP8_ELEMENTS)}, got {elem!r}")
    grid = FP8_ELEMENTS[elem]
    xf = x.to(F32)  # may alias x when x is float32: only read below
    amax = xf.abs().amax()  # 0-dim; torch.amax propagates NaN
    amax64 = amax.to(torch.float64)  # exact
    max_norm = torch.full((), grid.max_norm, dtype=torch.float64, device=x.device)
    if emulate == "exact":
        # ao float8 tensorwise (§6): float64 quotient, rounded once to float32.
        # amax == 0 gives Inf here, but such a tensor is caught by the guard below.
        scale = (max_norm / amax64).to(F32)
    else:
        # Seed: Python double ``max_norm / (amax + eps)``; multiplying an fp32 tensor
        # by a Python float rounds that double to float32 first.
        scale = (max_norm / (amax64 + SEED_EPS)).to(F32)
    q = round_to_grid(xf * scale, grid) / scale  # RNE as torch's float8 casts (§6)
    # Guard of §6 step 1: a (near-)zero tensor is returned unchanged. NaN < eps is
    # False, so NaN/Inf tensors fall through to q, which is all NaN (module doc).
    out = torch.where(amax < SEED_EPS, xf, q)
    return out if emulate == "seed" else out.to(x.dtype)
