"""Building blocks of T-RevSNN levels (Hu et al., ICML 2024) and of its standard-BPTT
counterpart.

A level ``L_k^t(lower, upper)`` (no membrane state anywhere)::

    z   = Entry(lower) + Up(S(upper))          fusion: Entry = Down(S(.)) for k >= 1, the stem
                                               output s itself for k = 0 (or the column's event
                                               stem on its frame); Up only from column 2 on
    z1  = Block1(z),   out = Block2(z1)        two spiking ConvNeXt-style blocks

    Block:  u = pw1(dw1(S(z)));  out = z + gamma * dw2(pw2(S(u)))
            dw = depthwise kxk conv with bias, pw1 = WS 1x1 C -> 4C, pw2 = WS 1x1 4C -> C;
            Block2 has no gamma and its pw2/dw2 are one module per level shared by all columns.
    Down:   S -> conv (no bias) -> BN          (3x3 s2 between resolutions, 1x1 s1 into level 3)
    Up:     S -> conv 1x1 (no bias) -> BN -> nearest resize to the receiving level's size
            (x2 between resolutions; none from level 3 to level 2, which share a resolution)

``S`` is the stateless spike ``S(z) = [z >= 0.5]`` (straight-through gradient on ``[0, 1]``).
Every spike is a module made by a ``make_spike`` factory, so the BPTT counterpart swaps in
:class:`FoldedLIF` (a multi-step LIF over the T steps folded into the batch) and keeps
everything else.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..spiking import LIF, Rectangle, StatelessSpike, WSConv2d
from .init import trunc_normal_convs

__all__ = [
    "SpikeFactory", "FoldedLIF", "SharedTail", "ConvNeXtBlock", "Down", "Up", "Level",
    "ImageStem", "ColumnEventStem", "Classifier", "FinalHead", "ColumnHeads", "entry",
    "check_config",
]

SpikeFactory = Callable[[], nn.Module]


class FoldedLIF(nn.Module):
    """Multi-step LIF over ``[T*B, ...]`` (time folded into the batch): unfold, run, fold.

    ``H[t] = V[t-1] / 2 + X[t]`` (tau 2, no input decay), fire at ``H >= 0.5``, hard reset to 0,
    rectangle surrogate of width 1 (gradient 1 on ``0 <= H <= 1``): at the first step this is
    exactly the stateless spike S, forward and backward -- the membrane is the only difference.
    """

    def __init__(self, T: int) -> None:
        super().__init__()
        self.T = int(T)
        self.lif = LIF(tau=2.0, decay_input=False, v_threshold=0.5, v_reset=0.0,
                       surrogate=Rectangle(1.0), detach_reset=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] % self.T:
            raise ValueError(f"FoldedLIF expects [T*B, ...] with T={self.T}, got {tuple(x.shape)}")
        return self.lif(x.unflatten(0, (self.T, -1))).flatten(0, 1)  # [T, B, ...] -> [T*B, ...]


def _dw(channels: int, kernel: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels, bias=True)


class SharedTail(nn.Module):
    """pw2 (WS 1x1 4C -> C) and dw2 (depthwise kxk): one module per level, used by every
    column's second block (explicit sharing: the same module object, not a copy)."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.pw2 = WSConv2d(4 * channels, channels, 1)
        self.dw2 = _dw(channels, kernel)


class ConvNeXtBlock(nn.Module):
    """``u = pw1(dw1(S(z)));  out = z + gamma * dw2(pw2(S(u)))`` (gamma only without a tail)."""

    def __init__(
        self, channels: int, kernel: int, make_spike: SpikeFactory,
        tail: Optional[SharedTail] = None,
    ) -> None:
        super().__init__()
        self.spike1 = make_spike()
        self.dw1 = _dw(channels, kernel)
        self.pw1 = WSConv2d(channels, 4 * channels, 1)
        self.spike2 = make_spike()
        if tail is None:
            self.pw2 = WSConv2d(4 * channels, channels, 1)
            self.dw2 = _dw(channels, kernel)
            self.gamma = nn.Parameter(torch.ones(1, channels, 1, 1))
        else:  # shared: the level's SharedTail modules themselves
            self.pw2 = tail.pw2
            self.dw2 = tail.dw2
            self.gamma = None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        u = self.pw1(self.dw1(self.spike1(z)))  # [N, 4C, H, W]
        y = self.dw2(self.pw2(self.spike2(u)))  # [N, C, H, W]
        return z + (y if self.gamma is None else self.gamma * y)


class Down(nn.Sequential):
    """``S -> conv kxk stride s (no bias) -> BN``."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, make_spike: SpikeFactory):
        super().__init__(
            make_spike(),
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
            nn.BatchNorm2d(cout),
        )


class Up(nn.Module):
    """``S -> conv 1x1 (no bias) -> BN -> nearest resize`` to the receiving level's size."""

    def __init__(self, cin: int, cout: int, make_spike: SpikeFactory) -> None:
        super().__init__()
        self.spike = make_spike()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        y = self.bn(self.conv(self.spike(x)))
        if tuple(y.shape[-2:]) != tuple(size):
            y = F.interpolate(y, size=tuple(size), mode="nearest")
        return y


