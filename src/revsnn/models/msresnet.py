"""MS-ResNet ("membrane shortcut" ResNet, CIFAR form), the non-reversible counterpart of
RevSResNet in the RevSNN paper's comparisons::

    x [B, 3, H, W] -> conv3x3 s1 3 -> 64 + BN -> repeat T
    -> 4 stages of basic blocks (64/128/256/512 channels, stride 2 at the first block of
       stages 2-4):  out = BN(conv3x3(IF(BN(conv3x3(IF(x)))))) + shortcut(x),
       shortcut = identity, or IF -> conv1x1 (stride) -> BN when the shape changes
    -> IF -> global average pool -> FC(512 -> K) -> mean over T

MS-ResNet18: (2, 2, 2, 2) blocks, 11,220,132 parameters (100 classes); MS-ResNet34: (3, 4, 6, 3),
21,328,292.

A baseline of the memory comparisons, so it uses the library's plain neurons and convolutions by
default (``lean=False``: what standard BPTT saves); ``lean=True`` swaps in the memory-lean
primitives (same values and gradients). It has no inverse: ``memory_mode`` is ``"none"`` or
``"checkpoint"`` (each residual block recomputed in backward, keeping its input).
"""

from __future__ import annotations

from typing import Dict, Sequence, Union

import torch
from torch import nn

from ..reversible import MemoryMode
from ..reversible.part import PLAIN_MODES, RecomputedPart
from .base import SpikingModel
from .blocks import (
    NeuronFactory,
    SpikingHead,
    StaticStem,
    conv_bn,
    fold,
    neuron_factory,
    unfold,
)
from .families import MSRESNET
from .init import kaiming_fan_out
from .published import BN, WB, NameRule, PublishedLayout, group_int
from .registry import register_model

__all__ = ["MSResNet", "MSBasicBlock"]


class MSBasicBlock(RecomputedPart):
    """out = BN(conv3x3(IF(BN(conv3x3_s(IF(x)))))) + shortcut(x) on ``[T, B, c_in, H, W]``;
    recomputed in backward in ``"checkpoint"`` mode."""

    supported_modes = PLAIN_MODES

    def __init__(
        self, c_in: int, c_out: int, stride: int, nf: NeuronFactory, lean: bool = False
    ) -> None:
        super().__init__()
        self.sn1 = nf()
        self.conv1 = conv_bn(c_in, c_out, 3, stride, lean=lean)
        self.sn2 = nf()
        self.conv2 = conv_bn(c_out, c_out, 3, lean=lean)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.sn_short = nf()
            self.shortcut = conv_bn(c_in, c_out, 1, stride, lean=lean)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[0]
        y = unfold(self.conv1(fold(self.sn1(x))), T)  # [T, B, c_out, H', W']
        y = unfold(self.conv2(fold(self.sn2(y))), T)
        short = x if self.shortcut is None else unfold(
            self.shortcut(fold(self.sn_short(x))), T
        )
        return y + short

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)


class MSResNet(SpikingModel):
    """MS-ResNet with any per-stage block counts (see the module docstring)."""

    supported_modes = PLAIN_MODES

    def __init__(
        self,
        blocks: Sequence[int] = (2, 2, 2, 2),
        widths: Sequence[int] = (64, 128, 256, 512),
        num_classes: int = 10,
        T: int = 4,
        in_channels: int = 3,
        memory_mode: Union[str, MemoryMode] = "none",
        neuron: str = "if",
        tau: float = 2.0,
        lean: bool = False,
    ) -> None:
        super().__init__(num_classes, T, in_channels, memory_mode)
        blocks, widths = [int(n) for n in blocks], [int(w) for w in widths]
        if len(blocks) != len(widths) or not blocks or min(blocks) < 1:
            raise ValueError(f"need one block count >= 1 per width, got {blocks}, {widths}")
        self.blocks = tuple(blocks)
        self.depth = 2 + 2 * sum(blocks)
        nf = neuron_factory(neuron, tau=tau, lean=lean)
        self.stem = StaticStem(in_channels, widths[0])
        layers, c = [], widths[0]
        for k, (n, w) in enumerate(zip(blocks, widths)):
            for i in range(n):
                layers.append(MSBasicBlock(c, w, 2 if (k > 0 and i == 0) else 1, nf, lean))
                c = w
        self.layers = nn.Sequential(*layers)
        self.head = SpikingHead(c, num_classes, nf)
        kaiming_fan_out(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.check_input(x)
        return self.head(self.layers(self.stem(x, self.T)))


# ------------------------------------------------------------------------------- published code
# MS-ResNet: conv1/bn1 stem, layer{s}.{b}.conv{1,2}.{0,1}, layer{s}.{b}.downsample.1.{0,1}
# (downsample.0 is the neuron), fc. Our blocks are one flat list: index = blocks before stage s.
def _ms_block(g: Dict[str, str], m: nn.Module) -> int:
    s = group_int(g, "s", 1)
    return sum(m.blocks[:s]) + int(g["b"])


_MSRESNET = [
    NameRule(r"conv1\.weight", lambda g, m: "stem.conv.weight"),
    NameRule(rf"bn1\.{BN}", lambda g, m: f"stem.bn.{g['p']}"),
    NameRule(rf"layer(?P<s>\d+)\.(?P<b>\d+)\.conv(?P<c>[12])\.(?P<i>[01])\.{BN}",
             lambda g, m: f"layers.{_ms_block(g, m)}.conv{g['c']}.{g['i']}.{g['p']}"),
    NameRule(rf"layer(?P<s>\d+)\.(?P<b>\d+)\.downsample\.1\.(?P<i>[01])\.{BN}",
             lambda g, m: f"layers.{_ms_block(g, m)}.shortcut.{g['i']}.{g['p']}"),
    NameRule(rf"fc\.{WB}", lambda g, m: f"head.fc.{g['p']}"),
]


PUBLISHED = PublishedLayout(lambda model: ("msresnet", _MSRESNET), classifiers=(r"fc\.weight",),
                            first_convs=(r"conv1(\.0)?\.weight",))


register_model("ms_resnet18", MSResNet, MSRESNET,
               "MS-ResNet18, (2, 2, 2, 2) blocks (11,220,132 parameters with 100 classes)",
               blocks=(2, 2, 2, 2), published=PUBLISHED)
register_model("ms_resnet34", MSResNet, MSRESNET,
               "MS-ResNet34, (3, 4, 6, 3) blocks (21,328,292 parameters with 100 classes)",
               blocks=(3, 4, 6, 3), published=PUBLISHED)
register_model("ms_resnet_test", MSResNet, MSRESNET,
               "tiny MS-ResNet for tests: widths 4/8, (1, 1) blocks", image_size=8,
               blocks=(1, 1), widths=(4, 8), T=2, published=PUBLISHED)
