"""fqtool hist: histograms against numpy on the same edges, the two-pass aggregate against one
histogram of the concatenation, moments against float64, code occupancy against a hand-counted MX
tensor, what the panels draw against the computed data, the figures (valid images of the stated
size), the table / JSON, and the error exits."""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

import kernels
from fqtool import hist, metrics, plotting
from kernels.ranges import unit_bound
from kernels.stats import quantize_with_sums

FP4 = "mxfp4_e2m1"

# Two MX blocks of 32 (block scales 1 and 2^-3) whose FP4 codes are known by hand: exact grid
# values, values that round (0.1, 0.2 -> 0; 0.3 -> 0.5; 5.2 -> 6; -5.5 -> -6; ...), and in the
# second block 7.5/8, above the block's bound 6/8: clipped to the top code.
HAND = [6, -6, 4, 3, 2, 1.5, 1, 0.5, 0, -0.5, -1, -1.5, -2, -3, -4, 0.1,
        0.2, 0.3, 2.4, 2.6, 5.2, 4.9, -0.7, -1.2, -2.2, -3.3, -4.4, -5.5, 0.05, 1.3, 1.8, 3.6]  # fmt: skip
HAND_CODES = [6, -6, 4, 3, 2, 1.5, 1, 0.5, 0, -0.5, -1, -1.5, -2, -3, -4, 0,
              0, 0.5, 2, 3, 6, 4, -0.5, -1, -2, -3, -4, -6, 0, 1.5, 2, 4]  # fmt: skip


def invoke(*args):
    app = typer.Typer()
    hist.register(app)

    @app.callback()
    def _root() -> None:  # keeps "hist" a subcommand, as in fqtool's app
        pass

    return CliRunner().invoke(app, ["hist", *map(str, args)], env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    act = torch.randn(64, 96, generator=g) * 0.5
    act[:, 3] *= 40  # a massive channel
    act[0, 0], act[1, 1], act[2, 2] = math.nan, math.inf, -math.inf
    return {
        "w": (torch.randn(48, 64, generator=g) * 0.02).to(torch.float32),
        "act": act,
        "grad": (torch.randn(32, 64, generator=g) * 1e-5).to(torch.bfloat16),
    }


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tensors) -> Path:
    d = tmp_path_factory.mktemp("hist_in")
    save_file({"w": tensors["w"], "act": tensors["act"]}, d / "a.safetensors")
    save_file({"grad": tensors["grad"]}, d / "b.safetensors")
    return d


@pytest.fixture(scope="module")
def aggregate(folder) -> hist.HistResult:
    return hist.run([str(folder)], [FP4, "mxfp8_e4m3"], aggregate=True, per_tensor=True, clip_threshold=1.0)


def concat(tensors) -> np.ndarray:
    # scan order: files sorted, tensors in storage order (safetensors stores keys sorted)
    return np.concatenate([tensors[k].float().numpy().ravel() for k in ("act", "w", "grad")]).astype(np.float64)


def finite(a: np.ndarray) -> np.ndarray:
    return a[np.isfinite(a)]


# --------------------------------------------------------------------------- histograms and moments


def test_bin_rule():
    assert hist.bin_count(100) == 50 and hist.bin_count(10_000) == 100 and hist.bin_count(10**6) == 200
    assert hist.bin_count(10**6, bins=17) == 17


def test_per_tensor_histogram_equals_numpy(aggregate, tensors):
    for t in aggregate.tensors:
        x = finite(tensors[t.name].float().numpy().ravel().astype(np.float64))
        h = t.values
        assert len(h.counts) == hist.bin_count(x.size)
        np.testing.assert_array_equal(h.edges, np.linspace(x.min(), x.max(), len(h.counts) + 1))
        np.testing.assert_array_equal(h.counts, np.histogram(x, bins=h.edges)[0])
        assert h.below == h.above == 0
        assert t.stats["n"] == x.size
        assert t.stats["median"] == np.median(x)
        assert t.stats["laplace_scale"] == pytest.approx(np.abs(x - np.median(x)).mean(), rel=1e-12)
        assert t.stats["mean"] == pytest.approx(x.mean(), rel=1e-9, abs=1e-12)
        assert t.stats["std"] == pytest.approx(x.std(), rel=1e-9)


