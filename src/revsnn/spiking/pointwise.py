"""Strided 1x1 convolutions computed without PyTorch's broken channels_last CPU kernel.

Upstream cause: on some x86 CPUs (seen on an AMD EPYC with AVX2 only, torch 2.13.0+cpu, one
thread) PyTorch's oneDNN backward of a **1x1 convolution with stride > 1 on channels_last
tensors** writes outside its buffers: ``nn.Conv2d(4, 8, 1, stride=2)`` in channels_last aborts
within 20 backward passes under ``MALLOC_CHECK_=3`` ("corrupted double-linked list"), and runs
fine with ``torch.backends.mkldnn.enabled = False``. Other CPUs take another kernel path and never
show it. A crash is the lucky outcome; the unlucky one is silently damaged memory.

A 1x1 convolution with stride ``s`` and no padding reads only every ``s``-th row and column::

    conv1x1_s(x)[n, o, i, j] = b[o] + sum_c W[o, c] * x[n, c, s*i, s*j]
                             = conv1x1_1(x[..., ::s, ::s])[n, o, i, j]

so subsampling first and convolving with stride 1 gives the same values, and the gradients
follow by the chain rule (the slice scatters ``dL/dx_sub`` back to every ``s``-th pixel, zeros
elsewhere; ``dL/dW`` and ``dL/db`` sum the same products). In float64 both are bit-identical to
the strided call; in float32 the forward may differ in the last bit where oneDNN orders the sum
differently. The guard applies only where the broken kernel could run: CPU tensors where the
input or the weight has channels_last strides (PyTorch picks channels_last when either has).
Parameters are untouched, so ``state_dict`` keys and values are those of ``nn.Conv2d``.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GuardedConv2d", "channels_last_strides", "strided_pointwise_input"]


def channels_last_strides(t: torch.Tensor) -> bool:
    """Whether a 4-D tensor's strides make PyTorch treat it as channels_last.

    Strides must not decrease in the order C, W, H, N, each at least the previous stride times
    its size; an ``[N, 1, 1, 1]``-like tensor whose C and N strides coincide counts as
    contiguous (PyTorch's tie-break)."""
    if t.dim() != 4 or t.stride(1) == 0:
        return False
    low = 0
    for d in (1, 3, 2, 0):
        if t.size(d) == 0 or t.stride(d) < low:
            return False
        if d == 0 and low == t.stride(1):
            return False
        low = t.stride(d) * max(t.size(d), 1)
    return True


def strided_pointwise_input(conv: nn.Conv2d, x: torch.Tensor) -> Optional[torch.Tensor]:
    """``x[..., ::sh, ::sw]`` when ``conv`` is a 1x1, stride > 1, unpadded convolution that
    would meet the broken channels_last CPU kernel on ``x``; ``None`` otherwise (run the conv as
    it is). Convolve the returned tensor with stride 1 and no padding."""
    if (conv.kernel_size != (1, 1) or conv.stride == (1, 1) or x.device.type != "cpu"
            or isinstance(conv.padding, str) or tuple(conv.padding) != (0, 0) or x.dim() != 4):
        return None
    if not (channels_last_strides(x) or channels_last_strides(conv.weight)):
        return None
    sh, sw = conv.stride
    return x[..., ::sh, ::sw]


class GuardedConv2d(nn.Conv2d):
    """``nn.Conv2d`` that computes a strided 1x1 convolution on channels_last CPU tensors as
    ``conv1x1_1(x[..., ::s, ::s])`` (the module docstring gives the upstream cause); every other
    call is ``nn.Conv2d``'s. Same parameters, names, init, values and gradients."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sub = strided_pointwise_input(self, x)
        if sub is None:
            return super().forward(x)
        return F.conv2d(sub, self.weight, self.bias, 1, 0, self.dilation, self.groups)
