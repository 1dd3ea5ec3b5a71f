"""The training objective: the module a training step calls and its losses.

- :class:`TrainForward`: every head's logits as a list (the last one is the final head).
- :func:`soft_cross_entropy`: cross-entropy with label smoothing ``ls`` against hard labels
  ``[B]`` or soft targets ``[B, K]`` (mixup/cutmix): ``t' = (1 - ls) t + ls / K``,
  ``CE = -mean_b sum_k t'_bk log softmax(z_b)_k`` (computed in float32).
- :func:`column_loss`: T-RevSNN's intermediate supervision over the ``n`` column heads
  (last = final): ``L = sum_{i=1..n} (i / n) CE_ls(z_i) + CE_ls(z_n)``.
- :func:`model_loss`: ``column_loss`` for several heads, plain ``CE_ls`` for one.
"""

from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TrainForward", "column_loss", "model_loss", "soft_cross_entropy"]


class TrainForward(nn.Module):
    """Every head's logits as a list (the last one is the final head).

    Models with several heads expose ``forward_heads(x) -> list[Tensor]`` (T-RevSNN: one head
    per column); others return one logits tensor from ``forward``. Wrapping this module (not
    the model) in DistributedDataParallel keeps gradient synchronisation on the path that
    training actually runs.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        fn = getattr(self.model, "forward_heads", None)
        if callable(fn):
            out = list(fn(x))
            if not out:
                raise ValueError(f"{type(self.model).__name__}.forward_heads returned no heads")
            return out
        return [self.model(x)]


def soft_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Mean cross-entropy of ``logits [B, K]`` against labels ``[B]`` or soft targets ``[B, K]``."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be [B, classes], got shape {tuple(logits.shape)}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    logits = logits.float()
    if target.dim() == 1:
        return F.cross_entropy(logits, target, label_smoothing=label_smoothing)
    if target.shape != logits.shape:
        raise ValueError(
            f"soft targets must match logits {tuple(logits.shape)}, got {tuple(target.shape)}"
        )
    K = logits.shape[1]
    t = target.float() * (1.0 - label_smoothing) + label_smoothing / K
    return -(t * F.log_softmax(logits, dim=1)).sum(1).mean()


def column_loss(
    outputs: Sequence[torch.Tensor], target: torch.Tensor, label_smoothing: float = 0.1
) -> torch.Tensor:
    """``sum_{i=1..n} (i / n) CE_ls(outputs[i-1]) + CE_ls(outputs[n-1])`` (T-RevSNN)."""
    n = len(outputs)
    if n == 0:
        raise ValueError("column_loss needs at least one head output")
    losses = [soft_cross_entropy(z, target, label_smoothing) for z in outputs]
    total = losses[-1]
    for i, loss in enumerate(losses, start=1):
        total = total + (i / n) * loss
    return total


def model_loss(
    outputs: Sequence[torch.Tensor], target: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """The training loss of a model's head outputs (one head: plain cross-entropy)."""
    if len(outputs) == 1:
        return soft_cross_entropy(outputs[0], target, label_smoothing)
    return column_loss(outputs, target, label_smoothing)
