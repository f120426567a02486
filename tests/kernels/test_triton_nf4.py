"""The Triton NF4 kernels (``kernels.triton.nf4``) against the reference, bit for bit, in Triton's interpreter.

``triton_support`` sets ``TRITON_INTERPRET=1`` before ``triton`` loads, so the kernels run on CPU
tensors. Every comparison is exact (NaN == NaN, ±0 distinct) against ``quantize_nf4_ref``; the
fused statistics against ``error_sums_ref`` of the reference output.
"""

from __future__ import annotations

import triton_support  # first: it sets TRITON_INTERPRET=1 before triton loads

# isort: split

import math  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from corner_cases import as_dtype, corner_cases  # noqa: E402
from golden import assert_bits_equal, case_files, contract, load, needs_golden  # noqa: E402
from triton_support import DTYPES, SKIP, check, check_sums, heavy  # noqa: E402

import kernels  # noqa: E402
from kernels import backends  # noqa: E402
from kernels.reference.nf4 import NF4_CODE  # noqa: E402

if SKIP:
    pytest.skip(SKIP, allow_module_level=True)

from kernels.triton import nf4 as tnf4  # noqa: E402

F32 = torch.float32
INF, NAN = math.inf, math.nan


@pytest.fixture(autouse=True)
def _quiet_interpreter():
    w = triton_support.quiet()
    yield
    w.__exit__(None, None, None)


def _ulps(v: float, k: int) -> list[float]:
    """v and its k float32 neighbours on each side."""
    c = torch.tensor([v], dtype=F32).view(torch.int32)
    sign = -1 if v < 0 else 1
    return (c + sign * torch.arange(-k, k + 1, dtype=torch.int32)).view(F32).tolist()


def _blocks(rows: list[list[float]], width: int = 64) -> torch.Tensor:
    """One block per row, zero-filled to ``width``."""
    return torch.tensor([r + [0.0] * (width - len(r)) for r in rows], dtype=F32)


def _midpoints() -> list[float]:
    code = torch.tensor(NF4_CODE, dtype=F32)
    return ((code[:-1] + code[1:]) / 2).tolist()  # as bitsandbytes forms them, in float32


def nf4_cases() -> dict[str, torch.Tensor]:
    """The decision boundaries and §5.1's special cases, one block of 64 per row."""
    mids = _midpoints()
    edges = [-1 + (c + 0.5) / 16 for c in range(-1, 33)]  # the kernel's cell edges
    vals = [v for p in mids + edges + list(NF4_CODE) for v in _ulps(p, 3) if -1 <= v <= 1]
    scaled = []
    # Absmax values whose reciprocal is inexact, down to bitsandbytes' 1e-38 floor and below it.
    for amax in (3.0, 0.7, 1e-20, 123.456, 2.0**-126, 1e-38, 5e-39, 3e38):
        scaled.append([amax] + [v * amax for m in mids for v in _ulps(m, 1)][:63])
    return {
        "midpoints": _blocks([[1.0] + vals[i : i + 63] for i in range(0, len(vals), 63)]),
        "scaled_midpoints": _blocks(scaled),
        "specials": _blocks(
            [
                [1.0, INF, -2.0],
                [-INF, 0.5, -0.25],
                [INF, -INF, 0.0],
                [NAN, 1.0],
                [NAN, INF, -INF],
                [-0.0, -0.0],
                [0.0],
                [1e-45, -3e-45, 2e-45],
                [2.0**-24, -3 * 2.0**-24, 1023 * 2.0**-24, 2.0**-14, -(2.0**-133)],  # fp16/bf16 subnormals
                [-1.0, 1.0, -0.5, 0.5],
            ]
        ),
        "float32_max": _blocks([[float(torch.finfo(F32).max), -1.0, 1e-45], [-3e38, 1e38, 2.0**127]]),
    }


