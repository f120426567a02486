"""fqtool sweep: every point against a direct computation (a float64 MX quantizer written here from
formats-mx.md §2.3-§2.4, and the kernel's own minus_exp / auto modes), the auto per-block choice
by hand, the best pick, numel-weighted aggregates, JSON round trip and re-plot, figures, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

import kernels
from fqtool import metrics, sweep
from fqtool.errors import UsageError
from fqtool.metrics import METRICS
from kernels import chunked
from kernels.reference.mx import resolve_mx_element
from kernels.stats import quantize_with_sums

app = typer.Typer()


@app.callback()
def _root() -> None:
    """A local app holding only the sweep command."""


sweep.register(app)


def invoke(*args):
    return CliRunner().invoke(app, ["sweep", *(str(a) for a in args)])


# --------------------------------------------------------------------------- a direct MX quantizer


def _rule_exponent(a: float, rule: str, el) -> int:
    """E for a block amax a > 0 (formats-mx.md §11.2), in float64 math."""
    lg = math.log2(a)
    if rule == "floor":
        return math.floor(lg)
    if rule == "ceil":
        return math.ceil(lg)
    if rule == "rceil":
        return math.ceil(math.log2(a / el.max_norm)) + el.emax
    if rule == "carry":
        return math.floor(lg + 0.5)
    # even: amax rounded to the element's mantissa bits (ties up), then its exponent
    fl = math.floor(lg)
    frac = a / 2.0**fl
    r = math.floor(frac * 2**el.man_bits + 0.5) / 2**el.man_bits
    return fl + (1 if r >= 2 else 0)


def _element(y: np.ndarray, el) -> np.ndarray:
    """§2.4: round to the element grid (ties away from zero), saturate."""
    out = np.zeros_like(y)
    nz = y != 0
    p = np.maximum(np.floor(np.log2(np.abs(y[nz]))), el.emin)
    step = 2.0 ** (p - el.man_bits)
    out[nz] = np.sign(y[nz]) * np.floor(np.abs(y[nz]) / step + 0.5) * step
    return np.clip(out, -el.max_norm, el.max_norm)


def mx_direct(x: np.ndarray, element: str, block: int, rule: str, k: int) -> np.ndarray:
    """Blocks of ``block`` along the last axis (a ragged tail), E = E_rule(amax) - k, s clamped to ±127."""
    el = resolve_mx_element(element)
    q = np.zeros_like(x, dtype=np.float64)
    for r in range(x.shape[0]):
        for b0 in range(0, x.shape[1], block):
            xb = x[r, b0 : b0 + block].astype(np.float64)
            a = np.abs(xb).max()
            E = _rule_exponent(a, rule, el) if a > 0 else -126
            s = min(max(E - k - el.emax, -127), 127)
            q[r, b0 : b0 + block] = _element(xb / 2.0**s, el) * 2.0**s
    return q


def block_errors(x: np.ndarray, q: np.ndarray, block: int) -> list[float]:
    return [
        float(((q[r, b0 : b0 + block] - x[r, b0 : b0 + block].astype(np.float64)) ** 2).sum())
        for r in range(x.shape[0])
        for b0 in range(0, x.shape[1], block)
    ]


def points_of(points, strategy=None):
    return {(p.strategy, p.rule, p.k): p for p in points if strategy in (None, p.strategy)}


@pytest.fixture(scope="module")
def small():
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 80, generator=g) * torch.logspace(-2, 1, 80)  # 80 = 2 blocks of 32 + a tail of 16


# --------------------------------------------------------------------------- points


@pytest.mark.parametrize("element", ["fp4_e2m1", "fp8_e4m3"])
def test_simple_points_equal_a_direct_computation(small, element):
    spec = sweep.check_format(f"mx{element}")
    offsets = (0, 1, 2, 3)
    points, blocks, _ = sweep.sweep_tensor(small, spec, sweep.RULES, offsets)
    assert blocks == 6 * 3
    pts = points_of(points, "simple")
    x = small.numpy()
    for rule in sweep.RULES:
        for k in offsets:
            q = mx_direct(x, element, 32, rule, k)
            d = q - x.astype(np.float64)
            p = pts[("simple", rule, k)]
            assert p.metrics["mse"] == pytest.approx((d**2).mean(), rel=1e-12, abs=0), (rule, k)
            assert p.metrics["max_abs_err"] == pytest.approx(np.abs(d).max(), rel=1e-12)
            assert p.blocks_lowered_frac == (1.0 if k else 0.0)
            mse0 = ((mx_direct(x, element, 32, rule, 0) - x) ** 2).mean()
            assert p.mse_gain_pct == pytest.approx((mse0 - (d**2).mean()) / mse0 * 100, rel=1e-9, abs=1e-9)


def test_points_are_the_kernels_own_rules_and_offsets(small):
    """k = 0 is fake_quantize(scale=rule); ceil minus k is the kernel's minus_exp=k; the metrics are
    fqtool.metrics.compute of the kernel's sums (what fqtool analyze reports)."""
    spec = sweep.check_format("mxfp4_e2m1")
    points, _, _ = sweep.sweep_tensor(small, spec, sweep.RULES, range(4))
    pts = points_of(points)
    for rule in sweep.RULES:
        want = metrics.compute(quantize_with_sums(small, spec.replace(scale=rule))[1])
        for strategy in sweep.STRATEGIES:
            got = pts[(strategy, rule, 0)].metrics
            for name in METRICS:
                assert got[name] == pytest.approx(want[name], rel=1e-12), (rule, name)
    for k in range(4):
        want = metrics.compute(quantize_with_sums(small, spec.replace(minus_exp=k))[1])
        got = pts[("simple", "ceil", k)].metrics
        for name in METRICS:
            assert got[name] == pytest.approx(want[name], rel=1e-12), (k, name)


