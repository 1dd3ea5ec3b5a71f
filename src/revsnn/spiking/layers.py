"""Layers for time-first spiking sequences.

- :class:`TimeFold` applies a per-frame module to ``[T, B, ...]`` by folding T into the batch:
  ``[T, B, C, H, W] -> [T*B, C, H, W] -> module -> [T, B, C', H', W']``.
- :class:`WSConv2d` is a weight-standardised convolution (NF-Nets' ScaledStdConv2d):
  ``W_hat[o] = gain[o] * (W[o] - mean(W[o])) / sqrt(var(W[o]) + eps) * fan_in ** -0.5``,
  statistics over each output channel's fan-in.
"""

from __future__ import annotations

from typing import Union

import torch
import torch.nn.functional as F
from torch import nn

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


class WSConv2d(nn.Conv2d):
    """Weight-standardised conv with a learnable per-output-channel gain (and a bias)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Union[int, tuple] = 1,
        stride: Union[int, tuple] = 1,
        padding: Union[int, tuple, str] = 0,
        dilation: Union[int, tuple] = 1,
        groups: int = 1,
        bias: bool = True,
        eps: float = 1e-6,
        gain_init: float = 1.0,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias
        )
        self.gain = nn.Parameter(torch.full((out_channels, 1, 1, 1), float(gain_init)))
        self.eps = float(eps)

    def standardized_weight(self) -> torch.Tensor:
        w = self.weight
        fan_in = w[0].numel()
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
        return (w - mean) * torch.rsqrt(var + self.eps) * (self.gain * fan_in**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(
            x,
            self.standardized_weight(),
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
        )
