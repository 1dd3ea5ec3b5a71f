"""T-RevSNN (Hu et al., ICML 2024): temporal-reversible column networks, and their standard-BPTT
counterpart.

:class:`TRevSNN`: the image is encoded once by the stem (``s``), then T columns of 4 levels
(resolutions /4, /8, /16, /16 with the ImageNet stem) run the column recurrence of
:class:`~revsnn.reversible.columns.TemporalColumns`::

    c_k^t = L_k^t(c_{k-1}^t, c_{k+1}^{t-1}) + alpha_k^t * c_k^{t-1},    c^0 = 0,  c_{-1}^t = s

Heads: one per column, for any T (SYSTEMS.md fixes one per column at T = 4; we keep that rule
for every T). Column t < T reads ``GAP(c_3^t)`` through a WS 1x1 conv; the last column reads
``GAP(S(c_3^T))`` through two WS 1x1 convs. The heads are the engine's readout (an argument of
each call), so in reversible mode they are recomputed from each rebuilt top state and nothing
is kept per column. ``forward`` returns the last head's logits;
``forward_heads`` returns every head (last = final) for the loss
``sum_i (i/n) CE_ls(out_i) + CE_ls(out_n)`` (``revsnn.train.loss.column_loss``).
Event variant: column t gets its own event stem (level 0's entry) and exactly frame t.

:class:`TRevSNNBPTT`, "the same network with temporal dynamics switched on everywhere": the same
stem, the same four levels (Down fusion, two spiking ConvNeXt blocks, block 2 without gamma) and
the same final head as one T-RevSNN column, with every spike function replaced by a multi-step
LIF over T steps (:class:`~revsnn.models.trevsnn_blocks.FoldedLIF`, equal to S at the first step),
the input repeated over T (the stem runs on every step) and the logits averaged over T, trained by
plain BPTT. Weights are shared over time as in any standard SNN, so one step of it costs one
T-RevSNN column plus the stem: the two networks do the same work per step except that T-RevSNN
encodes once. It has no Up paths and no alpha (a standard SNN carries time in its membranes),
and about 1/T of T-RevSNN's parameters.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from ..reversible.columns import TemporalColumns
from ..reversible.mode import MemoryMode
from ..reversible.recompute import Part, checkpoint, guard
from ..spiking import repeat_time
from .base import SpikingModel, check_input
from .init import trunc_normal_convs
from .registry import register_model
from .trevsnn_blocks import (
    Classifier,
    ConvNeXtBlock,
    Down,
    EventStem,
    FinalHead,
    FoldedLIF,
    ImageStem,
    Level,
    SharedTail,
    Up,
    stateless,
)

__all__ = ["TRevSNN", "TRevSNNBPTT"]

# Thresholds of the stateless spike: fires at 0.5, gradient window [0, 1].
SPIKE_THRESHOLDS = (0.0, 0.5, 1.0)


def _check_common(channels: Sequence[int], T: int, kernel: int, num_classes: int, in_channels: int):
    if len(channels) != 4 or any(int(c) < 1 for c in channels):
        raise ValueError(f"channels must be 4 positive level widths, got {tuple(channels)}")
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"T (number of columns / time steps) must be an int >= 1, got {T!r}")
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel must be a positive odd int, got {kernel}")
    if num_classes < 1 or in_channels < 1:
        raise ValueError(
            f"num_classes and in_channels must be >= 1, got {num_classes}, {in_channels}"
        )


def _entry(k: int, channels: Sequence[int], make_spike) -> Optional[nn.Module]:
    """Fusion input from the level below: none at level 0, Down 3x3 s2 into levels 1 and 2,
    Down 1x1 s1 into level 3 (same resolution as level 2)."""
    if k == 0:
        return None
    if k < 3:
        return Down(channels[k - 1], channels[k], 3, 2, make_spike)
    return Down(channels[2], channels[3], 1, 1, make_spike)


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
        super().__init__()
        _check_common(channels, T, kernel, num_classes, in_channels)
        if stem not in ("imagenet", "cifar", "events"):
            raise ValueError(f"unknown stem {stem!r}; expected 'imagenet', 'cifar' or 'events'")
        C = [int(c) for c in channels]
        self.channels, self.T, self.kernel = C, T, int(kernel)
        self.num_classes, self.in_channels = int(num_classes), int(in_channels)
        self.events = stem == "events"
        self.stem = None if self.events else ImageStem(in_channels, C[0], stem)
        self.shared = nn.ModuleList(SharedTail(c, kernel) for c in C)  # block-2 pw2/dw2 per level
        columns = []
        for t in range(T):
            levels = []
            for k in range(4):
                entry = _entry(k, C, stateless)
                if k == 0 and self.events:
                    entry = EventStem(in_channels, C[0])
                up = Up(C[k + 1], C[k], stateless) if (t > 0 and k < 3) else None
                levels.append(Level(
                    entry, up, ConvNeXtBlock(C[k], kernel, stateless),
                    ConvNeXtBlock(C[k], kernel, stateless, tail=self.shared[k]),
                ))
            columns.append(levels)
        self.columns = TemporalColumns(
            columns, C, memory_mode=memory_mode, alpha_init=alpha_init, alpha_floor=alpha_floor,
            tolerance=tolerance, store_every=store_every, thresholds=SPIKE_THRESHOLDS,
            state_dtype=torch.float64,
        )
        self.heads = self._make_heads(self.num_classes)
        trunc_normal_convs(self)  # published: every conv N(0, 0.02^2) truncated, bias 0
        self.set_memory_mode(memory_mode)

    def _make_heads(self, num_classes: int) -> nn.ModuleList:
        C3 = self.channels[3]
        heads = nn.ModuleList(
            [Classifier(C3, num_classes) for _ in range(self.T - 1)]
            + [FinalHead(C3, num_classes, spike=stateless())]
        )
        trunc_normal_convs(heads)
        return heads

    # ----------------------------------------------------------------------------- forward
    def _encode(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        """Static image: the stem output s, computed once. Event model: column t's frame."""
        who = type(self).__name__ + ("(events)" if self.events else "")
        x, static = check_input(x, self.in_channels, self.T, who, frames=self.events)
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

    # ----------------------------------------------------------------------------- verbs
    def get_classifier(self) -> nn.Module:
        return self.heads[-1]

    def reset_classifier(self, num_classes: int) -> None:
        ref = self.heads[-1].conv1.weight
        self.num_classes = int(num_classes)
        self.heads = self._make_heads(self.num_classes).to(device=ref.device, dtype=ref.dtype)

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


