"""Reversible couplings over two half-streams ``x1, x2`` of shape ``[T, B, C, ...]``.

RevSNN (Zhang & Zhang, AAAI 2024)::

    forward:  y1 = x1 + F(x2)        y2 = x2 + G(y1)
    inverse:  x2 = y2 - G(y1)        x1 = y1 - F(x2)

ParaRevSNN (Xu et al., AAAI 2026), inputs of F and G swapped::

    forward:  y1 = x2 + F(x1)        y2 = x1 + G(y1)
    inverse:  x1 = y2 - G(y1)        x2 = y1 - F(x1)

A coupling owns its schedule: :meth:`Coupling.stages` states the equations as additive updates
of two registers ``(r0, r1) = (x1, x2)`` -- each a :class:`Stage` ``r[dst] += h(r[1 - dst])``
-- and whether the halves come out swapped. RevCoupling is ``r0 += F(r1); r1 += G(r0)`` with
``(y1, y2) = (r0, r1)``; ParaRevCoupling is ``r1 += F(r0); r0 += G(r1)`` with
``(y1, y2) = (r1, r0)``. Every update is inverted by subtracting the same branch output, read
from the unchanged source register. Engines (:class:`~revsnn.reversible.ReversibleSequence`)
run stage lists and never re-derive these equations.

F and G may be any modules mapping ``[T, B, C, ...]`` to the same shape. Their outputs are cast
to the stream dtype before the addition, so streams stay in float32 under autocast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from torch import nn

__all__ = ["Coupling", "RevCoupling", "ParaRevCoupling", "Stage", "apply_branch"]


def apply_branch(fn: nn.Module, x: torch.Tensor, name: str) -> torch.Tensor:
    """Evaluate ``fn(x)``, check the shape, and cast to the stream dtype."""
    out = fn(x)
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"{name} must map a half-stream to the same shape {tuple(x.shape)}, got {got}"
        )
    return out.to(x.dtype)


@dataclass(frozen=True)
class Stage:
    """``r[dst] += h_1(r[1 - dst]) + h_2(r[1 - dst]) + ...`` (added in order).

    ``branches`` names each h_i and holds its module (``None``: provided by a fused module of
    the enclosing sequence). ``fused``, when set, evaluates every branch at once and returns
    their outputs in order (ParaRevSNN's merged block ``M_k(u) = (G_k(u), F_{k+1}(u))``).
    """

    dst: int
    branches: Tuple[Tuple[str, Optional[nn.Module]], ...]
    fused: Optional[nn.Module] = None

    @property
    def name(self) -> str:
        return "+".join(n for n, _ in self.branches)

    def modules(self) -> Tuple[nn.Module, ...]:
        if self.fused is not None:
            return (self.fused,)
        return tuple(m for _, m in self.branches if m is not None)

    def on(self, dst: int) -> Stage:
        """The same update writing physical register ``dst``."""
        return Stage(dst, self.branches, self.fused)

    def check(self) -> None:
        """Every branch has a module, or a fused module provides them all."""
        if self.fused is None:
            for n, m in self.branches:
                if m is None:
                    raise ValueError(
                        f"branch {n} of a coupling is None and no merged module provides it: "
                        "give the coupling its branch or the sequence a merged module"
                    )

    def run(self, src: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """The branch outputs ``h_i(src)``, each of ``src``'s shape and dtype."""
        if self.fused is None:
            self.check()
            return tuple(apply_branch(m, src, n) for n, m in self.branches)
        out = self.fused(src)
        k = len(self.branches)
        if not (isinstance(out, (tuple, list)) and len(out) == k):
            raise ValueError(
                f"a merged module must return {k} tensors ({self.name}), got "
                f"{type(out).__name__}"
            )
        for (n, _), o in zip(self.branches, out):
            if not isinstance(o, torch.Tensor) or o.shape != src.shape:
                got = tuple(o.shape) if isinstance(o, torch.Tensor) else type(o).__name__
                raise ValueError(
                    f"merged module output {n} must have the half-stream shape "
                    f"{tuple(src.shape)}, got {got}"
                )
        return tuple(o.to(src.dtype) for o in out)


def merge(a: Stage, b: Stage, fused: Optional[nn.Module] = None) -> Stage:
    """Two consecutive stages writing the same register from the same source, as one stage:
    ``r[d] += h_a(s); r[d] += h_b(s)`` is ``r[d] += h_a(s) + h_b(s)``."""
    if a.dst != b.dst:
        raise ValueError("only stages writing the same register can be merged")
    return Stage(a.dst, a.branches + b.branches, fused)


class Coupling(nn.Module):
    """A reversible coupling of two half-streams: holds the branches ``f`` and ``g`` and
    states its equations as :meth:`stages`."""

    def __init__(self, f: Optional[nn.Module], g: Optional[nn.Module]) -> None:
        super().__init__()
        for name, m in (("f", f), ("g", g)):
            if m is not None and not isinstance(m, nn.Module):
                raise TypeError(f"{type(self).__name__}: {name} must be an nn.Module, got {m!r}")
        self.f = f
        self.g = g

    def stages(self) -> Tuple[List[Stage], bool]:
        """``(stages on the registers (r0, r1) = (x1, x2), swapped)``; ``swapped`` means
        ``(y1, y2) = (r1, r0)``."""
        raise NotImplementedError  # pragma: no cover

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        regs = [x1, x2]
        stages, swapped = self.stages()
        for s in stages:
            dst = regs[s.dst]
            for h in s.run(regs[1 - s.dst]):
                dst = dst + h
            regs[s.dst] = dst
        return (regs[1], regs[0]) if swapped else (regs[0], regs[1])

    def inverse(self, y1: torch.Tensor, y2: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        stages, swapped = self.stages()
        regs = [y2, y1] if swapped else [y1, y2]
        for s in reversed(stages):
            dst = regs[s.dst]
            for h in reversed(s.run(regs[1 - s.dst])):
                dst = dst - h
            regs[s.dst] = dst
        return regs[0], regs[1]


class RevCoupling(Coupling):
    """y1 = x1 + F(x2), y2 = x2 + G(y1); inverse x2 = y2 - G(y1), x1 = y1 - F(x2)."""

    def __init__(self, f: nn.Module, g: nn.Module) -> None:
        if f is None or g is None:
            raise TypeError("RevCoupling needs both F and G modules")
        super().__init__(f, g)

    def stages(self) -> Tuple[List[Stage], bool]:
        # r0 += F(r1) (y1 = x1 + F(x2));  r1 += G(r0) (y2 = x2 + G(y1))
        return [Stage(0, (("F", self.f),)), Stage(1, (("G", self.g),))], False


class ParaRevCoupling(Coupling):
    """y1 = x2 + F(x1), y2 = x1 + G(y1); inverse x1 = y2 - G(y1), x2 = y1 - F(x1).

    ``f`` or ``g`` may be ``None`` when the branch is provided by a merged module
    M_k(u) = (G_k(u), F_{k+1}(u)) of the enclosing :class:`ReversibleSequence`.
    """

    def stages(self) -> Tuple[List[Stage], bool]:
        # r1 += F(r0) (y1 = x2 + F(x1));  r0 += G(r1) (y2 = x1 + G(y1));  (y1, y2) = (r1, r0)
        return [Stage(1, (("F", self.f),)), Stage(0, (("G", self.g),))], True
