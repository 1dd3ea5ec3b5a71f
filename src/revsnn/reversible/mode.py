"""Memory modes shared by every reversible path and every model."""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, ClassVar, Dict, Iterable, List, Tuple, Union

if TYPE_CHECKING:
    from torch import nn

__all__ = ["MemoryMode", "HasMemoryMode", "check_mode", "parts_of"]


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


def check_mode(mode: Union[str, MemoryMode], supported: Iterable[MemoryMode],
               who: str) -> MemoryMode:
    """``mode`` parsed, or one clear ``ValueError`` when ``who`` does not support it."""
    mode = MemoryMode.parse(mode)
    supported = tuple(supported)
    if mode not in supported:
        raise ValueError(
            f"{who} does not support memory_mode={mode.value!r}; supported: "
            f"{', '.join(repr(m.value) for m in supported)}"
        )
    return mode


class HasMemoryMode:
    """Mixin for modules with a settable ``memory_mode`` (parsed into :class:`MemoryMode`,
    checked against the class's ``supported_modes``). Such a module is a *part* of a model:
    ``SpikingModel.set_memory_mode`` can give each part its own mode."""

    supported_modes: ClassVar[Tuple[MemoryMode, ...]] = tuple(MemoryMode)
    _memory_mode: MemoryMode

    @property
    def memory_mode(self) -> MemoryMode:
        return self._memory_mode

    @memory_mode.setter
    def memory_mode(self, mode: Union[str, MemoryMode]) -> None:
        self._memory_mode = check_mode(mode, self.supported_modes, type(self).__name__)

    def set_memory_mode(self, mode: Union[str, MemoryMode]):
        self.memory_mode = mode
        return self


def parts_of(module: nn.Module) -> Dict[str, nn.Module]:
    """The parts inside ``module``: the outermost submodules with a memory mode
    (:class:`HasMemoryMode`), by dotted name, in natural order (``stages.2`` before
    ``stages.10``)."""
    out: Dict[str, nn.Module] = {}
    stack: List[Tuple[str, nn.Module]] = [("", module)]
    while stack:
        prefix, m = stack.pop()
        for name, child in m.named_children():
            path = f"{prefix}.{name}" if prefix else name
            if isinstance(child, HasMemoryMode):
                out[path] = child
            else:
                stack.append((path, child))

    def natural(name: str) -> Tuple:
        return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in name.split("."))

    return dict(sorted(out.items(), key=lambda kv: natural(kv[0])))
