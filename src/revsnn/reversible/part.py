"""Recomputed parts and the plain-mode dispatch: a non-reversible part of a model that keeps
only its input for backward and recomputes itself there, or runs under checkpointing.

- :class:`RecomputedPart`: subclasses implement :meth:`~RecomputedPart.body`; in ``"none"`` it is
  plain autograd, in ``"checkpoint"`` and ``"reversible"`` it keeps only its input (packed by
  ``input_pack`` when given, e.g. spikes as ``bool``) and is recomputed in backward through
  :func:`revsnn.reversible.recompute.recompute`, so values, gradients and BatchNorm buffers equal
  the ``"none"`` oracle.
- :func:`run_plain_mode`: ``fn(*args)`` as plain autograd, or through
  :func:`revsnn.reversible.recompute.checkpoint` in ``"checkpoint"`` mode (parts whose supported
  modes are ``"none"`` and ``"checkpoint"``).
"""

from __future__ import annotations

from typing import Callable, ClassVar, Optional, Tuple, Union

import torch
from torch import nn

from .mode import HasMemoryMode, MemoryMode
from .recompute import Part, checkpoint, recompute

__all__ = ["PLAIN_MODES", "RecomputedPart", "run_plain_mode"]

#: The modes of a part that has no reversible form: plain autograd or checkpointing.
PLAIN_MODES = (MemoryMode.NONE, MemoryMode.CHECKPOINT)


def run_plain_mode(module: nn.Module, mode: MemoryMode, fn: Callable, *args: torch.Tensor,
                   name: str = "part"):
    """``fn(*args)``: through the recompute core's ``checkpoint`` (the part being ``module``)
    when ``mode`` is ``"checkpoint"`` and a gradient is needed, plain autograd otherwise."""
    if mode is MemoryMode.CHECKPOINT and torch.is_grad_enabled():
        return checkpoint(Part([module], name=name), fn, *args)
    return fn(*args)


class RecomputedPart(HasMemoryMode, nn.Module):
    """A non-reversible part that recomputes itself in backward outside ``memory_mode="none"``.

    Subclasses implement :meth:`body`; ``input_pack = (pack, unpack)`` stores ``pack(x)`` and
    rebuilds the input with ``unpack(saved, dtype)`` (exactly: spikes kept as ``bool``). The
    recomputation follows the recompute core's contract
    (:mod:`revsnn.reversible.recompute`); ``recompute_count`` counts backward recomputations.
    """

    input_pack: ClassVar[Optional[Tuple[Callable, Callable]]] = None

    def __init__(self, memory_mode: Union[str, MemoryMode] = MemoryMode.NONE) -> None:
        super().__init__()
        self.memory_mode = memory_mode
        self.recompute_count = 0

    @property
    def first_order_only(self) -> Optional[str]:
        if self.memory_mode is not MemoryMode.NONE:
            return f"{type(self).__name__} recomputed in {self.memory_mode.value} mode"
        return None

    def body(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _count(self) -> None:
        self.recompute_count += 1

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """``body(x)``, keeping only ``x`` and recomputed in backward unless the mode is
        ``"none"``."""
        part = Part([self], name=type(self).__name__, on_replay=self._count)
        if self.memory_mode is MemoryMode.NONE:
            part.reset()
            return self.body(x)
        return recompute(part, self.body, x, self.input_pack)
