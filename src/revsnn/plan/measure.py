"""A plan's measured peak memory and step time, to check the planner's predictions.

The step is the one the profile models (:func:`revsnn.measure.training_step`):
``zero_grad`` with gradients kept allocated, forward, loss, backward, optimiser step. Peak:
everything held on the device during it -- on CPU the exact live-tensor tracker's peak plus the
parameters, buffers, gradients, optimiser state and batch held across it; on CUDA
``max_memory_allocated``. Time: the median of ``rounds`` steps per plan, the plans interleaved
(each round runs every plan once, starting one plan later than the round before), wall and
process-CPU clocks. The model's parameters,
buffers, gradients, modes and the RNG are restored afterwards.
"""

from __future__ import annotations

import contextlib
import statistics
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import torch
from torch import nn

from ..measure import (
    batch_of,
    default_loss,
    default_optimizer,
    device_of,
    interleaved,
    preserved,
)
from .parts import apply_modes
from .profiler import label_source
from .timeline import Clock, Meter, Timeline, fixed_bytes, timed_step

__all__ = ["measure_plan", "measure_plans"]


def measure_plans(
    model: nn.Module,
    plans: Mapping[str, Mapping[str, str]],
    example_input: torch.Tensor,
    target: Optional[torch.Tensor] = None,
    *,
    forward: Optional[Callable] = None,
    loss_fn: Optional[Callable] = None,
    optimizer: Optional[Callable] = None,
    rounds: int = 5,
    warmup: int = 1,
    memory: bool = True,
    watch: Optional[Callable[[], Sequence[torch.Tensor]]] = None,
    restore: bool = True,
) -> Dict[str, Dict[str, Any]]:
    """Measure several plans (``{label: modes}``) on one batch; returns per label
    ``peak_bytes``, ``fixed_bytes``, ``wall_s`` / ``cpu_s`` (medians), ``wall_times_s``.
    ``watch()``: tensors whose storage is resized outside the dispatcher during the step
    (a sharded model's gathered parameters, :func:`revsnn.plan.sharded.gathered_storage`).
    ``restore=False`` leaves the model trained by the measured steps (no copy of its
    parameters, gradients and optimiser state is kept: for models near the memory's limit)."""
    dev = device_of(model)
    x = example_input.to(dev)
    B = batch_of(x)
    forward = forward or model
    loss_fn = loss_fn or default_loss
    params = [p for p in model.parameters() if p.requires_grad]
    timeline = Timeline({})
    clock = Clock(dev)
    out: Dict[str, Dict[str, Any]] = {k: {"wall_times_s": [], "cpu_times_s": []} for k in plans}
    with preserved(model, dev) if restore else contextlib.nullcontext():
        opt = (optimizer or default_optimizer)(params)
        y = label_source(model, forward, x, target, dev)(B)

        def step(meter: Meter):
            return timed_step(forward, loss_fn, opt, x, y, timeline, meter, clock)

        step(Meter(None))  # gradients and optimiser state exist before anything is measured
        for label, modes in plans.items():
            apply_modes(model, modes)
            for _ in range(warmup):
                step(Meter(None))
            if memory:
                events = step(Meter(dev, watch() if watch is not None else ()))
                fixed = fixed_bytes(dev, events, model, opt, x, y)
                c0 = events[0][2]
                peak = max(p for _, _, _, p, _ in events)
                out[label]["fixed_bytes"] = fixed
                out[label]["peak_bytes"] = (float(peak) if dev.type == "cuda"
                                            else fixed + float(peak - c0))
        # each round starts one plan later, so no plan always runs after the same one
        for order in interleaved(list(plans), rounds):
            for label in order:
                apply_modes(model, plans[label])
                events = step(Meter(None))
                wall, cpu = events[-1][4]
                out[label]["wall_times_s"].append(wall)
                out[label]["cpu_times_s"].append(cpu)
    for r in out.values():
        r["batch_size"] = B
        if r["wall_times_s"]:
            r["wall_s"] = statistics.median(r["wall_times_s"])
            r["cpu_s"] = statistics.median(r["cpu_times_s"])
    return out


def measure_plan(model: nn.Module, modes: Mapping[str, str], example_input: torch.Tensor,
                 target: Optional[torch.Tensor] = None, **kw) -> Dict[str, Any]:
    """:func:`measure_plans` for one plan."""
    return measure_plans(model, {"plan": modes}, example_input, target, **kw)["plan"]