class Level(nn.Module):
    """``L_k^t(lower, upper) = Block2(Block1(Entry(lower) + Up(S(upper))))``."""

    def __init__(
        self, entry: Optional[nn.Module], up: Optional[Up], block1: ConvNeXtBlock,
        block2: ConvNeXtBlock,
    ) -> None:
        super().__init__()
        self.entry = entry
        self.up = up
        self.block1 = block1
        self.block2 = block2

    def forward(self, lower: torch.Tensor, upper: Optional[torch.Tensor] = None) -> torch.Tensor:
        z = lower if self.entry is None else self.entry(lower)
        if upper is not None:
            if self.up is None:
                raise ValueError("this level has no Up path (first column): pass upper=None")
            z = z + self.up(upper, z.shape[-2:])
        return self.block2(self.block1(z))


class ImageStem(nn.Sequential):
    """Encode a static image once: two weight-standardised convs, no spike, no norm.

    - ``"imagenet"``: 7x7 s2 p3 (in -> C0), then 3x3 s2 p1 (C0 -> C0): resolution /4.
    - ``"cifar"``: 3x3 s1 p1 twice: full resolution, so 32x32, 28x28 and 8x8 inputs keep
      levels at 32/16/8/8, 28/14/7/7 and 8/4/2/2.
    """

    def __init__(self, in_channels: int, channels: int, kind: str = "imagenet") -> None:
        if kind == "imagenet":
            convs = (WSConv2d(in_channels, channels, 7, 2, 3),
                     WSConv2d(channels, channels, 3, 2, 1))
        elif kind == "cifar":
            convs = (WSConv2d(in_channels, channels, 3, 1, 1),
                     WSConv2d(channels, channels, 3, 1, 1))
        else:
            raise ValueError(f"unknown stem {kind!r}; expected 'imagenet' or 'cifar'")
        super().__init__(*convs)
        self.kind = kind


class ColumnEventStem(nn.Module):
    """One column's event stem: WS conv 3x3 s1 p1 (in -> C0) on that column's frame."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.conv = WSConv2d(in_channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _gap(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=(2, 3), keepdim=True)  # [B, C, H, W] -> [B, C, 1, 1]


class Classifier(nn.Module):
    """Intermediate head on a column's top state ``c_3`` ``[B, C, H, W]``:
    ``GAP(c_3)`` -> WS 1x1 conv C -> classes."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv = WSConv2d(channels, num_classes, 1)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return self.conv(_gap(c)).flatten(1)  # [B, classes]


class FinalHead(nn.Module):
    """Last head on spikes of the top state: ``GAP(S(c_3))`` -> WS 1x1 C -> classes -> WS 1x1
    classes -> classes. ``spike`` is the spike module (``None``: the input is already spikes).
    Head protocol: the whole head is the classifier."""

    def __init__(self, channels: int, num_classes: int,
                 spike: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.channels = int(channels)
        self.spike = spike
        self.conv1 = WSConv2d(channels, num_classes, 1)
        self.conv2 = WSConv2d(num_classes, num_classes, 1)

    @property
    def classifier(self) -> nn.Module:
        return self

    def replace_classifier(self, num_classes: int) -> None:
        """Fresh convolutions for ``num_classes`` (truncated-normal initialisation)."""
        ref = self.conv1.weight
        conv1 = WSConv2d(self.channels, num_classes, 1)
        conv2 = WSConv2d(num_classes, num_classes, 1)
        trunc_normal_convs(conv1)
        trunc_normal_convs(conv2)
        self.conv1 = conv1.to(device=ref.device, dtype=ref.dtype)
        self.conv2 = conv2.to(device=ref.device, dtype=ref.dtype)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        s = c if self.spike is None else self.spike(c)
        return self.conv2(self.conv1(_gap(s))).flatten(1)  # [B, classes]


def stateless() -> nn.Module:
    """The T-RevSNN spike factory."""
    return StatelessSpike()


class ColumnHeads(nn.ModuleList):
    """One head per column: :class:`Classifier` for columns 1..T-1, a :class:`FinalHead` on
    ``S(c_3)`` for the last. Head protocol: the classifier is the last head;
    ``replace_classifier`` rebuilds every head for the new classes."""

    def __init__(self, channels: int, num_classes: int, T: int) -> None:
        super().__init__(self._make(channels, num_classes, T))
        self.channels = int(channels)

    @staticmethod
    def _make(channels: int, num_classes: int, T: int):
        heads = [Classifier(channels, num_classes) for _ in range(T - 1)]
        heads.append(FinalHead(channels, num_classes, spike=stateless()))
        for h in heads:
            trunc_normal_convs(h)
        return heads

    @property
    def classifier(self) -> nn.Module:
        return self[-1]

    def replace_classifier(self, num_classes: int) -> None:
        ref = self[-1].conv1.weight
        for i, head in enumerate(self._make(self.channels, num_classes, len(self))):
            self[i] = head.to(device=ref.device, dtype=ref.dtype)


def check_config(channels: Sequence[int], kernel: int) -> None:
    if len(channels) != 4 or any(int(c) < 1 for c in channels):
        raise ValueError(f"channels must be 4 positive level widths, got {tuple(channels)}")
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel must be a positive odd int, got {kernel}")


def entry(k: int, channels: Sequence[int], make_spike: SpikeFactory) -> Optional[nn.Module]:
    """Fusion input from the level below: none at level 0, Down 3x3 s2 into levels 1 and 2,
    Down 1x1 s1 into level 3 (same resolution as level 2)."""
    if k == 0:
        return None
    if k < 3:
        return Down(channels[k - 1], channels[k], 3, 2, make_spike)
    return Down(channels[2], channels[3], 1, 1, make_spike)
