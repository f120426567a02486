"""The Triton backend (``kernels.triton``) against the reference, bit for bit, in Triton's interpreter.

Triton decides at ``@triton.jit`` time whether a kernel compiles or is interpreted, and the MX
kernels are decorated when ``kernels.triton.mx`` is first imported; this module sets
``TRITON_INTERPRET=1`` at import time, before that happens, so the kernels run on CPU tensors.
On a GPU, test_triton_cuda.py checks the compiled kernels instead.
"""

from __future__ import annotations

import triton_support  # first: it sets TRITON_INTERPRET=1 before triton loads

# isort: split

import math  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from corner_cases import as_dtype, corner_cases  # noqa: E402
from golden import needs_golden  # noqa: E402
from triton_support import DTYPES, SKIP, check, check_golden, check_sums, heavy  # noqa: E402

import kernels  # noqa: E402
from kernels import backends  # noqa: E402

if SKIP:
    pytest.skip(SKIP, allow_module_level=True)

from kernels.triton import mx as tmx  # noqa: E402

ELEMENTS = ["mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4_e2m1", "mxint8"]


@pytest.fixture(autouse=True)
def _quiet_interpreter():
    w = triton_support.quiet()
    yield
    w.__exit__(None, None, None)


# --------------------------------------------------------------------------- bit-exactness


