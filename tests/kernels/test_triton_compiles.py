"""Every Triton kernel compiles for a GPU (sm_90), checked on a machine without one.

The interpreter tests run the kernels' semantics, not the compiler: a kernel that the
interpreter runs can still fail to compile (a type the GPU code generator rejects, a layout it
cannot convert). ``benchmarks/kernel_census.py`` compiles every kernel the family modules launch
ahead of time with the installed Triton and its bundled ``ptxas``; here in a subprocess, because
it replaces Triton's launcher and must not run in Triton's interpreter mode.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "kernel_census.py"
#: One format per kernel variant family: MX (plain, block=0, auto, dither), QType, nvf4 (exact,
#: seed), nvfp4, nf4, fp8 (exact, seed), int8sym, casts, hif8, hifx.
FORMATS = (
    "mxfp8_e4m3;mxfp8_e4m3:block=0;mxfp4_e2m1:minus_exp=auto;mxfp8_e4m3:round=dither;mxfp4;nvf4;nvf4:emulate=seed;"
    "nvfp4;nf4;fp8_e4m3;fp8_e4m3:emulate=seed;int8sym;bf16;hif8;hifx4_v12"
)


@pytest.mark.slow  # about 12 minutes of compiling on 2 cores (run with -m slow)
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_every_kernel_compiles_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, str(SCRIPT), FORMATS], capture_output=True, text=True, env=env, timeout=1200)
    if "No module named 'triton.backends.nvidia'" in r.stderr:
        pytest.skip("this triton has no NVIDIA backend")
    assert r.returncode == 0 and ", 0 failed" in r.stdout, (r.stdout[-3000:], r.stderr[-3000:])
    assert "_merge_kernel" in r.stdout and "_mx_sums_kernel" in r.stdout
