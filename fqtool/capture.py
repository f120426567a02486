"""Capture a training run's tensors for ``fqtool analyze``: forward inputs, weights, outputs, backward gradients.

Use it from training code::

    from fqtool.capture import capture

    with capture(model, "captures/run1", every=100, max_bytes=2 << 30) as cap:
        for i, (x, y) in enumerate(loader):
            cap.step(i)  # once per training step, before its forward pass
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()

and then ``fqtool analyze captures/run1 -f mxfp8_e4m3 -i 'layers.3.*'``.

**What is hooked.** Every submodule (the model itself included) that is an instance of a class in
``modules`` or whose class name contains a string in ``modules`` (default: ``nn.Linear``,
``nn.MultiheadAttention`` and any class named ``*Attention*``), filtered by ``include`` /
``exclude`` globs on the module's dotted name (as in ``model.named_modules()``).

**What is captured** (``kinds``; each tensor is named ``{module}.{tensor_name}``):

============  =================================================================================
kind          tensor names
============  =================================================================================
input         ``nn.Linear`` and others: ``input`` (1st positional argument), ``input{i}`` (i-th,
              i >= 1), ``input_{kw}`` (a keyword argument whose name has no "mask");
              ``nn.MultiheadAttention``: ``query``, ``key``, ``value``
weight        the module's own parameters named ``*weight`` (``weight`` of a Linear);
              ``nn.MultiheadAttention`` also its ``out_proj.weight`` (dots become ``_``):
              ``in_proj_weight`` (or ``q/k/v_proj_weight``), ``out_proj_weight``
output        ``output`` (a tensor, or a tuple's first tensor), ``output{i}`` (its i-th);
              ``nn.MultiheadAttention``: ``output``, ``attention_weights`` (when returned)
grad_output   ``grad_`` + each output name: dLoss/d(output) as the module returned it
grad_input    ``grad_`` + each input name: dLoss/d(input) through this module only
grad_weight   ``grad_`` + each weight name: ``param.grad`` right after this backward accumulated it
============  =================================================================================

Only floating-point tensors are captured. One tensor object passed twice (self-attention's
``query is key is value``) is captured once, under its first name: ``grad_query`` is then the
gradient through all three uses. A module called several times in one step (weight sharing,
micro-batches) gets ``{module}@{n}.{tensor_name}`` for the n-th (n >= 1) capture of that name, in
the order the hooks fire; weights are saved at the first call of a step only. Gradients of weights
are captured only for modules whose forward ran under capture in the step (so ``out_proj`` of a
MultiheadAttention, whose weight the attention uses directly, is not reported twice).

**How.** Forward hooks copy inputs, weights and outputs, and put tensor hooks on the outputs
(``grad_output``; for an output that is a view of a tensor made inside the module, such as a
Linear's output on a 3-D input, the hook goes on that base tensor, because a hook on a view is lost
when the view is later modified in place). For ``grad_input`` a forward pre-hook passes the module
an alias of each input that requires grad (``x.view_as(x)``, same values, same object identity
pattern) and hooks the alias, which receives the gradient through this module only (a module that
modifies its own input in place loses it). ``register_full_backward_hook`` is not used because it
breaks in-place ops on a module's output (``nn.ReLU(inplace=True)`` after a Linear).
``grad_weight`` uses ``param.register_post_accumulate_grad_hook``. On steps that are not sampled
every hook returns at once and the model sees its own arguments. Tensors are detached and
copied to contiguous CPU memory (cast to ``dtype`` if given); the caller's tensors are never
modified, so training is bit-for-bit the same with and without capture.

**Files.** ``out_dir/step{NNNNNN}.safetensors`` per sampled step that captured anything, written
when the next ``cap.step(i)`` begins or the context exits (temp file + rename: never a partial
file). Its ``__metadata__``: ``format`` = ``fqtool.capture/1``, ``step``, ``kinds`` (JSON list) and
``tensors``: JSON {tensor name: {module, module_class, layer_type, layer, kind, tensor_name,
operation, iteration, call}}, where ``layer`` is the first integer in the module name
(``layers.3.mlp.fc1`` -> 3, else null) and the other fields use the seed dump vocabulary
(``layer_type`` linear | attention | lower-case class name, ``operation`` forward | backward,
``iteration`` = the step). ``out_dir/manifest.json`` (rewritten after each file) lists the files
with their steps, tensor counts and bytes, the configuration and the module names and classes.
``fqtool analyze`` reads the directory: rows are named ``{module}.{tensor_name}``, the file tells
the step. An ``out_dir`` that already holds a capture is refused unless ``overwrite=True``.

**Steps.** ``cap.step(i)`` sets the step (initially 0; ``cap.next_step()`` adds one). A step is
sampled if it is in ``steps`` (when given) or else a multiple of ``every``. ``max_bytes`` caps the
bytes of all step files together: when a step would exceed it, that step is dropped whole,
``warnings.warn`` says so once and capturing stops for the rest of the run. If the body of the
``with`` raises, the unfinished step is dropped (it may lack its backward pass). Capturing a step
that was already written is refused with a warning, never overwritten.

**Errors.** Bad arguments raise when the capture is created or entered. An error inside a hook or
while writing (disk full, ...) never reaches the training code: it is reported once with
``warnings.warn`` and capturing stops. All hooks are removed on exit, also on an exception. A
``Capture`` is entered once; several captures may hook one model at the same time. In
distributed training give each rank its own ``out_dir`` (e.g. ``f"captures/rank{rank}"``).

**The seed's dump API** (seed-utilities.md section 8) is kept: ``save_tensor``,
``save_linear_tensors``, ``save_attention_tensors``, ``set_save_dir``, ``set_enabled``,
``set_iteration`` with the seed's arguments and defaults. They write the seed's ``.pt`` payload
``{tensor, tensor_info, metadata}`` under the seed's name
``{YYYYmmdd_HHMMSS}_iter{NNN}_{layer_type}[_L{idx}]_{operation}_{phase}_{component}_{quant_type}_rank{RR}_{tensor_name}.pt``
in ``$TENSOR_SAVE_DIR`` (default ``./tensor_logs``), only when ``$TENSOR_SAVE_ENABLED`` is
1/true/yes/on (read at each call; ``set_save_dir`` / ``set_enabled`` override the environment).
Differences from the seed: files are written atomically; ``Saved: <name>`` goes to the
``fqtool.capture`` logger (INFO) instead of stdout; a failure is reported once with
``warnings.warn`` (the seed printed every one) and ``None`` is returned; caller metadata values
other than str/int/float/bool/None (or lists/dicts of them) are stored as ``str(value)`` so the
payload loads with ``torch.load(weights_only=True)``; ``save_tensor`` also takes ``iteration=``.
Two calls with the same fields in the same second share a name, as in the seed: the last one wins.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import operator
import os
import re
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

__all__ = [
    "DEFAULT_MODULES",
    "FORMAT",
    "KINDS",
    "MANIFEST",
    "Capture",
    "capture",
    "save_attention_tensors",
    "save_linear_tensors",
    "save_tensor",
    "set_enabled",
    "set_iteration",
    "set_save_dir",
]

logger = logging.getLogger("fqtool.capture")

#: The value of ``format`` in each step file's ``__metadata__`` and in the manifest.
FORMAT = "fqtool.capture/1"
MANIFEST = "manifest.json"
KINDS = ("input", "weight", "output", "grad_output", "grad_input", "grad_weight")
#: Classes, or substrings of class names, hooked by default.
DEFAULT_MODULES: tuple[type[nn.Module] | str, ...] = (nn.Linear, nn.MultiheadAttention, "Attention")

_STEP_FILE = re.compile(r"step\d+\.safetensors")
_MHA_INPUTS = ("query", "key", "value")
_MHA_OUTPUTS = ("output", "attention_weights")


class Capture:
    """Hooks on ``model`` while entered; one safetensors file per sampled step. See the module docstring."""

    def __init__(
        self,
        model: nn.Module,
        out_dir: str | os.PathLike,
        *,
        modules: Sequence[type[nn.Module] | str] = DEFAULT_MODULES,
        kinds: Sequence[str] = KINDS,
        every: int = 1,
        steps: Iterable[int] | None = None,
        max_bytes: int | None = None,
        include: str | Sequence[str] = (),
        exclude: str | Sequence[str] = (),
        dtype: torch.dtype | None = None,
        overwrite: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"capture: model must be a torch.nn.Module, not {type(model).__name__}")
        kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        unknown = [k for k in kinds if k not in KINDS]
        if unknown or not kinds:
            raise ValueError(f"capture: unknown kinds {unknown}; choose from {', '.join(KINDS)}")
        if isinstance(modules, (type, str)):
            modules = (modules,)
        if not modules or not all(
            isinstance(m, str) or (isinstance(m, type) and issubclass(m, nn.Module)) for m in modules
        ):
            raise ValueError("capture: modules must be nn.Module classes or class-name substrings, e.g. (nn.Linear,)")
        if operator.index(every) < 1:
            raise ValueError(f"capture: every must be >= 1, not {every}")
        if max_bytes is not None and operator.index(max_bytes) < 0:
            raise ValueError(f"capture: max_bytes must be >= 0, not {max_bytes}")
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(f"capture: dtype must be a floating torch.dtype or None, not {dtype!r}")
        self.model = model
        self.out_dir = Path(out_dir)
        self.modules = tuple(modules)
        self.kinds = kinds
        self.every = operator.index(every)
        self.steps = None if steps is None else frozenset(_step_number(s) for s in steps)
        self.max_bytes = max_bytes
        self.include = _patterns(include)
        self.exclude = _patterns(exclude)
        self.dtype = dtype
        self.overwrite = overwrite
        self._entered = False
        self._active = False
        self._stopped: dict[str, Any] | None = None  # why capturing stopped, once it has
        self._handles: list[Any] = []
        self._hooked: dict[str, str] = {}  # module name -> class name
        self._files: list[dict[str, Any]] = []
        self._written_steps: set[int] = set()
        self._bytes_written = 0
        self._warned: set[str] = set()
        self._begin_step(0)

    # --- public ----------------------------------------------------------------------------------

    @property
    def current_step(self) -> int:
        return self._step

    @property
    def bytes_written(self) -> int:
        """Bytes of the step files written so far (what ``max_bytes`` caps)."""
        return self._bytes_written

    @property
    def files(self) -> list[Path]:
        """The step files written so far, in order."""
        return [self.out_dir / f["file"] for f in self._files]

    @property
    def stopped(self) -> bool:
        """True once ``max_bytes`` was reached or an error stopped capturing."""
        return self._stopped is not None

    def step(self, step: int) -> None:
        """Begin training step ``step``: the previous step's tensors are written, sampling is decided."""
        step = _step_number(step)
        if step == self._step:
            return
        if self._active:
            self._guard(self._flush)
        self._begin_step(step)

    def next_step(self) -> int:
        """Begin the step after the current one; returns its number."""
        self.step(self._step + 1)
        return self._step

    def __enter__(self) -> Capture:
        if self._entered:
            raise RuntimeError("capture: a Capture can be entered only once; create a new one for another run")
        self._entered = True
        self._prepare_out_dir()
        selected = [(name, m) for name, m in self.model.named_modules() if self._selected(name, m)]
        if not selected:
            raise ValueError(
                f"capture: no module of {type(self.model).__name__} matches modules={self._modules_text()} "
                f"include={list(self.include)} exclude={list(self.exclude)}"
            )
        try:
            for name, module in selected:
                self._attach(name, module)
        except BaseException:
            self._remove_hooks()
            raise
        self._active = True
        self._begin_step(self._step)
        self._write_manifest_safely()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._active = False
        self._remove_hooks()
        if exc_type is None:
            self._guard(self._flush)
        else:
            self._pending.clear()  # unfinished (maybe no backward yet): dropped, never a partial step
        self._write_manifest_safely()

    # --- hooks -----------------------------------------------------------------------------------

    def _attach(self, name: str, module: nn.Module) -> None:
        self._hooked[name] = type(module).__name__
        if "grad_input" in self.kinds:
            self._handles.append(module.register_forward_pre_hook(partial(self._pre_hook, name), with_kwargs=True))
        self._handles.append(module.register_forward_hook(partial(self._forward_hook, name), with_kwargs=True))
        if "grad_weight" in self.kinds:
            for role, param in _weights(module):
                if param.requires_grad:
                    hook = partial(self._grad_weight_hook, name, module, "grad_" + role)
                    self._handles.append(param.register_post_accumulate_grad_hook(hook))

    def _pre_hook(self, name: str, module: nn.Module, args: tuple, kwargs: dict) -> tuple | None:
        """grad_input: hand the module aliases of its inputs, and hook the aliases' gradients."""
        if not self._on() or not torch.is_grad_enabled():
            return None
        try:
            aliases: dict[int, torch.Tensor] = {}  # id(original) -> alias: identity pattern kept (q is k is v)
            new_args, new_kwargs = list(args), dict(kwargs)
            for role, tensor in _inputs(module, args, kwargs):
                if not tensor.requires_grad:
                    continue
                alias = tensor.view_as(tensor)
                alias.register_hook(partial(self._grad_hook, name, module, "grad_" + role, "grad_input", None))
                aliases[id(tensor)] = alias
            if not aliases:
                return None
            for i, a in enumerate(new_args):
                if isinstance(a, torch.Tensor) and id(a) in aliases:
                    new_args[i] = aliases[id(a)]
            for k, a in new_kwargs.items():
                if isinstance(a, torch.Tensor) and id(a) in aliases:
                    new_kwargs[k] = aliases[id(a)]
            return tuple(new_args), new_kwargs
        except Exception as exc:  # noqa: BLE001 - never let capture break training
            self._fail(exc)
            return None

    def _forward_hook(self, name: str, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if not self._on():
            return
        try:
            first_call = name not in self._ran
            self._ran.add(name)
            if "input" in self.kinds:
                for role, tensor in _inputs(module, args, kwargs):
                    self._store(name, module, role, "input", tensor)
            if "weight" in self.kinds and first_call:
                for role, param in _weights(module):
                    self._store(name, module, role, "weight", param)
            outputs = _outputs(module, output)
            if "output" in self.kinds:
                for role, tensor in outputs:
                    self._store(name, module, role, "output", tensor)
            if "grad_output" in self.kinds and torch.is_grad_enabled():
                inputs = {id(a) for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)}
                inputs |= {id(a._base) for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)}
                for role, tensor in outputs:
                    if tensor.requires_grad:
                        source, to_output = _grad_source(tensor, inputs)
                        hook = partial(self._grad_hook, name, module, "grad_" + role, "grad_output", to_output)
                        source.register_hook(hook)
        except Exception as exc:  # noqa: BLE001 - never let capture break training
            self._fail(exc)

    def _grad_hook(self, name: str, module: nn.Module, role: str, kind: str, to_output, grad: torch.Tensor) -> None:
        if self._on() and grad is not None:
            self._guard(self._store, name, module, role, kind, grad if to_output is None else to_output(grad))

    def _grad_weight_hook(self, name: str, module: nn.Module, role: str, param: torch.Tensor) -> None:
        if self._on() and name in self._ran and param.grad is not None:
            self._guard(self._store, name, module, role, "grad_weight", param.grad)

    # --- buffering and writing -------------------------------------------------------------------

    def _on(self) -> bool:
        return self._active and self._sampled and self._stopped is None

    def _begin_step(self, step: int) -> None:
        self._step = step
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_meta: dict[str, dict[str, Any]] = {}
        self._pending_bytes = 0
        self._calls: dict[tuple[str, str], int] = {}
        self._ran: set[str] = set()
        self._sampled = step in self.steps if self.steps is not None else step % self.every == 0
        if self._sampled and step in self._written_steps:
            self._sampled = False
            self._warn(f"step{step}", f"fqtool.capture: step {step} was already written; it is not captured again")

    def _store(self, name: str, module: nn.Module, role: str, kind: str, tensor: torch.Tensor) -> None:
        if not tensor.is_floating_point():
            return
        n = self._calls.get((name, role), 0)
        self._calls[(name, role)] = n + 1
        call_name = name if n == 0 else f"{name}@{n}"
        key = f"{call_name}.{role}" if call_name else role
        t = tensor.detach()
        # A fresh contiguous CPU tensor (one copy, cast on the way): never a view of the caller's memory.
        copy = torch.empty(t.shape, dtype=self.dtype or t.dtype).copy_(t)
        used = self._bytes_written + self._pending_bytes + copy.nbytes
        if self.max_bytes is not None and used > self.max_bytes:
            self._over_cap()
            return
        self._pending[key] = copy
        self._pending_bytes += copy.nbytes
        self._pending_meta[key] = {
            "module": name,
            "module_class": type(module).__name__,
            "layer_type": _layer_type(module),
            "layer": _layer_index(name),
            "kind": kind,
            "tensor_name": role,
            "operation": "backward" if kind.startswith("grad_") else "forward",
            "iteration": self._step,
            "call": n,
        }

    def _flush(self) -> None:
        if not self._pending:
            return
        tensors, meta, step = self._pending, self._pending_meta, self._step
        self._pending, self._pending_meta, self._pending_bytes = {}, {}, 0
        kinds = [k for k in KINDS if any(m["kind"] == k for m in meta.values())]
        metadata = {"format": FORMAT, "step": str(step), "kinds": json.dumps(kinds), "tensors": json.dumps(meta)}
        data = safetensors.torch.save(tensors, metadata)
        if self.max_bytes is not None and self._bytes_written + len(data) > self.max_bytes:
            self._over_cap()
            return
        file = f"step{step:06d}.safetensors"
        _atomic_write(self.out_dir / file, data)
        self._bytes_written += len(data)
        self._written_steps.add(step)
        self._files.append({"step": step, "file": file, "tensors": len(tensors), "bytes": len(data)})
        self._write_manifest_safely()

    def _over_cap(self) -> None:
        self._pending.clear()
        self._pending_meta.clear()
        self._pending_bytes = 0
        self._stopped = {"step": self._step, "reason": f"max_bytes={self.max_bytes} reached"}
        self._warn(
            "max_bytes",
            f"fqtool.capture: max_bytes={self.max_bytes} would be exceeded at step {self._step}; that step is not "
            f"written and capturing stops ({self._bytes_written} bytes in {len(self._files)} files written to "
            f"{self.out_dir})",
        )

    def _manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model": type(self.model).__name__,
            "kinds": list(self.kinds),
            "every": self.every,
            "steps": None if self.steps is None else sorted(self.steps),
            "max_bytes": self.max_bytes,
            "dtype": None if self.dtype is None else str(self.dtype).removeprefix("torch."),
            "modules": self._hooked,
            "files": self._files,
            "bytes_written": self._bytes_written,
            "stopped": self._stopped,
            "running": self._active,
        }

    def _write_manifest_safely(self) -> None:
        try:
            text = json.dumps(self._manifest(), indent=1) + "\n"
            _atomic_write(self.out_dir / MANIFEST, text.encode())
        except Exception as exc:  # noqa: BLE001 - a manifest problem must not end the training run
            self._fail(exc)

    def _prepare_out_dir(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        ours = [p for p in self.out_dir.iterdir() if p.name == MANIFEST or _STEP_FILE.fullmatch(p.name)]
        if ours and not self.overwrite:
            raise FileExistsError(
                f"capture: {self.out_dir} already holds a capture ({sorted(p.name for p in ours)[0]}, ...); "
                "choose another out_dir or pass overwrite=True to replace it"
            )
        for p in ours:
            p.unlink()

    # --- errors and small helpers ----------------------------------------------------------------

    def _guard(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - never let capture break training
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        self._pending.clear()
        self._pending_meta.clear()
        self._pending_bytes = 0
        if self._stopped is None:
            self._stopped = {"step": self._step, "reason": f"{type(exc).__name__}: {exc}"}
        self._warn(
            "error",
            f"fqtool.capture: capturing stopped at step {self._step} after an error "
            f"({type(exc).__name__}: {exc}); training continues",
        )

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    def _selected(self, name: str, module: nn.Module) -> bool:
        cls = type(module)
        wanted = any(
            (isinstance(m, str) and m in cls.__name__) or (isinstance(m, type) and isinstance(module, m))
            for m in self.modules
        )
        included = not self.include or any(fnmatch.fnmatchcase(name, p) for p in self.include)
        return wanted and included and not any(fnmatch.fnmatchcase(name, p) for p in self.exclude)

    def _modules_text(self) -> str:
        return "(" + ", ".join(m if isinstance(m, str) else m.__name__ for m in self.modules) + ")"

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


#: The usual spelling: ``with capture(model, out_dir, every=100) as cap: ...``.
capture = Capture


def _inputs(module: nn.Module, args: tuple, kwargs: dict) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) of the floating inputs; a tensor object passed twice is listed once, by its first name."""
    found: list[tuple[str, Any]] = []
    mha = isinstance(module, nn.MultiheadAttention)
    for i, a in enumerate(args):
        role = (_MHA_INPUTS[i] if i < 3 else None) if mha else ("input" if i == 0 else f"input{i}")
        if role is not None:
            found.append((role, a))
    for k, a in kwargs.items():
        role = (k if k in _MHA_INPUTS else None) if mha else (None if "mask" in k.lower() else f"input_{k}")
        if role is not None:
            found.append((role, a))
    seen: set[int] = set()
    out = []
    for role, a in found:
        if isinstance(a, torch.Tensor) and a.is_floating_point() and id(a) not in seen:
            seen.add(id(a))
            out.append((role, a))
    return out


def _outputs(module: nn.Module, output: Any) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) of the floating outputs: a tensor, or the tensors directly in a tuple / list."""
    items = list(output) if isinstance(output, (tuple, list)) else [output]
    out = []
    for i, t in enumerate(items):
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            mha = isinstance(module, nn.MultiheadAttention) and i < len(_MHA_OUTPUTS)
            out.append((_MHA_OUTPUTS[i] if mha else ("output" if i == 0 else f"output{i}"), t))
    return out


def _grad_source(output: torch.Tensor, inputs: set[int]) -> tuple[torch.Tensor, Callable | None]:
    """The tensor to hook for dLoss/d(output), and how to turn its gradient into output's (None: as is).

    A hook on a view is lost when the view is later modified in place (autograd rebuilds the view's
    history from its base: ``Linear`` on a 3-D input returns a view, then ``ReLU(inplace=True)``).
    So for a view of a contiguous base made inside the module (not an input, not an input's base),
    the base is hooked and the output's elements are picked from the base's gradient by the view's
    size, strides and offset; the base's gradient is the output's when the module's output is the
    only use of its base, as for Linear and attention outputs.
    """
    base = output._base
    if base is None or base.is_leaf or not base.requires_grad or not base.is_contiguous() or id(base) in inputs:
        return output, None
    size, stride, offset = output.size(), output.stride(), output.storage_offset() - base.storage_offset()

    def to_output(grad: torch.Tensor) -> torch.Tensor:
        flat = grad.contiguous()  # memory order == the base's (contiguous) element order
        return flat.as_strided(size, stride, flat.storage_offset() + offset)

    return base, to_output


def _weights(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of the weights a module's forward uses directly ("." in the name becomes "_")."""
    # MultiheadAttention multiplies by out_proj.weight itself (out_proj's forward never runs).
    recurse = isinstance(module, nn.MultiheadAttention)
    return [
        (name.replace(".", "_"), p)
        for name, p in module.named_parameters(recurse=recurse)
        if name.endswith("weight") and p is not None
    ]


def _layer_type(module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.MultiheadAttention) or "Attention" in type(module).__name__:
        return "attention"
    return type(module).__name__.lower()


def _layer_index(name: str) -> int | None:
    """The first integer component of a dotted module name: layers.3.mlp.fc1 -> 3."""
    found = next((part for part in name.split(".") if part.isdigit()), None)
    return None if found is None else int(found)


def _step_number(step: Any) -> int:
    step = operator.index(step)
    if step < 0:
        raise ValueError(f"capture: steps are numbered from 0, not {step}")
    return step


def _patterns(patterns: str | Sequence[str]) -> tuple[str, ...]:
    return (patterns,) if isinstance(patterns, str) else tuple(patterns)


def _atomic_write(path: Path, data: bytes) -> None:
    """Temp file (hidden, so readers skip it) + fsync + rename: the name holds a whole file or none."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --- the seed's dump API (seed-utilities.md sections 0.1, 0.2 and 8) ----------------------------------

_TRUE = ("1", "true", "yes", "on")
# set_save_dir / set_enabled override the environment; None = read TENSOR_SAVE_DIR / TENSOR_SAVE_ENABLED.
_overrides: dict[str, Any] = {"save_dir": None, "enabled": None}
_iteration = 0
_save_warned = False


def set_save_dir(save_dir: str | os.PathLike) -> None:
    """Write dumps under ``save_dir`` from now on (created now, as in the seed), whatever TENSOR_SAVE_DIR says."""
    _overrides["save_dir"] = Path(save_dir)
    Path(save_dir).mkdir(parents=True, exist_ok=True)


def set_enabled(enabled: bool) -> None:
    """Turn dumping on or off, whatever TENSOR_SAVE_ENABLED says."""
    _overrides["enabled"] = bool(enabled)


def set_iteration(iteration: int) -> None:
    """The ``iter{NNN}`` of later dump names and their ``metadata["iteration"]``."""
    global _iteration
    _iteration = operator.index(iteration)


def _enabled() -> bool:
    if _overrides["enabled"] is not None:
        return _overrides["enabled"]
    return os.environ.get("TENSOR_SAVE_ENABLED", "").strip().lower() in _TRUE


def _save_dir() -> Path:
    return _overrides["save_dir"] or Path(os.environ.get("TENSOR_SAVE_DIR") or "./tensor_logs")


def _detect_rank() -> int:
    """torch.distributed's rank, else LOCAL_RANK, else RANK, else 0 (the seed's order)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    for var in ("LOCAL_RANK", "RANK"):
        try:
            return int(os.environ[var])
        except (KeyError, ValueError):
            continue
    return 0


def _dump_name(
    layer_type: str,
    operation: str,
    quant_type: str,
    tensor_name: str,
    layer_idx: int | None,
    phase: str,
    component: str,
    rank: int,
    iteration: int,
) -> str:
    """Seed-utilities.md section 0.2, HEAD generation (parsed by ``fqtool.io.parse_dump_name``)."""
    parts = [time.strftime("%Y%m%d_%H%M%S"), f"iter{iteration:03d}", layer_type]
    if layer_idx is not None:
        parts.append(f"L{layer_idx}")
    parts += [operation, phase, component, quant_type, f"rank{rank:02d}", tensor_name]
    return "_".join(parts) + ".pt"


def _tensor_info(tensor: torch.Tensor) -> dict[str, Any]:
    """Section 0.1: shape, dtype, device and min/max/mean/std in float32 (all 0 for an empty tensor)."""
    info: dict[str, Any] = {"shape": list(tensor.shape), "dtype": str(tensor.dtype), "device": str(tensor.device)}
    if tensor.numel() == 0:
        return {**info, "min": 0.0, "max": 0.0, "mean": 0.0, "std": 0.0}
    flat = tensor.detach().float().flatten()
    # The seed's std is torch's (unbiased); one element has none: 0.0 rather than NaN and a torch warning.
    std = float(flat.std()) if flat.numel() > 1 else 0.0
    return {**info, "min": float(flat.min()), "max": float(flat.max()), "mean": float(flat.mean()), "std": std}


def _plain(value: Any) -> Any:
    """Metadata that ``torch.load(weights_only=True)`` accepts: plain values kept, anything else as str."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def save_tensor(
    tensor: torch.Tensor,
    layer_type: str,
    operation: str,
    quant_type: str,
    tensor_name: str,
    layer_idx: int | None = None,
    phase: str = "unknown",
    component: str = "unknown",
    rank: int | None = None,
    metadata: dict[str, Any] | None = None,
    *,
    iteration: int | None = None,
) -> str | None:
    """Dump ``tensor`` as the seed did; the path written, or None when disabled or on failure.

    ``layer_type`` linear | attention, ``operation`` forward | backward, ``phase`` pre | post,
    ``component`` linear | FA | attention, ``quant_type`` bf16, mxfp8e4m3, ...; ``rank`` is detected
    when None; ``iteration`` defaults to the one set by ``set_iteration``.
    """
    if not _enabled():
        return None
    global _save_warned
    try:
        rank = _detect_rank() if rank is None else operator.index(rank)
        iteration = _iteration if iteration is None else operator.index(iteration)
        name = _dump_name(layer_type, operation, quant_type, tensor_name, layer_idx, phase, component, rank, iteration)
        t = tensor.detach()
        payload = {
            "tensor": torch.empty(t.shape, dtype=t.dtype).copy_(t),  # CPU, contiguous, own storage, dtype kept
            "tensor_info": _tensor_info(t),
            "metadata": {
                "layer_type": layer_type,
                "operation": operation,
                "quant_type": quant_type,
                "tensor_name": tensor_name,
                "layer_idx": layer_idx,
                "phase": phase,
                "component": component,
                "rank": rank,
                "iteration": iteration,
                "save_time": time.strftime("%Y-%m-%d %H:%M:%S"),
                **_plain(dict(metadata or {})),
            },
        }
        path = _save_dir() / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
        try:
            torch.save(payload, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        logger.info("[TensorSaver] Saved: %s", name)
        return str(path)
    except Exception as exc:  # noqa: BLE001 - a dump must never end the training run
        if not _save_warned:
            _save_warned = True
            warnings.warn(
                f"fqtool.capture.save_tensor: could not save {tensor_name!r} ({type(exc).__name__}: {exc}); "
                "training continues, later failures are logged to the 'fqtool.capture' logger only",
                RuntimeWarning,
                stacklevel=2,
            )
        else:
            logger.warning("save_tensor: could not save %r (%s: %s)", tensor_name, type(exc).__name__, exc)
        return None


def save_linear_tensors(
    input_tensor: torch.Tensor | None,
    weight: torch.Tensor | None,
    quant_type: str,
    operation: str = "forward",
    layer_idx: int | None = None,
    phase: str = "pre",
    component: str = "linear",
    rank: int | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, str | None]:
    """``save_tensor`` of a linear layer's ``input`` and ``weight`` (those not None): {name: path or None}."""
    named = {"input": input_tensor, "weight": weight}
    return {
        name: save_tensor(t, "linear", operation, quant_type, name, layer_idx, phase, component, rank, metadata)
        for name, t in named.items()
        if t is not None
    }


def save_attention_tensors(
    query: torch.Tensor | None,
    key: torch.Tensor | None,
    value: torch.Tensor | None,
    quant_type: str,
    operation: str = "forward",
    layer_idx: int | None = None,
    phase: str = "pre",
    component: str = "FA",
    rank: int | None = None,
    attention_weights: torch.Tensor | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, str | None]:
    """``save_tensor`` of ``query``, ``key``, ``value``, ``attention_weights`` (those not None)."""
    named = {"query": query, "key": key, "value": value, "attention_weights": attention_weights}
    return {
        name: save_tensor(t, "attention", operation, quant_type, name, layer_idx, phase, component, rank, metadata)
        for name, t in named.items()
        if t is not None
    }
