"""ParaRevSNN building blocks: the merged reversible block M and a two-stream branch pair.

In a sequence of ParaRev couplings (Xu et al., AAAI 2026)::

    block k:    y1 = x2 + F_k(x1)        y2 = x1 + G_k(y1)
    block k+1:  y1' = y2 + F_{k+1}(y1)   ...

G_k and F_{k+1} read the same tensor y1 and add into the same register, so one module
evaluates both (:class:`ReversibleSequence`'s ``merged`` argument)::

    M_k(u) = (G_k(u), F_{k+1}(u))

Two forms of M_k are provided:

:class:`MergedBlock` (``merge="fused"``, the paper's merged reversible block)::

    h      = GN(conv3x3_{C->C}(S(u)))                  [T, B, C, H, W]
    z      = BN_{2C}(conv3x3_{C->2C}(S(h)))            [T, B, 2C, H, W]
    (G, F') = z[:, :, :C], z[:, :, C:]                 two [T, B, C, H, W]

  G and F' share the spike of u, the first convolution and its normalisation; the second
  convolution has doubled output channels. One wide kernel per layer replaces four narrow ones
  (3 C x C convolutions' worth of weights and FLOPs instead of 4).

:class:`BranchPair` (``merge="pair"``): M_k(u) = (G_k(u), F_{k+1}(u)) with two separate
  RevSResNet-style branches (``S -> conv -> BN -> S -> conv -> BN``); parameter-for-parameter
  the same network as separate F/G. With ``streams=True`` and a CUDA input, G and F' run on
  two CUDA streams (F' on a side stream, G on the current one); otherwise one after the other.

Choices the paper leaves open (ours):

- **GroupNorm groups**: ``gcd(C, gn_groups)`` groups with ``gn_groups = 32`` by default (32 for
  the widths 64/128/256/448 of ParaRevSNN-ResNet, fewer for small widths), affine, applied per
  frame (T folded into the batch), so it normalises each sample at each time step. It keeps no
  running statistics, so a recomputation of M is the same function with nothing to restore.
- **The unpaired first F and last G** of a sequence have no partner: they are ordinary branches
  ``S -> conv3x3 -> BN -> S -> conv3x3 -> BN`` (:class:`~revsnn.models.blocks.ConvBranch`),
  exactly RevSResNet's F/G.
  A sequence of n blocks therefore holds F_0, n - 1 merged modules and G_{n-1} (n + 1 stages).
- **Odd n**: nothing special is needed: every consecutive pair (G_k, F_{k+1}) is merged whatever
  the parity of n; the engine hands the output halves back in the coupling's (y1, y2) order.
- A sequence with n = 1 has no pair and is identical (parameters included) to a RevSResNet one.
"""

from __future__ import annotations

import math
from typing import Dict, Tuple

import torch
from torch import nn

from ..spiking.binary import SpikeConv2d
from ..spiking.norm import norm_split
from .blocks import NeuronFactory, conv_bn, fold, unfold

__all__ = ["MergedBlock", "BranchPair"]


class MergedBlock(nn.Module):
    """M(u) = split(BN(conv_{C->2C}(S(GN(conv_{C->C}(S(u))))))) -> (G(u), F'(u)).

    Args:
        c: half-stream width C.
        neuron_factory: builds a spiking neuron (IF for static images, PLIF for events).
        gn_groups: GroupNorm uses ``gcd(c, gn_groups)`` groups.
        lean: convolutions fed with spikes save them as ``bool`` for backward
            (:class:`~revsnn.spiking.binary.SpikeConv2d`; same values and gradients).
    """

    def __init__(
        self, c: int, neuron_factory: NeuronFactory, gn_groups: int = 32, lean: bool = True
    ) -> None:
        super().__init__()
        if c < 1 or gn_groups < 1:
            raise ValueError(f"MergedBlock needs c >= 1 and gn_groups >= 1, got {c}, {gn_groups}")
        self.c = int(c)
        self.groups = math.gcd(self.c, int(gn_groups))
        self.lean = bool(lean)
        conv_cls = SpikeConv2d if lean else nn.Conv2d
        self.sn1 = neuron_factory()
        self.conv1 = conv_cls(c, c, 3, 1, 1, bias=False)
        self.gn = nn.GroupNorm(self.groups, c)
        self.sn2 = neuron_factory()
        self.conv2 = conv_bn(c, 2 * c, 3, lean=lean)  # conv with doubled output channels + BN

    def forward(self, u: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if u.dim() != 5 or u.shape[2] != self.c:
            raise ValueError(
                f"MergedBlock expects [T, B, {self.c}, H, W], got shape {tuple(u.shape)}"
            )
        T = u.shape[0]
        h = unfold(self.gn(self.conv1(fold(self.sn1(u)))), T)  # [T, B, C, H, W]
        conv, bn = self.conv2
        z = conv(fold(self.sn2(h)))  # [T*B, 2C, H, W]
        if self.lean:  # BN's backward inside the buffer that gathers dG and dF'
            g, f = norm_split(z, bn, (self.c, self.c))
        else:
            g, f = bn(z).split(self.c, dim=1)
        return unfold(g, T), unfold(f, T)  # two [T, B, C, H, W]

    def extra_repr(self) -> str:
        return f"c={self.c}, gn_groups={self.groups}, outputs=(G, F')"


# One side stream per CUDA device, created on first use (streams cannot be deep-copied or
# pickled, so modules do not hold them).
_SIDE_STREAMS: Dict[int, torch.cuda.Stream] = {}


def _side_stream(device: torch.device) -> torch.cuda.Stream:
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SIDE_STREAMS:
        _SIDE_STREAMS[index] = torch.cuda.Stream(device=index)
    return _SIDE_STREAMS[index]


class BranchPair(nn.Module):
    """M(u) = (G(u), F'(u)) from two separate branches, optionally on two CUDA streams.

    With ``streams=True`` and ``u.is_cuda``: F' is queued on a side stream that first waits for
    the current stream (so ``u`` is ready), G on the current stream; the current stream then
    waits for the side stream before anything reads F'. ``record_stream`` tells the caching
    allocator that ``u`` is used on the side stream and F' on the current one, so neither
    block is reused too early. Autograd runs each backward op on the stream of its forward op
    and synchronises them itself. On CPU (or ``streams=False``) the two run one after the other.
    """

    def __init__(self, g: nn.Module, f: nn.Module, streams: bool = False) -> None:
        super().__init__()
        self.g = g
        self.f = f
        self.streams = bool(streams)

    def forward(self, u: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if not (self.streams and u.is_cuda):
            return self.g(u), self.f(u)
        current = torch.cuda.current_stream(u.device)
        side = _side_stream(u.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            f = self.f(u)
        g = self.g(u)
        current.wait_stream(side)
        u.record_stream(side)
        f.record_stream(current)
        return g, f

    def extra_repr(self) -> str:
        return f"streams={self.streams}"

