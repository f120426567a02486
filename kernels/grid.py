"""Every representable value of each element format of 8 bits or fewer, at unit scale.

This is the shared truth for the exhaustive tests, code-book rounding and
``fqtool explain``. Values are computed from each format's definition (never
read from a table of literals, except the NF4 code book, which *is* a table).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .formats import FormatSpec, parse
from .reference.nf4 import NF4_CODE

__all__ = ["MiniFloat", "MINIFLOATS", "element_values", "minifloat"]


@dataclass(frozen=True)
class MiniFloat:
    """A sign + ``ebits`` exponent + ``mbits`` mantissa float with subnormals and no Inf/NaN codes used.

    ``emin`` is the exponent of the smallest normal; ``max_norm`` the largest finite
    magnitude (which may sit below the top code, e.g. 448 for E4M3, whose top
    mantissa code is NaN).
    """

    name: str
    ebits: int
    mbits: int
    emin: int
    emax: int
    max_norm: float

    @property
    def min_subnormal(self) -> float:
        return 2.0 ** (self.emin - self.mbits)

    def magnitudes(self) -> list[float]:
        """All non-negative finite values, ascending (0, subnormals, normals up to max_norm)."""
        step = 2.0 ** (self.emin - self.mbits)
        vals = [k * step for k in range(2**self.mbits)]  # 0 and the subnormals
        for e in range(self.emin, self.emax + 1):
            for m in range(2**self.mbits):
                v = (1 + m / 2**self.mbits) * 2.0**e
                if v <= self.max_norm:
                    vals.append(v)
        return vals


# formats-mx.md §1.1.
MINIFLOATS: dict[str, MiniFloat] = {
    m.name: m
    for m in (
        MiniFloat("fp8_e4m3", 4, 3, -6, 8, 448.0),
        MiniFloat("fp8_e5m2", 5, 2, -14, 15, 57344.0),
        MiniFloat("fp6_e3m2", 3, 2, -2, 4, 28.0),
        MiniFloat("fp6_e2m3", 2, 3, 0, 2, 7.5),
        MiniFloat("fp4_e2m1", 2, 1, 0, 2, 6.0),
    )
}


def qtype_minifloat(E: int, M: int) -> MiniFloat:
    """The element of a seed QType ``e{E}m{M}...`` string (formats-mx.md §3.2), E > 0."""
    from .reference.qtype import qtype_fields

    f = qtype_fields(E, M, k_bits=8, blk_size=1)
    return MiniFloat(f"e{E}m{M}", E, M, f.exp_min, f.exp_max, f.fp_val_max)


def _hif8_magnitudes() -> list[float]:
    """formats-hifloat.md §3.1: the 126 positive finite HiF8 values and 0."""
    vals = {0.0}
    vals.update(2.0 ** (m - 23) for m in range(1, 8))  # denormal mode, Dot 0000
    # (exponent magnitudes, mantissa bits) per Dot code: 0001, 001, 01, 10, 11
    for mags, w in (((0,), 3), ((1,), 3), ((2, 3), 3), (range(4, 8), 2), (range(8, 16), 1)):
        for mag in mags:
            for e in {mag, -mag}:
                for m in range(2**w):
                    vals.add((1 + m / 2**w) * 2.0**e)
    vals.discard(1.5 * 2.0**15)  # S 11 0 111 1 is Inf
    return sorted(vals)


def minifloat(spec: FormatSpec) -> MiniFloat | None:
    """The minifloat element of a format, or None when its element is not a minifloat."""
    if spec.family == "qtype":
        E, M = spec["E"], spec["M"]
        return qtype_minifloat(E, M) if E > 0 else None
    return MINIFLOATS.get(spec.get("element"))


def _signed(mags: list[float]) -> torch.Tensor:
    t = torch.tensor(sorted(set(mags)), dtype=torch.float64)
    return torch.cat([-t[t > 0].flip(0), t])


def element_values(spec: FormatSpec | str) -> torch.Tensor:
    """All values of the format's element at unit scale (block/tensor scale 1), ascending, float64.

    For integer-like elements the unit is one step: MX INT8 steps by 1/64,
    ``int8sym`` by 1 (times amax/127), the seed's NF4 grid by 1/7, HiFX/TMX by
    their mantissa step.
    """
    spec = parse(spec)
    mf = minifloat(spec)
    if mf is not None:
        return _signed(mf.magnitudes())
    f, el = spec.family, spec.get("element")
    if f == "qtype":  # E == 0: sign + M-bit integer magnitude (formats-mx.md §3.4)
        return _signed([float(k) for k in range(2 ** spec["M"])])
    if el == "int8" and f == "mx":
        return _signed([k / 64 for k in range(128)])  # formats-mx.md §1.1, ±127/64
    if f == "int8sym":
        return _signed([float(k) for k in range(128)])
    if f == "nf4":
        return torch.tensor(NF4_CODE, dtype=torch.float64)
    if f == "nf4grid":
        return _signed([k / 7 for k in range(8)])
    if el == "hif8":
        return _signed(_hif8_magnitudes())
    if f == "hifx":
        m = spec["N"] - 1
        return _signed([k * 2.0 ** (1 - m) for k in range(2**m)])
    if f == "hif4_paper":
        return _signed([k / 4 for k in range(8)])
    if f == "tmx":
        m = spec["N"] - 2
        return _signed([k * 2.0 ** (1 - m) for k in range(2**m)])
    raise ValueError(f"{spec}: element {el} has more than 8 bits; its values are not enumerated")
