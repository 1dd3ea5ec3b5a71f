"""Training memory per image for the run's own memory mode, and what ``none`` would need.

Measured once before training with :func:`revsnn.bench.memory.measure_training_step` (peak
live-tensor bytes of one training step -- forward, loss, backward -- as the slope between the
batch sizes ``memory_batches``, on test images), in the mode the run trains in, then once more
with the model switched to ``memory_mode="none"`` (plain autograd, the oracle) for the
comparison on the final line. Parameters, buffers, gradients and the RNG are restored after
each measurement, so measuring does not change the run. A resumed run reuses the stored figure
only when mode, batch sizes and device type are the same; otherwise it measures again.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import nn

from ..measure import forked_rng
from ..models.objective import model_loss
from .build import DataBundle
from .config import TrainConfig

__all__ = ["measure_run_memory", "memory_matches", "sample_batch"]


def sample_batch(data: DataBundle, B: int, device: torch.device, make_inputs,
                 need: Optional[int] = None):
    """``(x, target)`` of ``B`` evaluation images (the test split when it has ``need``
    (default ``B``) of them, else the train split), through the run's input pipeline
    ``make_inputs(Batch)``."""
    from ..data.loaders import Batch

    need = B if need is None else need
    source = data.test if data.test is not None and len(data.test) >= need else data.train
    if hasattr(source, "images"):
        xb, yb = source.images[:B], source.labels[:B]
    else:
        items = [source[i % len(source)] for i in range(B)]
        xb = torch.stack([it[0] for it in items])
        yb = torch.as_tensor([int(it[1]) for it in items])
    return make_inputs(Batch(xb.to(device), yb.to(device), slice(0, len(yb)), len(yb), 0))


def _one(module: nn.Module, make_batch, cfg: TrainConfig, device: torch.device) -> Dict[str, Any]:
    try:
        from ..bench.memory import measure_training_step
    except ImportError as err:  # the bench module is optional at this level
        return {"mib_per_image": None, "method": f"unavailable ({err})"}

    def loss_fn(out, target):
        return model_loss(out, target, cfg.label_smoothing)

    try:
        with forked_rng(device):
            return measure_training_step(module, make_batch, loss_fn, device,
                                         [int(b) for b in cfg.memory_batches])
    except Exception as err:  # noqa: BLE001 - memory is a report, never a reason to stop
        return {"mib_per_image": None, "method": f"failed ({type(err).__name__}: {err})"}


def memory_matches(stored: Optional[Dict[str, Any]], cfg: TrainConfig,
                   device: torch.device) -> bool:
    """Whether a stored measurement is of this mode, these batch sizes and this device type."""
    return bool(stored) and stored.get("mib_per_image") is not None and (
        stored.get("memory_mode") == str(cfg.memory_mode)
        and list(stored.get("batches", [])) == [int(b) for b in cfg.memory_batches]
        and stored.get("device_type") == device.type
    )


def measure_run_memory(module: nn.Module, model: nn.Module, data: DataBundle, cfg: TrainConfig,
                       device: torch.device, make_inputs) -> Dict[str, Any]:
    """The measurement dict of ``revsnn.bench.memory`` for ``cfg.memory_mode`` plus
    ``memory_mode``, ``device_type`` and ``none_mib_per_image`` (None when the model has no
    ``set_memory_mode``)."""
    big = max(int(b) for b in cfg.memory_batches)
    plan = model.memory_plan() if callable(getattr(model, "memory_plan", None)) else None
    single = getattr(model, "memory_mode", None)  # None for a per-part plan

    def make_batch(B: int):
        return sample_batch(data, B, device, make_inputs, need=big)

    mem = _one(module, make_batch, cfg, device)
    mem.update(memory_mode=str(cfg.memory_mode), device_type=device.type)
    none: Optional[float] = None
    if (set(plan.values()) == {"none"}) if plan else str(cfg.memory_mode) == "none":
        none = mem.get("mib_per_image")
    elif callable(getattr(model, "set_memory_mode", None)) and mem.get("mib_per_image"):
        model.set_memory_mode("none")
        try:
            none = _one(module, make_batch, cfg, device).get("mib_per_image")
        finally:  # the run's own modes again (a per-part plan of --memory-budget included)
            model.set_memory_mode(single if single is not None
                                  else plan if plan else cfg.memory_mode)
    mem["none_mib_per_image"] = none
    return mem
