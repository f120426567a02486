"""Find tensors in files and read them one at a time.

``scan(paths)`` reads headers only (the safetensors JSON header, ``torch.load`` with ``mmap``, the
``.npy`` header) and checks everything it can, so a bad file fails before any output is produced.
It returns one ``TensorSource`` per floating-point tensor; ``TensorSource.load()`` then reads that
one tensor into fresh memory. Resident memory therefore stays near the largest tensor, whatever
the size of the checkpoint.

Inputs: ``.safetensors``; a sharded checkpoint's ``*.index.json``; ``.pt`` / ``.pth`` / ``.bin``
(``weights_only=True``: never arbitrary unpickling) including the seed's dump files
(seed-utilities.md section 0); ``.npy``; and directories of those, walked recursively.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import pickle
import re
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fqtool.errors import InputError
from fqtool.results import Skipped

__all__ = ["SUPPORTED_SUFFIXES", "TensorSource", "parse_dump_name", "scan"]

#: File types read on their own; ``*.index.json`` (a sharded checkpoint) is read as well.
SUPPORTED_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".npy")
_INDEX_SUFFIX = ".index.json"
_SUPPORTED_TEXT = ", ".join((*SUPPORTED_SUFFIXES, "*.safetensors.index.json"))


@dataclass(frozen=True)
class TensorSource:
    """One floating-point tensor found by ``scan``; ``load()`` reads it."""

    name: str  # safetensors / state-dict key (dotted for nested dicts); the file stem for one-tensor files
    file: str  # the file it is read from, as given (or resolved from an index / directory)
    shape: tuple[int, ...]
    dtype: torch.dtype  # as stored, e.g. torch.bfloat16
    nbytes: int
    meta: dict = field(default_factory=dict)  # seed dump fields (parse_dump_name + embedded metadata)
    # Reads the tensor. A functools.partial of a module function, so a source can be pickled to a worker.
    reader: Callable[[], torch.Tensor] | None = field(default=None, repr=False, compare=False, kw_only=True)
    # Where the tensor's raw little-endian bytes start in ``file`` when they are stored there
    # contiguously (safetensors), for loaders that stream them (``fqtool.staging``); else None.
    offset: int | None = field(default=None, compare=False, kw_only=True)

    def load(self) -> torch.Tensor:
        """A fresh contiguous CPU tensor owned by the caller (never a view of the file)."""
        if self.reader is None:
            raise InputError(f"{self.file}: tensor '{self.name}' has no reader; build sources with fqtool.io.scan")
        tensor = self.reader()
        if tuple(tensor.shape) != self.shape or tensor.dtype != self.dtype:
            raise _error(self.file, "the file changed since it was scanned; run again", self.name)
        return tensor


def scan(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> tuple[list[TensorSource], list[Skipped]]:
    """Headers of every tensor under ``paths``: (floating-point sources, skipped non-floating tensors).

    Order: paths as given; a directory in sorted order; a file in storage order. A file reached twice
    (a path given twice, a shard and its index) is read once. ``include`` / ``exclude`` are
    case-sensitive globs on tensor names: kept if any include matches (or none is given) and no
    exclude does. Raises InputError for anything unreadable, and when nothing is left at all.
    """
    paths = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    include, exclude = _patterns(include), _patterns(exclude)
    sources: list[TensorSource] = []
    skipped: list[Skipped] = []
    seen_files: set[str] = set()
    found = 0
    for path in paths:
        for file, listed in _tensor_files(path):
            if os.path.realpath(file) in seen_files:
                continue
            seen_files.add(os.path.realpath(file))
            entries = _read_entries(file)
            _check_listed(file, entries, listed)
            found += len(entries)
            for entry in entries:
                if _selected(entry.name, include, exclude):
                    _add(entry, str(file), sources, skipped)
    if not sources and not skipped:
        raise InputError(_nothing_left(paths, include, exclude, found))
    return sources, skipped


# --- seed dump names (seed-utilities.md section 0.2) -----------------------------------------------

# Both generations: an optional 4-digit counter after the timestamp (Megatron saver), an optional
# layer. The tail "{quant_type}[_rank{RR}[_group{GGG}]]_{tensor_name}" is split by the next two.
_DUMP_HEAD = re.compile(
    r"(?P<timestamp>\d{8}_\d{6})(?:_(?P<counter>\d{4,}))?_iter(?P<iteration>\d+)"
    r"_(?P<layer_type>[A-Za-z0-9]+)(?:_L(?P<layer>\d+))?"
    r"_(?P<operation>[A-Za-z0-9]+)_(?P<phase>[A-Za-z0-9]+)_(?P<component>[A-Za-z0-9]+)_(?P<tail>.+)"
)
# quant_type may contain underscores; "_rank{RR}" is the anchor after it (non-greedy: the first one).
_RANKED_TAIL = re.compile(r"(?P<quant_type>.+?)_rank(?P<rank>\d+)(?:_group(?P<group>\d+))?_(?P<tensor_name>.+)")
# Without a rank, the quant types with underscores are "mxfp_<element format>[_quantized]"
# (element formats fp8_e4m3, fp4_e2m1, int8, bf16, ...); every other quant type is one word.
_UNRANKED_TAIL = re.compile(
    r"(?P<quant_type>mxfp_(?:fp\d+_e\d+m\d+|[a-z]+\d+)(?:_quantized)?|[^_]+)_(?P<tensor_name>.+)"
)
_INT_FIELDS = ("counter", "iteration", "layer", "rank", "group")
# The saver's embedded metadata calls the layer "layer_idx"; the filename field is "layer".
_EMBEDDED_RENAMES = {"layer_idx": "layer"}


def parse_dump_name(stem: str) -> dict[str, Any]:
    """Fields of a seed dump file name (without ``.pt``), or {} if it is not one.

    >>> parse_dump_name("20250101_000000_iter000_linear_L1_forward_pre_linear_bf16_rank00_input")["layer"]
    1
    """
    head = _DUMP_HEAD.fullmatch(stem)
    if head is None:
        return {}
    tail = _RANKED_TAIL.fullmatch(head["tail"]) or _UNRANKED_TAIL.fullmatch(head["tail"])
    if tail is None:
        return {}
    fields = {k: v for k, v in {**head.groupdict(), **tail.groupdict()}.items() if v is not None and k != "tail"}
    return {k: int(v) if k in _INT_FIELDS else v for k, v in fields.items()}


def _dump_meta(stem: str, embedded: Any = None) -> dict[str, Any]:
    """Filename fields, overridden by the dump's embedded metadata (the saver's truth, spec section 8)."""
    meta = parse_dump_name(stem)
    if isinstance(embedded, Mapping):
        for key, value in embedded.items():
            # Only JSON-able scalars: the metadata ends up in JSON output. None means "not given".
            if isinstance(key, str) and isinstance(value, (str, int, float, bool)):
                meta[_EMBEDDED_RENAMES.get(key, key)] = value
    return meta


# --- what a file holds, before filtering -------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    """One tensor as a reader found it. ``skip`` / ``error`` apply only if the name is selected."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype | None
    reader: Callable[[], torch.Tensor] | None
    meta: dict = field(default_factory=dict)
    skip: str | None = None  # why it is not analysed (not floating point, ...)
    error: str | None = None  # what is wrong with it (unknown dtype): raised if it is selected
    offset: int | None = None  # TensorSource.offset


