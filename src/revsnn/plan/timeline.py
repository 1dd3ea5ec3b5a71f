"""One training step cut at the parts' boundaries: live bytes, peaks and time per segment.

A :class:`Timeline` hooks every part (forward pre-hook and forward hook) and, during the step,
the gradients of the parts' inputs and outputs (tensor hooks, fired when such a gradient is
complete). At every boundary it reads the meter -- live bytes ``C`` now and the peak ``P``
since the previous boundary, then restarts the peak -- and the clock. The step is numbered in
*units*: unit 0 is what runs before the first part, units ``1..N`` are the parts in execution
order, unit ``N+1`` the rest of the forward (head, loss). Each interval between two boundaries
belongs to one unit's forward or backward::

    forward:  start -> unit 0,  pre(part k) -> unit k,  post(last part) -> unit N+1
    backward: fwd_end -> unit N+1,  grad(out of part k) -> unit k,  grad(in of part k) -> k-1
    then the optimiser step.

:func:`unit_records` turns the boundary events into, per unit ``u``: ``Cf[u]`` (live bytes when
its forward starts), ``Pf[u]`` (peak during it), ``Cb[u]``, ``Pb[u]`` (the same for its
backward) and the time spent in each; the cost model (:mod:`.cost`) is written in these terms.
Live bytes come from :class:`revsnn.measure.Meter` (the exact CPU tracker or, on CUDA, the
caching allocator's ``memory_allocated`` / ``max_memory_allocated``); time from
:class:`revsnn.measure.Clock` (``perf_counter`` or CUDA events). :func:`timed_step` runs
:func:`revsnn.measure.training_step` with the timeline's marks. The hooks hold no reference to
any tensor, so they change neither what is kept nor when it is freed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from ..measure import Clock, Meter, held_bytes, training_step

__all__ = [
    "Meter", "Clock", "Timeline", "UnitRecords", "fixed_bytes", "timed_step", "unit_records",
]


Event = Tuple[str, Optional[str], int, int, Any]  # kind, part, live bytes, peak, time stamp


class Timeline:
    """Boundary events of the parts of one model (see the module docstring).

    ``attach()`` registers the module hooks (``detach()`` removes them); between ``begin`` and
    ``end`` every boundary is recorded, the first time it is reached in the step."""

    def __init__(self, parts: Dict[str, nn.Module]) -> None:
        self.parts = parts
        self._module_handles: List[Any] = []
        self._tensor_handles: List[Any] = []
        self._active = False
        self._meter: Optional[Meter] = None
        self._clock: Optional[Clock] = None
        self.events: List[Event] = []
        self.calls: Dict[str, int] = {}
        self._fired: set = set()

    # ----------------------------------------------------------------- hooks
    def attach(self) -> Timeline:
        for name, module in self.parts.items():
            self._module_handles.append(module.register_forward_pre_hook(
                self._pre_hook(name), with_kwargs=True))
            self._module_handles.append(module.register_forward_hook(self._post_hook(name)))
        return self

    def detach(self) -> None:
        for h in self._module_handles:
            h.remove()
        self._module_handles.clear()

    def _grad_hooks(self, tensors, kind: str, name: str) -> None:
        flat, _ = tree_flatten(tensors)
        for t in flat:
            if isinstance(t, torch.Tensor) and t.requires_grad:
                self._tensor_handles.append(t.register_hook(self._grad_hook(kind, name)))

    def _grad_hook(self, kind: str, name: str):
        def hook(_grad):  # holds no tensor
            self.mark(kind, name)

        return hook

    def _pre_hook(self, name: str):
        def hook(_module, args, kwargs):
            if self._active and torch.is_grad_enabled():
                self.calls[name] = self.calls.get(name, 0) + 1
                self.mark("pre", name)
                self._grad_hooks((args, kwargs), "gin", name)

        return hook

    def _post_hook(self, name: str):
        def hook(_module, _args, output):
            if self._active and torch.is_grad_enabled():
                self.mark("post", name)
                self._grad_hooks(output, "gout", name)

        return hook

    # ----------------------------------------------------------------- recording
    def begin(self, meter: Meter, clock: Clock) -> None:
        self.events, self.calls, self._fired = [], {}, set()
        self._meter, self._clock, self._active = meter, clock, True

    def mark(self, kind: str, name: Optional[str] = None) -> None:
        if not self._active or (kind, name) in self._fired:
            return
        self._fired.add((kind, name))
        c, p = self._meter.read()
        self.events.append((kind, name, c, p, self._clock.now()))

    def end(self) -> List[Event]:
        """Stop recording; the events with time stamps resolved to seconds."""
        self._active = False
        for h in self._tensor_handles:
            h.remove()
        self._tensor_handles.clear()
        secs = self._clock.seconds([e[4] for e in self.events])
        return [(k, n, c, p, s) for (k, n, c, p, _), s in zip(self.events, secs)]


def timed_step(forward, loss_fn, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               timeline: Timeline, meter: Meter, clock: Clock) -> List[Event]:
    """One training step (:func:`revsnn.measure.training_step`, the output held to its end)
    with the timeline recording; returns the timeline's events."""
    with meter:
        timeline.begin(meter, clock)
        training_step(forward, loss_fn, opt, x, y, timeline.mark, hold_output=True)
        return timeline.end()


