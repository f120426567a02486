"""fqtool.capture: a tiny model trained under capture, checked tensor by tensor and analysed end to end;
the byte cap; hooks removed; errors that never reach training; the seed's save_tensor API."""

from __future__ import annotations

import functools
import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

import fqtool.capture as capture_mod
from fqtool import analysis
from fqtool.capture import (
    MANIFEST,
    capture,
    save_attention_tensors,
    save_linear_tensors,
    save_tensor,
    set_enabled,
    set_iteration,
    set_save_dir,
)
from fqtool.io import parse_dump_name, scan

REPO = Path(__file__).resolve().parents[2]
D, STEPS = 8, 5
LINEARS = [
    "embed",
    "layers.0.mlp.0",
    "layers.0.mlp.2",
    "layers.1.mlp.0",
    "layers.1.mlp.2",
    "mix.qkv",
    "mix.proj",
    "head",
]


# --- a tiny transformer-ish model -----------------------------------------------------------------


class ToyAttention(nn.Module):
    """Its class name contains "Attention": hooked by the class-name rule, its Linears by theirs."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.proj(F.scaled_dot_product_attention(q, k, v))


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d, 2, batch_first=True)
        # An in-place ReLU right after a hooked Linear: register_full_backward_hook would break it.
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.ReLU(inplace=True), nn.Linear(2 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, _ = self.attn(x, x, x)
        x = x + a
        return x + self.mlp(x)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, D)
        self.layers = nn.ModuleList([Block(D), Block(D)])
        self.mix = ToyAttention(D)
        self.head = nn.Linear(D, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for layer in self.layers:
            h = layer(h)
        return self.head(self.mix(h))


def train(n_steps: int = STEPS, out_dir: Path | None = None, record: bool = False, **capture_kwargs):
    """Seeded SGD on random data; returns (losses, final state, records per step, the Capture or None)."""
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    data = [(torch.randn(3, 5, 4, generator=gen), torch.randn(3, 5, 1, generator=gen)) for _ in range(n_steps)]
    losses, records = [], []
    cap = None if out_dir is None else capture(model, out_dir, **capture_kwargs)

    def one_step(i: int, x: torch.Tensor, y: torch.Tensor) -> None:
        if cap is not None:
            cap.step(i)
        loss = F.mse_loss(model(x), y)
        loss.backward()
        if record:  # the weights the forward used (before opt.step) and the accumulated gradients
            params = {k: v.detach().clone() for k, v in model.named_parameters()}
            grads = {k: v.grad.detach().clone() for k, v in model.named_parameters()}
            records.append({"x": x, "params": params, "grads": grads})
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())

    if cap is None:
        for i, (x, y) in enumerate(data):
            one_step(i, x, y)
    else:
        with cap:
            for i, (x, y) in enumerate(data):
                one_step(i, x, y)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return losses, state, records, cap


@functools.cache
def reference_losses() -> tuple[float, ...]:
    """The loss trajectory of the same training without capture."""
    return tuple(train()[0])


def step_files(out_dir: Path) -> list[str]:
    return sorted(p.name for p in out_dir.iterdir())


def load(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a file in fresh memory: CPU matmul results depend on the operands' alignment,
    and tensors inside a loaded safetensors buffer sit at arbitrary offsets."""
    return {k: v.clone() for k, v in load_file(path).items()}


