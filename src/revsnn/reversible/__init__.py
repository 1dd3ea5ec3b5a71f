"""Reversible engine: couplings, sequences, temporal columns, recompute state, checks."""

from . import check, recompute, state
from .columns import ColumnReport, TemporalColumns
from .coupling import Coupling, ParaRevCoupling, RevCoupling
from .mode import MemoryMode
from .recompute import RecomputeError
from .sequence import ReversibleBackwardError, ReversibleSequence

__all__ = [
    "ColumnReport",
    "Coupling",
    "MemoryMode",
    "ParaRevCoupling",
    "RecomputeError",
    "RevCoupling",
    "ReversibleBackwardError",
    "ReversibleSequence",
    "TemporalColumns",
    "check",
    "recompute",
    "state",
]