def test_aggregate_two_pass_counts_equal_one_histogram_of_the_concatenation(aggregate, tensors):
    x = finite(concat(tensors))
    a = aggregate.aggregate
    np.testing.assert_array_equal(a.values.edges, np.linspace(x.min(), x.max(), hist.bin_count(x.size) + 1))
    np.testing.assert_array_equal(a.values.counts, np.histogram(x, bins=a.values.edges)[0])
    assert a.values.total == x.size
    # the error and element-domain histograms too, from a direct quantization of each tensor
    for k, fmt in enumerate((FP4, "mxfp8_e4m3")):
        vmax = float(kernels.representable_values(fmt).abs().max())
        ds, es = [], []
        for name in ("act", "w", "grad"):
            t = tensors[name]
            xt = t.double().numpy().ravel()
            q = kernels.fake_quantize(t, fmt).double().numpy().ravel()
            b = unit_bound(t, fmt).double().numpy().ravel()
            ok = np.isfinite(xt) & np.isfinite(q)
            ds.append(q[ok] - xt[ok])
            scaled = np.isfinite(xt) & np.isfinite(b) & (b > 0)  # a NaN in an MX block: no scale
            es.append(xt[scaled] * vmax / b[scaled])
        fh = a.formats[k]
        d, e = np.concatenate(ds), np.concatenate(es)
        assert fh.error.edges[-1] == np.abs(d).max() == -fh.error.edges[0]
        np.testing.assert_array_equal(fh.error.counts, np.histogram(d, bins=fh.error.edges)[0])
        np.testing.assert_array_equal(fh.element.counts, np.histogram(e, bins=fh.element.edges)[0])
        assert (fh.element.edges[0], fh.element.edges[-1]) == (e.min(), e.max())


def test_aggregate_with_a_range_counts_what_falls_outside(folder, tensors):
    r = hist.run([str(folder)], [FP4], aggregate=True, value_range=(-1.0, 1.0), bins=40)
    x = finite(concat(tensors))
    h = r.aggregate.values
    np.testing.assert_array_equal(h.counts, np.histogram(x, bins=np.linspace(-1, 1, 41))[0])
    assert (h.below, h.above) == (int((x < -1).sum()), int((x > 1).sum()))
    assert r.tensors[0].values is None  # aggregate only: no per-tensor histograms


def test_aggregate_moments_and_percentiles(aggregate, tensors):
    x = finite(concat(tensors))
    st = aggregate.aggregate.stats
    assert st["n"] == x.size
    assert (st["min"], st["max"]) == (x.min(), x.max())
    assert st["mean"] == pytest.approx(x.mean(), rel=1e-12, abs=1e-15)
    assert st["std"] == pytest.approx(x.std(), rel=1e-12)
    res = hist.QUANTILE_RESOLUTION  # within 0.8 % of the value
    for p, v in aggregate.aggregate.percentiles.items():
        true = np.quantile(x, int(p[1:]) / 100, method="inverted_cdf")
        assert abs(v - true) <= res * abs(true), (p, v, true)
    med = np.quantile(x, 0.5, method="inverted_cdf")
    assert st["median"] == pytest.approx(med, rel=res)
    assert st["laplace_scale"] == pytest.approx(np.abs(x - np.median(x)).mean(), rel=0.02)


def test_metrics_come_from_fqtool_metrics(aggregate, tensors):
    for t in aggregate.tensors:
        for fh in t.formats:
            expected = metrics.compute(quantize_with_sums(tensors[t.name], fh.format)[1])
            assert fh.metrics == expected
    x = tensors["w"].double()
    d = kernels.fake_quantize(tensors["w"], FP4).double() - x
    w = next(t for t in aggregate.tensors if t.name == "w").formats[0]
    assert w.metrics["sqnr_db"] == pytest.approx(10 * math.log10(float((x * x).sum() / (d * d).sum())), rel=1e-9)
    agg = aggregate.aggregate.formats[0].metrics
    assert agg == metrics.aggregate([t.formats[0].metrics for t in aggregate.tensors], [96 * 64, 48 * 64, 32 * 64])


