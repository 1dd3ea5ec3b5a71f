"""Temporal-reversible columns (T-RevSNN, Hu et al., ICML 2024): reversible in time.

T columns (time steps) of L levels. With ``c_k^0 = 0`` and ``c_{-1}^t = s^t`` (the stem output,
shared by all columns, or one input per column)::

    c_k^t = L_k^t(c_{k-1}^t, c_{k+1}^{t-1}) + alpha_k^t * c_k^{t-1}        k = 0..L-1
                                  (no c_{k+1}^{t-1} argument for k = L-1 or t = 1)

and the inverse, top level down (``c_{k+1}^{t-1}`` is rebuilt before level k needs it)::

    c_k^{t-1} = (c_k^t - L_k^t(c_{k-1}^t, c_{k+1}^{t-1})) / alpha_k^t

Memory modes (the same modules and parameters in all three):

- ``NONE``: plain autograd over the column loop (the oracle).
- ``CHECKPOINT``: ``torch.utils.checkpoint`` per column (keeps every column's input states);
  the recomputation does not update BatchNorm statistics a second time.
- ``REVERSIBLE``: a :class:`torch.autograd.Function` that keeps (``save_for_backward``) only
  the inputs ``s`` and the *last* column's states. Its backward walks the columns last to
  first; in each column it recomputes every level once with grad (top level down), rebuilds
  the previous column's states by the inverse from the recomputed level outputs, and
  back-propagates through that level. Training memory is one column's states plus one level's
  activations, independent of T. Parameter gradients are returned from ``backward`` (shared
  modules used by several columns accumulate), so hooks and DDP see them as usual.

Guarding ``1 / alpha``. Before every forward each ``|alpha|`` is kept >= ``alpha_floor``
(sign kept; in place only when a value is below the floor). Rebuilding divides the error of
column t by ``alpha``; the error of every rebuilt column is bounded during the forward from
the *measured* one-step error ``delta_k^t = max|(c_k^t - L_k^t) / alpha_k^t - c_k^{t-1}|``
(the very arithmetic of the backward, on exact states) and the chain from the nearest exact
column above (``u`` = unit roundoff)::

    E_k^{j-1} <= delta_k^j + (1 + u) E_k^j / min|alpha_k^j| + 4 u max|c_k^{j-1}|

(``E_k^{j-1} = delta_k^j`` when column j is exact: the backward repeats the measured step).

This bound assumes each level reads its state inputs through the thresholds only (a spiking
level sees ``S(c)``, so an input error that moves no value across a threshold leaves the
recomputed level output bit-identical). Policy, decided online in the forward (O(1) states):

- when a rebuilt column's bound would exceed ``tolerance * max|c_k|`` (default ``1e3 * eps``
  of the levels' compute dtype, as :func:`revsnn.reversible.check.check_invertible`), the previous
  column's states are **stored** (exact) instead of rebuilt; ``store_every=k`` also stores
  every k-th column;
- with ``thresholds`` (the model's spike thresholds, e.g. 0, 0.5, 1 for the stateless spike:
  its firing threshold and the edges of its gradient window), the few elements of a column
  lying within ``tolerance * max|c_k|`` of a threshold are stored sparsely (index, value) and
  written back after the rebuild, so a rebuilt value can never cross a threshold: spikes and
  surrogate masks of the recomputation equal the forward's.

State precision. The rounding of ``c^t = out + alpha * c^{t-1}`` is the only information the
inverse loses, and dividing by ``alpha`` doubles it per column at ``alpha = 0.5``: with float32
states a rebuilt column 10 steps back exceeds the default tolerance and would be stored.
``state_dtype=torch.float64`` keeps the states (and that recurrence) in float64 while the levels
compute in float32 (their inputs are cast, spikes are unchanged except within a float32 ulp of
a threshold, where the fix-ups apply), so T-RevSNN rebuilds up to T ~ 40 columns without
storing any, for one float64 copy of the last column's states.

:meth:`TemporalColumns.memory_summary` reports what the last forward stored and the estimated
errors; :meth:`TemporalColumns.reconstruction_error` measures the true rebuild error.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .column_function import CheckpointedColumn, ColumnFunction
from .mode import HasMemoryMode, MemoryMode
from .state import RecomputeState, frozen_norm_stats
from .weights import LentWeights, transformed_modules

__all__ = ["TemporalColumns", "ColumnReport"]

Readout = Callable[[int, torch.Tensor], torch.Tensor]
Inputs = Union[torch.Tensor, Sequence[torch.Tensor]]


@dataclass
class ColumnReport:
    """What the last REVERSIBLE training forward kept and how large its rebuild error may be."""

    stored_columns: List[int] = field(default_factory=list)  # 1-based, besides the last
    stored_reasons: List[str] = field(default_factory=list)  # "error" | "every"
    stored_bytes: int = 0
    fixup_elements: int = 0
    fixup_bytes: int = 0
    est_max_rel_error: float = 0.0  # max over rebuilt columns of E_k / max|c_k|
    one_step_rel_error: float = 0.0  # max measured delta_k / max|c_k|
    alpha_min_abs: float = float("nan")
    tolerance: float = float("nan")
    batch: int = 0


def _unique_params(*params: Iterable[nn.Parameter]) -> List[nn.Parameter]:
    """The trainable parameters of every iterable, each once, in order."""
    seen, out = set(), []
    for p in itertools.chain(*params):
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


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
            instead (``None``: ``1e3 * eps`` of the compute dtype; ``math.inf``: never store,
            no fix-ups -- pure rebuild, for measurements).
        store_every: also store every k-th column (0: never).
        thresholds: input thresholds of the levels' spike functions (see module docstring).
        readout: ``readout(t, c_top^t)`` applied to each column's top state; the engine
            returns ``[readout(t, c_{L-1}^t) for t]`` (identity by default). It may have
            parameters (e.g. per-column heads): an object with ``parameters()`` (an
            ``nn.Module``, or a view of modules its owner registers) is trained through the
            engine -- in REVERSIBLE mode it is recomputed in the backward from each rebuilt top
            state, so nothing is kept per column. The engine does not register it as a
            submodule (its owner does), so state-dict keys do not change.
        preserve_rng_state: capture and replay RNG state for the recomputation (dropout).
        state_dtype: dtype of the states ``c`` and of the alpha recurrence (``None``: the
            parameters' dtype). The levels still compute in the parameters' dtype (their
            inputs are cast to it); a wider state dtype (float64 under float32 levels) keeps
            the rounding of ``out + alpha * c`` -- the only information the inverse can lose
            -- ``2**29`` times smaller, so rebuilding stays exact enough for long T without
            storing columns. Costs one extra state width for the kept last column.
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
        readout: Optional[Readout] = None,
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
        self.readout = readout
        self.preserve_rng_state = bool(preserve_rng_state)
        if state_dtype is not None and not (
            isinstance(state_dtype, torch.dtype) and state_dtype.is_floating_point
        ):
            raise ValueError(f"state_dtype must be a floating torch.dtype, got {state_dtype!r}")
        self.state_dtype = state_dtype
        self.recompute_count = 0  # levels recomputed by reversible backward (for checks)
        self.last_report = ColumnReport()

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "readout":  # a view the owner registers, never a submodule of the engine
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

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

    def _dtypes(self) -> Tuple[torch.dtype, torch.dtype]:
        """(compute dtype of the levels = the parameters', dtype of the states)."""
        cd = self.alpha[0][0].dtype
        sd = self.state_dtype or cd
        return cd, (sd if torch.finfo(sd).bits >= torch.finfo(cd).bits else cd)

    def _level(self, t: int, k: int, lower: torch.Tensor,
               upper: Optional[torch.Tensor]) -> torch.Tensor:
        """``L_k^t(lower, upper)``: inputs cast to the compute dtype, output to the state dtype."""
        cd, sd = self._dtypes()
        out = self.levels[t][k](lower.to(cd), None if upper is None else upper.to(cd))
        return out.to(sd)

    def _tol(self, dtype: torch.dtype) -> float:
        return 1e3 * torch.finfo(dtype).eps if self.tolerance is None else float(self.tolerance)

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

    def _readout_params(self) -> Iterable[nn.Parameter]:
        """The readout's parameters, if it has any."""
        params = getattr(self.readout, "parameters", None)
        return () if params is None else params()

    def _readout(self, t: int, c_top: torch.Tensor) -> torch.Tensor:
        c_top = c_top.to(self._dtypes()[0])
        return c_top if self.readout is None else self.readout(t, c_top)

    def _level_modules(self) -> List[List[List[nn.Module]]]:
        """``[t][k]``: the weight-transform modules (WS convs) level ``L_k^t`` uses."""
        return [[transformed_modules(level) for level in col] for col in self.levels]

    def _steps(self, mods: List[List[List[nn.Module]]], reverse: bool = False):
        """The levels' transform modules in forward order (``reverse``: the backward's)."""
        order = [mods[t][k] for t in range(self.T) for k in range(self.L)]
        return order[::-1] if reverse else order

    # ------------------------------------------------------------------------- one column
    def _column(
        self,
        t: int,
        s_t: torch.Tensor,
        c_prev: Optional[Sequence[torch.Tensor]],
        states: Optional[List[RecomputeState]] = None,
        weights: Optional[LentWeights] = None,
        mods: Optional[List[List[List[nn.Module]]]] = None,
    ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """c^t from c^{t-1} (``None``: c^0 = 0). Returns (c^t, level outputs), both length L.
        With ``weights``, each level uses the transformed weights they lend (``mods[t][k]``)."""
        c: List[torch.Tensor] = []
        outs: List[torch.Tensor] = []
        for k in range(self.L):
            lower = s_t if k == 0 else c[k - 1]
            upper = c_prev[k + 1] if (c_prev is not None and k < self.L - 1) else None
            if states is not None:
                states.append(RecomputeState.capture(lower, rng=self.preserve_rng_state))
            if weights is None:
                out = self._level(t, k, lower, upper)
            else:
                with weights.lend(mods[t][k]):
                    out = self._level(t, k, lower, upper)
                weights.release(mods[t][k])
            prev = c_prev[k] if c_prev is not None else torch.zeros_like(out)
            c.append(out + self.alpha[t][k].to(out.dtype) * prev)
            outs.append(out)
        return c, outs

    # ------------------------------------------------------------------------- forward
    def forward(self, s: Inputs) -> List[torch.Tensor]:
        """Run the T columns; return ``[readout(t, c_{L-1}^t) for t in 0..T-1]``."""
        s_list = self._inputs(s)
        self.clamp_alpha_()
        # every level's parameters (shared ones once), alpha and the readout's
        params = _unique_params(self.parameters(), self._readout_params())
        grad = torch.is_grad_enabled() and (
            bool(params) or any(x.requires_grad for x in s_list)
        )
        mode = self.memory_mode
        if mode is MemoryMode.REVERSIBLE and grad:
            return list(ColumnFunction.apply(self, len(s_list), *s_list, *params))
        # Transformed weights (weight standardisation) once per forward, not once per column
        # (a checkpointed column recomputes its own, so nothing is held across columns).
        mods = self._level_modules()
        ckpt = mode is MemoryMode.CHECKPOINT and grad
        weights = None if ckpt else LentWeights(self._steps(mods))
        outputs, c_prev = [], None
        for t in range(self.T):
            s_t = s_list[t if len(s_list) > 1 else 0]
            if ckpt:
                c = list(checkpoint(CheckpointedColumn(self, t), s_t, *(c_prev or ()),
                                    use_reentrant=False,
                                    preserve_rng_state=self.preserve_rng_state))
            else:
                c, _ = self._column(t, s_t, c_prev, weights=weights, mods=mods)
            outputs.append(self._readout(t, c[-1]))
            c_prev = c
        return outputs

    @torch.no_grad()
    def _reversible_forward(self, s_list: List[torch.Tensor], weights: LentWeights,
                            mods: List[List[List[nn.Module]]]) -> Dict[str, Any]:
        """Forward without a graph, deciding online which columns to store (see docstring)."""
        T, L = self.T, self.L
        cd, sd = self._dtypes()
        u = torch.finfo(sd).eps / 2
        tol = self._tol(cd)
        fix = bool(self.thresholds) and math.isfinite(tol)
        report = ColumnReport(tolerance=tol, batch=int(s_list[0].shape[0]))
        states: List[List[RecomputeState]] = []
        stored: Dict[int, List[torch.Tensor]] = {}
        fixups: Dict[Tuple[int, int], Tuple[torch.Tensor, torch.Tensor]] = {}
        maxabs: List[List[float]] = []
        delta: List[List[float]] = [[0.0] * L]
        amin: List[List[float]] = [[1.0] * L]
        est: List[List[float]] = []  # committed error bounds E_k^j (0 for exact columns)
        anchor = -1  # last exact column (-1: c^0 = 0)
        outputs, c_prev = [], None
        for t in range(T):
            st: List[RecomputeState] = []
            c, outs = self._column(t, s_list[t if len(s_list) > 1 else 0], c_prev, st,
                                   weights, mods)
            states.append(st)
            outputs.append(self._readout(t, c[-1]))
            rows = [torch.stack([x.abs().max() for x in c])]
            if t > 0:
                rows.append(torch.stack([
                    ((c[k] - outs[k]) / self.alpha[t][k] - c_prev[k]).abs().max() for k in range(L)
                ]))
                rows.append(torch.stack([a.abs().min() for a in self.alpha[t]]))
            vals = torch.stack(rows).tolist()
            maxabs.append(vals[0])
            est.append([0.0] * L)
            if t > 0:
                delta.append(vals[1])
                amin.append(vals[2])
                report.one_step_rel_error = max(
                    report.one_step_rel_error,
                    max(d / m if m > 0 else (0.0 if d == 0 else math.inf)
                        for d, m in zip(vals[1], maxabs[t - 1])),
                )
            if t > 0 and t - 1 > anchor:
                chain = self._chain(t, anchor, maxabs, delta, amin, u)
                ok = all(
                    E <= tol * m for j in range(anchor + 1, t) for E, m in zip(chain[j], maxabs[j])
                )
                every = self.store_every > 0 and t % self.store_every == 0
                if ok and not every:
                    for j in range(anchor + 1, t):
                        est[j] = chain[j]
                else:
                    stored[t - 1] = list(c_prev)
                    report.stored_columns.append(t)  # 1-based column number of t - 1
                    report.stored_reasons.append("error" if not ok else "every")
                    est[t - 1] = [0.0] * L
                    for k in range(L):
                        fixups.pop((t - 1, k), None)
                    anchor = t - 1
            if fix and t < T - 1:
                for k in range(L):
                    idx, v = self._fixup(c[k], tol * maxabs[t][k])
                    if idx is not None:
                        fixups[(t, k)] = (idx, v)
            c_prev = c
        for j in range(T):
            for E, m in zip(est[j], maxabs[j]):
                if E > 0:
                    rel = E / m if m > 0 else math.inf
                    report.est_max_rel_error = max(report.est_max_rel_error, rel)
        report.stored_bytes = sum(x.nbytes for cs in stored.values() for x in cs)
        report.fixup_elements = sum(int(i.numel()) for i, _ in fixups.values())
        report.fixup_bytes = sum(i.nbytes + v.nbytes for i, v in fixups.values())
        report.alpha_min_abs = min(min(a) for a in amin[1:]) if T > 1 else float("nan")
        self.last_report = report
        return {"outputs": outputs, "c_last": c_prev, "states": states, "stored": stored,
                "fixups": fixups}

    @staticmethod
    def _chain(top, anchor, maxabs, delta, amin, u) -> Dict[int, List[float]]:
        """Error bounds E_k^j of columns anchor < j < top rebuilt from the exact column top."""
        chain: Dict[int, List[float]] = {}
        E = list(delta[top])  # from the exact column: the backward repeats the measured step
        for j in range(top - 1, anchor, -1):
            if j < top - 1:
                E = [
                    delta[j + 1][k] + (1 + u) * E[k] / amin[j + 1][k] + 4 * u * maxabs[j][k]
                    for k in range(len(E))
                ]
            chain[j] = E
        return chain

    def _fixup(self, c: torch.Tensor, radius: float):
        """Indices and exact values of the elements of ``c`` within ``radius`` of a threshold."""
        flat = c.reshape(-1)
        near = torch.zeros_like(flat, dtype=torch.bool)
        for v in self.thresholds:
            near |= (flat - v).abs() <= radius
        idx = near.nonzero().squeeze(1)
        if idx.numel() == 0:
            return None, None
        if flat.numel() < 2**31:
            idx = idx.to(torch.int32)
        return idx, flat[idx]

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

    @torch.no_grad()
    def reconstruction_error(self, s: Inputs) -> Dict[str, Any]:
        """Measure the pure rebuild (no stored columns, no fix-ups) against the true states.

        Runs the columns keeping every state (a measurement, not training: memory O(T)),
        rebuilds every column from the last by the inverse alone, and returns
        ``max_rel_error`` (max over columns and levels of ``max|c_hat - c| / max|c|``),
        ``per_column`` (that error per column and level, column 1 first), ``flips`` (elements
        on a different side of a threshold than the true state) and ``estimate`` (the bound
        used by the storing policy, for the same chain). BatchNorm statistics are untouched.
        """
        s_list = self._inputs(s)
        self.clamp_alpha_()
        T, L = self.T, self.L
        with frozen_norm_stats(self):
            truth, level_out, states, c_prev = [], [], [], None
            for t in range(T):
                st: List[RecomputeState] = []
                c_prev, outs = self._column(t, s_list[t if len(s_list) > 1 else 0], c_prev, st)
                truth.append(c_prev)
                level_out.append(outs)
                states.append(st)
            rebuilt: List[Optional[List[torch.Tensor]]] = [None] * T
            rebuilt[T - 1] = truth[T - 1]
            for t in range(T - 1, 0, -1):
                c_t, c_p = rebuilt[t], [None] * L
                for k in reversed(range(L)):
                    lower = s_list[t if len(s_list) > 1 else 0] if k == 0 else c_t[k - 1]
                    upper = c_p[k + 1] if k < L - 1 else None
                    with states[t][k].replay():
                        out = self._level(t, k, lower, upper)
                    c_p[k] = (c_t[k] - out) / self.alpha[t][k]
                rebuilt[t - 1] = c_p
        u = torch.finfo(self._dtypes()[1]).eps / 2
        per_col, flips, maxabs, delta, amin = [], 0, [], [[0.0] * L], [[1.0] * L]
        for t in range(T):
            errs = []
            for k in range(L):
                m = float(truth[t][k].abs().max())
                e = float((rebuilt[t][k] - truth[t][k]).abs().max())
                errs.append(e / m if m > 0 else e)
                for v in self.thresholds:
                    flips += int(((rebuilt[t][k] >= v) != (truth[t][k] >= v)).sum())
            per_col.append(errs)
            maxabs.append([float(x.abs().max()) for x in truth[t]])
            if t > 0:
                delta.append([
                    float(((truth[t][k] - level_out[t][k]) / self.alpha[t][k]
                           - truth[t - 1][k]).abs().max())
                    for k in range(L)
                ])
                amin.append([float(a.abs().min()) for a in self.alpha[t]])
        chain = self._chain(T - 1, -1, maxabs, delta, amin, u) if T > 1 else {}
        estimate = max(
            (E / m if m > 0 else 0.0 for j, Es in chain.items() for E, m in zip(Es, maxabs[j])),
            default=0.0,
        )
        return {"max_rel_error": max(max(e) for e in per_col), "per_column": per_col,
                "flips": flips, "estimate": estimate}