# Floating dtypes the format kernels take as input (they compute in float32).
_ANALYSABLE = {
    torch.float64,
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
    torch.float8_e4m3fnuz,
    torch.float8_e5m2fnuz,
}


def _skip_reason(dtype: torch.dtype) -> str | None:
    """Why a tensor of this dtype is not analysed, or None if it is."""
    if dtype in _ANALYSABLE:
        return None
    name = _dtype_name(dtype)
    if dtype == torch.float8_e8m0fnu:
        return f"{name}: exponent-only scale format, not analysed"
    if dtype.is_floating_point:
        return f"{name}: packed sub-byte format, not supported"
    return f"{name}: not floating point"


def _add(entry: _Entry, file: str, sources: list[TensorSource], skipped: list[Skipped]) -> None:
    if entry.error:
        raise _error(file, f"{entry.error}; skip it with --exclude '{entry.name}'", entry.name)
    if entry.skip:
        skipped.append(Skipped(entry.name, file, entry.skip))
        return
    numel = math.prod(entry.shape)
    if numel == 0:
        raise _error(
            file,
            f"empty tensor (shape {list(entry.shape)}), nothing to analyse; skip it with --exclude '{entry.name}'",
            entry.name,
        )
    nbytes = numel * entry.dtype.itemsize
    sources.append(
        TensorSource(
            entry.name, file, entry.shape, entry.dtype, nbytes, entry.meta, reader=entry.reader, offset=entry.offset
        )
    )