def file_meta(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def expected_names() -> set[str]:
    names = set()
    for m in LINEARS:
        names |= {f"{m}.{r}" for r in ("input", "weight", "output", "grad_output", "grad_weight")}
        if m != "embed":  # embed's input is the data, which does not require grad
            names.add(f"{m}.grad_input")
    for i in range(2):  # self-attention: query is key is value, captured once as "query"
        a = f"layers.{i}.attn"
        names |= {f"{a}.{r}" for r in ("query", "in_proj_weight", "out_proj_weight", "output", "attention_weights")}
        names |= {f"{a}.{r}" for r in ("grad_query", "grad_output", "grad_in_proj_weight", "grad_out_proj_weight")}
    names |= {f"mix.{r}" for r in ("input", "output", "grad_input", "grad_output")}
    return names


def assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(a, b)


# --- (1) train under capture, check every tensor, analyse the result ----------------------------


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    out = tmp_path_factory.mktemp("capture") / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about: the cap is not reached
        losses, state, records, cap = train(out_dir=out, record=True, every=2, max_bytes=10_000_000)
    return out, losses, state, records, cap


def test_capture_leaves_training_bit_identical(captured):
    _, losses, state, _, _ = captured
    ref_losses, ref_state, _, _ = train()
    assert losses == ref_losses  # float equality, step by step
    for k in ref_state:
        assert torch.equal(state[k], ref_state[k]), k


def test_files_per_sampled_step_and_manifest(captured):
    out, _, _, _, cap = captured
    assert step_files(out) == [MANIFEST, "step000000.safetensors", "step000002.safetensors", "step000004.safetensors"]
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["format"] == "fqtool.capture/1"
    assert [f["step"] for f in manifest["files"]] == [0, 2, 4]
    assert manifest["bytes_written"] == sum((out / f["file"]).stat().st_size for f in manifest["files"])
    assert manifest["bytes_written"] == cap.bytes_written and cap.files == [out / f["file"] for f in manifest["files"]]
    assert manifest["stopped"] is None and manifest["running"] is False
    assert manifest["modules"]["layers.1.attn"] == "MultiheadAttention" and manifest["modules"]["mix"] == "ToyAttention"
    for f in manifest["files"]:
        assert f["tensors"] == len(expected_names())


def test_names_and_metadata_group_by_layer_and_kind(captured):
    out, *_ = captured
    for step in (0, 2, 4):
        path = out / f"step{step:06d}.safetensors"
        tensors = load_file(path)
        assert set(tensors) == expected_names()
        meta = file_meta(path)
        assert meta["format"] == "fqtool.capture/1" and meta["step"] == str(step)
        assert json.loads(meta["kinds"]) == list(capture_mod.KINDS)
        fields = json.loads(meta["tensors"])
        assert set(fields) == set(tensors)
        for name, f in fields.items():
            module, tensor_name = name.rsplit(".", 1)  # the name alone gives module and tensor name
            assert (f["module"], f["tensor_name"], f["iteration"], f["call"]) == (module, tensor_name, step, 0)
            assert f["layer"] == (int(module.split(".")[1]) if module.startswith("layers.") else None)
            assert f["operation"] == ("backward" if f["kind"].startswith("grad_") else "forward")
        assert fields["layers.1.mlp.0.input"] == {
            "module": "layers.1.mlp.0",
            "module_class": "Linear",
            "layer_type": "linear",
            "layer": 1,
            "kind": "input",
            "tensor_name": "input",
            "operation": "forward",
            "iteration": step,
            "call": 0,
        }
        assert fields["layers.0.attn.grad_in_proj_weight"]["kind"] == "grad_weight"
        assert fields["layers.0.attn.query"]["layer_type"] == "attention"
        assert fields["mix.output"]["module_class"] == "ToyAttention"


def test_captured_tensors_equal_recomputed_ones(captured):
    out, _, _, records, _ = captured
    for step in (0, 2, 4):
        t = load(out / f"step{step:06d}.safetensors")
        params, grads = records[step]["params"], records[step]["grads"]
        assert_same(t["embed.input"], records[step]["x"])
        for m in LINEARS:
            w, b = params[f"{m}.weight"], params[f"{m}.bias"]
            assert_same(t[f"{m}.weight"], w)  # the value before the optimizer step
            assert_same(t[f"{m}.output"], F.linear(t[f"{m}.input"], w, b))
            assert_same(t[f"{m}.grad_weight"], grads[f"{m}.weight"])  # == .grad after backward
            go, x = t[f"{m}.grad_output"], t[f"{m}.input"]
            torch.testing.assert_close(t[f"{m}.grad_weight"], go.flatten(0, -2).T @ x.flatten(0, -2))
            if m != "embed":
                torch.testing.assert_close(t[f"{m}.grad_input"], go @ w)
        for i in range(2):
            a = f"layers.{i}.attn"
            assert_same(t[f"{a}.in_proj_weight"], params[f"{a}.in_proj_weight"])
            assert_same(t[f"{a}.out_proj_weight"], params[f"{a}.out_proj.weight"])
            assert_same(t[f"{a}.grad_in_proj_weight"], grads[f"{a}.in_proj_weight"])
            assert_same(t[f"{a}.grad_out_proj_weight"], grads[f"{a}.out_proj.weight"])
            # The block's forward: x -> x + attn(x) -> + mlp(...): the pieces chain exactly.
            assert_same(t[f"layers.{i}.mlp.0.input"], t[f"{a}.query"] + t[f"{a}.output"])
            # grad_output is taken before the in-place ReLU: ReLU's backward of the next Linear's grad_input.
            pre = t[f"layers.{i}.mlp.0.output"]
            assert_same(t[f"layers.{i}.mlp.0.grad_output"], t[f"layers.{i}.mlp.2.grad_input"] * (pre > 0))
            assert t[f"{a}.attention_weights"].shape == (3, 5, 5)
        assert_same(t["layers.0.attn.query"], t["embed.output"])
        assert_same(t["mix.qkv.input"], t["mix.input"])
        assert_same(t["head.input"], t["mix.output"])
        assert_same(t["mix.grad_output"], t["head.grad_input"])
        # Block 1's output only feeds mix: x1 = x + attn(x); out = x1 + mlp(x1).
        assert_same(t["layers.1.mlp.2.grad_output"], t["mix.grad_input"])
        torch.testing.assert_close(t["layers.1.attn.grad_output"], t["mix.grad_input"] + t["layers.1.mlp.0.grad_input"])


def test_analyze_reads_every_captured_tensor(captured):
    out, *_ = captured
    result = analysis.run("analyze", [str(out)], ["mxfp8_e4m3", "hif8"], device="cpu")
    want = {(str(out / f"step{s:06d}.safetensors"), n) for s in (0, 2, 4) for n in expected_names()}
    got = {(r.tensor.file, r.tensor.name) for r in result.rows}
    assert got == want and len(result.rows) == 2 * len(want) and not result.skipped
    fields = {str(p): json.loads(file_meta(p)["tensors"]) for p in out.glob("step*.safetensors")}
    for r in result.rows:
        assert all(not math.isnan(v) for v in r.metrics.values()), (r.tensor.name, r.format)
        if r.tensor.meta:  # once fqtool.io exposes the capture fields of __metadata__, they must be these
            want_meta = {k: v for k, v in fields[r.tensor.file][r.tensor.name].items() if v is not None}
            assert r.tensor.meta == want_meta
        assert math.isfinite(r.metrics["mse"]) and math.isfinite(r.metrics["cosine"])
    # Grouped by layer and kind straight from the names, e.g. every layer-1 weight gradient:
    layer1_grad_w = {r.tensor.name for r in result.rows if r.tensor.name.startswith("layers.1.")} & {
        n for n in expected_names() if n.rsplit(".", 1)[1].startswith("grad_") and "weight" in n.rsplit(".", 1)[1]
    }
    assert layer1_grad_w == {
        "layers.1.mlp.0.grad_weight",
        "layers.1.mlp.2.grad_weight",
        "layers.1.attn.grad_in_proj_weight",
        "layers.1.attn.grad_out_proj_weight",
    }


def test_cli_analyzes_the_capture_directory(captured):
    out, *_ = captured
    proc = subprocess.run(
        [sys.executable, "-m", "fqtool", "analyze", str(out), "-f", "mxfp8_e4m3", "-o", "json", "-q"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    names = {(Path(t["file"]).name, t["name"]) for t in doc["tensors"]}
    assert names == {(f"step{s:06d}.safetensors", n) for s in (0, 2, 4) for n in expected_names()}
    assert all(isinstance(r["metrics"]["sqnr_db"], float) for r in doc["rows"])


# --- sampling, repeated calls, the byte cap ---------------------------------------------------------


def test_explicit_steps_kinds_include_and_dtype(tmp_path):
    losses, *_ = train(
        out_dir=tmp_path, kinds=("weight", "grad_weight"), steps={1, 3}, include="layers.1.*", dtype=torch.bfloat16
    )
    assert step_files(tmp_path) == [MANIFEST, "step000001.safetensors", "step000003.safetensors"]
    t = load_file(tmp_path / "step000003.safetensors")
    assert set(t) == {
        "layers.1.mlp.0.weight",
        "layers.1.mlp.2.weight",
        "layers.1.attn.in_proj_weight",
        "layers.1.attn.out_proj_weight",
        "layers.1.mlp.0.grad_weight",
        "layers.1.mlp.2.grad_weight",
        "layers.1.attn.grad_in_proj_weight",
        "layers.1.attn.grad_out_proj_weight",
    }
    assert all(v.dtype == torch.bfloat16 for v in t.values())
    assert tuple(losses) == reference_losses()


def test_a_module_called_twice_gets_numbered_names(tmp_path):
    lin = nn.Linear(4, 4)
    x = torch.randn(2, 4)
    with capture(lin, tmp_path, kinds=("input", "weight", "output", "grad_weight")):
        lin(lin(x)).sum().backward()
    t = load_file(tmp_path / "step000000.safetensors")
    assert set(t) == {"input", "@1.input", "output", "@1.output", "weight", "grad_weight"}  # the root has no name
    assert_same(t["@1.input"], t["output"])
    assert_same(t["grad_weight"], lin.weight.grad)


def test_byte_cap_stops_with_one_warning_and_no_partial_file(tmp_path):
    full = tmp_path / "full"
    train(out_dir=full, every=2)
    sizes = {int(p.stem[4:]): p.stat().st_size for p in full.glob("step*.safetensors")}
    capped = tmp_path / "capped"
    with pytest.warns(RuntimeWarning, match="max_bytes") as record:
        losses, _, _, cap = train(out_dir=capped, every=2, max_bytes=sizes[0] + sizes[2] - 1)
    assert len([w for w in record if "max_bytes" in str(w.message)]) == 1
    assert step_files(capped) == [MANIFEST, "step000000.safetensors"]  # no temp files, no partial step 2
    a, b = load(capped / "step000000.safetensors"), load(full / "step000000.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert cap.stopped and cap.bytes_written == sizes[0] <= cap.max_bytes
    manifest = json.loads((capped / MANIFEST).read_text())
    assert manifest["stopped"]["step"] == 2 and [f["step"] for f in manifest["files"]] == [0]
    assert tuple(losses) == reference_losses()


def test_byte_cap_below_one_tensor_writes_nothing(tmp_path):
    with pytest.warns(RuntimeWarning, match="max_bytes"):
        train(out_dir=tmp_path, max_bytes=64)
    assert step_files(tmp_path) == [MANIFEST]
    assert json.loads((tmp_path / MANIFEST).read_text())["stopped"]["step"] == 0


# --- hooks, errors, misuse -----------------------------------------------------------------------------


def hook_count(model: nn.Module) -> int:
    n = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())
    return n + sum(len(p._post_accumulate_grad_hooks or {}) for p in model.parameters())


def test_hooks_removed_after_exit_and_after_an_exception(tmp_path):
    model = Net()
    x = torch.randn(2, 5, 4)
    with capture(model, tmp_path / "a") as cap:
        assert hook_count(model) > 0
        model(x).sum().backward()
    assert hook_count(model) == 0 and cap.files == [tmp_path / "a" / "step000000.safetensors"]
    with pytest.raises(ZeroDivisionError), capture(model, tmp_path / "b"):
        model(x).sum().backward()
        1 / 0  # noqa: B018
    assert hook_count(model) == 0
    assert step_files(tmp_path / "b") == [MANIFEST]  # the unfinished step is dropped
    model(x).sum().backward()  # after exit nothing is captured
    assert step_files(tmp_path / "b") == [MANIFEST]


def test_nested_captures_on_one_model(tmp_path):
    model = Net()
    x = torch.randn(2, 5, 4)
    ref = model(x).detach()
    with capture(model, tmp_path / "outer", kinds=("input", "grad_input")) as outer:
        with capture(model, tmp_path / "inner", kinds=("input", "grad_input")):
            out = model(x)
            out.sum().backward()
        assert torch.equal(out, ref)
        assert outer.next_step() == 1 == outer.current_step
        model(x).sum().backward()
    assert hook_count(model) == 0
    a, b = (
        load_file(tmp_path / "outer" / "step000000.safetensors"),
        load_file(tmp_path / "inner" / "step000000.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "outer" / "step000001.safetensors").exists()


def test_a_write_error_warns_once_and_training_continues(tmp_path, monkeypatch):
    def broken(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(capture_mod, "_atomic_write", broken)
    with pytest.warns(RuntimeWarning, match="No space left") as record:
        losses, *_ = train(out_dir=tmp_path)
    assert len(record) == 1
    assert tuple(losses) == reference_losses()
    assert not list(tmp_path.glob("step*"))


def test_misuse_is_refused_before_training(tmp_path):
    model = Net()
    with pytest.raises(ValueError, match="unknown kinds"):
        capture(model, tmp_path, kinds=("inputs",))
    with pytest.raises(ValueError, match="no module"):
        capture(model, tmp_path, include="nothing.*").__enter__()
    assert hook_count(model) == 0
    cap = capture(model, tmp_path / "once")
    with cap:
        pass
    with pytest.raises(RuntimeError, match="entered only once"):
        cap.__enter__()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "step000003.safetensors").write_bytes(b"old")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        capture(model, tmp_path / "old").__enter__()
    with capture(model, tmp_path / "old", overwrite=True) as cap:
        model(torch.randn(1, 2, 4))
    assert step_files(tmp_path / "old") == [MANIFEST, "step000000.safetensors"]
    with pytest.raises(ValueError, match="numbered from 0"):
        cap.step(-1)


# --- (3) the seed's save_tensor API -------------------------------------------------------------------


@pytest.fixture
def saver(tmp_path, monkeypatch):
    """A clean saver state, dumps enabled into tmp_path/dumps through the environment."""
    monkeypatch.setattr(capture_mod, "_overrides", {"save_dir": None, "enabled": None})
    monkeypatch.setattr(capture_mod, "_iteration", 0)
    monkeypatch.setattr(capture_mod, "_save_warned", False)
    for var in ("LOCAL_RANK", "RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TENSOR_SAVE_ENABLED", "1")
    monkeypatch.setenv("TENSOR_SAVE_DIR", str(tmp_path / "dumps"))
    return tmp_path / "dumps"


def load_dump(path: str) -> dict:
    return torch.load(path, weights_only=True)


def test_save_tensor_writes_the_seed_payload_and_name(saver):
    set_iteration(7)
    x = torch.randn(6, 4, dtype=torch.bfloat16).T  # non-contiguous on purpose
    before = x.clone()
    path = save_tensor(
        x, "linear", "backward", "mxfp_fp8_e4m3", "grad_output", layer_idx=3, phase="post", component="linear",
        metadata={"note": "hi", "dtype": torch.float16},
    )  # fmt: skip
    assert torch.equal(x, before)
    assert Path(path).parent == saver and Path(path).suffix == ".pt"
    fields = parse_dump_name(Path(path).stem)
    assert {k: v for k, v in fields.items() if k != "timestamp"} == {
        "iteration": 7,
        "layer_type": "linear",
        "layer": 3,
        "operation": "backward",
        "phase": "post",
        "component": "linear",
        "quant_type": "mxfp_fp8_e4m3",
        "rank": 0,
        "tensor_name": "grad_output",
    }
    payload = load_dump(path)
    assert set(payload) == {"tensor", "tensor_info", "metadata"}
    assert_same(payload["tensor"], before) and payload["tensor"].is_contiguous()
    info = payload["tensor_info"]
    assert info["shape"] == [4, 6] and info["dtype"] == "torch.bfloat16" and info["device"] == "cpu"
    assert info["max"] == float(before.float().max()) and info["std"] == float(before.float().std())
    meta = payload["metadata"]
    assert meta["layer_idx"] == 3 and meta["iteration"] == 7 and meta["rank"] == 0 and meta["note"] == "hi"
    assert meta["dtype"] == "torch.float16"  # non-plain values as text: weights_only loading works
    (src,), _ = scan([path])
    assert src.meta["layer"] == 3 and src.meta["iteration"] == 7 and src.meta["tensor_name"] == "grad_output"
    assert src.meta["quant_type"] == "mxfp_fp8_e4m3" and src.meta["note"] == "hi"
    assert_same(src.load(), before)


def test_linear_and_attention_helpers(saver, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "3")
    x, w = torch.randn(2, 8), torch.randn(4, 8)
    paths = save_linear_tensors(x, w, "bf16", layer_idx=1)
    assert set(paths) == {"input", "weight"}
    for name, path in paths.items():
        f = parse_dump_name(Path(path).stem)
        assert (f["layer_type"], f["layer"], f["operation"], f["phase"], f["component"]) == (
            "linear", 1, "forward", "pre", "linear",
        )  # fmt: skip
        assert (f["quant_type"], f["rank"], f["tensor_name"]) == ("bf16", 3, name)
    assert_same(load_dump(paths["weight"])["tensor"], w)
    q, k, v, a = (torch.randn(2, 3, 4) for _ in range(4))
    paths = save_attention_tensors(q, k, None, "hifp8", layer_idx=0, attention_weights=a)
    assert set(paths) == {"query", "key", "attention_weights"}
    f = parse_dump_name(Path(paths["attention_weights"]).stem)
    assert (f["layer_type"], f["component"], f["phase"], f["tensor_name"]) == (
        "attention",
        "FA",
        "pre",
        "attention_weights",
    )
    assert_same(load_dump(paths["key"])["tensor"], k)
    sources, _ = scan([saver])
    assert len(sources) == 5 and {s.meta["rank"] for s in sources} == {3}


@pytest.mark.parametrize("value", ["", "0", "false", "no", "nonsense"])
def test_disabled_unless_the_switch_says_so(saver, tmp_path, monkeypatch, value):
    monkeypatch.chdir(tmp_path)
    if value:
        monkeypatch.setenv("TENSOR_SAVE_ENABLED", value)
    else:
        monkeypatch.delenv("TENSOR_SAVE_ENABLED")
    assert save_tensor(torch.ones(2), "linear", "forward", "bf16", "input") is None
    assert save_linear_tensors(torch.ones(2), torch.ones(2), "bf16") == {"input": None, "weight": None}
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes"])
def test_enabled_values(saver, monkeypatch, value):
    monkeypatch.setenv("TENSOR_SAVE_ENABLED", value)
    assert save_tensor(torch.ones(2), "linear", "forward", "bf16", "input") is not None


def test_default_dir_and_setters_override_the_environment(saver, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TENSOR_SAVE_DIR")
    path = Path(save_tensor(torch.ones(2), "linear", "forward", "bf16", "input", iteration=12))
    assert path.parent == Path("tensor_logs") and parse_dump_name(path.stem)["iteration"] == 12
    set_save_dir(tmp_path / "elsewhere")
    assert Path(save_tensor(torch.ones(2), "linear", "forward", "bf16", "input")).parent == tmp_path / "elsewhere"
    set_enabled(False)
    assert save_tensor(torch.ones(2), "linear", "forward", "bf16", "input") is None


def test_a_failing_save_warns_once_and_returns_none(saver, monkeypatch):
    saver.parent.mkdir(exist_ok=True)
    saver.write_text("a file where the dump folder should be")
    with pytest.warns(RuntimeWarning, match="could not save") as record:
        assert save_tensor(torch.ones(2), "linear", "forward", "bf16", "input") is None
        assert save_tensor(torch.ones(2), "linear", "forward", "bf16", "weight") is None
    assert len(record) == 1
