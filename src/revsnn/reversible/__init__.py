"""Reversible engine: couplings, sequences, temporal columns, recompute state, checks."""

from . import check, state
from .columns import ColumnReport, TemporalColumns
from .coupling import ParaRevCoupling, RevCoupling
from .mode import MemoryMode
from .sequence import ReversibleBackwardError, ReversibleSequence

__all__ = [
    "ColumnReport",
    "MemoryMode",
    "ParaRevCoupling",
    "RevCoupling",
    "ReversibleBackwardError",
    "ReversibleSequence",
    "TemporalColumns",
    "check",
    "state",
]
