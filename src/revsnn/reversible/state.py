"""The one place that captures and replays what a recomputation must see again.

A reversible or checkpointed block runs twice: once in the forward (no graph) and once in the
backward (with grad). For the second run to be the same function evaluation it must see

- the same random numbers (dropout): the CPU generator and the CUDA generators of the devices
  involved are captured before the forward run and replayed inside a *forked* RNG context, so the
  caller's generators continue exactly as if no recomputation happened (never a global reseed);
- the same autocast state (enabled flag and dtype per device type);
- BatchNorm in the same mode, but **without** a second update of its running statistics: during
  the recomputation the buffers (running mean/var, num_batches_tracked) are swapped for scratch
  copies and the originals put back after it, so after a step they equal plain autograd's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

__all__ = ["RecomputeState", "frozen_norm_stats", "norm_layers"]

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


_NORM_TYPES = (nn.modules.batchnorm._NormBase,)
_STAT_NAMES = ("running_mean", "running_var", "num_batches_tracked")


def norm_layers(modules: Iterable[Optional[nn.Module]]) -> List[nn.Module]:
    """Normalisation layers inside ``modules`` that would update running statistics."""
    seen, out = set(), []
    for root in modules:
        if root is None:
            continue
        for m in root.modules():
            if isinstance(m, _NORM_TYPES) and m.training and m.track_running_stats:
                if id(m) not in seen:
                    seen.add(id(m))
                    out.append(m)
    return out


@contextlib.contextmanager
def frozen_norm_stats(*modules: Optional[nn.Module]) -> Iterator[None]:
    """Let the body (a recomputation) update scratch copies of BatchNorm running statistics.

    Each running buffer is swapped for a clone during the body and the original tensor object
    is put back afterwards, untouched: statistics are updated exactly once per step, as in plain
    autograd, and no tensor saved by the recomputed graph is modified in place.
    """
    layers = norm_layers(modules)
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
