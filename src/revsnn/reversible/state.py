"""Everything a recomputation must see again, captured and restored in one place.

A recomputed part runs twice: once in the forward and once in the backward. For the second run
to be the same function evaluation it must see

- the same random numbers (dropout): the CPU generator and the CUDA generators of the devices
  involved are captured before the forward run and replayed inside a *forked* RNG context, so
  the caller's generators continue exactly as if no recomputation happened (never a global
  reseed) -- :class:`RecomputeState`;
- the same autocast state (enabled flag and dtype per device type) -- :class:`RecomputeState`;
- BatchNorm in the same mode, but **without** a second update of its running statistics:
  during the recomputation the buffers (running mean/var, num_batches_tracked) are swapped for
  scratch copies and the originals put back after it -- :func:`frozen_norm_stats`;
- the same module state. Modules that keep state between calls (SpikingJelly's neurons keep
  their membrane potential) follow the reset protocol: a module with a ``reset()`` method is
  reset before every run of the part that contains it (:func:`reset_states`), in every memory
  mode, so every run starts from the same state. A module whose tensors change during a run and
  that has no ``reset()`` cannot be recomputed faithfully: :class:`StateFingerprint` detects it
  so that the recomputing modes can refuse it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

__all__ = [
    "RecomputeState",
    "StateFingerprint",
    "frozen_norm_stats",
    "norm_layers",
    "reset_states",
    "stateful_modules",
]

_AUTOCAST_DEVICES = ("cpu", "cuda")


def _cuda_devices(tensors: Iterable[torch.Tensor]) -> List[int]:
    return sorted(
        {t.device.index or 0 for t in tensors if isinstance(t, torch.Tensor) and t.is_cuda}
    )


@dataclass
class RecomputeState:
    """RNG and autocast state captured just before a forward run."""

    cpu_rng: Optional[torch.Tensor] = None
    cuda_rng: Dict[int, torch.Tensor] = field(default_factory=dict)
    autocast: Tuple[Tuple[str, bool, torch.dtype], ...] = ()

    @classmethod
    def capture(cls, *tensors: torch.Tensor, rng: bool = True) -> RecomputeState:
        """Capture state now; ``tensors`` name the CUDA devices whose generators matter."""
        autocast = tuple(
            (d, torch.is_autocast_enabled(d), torch.get_autocast_dtype(d))
            for d in _AUTOCAST_DEVICES
        )
        if not rng:
            return cls(autocast=autocast)
        cuda = {i: torch.cuda.get_rng_state(i) for i in _cuda_devices(tensors)}
        return cls(cpu_rng=torch.get_rng_state(), cuda_rng=cuda, autocast=autocast)

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        """Run the body with the captured RNG (forked) and autocast state."""
        with contextlib.ExitStack() as stack:
            if self.cpu_rng is not None:
                stack.enter_context(
                    torch.random.fork_rng(devices=list(self.cuda_rng), enabled=True)
                )
                torch.set_rng_state(self.cpu_rng)
                for i, s in self.cuda_rng.items():
                    torch.cuda.set_rng_state(s, i)
            for device_type, enabled, dtype in self.autocast:
                stack.enter_context(
                    torch.autocast(device_type=device_type, dtype=dtype, enabled=enabled)
                )
            yield


# ----------------------------------------------------------------------------- BatchNorm
_NORM_TYPES = (nn.modules.batchnorm._NormBase,)
_STAT_NAMES = ("running_mean", "running_var", "num_batches_tracked")


def _unique_modules(roots: Iterable[Optional[nn.Module]]) -> List[nn.Module]:
    seen, out = set(), []
    for root in roots:
        if root is None:
            continue
        for m in root.modules():
            if id(m) not in seen:
                seen.add(id(m))
                out.append(m)
    return out


def norm_layers(modules: Iterable[Optional[nn.Module]], flat: bool = False) -> List[nn.Module]:
    """Normalisation layers inside ``modules`` (``flat``: ``modules`` already lists every
    submodule once) that would update running statistics."""
    mods = modules if flat else _unique_modules(modules)
    return [
        m for m in mods
        if isinstance(m, _NORM_TYPES) and m.training and m.track_running_stats
    ]


@contextlib.contextmanager
def frozen_norm_stats(*modules: Optional[nn.Module], flat: bool = False) -> Iterator[None]:
    """Let the body (a recomputation) update scratch copies of BatchNorm running statistics.

    Each running buffer is swapped for a clone during the body and the original tensor object
    is put back afterwards, untouched: statistics are updated exactly once per step, as in plain
    autograd, and no tensor saved by the recomputed graph is modified in place.
    """
    layers = norm_layers(modules, flat)
    originals = [
        {n: m._buffers[n] for n in _STAT_NAMES if m._buffers.get(n) is not None} for m in layers
    ]
    for m, bufs in zip(layers, originals):
        for n, b in bufs.items():
            m._buffers[n] = b.detach().clone()
    try:
        yield
    finally:
        for m, bufs in zip(layers, originals):
            m._buffers.update(bufs)


# ----------------------------------------------------------------------------- module state
def _resettable(m: nn.Module) -> bool:
    # class attribute or instance attribute (nn.Module.__getattr__ is slow on a miss)
    return callable(getattr(type(m), "reset", None)) or callable(m.__dict__.get("reset"))


def stateful_modules(modules: Iterable[Optional[nn.Module]], flat: bool = False) -> List[nn.Module]:
    """Modules inside ``modules`` (``flat``: ``modules`` already lists every submodule once)
    that follow the reset protocol: a callable ``reset()`` (SpikingJelly's ``MemoryModule`` has
    one) that restores the state a call starts from."""
    mods = modules if flat else _unique_modules(modules)
    return [m for m in mods if _resettable(m)]


def reset_states(modules: Iterable[nn.Module]) -> None:
    """Call ``reset()`` on every module of :func:`stateful_modules` (the reset protocol)."""
    for m in modules:
        m.reset()


_MODULE_ATTRS = frozenset(nn.Module().__dict__)  # parameters, buffers, submodules, hooks, ...


def _tensor_items(m: nn.Module) -> Iterator[Tuple[str, torch.Tensor]]:
    """The tensors a module may carry from one call to the next: buffers other than
    normalisation statistics, and tensors held in its own attributes (directly or in a dict)."""
    skip_stats = isinstance(m, _NORM_TYPES)
    for name, b in m._buffers.items():
        if b is not None and not (skip_stats and name in _STAT_NAMES):
            yield name, b
    d = m.__dict__
    for name in d.keys() - _MODULE_ATTRS:
        value = d[name]
        if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
            yield name, value
        elif isinstance(value, dict):
            for key, v in value.items():
                if isinstance(v, torch.Tensor) and not isinstance(v, nn.Parameter):
                    yield f"{name}[{key!r}]", v


class StateFingerprint:
    """Identity and version of every tensor the modules keep between calls (see
    :func:`_tensor_items`); :meth:`changed` names the first one a run replaced or modified."""

    def __init__(self, modules: Iterable[nn.Module]) -> None:
        self.modules = [m for m in modules if not _resettable(m)]
        self.prints = [self._print(m) for m in self.modules]

    @staticmethod
    def _print(m: nn.Module) -> Dict[str, Tuple[int, int]]:
        return {name: (id(t), t._version) for name, t in _tensor_items(m)}

    def changed(self) -> Optional[Tuple[nn.Module, str]]:
        """``(module, attribute)`` of the first tensor that changed since construction."""
        for m, before in zip(self.modules, self.prints):
            after = self._print(m)
            if after != before:
                names = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
                return m, names[0]
        return None
