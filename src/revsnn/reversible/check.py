"""Checks of reversible paths: measured reconstruction error and call counting.

``reconstruction_error(seq, x)`` runs ``y = seq(x)`` without a graph (capturing the recompute
states), rebuilds ``x_hat = seq.inverse(y)`` and returns ``max|x_hat - x| / max(max|x|, tiny)``.
``column_reconstruction_error(maths, s)`` does the same for temporal columns: every column rebuilt
from the last by the inverse alone, against the true states.
``CallCounter`` counts forward calls of modules (to prove a recomputation happened, and once).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from .columns.levels import ColumnMaths
from .columns.policy import error_chain
from .columns.recurrence import inverse_step
from .sequence import ReversibleSequence
from .state import RecomputeState

__all__ = [
    "CallCounter", "check_invertible", "column_reconstruction_error", "reconstruction_error",
]


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


@torch.no_grad()
def column_reconstruction_error(maths: ColumnMaths, s_list: List[torch.Tensor]) -> Dict[str, Any]:
    """Measure the pure rebuild of temporal columns (no stored columns, no fix-ups) against the
    true states (``TemporalColumns.reconstruction_error``, which freezes BatchNorm statistics).

    Runs the columns keeping every state (a measurement, not training: memory O(T)),
    rebuilds every column from the last by the inverse alone, and returns
    ``max_rel_error`` (max over columns and levels of ``max|c_hat - c| / max|c|``),
    ``per_column`` (that error per column and level, column 1 first), ``flips`` (elements
    on a different side of a threshold than the true state) and ``estimate`` (the bound
    used by the storing policy, for the same chain).
    """
    T, L = maths.T, maths.L
    truth, level_out, c_prev = [], [], None
    states: Dict[Tuple[int, int], RecomputeState] = {}
    for t in range(T):
        c_prev, outs = maths.column(t, s_list[t if len(s_list) > 1 else 0], c_prev,
                                   states=states)
        truth.append(c_prev)
        level_out.append(outs)
    rebuilt: List[Optional[List[torch.Tensor]]] = [None] * T
    rebuilt[T - 1] = truth[T - 1]
    for t in range(T - 1, 0, -1):
        c_t, c_p = rebuilt[t], [None] * L
        for k in reversed(range(L)):
            lower = s_list[t if len(s_list) > 1 else 0] if k == 0 else c_t[k - 1]
            upper = c_p[k + 1] if k < L - 1 else None
            with maths.level_part(t, k).replay(states[(t, k)], grad=False):
                out = maths.level(t, k, lower, upper)
            c_p[k] = inverse_step(c_t[k], out, maths.alpha[t][k])
        rebuilt[t - 1] = c_p
    u = torch.finfo(maths.dtypes()[1]).eps / 2
    per_col, flips, maxabs, delta, amin = [], 0, [], [[0.0] * L], [[1.0] * L]
    for t in range(T):
        errs = []
        for k in range(L):
            m = float(truth[t][k].abs().max())
            e = float((rebuilt[t][k] - truth[t][k]).abs().max())
            errs.append(e / m if m > 0 else e)
            for v in maths.thresholds:
                flips += int(((rebuilt[t][k] >= v) != (truth[t][k] >= v)).sum())
        per_col.append(errs)
        maxabs.append([float(x.abs().max()) for x in truth[t]])
        if t > 0:
            delta.append([
                float((inverse_step(truth[t][k], level_out[t][k], maths.alpha[t][k])
                       - truth[t - 1][k]).abs().max())
                for k in range(L)
            ])
            amin.append([float(a.abs().min()) for a in maths.alpha[t]])
    chain = error_chain(T - 1, -1, maxabs, delta, amin, u) if T > 1 else {}
    estimate = max(
        (E / m if m > 0 else 0.0 for j, Es in chain.items() for E, m in zip(Es, maxabs[j])),
        default=0.0,
    )
    return {"max_rel_error": max(max(e) for e in per_col), "per_column": per_col,
            "flips": flips, "estimate": estimate}


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
