"""Batch-wise augmentations on tensors (run on the training device, one call per batch).

All random draws come from an explicit ``torch.Generator`` (CPU), so an epoch's augmentation is
a function of (seed, epoch, step) only: resuming a run replays it exactly. Per-sample draws are
made for the *global* batch and then sliced (``part``), so a data-parallel rank augments its
share of the batch exactly as a single process would.

Images are ``[B, C, H, W]``; frames ``[B, T, C, H, W]`` get the same crop/flip on every frame.
- random crop with zero padding ``p``: pad to ``(H + 2p, W + 2p)`` and cut ``H x W`` at a
  uniformly drawn offset in ``[0, 2p]^2`` per sample;
- horizontal flip with probability 1/2 per sample;
- normalisation ``(x - mean) / std`` per channel;
- RandAugment (:mod:`revsnn.data.randaugment`);
- random erase (after normalisation): with probability ``p`` per sample a rectangle of area
  ``U(0.02, 1/3) * H * W`` and aspect ``exp(U(log 0.3, log 3.3))`` is filled with N(0, 1) noise;
- mixup / cutmix with soft targets: ``lam ~ Beta(alpha, alpha)``, the batch is mixed with itself
  reversed, ``x = lam * x + (1 - lam) * x.flip(0)`` (cutmix pastes a box of area ``1 - lam``,
  ``lam`` corrected to the box actually pasted), ``y = lam * onehot(y) + (1 - lam) *
  onehot(y.flip(0))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["BatchAugment", "Mixup", "random_crop", "hflip", "normalize", "random_erase"]


def _gen_slice(part: Optional[slice], n: int) -> slice:
    return part if part is not None else slice(0, n)


def _as_images(x: torch.Tensor) -> Tuple[torch.Tensor, Optional[Tuple[int, int]]]:
    """``[B, T, C, H, W] -> [B, T*C, H, W]`` so per-sample ops act on every frame alike."""
    if x.dim() == 5:
        B, T, C, H, W = x.shape
        return x.reshape(B, T * C, H, W), (T, C)
    if x.dim() != 4:
        raise ValueError(
            f"expected images [B, C, H, W] or frames [B, T, C, H, W], got {tuple(x.shape)}"
        )
    return x, None


def _from_images(x: torch.Tensor, tc: Optional[Tuple[int, int]]) -> torch.Tensor:
    if tc is None:
        return x
    return x.reshape(x.shape[0], tc[0], tc[1], *x.shape[2:])  # [B, T, C, H, W]


def random_crop(
    x: torch.Tensor, padding: int, generator: torch.Generator, total: Optional[int] = None,
    part: Optional[slice] = None,
) -> torch.Tensor:
    """Zero-pad by ``padding`` and cut the original size at a random offset per sample."""
    if padding <= 0:
        return x
    x, tc = _as_images(x)
    B, C, H, W = x.shape
    n = total or B
    off = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)[_gen_slice(part, n)]
    off = off.to(x.device)
    xp = F.pad(x, (padding, padding, padding, padding))  # [B, C, H+2p, W+2p]
    rows = off[:, 0:1] + torch.arange(H, device=x.device)  # [B, H]
    cols = off[:, 1:2] + torch.arange(W, device=x.device)  # [B, W]
    b = torch.arange(B, device=x.device)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return _from_images(out.permute(0, 3, 1, 2).contiguous(), tc)


def hflip(
    x: torch.Tensor, generator: torch.Generator, total: Optional[int] = None,
    part: Optional[slice] = None, p: float = 0.5,
) -> torch.Tensor:
    """Flip each sample left-right with probability ``p``."""
    n = total or x.shape[0]
    flip = (torch.rand(n, generator=generator) < p)[_gen_slice(part, n)].to(x.device)
    shape = (-1,) + (1,) * (x.dim() - 1)
    return torch.where(flip.view(shape), x.flip(-1), x)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x - mean) / std`` per channel (channel dim 1 of images, 2 of frames)."""
    cdim = 1 if x.dim() == 4 else 2
    shape = [1] * x.dim()
    shape[cdim] = -1
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(shape)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(shape)
    return (x - m) / s


