"""Training memory: live-tensor allocation tracking and bytes saved for backward.

What "memory" means here: the peak bytes of live tensors during one training step
(forward + loss + backward), minus what was live before the step (parameters, buffers, the
gradients -- allocated before the measured step --, optimiser state and the batch itself).
Peaks are measured at several batch sizes and reported per *batch range* ``(B1, B2)``:

    slope  = (peak(B2) - peak(B1)) / (B2 - B1)          MiB per image
    fixed  = peak(B1) - slope * B1                       MiB, the batch-independent part

``fixed`` is the intercept at an empty batch of the line through the two peaks: the part of the
peak that does not grow with the batch (weight-sized temporaries such as a parameter's gradient
before it is accumulated into the pre-allocated ``.grad``, standardised weight copies, engine
buffers). The peak is a maximum over the step, so where its place changes with the batch, the
two ranges give different lines: a small range (2 -> 4) can show a small slope and a large
fixed part, a large range (16 -> 32) the activation-dominated slope. Both are reported; the
default ranges are :data:`DEFAULT_RANGES`.

- CPU: :class:`AllocationTracker`, a ``TorchDispatchMode`` that sees every ATen op (forward and
  backward), counts each tensor *storage* once when an op creates it and subtracts it when the
  storage is freed (a ``weakref.finalize`` on the storage object; views share one storage and
  never count twice). Allocations made inside kernels that never become tensors (scratch
  buffers) are not live tensors and are not counted.
- CUDA: ``torch.cuda.reset_peak_memory_stats`` / ``torch.cuda.max_memory_allocated`` (the
  caching allocator's own count of live tensor bytes, rounded to its 512-byte blocks).

Bytes saved for backward are counted with ``torch.autograd.graph.saved_tensors_hooks`` (this
includes ``ctx.save_for_backward`` of custom autograd Functions), deduplicated by storage.
Tensors that a Function stashes on ``ctx`` by attribute, or that ``torch.utils.checkpoint``
keeps in a closure, do not pass through the hooks and are not in that number (they are in the
peak).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = [
    "DEFAULT_RANGES",
    "MIB",
    "AllocationTracker",
    "saved_tensor_bytes",
    "tensor_bytes",
    "measure_training_step",
]

MIB = float(1 << 20)
#: The two batch ranges every memory table reports (small batch, activation-dominated batch).
DEFAULT_RANGES: Tuple[Tuple[int, int], ...] = ((2, 4), (16, 32))

Batch = Tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
OptimizerFactory = Callable[[List[nn.Parameter]], torch.optim.Optimizer]


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


def _default_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits, target)


def _line(xs: Sequence[float], ys: Sequence[float]) -> Tuple[float, float]:
    """Least-squares ``(slope, intercept)`` of y against x (exact through two points)."""
    n = len(xs)
    mx = sum(xs) / n
    my = sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den
    return slope, my - slope * mx


def _to_device(batch: Batch, device: torch.device) -> Batch:
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise TypeError("make_batch(B) must return a pair (x, target) of tensors")
    x, target = batch
    return x.to(device), target.to(device)


def _saved_bytes_of_step(
    model: nn.Module, loss_fn: LossFn, x: torch.Tensor, target: torch.Tensor
) -> int:
    """Saved-for-backward bytes of forward + loss (parameters and buffers excluded); the graph
    is then released by a backward."""
    holder: List[torch.Tensor] = []

    def forward_loss() -> torch.Tensor:
        holder.append(loss_fn(model(x), target))
        return holder[0]

    exclude = list(model.parameters()) + list(model.buffers())
    n = saved_tensor_bytes(forward_loss, exclude=exclude)
    holder.pop().backward()
    return n


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_of_step(
    model: nn.Module, loss_fn: LossFn, x: torch.Tensor, target: torch.Tensor,
    dev: torch.device,
) -> int:
    """Peak bytes above what was live before one forward + loss + backward."""
    if dev.type == "cuda":
        _synchronize(dev)
        base = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        loss = loss_fn(model(x), target)
        loss.backward()
        del loss
        _synchronize(dev)
        return torch.cuda.max_memory_allocated(dev) - base
    with AllocationTracker(dev) as tracker:
        loss = loss_fn(model(x), target)
        loss.backward()
        del loss
    return tracker.peak


def _check_ranges(
    batches: Optional[Sequence[int]], ranges: Optional[Sequence[Sequence[int]]]
) -> List[List[int]]:
    groups = [list(batches if batches is not None else (2, 4))] if ranges is None else [
        list(r) for r in ranges
    ]
    for g in groups:
        if (len(g) < 2 or len(set(g)) != len(g) or min(g) < 1
                or not all(isinstance(b, int) for b in g)):
            raise ValueError(
                f"each batch range must hold at least two distinct positive batch sizes, got {g}"
            )
    if not groups:
        raise ValueError("ranges must hold at least one batch range, e.g. ((2, 4), (16, 32))")
    return groups


def measure_training_step(
    model: nn.Module,
    make_batch: Callable[[int], Batch],
    loss_fn: Optional[LossFn] = None,
    device: Union[str, torch.device] = "cpu",
    batches: Optional[Sequence[int]] = None,
    optimizer: Optional[OptimizerFactory] = None,
    ranges: Optional[Sequence[Sequence[int]]] = None,
) -> Dict[str, Any]:
    """Peak extra live-tensor memory of one training step: per image and batch-independent.

    Procedure: build ``(x, target) = make_batch(B)`` for the smallest batch and run one warm-up
    step (it primes lazy initialisation and allocates ``.grad``; missing gradients are
    zero-filled, then all are zeroed in place, so the measured steps accumulate into
    pre-allocated ``.grad``). Then, for every distinct batch size ``B`` of the ranges, measure
    the peak of one step ``loss_fn(model(x), target).backward()`` -- forward, loss and
    backward, no optimiser step -- above what was live before it (parameters, buffers, grads,
    optimiser state, the batch). For each range ``(B1, B2)`` (or more points: least squares):
    ``slope = (peak(B2) - peak(B1)) / (B2 - B1)`` MiB per image and ``fixed = peak(B1) -
    slope * B1`` MiB, the peak's batch-independent part with gradients pre-allocated (the
    intercept at B = 0; see the module docstring).

    Args:
        model: the network, in the memory mode to measure (put on ``device`` here).
        make_batch: ``B -> (x, target)``; moved to ``device``.
        loss_fn: ``(output, target) -> scalar``; cross-entropy by default.
        device: "cpu" uses :class:`AllocationTracker`; "cuda" uses ``max_memory_allocated``.
        batches: one range (two or more distinct batch sizes); ``(2, 4)`` when neither this
            nor ``ranges`` is given.
        optimizer: optional ``params -> Optimizer``; when given, its state after the warm-up
            step is reported as ``optimizer_state_mib`` (otherwise 0).
        ranges: several ranges, e.g. :data:`DEFAULT_RANGES` ``((2, 4), (16, 32))``; overrides
            ``batches``.

    Returns a flat dict. Per range, in ``ranges`` (a list, in the order given): ``batches``,
    ``mib_per_image`` (slope), ``fixed_mib`` (intercept) and ``peak_mib`` (one per batch). At
    top level the first range's ``mib_per_image``, ``fixed_mib``, ``peak_mib`` and
    ``batches``; ``peak_mib_per_image`` (peak / B at the largest B measured);
    ``saved_mib_per_image`` and ``saved_mib``: bytes saved for backward (parameters and
    buffers excluded), measured on the first range only; ``params_mib``, ``buffers_mib``,
    ``grads_mib``, ``optimizer_state_mib``, ``device`` and ``method``. The model's parameters,
    buffers and ``.grad`` are restored afterwards.
    """
    groups = _check_ranges(batches, ranges)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' requested but torch.cuda.is_available() is False")
    loss_fn = loss_fn or _default_loss
    model.to(dev)
    was_training = model.training
    model.train()

    params = [p for p in model.parameters() if p.requires_grad]
    # Snapshot so the warm-up step leaves the model as it was.
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    old_grads = [None if p.grad is None else p.grad.detach().clone() for p in params]
    opt = optimizer(params) if optimizer is not None else None

    sizes = sorted({b for g in groups for b in g})
    peaks: Dict[int, int] = {}
    saved: Dict[int, int] = {}
    method = "cuda-max-memory-allocated" if dev.type == "cuda" else "dispatch-tracker"
    try:
        # Warm-up: allocates .grad (and optimiser state), primes lazy initialisation.
        x, target = _to_device(make_batch(sizes[0]), dev)
        loss_fn(model(x), target).backward()
        if opt is not None:
            opt.step()
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        del x, target
        for B in sizes:
            x, target = _to_device(make_batch(B), dev)
            for p in params:
                p.grad.zero_()
            if B in groups[0]:
                saved[B] = _saved_bytes_of_step(model, loss_fn, x, target)
                for p in params:
                    p.grad.zero_()
            peaks[B] = _peak_of_step(model, loss_fn, x, target, dev)
            del x, target

        params_bytes = tensor_bytes(model.parameters())
        buffers_bytes = tensor_bytes(model.buffers())
        grads_bytes = tensor_bytes(p.grad for p in params)
        opt_bytes = 0
        if opt is not None:
            opt_bytes = tensor_bytes(
                v for st in opt.state.values() for v in st.values() if isinstance(v, torch.Tensor)
            )
    finally:
        with torch.no_grad():
            model.load_state_dict(state)
        for p, g in zip(params, old_grads):
            p.grad = g
        model.train(was_training)

    per_range = []
    for g in groups:
        ys = [peaks[b] / MIB for b in g]
        slope, fixed = _line([float(b) for b in g], ys)
        per_range.append({"batches": list(g), "mib_per_image": slope, "fixed_mib": fixed,
                          "peak_mib": ys})
    first = groups[0]
    saved_slope, _ = _line([float(b) for b in first], [saved[b] / MIB for b in first])
    return {
        **{k: per_range[0][k] for k in ("batches", "mib_per_image", "fixed_mib", "peak_mib")},
        "ranges": per_range,
        "peak_mib_per_image": peaks[sizes[-1]] / MIB / sizes[-1],
        "saved_mib_per_image": saved_slope,
        "saved_mib": [saved[b] / MIB for b in first],
        "params_mib": params_bytes / MIB,
        "buffers_mib": buffers_bytes / MIB,
        "grads_mib": grads_bytes / MIB,
        "optimizer_state_mib": opt_bytes / MIB,
        "device": str(dev),
        "method": method,
    }
