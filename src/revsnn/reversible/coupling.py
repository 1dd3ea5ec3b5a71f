"""Reversible couplings over two half-streams ``x1, x2`` of shape ``[T, B, C, ...]``.

RevSNN (Zhang & Zhang, AAAI 2024)::

    forward:  y1 = x1 + F(x2)        y2 = x2 + G(y1)
    inverse:  x2 = y2 - G(y1)        x1 = y1 - F(x2)

ParaRevSNN (Xu et al., AAAI 2026), inputs of F and G swapped::

    forward:  y1 = x2 + F(x1)        y2 = x1 + G(y1)
    inverse:  x1 = y2 - G(y1)        x2 = y1 - F(x1)

Stacking ParaRev block k+1 on block k gives y1' = y2 + F'(y1): G of block k and F' of block
k+1 read the same tensor, so a sequence can evaluate them together (see
:class:`~revsnn.reversible.sequence.ReversibleSequence`).

F and G may be any modules mapping ``[T, B, C, ...]`` to the same shape. Their outputs are cast
to the stream dtype before the addition, so streams stay in float32 under autocast.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

__all__ = ["RevCoupling", "ParaRevCoupling", "apply_branch"]


def apply_branch(fn: nn.Module, x: torch.Tensor, name: str) -> torch.Tensor:
    """Evaluate ``fn(x)``, check the shape, and cast to the stream dtype."""
    out = fn(x)
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"{name} must map a half-stream to the same shape {tuple(x.shape)}, got {got}"
        )
    return out.to(x.dtype)


class _Coupling(nn.Module):
    """Common holder of the two branches ``f`` and ``g``."""

    def __init__(self, f: Optional[nn.Module], g: Optional[nn.Module]) -> None:
        super().__init__()
        for name, m in (("f", f), ("g", g)):
            if m is not None and not isinstance(m, nn.Module):
                raise TypeError(f"{type(self).__name__}: {name} must be an nn.Module, got {m!r}")
        self.f = f
        self.g = g

    def _need(self, which: str) -> nn.Module:
        m = getattr(self, which)
        if m is None:
            raise RuntimeError(
                f"{type(self).__name__}.{which} is None: this block's branch lives in a merged "
                "module of its ReversibleSequence; call the sequence instead"
            )
        return m

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError  # pragma: no cover

    def inverse(self, y1: torch.Tensor, y2: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError  # pragma: no cover


class RevCoupling(_Coupling):
    """y1 = x1 + F(x2), y2 = x2 + G(y1); inverse x2 = y2 - G(y1), x1 = y1 - F(x2)."""

    def __init__(self, f: nn.Module, g: nn.Module) -> None:
        if f is None or g is None:
            raise TypeError("RevCoupling needs both F and G modules")
        super().__init__(f, g)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        y1 = x1 + apply_branch(self.f, x2, "F")
        y2 = x2 + apply_branch(self.g, y1, "G")
        return y1, y2

    def inverse(self, y1: torch.Tensor, y2: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x2 = y2 - apply_branch(self.g, y1, "G")
        x1 = y1 - apply_branch(self.f, x2, "F")
        return x1, x2


class ParaRevCoupling(_Coupling):
    """y1 = x2 + F(x1), y2 = x1 + G(y1); inverse x1 = y2 - G(y1), x2 = y1 - F(x1).

    ``f`` or ``g`` may be ``None`` when the branch is provided by a merged module
    M_k(u) = (G_k(u), F_{k+1}(u)) of the enclosing :class:`ReversibleSequence`.
    """

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        y1 = x2 + apply_branch(self._need("f"), x1, "F")
        y2 = x1 + apply_branch(self._need("g"), y1, "G")
        return y1, y2

    def inverse(self, y1: torch.Tensor, y2: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x1 = y2 - apply_branch(self._need("g"), y1, "G")
        x2 = y1 - apply_branch(self._need("f"), x1, "F")
        return x1, x2