def _read_entries(file: Path) -> list[_Entry]:
    suffix = file.suffix.lower()
    if suffix == ".safetensors":
        return _safetensors_entries(file)
    if suffix == ".npy":
        return _npy_entries(file)
    return _torch_entries(file)


# --- which files: paths, directories, sharded indexes ------------------------------------------------


def _tensor_files(path: Path) -> list[tuple[Path, frozenset[str] | None]]:
    """The tensor files ``path`` stands for, each with the names its index lists for it (or None)."""
    if not path.exists():
        raise _error(path, "no such file or directory; check the path")
    if path.is_dir():
        return _directory_files(path)
    if path.name.endswith(_INDEX_SUFFIX):
        return _index_shards(path)
    if path.suffix.lower() in SUPPORTED_SUFFIXES:
        return [(path, None)]
    raise _error(path, f"unsupported file type '{path.suffix or path.name}'; fqtool reads {_SUPPORTED_TEXT}")


def _directory_files(root: Path) -> list[tuple[Path, frozenset[str] | None]]:
    """Supported files under ``root`` in sorted order; a shard is read through its index only."""
    files = []
    # Hidden entries (.git, .cache) hold no checkpoints; symlinked folders are not followed (no cycles).
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        files += [Path(folder, n) for n in names if not n.startswith(".")]
    files.sort(key=lambda p: p.relative_to(root).parts)
    indexes = {f: _index_shards(f) for f in files if f.name.endswith(_INDEX_SUFFIX)}
    shards = {os.path.realpath(shard) for listed in indexes.values() for shard, _ in listed}
    found: list[tuple[Path, frozenset[str] | None]] = []
    for f in files:
        if f in indexes:
            found += indexes[f]
        elif f.suffix.lower() in SUPPORTED_SUFFIXES and os.path.realpath(f) not in shards:
            found.append((f, None))
    if not found:
        raise _error(root, f"no tensor files in this directory (looked for {_SUPPORTED_TEXT})")
    return found


def _index_shards(index: Path) -> list[tuple[Path, frozenset[str]]]:
    """A sharded checkpoint's shards (sorted by file name), each with the tensor names it must hold."""
    weight_map = _read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise _error(index, "no 'weight_map' of tensor name -> shard file; is it a sharded checkpoint index?")
    names_by_shard: dict[str, set[str]] = {}
    for name, shard in weight_map.items():
        names_by_shard.setdefault(shard, set()).add(name)
    shards = []
    for shard in sorted(names_by_shard):
        path = index.parent / shard
        if not path.is_file():
            listed = sorted(names_by_shard[shard])[0]
            raise _error(index, f"shard '{shard}' (holding '{listed}') is missing at {path}; download it")
        if path.suffix.lower() not in SUPPORTED_SUFFIXES:
            raise _error(index, f"shard '{shard}' has an unsupported file type; fqtool reads {_SUPPORTED_TEXT}")
        shards.append((path, frozenset(names_by_shard[shard])))
    return shards


def _check_listed(file: Path, entries: list[_Entry], listed: frozenset[str] | None) -> None:
    """An index that names a tensor its shard lacks means a stale or mixed-up download."""
    missing = sorted((listed or frozenset()) - {e.name for e in entries})
    if missing:
        raise _error(file, "listed for this shard by its index but not in it; re-download the checkpoint", missing[0])


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise _error(path, f"cannot read it ({exc.strerror})") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise _error(path, f"not valid JSON ({_first_line(exc)}); re-download it") from exc
    if not isinstance(data, dict):
        raise _error(path, "not a JSON object; re-download it")
    return data


# --- safetensors: the header parsed by hand, data read with pread (no mmap of the whole file) -------