# --------------------------------------------------------------------------- bit-exactness


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_random_matches_reference(dtype):
    x2 = heavy((37, 45), seed=1).to(dtype)  # ragged along both axes for most blocks
    for fmt in ("nf4", "nf4:block=16", "nf4:block=7", "nf4:axis=0", "nf4:block=5,axis=0", "nf4:block=1,axis=0"):
        check(x2, fmt)
    x3 = heavy((3, 5, 70), seed=2).to(dtype)
    for fmt in ("nf4", "nf4:axis=1", "nf4:axis=0,block=2", "nf4:axis=-2,block=3"):
        check(x3, fmt)
    check(heavy((300,), seed=3).to(dtype), "nf4")  # 1-D, ragged tail


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_corner_cases_match_reference(dtype):
    for case in corner_cases().values():
        x = as_dtype(case, dtype)
        if x is not None:
            check(x, "nf4")
            if x.dim() > 1:
                check(x, "nf4:block=16,axis=0")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_decision_boundaries_and_specials(dtype):
    """Every midpoint, code and cell edge ± 3 ulps; scaled midpoints; NaN/Inf/zero/subnormal blocks."""
    for case in nf4_cases().values():
        x = as_dtype(case, dtype)
        if x is not None:
            check(x, "nf4")
            check(x.T.contiguous(), "nf4:axis=0")


