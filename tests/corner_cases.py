"""The one table of named corner-case inputs that every backend is checked against the reference on.

Each case is a float32 tensor; tests also run it as bfloat16 and float16 where it fits.
"""

from __future__ import annotations

import math

import torch

F32_MAX = torch.finfo(torch.float32).max
F32_TINY = torch.finfo(torch.float32).tiny  # smallest normal, 2^-126


def _row(vals, width=96) -> torch.Tensor:
    vals = list(vals)[:width]
    return torch.tensor(vals + [0.0] * (width - len(vals)), dtype=torch.float32)


def _ties() -> torch.Tensor:
    """Exact midpoints k + 1/2 and k/2^j + 2^-(j+1) at many binades, anchored per block by 2^j maxima."""
    g = torch.Generator().manual_seed(1)
    k = torch.randint(0, 64, (16, 96), generator=g).float() + 0.5
    shift = torch.exp2(torch.randint(-12, 12, (16, 1), generator=g).float())
    t = k / 8 * shift
    t[:, ::16] = 7.5 * shift[:, 0:1].expand(-1, 6)  # anchors
    return t * torch.where(torch.rand(16, 96, generator=g) < 0.5, -1.0, 1.0)


def corner_cases() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    cases = {
        "zeros": torch.zeros(4, 64),
        "neg_zeros": torch.full((2, 64), -0.0),
        "one_value": torch.tensor([[3.0]]),
        "f32_subnormals": torch.stack(
            [_row([1e-45 * k for k in range(1, 97)]), _row([F32_TINY * k / 97 for k in range(96)])]
        ),
        "tiny": torch.randn(4, 96, generator=g) * 1e-30,
        # Rows whose amax is a few fp32 subnormal steps: per-row steps like amax/127 underflow to 0.
        "subnormal_amax_rows": torch.stack(
            [_row([2.2421e-44, 0.0, -1e-45]), _row([1e-45, -1e-45]), _row([8e-44, 3e-45])]
        ),
        "huge": torch.stack([_row([F32_MAX, -F32_MAX, 1e38, 3e38, 1.0]), _row([F32_MAX * 0.999, 2.0**127, 1e-38])]),
        "powers_of_two_pm_ulp": torch.stack(
            [
                _row([2.0**j * (1 - 2**-24) for j in range(-40, 56)]),
                _row([2.0**j for j in range(-40, 56)]),
                _row([2.0**j * (1 + 2**-23) for j in range(-40, 56)]),
            ]
        ),
        "just_over_max": torch.stack(
            [
                _row(
                    [
                        448.0,
                        464.0,
                        480.0,
                        500.0,
                        6.0,
                        6.5,
                        7.0,
                        7.75,
                        28.0,
                        30.0,
                        57344.0,
                        61440.0,
                        32768.0,
                        40960.0,
                        49152.0,
                        65504.0,
                        65520.0,
                        127.0,
                        127.5,
                    ]
                )
            ]
        ),
        "ties": _ties(),
        "nan_in_block": torch.stack([_row([1.0, math.nan, 2.0, 3.0]), _row([0.5] * 40 + [math.nan])]),
        "inf_in_block": torch.stack(
            [_row([1.0, math.inf, 2.0]), _row([0.5] * 40 + [-math.inf]), _row([math.inf, -math.inf])]
        ),
        "ragged_77": torch.randn(5, 77, generator=g) * 3,
        "ragged_3d": torch.randn(3, 5, 70, generator=g),
        "one_d_long": torch.randn(1000, generator=g),
        "outliers": torch.randn(8, 256, generator=g) * torch.where(torch.rand(8, 256, generator=g) < 0.01, 1000.0, 1.0),
        "lognormal": torch.exp(torch.randn(8, 128, generator=g) * 4) * torch.sign(torch.randn(8, 128, generator=g)),
    }
    return cases


def as_dtype(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """The case in another dtype, or None when it does not fit (fp16 overflow turns values into Inf)."""
    if dtype == torch.float32:
        return x
    y = x.to(dtype)
    if (torch.isinf(y) & ~torch.isinf(x)).any():
        return None
    return y