# safetensors dtype names; sub-byte types are listed only to be skipped by name.
_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "F8_E8M0": torch.float8_e8m0fnu,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U64": torch.uint64,
    "U32": torch.uint32,
    "U16": torch.uint16,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "C64": torch.complex64,
}
_SAFETENSORS_SUBBYTE = ("F4", "F6_E2M3", "F6_E3M2")
_MAX_HEADER = 100_000_000  # the safetensors library's own limit on the JSON header


def _safetensors_entries(file: Path) -> list[_Entry]:
    """Layout: 8-byte little-endian header length N, N bytes of JSON, then the data block."""
    size = _file_size(file)
    if size < 8:
        raise _error(file, f"too short to be a safetensors file ({size} bytes); re-download or re-save it")
    with _open(file) as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > size - 8:
            raise _error(file, f"header length {header_len} is larger than the file ({size} bytes); re-save it")
        if header_len > _MAX_HEADER:
            raise _error(file, f"header length {header_len} exceeds the safetensors limit; is it a safetensors file?")
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _error(file, "header is not valid JSON; the file is corrupt, re-download or re-save it") from exc
    if not isinstance(header, dict):
        raise _error(file, "header is not a JSON object; the file is corrupt, re-download or re-save it")
    data_start, data_size = 8 + header_len, size - 8 - header_len
    capture_meta = _capture_meta(header.get("__metadata__"))
    located = [
        _safetensors_entry(file, name, info, data_start, capture_meta.get(name, {}))
        for name, info in header.items()
        if name != "__metadata__"
    ]
    needed = max((end for _, end, _ in located), default=0)
    if needed > data_size:
        raise _error(
            file, f"truncated: header needs {needed} bytes of data, file has {data_size}; re-download or re-save it"
        )
    # Storage order: by data offset (the JSON key order is not the storage order).
    return [entry for _, _, entry in sorted(located, key=lambda x: (x[0], x[2].name))]


def _capture_meta(metadata: Any) -> dict[str, dict[str, Any]]:
    """Per-tensor fields of an ``fqtool.capture`` step file (module, kind, layer, iteration, ...), else {}."""
    if not isinstance(metadata, dict) or metadata.get("format") != "fqtool.capture/1":
        return {}
    try:
        fields = json.loads(metadata.get("tensors", "{}"))
    except ValueError:
        return {}
    if not isinstance(fields, dict):
        return {}
    # Only JSON-able scalars, as for seed dumps; None ("no layer index") is left out.
    return {
        name: {k: v for k, v in f.items() if isinstance(v, (str, int, float, bool))}
        for name, f in fields.items()
        if isinstance(f, dict)
    }


def _safetensors_entry(
    file: Path, name: str, info: Any, data_start: int, meta: dict[str, Any]
) -> tuple[int, int, _Entry]:
    """(begin, end, entry) of one header entry; begin/end are relative to the data block."""
    fields = info if isinstance(info, dict) else {}
    dtype_name, shape, offsets = fields.get("dtype"), fields.get("shape"), fields.get("data_offsets")
    if not (isinstance(dtype_name, str) and _is_sizes(shape) and _is_sizes(offsets) and len(offsets) == 2):
        raise _error(file, f"bad header entry {json.dumps(info)[:100]}; the file is corrupt, re-save it", name)
    begin, end = offsets
    if begin > end:
        raise _error(file, f"bad data_offsets {offsets}; the file is corrupt, re-save it", name)
    shape = tuple(shape)
    if dtype_name in _SAFETENSORS_SUBBYTE:
        return begin, end, _Entry(name, shape, None, None, skip=f"{dtype_name}: packed sub-byte format, not supported")
    dtype = _SAFETENSORS_DTYPES.get(dtype_name)
    if dtype is None:
        known = ", ".join(_SAFETENSORS_DTYPES)
        return begin, end, _Entry(name, shape, None, None, error=f"unknown dtype '{dtype_name}' (fqtool knows {known})")
    expected = math.prod(shape) * dtype.itemsize
    if end - begin != expected:
        raise _error(
            file,
            f"shape {list(shape)} of {dtype_name} needs {expected} bytes but data_offsets span {end - begin}; "
            "the file is corrupt, re-save it",
            name,
        )
    reader = partial(_read_bytes_as, str(file), data_start + begin, dtype, shape)
    entry = _Entry(name, shape, dtype, reader, meta, skip=_skip_reason(dtype), offset=data_start + begin)
    return begin, end, entry


