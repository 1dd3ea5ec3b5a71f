"""The training step and the epoch of steps: augment -> forward all heads -> loss -> backward ->
clip -> checked optimiser step (batch, loss, gradients, buffers and, after it, parameters
finite: :mod:`revsnn.train.finite`) -> schedule -> EMA, with a Ctrl-C looked at once per
step; and the evaluation of the final head.

Reproducibility: the data order and every augmentation draw of an epoch depend only on
``(seed, epoch)`` (:func:`epoch_generator`).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any, Callable, Dict, Optional

import torch
from torch import nn

from ..data import Loader
from ..models.objective import model_loss, soft_cross_entropy
from .build import DataBundle
from .compiling import compile_seconds
from .config import TrainConfig
from .distributed import DistEnv, all_reduce_sum
from .finite import TrainingDiverged, batch_finite, checked_step
from .optim import adaptive_clip_grad, ema_update
from .payload import checkpoint_payload, save
from .progress import make_progress

__all__ = [
    "StopTraining", "TrainingDiverged", "amp_context", "batch_inputs", "epoch_generator",
    "evaluate", "train_epoch",
]


class StopTraining(Exception):
    """A stop was requested (Ctrl-C) and the state is consistent (caught by the loop)."""


def amp_context(cfg: TrainConfig, device: torch.device):
    """``(autocast context factory, grad scaler or None)`` for ``cfg.amp``."""
    if not cfg.amp:
        return nullcontext, None
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(
        cfg.amp_dtype, torch.float16 if device.type == "cuda" else torch.bfloat16
    )
    scaler = None
    if dtype is torch.float16 and device.type == "cuda":
        scaler = torch.amp.GradScaler("cuda")
    return (lambda: torch.autocast(device.type, dtype=dtype)), scaler


def epoch_generator(cfg: TrainConfig, epoch: int) -> torch.Generator:
    """The generator of every augmentation draw of an epoch (depends on seed and epoch only)."""
    return torch.Generator().manual_seed((cfg.seed * 7_919 + epoch) * 2_654_435_761 % (2**63))


def batch_inputs(data: DataBundle, batch, gen: Optional[torch.Generator], train: bool):
    """A loader batch augmented (and mixed when training), frames time-first: ``(x, target)``."""
    x = data.augment(batch.x, gen, train=train, total=batch.total, part=batch.part)
    target = batch.y
    if train and data.mixup.enabled:
        x, target = data.mixup(x, batch.y, gen)
    if data.frames:
        x = x.transpose(0, 1)  # [B, T, C, H, W] -> [T, B, C, H, W]
    return x, target


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: Loader, data: DataBundle, env: Optional[DistEnv] = None,
    amp_ctx: Callable = nullcontext, stop: Optional[Callable[[], bool]] = None,
) -> Dict[str, float]:
    """Test loss and accuracy of the final head (summed over ranks)."""
    env = env or DistEnv()
    was = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64)
    try:
        for batch in loader:
            if stop is not None and stop():
                raise StopTraining
            x, y = batch_inputs(data, batch, None, train=False)
            with amp_ctx():
                logits = model(x)
            sums[0] += float(soft_cross_entropy(logits, y)) * len(y)
            sums[1] += float((logits.argmax(1) == y).sum())
            sums[2] += len(y)
    finally:
        model.train(was)
    all_reduce_sum(sums, env)
    n = max(1.0, float(sums[2]))
    return {"test_loss": float(sums[0]) / n, "test_acc": 100.0 * float(sums[1]) / n}


def train_epoch(run: Any, epoch: int, start: int, state: Optional[Dict[str, Any]]
                ) -> Dict[str, Any]:
    """One epoch of training steps from step ``start`` (``state``: the epoch's generator and
    running sums of a checkpoint written inside it); returns the epoch's metrics."""
    cfg, env = run.cfg, run.env
    run.ddp.train()
    run.train_loader.set_epoch(epoch)
    gen = epoch_generator(cfg, epoch)
    sums = torch.zeros(3, dtype=torch.float64)  # loss * n, correct, n
    before = 0.0
    if state is not None:
        gen.set_state(state["gen"])
        sums = state["sums"].to(torch.float64).clone()
        before = float(state["elapsed"])
    later = (cfg.epochs - epoch - 1) * run.steps
    bar = make_progress(run.steps, f"epoch {epoch + 1}/{cfg.epochs}",
                        enabled=cfg.progress and env.main, initial=start, later_steps=later)
    clock = getattr(run, "compile_clock", None)
    bar.compile_clock = clock
    c0 = compile_seconds(clock)
    t0 = time.perf_counter()
    lr, step, stop = run.last.get("lr", cfg.lr), start, False

    def epoch_state() -> Dict[str, Any]:
        return {"gen": gen.get_state(), "sums": sums.clone(),
                "elapsed": before + time.perf_counter() - t0}

    for batch in run.train_loader.batches(start):
        if batch.step >= run.steps:
            break
        lr = run.optimizer.param_groups[0]["lr"]
        data_ok = batch_finite(batch.x)
        x, target = batch_inputs(run.data, batch, gen, train=True)
        run.guard.remember_buffers()
        with run.amp_ctx():
            heads = run.ddp(x)
        loss = model_loss(heads, target, cfg.label_smoothing)
        run.optimizer.zero_grad(set_to_none=True)
        if run.scaler is not None:
            run.scaler.scale(loss).backward()
            run.scaler.unscale_(run.optimizer)
        else:
            loss.backward()
        if cfg.agc_clip > 0:
            adaptive_clip_grad(run.model.parameters(), cfg.agc_clip)
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
        # the optimiser step, checked (and Ctrl-C looked at) in one reduction on all ranks
        skipped, stop = checked_step(run, loss, data_ok, batch, epoch, lr)
        run.scheduler.step()
        if run.sharded and not skipped:
            from .sharding import ShardedEMA, sync_buffers

            sync_buffers(run.model)  # BatchNorm running statistics: the processes' mean
            if isinstance(run.ema, ShardedEMA):
                run.ema.update()
        if run.ema is not None and not skipped and not run.sharded:
            ema_update(run.ema, run.model)
        run.global_step += 1
        step = batch.step + 1
        if skipped:
            if stop:
                break
            continue
        n = len(batch.y)
        truth = target if target.dim() == 1 else target.argmax(1)
        correct = float((heads[-1].detach().argmax(1) == truth).sum())
        sums += torch.tensor([float(loss.detach()) * n, correct, n], dtype=torch.float64)
        bar.update(n * env.world, float(loss.detach()), correct * env.world)
        if stop:
            break
        if cfg.save_every and run.global_step % cfg.save_every == 0 and step < run.steps:
            save(run, checkpoint_payload(run, epoch, step, epoch_state()))
    bar.close()
    totals = sums.clone()
    all_reduce_sum(totals, env)
    n = max(1.0, float(totals[2]))
    return {"lr": lr, "train_loss": float(totals[0]) / n,
            "train_acc": 100.0 * float(totals[1]) / n, "images": n, "step": step,
            "stopped": stop, "state": epoch_state(),
            "elapsed": before + time.perf_counter() - t0,
            "compile_s": compile_seconds(clock) - c0}
