"""Building blocks shared by the families: neurons, time folding, recomputed parts, stems,
downsampling, branches, heads.

Every part works on time-first tensors ``[T, B, C, H, W]`` (per-frame layers fold T into the
batch) and takes a ``neuron_factory``: a zero-argument callable returning a fresh multi-step
neuron module, e.g. ``neuron_factory("if")`` (IF, ATan alpha=2, the static-image neuron) or
``neuron_factory("lif", tau=1.5)`` (LIF, Sigmoid alpha=4, the event-data neuron).

The non-reversible parts (:class:`StaticStem`, :class:`EventStem`, :class:`Downsample`) are
:class:`~revsnn.reversible.part.RecomputedPart` s with a ``memory_mode`` (set by
``SpikingModel.set_memory_mode``). In ``"none"`` they are plain autograd. In ``"checkpoint"`` and
``"reversible"`` they keep **only their input** for backward (for a downsampling layer that input
is the output of the reversible sequence before it, which that sequence keeps anyway, so it costs
nothing) and recompute themselves in backward through the recompute core
(:mod:`revsnn.reversible.recompute`), so values, gradients and BN buffers equal the ``"none"``
oracle. A part fed with spikes sets ``input_pack = BINARY_INPUT``.

Constructors (used by RevSResNet, ParaRevSNN-ResNet and MS-ResNet)::

    StaticStem(in_channels, width)            # conv3x3 s1 + BN, image -> repeated over T
    EventStem(in_channels, width)             # conv3x3 s2 + BN + AvgPool3x3 s2, per frame
    Downsample(c_in, c_out, neuron_factory)   # neuron -> AvgPool3x3 s2 -> conv1x1 -> BN
    ConvBranch(c, neuron_factory)             # neuron -> conv3x3 -> BN -> neuron -> conv3x3 -> BN
    SpikingHead(c, num_classes, neuron_factory)  # neuron -> GAP -> FC -> mean over T
"""

from __future__ import annotations

from typing import Callable, Optional, Union

import torch
from torch import nn

from ..reversible.mode import MemoryMode
from ..reversible.part import RecomputedPart
from ..spiking.binary import (
    LeanAvgPool2d,
    LeanIF,
    LeanLIF,
    SpikeConv2d,
    pack_spikes,
    unpack_spikes,
)
from ..spiking.layers import repeat_time
from ..spiking.neuron import IF, LIF
from ..spiking.norm import norm_spike
from ..spiking.pointwise import GuardedConv2d
from ..spiking.surrogate import ATan, Sigmoid

__all__ = [
    "BINARY_INPUT",
    "NeuronFactory",
    "neuron_factory",
    "StaticStem",
    "EventStem",
    "Downsample",
    "ConvBranch",
    "SpikingHead",
    "conv_bn",
    "fold",
    "unfold",
]

NeuronFactory = Callable[[], nn.Module]

#: memory modes of networks without an inverse (MS-ResNet, Spikingformer, BPTT counterparts)
def neuron_factory(
    kind: str = "if",
    tau: float = 2.0,
    v_threshold: float = 1.0,
    alpha: Optional[float] = None,
    lean: bool = True,
) -> NeuronFactory:
    """Factory of multi-step neurons.

    ``kind="if"``: IF with ATan surrogate (alpha 2 by default); ``kind="lif"``: LIF with
    ``tau`` (decay_input) and Sigmoid surrogate (alpha 4 by default). Hard reset to 0 with the
    reset detached. ``lean=True`` gives :class:`~revsnn.spiking.binary.LeanIF` /
    ``LeanLIF`` (same values and gradients, only the input saved for backward).
    """
    kind = kind.lower()
    if kind == "if":
        a = 2.0 if alpha is None else float(alpha)
        cls = LeanIF if lean else IF
        return lambda: cls(v_threshold=v_threshold, surrogate=ATan(a))
    if kind == "lif":
        a = 4.0 if alpha is None else float(alpha)
        cls_l = LeanLIF if lean else LIF
        return lambda: cls_l(tau=tau, v_threshold=v_threshold, surrogate=Sigmoid(a))
    raise ValueError(f"unknown neuron kind {kind!r}; expected 'if' or 'lif'")