@pytest.mark.parametrize(("mode", "k"), [("auto", 1), ("auto-2", 2)])
def test_auto_at_ceil_is_the_kernels_auto_mode(small, mode, k):
    spec = sweep.check_format("mxfp4_e2m1")
    points, _, _ = sweep.sweep_tensor(small, spec, ("ceil",), range(3))
    want = metrics.compute(quantize_with_sums(small, spec.replace(minus_exp=mode))[1])
    got = points_of(points)[("auto", "ceil", k)].metrics
    assert got["mse"] == pytest.approx(want["mse"], rel=1e-12)
    assert got["clipped_frac"] == want["clipped_frac"]


def test_auto_chooses_per_block_by_hand():
    # MXFP4 (E2M1: 0, 0.5, 1, 1.5, 2, 3, 4, 6), ceil rule. Block "lowered": one 0.6 and 31 x 0.2.
    # E = 0 (X = 1/4): 0.6 -> 0.5, 0.2 -> 0.25 (errors 0.1 and 31 x 0.05); E = -1 (X = 1/8):
    # 0.6 -> 0.5, 0.2 -> 0.1875 (errors 0.1 and 31 x 0.0125): offset 1 is better. Block "kept":
    # 32 x 0.9, E = 0 gives 1.0 (error 0.1), E = -1 saturates at 0.75 (error 0.15): offset 0 is
    # better. Then a random block and a ragged tail of 16 per row.
    lowered = [0.6] + [0.2] * 31
    kept = [0.9] * 32
    g = torch.Generator().manual_seed(1)
    rnd = torch.randn(48, generator=g).tolist()
    x = torch.tensor([lowered + kept + rnd, kept + lowered + rnd[::-1]], dtype=torch.float32)
    spec = sweep.check_format("mxfp4_e2m1")
    points, blocks, _ = sweep.sweep_tensor(x, spec, sweep.RULES, (0, 1))
    xn = x.numpy()
    for rule in sweep.RULES:
        e0 = block_errors(xn, mx_direct(xn, "fp4_e2m1", 32, rule, 0), 32)
        e1 = block_errors(xn, mx_direct(xn, "fp4_e2m1", 32, rule, 1), 32)
        choose = [b < a for a, b in zip(e0, e1, strict=True)]
        p = points_of(points)[("auto", rule, 1)]
        assert blocks == len(choose) == 8
        assert p.blocks_lowered_frac == sum(choose) / len(choose)
        assert p.metrics["mse"] == pytest.approx(sum(map(min, e0, e1)) / x.numel(), rel=1e-12)
    ceil_choice = [
        b < a
        for a, b in zip(
            block_errors(xn, mx_direct(xn, "fp4_e2m1", 32, "ceil", 0), 32),
            block_errors(xn, mx_direct(xn, "fp4_e2m1", 32, "ceil", 1), 32),
            strict=True,
        )
    ]
    assert ceil_choice[0] and not ceil_choice[1] and not ceil_choice[4] and ceil_choice[5]


