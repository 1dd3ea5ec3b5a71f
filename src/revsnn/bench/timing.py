"""Step time: wall clock and process CPU time of the same steps, set-ups interleaved step by step.

What "time" means here: the median of at least 5 timed steps after warm-up.
Every timed step is measured with two clocks at once -- wall time (``time.perf_counter``,
bracketed by ``torch.cuda.synchronize`` on a GPU) and process CPU time (``time.process_time``,
which does not count the time this process waits for a core, so it stays steady on a shared
CPU) -- and on CUDA also with CUDA events recorded around the step on the current stream (GPU
time of the step). The set-ups being compared (memory modes, models) take turns step by step,
so a change of machine load hits all of them alike. Absolute CPU times depend on the machine
and its load, so claims are *ratios* between set-ups timed in the same call (:func:`ratios`),
never absolute CPU seconds.

- training step = ``zero_grad`` + forward + loss + backward + optimiser step (SGD, momentum 0.9
  by default), on a copy of each model, so timing never trains the models it is given;
- inference (``train=False``) = forward under ``torch.no_grad()`` in eval mode.
"""

from __future__ import annotations

import copy
import statistics
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from ..measure import (
    CLOCKS,
    batch_of,
    default_loss,
    default_optimizer,
    interleaved,
    primary_clock,
    timed,
    training_step,
)

__all__ = ["MIN_REPEATS", "CLOCKS", "time_steps", "primary_clock", "ratios"]

MIN_REPEATS = 5

Batch = Tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[[Any, torch.Tensor], torch.Tensor]
OptimizerFactory = Callable[[List[nn.Parameter]], torch.optim.Optimizer]


class _Step:
    """One set-up's step function on its own copy of the model."""

    def __init__(self, model: nn.Module, device: torch.device, x: torch.Tensor,
                 target: torch.Tensor, loss_fn: LossFn, train: bool,
                 optimizer: Optional[OptimizerFactory]) -> None:
        self.model = copy.deepcopy(model).to(device)
        self.x, self.target, self.loss_fn, self.train = x, target, loss_fn, train
        self.model.train(train)
        self.opt = None
        if train:
            params = [p for p in self.model.parameters() if p.requires_grad]
            self.opt = (optimizer or default_optimizer)(params)

    def __call__(self) -> None:
        if self.opt is None:
            with torch.no_grad():
                self.model(self.x)
            return
        training_step(self.model, self.loss_fn, self.opt, self.x, self.target)


def time_steps(
    models: Mapping[str, nn.Module],
    batch: Batch,
    loss_fn: Optional[LossFn] = None,
    *,
    train: bool = True,
    device: Union[str, torch.device] = "cpu",
    warmup: int = 1,
    repeats: int = MIN_REPEATS,
    optimizer: Optional[OptimizerFactory] = None,
    batch_size: Optional[int] = None,
) -> Dict[str, Dict[str, Any]]:
    """Time training steps (or inference forwards) of several set-ups, interleaved.

    Every model of ``models`` (name -> module, already in the memory mode to time) is copied
    and moved to ``device``; ``batch = (x, target)`` is shared. Each copy runs ``warmup``
    untimed steps, then ``repeats`` (>= 5) rounds in which every set-up runs one step in turn.
    Each timed step records wall ms and process-CPU ms, and on CUDA the ms between two CUDA
    events recorded around it.

    Returns ``{name: result}`` with, per clock in :data:`CLOCKS` that applies, the list
    (``wall_ms``, ``cpu_ms``, ``cuda_ms``) and its median (``median_wall_ms``, ...), plus
    ``clock`` (:func:`primary_clock`), ``ms`` (median of that clock), ``ms_per_image``,
    ``batch``, ``warmup``, ``repeats`` and ``train``.
    """
    if repeats < MIN_REPEATS:
        raise ValueError(f"repeats must be >= {MIN_REPEATS} (median of >= 5), got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if not models:
        raise ValueError("models must name at least one set-up to time")
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise TypeError("batch must be a pair (x, target) of tensors")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' requested but torch.cuda.is_available() is False")
    cuda = dev.type == "cuda"
    x, target = batch[0].to(dev), batch[1].to(dev)
    B = batch_size or batch_of(x)
    steps = {name: _Step(m, dev, x, target, loss_fn or default_loss, train, optimizer)
             for name, m in models.items()}
    times: Dict[str, Dict[str, List[float]]] = {
        name: {c: [] for c in (CLOCKS if cuda else CLOCKS[:2])} for name in steps
    }
    for _ in range(warmup):
        for step in steps.values():
            step()
    for order in interleaved(list(steps), repeats, rotate=False):
        for name in order:
            for c, ms in timed(steps[name], dev).items():
                times[name][c].append(ms)
    clock = primary_clock(dev)
    out: Dict[str, Dict[str, Any]] = {}
    for name, clocks in times.items():
        r: Dict[str, Any] = dict(clocks)
        for c, values in clocks.items():
            r[f"median_{c}"] = statistics.median(values)
        r.update(clock=clock, ms=r[f"median_{clock}"], ms_per_image=r[f"median_{clock}"] / B,
                 batch=B, warmup=warmup, repeats=repeats, train=train)
        out[name] = r
    return out


def ratios(values: Mapping[str, float], baseline: str) -> Dict[str, float]:
    """``{name: value / values[baseline]}`` -- e.g. step time of each mode relative to "none".

    Only meaningful for values measured in the same call on the same device.
    """
    if baseline not in values:
        raise ValueError(f"baseline {baseline!r} is not among {sorted(values)}")
    base = values[baseline]
    if base == 0:
        raise ValueError(f"baseline {baseline!r} is zero; cannot form ratios")
    return {k: v / base for k, v in values.items()}
