"""ParaRevSNN-ResNet (Xu et al., AAAI 2026): reversible spiking ResNets with parallel blocks.

The skeleton is RevSResNet's (stem, downsampling and head from :mod:`revsnn.models.blocks`)::

    x [B, 3, H, W] -> conv3x3 s1 + BN -> repeat T -> [T, B, 2 w_1, H, W]
    -> ParaRevSeq_1 -> DS_1 -> ParaRevSeq_2 -> DS_2 -> ... -> ParaRevSeq_K
    -> S -> global average pool -> FC(2 w_K -> classes) -> mean over T -> [B, classes]

but every block is a :class:`~revsnn.reversible.ParaRevCoupling`, inputs of F and G swapped::

    y1 = x2 + F(x1)        y2 = x1 + G(y1)        (inverse: x1 = y2 - G(y1), x2 = y1 - F(x1))

so that G_k and F_{k+1} read the same y1 and are evaluated together by one module
M_k(y1) = (G_k(y1), F_{k+1}(y1)) (:mod:`revsnn.models.pararev_blocks`). A stage of n blocks
runs n + 1 stages of work (F_0, M_0 ... M_{n-2}, G_{n-1}) instead of RevSResNet's 2n, in the
forward and again in the reversible backward.

``merge`` picks M_k:

- ``"fused"`` (default): the paper's merged reversible block
  S -> conv3x3 -> GroupNorm -> S -> conv3x3 (doubled output channels) -> BN -> split.
  G_k and F_{k+1} share the first convolution, so a merged pair has 27 w^2 + 6 w weights
  instead of 36 w^2 + 8 w: ParaRevSNN has *fewer* parameters than RevSResNet wherever a stage
  has n >= 2 (at depth 21, n = (1, 1, 1, 1), there is no pair and the counts are equal).
- ``"pair"``: M_k holds two separate RevSResNet branches, parameter-for-parameter the same
  network as RevSResNet at the same block counts (only the coupling order differs); with
  ``streams=True`` and CUDA inputs, G_k and F_{k+1} run on two CUDA streams.

Depth N = 1 + 4 sum(n_k) + (K - 1) + 1 = 5 + 4 sum(n_k) with four stages. Block counts:
21: (1, 1, 1, 1); 37: (1, 2, 3, 2) (as RevSResNet37); 69: (2, 4, 8, 2); 117: (2, 6, 18, 2);
165: (3, 8, 26, 3) (our choice: every stage n >= 2, so every stage has a pair).

Where the pairs are fused (``fuse_from``): a fused stage computes G_k and F_{k+1} at once, so its
recomputation holds the 2C-channel convolution output and gradient -- twice a single branch's.
In the full-resolution first stage that exceeds RevSResNet's peak (measured, CPU, T=4, 32x32:
ParaRevSNN69 11.5 vs 8.25 MiB per image with every stage fused). The registered ResNets
therefore fuse from the second stage on (``fuse_from=1``) and evaluate the first stage's G_k and
F_{k+1} one after the other; that stage holds 1 of the 12 / 24 pairs of the 69 / 117-layer
models (2 of 36 at 165), so nearly all of the speed-up remains.
Neurons: IF (ATan alpha = 2) on static images, PLIF (learnable tau, init 2, Sigmoid alpha = 4)
on event frames.
"""

from __future__ import annotations

from typing import List, Sequence, Union

from torch import nn

from ..reversible import MemoryMode, ParaRevCoupling, ReversibleSequence
from ..spiking import PLIF, Sigmoid
from .blocks import ConvBranch, NeuronFactory, neuron_factory
from .families import PARAREVSNN
from .pararev_blocks import BranchPair, MergedBlock
from .registry import register_model
from .staged import StagedResNet

__all__ = ["ParaRevSNN", "MERGE_KINDS", "BLOCKS"]

MERGE_KINDS = ("fused", "pair")

# Blocks per stage of the registered static-image variants (depth -> (n_1, n_2, n_3, n_4)).
BLOCKS = {
    21: (1, 1, 1, 1),
    37: (1, 2, 3, 2),
    69: (2, 4, 8, 2),
    117: (2, 6, 18, 2),
    165: (3, 8, 26, 3),
}


def plif_factory(tau: float = 2.0, alpha: float = 4.0) -> NeuronFactory:
    """PLIF neurons (learnable tau initialised at ``tau``, Sigmoid surrogate ``alpha``)."""
    return lambda: PLIF(tau_init=tau, surrogate=Sigmoid(alpha))