def test_blocks_along_another_axis_with_options():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(40, 5, generator=g)  # axis 0, block 16: blocks of 16, 16 and a tail of 8
    spec = sweep.check_format("mxfp8_e4m3:block=16,axis=0")
    points, blocks, _ = sweep.sweep_tensor(x, spec, ("floor", "carry"), (0, 2))
    assert blocks == 5 * 3
    xt = x.T.contiguous().numpy()
    for rule in ("floor", "carry"):
        q = mx_direct(xt, "fp8_e4m3", 16, rule, 2)
        assert points_of(points)[("simple", rule, 2)].metrics["mse"] == pytest.approx(((q - xt) ** 2).mean(), rel=1e-12)


@pytest.mark.parametrize(
    ("fmt", "shape"),
    [
        ("mxfp4_e2m1", (6, 80)),
        ("mxfp8_e4m3:block=16,axis=0", (40, 5)),
        ("mxint8", (200,)),
        ("mxfp4_e2m1:block=0", (4, 50)),
    ],
)
def test_pieces_give_the_whole_tensors_points(monkeypatch, fmt, shape):
    """Cut into many pieces of whole blocks (rows, column ranges of a long row, inner slices), the
    sweep gives the points of the tensor swept in one piece."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(*shape, generator=g) * torch.logspace(-3, 2, shape[-1])
    spec = sweep.check_format(fmt)
    whole, blocks, _ = sweep.sweep_tensor(x, spec, sweep.RULES, range(3))
    monkeypatch.setattr(chunked, "CHUNK_ELEMS", 48)
    assert len(chunked.split(x, spec, *chunked.layout(spec))[2]) > 2
    cut, cut_blocks, _ = sweep.sweep_tensor(x, spec, sweep.RULES, range(3))
    assert cut_blocks == blocks
    for a, b in zip(whole, cut, strict=True):
        assert (a.strategy, a.rule, a.k, a.blocks_lowered_frac) == (b.strategy, b.rule, b.k, b.blocks_lowered_frac)
        for name in METRICS:
            assert b.metrics[name] == pytest.approx(a.metrics[name], rel=1e-12), name


def test_input_is_not_modified(small):
    before = small.clone()
    sweep.sweep_tensor(small.to(torch.bfloat16), sweep.check_format("mxfp4_e2m1"), ("even",), (0, 1))
    sweep.sweep_tensor(small, sweep.check_format("mxfp4_e2m1"), ("even",), (0, 1))
    assert torch.equal(small, before)


# --------------------------------------------------------------------------- best and aggregates


def _p(strategy, rule, k, mse):
    return sweep.Point(strategy, rule, k, {"mse": mse}, 0.0, 0.0)


def test_best_is_lowest_mse_then_smaller_k_then_rule_order_then_simple():
    rules = ("floor", "ceil")
    best = sweep._best
    key = lambda p: p.metrics["mse"]  # noqa: E731
    pts = [_p("auto", "ceil", 1, 1.0), _p("simple", "floor", 2, 0.5), _p("auto", "floor", 3, 0.5)]
    assert best(pts, rules, key) == pts[1]
    pts = [_p("auto", "ceil", 1, 0.5), _p("simple", "ceil", 1, 0.5), _p("auto", "floor", 1, 0.5)]
    assert best(pts, rules, key) == pts[2]  # same k: floor comes first in the rule order
    pts = [_p("auto", "floor", 1, 0.5), _p("simple", "floor", 1, 0.5)]
    assert best(pts, rules, key) == pts[1]  # then simple before auto
    pts = [_p("simple", "floor", 0, math.nan), _p("auto", "ceil", 7, 9.0)]
    assert best(pts, rules, key) == pts[1]  # NaN never wins


@pytest.fixture(scope="module")
def two_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweep_in")
    g = torch.Generator().manual_seed(3)
    save_file({"a": torch.randn(4, 64, generator=g), "b": torch.randn(2, 40, generator=g) * 30}, d / "m.safetensors")
    save_file({"c": torch.randn(3, 32, generator=g).to(torch.bfloat16)}, d / "n.safetensors")
    return d


@pytest.fixture(scope="module")
def result(two_files):
    return sweep.run([str(two_files)], "mxfp4_e2m1", offsets=range(4))


def test_run_best_per_tensor_and_aggregate_numel_weighted(result):
    assert [t.tensor.name for t in result.tensors] == ["a", "b", "c"]
    assert result.offsets == (0, 1, 2, 3)
    for t in result.tensors:
        assert t.best.metrics["mse"] == min(p.metrics["mse"] for p in t.points)
    numels = [t.tensor.numel for t in result.tensors]
    blocks = [t.blocks for t in result.tensors]
    assert blocks == [8, 4, 3]
    for a in result.aggregate:
        pts = [points_of(t.points)[(a.strategy, a.rule, a.k)] for t in result.tensors]
        mses = [p.metrics["mse"] for p in pts]
        assert a.metrics == metrics.aggregate([p.metrics for p in pts], numels)
        assert a.metrics["mse"] == pytest.approx(np.dot(mses, numels) / sum(numels), rel=1e-12)
        assert a.mse_mean == pytest.approx(np.mean(mses), rel=1e-12)
        assert a.mse_std == pytest.approx(np.std(mses), rel=1e-9)
        lowered = sum(p.blocks_lowered_frac * b for p, b in zip(pts, blocks, strict=True))
        assert a.blocks_lowered_frac == pytest.approx(lowered / sum(blocks), rel=1e-12)
    assert result.best.metrics["mse"] == min(a.metrics["mse"] for a in result.aggregate)
    assert result.best_by_mean.mse_mean == min(a.mse_mean for a in result.aggregate)


# --------------------------------------------------------------------------- JSON, figures, CLI


def test_json_round_trip_keeps_every_point(result):
    doc = json.loads(json.dumps(sweep.to_json(result), allow_nan=False))
    assert doc["schema"] == "fqtool.sweep/1"
    assert len(doc["tensors"][0]["points"]) == 2 * 5 * 4
    back = sweep.from_json(doc)
    assert back == result
    for i in (None, 0, 1, 2):
        assert sweep.figure_data(back, i) == sweep.figure_data(result, i)


def test_figure_data_is_the_computed_data(result):
    fd = sweep.figure_data(result, 1)
    pts = points_of(result.tensors[1].points)
    for c in fd.curves:
        assert c.mse == tuple(pts[(c.strategy, c.rule, k)].metrics["mse"] for k in c.ks)
    b = result.tensors[1].best
    assert fd.best == (b.strategy, b.rule, b.k, b.metrics["mse"])
    fa = sweep.figure_data(result)
    agg = points_of(result.aggregate)
    for c in fa.curves:
        assert c.mse == tuple(agg[(c.strategy, c.rule, k)].mse_mean for k in c.ks)
        assert c.err == tuple(agg[(c.strategy, c.rule, k)].mse_std for k in c.ks)


def _image_size(path):
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.format, im.size


def test_cli_json_figures_and_replot(two_files, tmp_path):
    out, re_out = tmp_path / "figs", tmp_path / "again"
    js = tmp_path / "sweep.json"
    r = invoke(two_files, "-f", "mxfp4_e2m1", "--offsets", "0:3", "--json", js, "--output-dir", out, "--per-tensor")
    assert r.exit_code == 0, r.output
    assert "best" in r.stdout and "auto" in r.stdout
    files = sorted(p.name for p in out.iterdir())
    assert files == [
        "sweep_mxfp4_e2m1_000_a.png",
        "sweep_mxfp4_e2m1_001_b.png",
        "sweep_mxfp4_e2m1_002_c.png",
        "sweep_mxfp4_e2m1_all.png",
    ]
    for f in files:
        fmt, (w, h) = _image_size(out / f)
        assert fmt == "PNG" and abs(w - 1200) <= 60 and abs(h - 750) <= 40  # 8 x 5 in at 150 dpi
    r = invoke("--replot", js, "--output-dir", re_out, "--per-tensor", "--paper", "-q")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in re_out.iterdir()) == files
    fmt, (w, h) = _image_size(re_out / files[-1])
    assert fmt == "PNG" and abs(w - 2100) <= 60 and abs(h - 1500) <= 60  # 3.5 x 2.5 in at 600 dpi
    # The replot draws the same data as the run that wrote the JSON.
    assert sweep.figure_data(sweep.load_json(js)) == sweep.figure_data(sweep.from_json(json.loads(js.read_text())))


def test_cli_output_formats(two_files, tmp_path):
    r = invoke(two_files, "-f", "mxint8", "--rules", "ceil,floor", "--offsets", "1", "-o", "json", "-q")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["rules"] == ["ceil", "floor"] and doc["offsets"] == [0, 1]
    assert doc["aggregate"]["best"]["rule"] in ("ceil", "floor")
    r = invoke(two_files, "-f", "mxint8", "--offsets", "0,2", "-o", "csv", "-q")
    lines = r.stdout.splitlines()
    assert lines[0].split(",")[:7] == ["kind", "tensor", "file", "format", "strategy", "rule", "k"]
    assert len(lines) == 1 + 4 * 2 * 5 * 2  # 3 tensors + the aggregate, x strategies x rules x offsets
    r = invoke(two_files, "-f", "mxfp4_e2m1", "--offsets", "0:1", "-o", "markdown", "-q")
    assert r.stdout.startswith("### Best point per tensor")
    r = invoke(two_files, "-f", "mxfp4_e2m1", "--offsets", "0:1", "--output-dir", tmp_path, "--image-format", "svg")
    assert r.exit_code == 0 and "<svg" in (tmp_path / "sweep_mxfp4_e2m1_all.svg").read_text()[:2000]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["-f", "nvfp4"], "MX format"),
        (["-f", "mxfp4"], "MX format"),  # the seed's QType alias is not the MX kernel
        (["-f", "hif8"], "MX format"),
        (["-f", "mxfp4_e2m1:minus_exp=2"], "--offsets"),
        (["-f", "mxfp4_e2m1:scale=ceil"], "--rules"),
        (["-f", "mxfp4_e2m1:round=dither"], "dither"),
        (["-f", "mxfp4_e2m1", "--rules", "up"], "--rules"),
        (["-f", "mxfp4_e2m1", "--offsets", "0:x"], "--offsets"),
        (["-f", "mxfp4_e2m1", "--per-tensor"], "--output-dir"),
        (["-f", "nosuch"], "nosuch"),
        (["-f", "mxfp4_e2m1", "--json", "/nonexistent/dir/s.json"], "does not exist"),
    ],
)
def test_bad_usage_exits_2_with_one_line(two_files, args, says):
    r = invoke(two_files, *args)
    assert r.exit_code == 2
    assert says in r.output and r.output.count("\n") == 1


def test_replot_rejects_other_json(tmp_path, two_files):
    other = tmp_path / "analysis.json"
    other.write_text(json.dumps({"schema": "fqtool.analysis/1"}))
    r = invoke("--replot", other)
    assert r.exit_code == 2 and "not a fqtool sweep result" in r.output and str(other) in r.output
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema": "fqtool.sweep/1", "tensors": [')
    r = invoke("--replot", broken)
    assert r.exit_code == 2 and "not valid JSON" in r.output
    r = invoke("--replot", broken, two_files)
    assert r.exit_code == 2


def test_parse_offsets():
    assert sweep.parse_offsets("0:7") == tuple(range(8))
    assert sweep.parse_offsets("3,1") == (0, 1, 3)
    for bad in ("", "7:0", "-1:2", "a"):
        with pytest.raises(UsageError):
            sweep.parse_offsets(bad)


def test_every_rule_is_a_kernel_rule():
    assert set(sweep.RULES) == {"floor", "ceil", "rceil", "even", "carry"}
    spec = kernels.parse("mxfp4_e2m1")
    for r in sweep.RULES:
        spec.replace(scale=r)