def test_every_float_near_the_midpoints():
    """All float32 values within 2^8 ulps of each midpoint, each block's absmax 1 (s = x)."""
    mids = torch.tensor(_midpoints(), dtype=F32)
    around = mids.view(torch.int32).unsqueeze(1) + torch.arange(-(2**8), 2**8, dtype=torch.int32)
    vals = around.view(F32).flatten()
    vals = vals[: vals.numel() // 63 * 63].view(-1, 63)
    check(torch.cat([torch.ones(vals.shape[0], 1), vals], 1), "nf4")


@pytest.mark.parametrize("block", [1, 2, 33, 64, 128, 4096, 8192])
def test_block_lengths(block):
    """Padded and exact power-of-two blocks, blocks longer than the row, and the largest block
    held whole in one tile (8192, eight warps)."""
    x = heavy((2, 5000), seed=block)
    x[1, 17] = NAN
    check(x, f"nf4:block={block}")
    check(x.to(torch.bfloat16)[:, :300], f"nf4:block={block}")
    check(x[:, :40].T.contiguous().to(torch.float16), f"nf4:block={block},axis=0")


def test_long_blocks_in_chunks():
    """Blocks longer than one tile: the absmax over all chunks first, then a second read."""
    x = heavy((1, 9000), seed=21)
    x[0, 100] = 1e6  # the first block's absmax in its first chunk: later chunks scale by it
    check(x, "nf4:block=8193")
    check_sums(x, "nf4:block=8193")
    check(x.to(torch.bfloat16), "nf4:block=20000")  # one block longer than the row: the row


def test_chunked_path_on_small_tiles(monkeypatch):
    """The chunked path with tiles of 64 elements (so it runs fast here): chunks of 64 along the
    last axis, of 8 positions x 8 neighbouring blocks otherwise; absmax in any chunk, NaN, Inf."""
    monkeypatch.setattr(tnf4, "TILE_ELEMS", 64)
    monkeypatch.setattr(tnf4, "MAX_TILE_BLOCK", 16)
    x = heavy((2, 200), seed=23)
    x[0, 150], x[1, 3], x[1, 77] = 1e5, NAN, INF
    for dtype in (torch.float32, torch.bfloat16):
        xd = x.to(dtype)
        check(xd, "nf4:block=100")
        check(xd.T.contiguous(), "nf4:block=33,axis=0")
    check(x, "nf4:block=1000")  # the whole row
    check(x[:, :60].reshape(2, 3, 20).transpose(1, 2).contiguous(), "nf4:block=17,axis=1")
    check_sums(x, "nf4:block=100")
    check_sums(x.T.contiguous().to(torch.bfloat16), "nf4:block=33,axis=0")


@needs_golden
def test_golden_contract_nf4_entries():
    """The contract's ``nf4`` entries (against bitsandbytes 0.50.2's own output), every case file."""
    ran = 0
    for entry in contract():
        if entry.get("format") != "nf4" or "input_cast" in entry:
            continue
        for path in case_files(entry["family"], entry["stem"]):
            tensors, meta = load(path)
            x = tensors[entry.get("input", "input")]
            if entry.get("dtypes", "all") != "all" and str(x.dtype).removeprefix("torch.") not in entry["dtypes"]:
                continue
            got = kernels.fake_quantize(x, entry["format"].format(**meta), backend="triton")
            want_dtype = x.dtype if entry.get("output_dtype") == "input" else tensors[entry["against"]].dtype
            assert got.dtype == want_dtype
            assert_bits_equal(got, tensors[entry["against"]], f"{path.stem} vs {entry['against']}")
            check(x, "nf4")
            ran += 1
    assert ran >= 4, ran


def test_input_is_not_modified_and_strided_input():
    x = heavy((40, 70), seed=9)
    view = x[:, ::2]  # non-contiguous: the launcher makes a contiguous copy, never writes x
    check(view, "nf4:block=8")
    check(view.T, "nf4:block=8,axis=1")


# --------------------------------------------------------------------------- fused sums


_SUMS_SUBSET = ("zeros", "f32_subnormals", "huge", "nan_in_block", "inf_in_block", "ragged_3d", "specials")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_sums_match_reference(dtype):
    x = heavy((130, 77), seed=7)
    x[3, 4], x[5, 60], x[9, 1], x[100, 76] = NAN, INF, -INF, 1e30
    x = x.to(dtype)
    for fmt in ("nf4", "nf4:block=16,axis=0"):
        check_sums(x, fmt)
    # Every corner case in float32; the ones with special values in the narrow dtypes (the interpreter is slow).
    cases = {**corner_cases(), **nf4_cases()}
    for name, case in cases.items():
        c = as_dtype(case, dtype)
        if c is not None and (dtype == F32 or name in _SUMS_SUBSET):
            check_sums(c, "nf4")
    check_sums(heavy((3, 5, 70), seed=4).to(dtype), "nf4:axis=1,block=4")


def test_sums_many_programs_merge():
    """Several programs: the host merge of means and M2 stays exact to float64 rounding."""
    x = heavy((32, 512), seed=5) + 1000.0  # a mean that dwarfs the spread; 4 programs of 64 blocks
    check_sums(x, "nf4")
    check_sums(x[:4].T.contiguous(), "nf4:block=1,axis=0")


def test_sums_cache():
    """A cache dict is accepted and gives the same sums; nf4 needs no per-tensor reduction, so
    it stays empty (the block absmax depends on the format and is computed in the same pass)."""
    x = heavy((64, 96), seed=12)
    cache: dict = {}
    spec = kernels.parse("nf4:block=32")
    first = tnf4.sums(x, spec, cache=cache)
    second = tnf4.sums(x, spec, cache=cache)
    assert first.as_dict() == second.as_dict() == tnf4.sums(x, spec).as_dict()
    assert cache == {}
    check_sums(x, "nf4:block=32", cache=cache)


def test_empty_inputs():
    for x in (torch.zeros(0, 64), torch.zeros(4, 0), torch.zeros(0)):
        check(x, "nf4")
        check_sums(x, "nf4")


# --------------------------------------------------------------------------- registration


def test_backend_selection():
    spec = kernels.parse("nf4")
    assert backends.select("cpu", spec, "triton").name == "triton"
    for fmt in ("nf4:block=64,axis=0", "nf4:block=1", "nf4:block=8192", "nf4:block=100000"):
        assert tnf4.unsupported_reason(kernels.parse(fmt)) is None, fmt
    for fmt in (f"nf4:block={2**30 + 1}",):
        s = kernels.parse(fmt)
        why = backends.REGISTRY["triton"].check(torch.device("cuda"), s)
        assert isinstance(why, str) and "block" in why, fmt
        with pytest.raises(backends.BackendError):
            backends.select("cpu", s, "triton")
        assert backends.select("cuda", s).name == "reference"
    assert tnf4.unsupported_reason(kernels.parse("nf4B4b64")) is not None
    with pytest.raises(ValueError):
        tnf4.fake_quantize(torch.ones(4, 4), kernels.parse("nf4:axis=2"))
