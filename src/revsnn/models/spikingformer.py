"""Spikingformer-L-D, the non-reversible counterpart of RevSFormer in the RevSNN paper's
comparisons: RevSFormer's tokenizer, then L residual blocks on D channels
``x <- x + SSA(x); x <- x + MLP(x)``, head mean over tokens and T -> Linear(D -> K)
(:mod:`revsnn.models.transformer`).

A baseline of the memory comparisons: plain neurons and convolutions by default
(``lean=False``); ``memory_mode`` is ``"none"`` or ``"checkpoint"`` (each residual block and the
largest tokenizer stages recomputed in backward).
"""

from __future__ import annotations

from typing import Dict, Union

import torch
from torch import nn

from ..reversible import MemoryMode
from ..reversible.part import PLAIN_MODES, RecomputedPart
from .base import SpikingModel
from .blocks import neuron_factory
from .families import SPIKINGFORMER
from .init import transformer_init
from .registry import register_model
from .transformer import (
    SpikingMLP,
    SpikingSelfAttention,
    SpikingTokenizer,
    TokenHead,
    tokenizer_plan,
)

__all__ = ["Spikingformer", "SpikingformerBlock"]


class SpikingformerBlock(RecomputedPart):
    """x <- x + SSA(x); x <- x + MLP(x) on ``[T, B, D, h, w]``."""

    supported_modes = PLAIN_MODES

    def __init__(self, D: int, heads: int, nf, attn_nf, mlp_ratio: int, lean: bool) -> None:
        super().__init__()
        self.attn = SpikingSelfAttention(D, heads, nf, attn_nf, lean)
        self.mlp = SpikingMLP(D, nf, mlp_ratio, lean)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)


class Spikingformer(SpikingModel):
    """Spikingformer-L-D: RevSFormer's tokenizer and branches with plain residual blocks."""

    supported_modes = PLAIN_MODES

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
        super().__init__(num_classes, T, in_channels, memory_mode)
        if int(depth) < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
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

    def default_plan(self, mode: MemoryMode) -> Dict[str, MemoryMode]:
        return {"*": mode, **tokenizer_plan("tokenizer", mode)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.check_input(x)
        return self.head(self.blocks(self.tokenizer(x, self.T)))


register_model("spikingformer_2_384", Spikingformer, SPIKINGFORMER,
               "Spikingformer-2-384, 12 heads", depth=2, embed_dim=384, num_heads=12)
register_model("spikingformer_4_384", Spikingformer, SPIKINGFORMER,
               "Spikingformer-4-384, 12 heads", depth=4, embed_dim=384, num_heads=12)
register_model("spikingformer_test", Spikingformer, SPIKINGFORMER,
               "tiny Spikingformer for tests: L = 1, D = 16", image_size=8, depth=1,
               embed_dim=16, num_heads=2, T=2)