class TRevSNNBPTT(SpikingModel):
    """Standard-SNN counterpart of :class:`TRevSNN` trained by BPTT; see the module docstring.

    ``memory_mode``: "none" (plain BPTT, default) or "checkpoint" (per level); "reversible" is
    not defined for this network and raises ``ValueError``.
    """

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
        super().__init__()
        _check_common(channels, T, kernel, num_classes, in_channels)
        C = [int(c) for c in channels]
        self.channels, self.T, self.kernel = C, T, int(kernel)
        self.num_classes, self.in_channels = int(num_classes), int(in_channels)

        def lif() -> nn.Module:
            return FoldedLIF(T)

        self.stem = ImageStem(in_channels, C[0], stem)
        self.shared = nn.ModuleList(SharedTail(c, kernel) for c in C)
        self.levels = nn.ModuleList(
            Level(_entry(k, C, lif), None, ConvNeXtBlock(C[k], kernel, lif),
                  ConvNeXtBlock(C[k], kernel, lif, tail=self.shared[k]))
            for k in range(4)
        )
        self.head_spike = lif()
        self.head = FinalHead(C[3], self.num_classes)
        trunc_normal_convs(self)  # as TRevSNN
        self.set_memory_mode(memory_mode)

    def set_memory_mode(self, mode: Union[str, MemoryMode]) -> TRevSNNBPTT:
        mode = MemoryMode.parse(mode)
        if mode is MemoryMode.REVERSIBLE:
            raise ValueError(
                f"{type(self).__name__} is the plain-BPTT counterpart: memory_mode must be 'none' "
                "or 'checkpoint', got 'reversible'"
            )
        return super().set_memory_mode(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits averaged over the T steps, ``[B, classes]``."""
        x, static = check_input(x, self.in_channels, self.T, type(self).__name__)
        if static:
            x = repeat_time(x, self.T)  # [T, B, C, H, W]
        B = x.shape[1]
        c = self.stem(x.flatten(0, 1))  # [T*B, C0, H', W']
        ckpt = self.memory_mode is MemoryMode.CHECKPOINT and torch.is_grad_enabled()
        for k, level in enumerate(self.levels):
            c = checkpoint(Part([level], name=f"level {k}"), level, c) if ckpt else level(c)
        logits = self.head(self.head_spike(c))  # GAP inside the head: [T*B, classes]
        return logits.unflatten(0, (self.T, B)).mean(0)  # [B, classes]

    def forward_heads(self, x: torch.Tensor) -> List[torch.Tensor]:
        """One head: ``[forward(x)]``."""
        return [self(x)]

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        ref = self.head.conv1.weight
        self.num_classes = int(num_classes)
        head = FinalHead(self.channels[3], self.num_classes)
        trunc_normal_convs(head)
        self.head = head.to(device=ref.device, dtype=ref.dtype)


# --------------------------------------------------------------------------------- variants
TINY = dict(channels=(64, 128, 256, 384), kernel=3, stem="imagenet")
SMALL = dict(channels=(96, 192, 384, 512), kernel=5, stem="imagenet")
TINY_DVS = dict(channels=(32, 64, 128, 256), kernel=3, stem="events")
CIFAR = dict(channels=(16, 32, 64, 64), kernel=3, stem="cifar")
TEST = dict(channels=(4, 8, 8, 8), kernel=3, stem="cifar")


def _build(cls, cfg: Dict[str, Any], **kwargs) -> nn.Module:
    return cls(**{**cfg, **kwargs})


@register_model
def trevsnn_tiny(num_classes: int = 1000, T: int = 4, memory_mode: str = "reversible",
                 in_channels: int = 3, **kwargs) -> TRevSNN:
    """ImageNet tiny: channels 64/128/256/384, kernel 3 (17,203,856 parameters at 1000 classes,
    T=4)."""
    return _build(TRevSNN, TINY, num_classes=num_classes, T=T, memory_mode=memory_mode,
                  in_channels=in_channels, **kwargs)


@register_model
def trevsnn_small(num_classes: int = 1000, T: int = 4, memory_mode: str = "reversible",
                  in_channels: int = 3, **kwargs) -> TRevSNN:
    """ImageNet small: channels 96/192/384/512, kernel 5 (32,331,312 parameters at 1000 classes,
    T=4)."""
    return _build(TRevSNN, SMALL, num_classes=num_classes, T=T, memory_mode=memory_mode,
                  in_channels=in_channels, **kwargs)


@register_model
def trevsnn_tiny_dvs(num_classes: int = 10, T: int = 8, memory_mode: str = "reversible",
                     in_channels: int = 2, **kwargs) -> TRevSNN:
    """Event data: channels 32/64/128/256, 8 columns, one event stem per column; input
    ``[T, B, 2, H, W]`` (frame t goes to column t; a frame count other than T is an error)."""
    return _build(TRevSNN, TINY_DVS, num_classes=num_classes, T=T, memory_mode=memory_mode,
                  in_channels=in_channels, **kwargs)


@register_model
def trevsnn_cifar(num_classes: int = 10, T: int = 4, memory_mode: str = "reversible",
                  in_channels: int = 3, **kwargs) -> TRevSNN:
    """Small images (32x32, 28x28, 8x8): full-resolution stem, channels 16/32/64/64."""
    return _build(TRevSNN, CIFAR, num_classes=num_classes, T=T, memory_mode=memory_mode,
                  in_channels=in_channels, **kwargs)


@register_model
def trevsnn_test(num_classes: int = 10, T: int = 3, memory_mode: str = "reversible",
                 in_channels: int = 3, **kwargs) -> TRevSNN:
    """Tiny variant for tests: channels 4/8/8/8, full-resolution stem."""
    return _build(TRevSNN, TEST, num_classes=num_classes, T=T, memory_mode=memory_mode,
                  in_channels=in_channels, **kwargs)


@register_model
def trevsnn_tiny_bptt(num_classes: int = 1000, T: int = 4, memory_mode: str = "none",
                      in_channels: int = 3, **kwargs) -> TRevSNNBPTT:
    """Standard-BPTT counterpart of trevsnn_tiny (LIF everywhere, input repeated over T)."""
    return _build(TRevSNNBPTT, TINY, num_classes=num_classes, T=T, memory_mode=memory_mode,
                  in_channels=in_channels, **kwargs)


@register_model
def trevsnn_cifar_bptt(num_classes: int = 10, T: int = 4, memory_mode: str = "none",
                       in_channels: int = 3, **kwargs) -> TRevSNNBPTT:
    """Standard-BPTT counterpart of trevsnn_cifar."""
    return _build(TRevSNNBPTT, CIFAR, num_classes=num_classes, T=T, memory_mode=memory_mode,
                  in_channels=in_channels, **kwargs)
