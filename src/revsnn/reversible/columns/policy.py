"""Which column states the reversible backward rebuilds and which it keeps.

Rebuilding ``c_k^{t-1} = (c_k^t - L_k^t) / alpha_k^t`` divides the error of column t by alpha.
The error of every rebuilt column is bounded during the forward from the *measured* one-step
error ``delta_k^t = max|(c_k^t - L_k^t) / alpha_k^t - c_k^{t-1}|`` (the very arithmetic of the
backward, on exact states) and the chain from the nearest exact column above (``u`` = unit
roundoff of the state dtype)::

    E_k^{j-1} <= delta_k^j + (1 + u) E_k^j / min|alpha_k^j| + 4 u max|c_k^{j-1}|

(``E_k^{j-1} = delta_k^j`` when column j is exact: the backward repeats the measured step).

The bound assumes each level reads its state inputs through the thresholds only (a spiking
level sees ``S(c)``, so an input error that moves no value across a threshold leaves the
recomputed level output bit-identical). Policy, decided online in the forward (O(1) states):

- when a rebuilt column's bound would exceed ``tolerance * max|c_k|``, the previous column's
  states are **stored** (exact) instead of rebuilt; ``store_every=k`` also stores every k-th
  column;
- with ``thresholds`` (the levels' spike thresholds), the few elements of a rebuilt column lying
  within ``tolerance * max|c_k|`` of a threshold are stored sparsely (index, value) and written
  back after the rebuild, so a rebuilt value can never cross a threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from .recurrence import inverse_step

__all__ = ["ColumnReport", "RebuildPolicy", "error_chain", "Fixup", "apply_fixup"]

Fixup = Tuple[torch.Tensor, torch.Tensor]  # (row-major indices, exact values)


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


def error_chain(top: int, anchor: int, maxabs, delta, amin, u: float) -> Dict[int, List[float]]:
    """Error bounds ``E_k^j`` of columns ``anchor < j < top`` rebuilt from the exact column
    ``top`` (see the module docstring)."""
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


def near_thresholds(c: torch.Tensor, thresholds: Sequence[float],
                    radius: float) -> Optional[Fixup]:
    """Row-major indices and exact values of the elements of ``c`` within ``radius`` of a
    threshold (``None`` when there are none)."""
    flat = c.reshape(-1)
    near = torch.zeros_like(flat, dtype=torch.bool)
    for v in thresholds:
        near |= (flat - v).abs() <= radius
    idx = near.nonzero().squeeze(1)
    if idx.numel() == 0:
        return None
    if flat.numel() < 2**31:
        idx = idx.to(torch.int32)
    return idx, flat[idx]


def apply_fixup(rebuilt: torch.Tensor, fixup: Optional[Fixup]) -> torch.Tensor:
    """Write the stored exact values back into a rebuilt state."""
    if fixup is None:
        return rebuilt
    idx, val = fixup
    # idx are row-major (logical) positions: write through a contiguous layout (a
    # channels_last state has no flat view)
    rebuilt = rebuilt.contiguous()
    rebuilt.view(-1)[idx] = val
    return rebuilt


@dataclass
class Decision:
    """What the backward of column t needs besides its output states: the exact previous
    states (``stored``) or the sparse fix-ups of each rebuilt previous state."""

    stored: Optional[List[torch.Tensor]] = None
    fixups: Dict[int, Fixup] = field(default_factory=dict)


class RebuildPolicy:
    """The storing policy of one REVERSIBLE forward, column by column (see the module
    docstring). :meth:`step` is called with every column's new states and returns the
    :class:`Decision` on the previous column's states; :attr:`report` sums it up."""

    def __init__(self, T: int, L: int, tolerance: float, thresholds: Sequence[float],
                 store_every: int, state_dtype: torch.dtype, batch: int) -> None:
        self.T, self.L = T, L
        self.u = torch.finfo(state_dtype).eps / 2
        self.tol = tolerance
        self.thresholds = tuple(thresholds)
        self.fix = bool(self.thresholds) and math.isfinite(tolerance)
        self.store_every = store_every
        self.report = ColumnReport(tolerance=tolerance, batch=batch)
        self.maxabs: List[List[float]] = []
        self.delta: List[List[float]] = [[0.0] * L]
        self.amin: List[List[float]] = [[1.0] * L]
        self.est: List[List[float]] = []  # committed error bounds E_k^j (0 for exact columns)
        self.anchor = -1  # last exact column (-1: c^0 = 0)

    def step(self, t: int, c: Sequence[torch.Tensor], outs: Sequence[torch.Tensor],
             c_prev: Optional[Sequence[torch.Tensor]],
             alpha: Sequence[torch.Tensor]) -> Decision:
        """Column t gave states ``c`` from level outputs ``outs`` and ``c_prev``."""
        L, r = self.L, self.report
        rows = [torch.stack([x.abs().max() for x in c])]
        if t > 0:
            rows.append(torch.stack([
                (inverse_step(c[k], outs[k], alpha[k]) - c_prev[k]).abs().max() for k in range(L)
            ]))
            rows.append(torch.stack([a.abs().min() for a in alpha]))
        vals = torch.stack(rows).tolist()
        self.maxabs.append(vals[0])
        self.est.append([0.0] * L)
        decision = Decision()
        if t == 0:
            return decision
        self.delta.append(vals[1])
        self.amin.append(vals[2])
        r.one_step_rel_error = max(
            r.one_step_rel_error,
            max(d / m if m > 0 else (0.0 if d == 0 else math.inf)
                for d, m in zip(vals[1], self.maxabs[t - 1])),
        )
        store = False
        if t - 1 > self.anchor:
            chain = error_chain(t, self.anchor, self.maxabs, self.delta, self.amin, self.u)
            ok = all(E <= self.tol * m for j in range(self.anchor + 1, t)
                     for E, m in zip(chain[j], self.maxabs[j]))
            every = self.store_every > 0 and t % self.store_every == 0
            if ok and not every:
                for j in range(self.anchor + 1, t):
                    self.est[j] = chain[j]
            else:
                store = True
                r.stored_columns.append(t)  # 1-based column number of t - 1
                r.stored_reasons.append("error" if not ok else "every")
                self.est[t - 1] = [0.0] * L
                self.anchor = t - 1
        if store:
            decision.stored = list(c_prev)
            r.stored_bytes += sum(x.nbytes for x in c_prev)
        elif self.fix:
            for k in range(L):
                f = near_thresholds(c_prev[k], self.thresholds, self.tol * self.maxabs[t - 1][k])
                if f is not None:
                    decision.fixups[k] = f
                    r.fixup_elements += int(f[0].numel())
                    r.fixup_bytes += f[0].nbytes + f[1].nbytes
        return decision

    def finish(self) -> ColumnReport:
        r = self.report
        for j in range(self.T):
            for E, m in zip(self.est[j], self.maxabs[j]):
                if E > 0:
                    rel = E / m if m > 0 else math.inf
                    r.est_max_rel_error = max(r.est_max_rel_error, rel)
        r.alpha_min_abs = min(min(a) for a in self.amin[1:]) if self.T > 1 else float("nan")
        return r
