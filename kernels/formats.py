"""Format strings: ``NAME[:key=value,...]`` parsed into one frozen :class:`FormatSpec`.

Every format fqtool knows is data in the tables below: a *family* (which kernel
computes it and which options it takes), fixed *presets* (``mxfp8_e4m3``,
``hif8``...), parametric *patterns* (``e2m1k8b32c``, ``nf4B4b64``, ``tmx6``...)
and *aliases* (``nvfp8_e4m3`` -> ``fp8_e4m3``). :func:`parse` is the only parser;
``parse(str(spec)) == spec`` for every spec.

Semantics of each family: ``shared/spec/formats-mx.md`` and
``shared/spec/formats-hifloat.md``; the sections are cited below.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FormatError",
    "FormatSpec",
    "Rules",
    "parse",
    "list_formats",
    "FAMILIES",
]


class FormatError(ValueError):
    """An unknown or malformed format string, or a bad option value."""


# --------------------------------------------------------------------------- options


def _int(v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError("expected an integer")
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return int(str(v).strip())


def _float(v: Any) -> float:
    if isinstance(v, bool):
        raise ValueError("expected a number")
    f = float(v)
    if not math.isfinite(f):
        raise ValueError("expected a finite number")
    return f


def _opt_float(v: Any) -> float | None:
    return None if v is None or str(v).strip().lower() == "none" else _float(v)


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _minus_exp(v: Any) -> int | str | None:
    """``minus_exp`` of the seed's ``_quantize_mx`` (formats-mx.md §2.3): None, an int or an auto mode."""
    if v is None:
        return None
    s = str(v).strip().lower()
    if s == "none":
        return None
    if s in ("auto", "auto-2", "auto-reverse", "auto-fix"):
        return s
    return _int(v)


def _dtype_name(v: Any) -> str:
    s = str(v).strip().lower().replace("torch.", "")
    aliases = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32"}
    s = aliases.get(s, s)
    if s not in ("default", "input", "bf16", "fp16", "fp32"):
        raise ValueError("expected default, input, bf16, fp16 or fp32")
    return s


@dataclass(frozen=True)
class Option:
    key: str
    convert: Callable[[Any], Any]
    default: Any
    help: str
    choices: tuple[str, ...] = ()

    def value(self, raw: Any) -> Any:
        if self.choices:
            s = str(raw).strip().lower()
            if s not in self.choices:
                raise ValueError(f"expected one of {', '.join(self.choices)}")
            return s
        return self.convert(raw)


def _choice(key: str, default: str, choices: tuple[str, ...], help: str) -> Option:
    return Option(key, str, default, help, choices)


AXIS = Option("axis", _int, -1, "tensor axis along which blocks/groups run")
EMULATE = _choice(
    "emulate",
    "exact",
    ("exact", "seed"),
    "exact: the seed's algorithm evaluated exactly in float32; seed: the seed's own float arithmetic bit for bit",
)


