"""Wall-clock time of a training step and of inference, and ratios measured in one process.

What "time" means here (DESIGN.md §5): the median of at least 5 repetitions after warm-up,
each bracketed by ``torch.cuda.synchronize`` on a GPU. Absolute CPU times depend on the machine
and its load, so claims are *ratios* between modes or models timed in the same process
(:func:`ratios`), never absolute CPU seconds.

- training step = ``zero_grad`` + forward + loss + backward + optimiser step;
- inference = forward under ``torch.no_grad()`` in eval mode; latency per image = median / B.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

__all__ = ["MIN_REPEATS", "time_fn", "time_training_step", "time_inference", "ratios"]

MIN_REPEATS = 5

Batch = Tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
OptimizerFactory = Callable[[List[nn.Parameter]], torch.optim.Optimizer]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _check_counts(warmup: int, repeats: int) -> None:
    if repeats < MIN_REPEATS:
        raise ValueError(f"repeats must be >= {MIN_REPEATS} (median of >= 5), got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")


def time_fn(
    fn: Callable[[], Any],
    device: Union[str, torch.device] = "cpu",
    warmup: int = 2,
    repeats: int = MIN_REPEATS,
) -> Dict[str, Any]:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed (synchronised on CUDA).

    Returns ``{"median_s", "min_s", "times_s", "warmup", "repeats"}``.
    """
    _check_counts(warmup, repeats)
    dev = torch.device(device)
    for _ in range(warmup):
        fn()
    _synchronize(dev)
    times: List[float] = []
    for _ in range(repeats):
        _synchronize(dev)
        t0 = time.perf_counter()
        fn()
        _synchronize(dev)
        times.append(time.perf_counter() - t0)
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "times_s": times,
        "warmup": warmup,
        "repeats": repeats,
    }


def _default_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits, target)


def _check_batch(batch: Batch, device: torch.device) -> Batch:
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise TypeError("batch must be a pair (x, target) of tensors")
    x, target = batch
    return x.to(device), target.to(device)


def _batch_size(x: torch.Tensor) -> int:
    # [B, C, H, W] images or [T, B, C, H, W] frames
    return int(x.shape[1] if x.dim() == 5 else x.shape[0])


def time_training_step(
    model: nn.Module,
    batch: Batch,
    loss_fn: Optional[LossFn] = None,
    optimizer: Optional[OptimizerFactory] = None,
    device: Union[str, torch.device] = "cpu",
    warmup: int = 2,
    repeats: int = MIN_REPEATS,
    batch_size: Optional[int] = None,
) -> Dict[str, Any]:
    """Median time of one training step (zero_grad, forward, loss, backward, optimiser step).

    ``batch = (x, target)``; ``optimizer`` is ``params -> Optimizer`` (SGD with momentum 0.9 by
    default). The model's parameters, buffers and ``.grad`` are restored afterwards, so timing
    does not train it. ``batch_size`` defaults to ``x.shape[1]`` for 5-D frames, else
    ``x.shape[0]``. Returns :func:`time_fn`'s dict plus ``ms_per_step`` and ``ms_per_image``.
    """
    dev = torch.device(device)
    loss_fn = loss_fn or _default_loss
    x, target = _check_batch(batch, dev)
    B = batch_size or _batch_size(x)
    model.to(dev)
    was_training = model.training
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    old_grads = [None if p.grad is None else p.grad.detach().clone() for p in params]
    opt = (optimizer or (lambda ps: torch.optim.SGD(ps, lr=1e-3, momentum=0.9)))(params)

    def step() -> None:
        opt.zero_grad(set_to_none=False)
        loss_fn(model(x), target).backward()
        opt.step()

    try:
        r = time_fn(step, dev, warmup, repeats)
    finally:
        with torch.no_grad():
            model.load_state_dict(state)
        for p, g in zip(params, old_grads):
            p.grad = g
        model.train(was_training)
    r["ms_per_step"] = 1e3 * r["median_s"]
    r["ms_per_image"] = r["ms_per_step"] / B
    r["batch"] = B
    return r


def time_inference(
    model: nn.Module,
    x: torch.Tensor,
    device: Union[str, torch.device] = "cpu",
    warmup: int = 2,
    repeats: int = MIN_REPEATS,
    batch_size: Optional[int] = None,
) -> Dict[str, Any]:
    """Median inference latency (eval mode, ``torch.no_grad()``); adds ``ms_per_batch`` and
    ``ms_per_image`` (median / batch size) to :func:`time_fn`'s dict."""
    dev = torch.device(device)
    x = x.to(dev)
    B = batch_size or _batch_size(x)
    model.to(dev)
    was_training = model.training
    model.eval()

    def forward() -> None:
        with torch.no_grad():
            model(x)

    try:
        r = time_fn(forward, dev, warmup, repeats)
    finally:
        model.train(was_training)
    r["ms_per_batch"] = 1e3 * r["median_s"]
    r["ms_per_image"] = r["ms_per_batch"] / B
    r["batch"] = B
    return r


def ratios(values: Mapping[str, float], baseline: str) -> Dict[str, float]:
    """``{name: value / values[baseline]}`` -- e.g. step time of each mode relative to "none".

    Only meaningful for values measured in the same process on the same device.
    """
    if baseline not in values:
        raise ValueError(f"baseline {baseline!r} is not among {sorted(values)}")
    base = values[baseline]
    if base == 0:
        raise ValueError(f"baseline {baseline!r} is zero; cannot form ratios")
    return {k: v / base for k, v in values.items()}
