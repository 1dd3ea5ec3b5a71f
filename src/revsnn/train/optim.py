"""Optimisers, learning-rate schedules, EMA and adaptive gradient clipping.

- :func:`build_optimizer`: SGD (momentum, Nesterov off), AdamW, or :class:`Lamb`. Weight decay
  applies to weight tensors only: a parameter with fewer than two dimensions larger than one
  (biases, norm scales, conv gains ``[C, 1, 1, 1]``, T-RevSNN's ``alpha [1, C, 1, 1]``) is not
  decayed, except with SGD, whose published recipe decays everything.
- :func:`build_scheduler`: torch's ``lr_scheduler``, stepped once per optimiser step: linear
  warm-up from ``warmup_lr`` to ``lr`` over ``warmup_epochs`` (``LinearLR``), then cosine to
  ``min_lr`` (``CosineAnnealingLR``: ``lr_s = min_lr + (lr - min_lr) (1 + cos(pi p)) / 2``,
  ``p`` the post-warm-up progress), step decay (``MultiStepLR``: ``lr * gamma^#{milestones <=
  epoch}``) or constant (``ConstantLR``), joined by ``SequentialLR``. torch computes these
  recursively, so they equal the closed forms to float64 rounding (~1e-14 relative), not bit
  for bit; a warm-up from exactly 0 starts at ``1e-12 * lr`` (``LinearLR`` needs a factor > 0).
  :func:`scheduler_at` rebuilds the schedule at any step for a resumed run.
- :class:`Lamb` (You et al. 2019): Adam moments with bias correction, update
  ``u = m_hat / (sqrt(v_hat) + eps) + wd * w``, trust ratio ``r = ||w|| / ||u||`` (1 when either
  norm is 0), ``w <- w - lr * r * u``.
- :func:`build_ema`: torch's ``AveragedModel`` with its EMA function
  (``get_ema_multi_avg_fn``): ``w_ema <- w_ema + (1 - d) (w - w_ema)`` after every step over
  parameters and floating-point buffers, starting from the initial weights; integer buffers
  (BatchNorm's step counter) are copied.
- :func:`adaptive_clip_grad` (NF-Nets AGC): per output unit ``i`` of each parameter,
  ``g_i <- g_i * min(1, clip * max(||w_i||, eps) / ||g_i||)``.
"""

from __future__ import annotations

import warnings
from typing import Dict, Iterable, List, Tuple

import torch
from torch import nn
from torch.optim import lr_scheduler
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .config import TrainConfig

__all__ = [
    "Lamb", "adaptive_clip_grad", "build_ema", "build_optimizer", "build_scheduler",
    "ema_update", "scheduler_at",
]


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


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                    steps_per_epoch: int) -> lr_scheduler.LRScheduler:
    """The per-step schedule of ``cfg`` (see the module docstring); the optimiser's learning
    rate is the one of step 0 afterwards."""
    spe = max(1, int(steps_per_epoch))
    total = max(1, cfg.epochs * spe)
    warm = int(round(cfg.warmup_epochs * spe))
    sched = cfg.scheduler.lower()
    if sched == "cosine":
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total - warm),
                                              eta_min=cfg.min_lr)
    elif sched == "step":
        main = lr_scheduler.MultiStepLR(
            optimizer, milestones=sorted(max(1, int(m) * spe - warm) for m in cfg.milestones),
            gamma=cfg.gamma)
    elif sched == "constant":
        main = lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    else:
        raise ValueError(f"unknown scheduler {cfg.scheduler!r}; expected cosine, step or constant")
    if warm <= 0:
        return main
    start = min(1.0, max(cfg.warmup_lr / cfg.lr, 1e-12))
    warmup = lr_scheduler.LinearLR(optimizer, start_factor=start, end_factor=1.0,
                                   total_iters=warm)
    return lr_scheduler.SequentialLR(optimizer, [warmup, main], milestones=[warm])


def scheduler_at(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int,
                 step: int) -> lr_scheduler.LRScheduler:
    """:func:`build_scheduler` advanced to optimiser step ``step`` (a resumed run): the
    recursion is replayed, so the rates equal the uninterrupted run's bit for bit. Call it
    before loading the optimiser's state."""
    sched = build_scheduler(optimizer, cfg, steps_per_epoch)
    with warnings.catch_warnings():  # replaying the schedule without optimiser steps
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(int(step)):
            sched.step()
    return sched


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


def build_ema(model: nn.Module, decay: float) -> AveragedModel:
    """``AveragedModel`` of ``model`` with torch's EMA function, holding the initial weights."""
    if not 0.0 < decay < 1.0:
        raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    ema.update_parameters(model)  # the first update copies: w_ema = w_0
    return ema


@torch.no_grad()
def ema_update(ema: AveragedModel, model: nn.Module) -> None:
    """One EMA step after an optimiser step (integer buffers are copied, not averaged)."""
    ema.update_parameters(model)
    for b_ema, b in zip(ema.module.buffers(), model.buffers()):
        if not b.is_floating_point():
            b_ema.copy_(b)


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
