"""Memory modes shared by every reversible path and every model."""

from __future__ import annotations

from enum import Enum
from typing import Union

__all__ = ["MemoryMode"]


class MemoryMode(str, Enum):
    """How a reversible path trades memory for compute in training.

    - ``NONE``: plain autograd over the same modules (the oracle; stores every activation).
    - ``CHECKPOINT``: ``torch.utils.checkpoint`` per block (stores block inputs, recomputes).
    - ``REVERSIBLE``: keeps only the output; inputs are rebuilt by the exact inverse in backward.
    """

    NONE = "none"
    CHECKPOINT = "checkpoint"
    REVERSIBLE = "reversible"

    @classmethod
    def parse(cls, value: Union[str, MemoryMode]) -> MemoryMode:
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls(value.lower())
            except ValueError:
                pass
        raise ValueError(f"unknown memory mode {value!r}; expected one of {[m.value for m in cls]}")

    def __str__(self) -> str:
        return self.value
