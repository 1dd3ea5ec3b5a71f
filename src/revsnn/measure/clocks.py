"""Clocks and interleaved rounds: how a step's time is read and how set-ups take turns.

- :class:`Clock`: time stamps as ``(wall, cpu)`` pairs (``perf_counter`` / CUDA events and
  ``process_time``), resolved to seconds after the step.
- :func:`timed`: one call measured with every clock of :data:`CLOCKS` at once -- wall time
  (``perf_counter``, bracketed by ``torch.cuda.synchronize`` on a GPU), process CPU time
  (``process_time``, which does not count the time this process waits for a core) and, on CUDA,
  the ms between two CUDA events recorded around it on the current stream.
- :func:`interleaved`: the order in which interleaved set-ups run, round by round, so that a change
  of machine load hits all of them alike.
- :func:`primary_clock`: the clock a claim quotes on a device.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple, TypeVar, Union

import torch

__all__ = ["CLOCKS", "Clock", "interleaved", "primary_clock", "timed"]

#: The clocks a timing result holds, in ms per step: wall, process CPU, CUDA events (GPU only).
CLOCKS = ("wall_ms", "cpu_ms", "cuda_ms")

L = TypeVar("L")


def primary_clock(device: Union[str, torch.device]) -> str:
    """The clock a claim quotes: CUDA events on a GPU, process CPU time on a CPU."""
    return "cuda_ms" if torch.device(device).type == "cuda" else "cpu_ms"


class Clock:
    """Time stamps as ``(wall, cpu)`` pairs: ``perf_counter`` and ``process_time`` on CPU; CUDA
    events (resolved after a sync) and ``process_time`` on a GPU."""

    KINDS = ("wall", "cpu")

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device

    def now(self) -> Any:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev, time.process_time()
        return time.perf_counter(), time.process_time()

    def seconds(self, stamps: Sequence[Any]) -> List[Tuple[float, float]]:
        """The stamps as ``(wall, cpu)`` seconds from the first one."""
        if not stamps:
            return []
        w0, c0 = stamps[0]
        if self.cuda:
            torch.cuda.synchronize(self.device)
            return [(w0.elapsed_time(w) / 1e3, c - c0) for w, c in stamps]
        return [(w - w0, c - c0) for w, c in stamps]


def timed(fn: Callable[[], Any], device: torch.device) -> Dict[str, float]:
    """``fn()`` timed with every clock that applies on ``device``: ``{"wall_ms", "cpu_ms"}``
    and, on CUDA, ``"cuda_ms"``."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t0, c0 = time.perf_counter(), time.process_time()
    if cuda:
        start.record()
    fn()
    if cuda:
        end.record()
        torch.cuda.synchronize(device)
    out = {"wall_ms": 1e3 * (time.perf_counter() - t0),
           "cpu_ms": 1e3 * (time.process_time() - c0)}
    if cuda:
        out["cuda_ms"] = start.elapsed_time(end)
    return out


def interleaved(labels: Sequence[L], n: int, *, rotate: bool = True) -> Iterator[List[L]]:
    """``n`` rounds over ``labels``, each round running every label once: with ``rotate`` each
    round starts one label later than the round before (so no set-up always runs after the
    same one), otherwise always in the given order."""
    labels = list(labels)
    for r in range(n):
        k = r % len(labels) if rotate and labels else 0
        yield labels[k:] + labels[:k]
