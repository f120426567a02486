"""Tensors streamed to a CUDA device while the previous one is analysed.

:func:`stream_to_cuda` yields ``(source, tensor on the device)`` in the order of the sources.
Behind it one reader thread, for each tensor in turn:

1. waits until the device memory held by tensors in flight (the one being analysed, the
   ones already copied, the one being filled) leaves room for this one under ``budget``
   bytes (one tensor is always let through, however large);
2. allocates the device tensor on its own copy stream;
3. reads the tensor's bytes from the file in ``chunk``-byte pieces straight into a ring of
   pinned host buffers (``os.preadv``: the read releases the GIL, and from the page cache
   it is one memcpy), and after each piece queues an asynchronous host-to-device copy of it
   on the copy stream; a buffer is refilled only once the copy out of it has completed;
4. records an event after the last copy and hands the tensor over.

The consumer's stream waits on that event (not the host), so the kernels of tensor k run
while tensor k+1 is read and copied. Host memory is ``ring × chunk`` pinned bytes (256 MiB by
default) whatever the checkpoint's size; device memory is bounded by ``budget``.

Sources whose bytes are not stored raw in their file (torch pickles, ``.npy``) are loaded by
their own reader on the reader thread and copied through one pinned buffer of their size.
An error while reading (a file that changed since it was scanned) is raised in the
consumer, at the tensor it concerns.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator, Sequence

import torch

from .io import InputError, TensorSource

__all__ = ["stream_to_cuda", "CHUNK_BYTES", "RING"]

#: Bytes per pinned staging buffer, and how many of them rotate.
CHUNK_BYTES = 64 << 20
RING = 4
_DONE = object()


def default_budget(device: torch.device) -> int:
    """Device bytes the tensors in flight may hold: a quarter of what is free now."""
    free, _total = torch.cuda.mem_get_info(device)
    return max(free // 4, 1 << 20)


def stream_to_cuda(
    sources: Sequence[TensorSource],
    device: torch.device,
    *,
    budget: int | None = None,
    chunk: int = CHUNK_BYTES,
    ring: int = RING,
) -> Iterator[tuple[TensorSource, torch.Tensor]]:
    """Yield each source's tensor on ``device`` (CUDA), read and copied ahead of time.

    A yielded tensor is valid until the next iteration step; the consumer must not keep it
    (its memory is handed back to the pipeline's budget then)."""
    device = torch.device(device)
    budget = default_budget(device) if budget is None else budget
    stager = _Stager(list(sources), device, budget, chunk, ring)
    try:
        yield from stager
    finally:
        stager.stop()


class _Stager:
    def __init__(self, sources: list[TensorSource], device: torch.device, budget: int, chunk: int, ring: int):
        self.sources, self.device, self.budget, self.chunk = sources, device, budget, chunk
        self.copy_stream = torch.cuda.Stream(device)
        self.ring = [(torch.empty(chunk, dtype=torch.uint8, pin_memory=True), None) for _ in range(ring)]
        self.next_buf = 0
        self.ready: queue.Queue = queue.Queue()
        self.held = 0  # device bytes of tensors allocated and not yet released by the consumer
        self.cond = threading.Condition()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="fqtool-stager", daemon=True)
        self.thread.start()

    # ---------------------------------------------------------------- consumer side

    def __iter__(self) -> Iterator[tuple[TensorSource, torch.Tensor]]:
        compute = torch.cuda.current_stream(self.device)
        for _ in self.sources:
            item = self.ready.get()
            if isinstance(item, BaseException):
                raise item
            src, x, event, nbytes = item
            compute.wait_event(event)
            try:
                yield src, x
            finally:
                # Work queued on the compute stream may still read x: the allocator must not hand
                # its memory to the copy stream before that work is done.
                x.record_stream(compute)
                del x
                self._release(nbytes)

    def _release(self, nbytes: int) -> None:
        with self.cond:
            self.held -= nbytes
            self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.thread.join()

    # ---------------------------------------------------------------- reader thread

    def _run(self) -> None:
        try:
            with torch.cuda.device(self.device), torch.cuda.stream(self.copy_stream):
                for src in self.sources:
                    if not self._reserve(src.nbytes):
                        return
                    x = self._upload(src)
                    if x is None:
                        return
                    event = torch.cuda.Event()
                    event.record(self.copy_stream)
                    self.ready.put((src, x, event, src.nbytes))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            self.ready.put(e)

    def _reserve(self, nbytes: int) -> bool:
        with self.cond:
            while not self.stopping and self.held > 0 and self.held + nbytes > self.budget:
                self.cond.wait()
            if self.stopping:
                return False
            self.held += nbytes
            return True

    def _upload(self, src: TensorSource) -> torch.Tensor | None:
        if src.offset is None or src.dtype.itemsize == 0:
            host = src.load().contiguous()
            pinned = torch.empty(host.shape, dtype=host.dtype, pin_memory=True)
            pinned.copy_(host)
            x = pinned.to(self.device, non_blocking=True)
            self.copy_stream.synchronize()  # the pinned buffer is freed on return
            return x
        flat = torch.empty(src.nbytes, dtype=torch.uint8, device=self.device)
        with open(src.file, "rb") as f:
            fd = f.fileno()
            for start in range(0, src.nbytes, self.chunk):
                if self.stopping:
                    return None
                n = min(self.chunk, src.nbytes - start)
                buf = self._buffer()
                view = memoryview(buf.numpy())[:n]
                filled = 0
                while filled < n:
                    got = os.preadv(fd, [view[filled:]], src.offset + start + filled)
                    if got == 0:
                        raise InputError(f"{src.file}: tensor '{src.name}': the file got shorter since it was scanned")
                    filled += got
                flat[start : start + n].copy_(buf[:n], non_blocking=True)
                self._copied(buf)
        return flat.view(src.dtype).reshape(src.shape)

    def _buffer(self) -> torch.Tensor:
        """The next pinned buffer of the ring, once the copy out of it has completed."""
        buf, event = self.ring[self.next_buf]
        if event is not None:
            event.synchronize()
        return buf

    def _copied(self, buf: torch.Tensor) -> None:
        event = torch.cuda.Event()
        event.record(self.copy_stream)
        self.ring[self.next_buf] = (buf, event)
        self.next_buf = (self.next_buf + 1) % len(self.ring)
