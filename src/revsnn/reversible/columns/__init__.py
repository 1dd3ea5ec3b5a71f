"""Temporal-reversible columns: the recurrence, its storing policy and its autograd Functions."""

from .engine import TemporalColumns
from .policy import ColumnReport

__all__ = ["ColumnReport", "TemporalColumns"]
