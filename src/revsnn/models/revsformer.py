"""RevSFormer-L-D (Zhang & Zhang, AAAI 2024): a reversible spiking transformer.

::

    x [B, C, H, W] -> tokenizer -> e [T, B, D, H/4, W/4] -> x = (e || e)  [T, B, 2D, H/4, W/4]
    -> L x RevCoupling(F = SSA, G = MLP) -> mean over tokens -> mean over T -> Linear(2D -> K)

Tokenizer: conv3x3 -> BN (no spike), then 4 x [LIF -> conv3x3 -> BN] with a max-pool 3x3 s2 on
the spikes before the conv; channels D/8, D/4, D/2, D, D. As in the published code, the static
tokenizer (``tokenizer="static"``, CIFAR) pools before the last two stages (tokens at 1/4
resolution), the event tokenizer (``tokenizer="events"``, DVS128 Gesture and CIFAR10-DVS) before
all four (tokens at 1/16: 8x8 tokens for 128x128 frames).

Spiking self-attention (F) on a half-stream ``[T, B, D, h, w]`` (N = h w tokens, ``heads``
heads of ``d = D / heads`` channels, 1x1 convolutions over tokens)::

    s = LIF(x);  q = LIF(BN(W_q s)),  k = LIF(BN(W_k s)),  v = LIF(BN(W_v s))
    a = (q k^T) v * 0.125   per head (no softmax)
    F(x) = BN(W_o LIF_{v_th=0.5}(a) + b_o)

Spiking MLP (G): ``BN(W_2 LIF(BN(W_1 LIF(x) + b_1)) + b_2)``, hidden 4 D.

Neurons: LIF tau = 2 (Sigmoid alpha = 4) on static images; tau = 1.5 on event frames.

Memory: lean neurons, spike convolutions saving bool, attention saving bool q/k/v; in
``"checkpoint"``/``"reversible"`` the stem and the first two tokenizer stages (the largest:
full resolution in the static tokenizer, 1/2 and 1/4 in the event one) are recomputed in
backward, each keeping only its input (spikes as ``bool``).
"""

from __future__ import annotations

from typing import Dict, List, Tuple, Union

import torch

from ..reversible import MemoryMode, RevCoupling, ReversibleSequence
from .base import SpikingModel
from .blocks import neuron_factory
from .families import REVSNN
from .init import transformer_init
from .published import BN, WB, NameRule, PublishedLayout, group_int
from .registry import register_model
from .transformer import (
    SpikingMLP,
    SpikingSelfAttention,
    SpikingTokenizer,
    TokenHead,
    tokenizer_plan,
)

__all__ = ["RevSFormer"]


class RevSFormer(SpikingModel):
    """Reversible spiking transformer RevSFormer-L-D.

    Args:
        depth: L, the number of reversible blocks.
        embed_dim: D, the width of one half-stream.
        num_heads: attention heads; mlp_ratio: MLP hidden ratio.
        num_classes, T, in_channels, memory_mode: as for every model.
        tau: LIF time constant; attn_v_threshold: threshold of the attention-output LIF.
        tokenizer: "static" (max-pool before the last two tokenizer stages, CIFAR) or "events"
            (before all four, DVS128 Gesture / CIFAR10-DVS), as in the published code.
        lean: memory-lean primitives (same values and gradients).

    Initialisation (published): PyTorch's default for convs (biases included), BN 1 / 0, the
    classifier ``N(0, 0.02^2)`` truncated with zero bias (:func:`~revsnn.models.init.
    transformer_init`).
        inplace_inverse: rebuild the blocks' input inside the saved output's storage in
            backward (see :class:`~revsnn.reversible.ReversibleSequence`).
    """

    def __init__(
        self,
        depth: int = 4,
        embed_dim: int = 384,
        num_heads: int = 12,
        mlp_ratio: int = 4,
        num_classes: int = 10,
        T: int = 4,
        in_channels: int = 3,
        memory_mode: Union[str, MemoryMode] = "reversible",
        tau: float = 2.0,
        attn_v_threshold: float = 0.5,
        tokenizer: str = "static",
        lean: bool = True,
        inplace_inverse: bool = True,
    ) -> None:
        super().__init__(num_classes, T, in_channels, memory_mode)
        if int(depth) < 1:
            raise ValueError(f"depth (number of blocks) must be >= 1, got {depth}")
        self.depth, self.embed_dim = int(depth), int(embed_dim)
        D = self.embed_dim
        nf = neuron_factory("lif", tau=tau, lean=lean)
        attn_nf = neuron_factory("lif", tau=tau, v_threshold=attn_v_threshold, lean=lean)
        self.tokenizer = SpikingTokenizer(in_channels, D, nf, lean, kind=tokenizer)
        self.blocks = ReversibleSequence(
            [
                RevCoupling(
                    SpikingSelfAttention(D, num_heads, nf, attn_nf, lean),
                    SpikingMLP(D, nf, mlp_ratio, lean),
                )
                for _ in range(self.depth)
            ],
            inplace_inverse=inplace_inverse,
        )
        self.head = TokenHead(2 * D, num_classes)
        transformer_init(self)

    def default_plan(self, mode: MemoryMode) -> Dict[str, MemoryMode]:
        return {"*": mode, **tokenizer_plan("tokenizer", mode)}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.check_input(x)
        e = self.tokenizer(x, self.T)  # [T, B, D, h, w]
        return self.blocks(torch.cat([e, e], dim=2))  # [T, B, 2D, h, w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    def extra_repr(self) -> str:
        return f"L={self.depth}, D={self.embed_dim}, T={self.T}, tokenizer={self.tokenizer.kind}"


