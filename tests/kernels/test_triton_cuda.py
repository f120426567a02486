"""Every Triton kernel family compiled for a GPU, against the reference on the GPU at full size
(``triton_cuda_check.py`` in a subprocess: the test session may have Triton in interpreter mode)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_every_family_bit_exact_on_the_gpu():
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = Path(__file__).with_name("triton_cuda_check.py")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=1800)
    print(r.stdout)
    assert r.returncode == 0 and r.stdout.rstrip().endswith("ok"), (r.stdout[-3000:], r.stderr[-4000:])