def test_clip_threshold_and_verdict(aggregate, tensors):
    x = finite(concat(tensors))
    c = aggregate.aggregate.clip
    assert c.count == int((np.abs(x) > 1.0).sum()) and c.frac == c.count / x.size
    assert [hist.verdict(f) for f in (0.0, 0.0099, 0.01, 0.0499, 0.05, 0.0999, 0.1, 1.0)] == [
        "EXCELLENT", "EXCELLENT", "GOOD", "GOOD", "CAUTION", "CAUTION", "POOR", "POOR"
    ]  # fmt: skip


# --------------------------------------------------------------------------- code occupancy


def test_code_occupancy_on_a_hand_mx_tensor(tmp_path):
    x = torch.tensor([HAND, [7.5 / 8] + [v / 8 for v in HAND[1:]]], dtype=torch.float32)
    save_file({"hand": x}, tmp_path / "hand.safetensors")
    fh = hist.run([str(tmp_path / "hand.safetensors")], [FP4]).tensors[0].formats[0]
    # a direct count of q / block scale (block scales 1 and 2^-3)
    q = kernels.fake_quantize(x, FP4).numpy()
    direct = Counter((q / np.array([[1.0], [0.125]])).ravel().tolist())
    assert direct == Counter(HAND_CODES * 2)  # the kernel agrees with the hand codes
    assert dict(zip(fh.grid.tolist(), fh.codes.tolist(), strict=True)) == {
        v: direct.get(v, 0) for v in kernels.representable_values(FP4).tolist()
    }
    assert fh.coded == 64
    assert fh.zero_code_frac == HAND_CODES.count(0) / 32
    assert fh.top_code_frac == (HAND_CODES.count(6) + HAND_CODES.count(-6)) / 32
    assert fh.metrics["clipped_frac"] == 1 / 64  # 7.5/8 above its block's bound 6/8
    assert (fh.bound.min, fh.bound.max) == (0.75, 6.0)
    values, shares, std = hist.occupancy(fh)
    np.testing.assert_array_equal(shares, 100 * fh.codes / 64)
    assert std is None


def test_formats_without_a_grid_or_bound_say_why(tmp_path, tensors):
    save_file({"w": tensors["w"]}, tmp_path / "w.safetensors")
    r = hist.run([str(tmp_path / "w.safetensors")], ["bf16", "nf4"])
    for fh in r.tensors[0].formats:
        assert fh.codes is None and fh.element is None and fh.note
        assert math.isnan(fh.zero_code_frac)
        assert fh.error is not None


def test_grid_lines_thin_a_wide_grid_but_keep_all_of_a_small_one(aggregate):
    fp4, e4m3 = aggregate.aggregate.formats
    np.testing.assert_array_equal(hist.grid_lines(fp4, -10, 10), fp4.grid)
    lines = hist.grid_lines(e4m3, -500, 500)
    assert {0.0, 448.0, -448.0} <= set(lines.tolist()) and set(lines.tolist()) <= set(e4m3.grid.tolist())
    pos = np.sort(lines[lines > 0])
    assert np.all(np.diff(pos) >= 1000 / hist.GRID_LINES_MAX)


# --------------------------------------------------------------------------- what the panels draw


def test_panels_draw_the_computed_data(aggregate):
    t = next(t for t in aggregate.tensors if t.name == "act")
    fh = t.formats[0]
    with plotting.style():
        fig, axes = plotting.figure(nrows=2, ncols=2)
        for ax, draw in zip(axes.ravel(), hist._tensor_panels(t, fh, False, False), strict=True):
            draw(ax)
    values, edges, _ = axes[0, 0].patches[0].get_data()
    np.testing.assert_array_equal(edges, t.values.edges)
    np.testing.assert_allclose(values, t.values.counts / (t.values.total * np.diff(edges)))
    assert np.sum(values * np.diff(edges)) == pytest.approx(1.0)
    _, edges, _ = axes[1, 0].patches[0].get_data()
    np.testing.assert_array_equal(edges, fh.error.edges)
    bars = [p.get_height() for p in axes[1, 1].patches]
    np.testing.assert_allclose(bars, 100 * fh.codes / fh.coded)


# --------------------------------------------------------------------------- the command


