"""RandAugment done batch-wise on float images in [0, 1] (``[B, C, H, W]``).

Each sample applies ``n`` operations drawn uniformly from :data:`OPS`, each at magnitude
``v = clamp(m + mstd * N(0, 1), 0, 10) / 10`` with a random sign for the signed ops:

- identity; autocontrast (per channel min/max stretch); equalize (per-channel histogram
  equalisation over 256 levels); solarize (invert pixels >= 1 - v); posterize (keep
  ``8 - round(4 v)`` bits);
- brightness / contrast / colour (saturation) / sharpness: blend with a degenerate image
  (black / grey mean / greyscale / 3x3-smoothed) with factor ``1 + 0.9 s v``;
- rotate (``30 s v`` degrees), shear x / y (``0.3 s v``), translate x / y (``0.45 s v`` of the
  size): one affine warp with bilinear sampling, uncovered pixels filled with 0.5 grey.

Samples that draw the same operation are processed together, so the cost is a few batched ops.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F

__all__ = ["OPS", "rand_augment"]


def _blend(x: torch.Tensor, degenerate: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = factor.view(-1, 1, 1, 1)
    return (degenerate + f * (x - degenerate)).clamp(0, 1)


def _grey(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 3:
        w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype)
        return (x * w.view(1, 3, 1, 1)).sum(1, keepdim=True).expand_as(x)
    return x.mean(1, keepdim=True).expand_as(x)


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    cover = F.grid_sample(torch.ones_like(x[:, :1]), grid, mode="bilinear",
                          padding_mode="zeros", align_corners=False)
    return out + 0.5 * (1 - cover)


def _eye(n: int, x: torch.Tensor) -> torch.Tensor:
    return torch.eye(2, 3, device=x.device, dtype=x.dtype).repeat(n, 1, 1)  # [n, 2, 3]


def _rotate(x, v, s):
    a = (s * v * 30.0 * math.pi / 180.0).to(x.dtype)
    th = _eye(len(x), x)
    th[:, 0, 0], th[:, 0, 1] = torch.cos(a), -torch.sin(a)
    th[:, 1, 0], th[:, 1, 1] = torch.sin(a), torch.cos(a)
    return _affine(x, th)


def _shear(axis: int):
    def op(x, v, s):
        th = _eye(len(x), x)
        th[:, axis, 1 - axis] = (s * v * 0.3).to(x.dtype)
        return _affine(x, th)
    return op


def _translate(axis: int):
    def op(x, v, s):
        th = _eye(len(x), x)
        th[:, axis, 2] = (s * v * 0.45 * 2).to(x.dtype)  # grid units span 2 per image size
        return _affine(x, th)
    return op


def _autocontrast(x, v, s):
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    scale = torch.where(hi > lo, 1.0 / (hi - lo).clamp_min(1e-8), torch.ones_like(hi))
    return torch.where(hi > lo, (x - lo) * scale, x)


def _equalize(x, v, s):
    B, C, H, W = x.shape
    q = (x * 255).round().long().clamp(0, 255).view(B * C, H * W)
    ones = torch.ones_like(q, dtype=torch.float32)
    hist = torch.zeros(B * C, 256, device=x.device).scatter_add_(1, q, ones)  # [B*C, 256]
    cdf = hist.cumsum(1)
    cdf_min = torch.where(hist > 0, cdf, torch.full_like(cdf, float(H * W))).amin(1, keepdim=True)
    denom = (H * W - cdf_min).clamp_min(1)
    lut = ((cdf - cdf_min) / denom).clamp(0, 1)  # [B*C, 256]
    out = lut.gather(1, q).view(B, C, H, W).to(x.dtype)
    flat = (denom.view(B, C, 1, 1) <= 1)  # a constant channel stays as it is
    return torch.where(flat, x, out)


def _solarize(x, v, s):
    thr = (1.0 - v).view(-1, 1, 1, 1).to(x.dtype)
    return torch.where(x >= thr, 1.0 - x, x)


def _posterize(x, v, s):
    bits = (8 - torch.round(v * 4)).long().view(-1, 1, 1, 1)
    q = (x * 255).round().long()
    keep = 2 ** (8 - bits)
    return ((q // keep) * keep).to(x.dtype) / 255.0


def _enhance(kind: str):
    def op(x, v, s):
        factor = (1 + 0.9 * s * v).to(x.dtype)
        if kind == "brightness":
            deg = torch.zeros_like(x)
        elif kind == "contrast":
            deg = _grey(x).mean(dim=(1, 2, 3), keepdim=True).expand_as(x)
        elif kind == "color":
            deg = _grey(x)
        else:  # sharpness
            k = torch.tensor([[1, 1, 1], [1, 5, 1], [1, 1, 1]], device=x.device, dtype=x.dtype) / 13
            C = x.shape[1]
            deg = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k.expand(C, 1, 3, 3), groups=C)
        return _blend(x, deg, factor)
    return op


OPS: Dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "identity": lambda x, v, s: x,
    "autocontrast": _autocontrast,
    "equalize": _equalize,
    "rotate": _rotate,
    "solarize": _solarize,
    "color": _enhance("color"),
    "posterize": _posterize,
    "contrast": _enhance("contrast"),
    "brightness": _enhance("brightness"),
    "sharpness": _enhance("sharpness"),
    "shear_x": _shear(0),
    "shear_y": _shear(1),
    "translate_x": _translate(0),
    "translate_y": _translate(1),
}


def rand_augment(
    x: torch.Tensor, n: int, magnitude: float, mstd: float, generator: torch.Generator,
    total: Optional[int] = None, part: Optional[slice] = None,
) -> torch.Tensor:
    """Apply ``n`` random operations per sample at magnitude ``magnitude`` (0..10)."""
    if x.dim() != 4:
        raise ValueError(f"rand_augment expects images [B, C, H, W], got {tuple(x.shape)}")
    names = list(OPS)
    B = x.shape[0]
    total = total or B
    sl = part if part is not None else slice(0, total)
    for _ in range(n):
        op = torch.randint(0, len(names), (total,), generator=generator)[sl]
        mag = (magnitude + mstd * torch.randn(total, generator=generator))[sl]
        v = (mag.clamp(0, 10) / 10).to(x.device)
        sign = torch.where(torch.rand(total, generator=generator)[sl] < 0.5, -1.0, 1.0).to(x.device)
        out = x.clone()
        for k, name in enumerate(names):
            idx = (op == k).nonzero().flatten().to(x.device)
            if idx.numel():
                out[idx] = OPS[name](x[idx], v[idx], sign[idx]).to(x.dtype).clamp(0, 1)
        x = out
    return x
