"""The planner: per-part modes that fit a memory budget at the least predicted step time.

The cost model (:mod:`.cost`) is a chain: unit u's terms depend on ``(m_{u-1}, m_u)`` and the
peak is a running maximum over prefix sums ``S_u``. A dynamic programme over the units keeps,
for each pair of modes of the last two decided units, the Pareto set of partial plans over

- ``(S, t)`` -- live bytes after the unit and time so far -- among partial plans whose peak so
  far fits the budget (:func:`solve`): every later term depends on the past only through
  ``S`` and the last modes, a smaller ``S`` never hurts, and time adds up, so the least-time
  plan that fits is among them;
- ``(S, M)`` -- with ``M`` the peak so far -- to find the least peak (:func:`least_peak`, the
  answer when nothing fits: how far the leanest plan is from the budget).

Both are exact for the cost model (no rounding), and the Pareto sets stay small: a model with
17 two-mode parts is solved in milliseconds, where brute force would predict 131,072 plans.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..units import format_bytes
from .cost import Prediction, Profile, Quantities, predict
from .parts import GLUE

__all__ = ["Solution", "solve", "least_peak", "max_batch"]


@dataclass
class Solution:
    """A plan for one batch size and budget.

    ``modes`` is the mapping ``set_memory_mode`` accepts (every part named). ``fits``: the
    predicted peak is within the budget; otherwise ``modes`` is the plan of least predicted
    peak and ``shortfall_bytes`` how much more memory it needs."""

    modes: Dict[str, str]
    fits: bool
    batch_size: int
    budget_bytes: float
    predicted_peak_bytes: float
    predicted_step_s: float
    fixed_bytes: float
    shortfall_bytes: float
    prediction: Prediction = field(repr=False)
    message: str = ""

    def to_json(self) -> Dict[str, Any]:
        """The ``revsnn plan --json`` object."""
        p = self.prediction
        return {
            "modes": dict(self.modes),
            "fits": self.fits,
            "batch_size": self.batch_size,
            "budget_bytes": int(round(self.budget_bytes)),
            "predicted_peak_bytes": int(round(self.predicted_peak_bytes)),
            "predicted_step_s": self.predicted_step_s,
            "fixed_bytes": int(round(self.fixed_bytes)),
            "shortfall_bytes": int(round(self.shortfall_bytes)),
            "peak_at": p.peak_at,
            "parts": [
                {"part": n, "mode": self.modes[n], "kept_bytes": int(round(p.kept_bytes[n])),
                 "extra_s": p.extra_s[n]} for n in p.kept_bytes
            ],
            "message": self.message,
        }


# A partial plan: (S, second coordinate, time, peak so far, path) with path a linked list
# (mode, parent path) of the decided units' modes.
_State = Tuple[float, float, float, float, Any]


def _pareto(states: List[_State]) -> List[_State]:
    """Keep the states not dominated in (S, second coordinate) -- both smaller is better;
    ties broken by the other of (time, peak)."""
    states.sort(key=lambda s: (s[0], s[1], s[2] + s[3]))
    out: List[_State] = []
    best = math.inf
    for s in states:
        if s[1] < best:
            out.append(s)
            best = s[1]
    return out


def _dp(profile: Profile, q: Quantities, limit: float, objective: str
        ) -> Optional[Tuple[List[str], float, float]]:
    """Best plan for ``objective`` ("time": least time with peak <= limit; "peak": least
    peak). Returns (modes of units 1..N, peak above fixed, time) or None when nothing fits.

    The frontier after unit u is keyed by ``(m_{u-1}, m_u)``: unit u+1's terms depend on
    ``m_u`` (and the head's on ``m_{N-1}`` too, :func:`~revsnn.plan.cost.fwd_key`)."""
    N = len(profile.order)
    limit += 1e-9 * max(1.0, abs(limit))  # a budget equal to a plan's peak fits it
    g0 = (GLUE, GLUE)
    M0 = max(0.0, q.opt_peak, q.Tf[0][g0])
    t0 = q.time_rest + q.times[0][GLUE]
    if objective == "time" and M0 > limit:
        return None
    frontier: Dict[Tuple[str, str], List[_State]] = {
        g0: [(q.G[0][g0], t0 if objective == "time" else M0, t0, M0, None)]}
    for u in range(1, N + 2):
        head = u == N + 1  # the head and loss close the step
        nxt: Dict[Tuple[str, str], List[_State]] = {}
        for (a, b), states in frontier.items():  # a = m_{u-2}, b = m_{u-1}
            for m in profile.unit_modes(u):
                kf = (a, b) if head else (b, m)  # fwd_key(u) = bwd_key(u - 1)
                tf, g, dt = q.lookup("Tf", u, kf), q.lookup("G", u, kf), q.times[u][m]
                for S, _, t, M, path in states:
                    S2 = S + g
                    M2 = max(M, q.bwd(u - 1, kf, S), S + tf)
                    if head:
                        M2 = max(M2, q.bwd(u, kf, S2))
                    if objective == "time" and M2 > limit:
                        continue
                    t2 = t + dt
                    nxt.setdefault((b, m), []).append(
                        (S2, t2 if objective == "time" else M2, t2, M2,
                         path if head else (m, path)))
        frontier = {k: _pareto(s) for k, s in nxt.items()}
        if not any(frontier.values()):
            return None
    finals = [s for states in frontier.values() for s in states]
    key = (lambda s: (s[2], s[3])) if objective == "time" else (lambda s: (s[3], s[2]))
    S, _, t, M, path = min(finals, key=key)
    modes: List[str] = []
    while path is not None:
        modes.append(path[0])
        path = path[1]
    return modes[::-1], M, t


def _solution(profile: Profile, q: Quantities, modes: List[str], budget: float,
              fits: bool) -> Solution:
    plan = dict(zip(profile.order, modes))
    pred = predict(profile, plan, q.batch_size, q)
    full = {**plan, **profile.idle}
    short = max(0.0, pred.peak_bytes - budget)
    if fits:
        msg = (f"fits: predicted peak {format_bytes(pred.peak_bytes)} of "
               f"{format_bytes(budget)} at batch {q.batch_size}")
    else:
        msg = (f"no plan fits {format_bytes(budget)} at batch {q.batch_size}: the leanest plan "
               f"needs {format_bytes(pred.peak_bytes)}, {format_bytes(short)} more "
               f"({format_bytes(pred.fixed_bytes)} of it parameters, gradients, optimiser "
               "state and the batch)")
    return Solution(
        modes=full, fits=fits, batch_size=q.batch_size, budget_bytes=budget,
        predicted_peak_bytes=pred.peak_bytes, predicted_step_s=pred.step_s,
        fixed_bytes=pred.fixed_bytes, shortfall_bytes=short, prediction=pred, message=msg,
    )


def _check(batch_size, budget_bytes) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if not isinstance(budget_bytes, (int, float)) or not budget_bytes > 0:
        raise ValueError(f"budget_bytes must be a positive number of bytes, got {budget_bytes!r}")


def solve(profile: Profile, batch_size: int, budget_bytes: float,
          clock: str = "wall") -> Solution:
    """The per-part modes of least predicted step time whose predicted peak (parameters,
    gradients, optimiser state, batch, activations and transients) fits ``budget_bytes`` at
    ``batch_size``; when none fits, the plan of least predicted peak with ``fits=False`` and
    its ``shortfall_bytes``. ``clock``: minimise "wall" (default) or process "cpu" time."""
    _check(batch_size, budget_bytes)
    q = profile.at(batch_size, clock)
    best = _dp(profile, q, budget_bytes - q.fixed, "time")
    if best is not None:
        return _solution(profile, q, best[0], budget_bytes, True)
    return least_peak(profile, batch_size, budget_bytes, clock)


def least_peak(profile: Profile, batch_size: int, budget_bytes: float = math.inf,
               clock: str = "wall") -> Solution:
    """The plan of least predicted peak (least time among those); ``fits`` against
    ``budget_bytes``."""
    q = profile.at(batch_size, clock)
    modes, M, _ = _dp(profile, q, math.inf, "peak")
    budget = budget_bytes if math.isfinite(budget_bytes) else q.fixed + M
    fits = q.fixed + M <= budget + 1e-9 * budget
    if fits:
        best = _dp(profile, q, budget - q.fixed, "time")
        if best is not None:
            modes = best[0]
    return _solution(profile, q, modes, budget, fits)


def max_batch(profile: Profile, budget_bytes: float, limit: int = 1 << 16,
              clock: str = "wall") -> Solution:
    """The largest batch size for which some plan fits ``budget_bytes``, with its plan of least
    predicted time. ``ValueError`` when not even batch 1 fits (naming the shortfall)."""
    _check(1, budget_bytes)

    def fits(B: int) -> bool:
        q = profile.at(B, clock)
        return _dp(profile, q, budget_bytes - q.fixed, "time") is not None

    if not fits(1):
        sol = least_peak(profile, 1, budget_bytes, clock)
        raise ValueError(f"not even batch 1 fits: {sol.message}")
    lo, hi = 1, 2
    while hi <= limit and fits(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, limit + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return solve(profile, lo, budget_bytes, clock)