def _read_bytes_as(file: str, offset: int, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    """Read one tensor's bytes straight into a fresh buffer: about one tensor of memory, no file mapping."""
    buf = torch.empty(math.prod(shape) * dtype.itemsize, dtype=torch.uint8)
    view = memoryview(buf.numpy())
    filled = 0
    with _open(file) as f:
        # One read(2) returns at most ~2 GiB on Linux: loop until the buffer is full.
        while filled < len(view):
            n = os.preadv(f.fileno(), [view[filled:]], offset + filled)
            if n == 0:
                raise _error(file, "the file got shorter since it was scanned; run again")
            filled += n
    return buf.view(dtype).reshape(shape)


def _is_sizes(value: Any) -> bool:
    """A JSON list of non-negative ints (bool is an int in Python: exclude it)."""
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)


# --- .pt / .pth / .bin: torch.load(weights_only=True, mmap=True) ----------------------------------

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since torch 1.6; only it can be mmapped


def _torch_entries(file: Path) -> list[_Entry]:
    payload = _torch_load(file)
    return [_torch_entry(file, *found) for found in _find_tensors(payload, file.stem)]


def _torch_entry(file: Path, keys: tuple, name: str, tensor: torch.Tensor, meta: dict) -> _Entry:
    reader = partial(_load_torch_tensor, str(file), keys)
    if tensor.layout != torch.strided:
        return _Entry(name, tuple(tensor.shape), None, None, skip=f"{tensor.layout}: only dense tensors are analysed")
    return _Entry(name, tuple(tensor.shape), tensor.dtype, reader, meta, skip=_skip_reason(tensor.dtype))


def _find_tensors(obj: Any, stem: str) -> list[tuple[tuple, str, torch.Tensor, dict]]:
    """(key path, name, tensor, meta) of each tensor in a torch.load payload.

    One-tensor payloads (the seed's three dump shapes, section 0.1) are named by the file stem;
    a state dict, however nested, by its dotted key paths. Other leaves are ignored.
    """
    if isinstance(obj, torch.Tensor):
        return [((), stem, obj, _dump_meta(stem))]
    if _is_seed_dump(obj):
        return [(("tensor",), stem, obj["tensor"], _dump_meta(stem, obj.get("metadata")))]
    if isinstance(obj, (list, tuple)):
        # The seed's readers use the first element of a list payload.
        return [((0, *keys), name, t, meta) for keys, name, t, meta in _find_tensors(obj[0], stem)] if obj else []
    if isinstance(obj, Mapping):
        return [(keys, ".".join(map(str, keys)), t, {}) for keys, t in _state_dict_tensors(obj, ())]
    return []


def _is_seed_dump(obj: Any) -> bool:
    """The saver's payload: {"tensor": T, "tensor_info": {...}, "metadata": {...}}."""
    return (
        isinstance(obj, Mapping)
        and isinstance(obj.get("tensor"), torch.Tensor)
        and set(obj) <= {"tensor", "tensor_info", "metadata"}
    )


