"""One training step, its defaults, and the batch size of an input.

:func:`training_step` is the step every measurement runs: ``zero_grad`` with gradients kept
allocated, forward, loss, backward, optimiser step. ``mark(name)`` is called at its boundaries
(``start``, ``fwd_end``, ``bwd_end``, ``opt_end``), where a timeline reads its meter and clock.
Without an optimiser it is forward + loss + backward only. Defaults: cross-entropy of the last
output (:func:`default_loss`) and SGD with momentum 0.9, lr 1e-3 (:func:`default_optimizer`).
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional

import torch
from torch import nn

__all__ = ["batch_of", "default_loss", "default_optimizer", "device_of", "training_step"]

LossFn = Callable[[Any, torch.Tensor], torch.Tensor]
OptimizerFactory = Callable[[List[nn.Parameter]], torch.optim.Optimizer]


def default_loss(out: Any, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the logits (the last of a list of head outputs)."""
    logits = out[-1] if isinstance(out, (list, tuple)) else out
    return nn.functional.cross_entropy(logits, target)


def default_optimizer(params: List[nn.Parameter]) -> torch.optim.Optimizer:
    """SGD, lr 1e-3, momentum 0.9."""
    return torch.optim.SGD(params, lr=1e-3, momentum=0.9)


def batch_of(x: torch.Tensor) -> int:
    """Batch size of images ``[B, C, H, W]`` or frames ``[T, B, C, H, W]``."""
    return int(x.shape[1] if x.dim() == 5 else x.shape[0])


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _no_mark(name: str) -> None:
    return None


def training_step(forward: Callable, loss_fn: LossFn, opt: Optional[torch.optim.Optimizer],
                  x: torch.Tensor, y: torch.Tensor,
                  mark: Callable[[str], None] = _no_mark, *, hold_output: bool = False) -> None:
    """``zero_grad`` (gradients kept), ``loss_fn(forward(x), y).backward()``, ``opt.step()``;
    without ``opt`` forward + loss + backward only (gradients accumulate). With
    ``hold_output`` the forward's output stays referenced until the step ends (as in a loop
    that reads it after the update), otherwise only the loss's graph keeps it."""
    mark("start")
    if opt is not None:
        opt.zero_grad(set_to_none=False)
    if hold_output:
        out = forward(x)
        loss = loss_fn(out, y)
    else:
        out, loss = None, loss_fn(forward(x), y)
    mark("fwd_end")
    loss.backward()
    mark("bwd_end")
    if opt is not None:
        opt.step()
        mark("opt_end")
    del out, loss
