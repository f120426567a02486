"""Pure-PyTorch reference for HiF8 (spec formats-hifloat.md §3, §4.1).

Two public functions:

* :func:`hif8_round` applies the §3.2 element rule (one rule, parameterised by an
  underflow and an overflow mode) to a float32 tensor.
* :func:`quantize_hif8_ref` is what the ``hif8`` format string means: by default the
  seed's public ``quant_hif8`` recipe (per-tensor scale to amax 8, element variant A,
  bf16 out; §4.1), or the bare element rule with ``scale="none"``, or the paper
  conversion with ``variant="paper"`` (§3.4).

``emulate="exact"`` (the default) computes in float32 with exponents read from the
float bits and exact ties-away rounding. ``emulate="seed"`` repeats the seed's own
arithmetic (float ``log2`` modelled by ``_bits.seed_log2_f32``, ``floor(v + 0.5)``,
and for bf16/fp16 input of the element functions every step in the input dtype), so
that it reproduces the seed's outputs bit for bit.
"""

from __future__ import annotations

import torch

from ._bits import F32, I32, exp2i, seed_log2_f32

UNDERFLOW_MODES = ("min", "flush")
OVERFLOW_MODES = ("saturate", "inf", "tof8")
EMULATE_MODES = ("exact", "seed")

#: Largest finite HiF8 magnitude, 2^15 (code 0x6E).
HIF8_MAX = 32768.0
#: Smallest HiF8 magnitude, the denormal 2^-22 (code 0x01).
HIF8_MIN = 2.0**-22
#: Below this (half of HIF8_MIN) a magnitude is flushed in mode "flush" (§3.2 step 3).
HIF8_FLUSH_BELOW = 2.0**-23
#: From this magnitude up, 1.25·2^15, a value is an overflow (§3.2 step 4): it is the
#: midpoint between 32768 and the Inf pattern's would-be value 49152.
HIF8_OVERFLOW_FROM = 40960.0
#: The finite non-HiF8 value that variant C (To_HiF8) returns for [40960, 49152) (§3.2).
TOF8_FINITE = 49152.0

# The seed's own constants (quant_hif8_core / QFuncs/hif8.py), used only by emulate="seed".
_SEED_CLAMP_MAX = (2**15) * 0.95  # 31129.6: every value above it rounds to 32768 anyway
_SEED_LOG2_EPS = 2.0**-45  # float32/bf16 compute
_SEED_LOG2_EPS_F16 = 2.0**-14  # float16 compute (spec §3.5)
# quant_hif8's eps, torch.finfo(torch.float32).eps (§4.1 step 2).
_RECIPE_EPS = 2.0**-23


def _check(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r}: expected one of {', '.join(allowed)}")


def _mantissa_bits(e: torch.Tensor) -> torch.Tensor:
    """§3.2 step 6: w = 3 for |E| <= 3, 2 for |E| <= 7, 1 for |E| <= 15, else 0."""
    ae = e.abs()
    return (ae <= 3).to(e.dtype) + (ae <= 7).to(e.dtype) + (ae <= 15).to(e.dtype)


