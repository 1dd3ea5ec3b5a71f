"""Temporal-reversible columns (T-RevSNN, Hu et al., ICML 2024): reversible in time.

T columns (time steps) of L levels. With ``c_k^0 = 0`` and ``c_{-1}^t = s^t`` (one input shared
by all columns, or one input per column)::

    c_k^t = L_k^t(c_{k-1}^t, c_{k+1}^{t-1}) + alpha_k^t * c_k^{t-1}        k = 0..L-1
                                  (no c_{k+1}^{t-1} argument for k = L-1 or t = 1)

and the inverse, top level down (``c_{k+1}^{t-1}`` is rebuilt before level k needs it)::

    c_k^{t-1} = (c_k^t - L_k^t(c_{k-1}^t, c_{k+1}^{t-1})) / alpha_k^t

(:mod:`.recurrence`). Each column's top state is read out by ``readout[t]`` -- an argument of
the call, e.g. one classifier head per column -- and the engine returns every readout.

Memory modes (the same modules and parameters in all three):

- ``NONE``: plain autograd over the column loop (the oracle).
- ``CHECKPOINT``: ``torch.utils.checkpoint`` per column through the recompute core (keeps every
  column's input states).
- ``REVERSIBLE``: one autograd Function per column (:mod:`.function`): only the inputs and the
  last column's states are kept (plus what the storing policy of :mod:`.policy` chooses); the
  backward rebuilds earlier columns by the inverse while recomputing every level and readout
  once. Training memory is one column's states plus one level's activations, independent of T;
  every column's parameter gradients are returned (and freed) when its backward is done.

Guarding ``1 / alpha``: before every forward each ``|alpha|`` is kept >= ``alpha_floor`` (sign
kept; in place only when a value is below the floor); the storing policy bounds the rebuild
error (:mod:`.policy`).

State precision. The rounding of ``c^t = out + alpha * c^{t-1}`` is the only information the
inverse loses, and dividing by ``alpha`` doubles it per column at ``alpha = 0.5``: with float32
states a rebuilt column 10 steps back exceeds the default tolerance and would be stored.
``state_dtype=torch.float64`` keeps the states (and that recurrence) in float64 while the levels
compute in float32 (their inputs are cast, spikes are unchanged except within a float32 ulp of
a threshold, where the fix-ups apply), so T-RevSNN rebuilds up to T ~ 28 columns at
``alpha = 0.5`` without storing any (rebuilt states within one float32 ulp), for one float64
copy of the last column's states. Under autocast the states stay
in that dtype too; the levels compute in the autocast dtype and every recomputation replays it.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..mode import HasMemoryMode, MemoryMode
from ..recompute import Part, checkpoint
from ..state import frozen_norm_stats
from ..weights import LentWeights
from .function import run_reversible
from .levels import ColumnMaths
from .policy import ColumnReport

__all__ = ["TemporalColumns"]

Inputs = Union[torch.Tensor, Sequence[torch.Tensor]]
Readout = Union[None, nn.Module, Sequence[Optional[nn.Module]]]


class TemporalColumns(HasMemoryMode, nn.Module):
    """The column recurrence over T columns and L levels with three memory modes.

    Args:
        levels: ``levels[t][k]`` is ``L_k^t``, called as ``level(lower, upper)`` with
            ``upper=None`` at the top level and in the first column. A module may be shared
            by several levels (e.g. a shared sub-block); its gradients accumulate.
        channels: ``C_k``; ``alpha_k^t`` has shape ``[1, C_k, 1, 1]`` (states are
            ``[B, C_k, H_k, W_k]``), initialised to ``alpha_init``.
        memory_mode: "none" | "checkpoint" | "reversible" (default).
        alpha_floor: ``|alpha|`` is kept >= this value (sign kept) before every forward.
        tolerance: relative bound on the rebuild error of a column before it is stored
            instead (``None``: ``eps`` of the compute dtype when the states are wider, so
            alpha's gradient and readouts, which read state values, equal plain autograd's to
            rounding; ``1e3 * eps`` with states in the compute dtype, where they carry up to
            that error; ``math.inf``: never store, no fix-ups -- pure rebuild).
        store_every: also store every k-th column (0: never).
        thresholds: input thresholds of the levels' spike functions (see :mod:`.policy`).
        preserve_rng_state: capture and replay RNG state for the recomputation (dropout).
        state_dtype: dtype of the states ``c`` and of the alpha recurrence (``None``: the
            parameters' dtype); see the module docstring.
    """

    def __init__(
        self,
        levels: Sequence[Sequence[nn.Module]],
        channels: Sequence[int],
        memory_mode: Union[str, MemoryMode] = MemoryMode.REVERSIBLE,
        alpha_init: float = 0.5,
        alpha_floor: float = 1e-3,
        tolerance: Optional[float] = None,
        store_every: int = 0,
        thresholds: Sequence[float] = (),
        preserve_rng_state: bool = True,
        state_dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        levels = [list(col) for col in levels]
        channels = [int(c) for c in channels]
        if not levels:
            raise ValueError("TemporalColumns needs at least one column (T >= 1)")
        if any(len(col) != len(channels) for col in levels):
            raise ValueError(
                f"every column needs one level per channel count ({len(channels)} levels), got "
                f"{[len(col) for col in levels]}"
            )
        if not alpha_floor > 0:
            raise ValueError(f"alpha_floor must be positive, got {alpha_floor}")
        if abs(alpha_init) < alpha_floor:
            raise ValueError(f"|alpha_init| must be >= alpha_floor={alpha_floor}, got {alpha_init}")
        if tolerance is not None and not tolerance > 0:
            raise ValueError(
                f"tolerance must be positive (or None for the default), got {tolerance}"
            )
        if int(store_every) < 0:
            raise ValueError(f"store_every must be >= 0, got {store_every}")
        self.levels = nn.ModuleList(nn.ModuleList(col) for col in levels)
        self.alpha = nn.ModuleList(
            nn.ParameterList(
                nn.Parameter(torch.full((1, c, 1, 1), float(alpha_init))) for c in channels
            )
            for _ in levels
        )
        self.channels = channels
        self.memory_mode = memory_mode
        self.alpha_floor = float(alpha_floor)
        self.tolerance = tolerance
        self.store_every = int(store_every)
        self.thresholds = tuple(float(v) for v in thresholds)
        self.preserve_rng_state = bool(preserve_rng_state)
        if state_dtype is not None and not (
            isinstance(state_dtype, torch.dtype) and state_dtype.is_floating_point
        ):
            raise ValueError(f"state_dtype must be a floating torch.dtype, got {state_dtype!r}")
        self.state_dtype = state_dtype
        self.recompute_count = 0  # levels recomputed by reversible backward (for checks)
        self.last_report = ColumnReport()

    @property
    def first_order_only(self) -> Optional[str]:
        if self.memory_mode is MemoryMode.REVERSIBLE:
            return "TemporalColumns in reversible mode"
        return None

    # ------------------------------------------------------------------------- basics
    @property
    def T(self) -> int:
        return len(self.levels)

    @property
    def L(self) -> int:
        return len(self.channels)

    def extra_repr(self) -> str:
        return (
            f"T={self.T}, L={self.L}, channels={self.channels}, "
            f"memory_mode={self.memory_mode.value}, "
            f"alpha_floor={self.alpha_floor}, store_every={self.store_every}"
        )

    def _alphas(self) -> List[nn.Parameter]:
        return [a for col in self.alpha for a in col]

    @torch.no_grad()
    def clamp_alpha_(self) -> float:
        """Keep ``|alpha| >= alpha_floor`` (sign kept, 0 -> +floor); return ``min |alpha|``.

        Parameters are written in place only when a value is below the floor, so graphs of
        earlier forwards that saved ``alpha`` stay valid in the usual case.
        """
        alphas = self._alphas()
        low = float(torch.stack([a.detach().abs().min() for a in alphas]).min())
        if low < self.alpha_floor:
            for a in alphas:
                sign = torch.where(a < 0, -1.0, 1.0).to(a.dtype)
                a.copy_(torch.where(a.abs() < self.alpha_floor, sign * self.alpha_floor, a))
            low = float(torch.stack([a.abs().min() for a in alphas]).min())
        return low

    def maths(self) -> ColumnMaths:
        """The per-level maths of this engine (built per pass; it holds no state)."""
        return ColumnMaths(self.levels, self.alpha, state_dtype=self.state_dtype,
                           tolerance=self.tolerance, store_every=self.store_every,
                           thresholds=self.thresholds,
                           preserve_rng_state=self.preserve_rng_state, on_replay=self._count)

    def _count(self) -> None:
        self.recompute_count += 1

    def _inputs(self, s: Inputs) -> List[torch.Tensor]:
        if isinstance(s, torch.Tensor):
            return [s]
        s = list(s)
        if len(s) != self.T or not all(isinstance(x, torch.Tensor) for x in s):
            raise ValueError(
                f"TemporalColumns expects one shared input tensor or a sequence of T={self.T} "
                f"per-column tensors, got {len(s)} items"
            )
        return s

    def _readouts(self, readout: Readout) -> Optional[List[Optional[nn.Module]]]:
        if readout is None:
            return None
        if isinstance(readout, nn.Module) and not isinstance(readout, nn.ModuleList):
            return [readout] * self.T
        readouts = list(readout)
        if len(readouts) != self.T or not all(
            r is None or isinstance(r, nn.Module) for r in readouts
        ):
            raise ValueError(
                f"readout must be a module or a sequence of T={self.T} entries (a module or None "
                f"per column), got {len(readouts)} items"
            )
        return readouts

    # ------------------------------------------------------------------------- forward
    def forward(self, s: Inputs, readout: Readout = None) -> List[Optional[torch.Tensor]]:
        """Run the T columns; return ``[readout[t](c_{L-1}^t) for t in 0..T-1]``.

        ``readout``: ``None`` (the top states themselves), one module for every column, or a
        sequence of T entries, each a module or ``None`` (that column is not read out: its
        entry in the result is ``None``). Readouts are recomputed like levels in REVERSIBLE
        mode, so they may hold parameters, BatchNorm and dropout. Compute only the readouts
        the loss uses: the parameters of a readout whose output receives no gradient get
        ``None`` in their tensor hooks (PyTorch's rule for custom autograd Functions), where
        plain autograd would not call them.
        """
        s_list = self._inputs(s)
        readouts = self._readouts(readout)
        self.clamp_alpha_()
        params = [p for p in self.parameters() if p.requires_grad]
        if readouts is not None:
            params += [p for r in readouts if r is not None for p in r.parameters()
                       if p.requires_grad]
        grad = torch.is_grad_enabled() and (
            bool(params) or any(x.requires_grad for x in s_list)
        )
        mode = self.memory_mode
        maths = self.maths()
        if mode is MemoryMode.REVERSIBLE and grad:
            outputs, self.last_report = run_reversible(maths, s_list, readouts)
            return outputs
        # Transformed weights (weight standardisation) once per forward, not once per column
        # (a checkpointed column recomputes its own, so nothing is held across columns).
        mods = maths.level_transforms()
        ckpt = mode is MemoryMode.CHECKPOINT and grad
        weights = None if ckpt else LentWeights(maths.transform_steps(mods))
        outputs, c_prev = [], None
        for t in range(self.T):
            s_t = s_list[t if len(s_list) > 1 else 0]
            if ckpt:
                part = Part(list(self.levels[t]), self.preserve_rng_state, f"column {t}")
                c = list(checkpoint(part, _ColumnFn(maths, t), s_t, *(c_prev or ())))
            else:
                c, _ = maths.column(t, s_t, c_prev, weights=weights, mods=mods)
            r: Optional[torch.Tensor] = maths.readout_input(c[-1])
            if readouts is not None:
                r = None
                if readouts[t] is not None:
                    Part([readouts[t]]).reset()
                    r = readouts[t](maths.readout_input(c[-1]))
            outputs.append(r)
            c_prev = c
        return outputs

    # ------------------------------------------------------------------------- reports
    def memory_summary(self) -> Dict[str, Any]:
        """What the last REVERSIBLE training forward kept, and its rebuild-error bounds."""
        r = self.last_report
        return {
            "memory_mode": self.memory_mode.value,
            "T": self.T,
            "levels": self.L,
            "kept": "inputs s + last column's states" if self.memory_mode is MemoryMode.REVERSIBLE
            else ("every column's input states" if self.memory_mode is MemoryMode.CHECKPOINT
                  else "every activation (plain autograd)"),
            "stored_columns": list(r.stored_columns),
            "stored_reasons": list(r.stored_reasons),
            "stored_bytes_per_image": r.stored_bytes / max(r.batch, 1),
            "fixup_elements": r.fixup_elements,
            "fixup_bytes_per_image": r.fixup_bytes / max(r.batch, 1),
            "est_max_rel_error": r.est_max_rel_error,
            "one_step_rel_error": r.one_step_rel_error,
            "tolerance": r.tolerance,
            "alpha_floor": self.alpha_floor,
            "alpha_min_abs": r.alpha_min_abs,
            "store_every": self.store_every,
            "recompute_count": self.recompute_count,
        }

    def reconstruction_error(self, s: Inputs) -> Dict[str, Any]:
        """The pure rebuild (no stored columns, no fix-ups) measured against the true states:
        :func:`revsnn.reversible.check.column_reconstruction_error`."""
        from ..check import column_reconstruction_error  # the diagnostics sit above the engine

        s_list = self._inputs(s)
        self.clamp_alpha_()
        with frozen_norm_stats(self):
            return column_reconstruction_error(self.maths(), s_list)


class _ColumnFn:
    """One column as a function of its input and previous states (for checkpointing)."""

    def __init__(self, maths: ColumnMaths, t: int) -> None:
        self.maths, self.t = maths, t

    def __call__(self, s_t: torch.Tensor, *c_prev: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        c, _ = self.maths.column(self.t, s_t, list(c_prev) if c_prev else None)
        return tuple(c)