@dataclass(frozen=True)
class Family:
    """A kernel family: the options it accepts and a one-line description."""

    name: str
    description: str
    options: tuple[Option, ...]

    def option(self, key: str) -> Option:
        for o in self.options:
            if o.key == key:
                return o
        raise KeyError(key)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "mx",
            "OCP-style MX block format through the seed's _quantize_mx (formats-mx.md §2)",
            (
                Option("block", _int, 32, "elements per shared scale along the axis (0: the whole axis)"),
                AXIS,
                _choice(
                    "round",
                    "nearest",
                    ("nearest", "even", "floor", "dither"),
                    "element rounding: ties away (nearest), ties to even, toward zero (floor), stochastic (dither)",
                ),
                _choice(
                    "scale",
                    "floor",
                    ("floor", "ceil", "rceil", "even", "carry"),
                    "shared-exponent rule (formats-mx.md §11.2)",
                ),
                Option(
                    "minus_exp",
                    _minus_exp,
                    None,
                    "seed offset: E = ceil(log2 amax) - minus_exp, or auto|auto-2|auto-reverse|auto-fix "
                    "(overrides scale)",
                ),
                Option("scale_bits", _int, 8, "bits of the shared exponent (range ±(2^(bits-1)-1))"),
                _choice("shared_exp", "max", ("max", "none"), "max: one exponent per block; none: per element"),
                Option("flush_fp32_subnorms", _bool, False, "zero blocks whose amax is an fp32 subnormal"),
                EMULATE,
            ),
        ),
        Family(
            "qtype",
            "the seed's QType grammar e{E}m{M}[K{K}]k{k}[B{B}]b{b}[c][off{N}] through quant_py (formats-mx.md §3)",
            (AXIS, EMULATE),
        ),
        Family(
            "tmx",
            "the seed's TMX: 16-element blocks of 8 pairs with a 1-bit pair exponent (formats-mx.md §9)",
            (AXIS, EMULATE),
        ),
        Family(
            "nvf4", "the seed's one-level NVFP4: E2M1 with an E4M3 scale per 16 (formats-mx.md §4.2)", (AXIS, EMULATE)
        ),
        Family(
            "nvfp4", "NVIDIA NVFP4: E2M1, E4M3 scales per 16 and an FP32 per-tensor scale (formats-mx.md §4.1)", (AXIS,)
        ),
        Family(
            "nf4",
            "bitsandbytes NF4 code book with an absmax per block (formats-mx.md §5.1)",
            (Option("block", _int, 64, "elements per absmax"), AXIS),
        ),
        Family(
            "nf4grid",
            "the seed's nf4B{B}b{b}: 15-level uniform grid with a double-quantized absmax (formats-mx.md §5.2)",
            (AXIS, EMULATE),
        ),
        Family("fp8tensor", "FP8 with one FP32 scale per tensor (formats-mx.md §6)", (EMULATE,)),
        Family("cast", "a round trip through an IEEE-like type (formats-mx.md §7)", (EMULATE,)),
        Family("int8sym", "symmetric INT8 with one absmax per row (formats-mx.md §8)", (AXIS, EMULATE)),
        Family(
            "hif8",
            "HiFloat8 tapered float (formats-hifloat.md §3, §4.1)",
            (
                _choice(
                    "scale",
                    "tensor",
                    ("tensor", "none"),
                    "tensor: the seed's quant_hif8 per-tensor scale to amax=k; none: elementwise",
                ),
                _choice("variant", "seed", ("seed", "paper"), "paper: flush, overflow to Inf, no scaling (§3.4)"),
                _choice("underflow", "default", ("default", "min", "flush"), "below 2^-23: min -> ±2^-22, flush -> 0"),
                _choice("overflow", "default", ("default", "saturate", "inf", "tof8"), "at or above 40960"),
                Option("k", _float, 8.0, "per-tensor scaling target for amax"),
                Option(
                    "out",
                    _dtype_name,
                    "default",
                    "output dtype: input|bf16|fp16|fp32 (default: bf16 with scale=tensor)",
                ),
                EMULATE,
            ),
        ),
        Family(
            "hifx",
            "HiFloat X v12: 64-groups with 3 exponent levels (formats-hifloat.md §5.3)",
            (AXIS, _choice("variant", "torch", ("torch", "numpy"), "numpy: the seed's to_HiFX (§5.5)"), EMULATE),
        ),
        Family(
            "hif4_paper",
            "HiFloat4 as published: E6M2 scale, two 1-bit levels, S1P2 elements (formats-hifloat.md §5.6)",
            (AXIS,),
        ),
        Family(
            "dhif8",
            "delayed-scaling HiF8, an emulation of the seed's NPU kernel (formats-hifloat.md §6)",
            (
                Option("amax", _opt_float, None, "the delayed amax (default: max|x| of the tensor)"),
                Option("scale_position", _float, 8.0, "value that amax is scaled to"),
                EMULATE,
            ),
        ),
    )
}


# --------------------------------------------------------------------------- presets

# name -> (family, fixed parameters, option defaults that differ from the family's)
_MX_ELEMS = {
    "mxfp8_e4m3": "fp8_e4m3",
    "mxfp8_e5m2": "fp8_e5m2",
    "mxfp6_e3m2": "fp6_e3m2",
    "mxfp6_e2m3": "fp6_e2m3",
    "mxfp4_e2m1": "fp4_e2m1",
    "mxint8": "int8",
}

