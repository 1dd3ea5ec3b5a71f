"""``revsnn train --memory-budget 8GiB [--max-batch]``: per-part memory modes from the planner.

Before training, the model is profiled on the run's device with the run's own training step
(every head, its loss, the configured optimiser; :func:`revsnn.plan.profile`) on images of the
data set, at the per-process batch size and half of it. :func:`revsnn.plan.solve` then picks the
per-part modes of least predicted step time whose predicted peak fits the budget (per process),
and the model is switched to them; with ``--max-batch`` the batch size becomes the largest that
fits (per process; the global batch is that times the number of processes). A budget that no
plan meets is a clear error naming the shortfall. Under ``torchrun`` rank 0 plans and every rank
applies the same plan.
"""

from __future__ import annotations

from typing import Callable, Dict, Tuple

import torch
from torch import nn

from ..models.objective import TrainForward, model_loss
from ..plan import max_batch, profile, solve
from ..plan.parts import apply_modes
from ..units import format_bytes, parse_bytes
from .build import DataBundle
from .config import TrainConfig, apply_overrides
from .distributed import DistEnv
from .memory_report import sample_batch
from .optim import build_optimizer

__all__ = ["plan_memory"]


def _plan(cfg: TrainConfig, data: DataBundle, model: nn.Module, env: DistEnv,
          make_inputs: Callable) -> Tuple[Dict[str, str], int, str]:
    budget = parse_bytes(cfg.memory_budget)
    if cfg.max_batch:  # no batch fits above the memory the device can allocate
        from ..plan.capacity import cap_budget

        budget, _ = cap_budget(budget, env.device)
    local = max(1, cfg.batch_size // env.world)
    x, y = sample_batch(data, local, env.device, make_inputs)
    prof = profile(
        model, x, y, forward=TrainForward(model),
        loss_fn=lambda out, t: model_loss(out, t, cfg.label_smoothing),
        optimizer=lambda params: build_optimizer(model, cfg), rounds=1,
    )
    if cfg.parallel == "fsdp" and env.world > 1:  # per process of the sharded run
        from ..plan.sharded import optimizer_state_factor, shard_profile

        prof = shard_profile(prof, model, env.world,
                             optimizer_state_factor(cfg.optimizer, cfg.momentum))
    sol = max_batch(prof, budget) if cfg.max_batch else solve(prof, local, budget)
    if not sol.fits:
        raise ValueError(f"--memory-budget {cfg.memory_budget}: {sol.message}; lower "
                         "--batch-size or raise the budget")
    line = (f"memory plan for {format_bytes(budget)} per process at batch {sol.batch_size}: "
            f"predicted peak {format_bytes(sol.predicted_peak_bytes)}, step "
            f"{sol.predicted_step_s:.3f} s; modes {sol.modes}")
    return sol.modes, sol.batch_size, line


def plan_memory(cfg: TrainConfig, data: DataBundle, model: nn.Module, env: DistEnv,
                log: Callable[[str], None], make_inputs: Callable) -> TrainConfig:
    """Apply the plan for ``cfg.memory_budget`` to ``model`` (moved to the run's device);
    returns the config, with the batch size found by ``--max-batch``."""
    model.to(env.device)
    payload = [None]
    if env.main:
        payload = [_plan(cfg, data, model, env, make_inputs)]
    if env.distributed:
        torch.distributed.broadcast_object_list(payload, src=0)
    modes, batch, line = payload[0]
    apply_modes(model, modes)
    if env.main:
        log(line)
    if cfg.max_batch:
        cfg = apply_overrides(cfg, {"batch_size": batch * env.world})
    return cfg
