"""The per-level maths of :class:`~revsnn.reversible.columns.TemporalColumns`: one object that the
engine builds and hands to its modes (plain, checkpointed columns, the REVERSIBLE autograd
Functions of :mod:`.function`) and to the diagnostics (:mod:`revsnn.reversible.check`).

Level ``(t, k)``: ``c_k^t = L_k^t(c_{k-1}^t, c_{k+1}^{t-1}) + alpha_k^t * c_k^{t-1}``
(:func:`~.recurrence.update`), inputs cast to the compute dtype (the parameters'), outputs to the
state dtype; levels run as recomputable parts (:class:`~revsnn.reversible.recompute.Part`) and
borrow transformed weights (:class:`~revsnn.reversible.weights.LentWeights`) when given.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..recompute import Part
from ..state import RecomputeState
from ..weights import LentWeights, transformed_modules
from .recurrence import update

__all__ = ["ColumnMaths"]


class ColumnMaths:
    """The levels ``L_k^t`` and ``alpha_k^t`` of T columns of L levels, and what a pass needs
    to know about them (dtypes, tolerance, thresholds, storing period, RNG replay).

    Args:
        levels, alpha: the engine's ``levels[t][k]`` modules and ``alpha[t][k]`` parameters.
        state_dtype: dtype of the states (``None``: the parameters').
        tolerance: rebuild-error bound (``None``: ``1e3 * eps`` of the compute dtype).
        store_every, thresholds, preserve_rng_state: as for the engine.
        on_replay: called on every recomputation of a level (the engine's counter).
    """

    def __init__(self, levels: nn.ModuleList, alpha: nn.ModuleList, *,
                 state_dtype: Optional[torch.dtype], tolerance: Optional[float],
                 store_every: int, thresholds: Sequence[float], preserve_rng_state: bool,
                 on_replay: Optional[Callable[[], None]] = None) -> None:
        self.levels, self.alpha = levels, alpha
        self.state_dtype, self.tolerance = state_dtype, tolerance
        self.store_every, self.thresholds = store_every, tuple(thresholds)
        self.preserve_rng_state, self.on_replay = preserve_rng_state, on_replay

    @property
    def T(self) -> int:
        return len(self.levels)

    @property
    def L(self) -> int:
        return len(self.alpha[0])

    def dtypes(self) -> Tuple[torch.dtype, torch.dtype]:
        """(compute dtype of the levels = the parameters', dtype of the states)."""
        cd = self.alpha[0][0].dtype
        sd = self.state_dtype or cd
        return cd, (sd if torch.finfo(sd).bits >= torch.finfo(cd).bits else cd)

    def tolerance_value(self) -> float:
        """``tolerance``, or its default: ``eps`` of the compute dtype with wider states (every
        value read from a rebuilt state -- alpha's gradient, a readout -- is then exact to
        rounding), ``1e3 * eps`` with states in the compute dtype (see TemporalColumns)."""
        if self.tolerance is not None:
            return float(self.tolerance)
        cd, sd = self.dtypes()
        eps = torch.finfo(cd).eps
        return eps if torch.finfo(sd).bits > torch.finfo(cd).bits else 1e3 * eps

    # ------------------------------------------------------------------------- one level
    def level(self, t: int, k: int, lower: torch.Tensor, upper: Optional[torch.Tensor],
              state_dtype: bool = True) -> torch.Tensor:
        """``L_k^t(lower, upper)``: inputs cast to the compute dtype, the output to the state
        dtype (``state_dtype=False``: left in the levels' own dtype)."""
        cd, sd = self.dtypes()
        out = self.levels[t][k](lower.to(cd), None if upper is None else upper.to(cd))
        return out.to(sd) if state_dtype else out

    def level_part(self, t: int, k: int) -> Part:
        return Part([self.levels[t][k]], self.preserve_rng_state, f"level {k} of column {t}",
                    on_replay=self.on_replay)

    def readout_input(self, c_top: torch.Tensor) -> torch.Tensor:
        """A readout reads the top state in the levels' compute dtype."""
        return c_top.to(self.dtypes()[0])

    def level_transforms(self) -> List[List[List[nn.Module]]]:
        """``[t][k]``: the weight-transform modules (e.g. WS convs) level ``L_k^t`` uses."""
        return [[transformed_modules(level) for level in col] for col in self.levels]

    def transform_steps(self, mods: List[List[List[nn.Module]]], reverse: bool = False):
        """The levels' transform modules in forward order (``reverse``: the backward's)."""
        order = [mods[t][k] for t in range(self.T) for k in range(self.L)]
        return order[::-1] if reverse else order

    def level_step(
        self,
        t: int,
        k: int,
        lower: torch.Tensor,
        upper: Optional[torch.Tensor],
        prev: Optional[torch.Tensor],
        weights: Optional[LentWeights] = None,
        mods: Optional[List[List[List[nn.Module]]]] = None,
        states: Optional[Dict[Tuple[int, int], RecomputeState]] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``c_k^t = L_k^t(lower, upper) + alpha_k^t * prev``; returns ``(c_k^t, L_k^t)``.
        With ``weights``, the level uses the transformed weights they lend (``mods[t][k]``);
        with ``states``, it runs as a recomputable part whose state is recorded at ``(t, k)``."""
        part = self.level_part(t, k)
        with weights.lend(mods[t][k]) if weights is not None else nullcontext():
            if states is not None:
                with part.run(lower) as state:
                    out = self.level(t, k, lower, upper)
                states[(t, k)] = state
            else:
                part.reset()
                out = self.level(t, k, lower, upper)
        if weights is not None:
            weights.release(mods[t][k])
        return update(out, self.alpha[t][k], prev), out

    def column(
        self,
        t: int,
        s_t: torch.Tensor,
        c_prev: Optional[Sequence[torch.Tensor]],
        weights: Optional[LentWeights] = None,
        mods: Optional[List[List[List[nn.Module]]]] = None,
        states: Optional[Dict[Tuple[int, int], RecomputeState]] = None,
    ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """c^t from c^{t-1} (``None``: c^0 = 0). Returns (c^t, level outputs), both length L."""
        c: List[torch.Tensor] = []
        outs: List[torch.Tensor] = []
        for k in range(self.L):
            lower = s_t if k == 0 else c[k - 1]
            upper = c_prev[k + 1] if (c_prev is not None and k < self.L - 1) else None
            prev = c_prev[k] if c_prev is not None else None
            c_k, out = self.level_step(t, k, lower, upper, prev, weights, mods, states)
            c.append(c_k)
            outs.append(out)
        return c, outs