@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("block", [32, 16])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("elem", ELEMENTS)
def test_random_matches_reference(elem, dtype, block, axis):
    x = heavy((37, 45), seed=len(elem) + block + axis).to(dtype)  # ragged along both axes
    check(x, f"{elem}:block={block},axis={axis}")
    # Rows of whole blocks: the contiguous-tile path (EVEN), with a partial last tile.
    y = heavy((96, 37), seed=block).to(dtype) if axis == 0 else heavy((37, 96), seed=block).to(dtype)
    check(y, f"{elem}:block={block},axis={axis}")
    check_sums(y, f"{elem}:block={block},axis={axis}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("elem", ELEMENTS)
def test_corner_cases_match_reference(elem, dtype):
    for case in corner_cases().values():
        x = as_dtype(case, dtype)
        if x is not None:
            check(x, elem)
            if x.dim() > 1:
                check(x, f"{elem}:block=16,axis=0")


OPTIONS = [
    "round=even",
    "round=floor",
    "scale=ceil",
    "scale=rceil",
    "scale=even",
    "scale=carry",
    "round=even,scale=rceil",
    "minus_exp=0",
    "minus_exp=2",
    "minus_exp=-3",
    "scale_bits=4",
    "scale_bits=1",
    "flush_fp32_subnorms=true",
    "block=1",
    "block=7",
    "block=64",
    "axis=1",
]


@pytest.mark.parametrize("opts", OPTIONS)
@pytest.mark.parametrize("elem", ["mxfp8_e4m3", "mxfp4_e2m1", "mxint8"])
def test_options_match_reference(elem, opts):
    cases = corner_cases()
    for dtype in (torch.float32, torch.bfloat16):
        check(heavy((6, 5, 70), seed=3).to(dtype), f"{elem}:{opts}")
        for name in ("f32_subnormals", "subnormal_amax_rows", "huge", "powers_of_two_pm_ulp", "ties", "inf_in_block"):
            x = as_dtype(cases[name], dtype)
            if x is not None:
                check(x, f"{elem}:{opts}" if opts != "axis=1" else elem)


def test_every_scale_and_rounding_on_exhaustive_binades():
    """Every float32 significand pattern step 2^-10 at a few binades, each value the amax of a block."""
    m = torch.arange(1024, dtype=torch.float32) / 1024 + 1  # [1, 2)
    x = torch.cat([m * 2.0**e for e in (-130, -60, 0, 7, 100)]).reshape(-1, 1) * torch.tensor([1.0, 0.3, -0.7, 0.01])
    for elem in ("mxfp6_e3m2", "mxfp6_e2m3", "mxint8"):
        for opts in ("scale=floor", "scale=ceil", "scale=rceil", "scale=even", "scale=carry", "minus_exp=1"):
            check(x, f"{elem}:block=4,{opts}")


@needs_golden
def test_golden_contract_mx_entries():
    """The contract's MX entries whose options the kernels cover (one test: the interpreter is slow)."""
    ran = check_golden(lambda spec: spec.family == "mx" and tmx.unsupported_reason(spec) is None)
    assert len(ran) > 50, len(ran)


# --------------------------------------------------------------------------- fused sums


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("elem", ELEMENTS)
def test_sums_match_reference(elem, dtype):
    x = heavy((130, 77), seed=7)
    x[3, 4], x[5, 60], x[9, 1], x[100, 76] = math.nan, math.inf, -math.inf, 1e30
    x = x.to(dtype)
    for opts in ("block=32", "block=16,axis=0"):
        check_sums(x, f"{elem}:{opts}")
    for case in corner_cases().values():
        c = as_dtype(case, dtype)
        if c is not None:
            check_sums(c, elem)


@pytest.mark.parametrize("opts", ["scale=rceil,round=even", "flush_fp32_subnorms=true", "scale_bits=3", "minus_exp=1"])
def test_sums_options(opts):
    cases = corner_cases()
    for name in ("f32_subnormals", "subnormal_amax_rows", "huge", "nan_in_block", "outliers"):
        check_sums(cases[name], f"mxfp8_e4m3:{opts}")
    check_sums(heavy((20, 100), seed=11).to(torch.bfloat16), f"mxint8:{opts}")


def test_sums_many_programs_merge():
    """Many programs (blocks of 1): the host merge of means and M2 stays exact to float64 rounding."""
    x = heavy((64, 300), seed=5) + 1000.0  # a mean that dwarfs the spread
    check_sums(x, "mxfp8_e5m2:block=1")


# --------------------------------------------------------------------------- registration


def test_backend_selection():
    spec = kernels.parse("mxfp8_e4m3")
    assert backends.select("cpu", spec, "triton").name == "triton"
    # Without a GPU it registers at priority -5: auto never picks it for CPU tensors.
    if not torch.cuda.is_available():
        assert backends.REGISTRY["triton"].priority < 0
        assert backends.select("cpu", spec).name != "triton"
    # Unsupported options: a reason, so auto falls back and an explicit request fails loudly.
    for fmt in (
        "mxfp8_e4m3:emulate=seed",
        "hif8:emulate=seed",
        "dhif8",  # a family without Triton kernels
        "tmx4",
        "mxfp8_e4m3:block=16384",
    ):
        s = kernels.parse(fmt)
        assert isinstance(backends.REGISTRY["triton"].check(torch.device("cuda"), s), str), fmt
        with pytest.raises(backends.BackendError):
            backends.select("cpu", s, "triton")
        assert backends.select("cuda", s).name == "reference"
    assert isinstance(backends.REGISTRY["triton"].check(torch.device("cuda"), kernels.parse("mxfp8_e4m3")), type(None))


def test_check_refuses_cpu_outside_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "CUDA" in backends.REGISTRY["triton"].check(torch.device("cpu"), kernels.parse("mxfp8_e4m3"))


def test_empty_and_scalar_inputs():
    for x in (torch.zeros(0, 32), torch.tensor(3.0), torch.zeros(4, 0)):
        if x.dim() == 0:
            continue  # the reference itself has no axis -1 on a 0-d tensor
        check(x, "mxfp8_e4m3")


@pytest.mark.parametrize("blocked", ["None", "broken"])
def test_import_kernels_without_triton(blocked):
    code = textwrap.dedent(
        f"""
        import sys
        if {blocked!r} == "None":
            sys.modules["triton"] = None
        else:
            class Broken:  # an installed triton whose import crashes (a driver/ABI mismatch)
                def find_spec(self, name, path=None, target=None):
                    if name == "triton" or name.startswith("triton."):
                        raise RuntimeError("triton is broken")

            sys.modules.pop("triton", None)
            sys.meta_path.insert(0, Broken())
        import torch, kernels
        assert "triton" not in kernels.backends.REGISTRY
        x = torch.randn(4, 64)
        assert kernels.fake_quantize(x, "mxfp8_e4m3").shape == x.shape
        print("ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]
