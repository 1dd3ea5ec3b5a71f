"""The verbs every revsnn model shares: memory mode, classifier reset, input checks."""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import nn

from ..reversible.mode import MemoryMode
from ..reversible.recompute import guard

__all__ = ["SpikingModel", "check_input"]


def check_input(
    x: torch.Tensor, in_channels: int, T: Optional[int], who: str, frames: bool = True
) -> Tuple[torch.Tensor, bool]:
    """Validate model input; return ``(x, is_static)``.

    Static images are ``[B, C, H, W]``; frames are time-first ``[T, B, C, H, W]`` and their T
    must equal the model's ``T`` (when the model has a fixed T). ``frames=False``: the model
    takes static images only, and the errors ask for ``[B, C, H, W]`` alone.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{who} expects a tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{who} expects a floating-point tensor, got dtype {x.dtype}")
    if not frames and x.dim() != 4:
        hint = (" (frames [T, B, C, H, W] need an event variant such as trevsnn_tiny_dvs)"
                if x.dim() == 5 else "")
        raise ValueError(
            f"{who} expects images [B, {in_channels}, H, W] only (static images, encoded once "
            f"and shared by its T={T} columns); got shape {tuple(x.shape)}{hint}"
        )
    if x.dim() == 4:
        static = True
        c = x.shape[1]
    elif x.dim() == 5:
        static = False
        c = x.shape[2]
        if T is not None and x.shape[0] != T:
            raise ValueError(
                f"{who} has T={T} but got {x.shape[0]} frames: expected [T={T}, B, "
                f"{in_channels}, H, W], got {tuple(x.shape)}"
            )
    else:
        raise ValueError(
            f"{who} expects images [B, {in_channels}, H, W] or frames [T, B, {in_channels}, H, W],"
            f" got shape {tuple(x.shape)}"
        )
    if c != in_channels:
        layout = "[B, C, H, W]" if static else "[T, B, C, H, W]"
        raise ValueError(
            f"{who} expects {in_channels} input channels ({layout} with C={in_channels}), "
            f"got shape {tuple(x.shape)}"
        )
    return x, static


class SpikingModel(nn.Module):
    """Base class: ``num_classes``, ``T``, ``memory_mode``, ``set_memory_mode``,
    ``reset_classifier``.

    ``set_memory_mode`` sets the mode of every submodule that has a ``memory_mode`` attribute
    (reversible sequences, column engines); parameter names never depend on the mode.

    The outputs of ``forward`` pass through :func:`revsnn.reversible.recompute.guard`: a
    backward with ``create_graph=True`` through a model with first-order-only parts raises
    before any of the model's parameters receives a gradient.
    """

    num_classes: int
    T: int

    def __init__(self) -> None:
        super().__init__()
        self._memory_mode = MemoryMode.NONE
        self.register_forward_hook(_guard_outputs)

    @property
    def memory_mode(self) -> MemoryMode:
        return self._memory_mode

    def set_memory_mode(self, mode: Union[str, MemoryMode]) -> SpikingModel:
        mode = MemoryMode.parse(mode)
        self._memory_mode = mode
        for m in self.modules():
            if m is not self and hasattr(m, "memory_mode") and not isinstance(m, SpikingModel):
                m.memory_mode = mode
        return self

    def get_classifier(self) -> nn.Module:  # pragma: no cover - per family
        raise NotImplementedError

    def reset_classifier(self, num_classes: int) -> None:  # pragma: no cover - per family
        raise NotImplementedError


def _guard_outputs(module: nn.Module, _inputs, output):
    if isinstance(output, torch.Tensor):
        return guard(module, output)[0]
    if isinstance(output, (list, tuple)) and output and all(
        isinstance(o, torch.Tensor) for o in output
    ):
        return type(output)(guard(module, *output))
    return output
