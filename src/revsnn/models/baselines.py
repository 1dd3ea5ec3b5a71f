"""Non-reversible counterparts trained with plain BPTT: MS-ResNet and Spikingformer.

MS-ResNet ("membrane shortcut" ResNet, CIFAR form)::

    x [B, 3, H, W] -> conv3x3 s1 3 -> 64 + BN -> repeat T
    -> 4 stages of basic blocks (64/128/256/512 channels, stride 2 at the first block of
       stages 2-4):  out = BN(conv3x3(IF(BN(conv3x3(IF(x)))))) + shortcut(x),
       shortcut = identity, or IF -> conv1x1 (stride) -> BN when the shape changes
    -> IF -> global average pool -> FC(512 -> K) -> mean over T

MS-ResNet18: (2, 2, 2, 2) blocks, 11,220,132 parameters (100 classes); MS-ResNet34: (3, 4, 6, 3),
21,328,292.

Spikingformer-L-D: RevSFormer's tokenizer, then L residual blocks on D channels
``x <- x + SSA(x); x <- x + MLP(x)``, head mean over tokens and T -> Linear(D -> K).

These are the baselines of the memory comparisons, so they use the library's plain neurons
and convolutions by default (``lean=False``: what standard BPTT saves). ``lean=True`` swaps in
the memory-lean primitives (same values and gradients). They have no reversible parts; the
``memory_mode`` argument is accepted for a uniform interface and only ``"none"`` changes nothing:
``"checkpoint"`` recomputes each residual block in backward (keeping its input), and
``"reversible"`` is rejected (these networks have no inverse).
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import nn

from ..reversible import MemoryMode
from .base import SpikingModel, check_input
from .common import (
    NeuronFactory,
    RecomputedPart,
    SpikingHead,
    StaticStem,
    conv_bn,
    fold,
    init_weights,
    neuron_factory,
    unfold,
)
from .init import transformer_init
from .registry import register_model
from .revsformer import SpikingMLP, SpikingSelfAttention, SpikingTokenizer, TokenHead

__all__ = ["MSResNet", "MSBasicBlock", "Spikingformer", "SpikingformerBlock"]


def _check_mode(mode: Union[str, MemoryMode], who: str) -> MemoryMode:
    mode = MemoryMode.parse(mode)
    if mode is MemoryMode.REVERSIBLE:
        raise ValueError(
            f"{who} is not reversible: memory_mode must be 'none' or 'checkpoint', got "
            "'reversible'"
        )
    return mode


class _Residual(RecomputedPart):
    """A residual block recomputed in backward in ``"checkpoint"`` mode."""

    @property
    def memory_mode(self) -> MemoryMode:
        return self._memory_mode

    @memory_mode.setter
    def memory_mode(self, mode: Union[str, MemoryMode]) -> None:
        self._memory_mode = _check_mode(mode, type(self).__name__)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)


class MSBasicBlock(_Residual):
    """out = BN(conv3x3(IF(BN(conv3x3_s(IF(x)))))) + shortcut(x) on ``[T, B, c_in, H, W]``."""

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


class MSResNet(SpikingModel):
    """MS-ResNet with any per-stage block counts (see the module docstring)."""

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
        super().__init__()
        blocks, widths = [int(n) for n in blocks], [int(w) for w in widths]
        if len(blocks) != len(widths) or not blocks or min(blocks) < 1:
            raise ValueError(f"need one block count >= 1 per width, got {blocks}, {widths}")
        if int(T) < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        self.num_classes, self.T, self.in_channels = int(num_classes), int(T), int(in_channels)
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
        init_weights(self)
        self.set_memory_mode(_check_mode(memory_mode, type(self).__name__))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = check_input(x, self.in_channels, self.T, type(self).__name__)
        return self.head(self.layers(self.stem(x, self.T)))

    def set_memory_mode(self, mode) -> MSResNet:
        return super().set_memory_mode(_check_mode(mode, type(self).__name__))

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = int(num_classes)
        self.head.replace_fc(num_classes)


class SpikingformerBlock(_Residual):
    """x <- x + SSA(x); x <- x + MLP(x) on ``[T, B, D, h, w]``."""

    def __init__(self, D: int, heads: int, nf, attn_nf, mlp_ratio: int, lean: bool) -> None:
        super().__init__()
        self.attn = SpikingSelfAttention(D, heads, nf, attn_nf, lean)
        self.mlp = SpikingMLP(D, nf, mlp_ratio, lean)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class Spikingformer(SpikingModel):
    """Spikingformer-L-D: RevSFormer's tokenizer and branches with plain residual blocks."""

    def __init__(
        self,
        depth: int = 4,
        embed_dim: int = 384,
        num_heads: int = 12,
        mlp_ratio: int = 4,
        num_classes: int = 10,
        T: int = 4,
        in_channels: int = 3,
        memory_mode: Union[str, MemoryMode] = "none",
        tau: float = 2.0,
        attn_v_threshold: float = 0.5,
        lean: bool = False,
    ) -> None:
        super().__init__()
        if int(depth) < 1 or int(T) < 1:
            raise ValueError(f"depth and T must be >= 1, got {depth}, {T}")
        self.num_classes, self.T, self.in_channels = int(num_classes), int(T), int(in_channels)
        self.depth, self.embed_dim = int(depth), int(embed_dim)
        D = self.embed_dim
        nf = neuron_factory("lif", tau=tau, lean=lean)
        attn_nf = neuron_factory("lif", tau=tau, v_threshold=attn_v_threshold, lean=lean)
        self.tokenizer = SpikingTokenizer(in_channels, D, nf, lean)
        self.blocks = nn.Sequential(
            *[SpikingformerBlock(D, num_heads, nf, attn_nf, mlp_ratio, lean) for _ in range(depth)]
        )
        self.head = TokenHead(D, num_classes)
        transformer_init(self)  # as RevSFormer (the published code initialises both so)
        self.set_memory_mode(_check_mode(memory_mode, type(self).__name__))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = check_input(x, self.in_channels, self.T, type(self).__name__)
        return self.head(self.blocks(self.tokenizer(x, self.T)))

    def set_memory_mode(self, mode) -> Spikingformer:
        return super().set_memory_mode(_check_mode(mode, type(self).__name__))

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = int(num_classes)
        self.head.replace_fc(num_classes)


