"""Optimisers, learning-rate schedules, EMA and adaptive gradient clipping.

- :func:`build_optimizer`: SGD (momentum, Nesterov off), AdamW, or :class:`Lamb`. Weight decay
  applies to weight tensors only: a parameter with fewer than two dimensions larger than one
  (biases, norm scales, conv gains ``[C, 1, 1, 1]``, T-RevSNN's ``alpha [1, C, 1, 1]``) is not
  decayed, except with SGD, whose published recipe decays everything.
- :func:`lr_at`: the learning rate of optimiser step ``s`` (per iteration): linear warm-up from
  ``warmup_lr`` to ``lr`` over ``warmup_epochs``, then cosine to ``min_lr``
  (``lr_s = min_lr + (lr - min_lr) (1 + cos(pi p)) / 2``, ``p`` the post-warm-up progress), step
  decay (``lr * gamma^#{milestones <= epoch}``) or constant.
- :class:`Lamb` (You et al. 2019): Adam moments with bias correction, update
  ``u = m_hat / (sqrt(v_hat) + eps) + wd * w``, trust ratio ``r = ||w|| / ||u||`` (1 when either
  norm is 0), ``w <- w - lr * r * u``.
- :class:`ModelEMA`: ``w_ema <- d * w_ema + (1 - d) * w`` after every step (buffers copied).
- :func:`adaptive_clip_grad` (NF-Nets AGC): per output unit ``i`` of each parameter,
  ``g_i <- g_i * min(1, clip * max(||w_i||, eps) / ||g_i||)``.
"""

from __future__ import annotations

import contextlib
import math
from typing import Dict, Iterable, Iterator, List, Tuple

import torch
from torch import nn

from .config import TrainConfig

__all__ = ["Lamb", "ModelEMA", "adaptive_clip_grad", "build_optimizer", "lr_at", "set_lr"]


def _decays(p: torch.Tensor) -> bool:
    return sum(int(s > 1) for s in p.shape) >= 2


def param_groups(model: nn.Module, weight_decay: float, decay_all: bool) -> List[Dict]:
    decay, no_decay = [], []
    seen = set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if decay_all or _decays(p) else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    name = cfg.optimizer.lower()
    if name == "sgd":
        groups = param_groups(model, cfg.weight_decay, decay_all=True)
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    groups = param_groups(model, cfg.weight_decay, decay_all=False)
    betas = (float(cfg.betas[0]), float(cfg.betas[1]))
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas)
    if name == "lamb":
        return Lamb(groups, lr=cfg.lr, betas=betas)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; expected one of sgd, adamw, lamb")


def lr_at(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Learning rate of optimiser step ``step`` (0-based)."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))
    if step < warm:
        return cfg.warmup_lr + (cfg.lr - cfg.warmup_lr) * step / warm
    sched = cfg.scheduler.lower()
    if sched == "cosine":
        p = min(1.0, (step - warm) / max(1, total - warm))
        return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * p))
    if sched == "step":
        epoch = step // max(1, steps_per_epoch)
        return cfg.lr * cfg.gamma ** sum(int(epoch >= m) for m in cfg.milestones)
    if sched == "constant":
        return cfg.lr
    raise ValueError(f"unknown scheduler {cfg.scheduler!r}; expected cosine, step or constant")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr


class Lamb(torch.optim.Optimizer):
    """Layer-wise adaptive large-batch optimiser (LAMB), decoupled weight decay per group."""

    def __init__(
        self, params, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6, weight_decay: float = 0.0,
    ) -> None:
        if lr < 0 or eps <= 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid Lamb hyper-parameters lr={lr}, betas={betas}, eps={eps}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.float()
                st = self.state[p]
                if not st:
                    st["step"] = torch.zeros((), dtype=torch.float32)
                    st["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    st["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                st["step"] += 1
                t = float(st["step"])
                m, v = st["exp_avg"], st["exp_avg_sq"]
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                m_hat = m / (1 - b1**t)
                v_hat = v / (1 - b2**t)
                u = m_hat / (v_hat.sqrt() + group["eps"])
                w = p.float()
                if group["weight_decay"]:
                    u = u + group["weight_decay"] * w
                w_norm, u_norm = w.norm(), u.norm()
                ratio = torch.where(
                    (w_norm > 0) & (u_norm > 0), w_norm / u_norm.clamp_min(1e-30),
                    torch.ones_like(w_norm),
                )
                p.add_((u * (-group["lr"] * ratio)).to(p.dtype))
        return loss


class ModelEMA:
    """Exponential moving average of a model's floating-point state (params and buffers)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.shadow: Dict[str, torch.Tensor] = {
            k: v.detach().clone() for k, v in model.state_dict().items()
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if v.is_floating_point():
                s.mul_(self.decay).add_(v.detach(), alpha=1.0 - self.decay)
            else:
                s.copy_(v)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) ^ set(state)
        if missing:
            raise ValueError(f"EMA state keys differ from the model's: {sorted(missing)[:5]}")
        for k, v in state.items():
            self.shadow[k].copy_(v)

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """Temporarily load the EMA weights into ``model``."""
        saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield
        finally:
            model.load_state_dict(saved)


def _unit_norm(x: torch.Tensor) -> torch.Tensor:
    if x.dim() <= 1:
        return x.norm(p=2)
    return x.norm(p=2, dim=tuple(range(1, x.dim())), keepdim=True)  # one norm per output unit


@torch.no_grad()
def adaptive_clip_grad(params: Iterable[torch.Tensor], clip: float, eps: float = 1e-3) -> None:
    """Adaptive gradient clipping (unit-wise ratio of gradient to weight norm)."""
    for p in params:
        if p.grad is None:
            continue
        w_norm = _unit_norm(p.detach().float()).clamp_min(eps)
        g = p.grad.detach().float()
        g_norm = _unit_norm(g)
        max_norm = w_norm * clip
        scale = torch.where(g_norm > max_norm, max_norm / g_norm.clamp_min(1e-6), 1.0)
        p.grad.mul_(scale.to(p.grad.dtype))
