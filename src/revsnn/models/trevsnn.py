"""T-RevSNN (Hu et al., ICML 2024): temporal-reversible column networks.

:class:`TRevSNN`: the image is encoded once by the stem (``s``), then T columns of 4 levels
(resolutions /4, /8, /16, /16 with the ImageNet stem) run the column recurrence of
:class:`~revsnn.reversible.columns.TemporalColumns`::

    c_k^t = L_k^t(c_{k-1}^t, c_{k+1}^{t-1}) + alpha_k^t * c_k^{t-1},    c^0 = 0,  c_{-1}^t = s

Heads: one per column, for any T (the published model has one per column at T = 4; we keep that rule
for every T). Column t < T reads ``GAP(c_3^t)`` through a WS 1x1 conv; the last column reads
``GAP(S(c_3^T))`` through two WS 1x1 convs. The heads are the engine's readout (an argument of
each call), so in reversible mode they are recomputed from each rebuilt top state and nothing
is kept per column. ``forward`` returns the last head's logits;
``forward_heads`` returns every head (last = final) for the loss
``sum_i (i/n) CE_ls(out_i) + CE_ls(out_n)`` (``revsnn.models.objective.column_loss``).
Event variant: column t gets its own event stem (level 0's entry) and exactly frame t.
Its standard-BPTT counterpart is :mod:`revsnn.models.trevsnn_bptt`.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..reversible.columns import TemporalColumns
from ..reversible.mode import MemoryMode
from ..reversible.recompute import guard
from .base import SpikingModel
from .families import TREVSNN
from .init import trunc_normal_convs
from .published import BN, WB, WS, NameRule, PublishedCheckpointError, PublishedLayout, group_int
from .registry import register_model
from .trevsnn_blocks import (
    ColumnEventStem,
    ColumnHeads,
    ConvNeXtBlock,
    ImageStem,
    Level,
    SharedTail,
    Up,
    check_config,
    entry,
    stateless,
)

__all__ = ["TRevSNN", "SPIKE_THRESHOLDS"]

# Thresholds of the stateless spike: fires at 0.5, gradient window [0, 1].
SPIKE_THRESHOLDS = (0.0, 0.5, 1.0)


class TRevSNN(SpikingModel):
    """T-RevSNN over T columns; see the module docstring.

    Args:
        channels: level widths ``(C0, C1, C2, C3)``.
        T: number of columns (time steps).
        kernel: depthwise kernel size of the blocks.
        stem: "imagenet" (/4), "cifar" (full resolution) or "events" (per-column event stems).
        memory_mode: "reversible" (default), "checkpoint" or "none".
        alpha_init, alpha_floor, tolerance, store_every: see :class:`TemporalColumns`.
    """

    head_name = "heads"

    def __init__(
        self,
        channels: Sequence[int] = (64, 128, 256, 384),
        T: int = 4,
        kernel: int = 3,
        num_classes: int = 1000,
        in_channels: int = 3,
        stem: str = "imagenet",
        memory_mode: Union[str, MemoryMode] = MemoryMode.REVERSIBLE,
        alpha_init: float = 0.5,
        alpha_floor: float = 1e-3,
        tolerance: Optional[float] = None,
        store_every: int = 0,
    ) -> None:
        super().__init__(num_classes, T, in_channels, memory_mode)
        check_config(channels, kernel)
        if stem not in ("imagenet", "cifar", "events"):
            raise ValueError(f"unknown stem {stem!r}; expected 'imagenet', 'cifar' or 'events'")
        C = [int(c) for c in channels]
        self.channels, self.kernel = C, int(kernel)
        self.events = stem == "events"
        self.takes_frames = self.events  # image models encode one static image once
        self.stem = None if self.events else ImageStem(in_channels, C[0], stem)
        self.shared = nn.ModuleList(SharedTail(c, kernel) for c in C)  # block-2 pw2/dw2 per level
        columns = []
        for t in range(self.T):
            levels = []
            for k in range(4):
                first = ColumnEventStem(in_channels, C[0]) if (k == 0 and self.events) else None
                up = Up(C[k + 1], C[k], stateless) if (t > 0 and k < 3) else None
                levels.append(Level(
                    first or entry(k, C, stateless), up, ConvNeXtBlock(C[k], kernel, stateless),
                    ConvNeXtBlock(C[k], kernel, stateless, tail=self.shared[k]),
                ))
            columns.append(levels)
        self.columns = TemporalColumns(
            columns, C, alpha_init=alpha_init, alpha_floor=alpha_floor, tolerance=tolerance,
            store_every=store_every, thresholds=SPIKE_THRESHOLDS, state_dtype=torch.float64,
        )
        self.heads = ColumnHeads(C[3], self.num_classes, self.T)
        trunc_normal_convs(self)  # published: every conv N(0, 0.02^2) truncated, bias 0

    # ----------------------------------------------------------------------------- forward
    def _encode(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        """Static image: the stem output s, computed once. Event model: column t's frame."""
        x, static = self.check_input(x)
        if self.events:
            return [x] * self.T if static else list(x.unbind(0))  # [B, C, H, W] per column
        return self.stem(x)  # [B, C0, H', W'], shared by every column

    def _columns(self, x: torch.Tensor, every_head: bool) -> List[Optional[torch.Tensor]]:
        if len(self.heads) != self.T:
            raise ValueError(f"{type(self).__name__} needs one head per column (T={self.T}), "
                             f"got {len(self.heads)} in model.heads")
        heads = list(self.heads) if every_head else [None] * (self.T - 1) + [self.heads[-1]]
        return self.columns(self._encode(x), readout=heads)  # T x [B, classes] (or None)

    def forward_heads(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Logits of every column's head, ``[B, classes]`` each; the last is the final head
        (for the column loss, which uses them all; ``forward`` computes the final head only)."""
        return list(guard(self, *self._columns(x, every_head=True)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The final (last column's) logits ``[B, classes]``."""
        return self._columns(x, every_head=False)[-1]

    # ----------------------------------------------------------------------------- reports
    def memory_summary(self) -> Dict[str, Any]:
        """What REVERSIBLE training keeps (from the last training forward) and error bounds."""
        out = self.columns.memory_summary()
        out["stem"] = ("one event stem per column (its frame only)" if self.events
                       else "runs once per image, output kept for all columns")
        return out

    def reconstruction_error(self, x: torch.Tensor) -> Dict[str, Any]:
        """Measured rebuild error of the columns on input ``x`` (see TemporalColumns)."""
        with torch.no_grad():
            return self.columns.reconstruction_error(self._encode(x))


# ------------------------------------------------------------------------------- published code
# T-RevSNN (image stem): stem.down{1,2}.0 (WS convs), subnet{t}.alpha{k},
# subnet{t}.level{k}.fusion.{down,up}.encode_{conv,bn}, subnet{t}.level{k}.blocks.{0,1}.*
# (block 1's pwconv2_reuse / dwconv2_reuse: the level's shared tail), cls_blocks.{i}.
_LVL = r"subnet(?P<t>\d+)\.level(?P<k>[0-3])"


def _lvl(g: Dict[str, str]) -> str:
    return f"columns.levels.{g['t']}.{g['k']}"


_TREVSNN = [
    NameRule(rf"stem\.down(?P<n>[12])\.0\.{WS}",
             lambda g, m: f"stem.{group_int(g, 'n', 1)}.{g['p']}"),
    NameRule(r"subnet(?P<t>\d+)\.alpha(?P<k>[0-3])",
             lambda g, m: f"columns.alpha.{g['t']}.{g['k']}"),
    NameRule(rf"{_LVL}\.fusion\.down\.encode_conv\.weight",
             lambda g, m: f"{_lvl(g)}.entry.1.weight"),
    NameRule(rf"{_LVL}\.fusion\.down\.encode_bn\.{BN}",
             lambda g, m: f"{_lvl(g)}.entry.2.{g['p']}"),
    NameRule(rf"{_LVL}\.fusion\.up\.encode_conv\.weight", lambda g, m: f"{_lvl(g)}.up.conv.weight"),
    NameRule(rf"{_LVL}\.fusion\.up\.encode_bn\.{BN}", lambda g, m: f"{_lvl(g)}.up.bn.{g['p']}"),
    NameRule(rf"{_LVL}\.blocks\.0\.gamma", lambda g, m: f"{_lvl(g)}.block1.gamma"),
    NameRule(rf"{_LVL}\.blocks\.(?P<j>[01])\.dwconv1\.{WB}",
             lambda g, m: f"{_lvl(g)}.block{group_int(g, 'j') + 1}.dw1.{g['p']}"),
    NameRule(rf"{_LVL}\.blocks\.(?P<j>[01])\.pwconv1\.{WS}",
             lambda g, m: f"{_lvl(g)}.block{group_int(g, 'j') + 1}.pw1.{g['p']}"),
    NameRule(rf"{_LVL}\.blocks\.0\.pwconv2\.{WS}", lambda g, m: f"{_lvl(g)}.block1.pw2.{g['p']}"),
    NameRule(rf"{_LVL}\.blocks\.0\.dwconv2\.{WB}", lambda g, m: f"{_lvl(g)}.block1.dw2.{g['p']}"),
    NameRule(rf"{_LVL}\.blocks\.1\.pwconv2_reuse\.{WS}",
             lambda g, m: f"shared.{g['k']}.pw2.{g['p']}", shared=True),
    NameRule(rf"{_LVL}\.blocks\.1\.dwconv2_reuse\.{WB}",
             lambda g, m: f"shared.{g['k']}.dw2.{g['p']}", shared=True),
    NameRule(rf"cls_blocks\.(?P<i>\d+)\.classifier\.0\.{WS}",
             lambda g, m: f"heads.{g['i']}.conv.{g['p']}"),
    NameRule(rf"cls_blocks\.(?P<i>\d+)\.classifier1\.0\.{WS}",
             lambda g, m: f"heads.{g['i']}.conv1.{g['p']}"),
    NameRule(rf"cls_blocks\.(?P<i>\d+)\.classifier2\.{WS}",
             lambda g, m: f"heads.{g['i']}.conv2.{g['p']}"),
]


def _rules(model: TRevSNN) -> Tuple[str, List[NameRule]]:
    if model.events:
        raise PublishedCheckpointError(
            "the published event T-RevSNN is a different network (one head on c_3 / T, ours "
            "one head per column): no name rules for event T-RevSNN models"
        )
    return "trevsnn", _TREVSNN


PUBLISHED = PublishedLayout(_rules, classifiers=(r"cls_blocks\.(\d+\.)?classifier2\.weight",),
                            first_convs=(r"stem\.down1\.0\.weight",))


register_model("trevsnn_tiny", TRevSNN, TREVSNN,
               "ImageNet tiny: channels 64/128/256/384, kernel 3 (17,203,856 parameters at 1000 "
               "classes)", image_size=224, input="image", channels=(64, 128, 256, 384), kernel=3,
               stem="imagenet", published=PUBLISHED)
register_model("trevsnn_small", TRevSNN, TREVSNN,
               "ImageNet small: channels 96/192/384/512, kernel 5 (32,331,312 parameters at 1000 "
               "classes)", image_size=224, input="image", channels=(96, 192, 384, 512), kernel=5,
               stem="imagenet", published=PUBLISHED)
register_model("trevsnn_tiny_dvs", TRevSNN, TREVSNN,
               "event data: channels 32/64/128/256, 8 columns, one event stem per column "
               "(frame t to column t)", image_size=128, input="frames",
               channels=(32, 64, 128, 256), kernel=3, stem="events", T=8, num_classes=10,
               in_channels=2, published=PUBLISHED)
register_model("trevsnn_cifar", TRevSNN, TREVSNN,
               "small images (32x32, 28x28, 8x8): full-resolution stem, channels 16/32/64/64",
               input="image", channels=(16, 32, 64, 64), kernel=3, stem="cifar", num_classes=10,
               published=PUBLISHED)
register_model("trevsnn_test", TRevSNN, TREVSNN,
               "tiny T-RevSNN for tests: channels 4/8/8/8, full-resolution stem", image_size=8,
               input="image", channels=(4, 8, 8, 8), kernel=3, stem="cifar", T=3, num_classes=10,
               published=PUBLISHED)
