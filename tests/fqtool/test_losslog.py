"""fqtool.losslog / fqtool.lossplot: the three log parsers (Megatron-LM, JSON lines, CSV) on real-looking
lines and bad logs, smoothing and gap numbers against direct computations, the --max-gap gate's exit
codes, the report formats, and the figure (its data, and the files written)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from fqtool import losslog, lossplot, plotting
from fqtool.errors import InputError, UsageError
from fqtool.losslog import Series, Settings

# --------------------------------------------------------------------------- fixtures and helpers


def mline(step: int, loss: str | float, total: int = 500000, *, skipped: int = 0, nan: int = 0) -> str:
    """A Megatron-LM training line as Megatron prints it (timestamp, padded counters, '|' fields)."""
    loss_text = loss if isinstance(loss, str) else f"{loss:.6E}"
    return (
        f" [2024-05-01 10:00:00] iteration {step:8d}/{total:8d} | consumed samples: {step * 128:12d} | "
        f"elapsed time per iteration (ms): 1234.5 | learning rate: 3.000E-04 | global batch size:   128 | "
        f"lm loss: {loss_text} | loss scale: 65536.0 | grad norm: 1.234 | number of skipped iterations: {skipped:3d} | "
        f"number of nan iterations: {nan:3d} |\n"
    )


NOISE = (
    "using world size: 8, data-parallel size: 8\n"
    "> building GPT model ...\n"
    "[after dataloaders are built] datetime: 2024-05-01 09:59:00\n"
    " saving checkpoint at iteration     100 to /ckpt in torch format\n"
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def megatron_log(path: Path, losses: dict[int, float], total: int = 500000) -> Path:
    return write(path, NOISE + "".join(mline(s, v, total) for s, v in losses.items()))


def app() -> typer.Typer:
    a = typer.Typer()
    lossplot.register(a)

    @a.callback()
    def _root() -> None:  # keeps "plot-loss" a subcommand, as in fqtool's app
        pass

    return a


def invoke(*args):
    return CliRunner().invoke(app(), ["plot-loss", *map(str, args)])


def one_run(path: Path, **kw) -> losslog.Run:
    runs = losslog.read_log(path, **kw)
    assert len(runs) == 1
    return runs[0]


def series(steps, values) -> Series:
    return Series(np.asarray(steps, dtype=np.int64), np.asarray(values, dtype=np.float64))


# --------------------------------------------------------------------------- Megatron-LM


def test_megatron_real_lines_with_every_field(tmp_path):
    text = NOISE + mline(100, "7.123456E+00", skipped=1) + mline(200, "6.5E+00", nan=2) + mline(300, "5.000001e+00")
    text += (
        " validation loss at iteration 200 on validation set | lm loss value: 6.789000E+00 | lm loss PPL: 8.9E+02 |\n"
    )
    text += " validation loss at iteration 200 on test set | lm loss value: 9.9E+00 |\n"  # not the validation set
    r = one_run(write(tmp_path / "run.log", text))
    assert r.format == "megatron" and r.total_iters == 500000 and r.label == "run"
    assert r.loss.steps.tolist() == [100, 200, 300]
    assert r.loss.values.tolist() == [7.123456, 6.5, 5.000001]
    assert r.extras["learning_rate"].values.tolist() == [3e-4] * 3
    assert r.extras["loss_scale"].values.tolist() == [65536.0] * 3
    assert r.extras["grad_norm"].values.tolist() == [1.234] * 3
    assert r.extras["skipped_iterations"].values.tolist() == [1, 0, 0]
    assert r.extras["nan_iterations"].values.tolist() == [0, 2, 0]
    assert r.val_loss.steps.tolist() == [200] and r.val_loss.values.tolist() == [6.789]
    assert (r.duplicates, r.partial_lines) == (0, 0)
    st = losslog.run_stats(r, "run", None, None)
    assert (st.skipped_iterations, st.nan_iterations, st.points, st.final_loss) == (1, 2, 3, 5.000001)


def test_megatron_nan_and_inf_losses_are_points(tmp_path):
    # Python's "{:.6E}" prints NaN / Inf as NAN / INF: Megatron's log of a diverged step
    text = mline(1, 3.0) + mline(2, "NAN", nan=1) + mline(3, "nan") + mline(4, "INF") + mline(5, "-inf") + mline(6, 2.5)
    r = one_run(write(tmp_path / "nan.log", text))
    v = r.loss.values
    assert r.loss.steps.tolist() == [1, 2, 3, 4, 5, 6]
    assert math.isnan(v[1]) and math.isnan(v[2]) and v[3] == math.inf and v[4] == -math.inf
    st = losslog.run_stats(r, "run", None, None)
    assert (st.nonfinite_losses, st.final_loss, st.min_loss, st.nan_iterations) == (4, 2.5, 2.5, 1)


def test_megatron_restart_duplicates_keep_the_last(tmp_path):
    first = {10: 5.0, 20: 4.0, 30: 3.0}
    again = {20: 4.5, 30: 3.5, 40: 2.0}  # restarted from the step-10 checkpoint
    text = "".join(mline(s, v) for s, v in first.items()) + NOISE + "".join(mline(s, v) for s, v in again.items())
    r = one_run(write(tmp_path / "restart.log", text))
    assert r.loss.steps.tolist() == [10, 20, 30, 40]
    assert r.loss.values.tolist() == [5.0, 4.5, 3.5, 2.0]
    assert r.duplicates == 2
    assert "2 step(s) logged again" in lossplot.parse_notes([r])[0]


def test_megatron_truncated_last_line_is_ignored_and_counted(tmp_path):
    full = mline(10, 5.0) + mline(20, 4.0)
    cut_before_loss = full + mline(30, 3.0)[:120]  # the writer died mid-line
    r = one_run(write(tmp_path / "a.log", cut_before_loss))
    assert r.loss.steps.tolist() == [10, 20] and (r.partial_lines, r.first_partial_line) == (1, 3)
    note = lossplot.parse_notes([r])[0]
    assert "a.log" in note and "line 3" in note
    # cut inside the loss number, at the end of the file: "lm loss: 3.12" may be 3.125...: not trusted
    line = mline(30, 3.125)
    cut_in_number = full + line[: line.index("lm loss: ") + len("lm loss: 3.12")]
    r = one_run(write(tmp_path / "b.log", cut_in_number))
    assert r.loss.steps.tolist() == [10, 20] and r.partial_lines == 1
    # a complete last line without its newline is fine
    r = one_run(write(tmp_path / "c.log", full + mline(30, 3.0).rstrip("\n")))
    assert r.loss.steps.tolist() == [10, 20, 30] and r.partial_lines == 0


def test_megatron_loss_key_is_a_whole_field(tmp_path):
    text = " iteration 1/ 10 | loss: 3.0 | lm loss: 4.0 |\n iteration 2/ 10 | lm loss: 5.0 | loss: 6.0 |\n"
    path = write(tmp_path / "k.log", text)
    assert one_run(path).loss.values.tolist() == [4.0, 5.0]
    assert one_run(path, loss_key="loss").loss.values.tolist() == [3.0, 6.0]
    # lines without '|' still parse (the seed's regex: 'iteration N/M' ... 'lm loss:' X)
    r = one_run(write(tmp_path / "bare.txt", "ITERATION 5/10 LM LOSS: 2.5e-1\nIteration 6 / 10 lm loss:2.0\n"))
    assert r.loss.steps.tolist() == [5, 6] and r.loss.values.tolist() == [0.25, 2.0]


def test_megatron_mixed_runs_are_split(tmp_path):
    text = mline(10, 5.0, total=1000) + mline(20, 4.0, total=1000) + mline(10, 6.0, total=2000) + mline(30, 3.0, 1000)
    runs = losslog.read_log(write(tmp_path / "mixed.log", text))
    assert [r.label for r in runs] == ["mixed (1000 iters)", "mixed (2000 iters)"]
    assert [r.total_iters for r in runs] == [1000, 2000]
    assert runs[0].loss.values.tolist() == [5.0, 4.0, 3.0] and runs[1].loss.values.tolist() == [6.0]
    assert "mixed runs" in runs[0].notes[0] and "1000 -> 2000" in runs[0].notes[0]


def test_cli_mixed_runs_warn_and_a_mixed_baseline_is_refused(tmp_path):
    mixed = write(tmp_path / "mixed.log", mline(10, 5.0, 1000) + mline(10, 6.0, 2000))
    good = megatron_log(tmp_path / "good.log", {10: 5.0})
    r = invoke(mixed, "--figure", tmp_path / "f.png", "-q")
    assert r.exit_code == 0, r.stderr
    assert "mixed runs" in r.stderr and "mixed (1000 iters)" in r.stdout and "mixed (2000 iters)" in r.stdout
    r = invoke(good, "--baseline", mixed, "--figure", tmp_path / "g.png")
    assert r.exit_code == 2 and "several runs" in r.stderr and "mixed.log" in r.stderr
    assert not (tmp_path / "g.png").exists()


@pytest.mark.parametrize(
    "name,text",
    [
        ("empty.log", ""),
        ("other.log", NOISE + "iteration 10 done\n"),
        ("noloss.log", mline(10, 5.0).replace("lm loss", "lm_loss")),
        ("bad.jsonl", '{"epoch": 1, "acc": 0.5}\n'),
        ("bad.csv", "epoch,acc\n1,0.5\n"),
    ],
)
def test_no_loss_line_exits_2_with_one_line(tmp_path, name, text):
    path = write(tmp_path / name, text)
    r = invoke(path, "--figure", tmp_path / "f.png")
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "Traceback" not in r.output
    assert "Megatron" in lines[0] or "--step-key/--loss-key" in lines[0]
    assert not (tmp_path / "f.png").exists() and r.stdout == ""


# --------------------------------------------------------------------------- JSON lines and CSV


def test_jsonl_keys_nan_null_eval_records_and_a_truncated_line(tmp_path):
    recs = [
        {"iteration": 1, "lm_loss": 3.0, "grad_norm": 1.5, "lr": 1e-4},
        {"iteration": 2, "lm_loss": float("nan")},  # json writes NaN
        {"iteration": 2, "eval_loss": 2.9},  # HF-style eval record: the validation series
        {"iteration": 3, "lm_loss": "inf"},
        {"iteration": 4, "lm_loss": 2.0},
        {"iteration": 4, "lm_loss": 1.5},  # a duplicate step: kept last
        {"note": "no step or loss"},
    ]
    text = "".join(json.dumps(r) + "\n" for r in recs) + "not json\n" + '{"iteration": 5, "lm_lo'
    r = one_run(write(tmp_path / "run.jsonl", text))
    assert r.format == "jsonl"
    assert r.loss.steps.tolist() == [1, 2, 3, 4]
    assert r.loss.values[0] == 3.0 and math.isnan(r.loss.values[1]) and r.loss.values[2] == math.inf
    assert r.loss.values[3] == 1.5 and r.duplicates == 1
    assert r.val_loss.steps.tolist() == [2] and r.val_loss.values.tolist() == [2.9]
    assert r.extras["grad_norm"].values.tolist() == [1.5] and r.extras["learning_rate"].values.tolist() == [1e-4]
    assert (r.partial_lines, r.first_partial_line, r.ignored_records) == (2, 8, 1)


@pytest.mark.parametrize(
    "step,loss",
    [("step", "loss"), ("iteration", "lm_loss"), ("iter", "train/loss"), ("global_step", "train_loss")],
)
def test_jsonl_every_default_key_pair(tmp_path, step, loss):
    path = write(tmp_path / "k.jsonl", "".join(json.dumps({step: s, loss: 1.0 / s}) + "\n" for s in (1, 2, 4)))
    r = one_run(path)
    assert r.loss.steps.tolist() == [1, 2, 4] and r.loss.values.tolist() == [1.0, 0.5, 0.25]


def test_jsonl_and_csv_key_overrides_and_their_errors(tmp_path):
    path = write(tmp_path / "o.jsonl", '{"it": 7, "ce": 2.5, "loss": 9.0}\n')
    assert one_run(path, step_key="it", loss_key="ce").loss.values.tolist() == [2.5]
    with pytest.raises(InputError, match=r"o\.jsonl.*--step-key 'it'.*have: it, ce, loss"):
        one_run(path, step_key="it", loss_key="nope")
    path = write(tmp_path / "o.csv", "it,ce\n7,2.5\n")
    assert one_run(path, step_key="it", loss_key="ce").loss.steps.tolist() == [7]
    with pytest.raises(InputError, match=r"o\.csv.*CSV header.*have: it, ce"):
        one_run(path)


def test_csv_empty_cells_nan_and_a_truncated_last_row(tmp_path):
    text = "step,loss,val_loss\n10,4.0,\n20,nan,\n30,,3.5\n40,2.0,\n50,1.5\n60"  # last row cut off
    r = one_run(write(tmp_path / "run.csv", text))
    assert r.format == "csv"
    assert r.loss.steps.tolist() == [10, 20, 40, 50] and math.isnan(r.loss.values[1])
    assert r.val_loss.steps.tolist() == [30] and r.val_loss.values.tolist() == [3.5]
    assert (r.partial_lines, r.first_partial_line) == (1, 7)
    # a .txt whose header names a step and a loss is CSV too
    assert one_run(write(tmp_path / "run.txt", "step,loss\n1,2.0\n")).format == "csv"


# --------------------------------------------------------------------------- directories and labels


def test_directory_means_every_log_sorted_and_labels(tmp_path):
    d = tmp_path / "logs"
    megatron_log(d / "b_mxfp8.log", {10: 4.0})
    write(d / "a_bf16.jsonl", '{"step": 10, "loss": 3.0}\n')
    write(d / "c.csv", "step,loss\n10,5.0\n")
    write(d / "notes.txt", "just notes\n")  # in a directory: skipped with a note, not an error
    write(d / "ignored.md", "# not a log suffix\n")
    runs, notes = losslog.load_runs([d])
    assert [r.label for r in runs] == ["a_bf16", "b_mxfp8", "c"]
    assert len(notes) == 1 and "notes.txt" in notes[0]
    runs, _ = losslog.load_runs([d / "c.csv", d / "a_bf16.jsonl"], labels=["mxfp4", "bf16"])
    assert [r.label for r in runs] == ["mxfp4", "bf16"]
    with pytest.raises(UsageError, match="2 labels for 3 logs"):
        losslog.load_runs([d], labels=["x", "y"])
    with pytest.raises(InputError, match="no such file"):
        losslog.load_runs([tmp_path / "missing.log"])
    # the same stem in two directories: parent/stem; the baseline among LOGS is not repeated
    megatron_log(tmp_path / "r1" / "train.log", {1: 1.0})
    megatron_log(tmp_path / "r2" / "train.log", {1: 1.0})
    runs, notes = losslog.load_runs(
        [tmp_path / "r1" / "train.log", tmp_path / "r2" / "train.log", d / "c.csv"], exclude=d / "c.csv"
    )
    assert [r.label for r in runs] == ["r1/train", "r2/train"] and "baseline" in notes[0]


# --------------------------------------------------------------------------- smoothing and gaps


def test_smoothing_against_direct_computation():
    vals = np.array([4.0, np.nan, 2.0, np.inf, 1.0, 3.0])
    s = series(range(6), vals)
    mean = losslog.smooth(s, 3, "mean").values
    finite = np.where(np.isfinite(vals), vals, np.nan)
    direct = [np.nanmean(finite[max(0, i - 2) : i + 1]) if np.isfinite(vals[i]) else vals[i] for i in range(6)]
    np.testing.assert_allclose(mean, direct, rtol=0, atol=1e-15)  # non-finite points stay non-finite
    ema = losslog.smooth(s, 3, "ema").values
    alpha, e, want = 2 / (3 + 1), None, []
    for v in vals:  # the EMA recurrence over the finite values; non-finite points stay as they are
        if np.isfinite(v):
            e = v if e is None else alpha * v + (1 - alpha) * e
        want.append(e if np.isfinite(v) else v)
    np.testing.assert_allclose(ema, want, rtol=1e-15)
    assert math.isnan(ema[1]) and ema[3] == math.inf
    assert losslog.smooth(s, 1) is s


def test_gap_numbers_by_hand():
    base = series([10, 20, 30, 40, 60], [4.0, 2.0, 2.0, 1.0, np.nan])
    run = series([10, 20, 30, 50, 60], [4.4, 2.0, 1.8, 9.0, 1.0])
    g = losslog.gap(run, base, 0.05, run_label="q", base_label="b")
    # matched steps 10, 20, 30 (50 only in the run, 40 only in the baseline, 60 has a NaN baseline)
    assert g.matched == 3 and g.nonfinite == 0
    assert g.mean_ratio == pytest.approx((1.1 + 1.0 + 0.9) / 3, abs=1e-15)
    assert g.mean_gap == pytest.approx((0.4 + 0.0 - 0.2) / 3, abs=1e-15)
    assert g.mean_abs_gap == pytest.approx((0.4 + 0.0 + 0.2) / 3, abs=1e-15)
    assert g.max_abs_gap == pytest.approx(0.4, abs=1e-15) and g.max_abs_gap_step == 10
    assert g.max_rel_gap == pytest.approx(0.1, abs=1e-15) and g.max_rel_gap_step == 10
    assert g.first_exceed_step == 10 and g.final_rel_gap == pytest.approx(-0.1, abs=1e-15)
    assert losslog.gap(run, base, 0.2).first_exceed_step is None
    rel = losslog.relative_gap(run, base)
    assert rel.steps.tolist() == [10, 20, 30]
    np.testing.assert_allclose(rel.values, [0.1, 0.0, -0.1], atol=1e-15)


def test_gap_nonfinite_run_is_infinite_and_zero_baseline_is_left_out():
    base = series([1, 2, 3, 4], [2.0, 0.0, 2.0, 2.0])
    run = series([1, 2, 3, 4], [2.2, 0.5, np.nan, 1.9])
    g = losslog.gap(run, base, 0.5)
    assert g.matched == 4 and g.nonfinite == 1
    assert g.max_rel_gap == math.inf and g.max_rel_gap_step == 3 and g.first_exceed_step == 3
    assert g.max_abs_gap == math.inf and g.max_abs_gap_step == 3
    assert g.mean_ratio == pytest.approx((1.1 + 0.95) / 2, abs=1e-15)  # step 2 (baseline 0) left out
    assert g.mean_gap == pytest.approx((0.2 + 0.5 - 0.1) / 3, abs=1e-15)
    empty = losslog.gap(series([5], [1.0]), base, 0.5)
    assert empty.matched == 0 and math.isnan(empty.mean_ratio) and empty.max_rel_gap_step is None


def test_analyse_window_smoothing_and_gap_on_smoothed():
    steps = np.arange(0, 100, 10)
    base = losslog.Run("b", "b.log", "megatron", series(steps, 5.0 - steps / 50))
    noisy = 5.0 - steps / 50 + np.where(steps % 20 == 0, 0.2, -0.2)
    run = losslog.Run("q", "q.log", "megatron", series(steps, noisy))
    rep = losslog.analyse([run], base, Settings(steps=(20, 60), smooth=2))
    c = rep.curves[1]
    assert c.raw.steps.tolist() == [20, 30, 40, 50, 60]
    want = losslog.gap(run.loss.window(20, 60), base.loss.window(20, 60), 0.02)
    assert rep.gaps[0].max_rel_gap == want.max_rel_gap and rep.gaps[0].matched == 5
    # smoothing runs before the window: the smoothed point at step 20 averages steps 10 and 20
    assert c.smoothed.values[0] == pytest.approx((noisy[1] + noisy[2]) / 2, abs=1e-15)
    on_sm = losslog.analyse([run], base, Settings(steps=(20, 60), smooth=2, gap_on_smoothed=True)).gaps[0]
    sm = lambda s: losslog.smooth(s, 2).window(20, 60)  # noqa: E731
    assert on_sm.max_rel_gap == losslog.gap(sm(run.loss), sm(base.loss), 0.02).max_rel_gap
    assert on_sm.max_rel_gap < rep.gaps[0].max_rel_gap  # the alternating noise averages out
    stats = {s.label: s for s in rep.stats}
    assert stats["q"].points == 5 and stats["b"].role == "baseline" and stats["q"].first_step == 20


def test_parse_steps():
    assert losslog.parse_steps("100:700") == (100, 700)
    assert losslog.parse_steps("100:") == (100, None) and losslog.parse_steps(":7") == (None, 7)
    assert losslog.parse_steps(None) == (None, None)
    for bad in ("100", "a:b", "7:3", "1:2:3"):
        with pytest.raises(UsageError, match="--steps"):
            losslog.parse_steps(bad)


# --------------------------------------------------------------------------- the command: gate, reports


@pytest.fixture
def three_runs(tmp_path):
    steps = range(10, 210, 10)
    curve = {s: 2.0 + 8.0 * math.exp(-s / 50) for s in steps}
    base = megatron_log(tmp_path / "bf16.log", curve)
    small = megatron_log(tmp_path / "mxfp8.log", {s: v * 1.01 for s, v in curve.items()})  # +1 %
    large = megatron_log(tmp_path / "mxfp4.log", {s: v * (1.0 + s / 2000) for s, v in curve.items()})  # up to +10 %
    return base, small, large


def test_gate_exit_codes(tmp_path, three_runs):
    base, small, large = three_runs
    out = tmp_path / "f.png"
    r = invoke(small, "--baseline", base, "--max-gap", 0.05, "--figure", out, "-q")
    assert r.exit_code == 0, r.stderr
    assert "violation" not in r.stderr and r.stderr == ""
    r = invoke(small, large, "--baseline", base, "--max-gap", 0.05, "--figure", out)
    assert r.exit_code == 1
    viol = [ln for ln in r.stderr.splitlines() if ln.startswith("violation")]
    assert len(viol) == 1 and "mxfp4" in viol[0] and "10%" in viol[0] and "step 200" in viol[0]
    assert out.exists() and "FAIL" in r.stdout  # the figure and report are still written
    r = invoke(small, large, "--baseline", base, "--max-gap", 0.05, "--steps", ":90", "--figure", out)
    assert r.exit_code == 0, r.stderr  # the window keeps mxfp4 under 5 % (4.5 % at step 90)
    r = invoke(small, "--max-gap", 0.05, "--figure", out)
    assert r.exit_code == 2 and "--max-gap needs --baseline" in r.stderr
    other = megatron_log(tmp_path / "late.log", {1000: 2.0})
    r = invoke(other, "--baseline", base, "--max-gap", 0.05, "--figure", tmp_path / "none.png")
    assert r.exit_code == 2 and "shares no step" in r.stderr and not (tmp_path / "none.png").exists()
    diverged = megatron_log(tmp_path / "nan.log", {10: 9.0, 20: float("nan")})
    r = invoke(diverged, "--baseline", base, "--max-gap", 0.5, "--figure", out)
    assert r.exit_code == 1 and "NaN/Inf at step 20" in r.stderr


def test_bad_options_exit_2(tmp_path, three_runs):
    base, small, _ = three_runs
    for args, msg in [
        (("--figure", tmp_path / "f.jpg"), ".png, .pdf, .svg"),
        (("--smooth-method", "median"), "--smooth-method"),
        (("--gap-on-smoothed",), "--gap-on-smoothed needs --smooth"),
        (("--steps", "9:1"), "--steps"),
        (("-o", "yaml"), "--output-format"),
        (("--baseline", tmp_path), "a directory"),
    ]:
        r = invoke(small, *args)
        assert r.exit_code == 2, (args, r.output)
        assert msg in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_json_report_matches_the_computation(tmp_path, three_runs):
    base, small, large = three_runs
    out = tmp_path / "f.svg"
    r = invoke(small, large, "--baseline", base, "-o", "json", "--figure", out, "--gap-threshold", 0.05)
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema"] == "fqtool.loss/1" and doc["baseline"] == "bf16" and doc["figure"] == str(out)
    assert [x["label"] for x in doc["runs"]] == ["bf16", "mxfp8", "mxfp4"]
    assert doc["runs"][0]["role"] == "baseline" and doc["runs"][1]["points"] == 20
    assert doc["settings"]["gap_threshold"] == 0.05 and doc["settings"]["gap_on"] == "raw"
    b, q = one_run(base), one_run(large)
    want = losslog.gap(q.loss, b.loss, 0.05)
    got = doc["gaps"][1]
    assert got["run"] == "mxfp4" and got["matched"] == 20
    for k in ("mean_ratio", "mean_gap", "max_rel_gap", "final_rel_gap", "max_abs_gap"):
        assert got[k] == getattr(want, k), k
    assert got["first_exceed_step"] == want.first_exceed_step == 110  # first step with s/2000 > 0.05
    ratio = np.mean(q.loss.values / b.loss.values)
    assert got["mean_ratio"] == pytest.approx(ratio, rel=1e-14)
    assert got["max_rel_gap"] == pytest.approx(0.1, abs=1e-6)  # the log keeps 7 significant digits


def test_csv_markdown_and_table_reports(tmp_path, three_runs):
    base, small, large = three_runs
    out = tmp_path / "f.png"
    r = invoke(small, large, "--baseline", base, "-o", "csv", "--figure", out, "--max-gap", 0.05)
    assert r.exit_code == 1
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert list(rows[0]) == list(lossplot.CSV_HEADER)
    assert [x["label"] for x in rows] == ["bf16", "mxfp8", "mxfp4"]
    assert rows[0]["matched"] == "" and rows[1]["violation"] == "false" and rows[2]["violation"] == "true"
    assert float(rows[2]["max_rel_gap"]) == pytest.approx(0.1, abs=1e-6)
    r = invoke(small, "--baseline", base, "-o", "markdown", "--figure", out)
    assert r.exit_code == 0 and "### runs" in r.stdout and "### gap to baseline bf16" in r.stdout
    assert "| mxfp8 | 20 | 1.01000 |" in r.stdout
    r = invoke(small, "--figure", out, "--steps", "500:")  # no baseline: no gap table; nothing in the window
    assert r.exit_code == 0 and "mxfp8 has no point within --steps 500:" in r.stderr
    r = invoke(small, "--figure", out)
    assert r.exit_code == 0 and "gap to baseline" not in r.stdout and "mxfp8" in r.stdout
    assert "wrote" in r.stderr


def test_report_file_no_figure_and_the_default_figure(tmp_path, three_runs, monkeypatch):
    base, small, _ = three_runs
    report = tmp_path / "gap.json"
    r = invoke(small, "--baseline", base, "--output", report, "--no-figure", "--max-gap", 0.05)
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "" and f"wrote {report}" in r.stderr
    doc = json.loads(report.read_text())  # the format follows the suffix
    assert doc["schema"] == "fqtool.loss/1" and doc["figure"] is None and doc["gaps"][0]["run"] == "mxfp8"
    assert not list(tmp_path.glob("*.png"))
    monkeypatch.chdir(tmp_path)
    r = invoke(small, "-q")
    assert r.exit_code == 0 and (tmp_path / "loss.png").is_file()


def test_inputs_untouched_and_no_temp_files(tmp_path, three_runs):
    base, small, large = three_runs
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in three_runs}
    r = invoke(tmp_path, "--baseline", base, "--figure", tmp_path / "out" / "loss.pdf", "-q")
    assert r.exit_code == 0, r.stderr
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in three_runs} == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["loss.pdf"]
    assert "mxfp4" in r.stdout and r.stdout.count("bf16") >= 1  # the baseline in the directory is not a run


# --------------------------------------------------------------------------- the figure


def test_figure_data_equals_the_parsed_and_smoothed_series(three_runs):
    base, small, large = three_runs
    b, s, q = one_run(base), one_run(small), one_run(large)
    q = losslog.Run(
        q.label, q.path, q.format, series(q.loss.steps, np.where(q.loss.steps == 50, np.nan, q.loss.values))
    )
    q = losslog.Run(q.label, q.path, q.format, q.loss, val_loss=series([100], [3.0]))
    rep = losslog.analyse([s, q], b, Settings(smooth=3, max_gap=0.2))
    data = lossplot.figure_data(rep, log_y=True)
    loss = data.panel("loss")
    faint = [ln for ln in loss if ln.kind == "faint"]
    solid = [ln for ln in loss if ln.kind == "line"]
    assert [ln.label for ln in solid] == [
        "bf16 (baseline)",
        "mxfp8 (1.0100x)",
        f"mxfp4 ({rep.gaps[1].mean_ratio:.4f}x)",
    ]
    for ln, run in zip(faint, (b, s, q), strict=True):
        np.testing.assert_array_equal(ln.x, run.loss.steps)
        np.testing.assert_array_equal(ln.y, run.loss.values)
    for ln, run in zip(solid, (b, s, q), strict=True):
        sm = losslog.smooth(run.loss, 3)
        np.testing.assert_array_equal(ln.x, sm.steps)
        np.testing.assert_array_equal(ln.y, sm.values)
    assert solid[0].color == lossplot.BASELINE_COLOR and solid[1].color == plotting.PALETTE[0]
    (val,) = [ln for ln in loss if ln.kind == "markers"]
    assert val.x.tolist() == [100] and val.y.tolist() == [3.0] and data.validation
    gap = [ln for ln in data.panel("gap") if ln.kind == "line"]
    for ln, run in zip(gap, (s, q), strict=True):
        want = losslog.relative_gap(losslog.smooth(run.loss, 3), losslog.smooth(b.loss, 3))
        np.testing.assert_array_equal(ln.x, want.steps)
        np.testing.assert_array_equal(ln.y, 100 * want.values)
    assert sorted(h.y for h in data.hlines if h.label) == [2.0, 20.0]
    assert data.log_y and data.gap_panel and data.ylabel == "Loss (log scale)"
    assert data.xlim == (10.0, 200.0) and "moving average of 3 points" in data.legend_title


def test_figure_data_marks_nonfinite_steps_and_titles_the_one_ratio(three_runs):
    base, small, _ = three_runs
    b, s = one_run(base), one_run(small)
    s = losslog.Run("q", "q.log", "megatron", series(s.loss.steps, np.where(s.loss.steps == 50, np.inf, s.loss.values)))
    rep = losslog.analyse([s], b, Settings(steps=(20, 150)))
    data = lossplot.figure_data(rep, gap_panel=False)
    (bad,) = [ln for ln in data.lines if ln.kind == "nonfinite"]
    assert bad.x.tolist() == [50] and bad.label == "q: NaN/Inf loss"
    assert f"mean ratio (steps 20:150): {rep.gaps[0].mean_ratio:.4f}x over 14 matched steps" in data.title
    assert not data.gap_panel and data.panel("gap") == [] and data.xlim == (20.0, 150.0)
    no_base = lossplot.figure_data(losslog.analyse([s], None, Settings()))
    assert no_base.title == "Training loss" and not no_base.gap_panel


@pytest.mark.parametrize(
    "suffix,paper,gap",
    [(".png", False, True), (".png", True, False), (".png", True, True), (".pdf", False, False), (".svg", False, True)],
)
def test_figure_files(tmp_path, three_runs, suffix, paper, gap):
    base, small, large = three_runs
    out = tmp_path / f"loss{suffix}"
    args = [small, large, "--figure", out, "--smooth", 3, "-q", "--log-y" if suffix == ".svg" else "--gap-panel"]
    args += ["--baseline", base, "--label", "a,b", "--baseline-label", "BF16"] if gap else []
    r = invoke(*args, *(["--paper"] if paper else []))
    assert r.exit_code == 0, r.stderr
    data = out.read_bytes()
    if suffix == ".png":
        with Image.open(out) as im:
            im.verify()
            w, h = im.size
        inches = (
            (lossplot.PAPER_SIZE_GAP if gap else plotting.PAPER_SIZE)
            if paper
            else (lossplot.SCREEN_SIZE_GAP if gap else plotting.SCREEN_SIZE)
        )
        dpi = plotting.PAPER_DPI if paper else plotting.SCREEN_DPI
        # bbox="tight" trims or grows the margins a little
        assert abs(w - inches[0] * dpi) < 0.1 * inches[0] * dpi and abs(h - inches[1] * dpi) < 0.1 * inches[1] * dpi
    elif suffix == ".pdf":
        assert data.startswith(b"%PDF") and b"%%EOF" in data[-64:]
    else:
        assert ET.fromstring(data).tag.endswith("svg")


def test_step_tick_labels():
    assert [lossplot._step_text(v) for v in (0, 500, 9000, 12000, 250000, 1.5e6)] == [
        "0",
        "500",
        "9000",
        "12k",
        "250k",
        "1.5M",
    ]
