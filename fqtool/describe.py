"""What ``fqtool formats``, ``fqtool explain`` and ``fqtool env`` show: plain records, then rendered.

Each function returns data (lists of dicts); :func:`render_records` turns a list of records into
a table, JSON, CSV or Markdown.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import os
import platform
import sys

import torch
from rich.console import Console
from rich.table import Table

import kernels
from kernels import backends
from kernels.grid import element_values, minifloat

from . import __version__


def format_records() -> list[dict]:
    """One record per format: its canonical name and resolved rules."""
    out = []
    for spec in kernels.list_formats():
        r = spec.rules()
        out.append(
            {
                "format": str(spec),
                "element": r.element,
                "block": r.block,
                "axis": r.axis,
                "scale": r.scale,
                "rounding": r.rounding,
                "bits_per_value": r.bits_per_value,
            }
        )
    return out


def explain(fmt: str) -> dict:
    """The rules, options, element constants and representable values of one format."""
    spec = kernels.parse(fmt)
    r = spec.rules()
    doc = {
        "format": str(spec),
        "family": spec.family,
        "rules": {
            "element": r.element,
            "block": r.block,
            "axis": r.axis,
            "scale": r.scale,
            "rounding": r.rounding,
            "bits_per_value": r.bits_per_value,
        },
        "options": {k: v for k, v in spec.options},
    }
    mf = minifloat(spec)
    if mf is not None:
        doc["element"] = {
            "name": mf.name,
            "exponent_bits": mf.ebits,
            "mantissa_bits": mf.mbits,
            "emin": mf.emin,
            "emax": mf.emax,
            "max_normal": mf.max_norm,
            "min_normal": 2.0**mf.emin,
            "min_subnormal": mf.min_subnormal,
        }
    try:
        values = element_values(spec).tolist()
    except ValueError:
        values = None  # elements wider than 8 bits (casts) are not enumerated
    if values is not None:
        doc["values"] = {"count": len(values), "unit_scale": values}
    return doc


def explain_text(doc: dict) -> str:
    """``explain`` as readable text."""
    lines = [f"{doc['format']}  (family {doc['family']})", ""]
    for k, v in doc["rules"].items():
        lines.append(f"  {k:15s} {v:.6g}" if isinstance(v, float) else f"  {k:15s} {v}")
    if doc["options"]:
        lines += ["", "options:"] + [f"  {k:15s} {_plain(v)}" for k, v in doc["options"].items()]
    if "element" in doc:
        lines += ["", "element:"] + [f"  {k:15s} {_plain(v)}" for k, v in doc["element"].items()]
    if "values" in doc:
        vals = doc["values"]["unit_scale"]
        lines += ["", f"representable values at unit scale ({len(vals)}):"]
        lines += _wrap([_plain(v) for v in vals])
    return "\n".join(lines) + "\n"


def _plain(v) -> str:
    if isinstance(v, float):
        return f"{v:.10g}"
    return "none" if v is None else str(v)


def _wrap(items: list[str], width: int = 96) -> list[str]:
    lines, cur = [], "  "
    for it in items:
        if len(cur) + len(it) + 1 > width:
            lines.append(cur.rstrip())
            cur = "  "
        cur += it + " "
    if cur.strip():
        lines.append(cur.rstrip())
    return lines


def _version(module: str) -> str | None:
    try:
        m = importlib.import_module(module)
    except Exception:  # noqa: BLE001 - missing or broken optional module
        return None
    return getattr(m, "__version__", "installed")


def env_records() -> list[dict]:
    """Versions, devices and which backends can run here."""
    recs = [
        {"item": "fqtool", "value": __version__},
        {"item": "python", "value": f"{platform.python_version()} ({sys.executable})"},
        {"item": "platform", "value": platform.platform()},
        {"item": "cpu", "value": f"{os.cpu_count()} logical cores, torch uses {torch.get_num_threads()} threads"},
        {"item": "torch", "value": torch.__version__},
        {"item": "torch CUDA build", "value": torch.version.cuda or "none (CPU-only build)"},
    ]
    for mod in ("numpy", "safetensors", "typer", "rich", "pandas", "matplotlib", "triton", "torch_npu"):
        recs.append({"item": mod, "value": _version(mod) or "not installed"})
    devices = ["cpu"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            recs.append({"item": f"cuda:{i}", "value": f"{p.name}, {p.total_memory / 2**30:.0f} GiB"})
            devices.append(f"cuda:{i}")
    else:
        recs.append({"item": "cuda", "value": "no usable CUDA device"})
    from .analysis import _npu_available

    if _npu_available():
        devices.append("npu")
        recs.append({"item": "npu", "value": f"{torch.npu.device_count()} Ascend device(s)"})
    else:
        recs.append({"item": "npu", "value": "no usable NPU (torch_npu missing or no device)"})
    probe = kernels.parse("mxfp8_e4m3")
    for name in backends.available():
        b = backends.REGISTRY[name]
        usable = [d for d in devices if b.check(torch.device(d), probe) is None]
        auto = "" if b.priority >= 0 else " (opt-in: --backend " + name + ")"
        recs.append({"item": f"backend {name}", "value": (", ".join(usable) or "not usable here") + auto})
    return recs


def render_records(records: list[dict], output_format: str, *, title: str = "", plain: bool = False) -> str:
    """A list of same-keyed dicts as a table (rich, or plain when piped), JSON, CSV or Markdown."""
    cols = list(records[0]) if records else []
    if output_format == "json":
        return json.dumps(records, indent=2) + "\n"
    if output_format == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        w.writerows(records)
        return buf.getvalue()
    cells = [[_cell(r[c]) for c in cols] for r in records]
    if output_format == "markdown":
        lines = [f"### {title}", ""] if title else []
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "---|" * len(cols))
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
        return "\n".join(lines) + "\n"
    if plain:
        widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
        return "\n".join(lines) + "\n"
    table = Table(*cols, title=title or None)
    table.columns[0].no_wrap = True
    for row in cells:
        table.add_row(*row)
    buf = io.StringIO()
    Console(file=buf, width=200, force_terminal=True).print(table)
    return buf.getvalue()


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
