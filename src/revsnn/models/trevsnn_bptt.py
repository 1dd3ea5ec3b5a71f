"""The standard-BPTT counterpart of T-RevSNN: "the same network with temporal dynamics switched
on everywhere".

The same stem, the same four levels (Down fusion, two spiking ConvNeXt blocks, block 2 without
gamma) and the same final head as one T-RevSNN column (:mod:`revsnn.models.trevsnn_blocks`),
with every spike function replaced by a multi-step LIF over T steps
(:class:`~revsnn.models.trevsnn_blocks.FoldedLIF`, equal to S at the first step), the input
repeated over T (the stem runs on every step) and the logits averaged over T, trained by plain
BPTT. Weights are shared over time as in any standard SNN, so one step of it costs one T-RevSNN
column plus the stem: the two networks do the same work per step except that T-RevSNN encodes
once. It has no Up paths and no alpha (a standard SNN carries time in its membranes), and about
1/T of T-RevSNN's parameters. Memory modes: ``"none"`` (plain BPTT) or ``"checkpoint"`` (each
level recomputed in backward).
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import nn

from ..reversible.mode import HasMemoryMode, MemoryMode
from ..reversible.part import PLAIN_MODES, run_plain_mode
from ..spiking import repeat_time
from .base import SpikingModel
from .families import TREVSNN_BPTT
from .init import trunc_normal_convs
from .registry import register_model
from .trevsnn_blocks import (
    ConvNeXtBlock,
    FinalHead,
    FoldedLIF,
    ImageStem,
    Level,
    SharedTail,
    check_config,
    entry,
)

__all__ = ["TRevSNNBPTT", "BPTTLevel"]


class BPTTLevel(HasMemoryMode, Level):
    """A level over the T steps folded into the batch; recomputed in backward in
    ``"checkpoint"`` mode."""

    supported_modes = PLAIN_MODES

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.memory_mode = MemoryMode.NONE

    def forward(self, lower: torch.Tensor, upper=None) -> torch.Tensor:
        return run_plain_mode(self, self.memory_mode, super().forward, lower, name="level")


class TRevSNNBPTT(SpikingModel):
    """Standard-SNN counterpart of :class:`~revsnn.models.trevsnn.TRevSNN` trained by BPTT;
    see the module docstring."""

    supported_modes = PLAIN_MODES

    def __init__(
        self,
        channels: Sequence[int] = (64, 128, 256, 384),
        T: int = 4,
        kernel: int = 3,
        num_classes: int = 1000,
        in_channels: int = 3,
        stem: str = "imagenet",
        memory_mode: Union[str, MemoryMode] = MemoryMode.NONE,
    ) -> None:
        super().__init__(num_classes, T, in_channels, memory_mode)
        check_config(channels, kernel)
        C = [int(c) for c in channels]
        self.channels, self.kernel = C, int(kernel)

        def lif() -> nn.Module:
            return FoldedLIF(self.T)

        self.stem = ImageStem(in_channels, C[0], stem)
        self.shared = nn.ModuleList(SharedTail(c, kernel) for c in C)
        self.levels = nn.ModuleList(
            BPTTLevel(entry(k, C, lif), None, ConvNeXtBlock(C[k], kernel, lif),
                      ConvNeXtBlock(C[k], kernel, lif, tail=self.shared[k]))
            for k in range(4)
        )
        self.head_spike = lif()
        self.head = FinalHead(C[3], self.num_classes)
        trunc_normal_convs(self)  # as TRevSNN

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits averaged over the T steps, ``[B, classes]``."""
        x, static = self.check_input(x)
        if static:
            x = repeat_time(x, self.T)  # [T, B, C, H, W]
        B = x.shape[1]
        c = self.stem(x.flatten(0, 1))  # [T*B, C0, H', W']
        for level in self.levels:
            c = level(c)
        logits = self.head(self.head_spike(c))  # GAP inside the head: [T*B, classes]
        return logits.unflatten(0, (self.T, B)).mean(0)  # [B, classes]


register_model("trevsnn_tiny_bptt", TRevSNNBPTT, TREVSNN_BPTT,
               "standard-BPTT counterpart of trevsnn_tiny (LIF everywhere, input repeated over "
               "T)", image_size=224, channels=(64, 128, 256, 384), kernel=3, stem="imagenet")
register_model("trevsnn_cifar_bptt", TRevSNNBPTT, TREVSNN_BPTT,
               "standard-BPTT counterpart of trevsnn_cifar", channels=(16, 32, 64, 64),
               kernel=3, stem="cifar", num_classes=10)
register_model("trevsnn_bptt_test", TRevSNNBPTT, TREVSNN_BPTT,
               "tiny BPTT counterpart for tests: channels 4/8/8/8", image_size=8,
               channels=(4, 8, 8, 8), kernel=3, stem="cifar", T=2, num_classes=10)
