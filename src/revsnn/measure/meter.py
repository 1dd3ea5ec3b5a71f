"""Live tensor bytes: the exact CPU allocation tracker, the device meter, byte counts.

- :class:`AllocationTracker` (CPU): a ``TorchDispatchMode`` that sees every ATen op (forward and
  backward), counts each tensor *storage* once when an op creates it and subtracts it when the
  storage is freed (a ``weakref.finalize`` on the storage object; views share one storage and
  never count twice). Allocations made inside kernels that never become tensors (scratch
  buffers) are not live tensors and are not counted.
- :class:`Meter`: live bytes and the peak since the last read on one device -- the tracker on
  CPU, the caching allocator's ``memory_allocated`` / ``max_memory_allocated`` on CUDA;
  :func:`peak_of`: the peak of one call above what was live before it.
- :func:`tensor_bytes`, :func:`saved_tensor_bytes`, :func:`held_bytes`: bytes of unique
  storages, of what autograd saves for backward, of what a training step holds across it.

Bytes saved for backward are counted with ``torch.autograd.graph.saved_tensors_hooks`` (this
includes ``ctx.save_for_backward`` of custom autograd Functions), deduplicated by storage.
Tensors that a Function stashes on ``ctx`` by attribute, or that ``torch.utils.checkpoint``
keeps in a closure, do not pass through the hooks and are not in that number.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..units import MIB

__all__ = [
    "AllocationTracker", "Meter", "held_bytes", "peak_of", "saved_tensor_bytes", "tensor_bytes",
]


def _storage_key(t: torch.Tensor) -> Tuple[str, int]:
    s = t.untyped_storage()
    return (s.device.type, s.data_ptr())


def tensor_bytes(tensors: Iterable[Optional[torch.Tensor]]) -> int:
    """Bytes of the unique storages behind ``tensors`` (views of one storage count once)."""
    seen: Dict[Tuple[str, int], int] = {}
    for t in tensors:
        if t is None or not isinstance(t, torch.Tensor):
            continue
        if callable(getattr(t, "to_local", None)):  # a DTensor: this process's shard
            t = t.to_local()
        s = t.untyped_storage()
        if s.data_ptr() == 0:
            continue
        seen[(s.device.type, s.data_ptr())] = s.nbytes()
    return sum(seen.values())


class AllocationTracker(TorchDispatchMode):
    """Count bytes of live tensor storages created while the mode is active.

    ::

        with AllocationTracker() as tr:
            loss = model(x).sum(); loss.backward()
        tr.peak      # bytes, highest live total since entering (or since reset_peak())
        tr.current   # bytes still alive now (created inside, not yet freed)

    Every op's outputs are inspected after the op runs: a storage not seen before and not
    aliasing one of the op's inputs is new and adds its ``nbytes()``; a ``weakref.finalize`` on
    the storage subtracts it when the last tensor using it dies (storages are keyed by their
    Python object, which torch keeps alive exactly as long as the storage). Storages that
    existed before entering are never counted (neither their creation nor their release). A
    tracked storage that is resized in place (``resize_``, ``out=``) is re-measured.

    Args:
        device: count storages on this device type only ("cpu" by default); ``None`` counts all.
    """

    def __init__(self, device: Union[str, torch.device, None] = "cpu",
                 watch: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self.device_type: Optional[str] = None if device is None else torch.device(device).type
        self._lock = threading.Lock()
        self._live: Dict[int, Tuple[int, object]] = {}
        self.current = 0
        self.peak = 0
        self.allocations = 0
        # storages that existed before entering but are resized outside the dispatcher (FSDP's
        # gathered parameters: storage.resize_): their growth from now on is counted, polled
        # after every op
        self._watched = {id(s): (s, s.nbytes()) for s in
                         (t.untyped_storage() for t in watch)}

    # -- bookkeeping -----------------------------------------------------------------------
    def reset_peak(self) -> None:
        """Restart the peak at the current live total."""
        with self._lock:
            self.peak = self.current

    def _freed(self, key: int, token: object) -> None:
        with self._lock:
            entry = self._live.get(key)
            # An id is reused only after this storage died; the token guards a late callback.
            if entry is not None and entry[1] is token:
                del self._live[key]
                self.current -= entry[0]

    def _track(self, t: torch.Tensor, inputs: Set[int]) -> None:
        s = t.untyped_storage()
        if self.device_type is not None and s.device.type != self.device_type:
            return
        # The storage's Python object is preserved for as long as the storage lives and is
        # shared by all its views, so its id is a stable key (unlike data_ptr, which resize_
        # changes).
        key = id(s)
        nbytes = s.nbytes()
        with self._lock:
            entry = self._live.get(key)
            if entry is not None:
                if entry[0] != nbytes:  # resized in place
                    self.current += nbytes - entry[0]
                    self._live[key] = (nbytes, entry[1])
                    self.peak = max(self.peak, self.current)
                return
            if key in inputs:  # an alias of a storage that existed before (view, in-place op)
                return
            token = object()
            self._live[key] = (nbytes, token)
            self.current += nbytes
            self.allocations += 1
            self.peak = max(self.peak, self.current)
        weakref.finalize(s, self._freed, key, token)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat_in, _ = tree_flatten((args, kwargs))
        inputs = {id(a.untyped_storage()) for a in flat_in if isinstance(a, torch.Tensor)}
        out = func(*args, **kwargs)
        flat_out, _ = tree_flatten(out)
        for t in flat_out:
            if isinstance(t, torch.Tensor):
                self._track(t, inputs)
        if self._watched:
            self._poll()
        return out

    def _poll(self) -> None:
        with self._lock:
            for key, (s, before) in self._watched.items():
                now = s.nbytes()
                if now != before:
                    self.current += now - before
                    self._watched[key] = (s, now)
            self.peak = max(self.peak, self.current)

    @property
    def current_mib(self) -> float:
        return self.current / MIB

    @property
    def peak_mib(self) -> float:
        return self.peak / MIB


def saved_tensor_bytes(fn: Callable[[], Any], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the unique storages saved for backward while ``fn()`` runs.

    Uses ``torch.autograd.graph.saved_tensors_hooks``, so tensors saved by built-in ops and by
    ``ctx.save_for_backward`` of custom autograd Functions are both seen; each storage counts
    once however many ops save it or views of it. Storages of ``exclude`` (e.g. parameters and
    buffers, which are live anyway) are left out. Call it on the forward (and loss) only: the
    number is what the graph holds between forward and backward. ``fn``'s return value is kept
    alive until counting is done, so the graph cannot be freed early.
    """
    excluded = {_storage_key(t) for t in exclude if t is not None}
    seen: Dict[Tuple[str, int], int] = {}
    keep: List[torch.UntypedStorage] = []  # hold storages so an address cannot be reused

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        key = (s.device.type, s.data_ptr())
        if s.data_ptr() != 0 and key not in excluded and key not in seen:
            seen[key] = s.nbytes()
            keep.append(s)
        return t

    def unpack(t: torch.Tensor) -> torch.Tensor:
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        result = fn()
    total = sum(seen.values())
    keep.clear()
    del result
    return total


