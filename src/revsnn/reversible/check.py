"""Checks of reversible paths: measured reconstruction error and call counting.

``reconstruction_error(seq, x)`` runs ``y = seq(x)`` without a graph (capturing the recompute
states), rebuilds ``x_hat = seq.inverse(y)`` and returns ``max|x_hat - x| / max(max|x|, tiny)``.
``CallCounter`` counts forward calls of modules (to prove a recomputation happened, and once).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Dict, Optional

import torch
from torch import nn

from .sequence import ReversibleSequence

__all__ = ["reconstruction_error", "check_invertible", "CallCounter"]


def reconstruction_error(seq: ReversibleSequence, x: torch.Tensor) -> float:
    """Relative max error of ``seq.inverse(seq(x))`` against ``x`` (same RNG replayed)."""
    y, states = seq.forward_with_states(x)
    x_hat = seq.inverse(y, states)
    scale = x.detach().abs().max().clamp_min(torch.finfo(x.dtype).tiny)
    return float((x_hat - x.detach()).abs().max() / scale)


def check_invertible(
    seq: ReversibleSequence, x: torch.Tensor, tol: Optional[float] = None
) -> float:
    """Raise ``ValueError`` when the reconstruction error exceeds ``tol``; return the error.

    The default tolerance is 1e3 machine epsilons of ``x.dtype``.
    """
    tol = 1e3 * torch.finfo(x.dtype).eps if tol is None else tol
    err = reconstruction_error(seq, x)
    if not err <= tol:
        raise ValueError(
            f"reconstruction error {err:.3e} exceeds tolerance {tol:.3e}: the sequence is not "
            "invertible at this input (a spike near threshold flipped, or a branch is "
            "non-deterministic)"
        )
    return err


class CallCounter:
    """Count forward calls (started) of named modules while active::

    with CallCounter({"F": block.f, "G": block.g}) as calls:
        loss.backward()
    calls["F"]
    """

    def __init__(self, modules: Dict[str, nn.Module]) -> None:
        self.modules = dict(modules)
        self.counts: Counter = Counter()
        self._handles: Iterable = []

    def __enter__(self) -> Counter:
        # A pre-hook counts every call that starts, including a checkpoint recomputation that
        # stops early once it has rebuilt what backward needs.
        def hook(name):
            def fn(_module, _inp):
                self.counts[name] += 1

            return fn

        self._handles = [m.register_forward_pre_hook(hook(n)) for n, m in self.modules.items()]
        return self.counts

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
