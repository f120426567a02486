"""The pure-PyTorch reference backend: the ground truth every fast path must equal bit for bit.

:func:`fake_quantize_ref` is the one place that maps a :class:`~kernels.formats.FormatSpec`
to the keyword arguments of a family's reference function. Each family lives in its
own module; they are imported lazily so ``import kernels`` stays cheap.
"""

from __future__ import annotations

import torch

from ..formats import FormatSpec

__all__ = ["fake_quantize_ref"]


def _mx(x, s, gen):
    from .mx import quantize_mx_ref

    return quantize_mx_ref(
        x,
        elem=s["element"],
        scale_bits=s["scale_bits"],
        axes=(s["axis"],),
        block=s["block"],
        round=s["round"],
        scale=s["scale"],
        minus_exp=s["minus_exp"],
        shared_exp_method=s["shared_exp"],
        flush_fp32_subnorms=s["flush_fp32_subnorms"],
        emulate=s["emulate"],
        generator=gen,
    )


def _qtype(x, s, gen):
    from .qtype import quantize_qtype_ref

    return quantize_qtype_ref(
        x,
        exp_bits=s["E"],
        man_bits=s["M"],
        k_bits=s["k"],
        blk_size=s["b"],
        k_outer_bits=s["K"],
        blk_outer_size=s["B"],
        carry=s["carry"],
        off=s["off"],
        axis=s["axis"],
        emulate=s["emulate"],
    )


def _tmx(x, s, gen):
    from .tmx import quantize_tmx_ref

    return quantize_tmx_ref(x, n=s["N"], axis=s["axis"], emulate=s["emulate"])


def _nvf4(x, s, gen):
    from .nvfp import quantize_nvf4_ref

    return quantize_nvf4_ref(x, axis=s["axis"], emulate=s["emulate"])


def _nvfp4(x, s, gen):
    from .nvfp import quantize_nvfp4_ref

    return quantize_nvfp4_ref(x, axis=s["axis"])


def _nf4(x, s, gen):
    from .nf4 import quantize_nf4_ref

    return quantize_nf4_ref(x, block=s["block"], axis=s["axis"])


def _nf4grid(x, s, gen):
    from .nf4 import quantize_nf4_grid_ref

    return quantize_nf4_grid_ref(x, outer=s["B"], block=s["b"], axis=s["axis"], emulate=s["emulate"])


def _fp8tensor(x, s, gen):
    from .fp8 import quantize_fp8_tensor_ref

    return quantize_fp8_tensor_ref(x, elem=s["element"], emulate=s["emulate"])


def _cast(x, s, gen):
    from .cast import quantize_cast_ref

    return quantize_cast_ref(x, dtype=s["element"], emulate=s["emulate"])


def _int8sym(x, s, gen):
    from .int8sym import quantize_int8sym_ref

    return quantize_int8sym_ref(x, axis=s["axis"], emulate=s["emulate"])


_OUT_DTYPES = {"input": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _hif8(x, s, gen):
    from .hif8 import quantize_hif8_ref

    out = s["out"]
    return quantize_hif8_ref(
        x,
        scale=s["scale"],
        variant=s["variant"],
        underflow=None if s["underflow"] == "default" else s["underflow"],
        overflow=None if s["overflow"] == "default" else s["overflow"],
        k=s["k"],
        out_dtype=None if out == "default" else (_OUT_DTYPES[out] or x.dtype),
        emulate=s["emulate"],
    )


def _hifx(x, s, gen):
    from .hifx import quantize_hifx_ref

    return quantize_hifx_ref(x, n=s["N"], axis=s["axis"], variant=s["variant"], emulate=s["emulate"])


def _hif4_paper(x, s, gen):
    from .hif4 import quantize_hif4_paper_ref

    return quantize_hif4_paper_ref(x, axis=s["axis"])


def _dhif8(x, s, gen):
    from .dhif8 import quantize_dhif8_ref

    return quantize_dhif8_ref(x, amax=s["amax"], scale_position=s["scale_position"], emulate=s["emulate"])


_FAMILY_FUNCS = {
    "mx": _mx,
    "qtype": _qtype,
    "tmx": _tmx,
    "nvf4": _nvf4,
    "nvfp4": _nvfp4,
    "nf4": _nf4,
    "nf4grid": _nf4grid,
    "fp8tensor": _fp8tensor,
    "cast": _cast,
    "int8sym": _int8sym,
    "hif8": _hif8,
    "hifx": _hifx,
    "hif4_paper": _hif4_paper,
    "dhif8": _dhif8,
}


def fake_quantize_ref(x: torch.Tensor, spec: FormatSpec, generator: torch.Generator | None = None) -> torch.Tensor:
    """Quantize then dequantize ``x`` in ``spec`` with the reference kernels (never modifies ``x``)."""
    return _FAMILY_FUNCS[spec.family](x, spec, generator)
