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

The meters are :mod:`revsnn.measure`'s: on CPU the exact live-tensor
:class:`~revsnn.measure.AllocationTracker`, on CUDA ``torch.cuda.max_memory_allocated`` (the
caching allocator's own count of live tensor bytes, rounded to its 512-byte blocks); bytes saved
for backward come from :func:`~revsnn.measure.saved_tensor_bytes` (tensors that a Function
stashes on ``ctx`` by attribute, or that ``torch.utils.checkpoint`` keeps in a closure, are not in
that number; they are in the peak).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..measure import (
    default_loss,
    peak_of,
    preserved,
    saved_tensor_bytes,
    tensor_bytes,
    training_step,
)
from ..units import MIB

__all__ = ["DEFAULT_RANGES", "measure_training_step"]

#: The two batch ranges every memory table reports (small batch, activation-dominated batch).
DEFAULT_RANGES: Tuple[Tuple[int, int], ...] = ((2, 4), (16, 32))

Batch = Tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
OptimizerFactory = Callable[[List[nn.Parameter]], torch.optim.Optimizer]


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


def _peak_of_step(
    model: nn.Module, loss_fn: LossFn, x: torch.Tensor, target: torch.Tensor,
    dev: torch.device,
) -> int:
    """Peak bytes above what was live before one forward + loss + backward."""
    return peak_of(lambda: training_step(model, loss_fn, None, x, target), dev)


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
    loss_fn = loss_fn or default_loss
    model.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]

    sizes = sorted({b for g in groups for b in g})
    peaks: Dict[int, int] = {}
    saved: Dict[int, int] = {}
    method = "cuda-max-memory-allocated" if dev.type == "cuda" else "dispatch-tracker"
    # The warm-up step leaves the model as it was: parameters, buffers, .grad, training flag.
    with preserved(model, dev, rng=False):
        opt = optimizer(params) if optimizer is not None else None
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
