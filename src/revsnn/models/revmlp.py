"""A reversible spiking MLP: the worked example of ``docs/adding_a_model.md``.

::

    x [B, C, H, W] -> flatten -> Linear(C H W -> 2D) -> repeat T -> [T, B, 2D]
       (frames [T, B, C, H, W]: the same encoder per frame)
    -> n x RevCoupling(F, G),  F = G = LIF -> Linear(D -> D) -> BatchNorm1d  (per step)
    -> LIF -> mean over T -> Linear(2D -> classes)

Everything reversible comes from the public engine: :class:`~revsnn.reversible.RevCoupling` and
:class:`~revsnn.reversible.ReversibleSequence` (``y1 = x1 + F(x2), y2 = x2 + G(y1)``); the
base class :class:`~revsnn.models.base.SpikingModel` supplies the common arguments, the memory
modes and the classifier verbs.
"""

from __future__ import annotations

from typing import Union

import torch
from torch import nn

from ..reversible import MemoryMode, RevCoupling, ReversibleSequence
from ..spiking import LIF, TimeFold
from .base import SpikingModel
from .registry import Family, register_model

__all__ = ["RevMLP"]

REVMLP = Family("revmlp", "this library: the worked example of docs/adding_a_model.md",
                "reversible spiking MLP from the public couplings")


def _branch(d: int) -> nn.Module:
    """F or G on a half-stream ``[T, B, D]``: LIF -> Linear -> BatchNorm1d (per step)."""
    return nn.Sequential(LIF(tau=2.0), TimeFold(nn.Linear(d, d, bias=False), nn.BatchNorm1d(d)))


class MLPHead(nn.Module):
    """LIF -> mean over T -> Linear: ``[T, B, 2D] -> [B, classes]``. Head protocol:
    ``classifier`` is ``fc``."""

    def __init__(self, c: int, num_classes: int) -> None:
        super().__init__()
        self.neuron = LIF(tau=2.0)
        self.fc = nn.Linear(c, num_classes)

    @property
    def classifier(self) -> nn.Module:
        return self.fc

    def replace_classifier(self, num_classes: int) -> None:
        ref = self.fc.weight
        self.fc = nn.Linear(self.fc.in_features, num_classes).to(ref.device, ref.dtype)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc(self.neuron(z).mean(0))


class RevMLP(SpikingModel):
    """Reversible spiking MLP on ``image_size`` x ``image_size`` inputs (module docstring).

    Args:
        hidden: D, the width of one half-stream.
        depth: number of reversible couplings.
        image_size: input height and width.
        num_classes, T, in_channels, memory_mode: as for every model.
    """

    def __init__(self, hidden: int = 64, depth: int = 2, image_size: int = 8,
                 num_classes: int = 10, T: int = 4, in_channels: int = 1,
                 memory_mode: Union[str, MemoryMode] = "reversible") -> None:
        super().__init__(num_classes, T, in_channels, memory_mode)
        if hidden < 1 or depth < 1 or image_size < 1:
            raise ValueError(
                f"hidden, depth and image_size must be >= 1, got {hidden}, {depth}, {image_size}"
            )
        self.image_size = int(image_size)
        self.encoder = nn.Linear(in_channels * image_size**2, 2 * hidden)
        self.blocks = ReversibleSequence(
            [RevCoupling(_branch(hidden), _branch(hidden)) for _ in range(depth)]
        )
        self.head = MLPHead(2 * hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, static = self.check_input(x)
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"RevMLP expects {self.image_size}x{self.image_size} inputs, got {tuple(x.shape)}"
            )
        if static:  # encode once, repeat over T: [B, 2D] -> [T, B, 2D]
            z = self.encoder(x.flatten(1)).unsqueeze(0).expand(self.T, -1, -1)
        else:  # frames: [T, B, C, H, W] -> [T, B, 2D]
            z = self.encoder(x.flatten(2))
        # the reversible stream stays in the parameters' precision under autocast
        return self.head(self.blocks(z.to(self.encoder.weight.dtype)))


register_model("revmlp_test", RevMLP, REVMLP, "tiny reversible spiking MLP for tests: D = 8",
               image_size=8, hidden=8, depth=2, T=2, in_channels=3)
register_model("revmlp_digits", RevMLP, REVMLP,
               "reversible spiking MLP for 8x8 digits: D = 64, 3 couplings", image_size=8,
               hidden=64, depth=3, T=4, in_channels=1)
