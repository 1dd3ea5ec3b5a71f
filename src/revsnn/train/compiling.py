"""``revsnn train --compile`` / ``fit(..., compile=True)``: the model compiled in place with
:func:`revsnn.models.compile.compile_model`, and the time spent compiling counted apart from
the step time.

Compilation happens lazily, in the first steps (forward and backward graphs) and the first
evaluation (inference graphs); :class:`~revsnn.models.compile.CompileClock` sums it. The
progress line and the epoch line report the step time without it, and the summary gives it as
``compile_time_s``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..models.compile import CompileClock, compile_model, compile_problem

__all__ = ["check_compile", "compile_for_training", "compile_note", "compile_seconds"]


def check_compile(device: torch.device) -> None:
    """Raise ``ValueError`` (one line, exit code 2 on the command line) when ``torch.compile``
    cannot build kernels for ``device``: what is missing and the eager fallback."""
    problem = compile_problem(device)
    if problem is not None:
        raise ValueError(
            f"--compile (compile=True) on {device.type}: {problem}; train eagerly by leaving "
            "out --compile (compile=False)"
        )


def compile_for_training(model: nn.Module) -> Optional[CompileClock]:
    """Compile ``model`` in place (every unit and its forward) and return the clock that
    counts the compile time from now on."""
    clock = CompileClock()
    compile_model(model)
    return clock


def compile_seconds(clock: Optional[CompileClock]) -> float:
    """Seconds compiled so far (0 without ``--compile``)."""
    return 0.0 if clock is None else clock.seconds


def compile_note(seconds: float) -> str:
    """`` (12.3s compiling)`` for a report line, empty when nothing was compiled."""
    return f" ({seconds:.1f}s compiling)" if seconds > 0 else ""