PRESETS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    **{n: ("mx", {"element": e}, {}) for n, e in _MX_ELEMS.items()},
    # The seed's QType aliases (formats-mx.md §3.1, OPS parser: mxfp6e3m2 is E3M2).
    "mxfp4": ("qtype", {"E": 2, "M": 1, "K": 0, "k": 8, "B": 1, "b": 32, "carry": True, "off": None}, {}),
    "mxfp6e3m2": ("qtype", {"E": 3, "M": 2, "K": 0, "k": 8, "B": 1, "b": 32, "carry": True, "off": None}, {}),
    "mxfp8e4m3": ("qtype", {"E": 4, "M": 3, "K": 0, "k": 8, "B": 1, "b": 32, "carry": True, "off": None}, {}),
    "mxfp8e5m2": ("qtype", {"E": 5, "M": 2, "K": 0, "k": 8, "B": 1, "b": 32, "carry": True, "off": None}, {}),
    "nvf4": ("nvf4", {"element": "fp4_e2m1"}, {}),
    "nvfp4": ("nvfp4", {"element": "fp4_e2m1"}, {}),
    "nf4": ("nf4", {"element": "nf4"}, {}),
    "fp8_e4m3": ("fp8tensor", {"element": "fp8_e4m3"}, {}),
    "fp8_e5m2": ("fp8tensor", {"element": "fp8_e5m2"}, {}),
    "fp16": ("cast", {"element": "fp16"}, {}),
    "bf16": ("cast", {"element": "bf16"}, {}),
    "fp32": ("cast", {"element": "fp32"}, {}),
    "int8sym": ("int8sym", {"element": "int8"}, {}),
    "hif8": ("hif8", {"element": "hif8"}, {}),
    "hif4_paper": ("hif4_paper", {"element": "hif4"}, {}),
    "dhif8": ("dhif8", {"element": "hif8"}, {}),
}

ALIASES: dict[str, str] = {
    "nvfp8_e4m3": "fp8_e4m3",
    "nvfp8_e5m2": "fp8_e5m2",
    "hif4": "hifx4_v12",
    "nvfp4_1level": "nvf4",
}

QTYPE_RE = re.compile(
    r"e(?P<E>\d+)m(?P<M>\d+)"
    r"(?:k(?P<k1>\d+)b(?P<b1>\d+)(?P<c1>[cC]?)"
    r"|K(?P<K>\d+)k(?P<k2>\d+)B(?P<B>\d+)b(?P<b2>\d+)(?P<c2>[cC]?)(?:off(?P<off>\d+))?)"
)


def _qtype_fields(m: re.Match) -> tuple[str, dict[str, Any]]:
    g = m.groupdict()
    two_level = g["K"] is not None
    f = {
        "E": int(g["E"]),
        "M": int(g["M"]),
        "K": int(g["K"]) if two_level else 0,
        "k": int(g["k2"] if two_level else g["k1"]),
        "B": int(g["B"]) if two_level else 1,
        "b": int(g["b2"] if two_level else g["b1"]),
        # 'C' means the same as 'c' (formats-mx.md §12; the NPU parser's case bug is not kept).
        "carry": bool(g["c2"] if two_level else g["c1"]),
        "off": int(g["off"]) if g["off"] is not None else None,
    }
    if f["E"] == 1:
        raise FormatError("e1 is not a valid QType element (the grammar requires E != 1)")
    if f["M"] < 1 or f["k"] < 1 or f["b"] < 1 or f["B"] < 1:
        raise FormatError("QType needs M >= 1, k >= 1, b >= 1 and B >= 1")
    return _qtype_name(f), f


def _qtype_name(f: Mapping[str, Any]) -> str:
    c = "c" if f["carry"] else ""
    if f["K"] == 0 and f["B"] == 1 and f["off"] is None:
        return f"e{f['E']}m{f['M']}k{f['k']}b{f['b']}{c}"
    off = f"off{f['off']}" if f["off"] is not None else ""
    return f"e{f['E']}m{f['M']}K{f['K']}k{f['k']}B{f['B']}b{f['b']}{c}{off}"


def _pattern_nf4grid(m: re.Match) -> tuple[str, dict[str, Any]]:
    B, b = int(m["B"]), int(m["b"])
    if B < 1 or b < 1:
        raise FormatError("nf4B{B}b{b} needs B >= 1 and b >= 1")
    return f"nf4B{B}b{b}", {"element": "int4sym", "B": B, "b": b}