def _state_dict_tensors(obj: Any, keys: tuple) -> Iterable[tuple[tuple, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield keys, obj
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from _state_dict_tensors(value, (*keys, key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _state_dict_tensors(value, (*keys, i))


def _load_torch_tensor(file: str, keys: tuple) -> torch.Tensor:
    """Re-open the file (mmap: only this tensor's pages are read) and copy the tensor out of it."""
    obj = _torch_load(Path(file))
    try:
        for key in keys:
            obj = obj[key]
    except (KeyError, IndexError, TypeError):
        obj = None
    if not isinstance(obj, torch.Tensor):
        raise _error(file, "the file changed since it was scanned; run again")
    # A copy: the result must never alias the mapped file, nor a larger storage it is a view of.
    return obj.detach().clone(memory_format=torch.contiguous_format)


def _torch_load(file: Path) -> Any:
    if _file_size(file) == 0:
        raise _error(file, "empty file (0 bytes); re-save it")
    with _open(file) as f:
        mmap = f.read(4) == _ZIP_MAGIC  # legacy (pre-1.6) pickles cannot be mmapped: load them whole
    try:
        return torch.load(file, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise _error(file, f"torch.load cannot read it ({_first_line(exc)}); re-save it") from exc
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        what = f" ({found[1].rstrip('.,')})" if found else ""
        raise _error(
            file,
            f"refused: it holds pickled Python objects{what}, not just tensors, "
            "and fqtool never unpickles arbitrary objects; re-save the tensors alone, "
            "e.g. torch.save(model.state_dict(), path) or safetensors.torch.save_file",
        ) from exc
    except Exception as exc:  # noqa: BLE001 - corrupt zips fail in many ways; the user needs one line, not a traceback
        raise _error(file, f"torch.load cannot read it ({_first_line(exc)}); the file is corrupt or truncated") from exc


# --- .npy: the header through np.load(mmap_mode="r"), the data copied on load ---------------------

_NUMPY_FLOATS = {
    np.dtype(np.float16): torch.float16,
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float64): torch.float64,
}


def _npy_entries(file: Path) -> list[_Entry]:
    array = _npy_open(file)
    shape = tuple(array.shape)
    dtype = _NUMPY_FLOATS.get(array.dtype.newbyteorder("="))
    if dtype is None:
        kind = "not supported" if array.dtype.kind == "f" else "not floating point"
        return [_Entry(file.stem, shape, None, None, skip=f"{array.dtype.name}: {kind}")]
    if array.flags.c_contiguous and array.dtype.isnative:
        # The common case: the data is the tensor's bytes as they are, so read them like safetensors.
        reader = partial(_read_bytes_as, str(file), array.offset, dtype, shape)
    else:
        reader = partial(_load_npy, str(file))
    return [_Entry(file.stem, shape, dtype, reader, _dump_meta(file.stem))]


def _npy_open(file: Path | str) -> np.ndarray:
    try:
        array = np.load(file, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise _error(file, f"not a readable .npy file ({_first_line(exc)}); re-save it with numpy.save") from exc
    if not isinstance(array, np.ndarray):
        raise _error(file, "not a single array (an .npz archive?); save each array with numpy.save")
    return array


def _load_npy(file: str) -> torch.Tensor:
    """Fortran-order or big-endian arrays: a copy in C order and native byte order (torch needs both)."""
    array = _npy_open(file)
    return torch.from_numpy(np.array(array, dtype=array.dtype.newbyteorder("="), order="C", copy=True))


# --- small helpers ------------------------------------------------------------------------------


def _patterns(patterns: str | Sequence[str]) -> tuple[str, ...]:
    return (patterns,) if isinstance(patterns, str) else tuple(patterns)


def _selected(name: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    included = not include or any(fnmatch.fnmatchcase(name, p) for p in include)
    return included and not any(fnmatch.fnmatchcase(name, p) for p in exclude)


def _nothing_left(paths: list[Path], include: tuple[str, ...], exclude: tuple[str, ...], found: int) -> str:
    where = ", ".join(map(str, paths)) or "(no paths given)"
    if not found:
        return f"{where}: no tensors found; pass a checkpoint or tensor files"
    filters = " ".join([*(f"--include '{p}'" for p in include), *(f"--exclude '{p}'" for p in exclude)])
    return f"{where}: none of the {found} tensors found is left after {filters}; check the patterns"


def _open(file: Path | str):
    """Read-only: inputs are never modified."""
    try:
        return open(file, "rb", buffering=0)  # noqa: SIM115 - callers use it as a context manager
    except OSError as exc:
        raise _error(file, f"cannot open it ({exc.strerror})") from exc


def _file_size(file: Path) -> int:
    try:
        return file.stat().st_size
    except OSError as exc:
        raise _error(file, f"cannot read it ({exc.strerror})") from exc


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _first_line(exc: BaseException) -> str:
    """The gist of a library's error: its first sentence (torch appends paragraphs of advice)."""
    text = str(exc).strip()
    return text.splitlines()[0].split(". ")[0][:160] if text else type(exc).__name__


def _error(file: Path | str, problem: str, tensor: str | None = None) -> InputError:
    """One line: the file, the tensor if any, what is wrong and what to do."""
    where = f"{file}: tensor '{tensor}'" if tensor is not None else str(file)
    return InputError(f"{where}: {problem}".replace("\n", " ").replace("\r", " "))
