"""fqtool outliers: Smax/σ, kurtosis, outlier counts and per-row/channel figures against numpy on a
tensor with planted outlier channels; raw values (no rescaling); the folder distribution against
numpy.percentile; JSON round trip, re-plot and figure files; errors."""

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

from fqtool import outliers

app = typer.Typer()


@app.callback()
def _root() -> None:
    """A local app holding only the outliers command."""


outliers.register(app)


def invoke(*args):
    return CliRunner().invoke(app, ["outliers", *(str(a) for a in args)])


def planted() -> torch.Tensor:
    """(4, 32, 48) Gaussian with channels 5 and 40 carrying a few large values (rows 3, 70, 100)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 32, 48, generator=g)
    flat = x.view(-1, 48)
    flat[3, 5] = 40.0
    flat[70, 5] = -25.0
    flat[100, 40] = 12.0
    flat[101, 40] = 7.5
    return x


def numpy_reference(x: np.ndarray, sigmas, top):
    v = x.astype(np.float64)
    mean, std = v.mean(), v.std()
    d = v - mean
    dev = np.abs(d).reshape(-1, v.shape[-1])
    a = np.abs(v).reshape(-1, v.shape[-1]).max(axis=0)
    return {
        "absmax": np.abs(v).max(),
        "mean": mean,
        "std": std,
        "smax": np.abs(v).max() / std,
        "kurt": (d**4).mean() / std**4 - 3,
        "counts": {k: int((np.abs(d) > k * std).sum()) for k in sigmas},
        "rows": {k: int((dev > k * std).any(axis=1).sum()) for k in sigmas},
        "channels": {k: int((dev > k * std).any(axis=0).sum()) for k in sigmas},
        "top": [int(i) for i in np.argsort(-a, kind="stable")[:top]],
        "ratio": a.max() / np.median(a),
        "ch_absmax": a,
    }


def test_statistics_match_numpy_on_planted_outlier_channels():
    x = planted()
    sigmas = (3.0, 6.0, 10.0)
    stats, smax, kurt, counts, fracs, ch = outliers.tensor_outliers(x, sigmas, top_channels=4, keep_channels=True)
    ref = numpy_reference(x.numpy(), sigmas, 4)
    assert stats["absmax"] == ref["absmax"] == 40.0
    assert stats["std"] == pytest.approx(ref["std"], rel=1e-12)
    assert smax == pytest.approx(ref["smax"], rel=1e-12)
    assert kurt == pytest.approx(ref["kurt"], rel=1e-9)
    assert counts == ref["counts"]
    assert fracs == {k: ref["counts"][k] / x.numel() for k in sigmas}
    assert ch.rows == 128 and ch.channels == 48
    assert ch.rows_with_outliers == ref["rows"]
    assert ch.channels_with_outliers == ref["channels"]
    assert ch.channels_with_outliers[10.0] == 2  # the two planted channels
    assert [i for i, _, _ in ch.top] == ref["top"] and ref["top"][:2] == [5, 40]
    assert ch.top[0] == (5, 40.0, pytest.approx(40.0 / ref["std"], rel=1e-12))
    assert ch.absmax_max_over_median == pytest.approx(ref["ratio"], rel=1e-12)
    assert np.array_equal(np.array(ch.absmax), ref["ch_absmax"])
    beyond6 = np.abs(x.numpy().reshape(-1, 48).astype(np.float64) - ref["mean"]) > 6 * ref["std"]
    assert ch.outlier_channels == tuple(np.flatnonzero(beyond6.any(axis=0)))
    assert ch.outlier_channel_count == len(ch.outlier_channels)


def test_raw_values_scale_invariant_and_not_rescaled():
    x = planted().double()
    a = outliers.tensor_outliers(x)
    b = outliers.tensor_outliers(x * 1000)
    assert b[1] == pytest.approx(a[1], rel=1e-12)  # Smax/σ
    assert b[2] == pytest.approx(a[2], rel=1e-9)  # kurtosis
    assert b[3] == a[3]  # counts
    # A Gaussian's Smax/σ is its own (about 4 for 64K samples), not the seed's rescaled 7-9.
    g = torch.randn(256, 256, generator=torch.Generator().manual_seed(1))
    smax = outliers.tensor_outliers(g)[1]
    assert smax == pytest.approx(float(g.abs().max() / g.double().std(unbiased=False)), rel=1e-6)
    assert 3.5 < smax < 5.5


def test_non_finite_constant_and_1d_tensors():
    x = torch.tensor([[1.0, -2.0, math.nan], [math.inf, 3.0, 0.5]])
    stats, smax, _, counts, _, ch = outliers.tensor_outliers(x, (1.0,))
    finite = np.array([1.0, -2.0, 3.0, 0.5])
    assert stats["nan"] == 1 and stats["inf"] == 1
    assert smax == pytest.approx(3.0 / finite.std(), rel=1e-12)
    assert counts[1.0] == int((np.abs(finite - finite.mean()) > finite.std()).sum())
    assert ch.top[0][:2] == (1, 3.0)  # channel 0 holds 1 and Inf (left out)
    const = outliers.tensor_outliers(torch.full((4, 4), 2.0))
    assert math.isnan(const[1]) and math.isnan(const[2]) and const[3] == {3.0: 0, 6.0: 0, 10.0: 0}
    assert outliers.tensor_outliers(torch.randn(10))[5] is None


def test_distribution_matches_numpy():
    values = [4.2, 4.9, 12.5, 19.99, 20.0, 33.0, 73.8, 3.0, math.nan]
    d = outliers.distribution(values)
    ok = np.array([v for v in values if not math.isnan(v)])
    assert d.tensors == 8 and d.undefined == 1
    q = np.percentile(ok, [25, 50, 75, 95, 99])
    want = dict(zip(("p25", "median", "p75", "p95", "p99"), q, strict=True))
    want |= {"min": ok.min(), "max": ok.max(), "mean": ok.mean(), "std": ok.std()}
    assert d.stats == pytest.approx(want, rel=1e-12)
    assert d.edges == (*range(21), math.inf)
    assert d.labels[0] == "0-1" and d.labels[-1] == "20+"
    assert d.counts[3] == 1 and d.counts[4] == 2 and d.counts[12] == 1 and d.counts[19] == 1 and d.counts[20] == 3
    assert sum(d.counts) == 8 and sum(d.fracs) == pytest.approx(1.0)
    small = outliers.distribution([3.2, 4.0, 4.5])  # max <= 20: unit bins up to ceil(max), last one closed
    assert small.edges == (0, 1, 2, 3, 4, 5) and small.counts == (0, 0, 0, 1, 2)
    assert outliers.distribution([4.0]).edges == (0, 1, 2, 3, 4) and outliers.distribution([4.0]).counts[-1] == 1
    empty = outliers.distribution([math.nan])
    assert empty.tensors == 0 and empty.undefined == 1 and empty.counts == ()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("outliers_in")
    g = torch.Generator().manual_seed(2)
    save_file(
        {
            "w": planted().reshape(128, 48),
            "g": torch.randn(64, 32, generator=g).to(torch.bfloat16),
            "ln": torch.ones(16) + 0.01 * torch.randn(16, generator=g),
            "steps": torch.arange(5),
        },
        d / "m.safetensors",
    )
    return d


def _png(path):
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.format, im.size


def test_cli_table_json_figures_and_replot(folder, tmp_path):
    js, out, again = tmp_path / "o.json", tmp_path / "figs", tmp_path / "again"
    r = invoke(folder, "--json", js, "--output-dir", out, "--per-tensor", "--top-channels", "3")
    assert r.exit_code == 0, r.output
    assert "smax_over_sigma" in r.stdout and "steps" in r.stdout  # the int tensor is listed as skipped
    doc = json.loads(js.read_text())
    assert doc["schema"] == "fqtool.outliers/1" and doc["values"].startswith("raw")
    names = [t["name"] for t in doc["tensors"]]
    assert sorted(names) == ["g", "ln", "w"]
    assert doc["tensors"][names.index("w")]["channels"]["top"][0]["index"] == 5
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(
        [f"outliers_channels_{names.index(n):03d}_{n}.png" for n in ("w", "g")] + ["outliers_smax_over_sigma.png"]
    )
    for f in files:
        fmt, (w, h) = _png(out / f)
        assert fmt == "PNG" and abs(w - 1200) <= 60 and abs(h - 750) <= 40
    r = invoke("--replot", js, "--output-dir", again, "--per-tensor", "--paper", "-q")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in again.iterdir()) == files
    fmt, (w, h) = _png(again / files[0])
    assert fmt == "PNG" and abs(w - 2100) <= 60 and abs(h - 1500) <= 60

    result = outliers.run([str(folder)], top_channels=3, keep_channels=True)
    back = outliers.load_json(js)
    assert outliers.histogram_data(back) == outliers.histogram_data(result)
    for i in range(3):
        assert outliers.channel_data(back, i) == outliers.channel_data(result, i)


def test_figure_data_is_the_computed_data(folder):
    result = outliers.run([str(folder)], keep_channels=True)
    h = outliers.histogram_data(result)
    d = result.distribution
    assert h.counts == d.counts and h.percent == tuple(100 * f for f in d.fracs) and h.lefts == d.edges[:-1]
    names = [t.tensor.name for t in result.tensors]
    cd = outliers.channel_data(result, names.index("w"))
    ref = numpy_reference(planted().reshape(128, 48).numpy(), (6.0,), 3)
    assert np.array_equal(np.array(cd.absmax), ref["ch_absmax"])
    assert set(cd.outliers) >= {5, 40}
    assert cd.threshold == pytest.approx(abs(ref["mean"]) + 6 * ref["std"], rel=1e-12)
    assert outliers.channel_data(result, names.index("ln")) is None  # 1-D: no channels


def test_cli_formats(folder):
    r = invoke(folder, "-o", "json", "--sigmas", "2,4", "-q")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    w = next(t for t in doc["tensors"] if t["name"] == "w")
    assert [o["sigma"] for o in w["outliers"]] == [2.0, 4.0]
    assert w["channels"]["absmax"] is None  # kept only with --per-tensor
    r = invoke(folder, "-o", "csv", "-q")
    lines = r.stdout.splitlines()
    assert lines[0].startswith("tensor,file,dtype,shape,numel,absmax") and len(lines) == 4
    r = invoke(folder, "-o", "markdown", "-q")
    assert r.stdout.startswith("### Per tensor (raw values)")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--sigmas", "3,x"], "--sigmas"),
        (["--sigmas", "-1"], "--sigmas"),
        (["--per-tensor"], "--output-dir"),
        (["--image-format", "gif", "--output-dir", "."], "--image-format"),
    ],
)
def test_bad_usage_exits_2(folder, args, says):
    r = invoke(folder, *args)
    assert r.exit_code == 2 and says in r.output and r.output.count("\n") == 1


def test_replot_errors(folder, tmp_path):
    js = tmp_path / "o.json"
    assert invoke(folder, "--json", js, "-q").exit_code == 0
    r = invoke("--replot", js, "--per-tensor")  # the JSON holds no per-channel maxima
    assert r.exit_code == 2 and "--per-tensor" in r.output
    other = tmp_path / "sweep.json"
    other.write_text(json.dumps({"schema": "fqtool.sweep/1"}))
    r = invoke("--replot", other)
    assert r.exit_code == 2 and "not a fqtool outliers result" in r.output
    r = invoke(tmp_path / "missing.safetensors")
    assert r.exit_code == 2 and "missing.safetensors" in r.output


def test_inputs_never_modified(folder):
    f = folder / "m.safetensors"
    before = f.read_bytes()
    for x in (planted(), planted().double(), planted().to(torch.bfloat16)):
        copy = x.clone()
        outliers.tensor_outliers(x, keep_channels=True)
        assert torch.equal(x, copy)
    assert invoke(folder, "-q").exit_code == 0
    assert f.read_bytes() == before
