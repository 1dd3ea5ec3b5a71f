"""Layers for time-first spiking sequences.

- :class:`TimeFold` applies a per-frame module to ``[T, B, ...]`` by folding T into the batch:
  ``[T, B, C, H, W] -> [T*B, C, H, W] -> module -> [T, B, C', H', W']``.
- :class:`WSConv2d` (re-exported from :mod:`.weight_standardization`) is a weight-standardised
  convolution (NF-Nets' ScaledStdConv2d).
"""

from __future__ import annotations

import torch
from torch import nn

from .weight_standardization import WSConv2d

__all__ = ["TimeFold", "WSConv2d", "repeat_time"]


def repeat_time(x: torch.Tensor, T: int) -> torch.Tensor:
    """Direct encoding: ``[B, ...] -> [T, B, ...]`` (a broadcast view, no copy)."""
    return x.unsqueeze(0).expand(T, *x.shape)


class TimeFold(nn.Module):
    """Run ``module`` on every time step at once: ``[T, B, ...] -> [T, B, ...]``."""

    def __init__(self, *modules: nn.Module) -> None:
        super().__init__()
        self.module = modules[0] if len(modules) == 1 else nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 3:
            raise ValueError(f"TimeFold expects [T, B, ...], got shape {tuple(x.shape)}")
        T, B = x.shape[:2]
        y = self.module(x.flatten(0, 1))  # [T*B, ...]
        return y.unflatten(0, (T, B))  # [T, B, ...]
