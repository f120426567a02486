"""Every check of ``../shared/golden/CONTRACT.json``, through the public ``kernels.fake_quantize``.

One test per (contract entry, golden case, backend): the reference kernels and the default
backend (``cpu-fast`` here) must both reproduce every tensor. Required entries must pass. The few
non-required entries that fqtool deliberately does not reproduce are listed in
``KNOWN_DIFFERENT`` with the reason, as strict xfails: if one starts passing,
the list is out of date and the run fails.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from golden import GOLDEN, applies, assert_bits_equal, case_files, contract, load, needs_golden

import kernels

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}

# (stem, format, against) -> why fqtool's result differs on purpose.
KNOWN_DIFFERENT: dict[tuple[str, str, str], str] = {}


def _params():
    out = []
    for i, entry in enumerate(contract()):
        for path in case_files(entry["family"], entry["stem"]):
            against = entry["against"] if isinstance(entry["against"], str) else "+".join(entry["against"].values())
            label = f"{entry['stem']}/{path.stem}|{entry.get('format', entry.get('op'))}|{against}"
            marks = []
            key = (entry["stem"], entry.get("format"), str(entry["against"]))
            if key in KNOWN_DIFFERENT:
                marks.append(pytest.mark.xfail(reason=KNOWN_DIFFERENT[key], strict=True))
            out.append(pytest.param(i, path, id=label, marks=marks))
    return out


@needs_golden
@pytest.mark.parametrize("backend", ["reference", "auto"])
@pytest.mark.parametrize("index,path", _params())
def test_contract(index, path, backend):
    entry = contract()[index]
    tensors, meta = load(path)
    case = path.stem
    first_input = tensors[entry.get("inputs", [entry.get("input", "input")])[0]]
    if not applies(entry, case, first_input.dtype):
        pytest.skip("entry does not apply to this case/dtype")
    if "op" in entry:
        if backend != "auto":
            pytest.skip("operators pick their backend themselves")
        _check_op(entry, tensors, meta)
    else:
        _check_format(entry, tensors, meta, case, backend)


def _check_format(entry, tensors, meta, case, backend):
    x = tensors[entry.get("input", "input")]
    if "input_cast" in entry:
        x = x.to(DTYPES[entry["input_cast"]])
    before = x.clone()
    fmt = entry["format"].format(**meta)
    want = tensors[entry["against"]]
    got = kernels.fake_quantize(x, fmt, backend=backend)
    assert torch.equal(
        x.view(torch.int16 if x.element_size() == 2 else torch.int32),
        before.view(torch.int16 if x.element_size() == 2 else torch.int32),
    ), "input was modified"
    od = entry.get("output_dtype")
    want_dtype = x.dtype if od == "input" else DTYPES[od] if od else want.dtype
    assert got.dtype == want_dtype, f"{fmt}: output dtype {got.dtype}, contract wants {want_dtype}"
    assert_bits_equal(got, want, f"{fmt} on {entry['stem']}/{case} vs {entry['against']}")


def _check_op(entry, tensors, meta):
    mod_name, fn_name = entry["op"].rsplit(".", 1)
    fn = getattr(importlib.import_module(mod_name), fn_name)
    inputs = [tensors[n].clone().requires_grad_(True) for n in entry["inputs"]]
    kwargs = dict(entry.get("kwargs", {}))
    kwargs.update({k: float(meta[v]) for k, v in entry.get("kwargs_from_metadata", {}).items()})
    out = fn(*inputs, **kwargs)
    out.backward(tensors[entry["grad_output"]])
    results = {"out": out.detach()}
    results.update({f"grad:{n}": t.grad for n, t in zip(entry["inputs"], inputs, strict=True)})
    for name, ref_name in entry["against"].items():
        got, ref = results[name], tensors[ref_name]
        assert got.dtype == ref.dtype, f"{name}: dtype {got.dtype}, want {ref.dtype}"
        atol = entry["atol"] * ref.float().abs().max().item()
        assert torch.allclose(got.float(), ref.float(), rtol=entry["rtol"], atol=atol), (
            f"{name} differs from {ref_name}"
        )


def test_contract_is_present_or_skipped_clearly():
    """The golden folder is found in CI; when absent the contract tests skip with the path in the reason."""
    if not (GOLDEN / "CONTRACT.json").is_file():
        pytest.skip(f"golden vectors not found at {GOLDEN}")
    assert len(contract()) > 200
