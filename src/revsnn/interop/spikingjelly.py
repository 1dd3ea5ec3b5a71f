"""SpikingJelly modules inside revsnn's reversible engines.

SpikingJelly's neurons keep their membrane potential between calls (``MemoryModule``) and
expect ``functional.reset_net`` between samples. revsnn's recompute core follows the same
protocol: before every run of a recomputed part -- a coupling branch, a temporal-column level,
a readout -- it calls ``reset()`` on every module that has one, in every memory mode
(``docs/recompute.md``). A SpikingJelly block is therefore a pure function of its input inside
revsnn, and ``"checkpoint"`` and ``"reversible"`` give plain autograd's values and gradients::

    from spikingjelly.activation_based import layer, neuron
    from revsnn.interop.spikingjelly import multi_step
    from revsnn.reversible import RevCoupling, ReversibleSequence

    def branch(c):
        return multi_step(nn.Sequential(
            neuron.LIFNode(tau=2.0), layer.Conv2d(c, c, 3, padding=1, bias=False),
            layer.BatchNorm2d(c)))

    seq = ReversibleSequence([RevCoupling(branch(c), branch(c)) for _ in range(4)])
    y = seq(x)  # x: [T, B, 2c, H, W]

Coupling branches receive time-first ``[T, B, C, ...]`` tensors, so every SpikingJelly module in
them must run in multi-step mode (``step_mode="m"``): :func:`multi_step` sets it. A level of
:class:`~revsnn.reversible.TemporalColumns` runs one time step (``[B, C, H, W]``):
:func:`single_step` sets ``step_mode="s"``; its neurons start from the reset state in every
column, since temporal information flows through the column states. In both cases neurons start
from their reset state at every call (as revsnn's own neurons), so no state carries over from
one batch or one call to the next.

Install: ``pip install spikingjelly==2.0.0 --no-deps loguru`` (its declared dependencies pull
torchvision and torchaudio, which the modules used here do not need).
"""

from __future__ import annotations

from typing import List

from torch import nn

__all__ = ["multi_step", "single_step", "spikingjelly_modules"]


def _spikingjelly():
    try:
        from spikingjelly.activation_based import base, functional
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "revsnn.interop.spikingjelly needs SpikingJelly 2.0: "
            "pip install spikingjelly==2.0.0 --no-deps loguru"
        ) from err
    return base, functional


def spikingjelly_modules(module: nn.Module) -> List[nn.Module]:
    """The SpikingJelly step modules (neurons, layers) inside ``module``."""
    base, _ = _spikingjelly()
    return [m for m in module.modules() if isinstance(m, base.StepModule)]


def multi_step(module: nn.Module) -> nn.Module:
    """Put every SpikingJelly module inside ``module`` in multi-step mode (``[T, B, ...]``
    input, a coupling branch) and check the reset protocol; returns ``module``."""
    return _prepare(module, "m")


def single_step(module: nn.Module) -> nn.Module:
    """Put every SpikingJelly module inside ``module`` in single-step mode (one time step, a
    temporal-column level or readout) and check the reset protocol; returns ``module``."""
    return _prepare(module, "s")


def _prepare(module: nn.Module, step_mode: str) -> nn.Module:
    base, functional = _spikingjelly()
    if not spikingjelly_modules(module):
        raise ValueError(f"{type(module).__name__} contains no SpikingJelly module")
    functional.set_step_mode(module, step_mode)
    for m in module.modules():
        if isinstance(m, base.MemoryModule) and not callable(getattr(m, "reset", None)):
            raise ValueError(  # pragma: no cover - every MemoryModule has reset()
                f"{type(m).__name__} keeps state but has no reset(): revsnn cannot recompute it"
            )
    return module
