"""Reversible engine: couplings, sequences, recompute state, checks."""

from . import check, state  # noqa: E402,F401
from .coupling import ParaRevCoupling, RevCoupling
from .mode import MemoryMode
from .sequence import ReversibleBackwardError, ReversibleSequence

__all__ = [
    "MemoryMode",
    "ParaRevCoupling",
    "RevCoupling",
    "ReversibleBackwardError",
    "ReversibleSequence",
]
