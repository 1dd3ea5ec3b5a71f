"""Parts of the spiking transformers (RevSFormer, Spikingformer; Zhang & Zhang, AAAI 2024).

Tokenizer: conv3x3 -> BN (no spike), then 4 x [LIF -> conv3x3 -> BN] with a max-pool 3x3 s2 on
the spikes before the conv; channels D/8, D/4, D/2, D, D. As in the published code, the static
tokenizer (``kind="static"``, CIFAR) pools before the last two stages (tokens at 1/4
resolution), the event tokenizer (``kind="events"``, DVS128 Gesture and CIFAR10-DVS) before
all four (tokens at 1/16: 8x8 tokens for 128x128 frames).

Spiking self-attention on ``[T, B, D, h, w]`` (N = h w tokens, ``heads`` heads of
``d = D / heads`` channels, 1x1 convolutions over tokens)::

    s = LIF(x);  q = LIF(BN(W_q s)),  k = LIF(BN(W_k s)),  v = LIF(BN(W_v s))
    a = (q k^T) v * 0.125   per head (no softmax)
    SSA(x) = BN(W_o LIF_{v_th=0.5}(a) + b_o)

Spiking MLP: ``BN(W_2 LIF(BN(W_1 LIF(x) + b_1)) + b_2)``, hidden 4 D.

Memory: lean neurons, spike convolutions saving bool, attention saving bool q/k/v.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn

from ..reversible.mode import MemoryMode
from ..reversible.part import RecomputedPart
from ..spiking.binary import (
    SpikeMaxPool2d,
    plain_spike_attention,
    spike_attention,
)
from ..spiking.norm import norm_spike
from .blocks import (
    BINARY_INPUT,
    NeuronFactory,
    StaticStem,
    conv_bn,
    fold,
    unfold,
)
from .init import trunc_normal_linear_

__all__ = [
    "SpikingTokenizer", "SpikingSelfAttention", "SpikingMLP", "TokenHead", "TOKENIZER_POOLS",
    "tokenizer_plan",
]


def tokenizer_plan(prefix: str, mode: MemoryMode) -> Dict[str, MemoryMode]:
    """The default per-part modes of a tokenizer at ``prefix``: the stem and the two largest
    stages in ``mode``, the two later stages as plain graphs (see :class:`SpikingTokenizer`)."""
    if mode is MemoryMode.NONE:
        return {}
    return {f"{prefix}.stages.2": MemoryMode.NONE, f"{prefix}.stages.3": MemoryMode.NONE}


class _TokenizerStage(RecomputedPart):
    """[max-pool] -> conv3x3 -> BN [-> LIF] on spikes ``[T, B, c_in, H, W]``; its input is
    binary, so outside ``"none"`` it is kept as bool and the stage is recomputed."""

    input_pack = BINARY_INPUT

    def __init__(
        self, c_in: int, c_out: int, pool: bool, neuron: Optional[nn.Module], lean: bool,
    ) -> None:
        super().__init__()
        self.pool = (SpikeMaxPool2d(3, 2, 1) if lean else nn.MaxPool2d(3, 2, 1)) if pool else None
        self.conv = conv_bn(c_in, c_out, 3, lean=lean)
        self.sn = neuron

    def body(self, s: torch.Tensor) -> torch.Tensor:
        y = fold(s)  # [T*B, c_in, H, W]
        if self.pool is not None:
            y = self.pool(y)
        if self.sn is None:
            return unfold(self.conv(y), s.shape[0])  # [T, B, c_out, H', W']
        return norm_spike(self.conv[0](y), self.conv[1], self.sn, s.shape[0])  # LIF(BN(conv))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.run(s)


#: stages preceded by a max-pool 3x3 s2, per tokenizer kind
TOKENIZER_POOLS = {"static": (False, False, True, True), "events": (True, True, True, True)}


class SpikingTokenizer(nn.Module):
    """conv3x3 -> BN, then 4 x [LIF -> (max-pool) -> conv3x3 -> BN]: ``[B, C, H, W]`` (repeated
    over T) or ``[T, B, C, H, W]`` -> ``[T, B, D, ~H/4, ~W/4]`` (``kind="static"``: pools
    before stages 3 and 4) or ``[T, B, D, ~H/16, ~W/16]`` (``kind="events"``: pools before
    every stage).

    The stem and the four stages are recomputed parts; :func:`tokenizer_plan` recomputes the
    stem and the two largest stages outside ``"none"`` and leaves the later, smaller stages as
    plain graphs: their backward runs, and frees what they saved, before the backward of the
    largest stages, where the network's memory peaks, so recomputing them would cost time and
    save no peak memory.
    """

    def __init__(
        self, in_channels: int, D: int, nf: NeuronFactory, lean: bool = True,
        kind: str = "static",
    ) -> None:
        super().__init__()
        if D % 8:
            raise ValueError(f"embedding width D must be divisible by 8, got {D}")
        if kind not in TOKENIZER_POOLS:
            raise ValueError(
                f"unknown tokenizer {kind!r}; expected one of {', '.join(TOKENIZER_POOLS)}"
            )
        self.kind = kind
        pools = TOKENIZER_POOLS[kind]
        chans = [D // 8, D // 4, D // 2, D, D]
        self.stem = StaticStem(in_channels, chans[0])
        self.sn0 = nf()
        self.stages = nn.ModuleList(
            _TokenizerStage(chans[i], chans[i + 1], pool=pools[i],
                            neuron=nf() if i < 3 else None, lean=lean)
            for i in range(4)
        )

    def forward(self, x: torch.Tensor, T: int) -> torch.Tensor:
        s = self.sn0(self.stem(x, T))  # [T, B, D/8, H, W] spikes
        for stage in self.stages:
            s = stage(s)
        return s.to(self.stem.conv.weight.dtype)  # [T, B, D, h, w], float32 under autocast


class SpikingSelfAttention(nn.Module):
    """Spiking self-attention F on ``[T, B, D, h, w]`` (see the module docstring)."""

    def __init__(
        self, D: int, heads: int, nf: NeuronFactory, attn_nf: NeuronFactory, lean: bool = True,
        scale: float = 0.125,
    ) -> None:
        super().__init__()
        if D % heads:
            raise ValueError(f"D = {D} is not divisible by heads = {heads}")
        self.D, self.heads, self.scale, self.lean = D, heads, float(scale), lean
        self.sn = nf()
        self.q = conv_bn(D, D, 1, lean=lean)
        self.k = conv_bn(D, D, 1, lean=lean)
        self.v = conv_bn(D, D, 1, lean=lean)
        self.q_sn, self.k_sn, self.v_sn = nf(), nf(), nf()
        self.attn_sn = attn_nf()
        self.proj = conv_bn(D, D, 1, spike_input=True, bias=True, lean=lean)

    def _heads(self, z: torch.Tensor) -> torch.Tensor:
        T, B, D, h, w = z.shape
        # [T, B, D, h, w] -> [T, B, heads, d, N] -> [T, B, heads, N, d]
        return z.reshape(T, B, self.heads, D // self.heads, h * w).transpose(-2, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[0]
        s = fold(self.sn(x))  # [T*B, D, h, w]
        q = self._heads(norm_spike(self.q[0](s), self.q[1], self.q_sn, T))  # LIF(BN(W_q s))
        k = self._heads(norm_spike(self.k[0](s), self.k[1], self.k_sn, T))
        v = self._heads(norm_spike(self.v[0](s), self.v[1], self.v_sn, T))
        del s  # (float copies are dropped as soon as they are consumed; see SpikingMLP)
        attend = spike_attention if self.lean else plain_spike_attention
        a = attend(q, k, v, self.scale)  # [T, B, heads, N, d]
        del q, k, v
        a = self.attn_sn(a.transpose(-2, -1).reshape(x.shape))  # [T, B, D, h, w] spikes
        c = self.proj[0](fold(a))
        del a
        return unfold(self.proj[1](c), T)


class SpikingMLP(nn.Module):
    """Spiking MLP G: LIF -> conv1x1 (D -> hD) -> BN -> LIF -> conv1x1 (hD -> D) -> BN."""

    def __init__(self, D: int, nf: NeuronFactory, ratio: int = 4, lean: bool = True) -> None:
        super().__init__()
        hidden = int(D * ratio)
        self.sn1 = nf()
        self.fc1 = conv_bn(D, hidden, 1, bias=True, lean=lean)
        self.sn2 = nf()
        self.fc2 = conv_bn(hidden, D, 1, bias=True, lean=lean)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[0]
        h = fold(norm_spike(self.fc1[0](fold(self.sn1(x))), self.fc1[1], self.sn2, T))
        c = self.fc2[0](h)  # [T*B, D, h, w]
        del h  # the conv keeps the hidden spikes as bool; drop the float copy before BN
        return unfold(self.fc2[1](c), T)  # [T, B, D, h, w]


class TokenHead(nn.Module):
    """Mean over tokens -> mean over T -> Linear: ``[T, B, c, h, w] -> [B, classes]``. Head
    protocol: ``classifier`` is ``fc``."""

    def __init__(self, c: int, num_classes: int) -> None:
        super().__init__()
        self.c = int(c)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(3, 4)).mean(0))  # [T, B, c] -> [B, c] -> [B, K]

    @property
    def classifier(self) -> nn.Module:
        return self.fc

    def replace_classifier(self, num_classes: int) -> None:
        """A fresh classifier, initialised as the model's: ``N(0, 0.02^2)`` truncated, bias 0."""
        p = self.fc.weight
        fc = nn.Linear(self.c, num_classes).to(device=p.device, dtype=p.dtype)
        trunc_normal_linear_(fc)
        self.fc = fc