def held_bytes(model: nn.Module, opt: Optional[torch.optim.Optimizer],
               *tensors: Optional[torch.Tensor]) -> int:
    """Bytes of the unique storages a training step holds across it: the model's parameters,
    buffers and gradients, the optimiser's state and ``tensors`` (the batch)."""
    held = list(model.parameters()) + list(model.buffers())
    held += [p.grad for p in model.parameters() if p.requires_grad]
    if opt is not None:
        for st in opt.state.values():
            held += [v for v in st.values() if isinstance(v, torch.Tensor)]
    return tensor_bytes(held + list(tensors))


class Meter:
    """Live tensor bytes on one device: ``current()``, ``peak()`` since ``reset_peak()``.

    CPU: the exact live-tensor tracker (counts storages created while it is active, so the
    step's start reads 0). CUDA: ``memory_allocated`` (absolute). ``Meter(None)``: no memory
    (timing runs)."""

    def __init__(self, device: Optional[torch.device], watch: Sequence[torch.Tensor] = ()
                 ) -> None:
        self.device = device
        self.watch = watch  # tensors resized outside the dispatcher (AllocationTracker)
        self._tracker: Optional[AllocationTracker] = None

    def __enter__(self) -> Meter:
        if self.device is not None and self.device.type == "cpu":
            self._tracker = AllocationTracker(self.device, self.watch)
            self._tracker.__enter__()
        elif self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc) -> None:
        if self._tracker is not None:
            self._tracker.__exit__(*exc)
            self._tracker = None

    def read(self) -> Tuple[int, int]:
        """``(current, peak since the last read)``; restarts the peak."""
        if self._tracker is not None:
            c, p = self._tracker.current, self._tracker.peak
            self._tracker.reset_peak()
            return c, p
        if self.device is not None and self.device.type == "cuda":
            c = torch.cuda.memory_allocated(self.device)
            p = torch.cuda.max_memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return c, p
        return 0, 0


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_of(fn: Callable[[], Any], device: Union[str, torch.device]) -> int:
    """Peak live-tensor bytes during ``fn()`` above what was live before it: the exact tracker
    on CPU, ``max_memory_allocated - memory_allocated`` (synchronised) on CUDA."""
    dev = torch.device(device)
    if dev.type == "cuda":
        _synchronize(dev)
        base = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        fn()
        _synchronize(dev)
        return torch.cuda.max_memory_allocated(dev) - base
    with AllocationTracker(dev) as tracker:
        fn()
    return tracker.peak
