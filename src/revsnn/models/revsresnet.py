"""RevSResNet (Zhang & Zhang, AAAI 2024): reversible spiking ResNets.

Static images (direct encoding)::

    x [B, 3, H, W] -> conv3x3 s1 + BN -> repeat T -> [T, B, 2 w_1, H, W]
    -> RevSeq_1 -> DS_1 -> RevSeq_2 -> DS_2 -> ... -> RevSeq_K
    -> IF -> global average pool -> FC(2 w_K -> classes) -> mean over T -> [B, classes]

Each RevSeq_k holds n_k :class:`~revsnn.reversible.RevCoupling` blocks on halves of width w_k,
``y1 = x1 + F(x2), y2 = x2 + G(y1)`` with F = G = IF -> conv3x3 -> BN -> IF -> conv3x3 -> BN.
DS_k = IF -> AvgPool 3x3 s2 -> conv1x1 (2 w_k -> 2 w_{k+1}) -> BN on the whole stream.
Depth N = 1 (stem) + 4 sum(n_k) + (K - 1) (DS) + 1 (FC); with four stages N = 5 + 4 sum(n_k).

Memory (beyond the published code): with ``lean=True`` (default) the neurons save only their
input and the convolutions after a neuron save their spikes as ``bool``; in the
``"checkpoint"``/``"reversible"`` modes the stem and the first DS layer keep only their input
and recompute themselves in backward (:class:`~revsnn.models.staged.StagedResNet`'s default
plan). A DS layer's input is the output of the reversible sequence before it, which that
sequence keeps anyway, so in ``"reversible"`` mode the whole network holds little more than the
K stage outputs between forward and backward.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple, Union

from torch import nn

from ..reversible import MemoryMode, RevCoupling, ReversibleSequence
from .blocks import ConvBranch, EventStem, neuron_factory
from .families import REVSNN
from .published import BN, WB, NameRule, PublishedLayout, group_int
from .registry import register_model
from .staged import StagedResNet

__all__ = ["RevSResNet"]


class RevSResNet(StagedResNet):
    """Reversible spiking ResNet with any per-stage block counts.

    Args:
        blocks: blocks per stage (n_1, ..., n_K), each >= 1.
        widths: half-stream width per stage (w_1, ..., w_K); the stem outputs 2 w_1 channels.
        num_classes, T, in_channels: classes, time steps, input channels.
        memory_mode: "none" | "checkpoint" | "reversible", or a per-part mapping.
        neuron: "if" (ATan alpha=2, static images) or "lif" (Sigmoid alpha=4, tau).
        tau: LIF time constant (ignored for IF).
        stem: "static" (conv3x3 s1 + BN) or "event" (conv3x3 s2 + BN + AvgPool 3x3 s2).
        lean: memory-lean neurons and spike convolutions (same values and gradients).
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
        lean: bool = True,
        inplace_inverse: bool = True,
    ) -> None:
        super().__init__(num_classes, T, in_channels, memory_mode)
        chans = self._build_stem(blocks, widths, stem)
        nf = neuron_factory(neuron, tau=tau, lean=lean)
        self.stages = nn.ModuleList(
            ReversibleSequence(
                [RevCoupling(ConvBranch(w, nf, lean), ConvBranch(w, nf, lean)) for _ in range(n)],
                inplace_inverse=inplace_inverse,
            )
            for n, w in zip(self.blocks, self.widths)
        )
        self._build_tail(chans, nf, lean)

    def extra_repr(self) -> str:
        return f"depth={self.depth}, blocks={self.blocks}, widths={self.widths}, T={self.T}"


# ------------------------------------------------------------------------------- published code
# RevSResNet (CIFAR ``revs_resnet.py`` and the event ``revs_resnet24``): conv1/bn1 stem,
# layer{s}.reversible_blocks.{b}.{f,g}_block.conv{1,2}.{0: conv, 1: BN}, ds{k}.1.{1: conv,
# 2: BN} (ds{k}.0 is the neuron), fc.
def _revsresnet_rules(event: bool) -> List[NameRule]:
    stem = r"\.0" if event else ""  # the event stem's conv1 / bn1 are Sequentials
    return [
        NameRule(rf"conv1{stem}\.weight", lambda g, m: "stem.conv.weight"),
        NameRule(rf"bn1{stem}\.{BN}", lambda g, m: f"stem.bn.{g['p']}"),
        NameRule(
            rf"layer(?P<s>\d+)\.reversible_blocks\.(?P<b>\d+)\.(?P<fg>[fg])_block\."
            rf"conv(?P<c>[12])\.(?P<i>[01])\.{BN}",
            lambda g, m: f"stages.{group_int(g, 's', 1)}.blocks.{g['b']}.{g['fg']}.conv{g['c']}."
            f"{g['i']}.{g['p']}",
        ),
        NameRule(r"ds(?P<k>\d+)\.1\.1\.weight",
                 lambda g, m: f"downsamples.{group_int(g, 'k', 1)}.conv.weight"),
        NameRule(rf"ds(?P<k>\d+)\.1\.2\.{BN}",
                 lambda g, m: f"downsamples.{group_int(g, 'k', 1)}.bn.{g['p']}"),
        NameRule(rf"fc\.{WB}", lambda g, m: f"head.fc.{g['p']}"),
    ]


_REVSRESNET_RULES = _revsresnet_rules(event=False)
_REVSRESNET_EVENT_RULES = _revsresnet_rules(event=True)


def _rules(model: RevSResNet) -> Tuple[str, List[NameRule]]:
    if isinstance(model.stem, EventStem):
        return "revsresnet_events", _REVSRESNET_EVENT_RULES
    return "revsresnet", _REVSRESNET_RULES


PUBLISHED = PublishedLayout(_rules, classifiers=(r"fc\.weight",),
                            first_convs=(r"conv1(\.0)?\.weight",))


register_model("revs_resnet21", RevSResNet, REVSNN,
               "RevSResNet21, n = (1, 1, 1, 1) (11,048,420 parameters with 100 classes)",
               blocks=(1, 1, 1, 1), published=PUBLISHED)
register_model("revs_resnet37", RevSResNet, REVSNN,
               "RevSResNet37, n = (1, 2, 3, 2) (23,590,884 parameters with 100 classes)",
               blocks=(1, 2, 3, 2), published=PUBLISHED)
register_model("revs_resnet109", RevSResNet, REVSNN,
               "RevSResNet109, n = (2, 4, 16, 4) (70,075,876 parameters with 100 classes)",
               blocks=(2, 4, 16, 4), published=PUBLISHED)
register_model("revs_resnet24", RevSResNet, REVSNN,
               "RevSResNet24 for event frames: event stem, halves 16/32/48, n = (1, 2, 2), "
               "LIF tau 1.5", image_size=128, input="frames", blocks=(1, 2, 2),
               widths=(16, 32, 48), in_channels=2, T=10, neuron="lif", tau=1.5, stem="event",
               published=PUBLISHED)
register_model("revs_resnet_test", RevSResNet, REVSNN,
               "tiny RevSResNet for tests: halves 4/8, n = (1, 2)", image_size=8,
               blocks=(1, 2), widths=(4, 8), T=2, published=PUBLISHED)