# ----------------------------------------------------------------------------- folding
def fold(x: torch.Tensor) -> torch.Tensor:
    """``[T, B, ...] -> [T*B, ...]`` (a view)."""
    return x.flatten(0, 1)


def unfold(y: torch.Tensor, T: int) -> torch.Tensor:
    """``[T*B, ...] -> [T, B, ...]`` (a view)."""
    return y.unflatten(0, (T, y.shape[0] // T))


# ----------------------------------------------------------------------------- recompute
def _pack(x: torch.Tensor) -> torch.Tensor:
    return pack_spikes(x, "a recomputed part fed with spikes")


#: ``RecomputedPart.input_pack`` of a part fed with spikes: kept as bool and rebuilt exactly.
BINARY_INPUT = (_pack, unpack_spikes)


# ----------------------------------------------------------------------------- layers
def conv_bn(
    c_in: int,
    c_out: int,
    kernel_size: int = 3,
    stride: int = 1,
    padding: Optional[int] = None,
    spike_input: bool = True,
    bias: bool = False,
    lean: bool = True,
) -> nn.Sequential:
    """conv (bias-free by default) + BatchNorm2d on ``[N, C, H, W]``.

    With ``spike_input and lean`` the conv is a :class:`SpikeConv2d` (input saved as bool)."""
    p = kernel_size // 2 if padding is None else padding
    # A strided 1x1 conv avoids a broken upstream kernel on channels_last CPU input
    # (revsnn.spiking.pointwise): GuardedConv2d, and SpikeConv2d guards itself.
    plain = GuardedConv2d if (kernel_size == 1 and stride != 1) else nn.Conv2d
    conv_cls = SpikeConv2d if (spike_input and lean) else plain
    return nn.Sequential(
        conv_cls(c_in, c_out, kernel_size, stride, p, bias=bias), nn.BatchNorm2d(c_out)
    )


class _Stem(RecomputedPart):
    """conv3x3 + BN (+ AvgPool), no spike. Static images are encoded once and repeated over T
    (direct encoding); frames are processed per time step."""

    def __init__(
        self, in_channels: int, width: int, stride: int, pool: bool,
        memory_mode: Union[str, MemoryMode] = MemoryMode.NONE,
    ) -> None:
        super().__init__(memory_mode)
        self.in_channels = int(in_channels)
        self.width = int(width)
        self.conv = nn.Conv2d(in_channels, width, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.pool = nn.AvgPool2d(3, 2, 1) if pool else None

    def body(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))  # [N, width, H', W']
        return self.pool(y) if self.pool is not None else y

    def _stream(self, y: torch.Tensor) -> torch.Tensor:
        # Reversible streams stay in the parameters' precision (float32) under autocast.
        return y.to(self.conv.weight.dtype)

    def forward(self, x: torch.Tensor, T: int) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[T, B, width, H', W']`` (a broadcast over T), or
        ``[T, B, C, H, W]`` -> ``[T, B, width, H', W']``."""
        if x.dim() == 4:
            return repeat_time(self._stream(self.run(x)), T)  # [T, B, width, H', W']
        if x.dim() == 5:
            return unfold(self._stream(self.run(fold(x))), x.shape[0])  # [T*B,...] -> [T,B,...]
        raise ValueError(
            f"{type(self).__name__} expects [B, {self.in_channels}, H, W] or "
            f"[T, B, {self.in_channels}, H, W], got shape {tuple(x.shape)}"
        )


class StaticStem(_Stem):
    """conv3x3 s1 (in_channels -> width, no bias) + BN, no spike (RevSResNet, MS-ResNet)."""

    def __init__(self, in_channels: int, width: int, memory_mode="none") -> None:
        super().__init__(in_channels, width, stride=1, pool=False, memory_mode=memory_mode)


class EventStem(_Stem):
    """conv3x3 s2 (no bias) + BN + AvgPool 3x3 s2 p1 per frame, no spike (RevSResNet24): the
    output is at 1/4 resolution."""

    def __init__(self, in_channels: int, width: int, memory_mode="none") -> None:
        super().__init__(in_channels, width, stride=2, pool=True, memory_mode=memory_mode)


class Downsample(RecomputedPart):
    """DS_k = neuron -> AvgPool 3x3 s2 p1 -> conv1x1 (c_in -> c_out, no bias) -> BN on the whole
    stream: ``[T, B, c_in, H, W] -> [T, B, c_out, ceil(H/2), ceil(W/2)]``. Not reversible.

    Outside ``"none"`` it keeps only its input and recomputes in backward. What a DS layer
    saves in ``"none"`` (the conv's pooled input, BN's input) is freed by its own backward,
    which runs before the previous stage's backward: it only adds to the peaks of the later,
    smaller stages. The ResNets' default plans therefore recompute the first DS layer (its
    graph is the largest and is alive during the second stage's backward, where ParaRevSNN
    peaks) and keep the others as plain graphs (measured on the 37-layer models, CPU, T=4,
    32x32: same peak memory as recomputing all of them, reversible step 1.29x -> 1.26x of
    ``"none"`` for RevSResNet37).
    """

    def __init__(
        self, c_in: int, c_out: int, neuron_factory: NeuronFactory,
        memory_mode: Union[str, MemoryMode] = MemoryMode.NONE, lean: bool = True,
    ) -> None:
        super().__init__(memory_mode)
        self.c_in, self.c_out = int(c_in), int(c_out)
        self.neuron = neuron_factory()
        self.pool = LeanAvgPool2d(3, 2, 1) if lean else nn.AvgPool2d(3, 2, 1)
        self.conv = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        # (no name holds the full-size spikes: they are freed as soon as the pool has run)
        p = self.pool(fold(self.neuron(x)))  # [T*B, c_in, H', W']
        return unfold(self.bn(self.conv(p)), x.shape[0])  # [T, B, c_out, H', W']

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[2] != self.c_in:
            raise ValueError(
                f"Downsample expects [T, B, {self.c_in}, H, W], got shape {tuple(x.shape)}"
            )
        return self.run(x).to(x.dtype)  # the stream keeps its precision under autocast


class ConvBranch(nn.Module):
    """RevSResNet's F = G: neuron -> conv3x3 -> BN -> neuron -> conv3x3 -> BN on a half-stream
    ``[T, B, c, H, W]`` (bias-free convs, width = half width, no skip)."""

    def __init__(self, c: int, neuron_factory: NeuronFactory, lean: bool = True) -> None:
        super().__init__()
        self.sn1 = neuron_factory()
        self.conv1 = conv_bn(c, c, 3, lean=lean)
        self.sn2 = neuron_factory()
        self.conv2 = conv_bn(c, c, 3, lean=lean)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[0]
        c1 = self.conv1[0](fold(self.sn1(x)))  # [T*B, c, H, W]
        s2 = fold(norm_spike(c1, self.conv1[1], self.sn2, T))  # sn2(BN(c1)): [T*B, c, H, W]
        del c1
        c2 = self.conv2[0](s2)
        del s2  # the conv keeps the spikes as bool; drop the float copy before BN runs
        return unfold(self.conv2[1](c2), T)  # [T, B, c, H, W]


class SpikingHead(nn.Module):
    """neuron -> global average pool -> FC(c -> classes) -> mean over T:
    ``[T, B, c, H, W] -> [B, classes]``. Head protocol: ``classifier`` is ``fc``."""

    def __init__(self, c: int, num_classes: int, neuron_factory: NeuronFactory) -> None:
        super().__init__()
        self.c = int(c)
        self.neuron = neuron_factory()
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.neuron(x)  # [T, B, c, H, W]
        return self.fc(s.mean(dim=(3, 4))).mean(0)  # [T, B, c] -> [T, B, K] -> [B, K]

    @property
    def classifier(self) -> nn.Module:
        return self.fc

    def replace_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a fresh ``Linear(c, num_classes)``."""
        p = self.fc.weight
        self.fc = nn.Linear(self.c, num_classes).to(device=p.device, dtype=p.dtype)
