"""Save and restore around a measurement: whatever a measured step changes is put back.

:func:`preserved` snapshots a model's parameters, buffers (a detached copy of its
``state_dict``), its gradients, its memory modes and its training flag, runs the body in
training mode -- with the RNG forked (and seeded) when asked -- and restores all of it, whatever
happened. :func:`restore_point` is the memory-mode part alone.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Dict, Iterator, Optional, Union

import torch
from torch import nn

from ..reversible.mode import MemoryMode, parts_of

__all__ = ["forked_rng", "preserved", "restore_point"]


def _parts(model: nn.Module) -> Dict[str, nn.Module]:
    fn = getattr(model, "parts", None)
    return dict(fn()) if callable(fn) else parts_of(model)


def restore_point(model: nn.Module) -> Callable[[], None]:
    """A function that puts the model's modes back as they are now -- through the same
    single mode when one was set (so that ``model.memory_mode`` is unchanged), else the
    per-part mapping."""
    parts = _parts(model)
    plan = {name: MemoryMode.parse(p.memory_mode).value for name, p in parts.items()}
    per_model = callable(getattr(model, "parts", None)) and callable(
        getattr(model, "set_memory_mode", None))
    single = getattr(model, "memory_mode", None) if per_model else None

    def restore() -> None:
        if single is not None:
            model.set_memory_mode(single)
        elif per_model:
            model.set_memory_mode(dict(plan))
        else:
            for name, part in parts.items():
                part.memory_mode = plan[name]

    return restore


@contextmanager
def forked_rng(device: Union[str, torch.device], seed: Optional[int] = None) -> Iterator[None]:
    """The CPU RNG (and ``device``'s, on CUDA) forked for the body, seeded with ``seed`` when
    given; the caller's RNG state is unchanged afterwards."""
    dev = torch.device(device)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        if seed is not None:
            torch.manual_seed(seed)
        yield


@contextmanager
def preserved(model: nn.Module, device: Union[str, torch.device], *, rng: bool = True,
              seed: Optional[int] = 0) -> Iterator[None]:
    """Run a measurement in training mode (RNG forked and seeded with ``seed`` when ``rng``),
    then restore the model's parameters, buffers, gradients, memory modes, training flag and
    the RNG, whatever happened."""
    params = [p for p in model.parameters() if p.requires_grad]
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    grads = [None if p.grad is None else p.grad.detach().clone() for p in params]
    restore_modes = restore_point(model)
    was_training = model.training
    try:
        if rng:
            with forked_rng(device, seed):
                model.train()
                yield
        else:
            model.train()
            yield
    finally:
        with torch.no_grad():
            model.load_state_dict(state)
        for p, g in zip(params, grads):
            p.grad = g
        restore_modes()
        model.train(was_training)
