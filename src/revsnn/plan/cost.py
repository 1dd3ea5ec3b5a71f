"""The cost model: peak memory and step time of a training step for any per-part plan.

Units ``u = 0 .. N+1`` (:mod:`.timeline`: what runs before the first part, the N parts in
execution order, the head and loss) each have a mode ``m_u`` (``"-"`` for units 0 and N+1).
Measured per unit, relative to the live bytes at the step's start, at two batch sizes and
linear in the batch ``B`` between them (:class:`Lin`):

- ``G_u(m_{u-1}, m_u)``: growth of live memory over unit u's forward (``Cf[u+1] - Cf[u]``):
  what it keeps for backward and its output, minus its input when nobody keeps that;
- ``Tf_u(m_{u-1}, m_u)``: its forward transient above its starting level (``Pf[u] - Cf[u]``);
- ``E_u(m_u, m_{u+1})``: the level when its backward starts, relative to the level at the end
  of its forward (``Cb[u] - Cf[u+1]``: the output's gradient, minus the output when nobody
  keeps it, minus what later units freed);
- ``Tb_u(m_u, m_{u+1})``: its backward transient (``Pb[u] - Cb[u]``: recomputation, input
  gradient, parameter-gradient buffers);
- the optimiser step's peak, and the fixed bytes held across the step (parameters, buffers,
  gradients, optimiser state, the batch).

A unit's forward depends on its own mode and on whether its predecessor keeps the tensor
between them; its backward on its own mode and on its successor's: the terms of unit u are
keyed by ``(m_{u-1}, m_u)`` (forward) and ``(m_u, m_{u+1})`` (backward) -- except that the last
part's input is released only after that part returns, inside unit N+1, so the backward of
unit N and both halves of unit N+1 are keyed by the last two parts' modes
``(m_{N-1}, m_N)`` (:func:`fwd_key`, :func:`bwd_key`). With
``S_u = G_0 + ... + G_u`` (the live bytes after u's forward)::

    peak = fixed + max( max_u S_{u-1} + Tf_u,   max_u S_u + E_u + Tb_u,   P_opt )
    step = t_rest + sum_u t_u(m_u)

where ``t_u(m)`` is the median time of unit u's forward plus backward in mode ``m`` and
``t_rest`` the rest of the step (optimiser, bookkeeping). For the plans that were measured the
memory formula reproduces the measured peak exactly; for other plans it assumes that only
neighbouring parts interact (checked by the profile: ``pair_spread``). Times measured at one
batch size scale in proportion to the batch (``t_rest`` does not).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from ..units import MIB
from .parts import GLUE

__all__ = [
    "Lin", "Profile", "Prediction", "Quantities", "predict", "all_plans", "fwd_key", "bwd_key",
]

Pair = Tuple[str, str]


@dataclass(frozen=True)
class Lin:
    """``a + s * B``: a byte count linear in the batch size (``s``: bytes per image)."""

    a: float
    s: float

    def __call__(self, B: float) -> float:
        return self.a + self.s * B

    @classmethod
    def fit(cls, b1: int, v1: float, b2: int, v2: float) -> Lin:
        s = (v2 - v1) / (b2 - b1)
        return cls(v1 - s * b1, s)


def _key(pair: Pair) -> str:
    return f"{pair[0]}|{pair[1]}"


def _unkey(text: str) -> Pair:
    a, b = text.split("|")
    return a, b


@dataclass
class Profile:
    """What :func:`revsnn.plan.profile` measured (see the module docstring for the symbols).

    ``order``: the parts in execution order; ``modes``: the modes profiled per part;
    ``idle``: parts that did not run in the step (kept in their mode); the per-unit tables
    ``G``, ``Tf``, ``E``, ``Tb`` map a pair of modes to a :class:`Lin`;
    ``times[clock][u][mode]``: the median seconds of unit u at ``time_batch`` by the "wall" or
    process "cpu" clock; ``time_spread[clock]``: the median relative spread (interquartile
    range / median) of those timings; ``pair_spread``: the largest disagreement (bytes) between
    two measurements of the same quantity in different plans."""

    order: List[str]
    modes: Dict[str, List[str]]
    batches: Tuple[int, int]
    time_batch: int
    fixed: Lin
    G: List[Dict[Pair, Lin]]
    Tf: List[Dict[Pair, Lin]]
    E: List[Dict[Pair, Lin]]
    Tb: List[Dict[Pair, Optional[Lin]]]
    opt_peak: Lin
    times: Dict[str, List[Dict[str, float]]]
    time_rest: Dict[str, float]
    idle: Dict[str, str] = field(default_factory=dict)
    time_spread: Dict[str, float] = field(default_factory=dict)
    pair_spread: float = 0.0
    meta: Dict[str, Any] = field(default_factory=dict)

    @property
    def n_units(self) -> int:
        return len(self.order) + 2

    def unit_modes(self, u: int) -> List[str]:
        """The modes of unit ``u`` (``["-"]`` for units 0 and N+1)."""
        if u == 0 or u == len(self.order) + 1:
            return [GLUE]
        return list(self.modes[self.order[u - 1]])

    def at(self, batch_size: int, clock: str = "wall") -> Quantities:
        """Every quantity at ``batch_size`` (times of ``clock`` scaled from ``time_batch``)."""
        if clock not in self.times:
            raise ValueError(f"clock must be one of {sorted(self.times)}, got {clock!r}")
        B = float(batch_size)
        scale = B / self.time_batch

        def ev(tab):
            return [{k: (None if v is None else v(B)) for k, v in d.items()} for d in tab]

        return Quantities(
            profile=self, batch_size=int(batch_size), fixed=self.fixed(B), G=ev(self.G),
            Tf=ev(self.Tf), E=ev(self.E), Tb=ev(self.Tb), opt_peak=self.opt_peak(B),
            times=[{m: t * scale for m, t in d.items()} for d in self.times[clock]],
            time_rest=self.time_rest[clock], clock=clock,
        )

    # ------------------------------------------------------------------ (de)serialise
    def to_dict(self) -> Dict[str, Any]:
        def tab(t):
            return [{_key(k): (None if v is None else [v.a, v.s]) for k, v in d.items()}
                    for d in t]

        return {
            "order": self.order, "modes": self.modes, "batches": list(self.batches),
            "time_batch": self.time_batch, "fixed": [self.fixed.a, self.fixed.s],
            "G": tab(self.G), "Tf": tab(self.Tf), "E": tab(self.E), "Tb": tab(self.Tb),
            "opt_peak": [self.opt_peak.a, self.opt_peak.s], "times": self.times,
            "time_rest": self.time_rest, "idle": self.idle, "time_spread": self.time_spread,
            "pair_spread": self.pair_spread, "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Profile:
        def tab(t):
            return [{_unkey(k): (None if v is None else Lin(*v)) for k, v in u.items()}
                    for u in t]

        return cls(
            order=list(d["order"]), modes={k: list(v) for k, v in d["modes"].items()},
            batches=tuple(d["batches"]), time_batch=int(d["time_batch"]),
            fixed=Lin(*d["fixed"]), G=tab(d["G"]), Tf=tab(d["Tf"]), E=tab(d["E"]),
            Tb=tab(d["Tb"]), opt_peak=Lin(*d["opt_peak"]),
            times={k: [dict(u) for u in v] for k, v in d["times"].items()},
            time_rest={k: float(v) for k, v in d["time_rest"].items()},
            idle=dict(d.get("idle", {})), time_spread=dict(d.get("time_spread", {})),
            pair_spread=float(d.get("pair_spread", 0.0)), meta=dict(d.get("meta", {})),
        )


@dataclass
class Quantities:
    """A profile evaluated at one batch size (bytes and seconds)."""

    profile: Profile
    batch_size: int
    fixed: float
    G: List[Dict[Pair, float]]
    Tf: List[Dict[Pair, float]]
    E: List[Dict[Pair, float]]
    Tb: List[Dict[Pair, Optional[float]]]
    opt_peak: float
    times: List[Dict[str, float]]
    time_rest: float
    clock: str = "wall"

    def lookup(self, table: str, u: int, pair: Pair) -> Optional[float]:
        d = getattr(self, table)[u]
        if pair not in d:
            raise KeyError(
                f"the profile has no measurement of unit {u} with modes {pair} in table {table}"
            )
        return d[pair]

    def bwd(self, u: int, pair: Pair, S_u: float) -> float:
        """The backward constraint of unit u: ``S_u + E_u + Tb_u`` (-inf without backward)."""
        tb = self.Tb[u].get(pair)
        if tb is None:
            if pair not in self.Tb[u]:
                self.lookup("Tb", u, pair)
            return float("-inf")
        return S_u + self.E[u][pair] + tb


@dataclass
class Prediction:
    """Predicted peak and step time of one plan at one batch size."""

    modes: Dict[str, str]
    batch_size: int
    peak_bytes: float
    fixed_bytes: float
    step_s: float
    peak_at: str  # where the peak is: "forward of <unit>", "backward of <unit>", "optimiser"
    kept_bytes: Dict[str, float]  # per part: G_u (growth of live memory over its forward)
    time_s: Dict[str, float]  # per part: t_u(m_u)
    extra_s: Dict[str, float]  # per part: t_u(m_u) - t_u(none) (0 without a none mode)

    @property
    def activation_bytes(self) -> float:
        return self.peak_bytes - self.fixed_bytes

    @property
    def mib_per_image(self) -> float:
        """(peak - fixed) / batch, in MiB: the step's memory per image."""
        return self.activation_bytes / MIB / self.batch_size