def test_per_tensor_figures_table_and_json(tmp_path, folder):
    src = folder / "a.safetensors"
    before = hashlib.sha256(src.read_bytes()).hexdigest()
    out = tmp_path / "figs"
    r = invoke(src, "-f", FP4, "-i", "w", "--output-dir", out, "--json", tmp_path / "s.json", "--log-y")
    assert r.exit_code == 0, r.output
    png = out / f"w.{FP4}.png"
    with Image.open(png) as im:
        im.verify()
    with Image.open(png) as im:
        w, h = im.size
        assert im.format == "PNG" and 1200 < w <= 12 * 150 and 1000 < h <= 9 * 150 + 50
    assert "w" in r.stdout and str(png) in r.stdout and "fqtool hist" in r.stderr
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["schema"] == "fqtool.hist/1" and doc["mode"] == {"per_tensor": True, "aggregate": False}
    t = doc["tensors"][0]
    assert t["name"] == "w" and sum(t["values"]["counts"]) == 48 * 64
    assert t["formats"][0]["figures"] == [str(png)]
    assert hashlib.sha256(src.read_bytes()).hexdigest() == before  # inputs never modified


def test_paper_figures_are_single_column_600_dpi(tmp_path, folder):
    out = tmp_path / "paper"
    r = invoke(folder / "b.safetensors", "-f", FP4, "--paper", "--output-dir", out, "-q", "-o", "csv")
    assert r.exit_code == 0, r.output
    files = sorted(out.iterdir())
    assert [f.name for f in files] == sorted(f"grad.{FP4}.{p}.png" for p in hist.PANELS)
    for f in files:
        with Image.open(f) as im:
            w, h = im.size
            dpi = im.info["dpi"]
        assert dpi[0] == pytest.approx(600, abs=1)
        # 3.5 x 2.5 in at 600 dpi; the tight bounding box trims or grows it a little
        assert 0.8 * 2100 < w < 1.1 * 2100 and 0.8 * 1500 < h < 1.1 * 1500, (f.name, w, h)
    assert r.stdout.splitlines()[0].startswith("tensor,file,format,numel,clipped_frac")


def test_aggregate_command_json_and_figure(tmp_path, folder):
    out = tmp_path / "agg"
    r = invoke(folder, "-f", FP4, "--clip-threshold", "1", "--output-dir", out, "--image-format", "pdf", "-o", "json")
    assert r.exit_code == 0, r.output

    def strict(c):
        raise ValueError(c)

    doc = json.loads(r.stdout, parse_constant=strict)
    a = doc["aggregate"]
    assert doc["mode"] == {"per_tensor": False, "aggregate": True}  # a folder: aggregate by default
    assert a["tensors"] == 3 and sum(a["values"]["counts"]) == a["stats"]["n"]
    assert a["clip"]["verdict"] in ("EXCELLENT", "GOOD", "CAUTION", "POOR")
    assert a["formats"][0]["most_zeroed"] in ("act", "w", "grad")
    pdf = out / f"aggregate.{FP4}.pdf"
    assert a["formats"][0]["figures"] == [str(pdf)]
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert [f.name for f in out.iterdir()] == [pdf.name]


def test_top_limits_rows_and_figures(tmp_path, folder, tensors):
    r = invoke(folder / "a.safetensors", "-f", FP4, "--top", "1", "--no-figures", "-o", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    sqnr = {k: metrics.compute(quantize_with_sums(tensors[k], FP4)[1])["sqnr_db"] for k in ("act", "w")}
    assert [t["name"] for t in doc["tensors"]] == [min(sqnr, key=sqnr.get)]
    assert doc["tensors"][0]["formats"][0]["figures"] == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["-f", "mxfp9_e9m9"], "format 'mxfp9_e9m9'"),
        ([], "--format"),
        (["-f", FP4, "--range", "3:1"], "--range"),
        (["-f", FP4, "--image-format", "gif"], "--image-format"),
    ],
)
def test_usage_errors_exit_2(folder, args, message):
    r = invoke(folder, *args)
    assert r.exit_code == 2 and message in r.stderr and r.stdout == ""


def test_input_errors_exit_2(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = invoke(empty, "-f", FP4)
    assert r.exit_code == 2 and str(empty) in r.stderr and r.stdout == ""
    save_file({"ids": torch.arange(10)}, tmp_path / "ints.safetensors")
    r = invoke(tmp_path / "ints.safetensors", "-f", FP4)
    assert r.exit_code == 2 and "no floating-point tensor" in r.stderr