def fixed_bytes(dev: torch.device, events: Sequence[Event], model: nn.Module,
                opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    """Bytes held across the step: on CUDA everything allocated at its start; on CPU the
    parameters, buffers, gradients, optimiser state and the batch."""
    if dev.type == "cuda":
        return float(events[0][2])
    return float(held_bytes(model, opt, x, y))


@dataclass
class UnitRecords:
    """Per unit (0 .. N+1): live bytes at the start of its forward / backward, the peak during
    each, and the seconds spent in each; everything relative to the step's start."""

    Cf: List[float]
    Pf: List[float]
    tf: List[float]
    Cb: List[Optional[float]]
    Pb: List[Optional[float]]
    tb: List[float]
    fwd_end: float  # live bytes when the backward starts (the graph complete)
    opt_peak: float  # peak during the optimiser step
    total_s: float  # seconds from start to the optimiser step's end
    backward_order: List[int] = field(default_factory=list)  # units in backward order


def unit_records(events: Sequence[Event], order: Sequence[str], clock: str = "wall"
                 ) -> UnitRecords:
    """Cut a step's boundary events into units (see the module docstring); times from the
    ``clock`` ("wall" or "cpu") of the events' ``(wall, cpu)`` stamps."""
    k = Clock.KINDS.index(clock)
    unit = {name: i + 1 for i, name in enumerate(order)}
    N = len(order)
    n_units = N + 2
    f: Dict[int, List[float]] = {}
    b: Dict[int, List[float]] = {}
    opt = [0.0]
    fwd_end = None
    owner: Optional[Tuple[str, int]] = None
    prev_c, prev_t = 0.0, 0.0
    base = None
    back: List[int] = []
    for kind, name, c, p, stamp in events:
        t = stamp[k]
        if base is None:
            base = c
        c, p = c - base, p - base
        if owner is not None:
            phase, u = owner
            if phase == "o":
                opt[0] = max(opt[0], p)
            else:
                rec = f if phase == "f" else b
                if u not in rec:
                    rec[u] = [prev_c, p, t - prev_t]
                else:
                    rec[u][1] = max(rec[u][1], p)
                    rec[u][2] += t - prev_t
        if kind == "start":
            owner = ("f", 0)
        elif kind == "pre":
            owner = ("f", unit[name])
        elif kind == "post":
            if unit[name] == N:
                owner = ("f", N + 1)
        elif kind == "fwd_end":
            owner, fwd_end = ("b", N + 1), c
        elif kind == "gout":
            owner = ("b", unit[name])
            back.append(unit[name])
        elif kind == "gin":
            owner = ("b", unit[name] - 1)
        elif kind == "bwd_end":
            owner = ("o", 0)
        elif kind == "opt_end":
            owner = None
        prev_c, prev_t = c, t
    missing = [order[u - 1] for u in range(1, N + 1) if u not in f]
    if missing or fwd_end is None or 0 not in f:
        raise RuntimeError(
            f"the planner's timeline missed part(s) {missing or '(none)'} in the forward; every "
            "part must run once per training step"
        )
    if N + 1 not in f:  # the last part's output is the model's output
        f[N + 1] = [fwd_end, fwd_end, 0.0]
    return UnitRecords(
        Cf=[f[u][0] for u in range(n_units)], Pf=[f[u][1] for u in range(n_units)],
        tf=[f[u][2] for u in range(n_units)],
        Cb=[b[u][0] if u in b else None for u in range(n_units)],
        Pb=[b[u][1] if u in b else None for u in range(n_units)],
        tb=[b[u][2] if u in b else 0.0 for u in range(n_units)],
        fwd_end=float(fwd_end), opt_peak=float(opt[0]), total_s=float(prev_t),
        backward_order=back,
    )
