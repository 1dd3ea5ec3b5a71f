"""Memory modes shared by every reversible path and every model."""

from __future__ import annotations

from enum import Enum
from typing import Union

__all__ = ["MemoryMode", "HasMemoryMode"]


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


class HasMemoryMode:
    """Mixin for modules with a settable ``memory_mode`` (parsed into :class:`MemoryMode`)."""

    _memory_mode: MemoryMode

    @property
    def memory_mode(self) -> MemoryMode:
        return self._memory_mode

    @memory_mode.setter
    def memory_mode(self, mode: Union[str, MemoryMode]) -> None:
        self._memory_mode = MemoryMode.parse(mode)

    def set_memory_mode(self, mode: Union[str, MemoryMode]):
        self.memory_mode = mode
        return self