# ------------------------------------------------------------------------------- published code
# RevSFormer: patch_embed (CIFAR: block0..block4; events: proj, proj1..proj4; {conv, bn}),
# block.reversible_blocks.{b}.f_block.{q,k,v,proj}_{conv,bn} (Conv1d + BatchNorm1d),
# block.reversible_blocks.{b}.g_block.mlp{1,2}_{conv,bn}, head (Linear).
def _revsformer_rules(event: bool) -> List[NameRule]:
    first, stage = (r"proj", r"proj(?P<i>[1-4])") if event else (r"block0", r"block(?P<i>[1-4])")
    blk = r"block\.reversible_blocks\.(?P<b>\d+)"
    return [
        NameRule(rf"patch_embed\.{first}_conv\.weight", lambda g, m: "tokenizer.stem.conv.weight"),
        NameRule(rf"patch_embed\.{first}_bn\.{BN}", lambda g, m: f"tokenizer.stem.bn.{g['p']}"),
        NameRule(rf"patch_embed\.{stage}_conv\.weight",
                 lambda g, m: f"tokenizer.stages.{group_int(g, 'i', 1)}.conv.0.weight"),
        NameRule(rf"patch_embed\.{stage}_bn\.{BN}",
                 lambda g, m: f"tokenizer.stages.{group_int(g, 'i', 1)}.conv.1.{g['p']}"),
        NameRule(rf"{blk}\.f_block\.(?P<x>q|k|v|proj)_conv\.{WB}",
                 lambda g, m: f"blocks.blocks.{g['b']}.f.{g['x']}.0.{g['p']}"),
        NameRule(rf"{blk}\.f_block\.(?P<x>q|k|v|proj)_bn\.{BN}",
                 lambda g, m: f"blocks.blocks.{g['b']}.f.{g['x']}.1.{g['p']}"),
        NameRule(rf"{blk}\.g_block\.mlp(?P<n>[12])_conv\.{WB}",
                 lambda g, m: f"blocks.blocks.{g['b']}.g.fc{g['n']}.0.{g['p']}"),
        NameRule(rf"{blk}\.g_block\.mlp(?P<n>[12])_bn\.{BN}",
                 lambda g, m: f"blocks.blocks.{g['b']}.g.fc{g['n']}.1.{g['p']}"),
        NameRule(rf"head\.{WB}", lambda g, m: f"head.fc.{g['p']}"),
    ]


_REVSFORMER_RULES = _revsformer_rules(event=False)
_REVSFORMER_EVENT_RULES = _revsformer_rules(event=True)


def _rules(model: RevSFormer) -> Tuple[str, List[NameRule]]:
    if model.tokenizer.kind == "events":
        return "revsformer_events", _REVSFORMER_EVENT_RULES
    return "revsformer", _REVSFORMER_RULES


PUBLISHED = PublishedLayout(_rules, classifiers=(r"head\.weight",),
                            first_convs=(r"patch_embed\.(block0|proj)_conv\.weight",))


register_model("revsformer_2_384", RevSFormer, REVSNN,
               "RevSFormer-2-384, 12 heads (5,766,586 parameters, 10 classes)",
               depth=2, embed_dim=384, num_heads=12, published=PUBLISHED)
register_model("revsformer_4_384", RevSFormer, REVSNN,
               "RevSFormer-4-384, 12 heads (9,323,962 parameters, 10 classes)",
               depth=4, embed_dim=384, num_heads=12, published=PUBLISHED)
register_model("revsformer_2_256", RevSFormer, REVSNN,
               "RevSFormer-2-256 for DVS128 Gesture / CIFAR10-DVS (num_classes=10): event "
               "tokenizer, 16 heads, LIF tau 1.5 (2,569,739 parameters)",
               image_size=128, input="frames", depth=2, embed_dim=256, num_heads=16,
               in_channels=2, T=10, num_classes=11, tau=1.5, tokenizer="events",
               published=PUBLISHED)
register_model("revsformer_test", RevSFormer, REVSNN, "tiny RevSFormer for tests: L = 2, D = 16",
               image_size=8, depth=2, embed_dim=16, num_heads=2, T=2, published=PUBLISHED)