def _pattern_tmx(m: re.Match) -> tuple[str, dict[str, Any]]:
    n = int(m["n"])
    if not 3 <= n <= 24:
        raise FormatError("tmx{N} needs 3 <= N <= 24 (N-2 mantissa bits)")
    return f"tmx{n}", {"element": f"tmx{n}", "N": n}


def _pattern_hifx(m: re.Match) -> tuple[str, dict[str, Any]]:
    n = int(m["n"])
    return f"hifx{n}_v12", {"element": f"hifx{n}", "N": n}


# (regex, family, builder) for parametric names; the builder returns (canonical name, fixed params).
PATTERNS: tuple[tuple[re.Pattern, str, Callable[[re.Match], tuple[str, dict[str, Any]]]], ...] = (
    (QTYPE_RE, "qtype", _qtype_fields),
    (re.compile(r"nf4B(?P<B>\d+)b(?P<b>\d+)"), "nf4grid", _pattern_nf4grid),
    (re.compile(r"tmx(?P<n>\d+)"), "tmx", _pattern_tmx),
    (re.compile(r"hifx(?P<n>[2-5])_v12"), "hifx", _pattern_hifx),
)

# Shown by list_formats() and used for close-match suggestions.
EXAMPLES: tuple[str, ...] = (
    "e2m1k8b32c",
    "e4m3k8b32c",
    "e3m2k8b16c",
    "e2m1K4k4B8b4c",
    "nf4B4b64",
    "tmx6",
    "tmx4",
    "hifx2_v12",
    "hifx3_v12",
    "hifx4_v12",
    "hifx5_v12",
)


# --------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class Rules:
    """The resolved rules of a format, for tables and reports."""

    element: str
    block: str
    axis: str
    scale: str
    rounding: str
    bits_per_value: float


@dataclass(frozen=True)
class FormatSpec:
    """One fully resolved format: a family, its fixed parameters and every option.

    ``params`` holds the parameters fixed by the name (element, QType fields...);
    ``options`` holds every option of the family, defaults filled in. Both are
    sorted tuples of ``(key, value)`` so the spec is hashable and comparable.
    """

    name: str
    family: str
    params: tuple[tuple[str, Any], ...]
    options: tuple[tuple[str, Any], ...]
    _defaults: tuple[tuple[str, Any], ...] = field(default=(), compare=False, repr=False)

    def __getitem__(self, key: str) -> Any:
        for k, v in self.options:
            if k == key:
                return v
        for k, v in self.params:
            if k == key:
                return v
        raise KeyError(f"format {self.name!r} has no parameter {key!r}")

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    @property
    def element(self) -> str:
        if self.family == "qtype":
            return _qtype_element(dict(self.params))
        return self["element"]

    @property
    def emulate(self) -> str:
        return self.get("emulate", "exact")

    def replace(self, **options: Any) -> FormatSpec:
        """A copy with some options changed (validated like the string form)."""
        return _build(
            self.name, self.family, dict(self.params), dict(self._defaults), {**dict(self.options), **options}
        )

    def __repr__(self) -> str:
        return f"FormatSpec({str(self)!r})"

    def __str__(self) -> str:
        defaults = dict(self._defaults)
        parts = [f"{k}={_fmt_value(v)}" for k, v in self.options if v != defaults.get(k)]
        return self.name + (":" + ",".join(parts) if parts else "")

    def rules(self) -> Rules:
        return _rules(self)

    @property
    def bits_per_value(self) -> float:
        return _rules(self).bits_per_value