def fwd_key(u: int, seq: Sequence[str]) -> Pair:
    """The modes unit u's forward terms (G, Tf) depend on; ``seq``: the mode of every unit
    (``seq[0]`` and ``seq[N+1]`` are ``"-"``)."""
    N = _n_parts(seq)
    if u == N + 1:
        return seq[N - 1], seq[N]
    return (seq[u - 1] if u else GLUE), seq[u]


def bwd_key(u: int, seq: Sequence[str]) -> Pair:
    """The modes unit u's backward terms (E, Tb) depend on (see :func:`fwd_key`)."""
    N = _n_parts(seq)
    if u >= N:
        return seq[N - 1], seq[N]
    return seq[u], seq[u + 1]


def _n_parts(seq: Sequence[str]) -> int:
    return len(seq) - 2


def _unit_label(profile: Profile, u: int) -> str:
    if u == 0:
        return "input"
    if u == len(profile.order) + 1:
        return "head and loss"
    return profile.order[u - 1]


def _mode_sequence(profile: Profile, modes: Mapping[str, str]) -> List[str]:
    seq = [GLUE]
    for name in profile.order:
        if name not in modes:
            raise ValueError(f"the plan gives no mode for part {name!r} (parts: "
                             f"{', '.join(profile.order)})")
        m = str(getattr(modes[name], "value", modes[name]))
        if m not in profile.modes[name]:
            raise ValueError(f"part {name!r} was profiled in modes {profile.modes[name]}, not "
                             f"{m!r}")
        seq.append(m)
    return seq + [GLUE]  # unit N+1


