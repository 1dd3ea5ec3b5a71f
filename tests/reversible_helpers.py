"""Small F/G branches and a three-mode runner shared by the engine tests."""

from __future__ import annotations

import copy

import torch
from torch import nn

from revsnn.reversible import ParaRevCoupling, RevCoupling, ReversibleSequence
from revsnn.spiking import IF, LIF, TimeFold


def branch(c: int, p_drop: float = 0.2) -> nn.Module:
    """F or G: IF -> conv -> BN -> dropout -> LIF -> conv -> BN on [T, B, c, H, W]."""
    return nn.Sequential(
        IF(v_threshold=0.5),
        TimeFold(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.Dropout(p_drop)),
        LIF(tau=2.0, v_threshold=0.5),
        TimeFold(nn.Conv2d(c, c, 3, padding=1, bias=True), nn.BatchNorm2d(c)),
    )


class Pair(nn.Module):
    """A merged module M(u) = (G(u), F'(u)) built from two branches."""

    def __init__(self, g: nn.Module, f: nn.Module) -> None:
        super().__init__()
        self.g, self.f = g, f

    def forward(self, u):
        return self.g(u), self.f(u)


def make_sequence(kind: str, depth: int, c: int = 3, **kw) -> ReversibleSequence:
    if kind == "rev":
        return ReversibleSequence([RevCoupling(branch(c), branch(c)) for _ in range(depth)], **kw)
    if kind == "para":
        return ReversibleSequence(
            [ParaRevCoupling(branch(c), branch(c)) for _ in range(depth)], **kw
        )
    if kind == "para_merged":
        blocks = [
            ParaRevCoupling(branch(c) if k == 0 else None, branch(c) if k == depth - 1 else None)
            for k in range(depth)
        ]
        merged = [Pair(branch(c), branch(c)) for _ in range(depth - 1)]
        return ReversibleSequence(blocks, merged=merged, **kw)
    raise ValueError(kind)


def run_mode(seq: nn.Module, mode: str, x: torch.Tensor, seed: int = 7):
    """One forward + backward of a copy of ``seq`` in ``mode``: outputs, grads, buffers."""
    s = copy.deepcopy(seq)
    s.memory_mode = mode
    xr = x.clone().requires_grad_(True)
    torch.manual_seed(seed)
    y = s(xr)
    y_value = y.detach().clone()  # with inplace_inverse, backward rebuilds x inside y's storage
    w = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
    (y * w).sum().backward()
    after = torch.rand(3)  # the caller's RNG stream must continue as without recomputation
    grads = {n: p.grad.clone() for n, p in s.named_parameters() if p.grad is not None}
    bufs = {n: b.clone() for n, b in s.named_buffers()}
    return dict(y=y_value, dx=xr.grad, grads=grads, bufs=bufs, rng=after, module=s)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