def _fmt_value(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _known_names() -> list[str]:
    return sorted(set(PRESETS) | set(ALIASES) | set(EXAMPLES))


def _resolve_name(name: str) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
    name = ALIASES.get(name, name)
    if name in PRESETS:
        family, fixed, overrides = PRESETS[name]
        return name, family, dict(fixed), dict(overrides)
    for regex, family, build in PATTERNS:
        m = regex.fullmatch(name)
        if m:
            try:
                canonical, fixed = build(m)
            except FormatError as e:
                raise FormatError(f"malformed format {name!r}: {e}") from None
            return canonical, family, fixed, {}
    close = difflib.get_close_matches(name, _known_names(), n=4, cutoff=0.6)
    if not close:
        close = difflib.get_close_matches(name.lower(), [n.lower() for n in _known_names()], n=4, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise FormatError(f"unknown format {name!r}{hint} (`fqtool formats` / kernels.list_formats() lists them)")


def _build(
    name: str, family: str, fixed: dict[str, Any], overrides: dict[str, Any], given: Mapping[str, Any]
) -> FormatSpec:
    fam = FAMILIES[family]
    defaults = {o.key: overrides.get(o.key, o.default) for o in fam.options}
    values = dict(defaults)
    for key, raw in given.items():
        try:
            opt = fam.option(key)
        except KeyError:
            valid = ", ".join(o.key for o in fam.options) or "none"
            close = difflib.get_close_matches(key, [o.key for o in fam.options], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise FormatError(f"format {name!r} has no option {key!r}{hint}; its options: {valid}") from None
        try:
            values[key] = opt.value(raw)
        except (ValueError, TypeError) as e:
            raise FormatError(f"format {name!r}: bad value {raw!r} for option {key!r}: {e}") from None
    _validate(name, family, fixed, values)
    return FormatSpec(
        name=name,
        family=family,
        params=tuple(sorted(fixed.items())),
        options=tuple(sorted(values.items())),
        _defaults=tuple(sorted(defaults.items())),
    )


def _validate(name: str, family: str, fixed: Mapping[str, Any], v: Mapping[str, Any]) -> None:
    if family == "mx":
        if v["block"] < 0:
            raise FormatError(f"format {name!r}: block must be >= 0 (0 means the whole axis)")
        if not 1 <= v["scale_bits"] <= 8:
            raise FormatError(f"format {name!r}: scale_bits must be between 1 and 8")
    if family == "nf4" and v["block"] < 1:
        raise FormatError(f"format {name!r}: block must be >= 1")
    if family == "hif8" and v["k"] <= 0:
        raise FormatError(f"format {name!r}: k must be > 0")
    if family == "dhif8":
        if v["scale_position"] <= 0:
            raise FormatError(f"format {name!r}: scale_position must be > 0")
        if v["amax"] is not None and v["amax"] < 0:
            raise FormatError(f"format {name!r}: amax must be >= 0")


def _split_options(text: str, s: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise FormatError(f"malformed format string {s!r}: option {item!r} is not key=value")
        k, v = item.split("=", 1)
        k = k.strip()
        if k in out:
            raise FormatError(f"malformed format string {s!r}: option {k!r} given twice")
        out[k] = v.strip()
    return out


def parse(fmt: str | FormatSpec, **options: Any) -> FormatSpec:
    """Parse ``NAME[:key=value,...]``; keyword ``options`` override those in the string."""
    if isinstance(fmt, FormatSpec):
        return fmt.replace(**options) if options else fmt
    if hasattr(fmt, "spec") and callable(fmt.spec):  # kernels.qtype.QType
        return parse(fmt.spec(), **options)
    if not isinstance(fmt, str):
        raise FormatError(f"a format must be a string like 'mxfp8_e4m3:block=16', not {type(fmt).__name__}")
    s = fmt.strip()
    name, _, opts = s.partition(":")
    name = name.strip()
    if not name:
        raise FormatError(f"malformed format string {fmt!r}: no format name")
    canonical, family, fixed, overrides = _resolve_name(name)
    given = _split_options(opts, fmt)
    given.update(options)
    return _build(canonical, family, fixed, overrides, given)


# --------------------------------------------------------------------------- rules


def _qtype_element(p: Mapping[str, Any]) -> str:
    if p["E"] == 0:
        return f"sm{p['M'] + 1}"  # sign + M-bit integer magnitude
    return f"e{p['E']}m{p['M']}"


_ELEMENT_BITS = {
    "fp8_e4m3": 8,
    "fp8_e5m2": 8,
    "fp6_e3m2": 6,
    "fp6_e2m3": 6,
    "fp4_e2m1": 4,
    "int8": 8,
    "nf4": 4,
    "int4sym": 4,
    "fp16": 16,
    "bf16": 16,
    "fp32": 32,
    "hif8": 8,
    "hif4": 4,
}

_ROUND_TEXT = {
    "nearest": "nearest, ties away from zero",
    "even": "nearest, ties to even",
    "floor": "toward zero",
    "dither": "stochastic",
}


def _rules(s: FormatSpec) -> Rules:
    f, p = s.family, dict(s.params)
    axis = str(s.get("axis", "-"))
    if f == "mx":
        block = s["block"]
        if s["minus_exp"] is not None:
            scale = f"E8M0-like, ceil(log2 amax) - {s['minus_exp']}"
        else:
            scale = f"E8M0-like power of two, {s['scale']} rule" + (
                " (per element)" if s["shared_exp"] == "none" else ""
            )
        bits = _ELEMENT_BITS[p["element"]] + (s["scale_bits"] / block if block else 0.0)
        return Rules(p["element"], str(block) if block else "whole axis", axis, scale, _ROUND_TEXT[s["round"]], bits)
    if f == "qtype":
        el = _qtype_element(p)
        ebits = 1 + p["E"] + p["M"]
        bits = ebits + p["k"] / p["b"] + p["K"] / (p["b"] * p["B"])
        blk = f"{p['b']}" if p["B"] == 1 else f"{p['b']} inside {p['b'] * p['B']}"
        rule = "round(log2 amax) (carry)" if p["carry"] else "floor(log2 amax)"
        return Rules(el, blk, axis, f"power of two, {rule}", _ROUND_TEXT["nearest"], bits)
    if f == "tmx":
        return Rules(
            p["element"],
            "16 (8 pairs)",
            axis,
            "8-bit shared exponent + 1 bit per pair",
            _ROUND_TEXT["nearest"],
            float(p["N"]),
        )
    if f == "nvf4":
        return Rules("fp4_e2m1", "16", axis, "E4M3 per block, no per-tensor scale", _ROUND_TEXT["even"], 4.5)
    if f == "nvfp4":
        return Rules("fp4_e2m1", "16", axis, "E4M3 per block x FP32 per tensor", _ROUND_TEXT["even"], 4.5)
    if f == "nf4":
        return Rules(
            "nf4", str(s["block"]), axis, "FP32 absmax per block", "nearest code (bitsandbytes)", 4 + 32 / s["block"]
        )
    if f == "nf4grid":
        return Rules(
            "int4sym",
            f"{p['b']} inside {p['b'] * p['B']}",
            axis,
            "absmax per block as E4M3 x FP32 absmax per group",
            _ROUND_TEXT["nearest"],
            4 + 8 / p["b"] + 32 / (p["b"] * p["B"]),
        )
    if f == "fp8tensor":
        return Rules(p["element"], "tensor", "-", "FP32 per tensor, amax -> max normal", _ROUND_TEXT["even"], 8.0)
    if f == "cast":
        return Rules(p["element"], "-", "-", "none", _ROUND_TEXT["even"], float(_ELEMENT_BITS[p["element"]]))
    if f == "int8sym":
        return Rules("int8", "row", axis, "FP32 absmax/127 per row", _ROUND_TEXT["even"], 8.0)
    if f == "hif8":
        scaled = s["scale"] == "tensor" and s["variant"] == "seed"
        scale = f"FP32 per tensor, amax -> {s['k']:g}" if scaled else "none"
        return Rules("hif8", "tensor" if scaled else "-", "-", scale, _ROUND_TEXT["nearest"], 8.0)
    if f == "hifx":
        return Rules(
            p["element"],
            "64 (8 x 8 x 4)",
            axis,
            "2^L1 per 64, +1 bit per 8, +1 bit per 4",
            _ROUND_TEXT["nearest"],
            p["N"] + 30 / 64,
        )
    if f == "hif4_paper":
        return Rules(
            "hif4 (S1P2)", "64 (8 x 8 x 4)", axis, "E6M2 per 64, +1 bit per 8, +1 bit per 4", _ROUND_TEXT["even"], 4.5
        )
    if f == "dhif8":
        amax = "max|x|" if s["amax"] is None else f"{s['amax']:g}"
        return Rules("hif8", "tensor", "-", f"scale_position/amax, amax = {amax}", _ROUND_TEXT["nearest"], 8.0)
    raise AssertionError(f)


def list_formats() -> list[FormatSpec]:
    """Every named format with its default options, then one example of each parametric pattern."""
    names = list(PRESETS) + [e for e in EXAMPLES]
    names += [n for n in ("hifx2_v12", "hifx3_v12", "hifx4_v12", "hifx5_v12") if n not in names]
    seen: list[str] = []
    for n in names:
        if n not in seen:
            seen.append(n)
    return [parse(n) for n in seen]