def random_erase(
    x: torch.Tensor, p: float, generator: torch.Generator, total: Optional[int] = None,
    part: Optional[slice] = None, area: Tuple[float, float] = (0.02, 1 / 3),
    ratio: Tuple[float, float] = (0.3, 3.3),
) -> torch.Tensor:
    """Fill a random rectangle of each chosen sample with N(0, 1) noise."""
    if p <= 0:
        return x
    x, tc = _as_images(x)
    B, C, H, W = x.shape
    n = total or B
    sl = _gen_slice(part, n)
    g = generator
    apply = (torch.rand(n, generator=g) < p)[sl]
    a = (area[0] + (area[1] - area[0]) * torch.rand(n, generator=g))[sl] * H * W
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    r = torch.exp(lo + (hi - lo) * torch.rand(n, generator=g))[sl]
    h = torch.sqrt(a * r).round().clamp(1, H).long()
    w = torch.sqrt(a / r).round().clamp(1, W).long()
    top = (torch.rand(n, generator=g)[sl] * (H - h + 1)).long()
    left = (torch.rand(n, generator=g)[sl] * (W - w + 1)).long()
    noise = torch.randn((n, C, H, W), generator=g)[sl].to(x.device, x.dtype)
    ys = torch.arange(H)[None, :]
    xs = torch.arange(W)[None, :]
    in_y = (ys >= top[:, None]) & (ys < (top + h)[:, None])  # [B, H]
    in_x = (xs >= left[:, None]) & (xs < (left + w)[:, None])  # [B, W]
    mask = (in_y[:, :, None] & in_x[:, None, :] & apply[:, None, None]).to(x.device)  # [B, H, W]
    out = torch.where(mask[:, None], noise, x)
    return _from_images(out, tc)


@dataclass
class BatchAugment:
    """The per-batch image pipeline: to float -> [RandAugment] -> crop -> flip -> normalise
    -> erase. ``train=False`` only converts and normalises."""

    mean: Sequence[float]
    std: Sequence[float]
    crop_padding: int = 0
    hflip: bool = False
    random_erase: float = 0.0
    randaugment: Optional[Tuple[int, float, float]] = None  # (ops, magnitude 0..10, mstd)
    normalize: bool = True

    def __call__(
        self, x: torch.Tensor, generator: Optional[torch.Generator] = None, train: bool = True,
        total: Optional[int] = None, part: Optional[slice] = None,
    ) -> torch.Tensor:
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if train and generator is not None:
            if self.randaugment is not None and x.dim() == 4:
                from .randaugment import rand_augment

                n_ops, mag, mstd = self.randaugment
                x = rand_augment(x, int(n_ops), float(mag), float(mstd), generator, total, part)
            x = random_crop(x, self.crop_padding, generator, total, part)
            if self.hflip:
                x = hflip(x, generator, total, part)
        if self.normalize:
            x = normalize(x, self.mean, self.std)
        if train and generator is not None and self.random_erase > 0:
            x = random_erase(x, self.random_erase, generator, total, part)
        return x


class Mixup:
    """Mixup (``alpha > 0``) and/or CutMix (``cutmix_alpha > 0``) with soft targets.

    With both enabled, each batch uses CutMix with probability ``switch_prob``. ``prob`` is the
    chance that a batch is mixed at all. Returns ``(x, soft targets [B, classes])``.
    """

    def __init__(
        self, num_classes: int, alpha: float = 0.0, cutmix_alpha: float = 0.0,
        prob: float = 1.0, switch_prob: float = 0.5,
    ) -> None:
        if alpha < 0 or cutmix_alpha < 0:
            raise ValueError(f"mixup/cutmix alpha must be >= 0, got {alpha}, {cutmix_alpha}")
        self.num_classes = int(num_classes)
        self.alpha = float(alpha)
        self.cutmix_alpha = float(cutmix_alpha)
        self.prob = float(prob)
        self.switch_prob = float(switch_prob)

    @property
    def enabled(self) -> bool:
        return self.alpha > 0 or self.cutmix_alpha > 0

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        rng = np.random.default_rng(seed)
        onehot = F.one_hot(y, self.num_classes).to(torch.float32)
        if not self.enabled or rng.random() >= self.prob:
            return x, onehot
        use_cutmix = self.cutmix_alpha > 0 and (self.alpha <= 0 or rng.random() < self.switch_prob)
        if use_cutmix:
            lam = float(rng.beta(self.cutmix_alpha, self.cutmix_alpha))
            H, W = x.shape[-2:]
            cut = math.sqrt(1.0 - lam)
            ch, cw = int(H * cut), int(W * cut)
            cy, cx = int(rng.integers(0, H)), int(rng.integers(0, W))
            y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2 + ch % 2, H)
            x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2 + cw % 2, W)
            x = x.clone()
            x[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
            lam = 1.0 - (y1 - y0) * (x1 - x0) / float(H * W)
        else:
            lam = float(rng.beta(self.alpha, self.alpha))
            x = x * lam + x.flip(0) * (1.0 - lam)
        target = onehot * lam + onehot.flip(0) * (1.0 - lam)
        return x, target