@register_model
def ms_resnet18(**kwargs) -> MSResNet:
    """MS-ResNet18: (2, 2, 2, 2) blocks; 11,220,132 parameters with 100 classes."""
    return MSResNet(blocks=(2, 2, 2, 2), **kwargs)


@register_model
def ms_resnet34(**kwargs) -> MSResNet:
    """MS-ResNet34: (3, 4, 6, 3) blocks; 21,328,292 parameters with 100 classes."""
    return MSResNet(blocks=(3, 4, 6, 3), **kwargs)


@register_model
def spikingformer_2_384(**kwargs) -> Spikingformer:
    """Spikingformer-2-384 (12 heads)."""
    return Spikingformer(depth=2, embed_dim=384, num_heads=12, **kwargs)


@register_model
def spikingformer_4_384(**kwargs) -> Spikingformer:
    """Spikingformer-4-384 (12 heads)."""
    return Spikingformer(depth=4, embed_dim=384, num_heads=12, **kwargs)


@register_model
def ms_resnet_test(**kwargs) -> MSResNet:
    """Tiny MS-ResNet for tests: widths 4/8, (1, 1) blocks, T = 2."""
    kw = dict(T=2)
    kw.update(kwargs)
    return MSResNet(blocks=(1, 1), widths=(4, 8), **kw)


@register_model
def spikingformer_test(**kwargs) -> Spikingformer:
    """Tiny Spikingformer for tests: L = 1, D = 16, 2 heads, T = 2."""
    kw = dict(T=2)
    kw.update(kwargs)
    return Spikingformer(depth=1, embed_dim=16, num_heads=2, **kw)
