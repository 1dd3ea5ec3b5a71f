"""The skeleton shared by RevSResNet and ParaRevSNN-ResNet::

    x -> stem -> stage_1 -> DS_1 -> stage_2 -> ... -> DS_{K-1} -> stage_K -> head -> [B, classes]

Stages are reversible sequences (:class:`~revsnn.reversible.ReversibleSequence`) on streams of
``2 w_k`` channels; DS_k and the stem are recomputed parts, the head a
:class:`~revsnn.models.blocks.SpikingHead`. Depth N = 1 (stem) + 4 sum(n_k) + (K - 1) (DS) + 1
(FC); with four stages N = 5 + 4 sum(n_k).
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from torch import nn

from ..reversible.mode import MemoryMode
from .base import SpikingModel
from .blocks import Downsample, EventStem, NeuronFactory, SpikingHead, StaticStem
from .init import kaiming_fan_out

__all__ = ["StagedResNet"]

STEMS = {"static": StaticStem, "event": EventStem}


class StagedResNet(SpikingModel):
    """``stem -> stage_1 -> DS -> stage_2 -> ... -> head``; subclasses build ``self.stages``
    between :meth:`_build_stem` and :meth:`_build_tail`.

    Default plan outside ``"none"``: every stage, the stem and the first DS layer in the chosen
    mode; the later DS layers as plain graphs (see :class:`~revsnn.models.blocks.Downsample`).
    """

    def _build_stem(self, blocks: Sequence[int], widths: Sequence[int], stem: str) -> List[int]:
        """Check the stage layout, set the depth ``5 + 4 sum(n_i)``, build the stem; returns
        the stream widths ``2 w_k``."""
        blocks, widths = [int(n) for n in blocks], [int(w) for w in widths]
        if len(blocks) != len(widths) or not blocks:
            raise ValueError(
                f"blocks and widths need one entry per stage, got {blocks} and {widths}"
            )
        if min(blocks) < 1 or min(widths) < 1:
            raise ValueError(f"every stage needs >= 1 block and width >= 1, got {blocks}, {widths}")
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}; expected 'static' or 'event'")
        self.blocks, self.widths = tuple(blocks), tuple(widths)
        self.depth = 1 + 4 * sum(blocks) + (len(blocks) - 1) + 1
        chans = [2 * w for w in widths]
        self.stem = STEMS[stem](self.in_channels, chans[0])
        return chans

    def _build_tail(self, chans: Sequence[int], nf: NeuronFactory, lean: bool) -> None:
        """DS layers, head, the published initialisation (Kaiming normal, fan_out)."""
        self.downsamples = nn.ModuleList(
            Downsample(chans[k], chans[k + 1], nf, lean=lean) for k in range(len(chans) - 1)
        )
        self.head = SpikingHead(chans[-1], self.num_classes, nf)
        kaiming_fan_out(self)

    def default_plan(self, mode: MemoryMode) -> Dict[str, MemoryMode]:
        if mode is MemoryMode.NONE:
            return {"*": mode}
        return {"*": mode, "downsamples.*": MemoryMode.NONE, "downsamples.0": mode}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` or ``[T, B, C, H, W]`` -> last stage output ``[T, B, 2 w_K, h, w]``."""
        x, _ = self.check_input(x)
        z = self.stem(x, self.T)  # [T, B, 2 w_1, H', W']
        for k, stage in enumerate(self.stages):
            if k > 0:
                z = self.downsamples[k - 1](z)  # [T, B, 2 w_k, H/2^k, W/2^k]
            z = stage(z)
        return z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))  # [B, num_classes]
