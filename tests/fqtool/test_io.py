"""fqtool.io: every input kind, names and order, bit-exact loading, filters, seed dump names,
one-line errors for bad files, inputs never modified, and memory of one tensor at a time."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from fqtool.errors import EXIT_ERROR, InputError
from fqtool.io import TensorSource, parse_dump_name, scan
from fqtool.results import Skipped

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_tensors"
INDEX = SAMPLES / "sharded" / "model.safetensors.index.json"


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bytes: equal bits means equal values, NaN payloads and -0 included."""
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(bits(a), bits(b))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_safetensors(path: Path, header: dict | bytes, data: bytes = b"", header_len: int | None = None) -> Path:
    """A safetensors file written by hand, so it can be made wrong on purpose."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if header_len is None else header_len) + raw + data)
    return path


def by_name(sources: list[TensorSource]) -> dict[str, TensorSource]:
    return {s.name: s for s in sources}


def scan_error(*args, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        scan(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert info.value.exit_code == EXIT_ERROR
    return message


# --- safetensors -------------------------------------------------------------------------------------


@pytest.fixture
def mixed(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 8, generator=g)
    x[0, 0], x[0, 1], x[0, 2] = float("nan"), -0.0, float("inf")
    tensors = {
        "f64": x.double(),
        "f32": x,
        "f16": x.half(),
        "bf16": x.bfloat16(),
        "e4m3": (x.clamp(-400, 400)).to(torch.float8_e4m3fn),
        "e5m2": x.to(torch.float8_e5m2),
        "scalar": torch.tensor(3.5),
        "ids": torch.arange(6),
        "mask": torch.tensor([True, False]),
        "u8": torch.arange(4, dtype=torch.uint8),
    }
    path = tmp_path / "mixed.safetensors"
    save_file(tensors, path)
    return path, tensors


def test_safetensors_dtypes_values_and_skipped(mixed):
    path, tensors = mixed
    sources, skipped = scan([path])
    floats = by_name(sources)
    assert set(floats) == {"f64", "f32", "f16", "bf16", "e4m3", "e5m2", "scalar"}
    for name, source in floats.items():
        saved = tensors[name]
        assert (source.file, source.shape, source.dtype) == (str(path), tuple(saved.shape), saved.dtype)
        assert source.nbytes == saved.numel() * saved.element_size() and source.meta == {}
        assert same_bits(source.load(), saved), name
    assert {s.name: s.reason for s in skipped} == {
        "ids": "int64: not floating point",
        "mask": "bool: not floating point",
        "u8": "uint8: not floating point",
    }
    assert all(isinstance(s, Skipped) and s.file == str(path) for s in skipped)


def test_safetensors_storage_order_and_fresh_tensors(tmp_path):
    header = {
        "__metadata__": {"format": "pt"},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]},
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
    }
    path = write_safetensors(tmp_path / "order.safetensors", header, struct.pack("<4f", 1, 2, 3, 4))
    sources, _ = scan(path)
    assert [s.name for s in sources] == ["a", "b"]  # by data offset, not JSON order
    first, second = sources[0].load(), sources[0].load()
    assert first.tolist() == [1.0, 2.0] and sources[1].load().tolist() == [3.0, 4.0]
    first.add_(1)
    assert second.tolist() == [1.0, 2.0]  # every load() is a fresh tensor


def test_sharded_index_from_repo():
    sources, skipped = scan([INDEX])
    index = json.loads(INDEX.read_text())["weight_map"]
    assert {s.name for s in sources} == set(index) and skipped == []
    for s in sources:
        assert Path(s.file) == INDEX.parent / index[s.name]
        assert s.load().shape == s.shape


def test_sample_directory_reads_shards_once():
    sources, _ = scan([SAMPLES])
    keys = [(s.file, s.name) for s in sources]
    assert len(keys) == len(set(keys))
    names = [s.name for s in sources]
    assert len(names) == len(set(names)) == 9
    shard_names = set(json.loads(INDEX.read_text())["weight_map"])
    assert shard_names <= set(names)
    # The same index also given directly is not read a second time.
    again, _ = scan([SAMPLES, INDEX, SAMPLES / "weights.safetensors"])
    assert [s.name for s in again] == names


def test_directory_walk_sorted_recursive_ignores_others(tmp_path):
    root = tmp_path / "run"
    (root / "b").mkdir(parents=True)
    (root / "a" / "deep").mkdir(parents=True)
    (root / ".cache").mkdir()
    save_file({"t": torch.ones(2)}, root / "b" / "x.safetensors")
    save_file({"t": torch.ones(2)}, root / "a" / "deep" / "y.safetensors")
    torch.save(torch.ones(3), root / "a" / "z.pt")
    np.save(root / "m.npy", np.ones(2, np.float32))
    save_file({"t": torch.ones(2)}, root / ".cache" / "hidden.safetensors")
    (root / "notes.txt").write_text("not a tensor")
    (root / "config.json").write_text("{}")
    shutil.copytree(INDEX.parent, root / "c_sharded")
    sources, _ = scan(root)
    files = [Path(s.file).relative_to(root).as_posix() for s in sources]
    shards = ["c_sharded/model-00001-of-00002.safetensors"] * 2 + ["c_sharded/model-00002-of-00002.safetensors"] * 2
    assert files == ["a/deep/y.safetensors", "a/z.pt", "b/x.safetensors", *shards, "m.npy"]
    assert [s.name for s in sources if s.file.endswith((".pt", ".npy"))] == ["z", "m"]


def test_index_missing_shard_and_missing_tensor(tmp_path):
    shutil.copytree(INDEX.parent, tmp_path / "ckpt")
    index = tmp_path / "ckpt" / INDEX.name
    os.remove(tmp_path / "ckpt" / "model-00002-of-00002.safetensors")
    message = scan_error([index])
    assert str(index) in message and "model-00002-of-00002.safetensors" in message and "missing" in message
    assert "model-00002-of-00002.safetensors" in scan_error([tmp_path / "ckpt"])

    weight_map = json.loads(INDEX.read_text())["weight_map"]
    weight_map["ghost.weight"] = "model-00001-of-00002.safetensors"
    stale = tmp_path / "stale" / INDEX.name
    shutil.copytree(INDEX.parent, stale.parent)
    stale.write_text(json.dumps({"weight_map": weight_map}))
    message = scan_error([stale])
    assert "model-00001-of-00002.safetensors" in message and "ghost.weight" in message


# --- .pt / .pth / .bin ---------------------------------------------------------------------------------


def test_pt_bare_tensor_new_and_legacy(tmp_path):
    t = torch.randn(3, 5).bfloat16()
    torch.save(t, tmp_path / "new.pt")
    torch.save(t, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    sources, _ = scan([tmp_path / "new.pt", tmp_path / "old.pth"])
    assert [(s.name, s.shape, s.dtype) for s in sources] == [("new", (3, 5), t.dtype), ("old", (3, 5), t.dtype)]
    assert all(same_bits(s.load(), t) for s in sources)


def test_pt_nested_state_dict(tmp_path):
    sd = {
        "model": {"layers.0.weight": torch.randn(4, 4), "layers.0.bias": torch.randn(4), "ids": torch.arange(3)},
        "step": 7,
        "name": "run1",
        "list": [torch.ones(2), {"x": torch.zeros(1, dtype=torch.float64)}],
    }
    path = tmp_path / "ckpt.bin"
    torch.save(sd, path)
    sources, skipped = scan(path)
    assert [s.name for s in sources] == ["model.layers.0.weight", "model.layers.0.bias", "list.0", "list.1.x"]
    assert skipped == [Skipped("model.ids", str(path), "int64: not floating point")]
    loaded = by_name(sources)
    assert same_bits(loaded["model.layers.0.weight"].load(), sd["model"]["layers.0.weight"])
    assert same_bits(loaded["list.1.x"].load(), sd["list"][1]["x"])
    assert all(s.meta == {} for s in sources)


def test_pt_view_is_copied_alone(tmp_path):
    base = torch.arange(100, dtype=torch.float32).reshape(10, 10)
    torch.save({"col": base[:, 3]}, tmp_path / "view.pt")  # a strided view of a larger storage
    (source,) = scan(tmp_path / "view.pt")[0]
    t = source.load()
    assert source.nbytes == 40 and t.is_contiguous() and t.untyped_storage().nbytes() == 40
    assert torch.equal(t, base[:, 3])


def test_pt_list_payload_uses_first_element(tmp_path):
    torch.save([torch.full((2,), 5.0), torch.zeros(3)], tmp_path / "pair.pt")
    (source,), skipped = scan(tmp_path / "pair.pt")
    assert (source.name, source.shape, skipped) == ("pair", (2,), [])
    assert source.load().tolist() == [5.0, 5.0]


DUMP_STEM = "20250923_100142_0001_iter000_linear_L1_forward_pre_linear_bf16_rank00_group000_input"


def test_seed_dump_meta_prefers_embedded(tmp_path):
    t = torch.randn(8, 4).bfloat16()
    payload = {
        "tensor": t,
        "tensor_info": {"shape": [8, 4], "dtype": "torch.bfloat16", "min": -1.0},
        "metadata": {"layer_idx": 3, "rank": 5, "iteration": 12, "save_time": "2025-09-23", "shape": torch.Size([8])},
    }
    path = tmp_path / f"{DUMP_STEM}.pt"
    torch.save(payload, path)
    (source,), _ = scan(path)
    assert source.name == DUMP_STEM and same_bits(source.load(), t)
    assert source.meta == {
        **parse_dump_name(DUMP_STEM),
        "layer": 3,  # embedded layer_idx wins over _L1
        "rank": 5,
        "iteration": 12,
        "save_time": "2025-09-23",  # non-JSON values (torch.Size) are dropped
    }
    assert source.meta["counter"] == 1 and source.meta["group"] == 0


def test_dump_name_of_bare_tensor_gives_meta(tmp_path):
    stem = "20250101_000000_iter000_linear_L1_forward_pre_linear_bf16_rank00_input"
    torch.save(torch.ones(2), tmp_path / f"{stem}.pt")
    (source,), _ = scan(tmp_path)
    assert source.name == stem and source.meta["layer"] == 1 and source.meta["tensor_name"] == "input"


def test_weights_only_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(2), "cfg": Config()}, path)
    message = scan_error(path)
    assert message.startswith(str(path)) and "never unpickles" in message and "torch.save" in message
    assert "Config" in message


class Config:
    """A custom object: torch.load(weights_only=True) must refuse it."""


# --- .npy -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["<f2", "<f4", "<f8", ">f4"])
def test_npy_floats(tmp_path, dtype):
    array = (np.arange(12).reshape(3, 4) / 7).astype(dtype)
    np.save(tmp_path / "a.npy", array)
    (source,), _ = scan(tmp_path / "a.npy")
    t = source.load()
    assert (source.name, source.shape) == ("a", (3, 4)) and source.dtype == t.dtype
    assert np.array_equal(t.numpy(), array) and t.is_contiguous()


def test_npy_fortran_and_skipped(tmp_path):
    array = np.asfortranarray(np.random.default_rng(0).standard_normal((5, 3)))
    np.save(tmp_path / "f.npy", array)
    np.save(tmp_path / "i.npy", np.arange(4))
    sources, skipped = scan(tmp_path)
    assert np.array_equal(sources[0].load().numpy(), array)
    assert skipped == [Skipped("i", str(tmp_path / "i.npy"), "int64: not floating point")]


# --- filters ------------------------------------------------------------------------------------------------


def test_include_exclude(mixed):
    path, _ = mixed
    sources, skipped = scan(path, include=["f*", "e4m3"], exclude=["f16"])
    assert sorted(s.name for s in sources) == ["e4m3", "f32", "f64"] and skipped == []
    # Case-sensitive: "F32" matches nothing, so nothing is left at all.
    message = scan_error(path, include=["F32"])
    assert str(path) in message and "--include 'F32'" in message
    message = scan_error(path, exclude=["*"])
    assert "--exclude '*'" in message


def test_file_with_no_tensors(tmp_path):
    path = write_safetensors(tmp_path / "empty.safetensors", {"__metadata__": {}})
    assert "no tensors" in scan_error(path)
    torch.save({"step": 3}, tmp_path / "nothing.pt")
    assert "no tensors" in scan_error(tmp_path / "nothing.pt")


def test_empty_tensor_is_an_error_unless_excluded(tmp_path):
    path = tmp_path / "e.safetensors"
    save_file({"ok": torch.ones(2), "void": torch.zeros(0, 3)}, path)
    message = scan_error(path)
    assert message.startswith(f"{path}: tensor 'void'") and "--exclude 'void'" in message
    assert [s.name for s in scan(path, exclude=["void"])[0]] == ["ok"]
    torch.save(torch.zeros(0), tmp_path / "e.pt")
    assert "--exclude 'e'" in scan_error(tmp_path / "e.pt")


# --- bad input: one line, naming the file, saying what to do ----------------------------------------


def _too_short(p):
    return p.write_bytes(b"\x01\x02")


def _header_too_long(p):
    write_safetensors(p, {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, header_len=10_000)


def _header_not_json(p):
    write_safetensors(p, b"{not json", b"")


def _header_not_object(p):
    write_safetensors(p, b"[1, 2, 3]", b"")


def _bad_entry(p):
    write_safetensors(p, {"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4)


def _truncated(p):
    write_safetensors(p, {"a": {"dtype": "F32", "shape": [100], "data_offsets": [0, 400]}}, b"\0" * 40)


def _wrong_length(p):
    write_safetensors(p, {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}, b"\0" * 16)


def _unknown_dtype(p):
    write_safetensors(p, {"a": {"dtype": "F12", "shape": [1], "data_offsets": [0, 2]}}, b"\0" * 2)


def _cut_pt(p):
    torch.save({"w": torch.randn(64)}, p)
    p.write_bytes(p.read_bytes()[:200])


def _junk_pt(p):
    p.write_bytes(b"this is not a checkpoint" * 8)


def _empty_pt(p):
    p.write_bytes(b"")


def _junk_npy(p):
    p.write_bytes(b"\x93NUMPY junk")


def _cut_npy(p):
    np.save(p, np.ones(100, np.float32))
    p.write_bytes(p.read_bytes()[:200])


BAD_FILES = {
    "too-short.safetensors": (_too_short, "too short"),
    "long-header.safetensors": (_header_too_long, "header length 10000 is larger than the file"),
    "not-json.safetensors": (_header_not_json, "not valid JSON"),
    "not-object.safetensors": (_header_not_object, "not a JSON object"),
    "bad-entry.safetensors": (_bad_entry, "tensor 'a': bad header entry"),
    "truncated.safetensors": (_truncated, "truncated: header needs 400 bytes of data, file has 40; re-download"),
    "wrong-length.safetensors": (_wrong_length, "needs 12 bytes but data_offsets span 16"),
    "unknown-dtype.safetensors": (_unknown_dtype, "unknown dtype 'F12'"),
    "cut.pt": (_cut_pt, "corrupt or truncated"),
    "junk.pth": (_junk_pt, "torch.load cannot read it"),
    "empty.bin": (_empty_pt, "empty file"),
    "junk.npy": (_junk_npy, "not a readable .npy file"),
    "cut.npy": (_cut_npy, "not a readable .npy file"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_fail_with_one_line(tmp_path, name):
    make, expected = BAD_FILES[name]
    path = tmp_path / name
    make(path)
    message = scan_error([path])
    assert message.startswith(f"{path}:") and expected in message, message


def test_unknown_dtype_can_be_excluded(tmp_path):
    path = tmp_path / "u.safetensors"
    header = {
        "a": {"dtype": "F12", "shape": [1], "data_offsets": [0, 2]},
        "b": {"dtype": "F16", "shape": [1], "data_offsets": [2, 4]},
    }
    write_safetensors(path, header, b"\0" * 4)
    assert "--exclude 'a'" in scan_error(path)
    assert [s.name for s in scan(path, exclude=["a"])[0]] == ["b"]


def test_bad_paths(tmp_path):
    missing = tmp_path / "nope.safetensors"
    assert scan_error([missing]) == f"{missing}: no such file or directory; check the path"
    other = tmp_path / "notes.txt"
    other.write_text("x")
    message = scan_error([other])
    assert message.startswith(str(other)) and ".safetensors" in message and ".npy" in message
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    assert scan_error([empty]).startswith(f"{empty}: no tensor files")
    (empty / "readme.md").write_text("x")
    assert scan_error([empty]).startswith(f"{empty}: no tensor files")


# --- inputs are never modified; sources travel -----------------------------------------------------


def test_loaded_tensors_never_write_back(tmp_path):
    save_file({"w": torch.ones(64)}, tmp_path / "a.safetensors")
    torch.save({"w": torch.ones(64)}, tmp_path / "b.pt")
    torch.save(torch.ones(64), tmp_path / "c.pt", _use_new_zipfile_serialization=False)
    np.save(tmp_path / "d.npy", np.ones(64, np.float32))
    before = {p.name: sha(p) for p in tmp_path.iterdir()}
    sources, _ = scan(tmp_path)
    assert len(sources) == 4
    for source in sources:
        source.load().mul_(-3)
        assert torch.equal(source.load(), torch.ones(64)), source.file
    assert {p.name: sha(p) for p in tmp_path.iterdir()} == before


def test_sources_pickle(mixed):
    path, tensors = mixed
    source = by_name(scan(path)[0])["bf16"]
    assert same_bits(pickle.loads(pickle.dumps(source)).load(), tensors["bf16"])


def test_load_detects_a_changed_file(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.ones(8)}, path)
    (source,), _ = scan(path)
    save_file({"w": torch.ones(4)}, path)
    with pytest.raises(InputError, match="shorter since it was scanned"):
        source.load()


# --- seed dump names (seed-utilities.md section 0.2) -------------------------------------------------


@pytest.mark.parametrize(
    ("stem", "expected"),
    [
        (
            "20250101_000000_iter000_linear_L1_forward_pre_linear_bf16_rank00_input",
            {
                "timestamp": "20250101_000000",
                "iteration": 0,
                "layer_type": "linear",
                "layer": 1,
                "operation": "forward",
                "phase": "pre",
                "component": "linear",
                "quant_type": "bf16",
                "rank": 0,
                "tensor_name": "input",
            },
        ),
        (
            DUMP_STEM,
            {
                "timestamp": "20250923_100142",
                "counter": 1,
                "iteration": 0,
                "layer_type": "linear",
                "layer": 1,
                "operation": "forward",
                "phase": "pre",
                "component": "linear",
                "quant_type": "bf16",
                "rank": 0,
                "group": 0,
                "tensor_name": "input",
            },
        ),
        (
            "20250923_100142_0042_iter120_attention_L23_backward_post_FA_mxfp_fp8_e4m3_quantized_rank07_group002_grad_input_A",
            {
                "timestamp": "20250923_100142",
                "counter": 42,
                "iteration": 120,
                "layer_type": "attention",
                "layer": 23,
                "operation": "backward",
                "phase": "post",
                "component": "FA",
                "quant_type": "mxfp_fp8_e4m3_quantized",
                "rank": 7,
                "group": 2,
                "tensor_name": "grad_input_A",
            },
        ),
        (
            "20250101_000000_iter003_attention_forward_pre_attention_mxfp8e4m3_rank01_attention_probs",
            {
                "timestamp": "20250101_000000",
                "iteration": 3,
                "layer_type": "attention",
                "operation": "forward",
                "phase": "pre",
                "component": "attention",
                "quant_type": "mxfp8e4m3",
                "rank": 1,
                "tensor_name": "attention_probs",
            },
        ),
    ],
)
def test_parse_dump_name(stem, expected):
    assert parse_dump_name(stem) == expected


@pytest.mark.parametrize(
    ("tail", "quant_type", "tensor_name"),
    [
        ("mxfp_fp8_e4m3_quantized_grad_input_B", "mxfp_fp8_e4m3_quantized", "grad_input_B"),
        ("mxfp_fp4_e2m1_matmul_input_buffer", "mxfp_fp4_e2m1", "matmul_input_buffer"),
        ("mxfp_int8_batch1", "mxfp_int8", "batch1"),
        ("hifp8_attention_probs", "hifp8", "attention_probs"),
        ("mxfp_input", "mxfp", "input"),
    ],
)
def test_parse_dump_name_without_rank(tail, quant_type, tensor_name):
    fields = parse_dump_name(f"20250101_000000_iter000_linear_L2_backward_pre_linear_{tail}")
    assert (fields["quant_type"], fields["tensor_name"], fields["layer"]) == (quant_type, tensor_name, 2)
    assert "rank" not in fields and "group" not in fields and "counter" not in fields


@pytest.mark.parametrize(
    "stem",
    ["model", "layers.0.weight", "20250101_iter000_linear_forward_pre_linear_bf16_input", "20250101_000000_iter000"],
)
def test_parse_dump_name_rejects_other_names(stem):
    assert parse_dump_name(stem) == {}


# --- memory: one tensor at a time ---------------------------------------------------------------------

MEMORY_PROBE = textwrap.dedent(
    """
    import json, sys
    from fqtool.io import scan

    def kib(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1])

    growth = {}
    for path in sys.argv[1:]:
        open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
        start = kib("VmRSS")
        sources, _ = scan([path])
        for source in sources:
            tensor = source.load()
            assert tensor.shape == source.shape
            del tensor
        growth[path] = (kib("VmHWM") - start) * 1024
    print(json.dumps(growth))
    """
)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_peak_memory_is_about_one_tensor(tmp_path):
    rows, cols = 1024, 12800
    size = rows * cols * 4  # one 50 MB float32 tensor
    # 4 tensors in a sparse file (header + holes, reads as zeros): 200 MB on disk in no time.
    spans = [[i * size, i * size + size] for i in range(4)]
    header = {f"t{i}": {"dtype": "F32", "shape": [rows, cols], "data_offsets": span} for i, span in enumerate(spans)}
    big = write_safetensors(tmp_path / "big.safetensors", header)
    with open(big, "r+b") as f:
        f.truncate(big.stat().st_size + 4 * size)
    ones = torch.ones(rows, cols)
    torch.save({"a": ones, "b": ones.clone()}, tmp_path / "big.pt")
    np.save(tmp_path / "big.npy", ones.numpy())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    files = [str(tmp_path / name) for name in ("big.safetensors", "big.npy", "big.pt")]
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, *files], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    growth = {Path(k).suffix: v / size for k, v in json.loads(out.stdout).items()}
    # safetensors and .npy are read straight into the result; .pt copies out of a mapping of the
    # file, whose pages count as resident until the mapping closes after each load.
    assert growth[".safetensors"] < 1.5 and growth[".npy"] < 1.5 and growth[".pt"] < 2.5, growth