def predict(profile: Profile, modes: Mapping[str, str], batch_size: int,
            q: Optional[Quantities] = None, clock: str = "wall") -> Prediction:
    """Predicted peak bytes and step seconds (``clock``: "wall" or process "cpu" time) of the
    plan ``modes`` (every part named)."""
    q = q or profile.at(batch_size, clock)
    seq = _mode_sequence(profile, modes)
    n = profile.n_units
    S = 0.0
    best, where = q.opt_peak, "optimiser"
    kept: Dict[str, float] = {}
    t = q.time_rest
    for u in range(n):
        pf = fwd_key(u, seq)
        fwd = S + q.lookup("Tf", u, pf)
        if fwd > best:
            best, where = fwd, f"forward of {_unit_label(profile, u)}"
        S += q.lookup("G", u, pf)
        bwd = q.bwd(u, bwd_key(u, seq), S)
        if bwd > best:
            best, where = bwd, f"backward of {_unit_label(profile, u)}"
        t += q.times[u][seq[u]]
        if 1 <= u <= len(profile.order):
            kept[profile.order[u - 1]] = q.G[u][pf]
    best = max(best, 0.0)
    times = {name: q.times[i + 1][seq[i + 1]] for i, name in enumerate(profile.order)}
    extra = {name: times[name] - q.times[i + 1].get("none", times[name])
             for i, name in enumerate(profile.order)}
    return Prediction(
        modes={name: seq[i + 1] for i, name in enumerate(profile.order)},
        batch_size=int(batch_size), peak_bytes=q.fixed + best, fixed_bytes=q.fixed, step_s=t,
        peak_at=where, kept_bytes=kept, time_s=times, extra_s=extra,
    )


def all_plans(profile: Profile, limit: int = 1_000_000) -> Iterator[Dict[str, str]]:
    """Every combination of the profiled modes (for figures and brute-force checks)."""
    choices = [profile.modes[n] for n in profile.order]
    total = 1
    for c in choices:
        total *= len(c)
    if total > limit:
        raise ValueError(f"{total} plans exceed the limit of {limit}")
    for combo in itertools.product(*choices):
        yield dict(zip(profile.order, combo))


def unit_names(profile: Profile) -> Sequence[str]:
    return [_unit_label(profile, u) for u in range(profile.n_units)]
