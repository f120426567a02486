"""The seed's ``QType`` (``quant/ops/qtype.py`` and the quant_cy_npu copy), ported.

``QType(desc)`` accepts every name of formats-mx.md §3.1 that has a sound
meaning: ``fp16``, ``fp32``, ``bf16``, ``int8sym``, ``hif8``, ``dhif8``,
``hifx{2..5}_v12``, ``nf4B{B}b{b}``, ``tmx{N}``, ``nvf4``, the aliases
``mxfp4``/``mxfp6e3m2``/``mxfp8e4m3``/``mxfp8e5m2`` and the generic
``e{E}m{M}k{k}b{b}[c]`` / ``e{E}m{M}K{K}k{k}B{B}b{b}[c][off{N}]`` grammar.
It carries the seed's fields and methods (``dim``, ``dim_``, ``copy``), and
:meth:`QType.spec` gives the fqtool format it denotes, so
``kernels.fake_quantize(x, QType('mxfp4').dim(0))`` works.

Two seed bugs are not kept: ``mxfp6e3m2`` is E3M2 (the NPU parser made it
E2M3) and an upper-case ``C`` means carry like ``c``.
"""

from __future__ import annotations

import copy
import re

from .formats import PRESETS, QTYPE_RE, FormatError, FormatSpec, parse
from .reference.qtype import qtype_fields

__all__ = ["QType"]


class QType:
    """A seed quantization type descriptor (formats-mx.md §3.2)."""

    def __init__(self, desc: str):
        if not isinstance(desc, str):
            raise FormatError(f"QType expects a descriptor string, not {type(desc).__name__}")
        self.desc = desc
        self.exp_bits = self.man_bits = self.k_bits = 0
        self.k_outer_bits = 0
        self.blk_size = 1
        self.blk_outer_size = 1
        self.do_carry = False
        self.exp_offset = 0
        self.exp_max = self.exp_min = self.k_max = 0
        self.fp_val_max = 0.0
        self.q_dim = -1
        self._format = self._parse(desc)

    # -- parsing ------------------------------------------------------------------
    def _parse(self, desc: str) -> str:
        """Fill the seed fields; return the fqtool format name (without the axis)."""
        if desc in ("fp16", "fp32", "bf16", "int8sym", "nvf4", "dhif8"):
            self.blk_size = {"nvf4": 256, "dhif8": 512}.get(desc, 1)
            return desc
        if desc == "hif8":
            # quant_dequant_float's QFuncs/hif8.py: elementwise, tiny values flush (formats-hifloat.md §3.2 B).
            self.blk_size = 512
            return "hif8:scale=none,underflow=flush"
        m = re.fullmatch(r"hifx([2-5])_v12", desc)
        if m:
            # The NPU parser's descriptor e0m{n-1}K1k4B1b64Coff38; the v12 kernel reads only man_bits.
            self._generic(QTYPE_RE.fullmatch(f"e0m{int(m[1]) - 1}K1k4B1b64Coff38"))
            return desc
        m = re.fullmatch(r"nf4B(\d+)b(\d+)", desc)
        if m:
            self.blk_outer_size, self.blk_size = int(m[1]), int(m[2])
            return desc
        m = re.fullmatch(r"tmx(\d+)", desc)
        if m:
            self.blk_size, self.man_bits = 16, int(m[1]) - 2
            return parse(desc).name
        name = desc
        if desc in PRESETS and PRESETS[desc][0] == "qtype":
            p = PRESETS[desc][1]
            name = f"e{p['E']}m{p['M']}k{p['k']}b{p['b']}{'c' if p['carry'] else ''}"
        g = QTYPE_RE.fullmatch(name)
        if not g:
            parse(desc)  # raises the parser's error with close matches
            raise FormatError(f"QType: {desc!r} is not a QType descriptor")
        self._generic(g)
        return parse(desc).name

    def _generic(self, g: re.Match) -> None:
        two = g["K"] is not None
        try:
            f = qtype_fields(
                int(g["E"]),
                int(g["M"]),
                int(g["k2"] if two else g["k1"]),
                int(g["b2"] if two else g["b1"]),
                int(g["K"]) if two else 0,
                int(g["B"]) if two else 1,
                bool(g["c2"] if two else g["c1"]),
                int(g["off"]) if g["off"] is not None else None,
            )
        except ValueError as e:
            raise FormatError(f"QType {self.desc!r}: {e}") from None
        self.exp_bits, self.man_bits, self.k_bits, self.blk_size = f.exp_bits, f.man_bits, f.k_bits, f.blk_size
        self.k_outer_bits, self.blk_outer_size, self.do_carry = f.k_outer_bits, f.blk_outer_size, f.carry
        self.exp_max, self.exp_min, self.k_max = f.exp_max, f.exp_min, f.k_max
        self.exp_offset, self.fp_val_max = f.exp_offset, f.fp_val_max

    @property
    def man_shift_bit(self) -> int:
        return self.man_bits

    # -- the seed's methods -------------------------------------------------------
    def dim(self, d: int) -> QType:
        """A deep copy quantizing along axis ``d``."""
        q = self.copy()
        q.q_dim = d
        return q

    def dim_(self, d: int) -> QType:
        """Set the quantization axis in place; returns self."""
        self.q_dim = d
        return self

    def copy(self) -> QType:
        return copy.deepcopy(self)

    def __repr__(self) -> str:
        return f"QType({self.desc}, dim={self.q_dim}, exp_offset={self.exp_offset})"

    def __eq__(self, other) -> bool:
        return isinstance(other, QType) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((self.desc, self.q_dim))

    # -- fqtool -------------------------------------------------------------------
    def spec(self) -> FormatSpec:
        """The fqtool format this QType denotes, along ``q_dim``."""
        s = parse(self._format)
        if any(k == "axis" for k, _ in s.options):
            s = s.replace(axis=self.q_dim)
        return s