def _rounding_tables(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per biased float32 exponent b (0..255): half a HiF8 step and the step mask.

    HiF8's step 2^(E-w) depends only on the binade E = b - 127 (§3.2 steps 5-6), so on
    a float32 bit pattern, keeping w mantissa bits means clearing the low 23 - w bits.
    Adding half of the lowest kept bit first rounds the magnitude half away from zero
    (§3.2 step 7); a carry out of the mantissa lands in the exponent field and gives
    2^(E+1), which is always representable. b = 255 (NaN; Inf is clamped away) gets
    half 0 and an all-ones mask, so NaN passes unchanged.
    """
    b = torch.arange(256, dtype=I32, device=device)
    shift = 23 - _mantissa_bits(b - 127)
    half = torch.where(b == 255, 0, (1 << shift) >> 1)
    mask = torch.where(b == 255, -1, -(1 << shift))  # -(2^s) == ~(2^s - 1) in two's complement
    return half, mask


def _hif8_round_exact(y: torch.Tensor, underflow: str, overflow: str) -> torch.Tensor:
    """§3.2 on float32 ``y`` with the exact exponent (read from the bits); float32 out."""
    a = y.abs()
    # Steps 3 and 4 as clamps: [2^-23, 2^-22) is RHA between 0 and 2^-22, and in mode
    # "min" so is everything smaller. Clamping at 32768 is a plain saturation because
    # [28672, 40960) rounds to 32768 in step 7 anyway; the other overflow modes
    # overwrite a >= 40960 below. NaN passes through clamp. After the clamp every
    # value is a normal float32 in [2^-22, 2^15] (or NaN).
    bits = a.clamp(min=HIF8_MIN, max=HIF8_MAX).view(I32)
    half, mask = _rounding_tables(y.device)
    biased = (bits >> 23).long()  # steps 5-6: the binade, exactly, from the bits
    q = ((bits + half.take(biased)) & mask.take(biased)).view(F32)  # step 7, exact RHA
    # Step 8: the sign of y; -0 and the mode-"min" zero are fixed just below.
    q = torch.copysign(q, y)
    zero = (a < HIF8_FLUSH_BELOW) if underflow == "flush" else (a == 0)
    # HiF8 has one zero: ±0 and flushed values give +0 (§3.2 step 2).
    q = torch.where(zero, 0.0, q)
    if overflow == "inf":
        q = torch.where(a >= HIF8_OVERFLOW_FROM, torch.copysign(torch.full_like(q, float("inf")), y), q)
    elif overflow == "tof8":
        big = torch.full_like(q, TOF8_FINITE).masked_fill_(a >= TOF8_FINITE, float("inf"))
        q = torch.where(a >= HIF8_OVERFLOW_FROM, torch.copysign(big, y), q)
    return q


def _seed_hif8_core(x: torch.Tensor, underflow: str) -> torch.Tensor:
    """The seed's element kernels, every step in ``x``'s dtype (spec §3.2, §3.5).

    ``underflow="min"`` is ``quant/ops/hifp.py::quant_hif8_core`` (variant A),
    ``"flush"`` is ``QFuncs/hif8.py::quant_hif8`` (variant B, whose zeroing of its
    input is not copied: the sign is zeroed on a local instead). Both saturate through
    the clamp at 0.95·2^15. torch's CPU ``log2`` is modelled by ``seed_log2_f32``
    (then rounded to a bf16/fp16 compute dtype, which is what torch does there).
    """
    cd = x.dtype
    a = x.abs()
    sign = torch.sign(x)  # 0 for ±0, NaN for NaN
    if underflow == "flush":
        sign = torch.where(a < HIF8_FLUSH_BELOW, torch.zeros_like(sign), sign)
    au = a.clamp(min=HIF8_MIN, max=_SEED_CLAMP_MAX)  # clamp rounds the bounds to cd
    eps = _SEED_LOG2_EPS_F16 if cd == torch.float16 else _SEED_LOG2_EPS
    e = torch.floor(seed_log2_f32((au + eps).to(F32)).to(cd))
    w = _mantissa_bits(e)
    # 2.0**(±e ± w) of the seed: integer powers of two, exact in cd unless they
    # overflow or underflow it, which exp2i(...).to(cd) reproduces.
    # NaN exponents (NaN input) are zeroed before the int cast; the result is NaN anyway.
    ei = e.nan_to_num(0.0).to(torch.int32)
    wi = w.to(torch.int32)
    up = exp2i(wi - ei).to(cd)
    down = exp2i(ei - wi).to(cd)
    return torch.floor(au * up + 0.5) * down * sign


def _seed_to_hif8(x: torch.Tensor) -> torch.Tensor:
    """``To_F8.py::To_HiF8`` (variant C) on a float32 tensor: its float64 result.

    The seed loops in numpy over float32 scalars: E = floor(log2|z|) (numpy's float32
    log2, modelled by ``seed_log2_f32``), E = -23 is moved to -22, and the value is
    rounded with floor(v + 0.5) in float32. ``z == np.nan`` is never true, so NaN
    takes the arithmetic path and stays NaN; ±Inf are returned as they are.
    """
    x = x.to(F32)
    a = x.abs()
    sign = torch.where(x >= 0, 1.0, -1.0).to(F32)
    e = torch.floor(seed_log2_f32(a))
    e = torch.where(e == -23, torch.full_like(e, -22.0), e)
    w = _mantissa_bits(e)
    # e is finite wherever the result is used (a >= 2^-23 and a < 49152 or NaN).
    ei = torch.nan_to_num(e, nan=0.0, posinf=0.0, neginf=0.0).to(torch.int32)
    wi = w.to(torch.int32)
    q = torch.floor(a * exp2i(wi - ei) + 0.5) * exp2i(ei - wi) * sign
    q = torch.where(torch.isnan(a), a, q)
    q = torch.where(a < HIF8_FLUSH_BELOW, torch.zeros_like(q), q)
    q = torch.where(a >= TOF8_FINITE, sign * float("inf"), q)
    return q.to(torch.float64)


def hif8_round(
    y: torch.Tensor,
    *,
    underflow: str = "min",
    overflow: str = "saturate",
    emulate: str = "exact",
) -> torch.Tensor:
    """The §3.2 HiF8 element rule on ``y`` (computed in float32); returns float32.

    ``underflow``: ``"min"`` sends 0 < |y| < 2^-22 to ±2^-22 (seed variant A);
    ``"flush"`` sends |y| < 2^-23 to +0 (variants B, C, paper). ``overflow`` (for
    |y| >= 40960 and ±Inf): ``"saturate"`` gives ±32768, ``"inf"`` ±Inf, ``"tof8"``
    ±49152 below 49152 and ±Inf from there (variant C). Ties round away from zero. NaN
    stays NaN, and -0 gives +0.

    ``emulate="seed"`` runs the seed function with these modes in float32: min +
    saturate is ``quant_hif8_core``, flush + saturate is ``QFuncs/hif8.py``, flush +
    tof8 is ``To_HiF8`` (its values, returned as float32). Other combinations have no
    seed function and raise ValueError.
    """
    _check("underflow", underflow, UNDERFLOW_MODES)
    _check("overflow", overflow, OVERFLOW_MODES)
    _check("emulate", emulate, EMULATE_MODES)
    y = y.to(F32)
    if emulate == "exact":
        return _hif8_round_exact(y, underflow, overflow)
    if overflow == "saturate":
        return _seed_hif8_core(y, underflow)
    if (underflow, overflow) == ("flush", "tof8"):
        return _seed_to_hif8(y).to(F32)
    raise ValueError(
        f"emulate='seed': no seed function implements underflow={underflow!r}, "
        f"overflow={overflow!r}; use emulate='exact'"
    )


def _per_tensor_scale(amax: torch.Tensor, k: float) -> torch.Tensor:
    """§4.1 steps 2-3: s = k / fl(amax + 2^-23), the division in float32.

    ``amax`` is a 0-dim tensor; adding the Python eps keeps its dtype, so for a bf16
    or fp16 amax (emulate="seed" only) the eps is rounded away, as in the seed.
    """
    return torch.tensor(k, dtype=F32, device=amax.device) / (amax + _RECIPE_EPS)


def _quant_hif8_recipe(
    x: torch.Tensor, underflow: str, overflow: str, k: float, out_dtype: torch.dtype, emulate: str
) -> torch.Tensor:
    """The seed's ``quant_hif8`` forward (§4.1) with a choice of element modes."""
    if x.numel() == 0:
        return torch.empty(x.shape, dtype=out_dtype, device=x.device)
    if emulate == "exact":
        # "Decisions behind the defaults": amax + eps in float32 after upcasting.
        xf = x.detach().to(F32)
        s = _per_tensor_scale(xf.abs().amax(), k)
        y = xf * s
        q = hif8_round(y, underflow=underflow, overflow=overflow)
        # The seed's straight-through y + (q - y) is q exactly, except possibly for
        # |y| < 2^-23; the default evaluates it as q.
        return (q / s).to(out_dtype)
    # emulate="seed": literally the seed's expression. amax and amax + eps are in x's
    # dtype; q goes through bf16 (exact: every HiF8 value fits), and the output is
    # fl32(fl32(y + fl32(q - y)) / s) rounded to out_dtype.
    xd = x.detach()
    s = _per_tensor_scale(xd.abs().amax(), k)
    y = xd.to(F32) * s
    q = hif8_round(y, underflow=underflow, overflow=overflow, emulate="seed").to(torch.bfloat16)
    return ((y + (q - y)) / s).to(out_dtype)


def quantize_hif8_ref(
    x: torch.Tensor,
    *,
    scale: str = "tensor",
    variant: str = "seed",
    underflow: str | None = None,
    overflow: str | None = None,
    k: float = 8.0,
    out_dtype: torch.dtype | None = None,
    emulate: str = "exact",
) -> torch.Tensor:
    """HiF8 fake quantization as the ``hif8`` format string means it.

    * ``scale="tensor"`` (default): the seed's public ``quant_hif8`` recipe (§4.1):
      s = k / (max|x| + 2^-23) in float32, y = x·s, HiF8 element rule on y, result
      q / s. Output bf16 by default, whatever the input dtype (the seed always
      returns bf16). A NaN or ±Inf anywhere makes the whole output NaN (§4.1).
    * ``scale="none"``: the element rule on x itself; output in x's dtype.
    * ``variant="seed"`` (default) uses element variant A: underflow ``"min"``,
      overflow ``"saturate"`` (±Inf also saturate). ``variant="paper"`` is the
      paper/en_dtypes conversion (§3.4): it is always elementwise (it implies
      ``scale="none"``, whatever ``scale`` says), defaults to underflow ``"flush"``
      and overflow ``"inf"``, and keeps ±Inf inputs as ±Inf in every overflow mode.
    * ``underflow`` / ``overflow`` override the variant's defaults (§3.2).
    * ``out_dtype`` overrides the output dtype.
    * ``emulate="exact"``: float32 compute (bf16/fp16 upcast first), exact exponents
      and ties. ``emulate="seed"``: the seed's arithmetic; for ``scale="none"`` with
      bf16/fp16 input it computes in the input dtype (the seed's native path, incl.
      the fp16 eps 2^-14 of §3.5), and with overflow ``"tof8"`` it returns float64
      like ``To_HiF8`` unless ``out_dtype`` is given. ``variant="paper"`` has no seed
      code (its reference, en_dtypes, is exact), so there both modes agree.

    The input tensor is never modified.
    """
    _check("scale", scale, ("tensor", "none"))
    _check("variant", variant, ("seed", "paper"))
    _check("emulate", emulate, EMULATE_MODES)
    paper = variant == "paper"
    if underflow is None:
        underflow = "flush" if paper else "min"
    if overflow is None:
        overflow = "inf" if paper else "saturate"
    _check("underflow", underflow, UNDERFLOW_MODES)
    _check("overflow", overflow, OVERFLOW_MODES)
    if not x.is_floating_point():
        raise TypeError(f"hif8 needs a floating-point tensor, got {x.dtype}")

    if scale == "tensor" and not paper:
        return _quant_hif8_recipe(
            x, underflow, overflow, k, torch.bfloat16 if out_dtype is None else out_dtype, emulate
        )

    x = x.detach()
    if paper:
        q = hif8_round(x, underflow=underflow, overflow=overflow)
        # §3.4: the paper's saturating conversion still maps ±Inf to ±Inf.
        q = torch.where(torch.isinf(x), x.to(F32), q)
    elif emulate == "exact":
        q = hif8_round(x, underflow=underflow, overflow=overflow)
    elif overflow == "tof8":
        if underflow != "flush":
            raise ValueError("emulate='seed' with overflow='tof8' needs underflow='flush' (To_HiF8)")
        q = _seed_to_hif8(x)
        return q if out_dtype is None else q.to(out_dtype)
    elif overflow == "saturate":
        q = _seed_hif8_core(x, underflow)  # native compute dtype, as the seed
    else:
        q = hif8_round(x, underflow=underflow, overflow=overflow, emulate="seed")  # raises
    return q.to(x.dtype if out_dtype is None else out_dtype)