class ParaRevSNN(StagedResNet):
    """ParaRevSNN-ResNet with any per-stage block counts.

    Args:
        blocks: blocks per stage (n_1, ..., n_K), each >= 1.
        widths: half-stream width per stage (w_1, ..., w_K); the stem outputs 2 w_1 channels.
        num_classes, T, in_channels: classes, time steps, input channels.
        memory_mode: "none" | "checkpoint" | "reversible", or a per-part mapping.
        neuron: "if" (ATan alpha=2), "plif" (learnable tau init ``tau``, Sigmoid alpha=4) or
            "lif" (fixed ``tau``, Sigmoid alpha=4).
        tau: LIF time constant / PLIF initial time constant (ignored for IF).
        stem: "static" (conv3x3 s1 + BN) or "event" (conv3x3 s2 + BN + AvgPool 3x3 s2).
        merge: "fused" (the merged reversible block) or "pair" (separate G_k, F_{k+1}).
        streams: with ``merge="pair"``, run G_k and F_{k+1} on two CUDA streams for CUDA
            inputs (no effect on CPU or with ``merge="fused"``).
        gn_groups: the merged block's GroupNorm uses ``gcd(w_k, gn_groups)`` groups.
        fuse_from: with ``merge="fused"``, stages before this index (0-based) keep G_k and
            F_{k+1} as two branches evaluated one after the other (RevSResNet's parameters and
            memory). 0 fuses every stage (the paper); the registered ResNets use 1, see the
            module docstring.
        lean: memory-lean IF/LIF neurons and spike convolutions (same values and gradients;
            PLIF is always the plain neuron).
        inplace_inverse: the reversible backward may rebuild each stage's input inside the
            storage of its saved output when nothing else can observe it.
    """

    def __init__(
        self,
        blocks: Sequence[int] = (1, 1, 1, 1),
        widths: Sequence[int] = (64, 128, 256, 448),
        num_classes: int = 10,
        T: int = 4,
        in_channels: int = 3,
        memory_mode: Union[str, MemoryMode] = "reversible",
        neuron: str = "if",
        tau: float = 2.0,
        stem: str = "static",
        merge: str = "fused",
        streams: bool = False,
        fuse_from: int = 0,
        gn_groups: int = 32,
        lean: bool = True,
        inplace_inverse: bool = True,
    ) -> None:
        super().__init__(num_classes, T, in_channels, memory_mode)
        chans = self._build_stem(blocks, widths, stem)
        if merge not in MERGE_KINDS:
            raise ValueError(f"unknown merge {merge!r}; expected one of {MERGE_KINDS}")
        self.merge, self.streams = merge, bool(streams)
        if int(fuse_from) < 0:
            raise ValueError(f"fuse_from must be >= 0, got {fuse_from}")
        self.fuse_from = int(fuse_from)
        self.inplace_inverse = bool(inplace_inverse)
        if neuron == "plif":
            nf = plif_factory(tau)
        elif neuron in ("if", "lif"):
            nf = neuron_factory(neuron, tau=tau, lean=lean)
        else:
            raise ValueError(f"unknown neuron {neuron!r}; expected 'if', 'plif' or 'lif'")
        self.stages = nn.ModuleList(
            self._sequence(
                n, w, nf, gn_groups, lean, fused=merge == "fused" and k >= self.fuse_from
            )
            for k, (n, w) in enumerate(zip(self.blocks, self.widths))
        )
        self._build_tail(chans, nf, lean)

    def _sequence(
        self, n: int, w: int, nf: NeuronFactory, gn_groups: int, lean: bool, fused: bool
    ) -> ReversibleSequence:
        """n ParaRev blocks on halves of width w: F_0, n - 1 merged modules M_k, G_{n-1}."""
        if n == 1 or (self.merge == "fused" and not fused):
            # No pair to merge, or a stage before ``fuse_from``: every block has its own F and
            # G, evaluated one branch per stage (RevSResNet's memory and parameters).
            couplings = [
                ParaRevCoupling(ConvBranch(w, nf, lean), ConvBranch(w, nf, lean)) for _ in range(n)
            ]
            return ReversibleSequence(
                couplings, inplace_inverse=self.inplace_inverse, pair_stages=n == 1
            )
        couplings = [
            ParaRevCoupling(
                ConvBranch(w, nf, lean) if k == 0 else None,
                ConvBranch(w, nf, lean) if k == n - 1 else None,
            )
            for k in range(n)
        ]
        merged: List[nn.Module] = []
        for _ in range(n - 1):
            if fused:
                merged.append(MergedBlock(w, nf, gn_groups, lean))
            else:
                merged.append(
                    BranchPair(ConvBranch(w, nf, lean), ConvBranch(w, nf, lean), self.streams)
                )
        return ReversibleSequence(
            couplings, merged=merged, inplace_inverse=self.inplace_inverse
        )

    def extra_repr(self) -> str:
        return (
            f"depth={self.depth}, blocks={self.blocks}, widths={self.widths}, T={self.T}, "
            f"merge={self.merge}, fuse_from={self.fuse_from}"
        )


register_model("pararevsnn_resnet21", ParaRevSNN, PARAREVSNN,
               "ParaRevSNN-ResNet21, n = (1, 1, 1, 1): no merged pair, RevSResNet21's size "
               "(11,048,420 parameters with 100 classes)", blocks=BLOCKS[21], fuse_from=1)
for _depth in (37, 69, 117, 165):
    _pairs = sum(n - 1 for n in BLOCKS[_depth])
    register_model(f"pararevsnn_resnet{_depth}", ParaRevSNN, PARAREVSNN,
                   f"ParaRevSNN-ResNet{_depth}, n = {BLOCKS[_depth]}, {_pairs} merged blocks "
                   "(fused from the second stage on)", blocks=BLOCKS[_depth], fuse_from=1)
register_model("pararevsnn_resnet24", ParaRevSNN, PARAREVSNN,
               "ParaRevSNN-ResNet24 for event frames: event stem, halves 16/32/48, "
               "n = (1, 2, 2), PLIF", image_size=128, input="frames", blocks=(1, 2, 2),
               widths=(16, 32, 48), in_channels=2, T=10, neuron="plif", tau=2.0, stem="event")
register_model("pararevsnn_test", ParaRevSNN, PARAREVSNN,
               "tiny ParaRevSNN for tests: halves 4/8, n = (2, 3) (even and odd)", image_size=8,
               blocks=(2, 3), widths=(4, 8), T=2)
