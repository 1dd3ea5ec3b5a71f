"""Other libraries' models, measured side by side with ours in the same process (optional).

Peers are named ``<library>:<model>[+<variant>]`` wherever the benchmarks take a model name
(``revsnn bench memory --models ms_resnet34,spikingjelly:ms_resnet34``, the claims table).
A peer that is not installed raises :class:`PeerUnavailable` (an ``ImportError``) whose
message says how to install it; tests and benchmarks skip such a peer with that reason.

SpikingJelly 2.0 (``spikingjelly.activation_based``): its ``MSResNet`` with the blocks of
MS-ResNet34 (3, 4, 6, 3), built in the CIFAR form of our ``ms_resnet34`` -- a 3x3 stride-1 stem
and no stride in the first stage -- so that both have exactly the same parameter count
(21,282,122 at 10 classes). Its neurons keep their state between calls, so the peer resets the
network before every forward (``functional.reset_net``). Variants:

- ``spikingjelly:ms_resnet34``: plain autograd (SpikingJelly's standard BPTT);
- ``spikingjelly:ms_resnet34+memopt1``: ``memopt.optimize_memory(level=1)``, SpikingJelly's
  selective gradient checkpointing of every residual block (with spike compression where a
  block's input is binary), the level that runs on a CPU;
- ``spikingjelly:ms_resnet34+memopt4``: ``level=4``, the budgeted search (spatial and temporal
  splitting, greedy unwrapping) on CUDA memory statistics -- built on a CUDA device only
  (elsewhere :func:`peer_unavailable_reason` says so and the benchmarks skip it).

SpikingJelly 2.0 declares torchvision, torchaudio, tensorboard and more as dependencies; next
to a CPU build of torch the torchvision/torchaudio wheels it would pull do not load, and then
SpikingJelly itself fails to import. Install it without its dependencies, plus the two modules
the parts used here import (``loguru``; ``h5py`` for its model package)::

    pip install -e ".[peers]" && pip install --no-deps "spikingjelly==2.0.0"
"""

from __future__ import annotations

from typing import Callable, Dict, List, Union

import torch
from torch import nn

__all__ = [
    "INSTALL_HINT",
    "PeerUnavailable",
    "create_peer",
    "is_peer",
    "list_peers",
    "peer_unavailable_reason",
]

INSTALL_HINT = 'pip install -e ".[peers]" && pip install --no-deps "spikingjelly==2.0.0"'


class PeerUnavailable(ImportError):
    """The peer library is not installed (or not importable); the message says how to fix it."""


class ResetEachCall(nn.Module):
    """Runs a SpikingJelly network from the reset state at every call (as our neurons do) and
    resets it again afterwards, so no state tensor (part of a graph) outlives the call."""

    def __init__(self, net: nn.Module, reset: Callable[[nn.Module], None]) -> None:
        super().__init__()
        self.net = net
        self._reset = reset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._reset(self.net)
        out = self.net(x)
        self._reset(self.net)
        return out


def _spikingjelly():
    try:
        import spikingjelly  # noqa: F401
        from spikingjelly.activation_based import functional, memopt
        from spikingjelly.activation_based.model.ms_resnet import MSResNet
    except Exception as err:  # ImportError, or a broken dependency failing at import time
        raise PeerUnavailable(
            f"SpikingJelly 2.0 is not importable ({type(err).__name__}: {err}); install it "
            f"with: {INSTALL_HINT}"
        ) from err
    return functional, memopt, MSResNet


#: memopt levels above this search with CUDA memory statistics
_CPU_MEMOPT_LEVELS = 1


def _memopt_level(name: str) -> int:
    return int(name.rsplit("+memopt", 1)[1]) if "+memopt" in name else 0


def _sj_ms_resnet34(num_classes: int, T: int, in_channels: int, image_size: int,
                    memopt_level: int, device: torch.device) -> nn.Module:
    functional, memopt, MSResNet = _spikingjelly()
    if memopt_level > _CPU_MEMOPT_LEVELS and device.type != "cuda":
        raise PeerUnavailable(f"SpikingJelly memopt level {memopt_level} searches with CUDA "
                              f"memory statistics: it needs a CUDA device, not {device}")

    class CifarMSResNet(MSResNet):  # stride 1 in the first stage, as our CIFAR MS-ResNet
        _first_stage_stride = 1

    net = CifarMSResNet(T=T, in_channels=in_channels, num_classes=num_classes,
                        layers=(3, 4, 6, 3), stem_kernel_size=3, stem_stride=1).to(device)
    if memopt_level:
        block = type(net.layer1[0])  # SpikingJelly's residual block class
        example = torch.randn(2, in_channels, image_size, image_size, device=device)

        def example_forward(m: nn.Module) -> torch.Tensor:
            functional.reset_net(m)
            return m(example)

        memopt.optimize_memory(net, block, example_forward, level=memopt_level)
        functional.reset_net(net)
    return ResetEachCall(net, functional.reset_net)


_PEERS: Dict[str, Callable[..., nn.Module]] = {
    name: (lambda level: lambda **kw: _sj_ms_resnet34(memopt_level=level, **kw))(
        _memopt_level(name))
    for name in ("spikingjelly:ms_resnet34", "spikingjelly:ms_resnet34+memopt1",
                 "spikingjelly:ms_resnet34+memopt4")
}


def is_peer(name: str) -> bool:
    """Whether ``name`` is a peer name (``library:model``), registered or not."""
    return ":" in name


def list_peers() -> List[str]:
    """The peer names the benchmarks know, sorted."""
    return sorted(_PEERS)


def create_peer(name: str, num_classes: int = 10, T: int = 4, in_channels: int = 3,
                image_size: int = 32, device: Union[str, torch.device] = "cpu") -> nn.Module:
    """Build a peer model on ``device`` (``[B, C, H, W]`` images -> ``[B, classes]``, T steps
    inside)."""
    if name not in _PEERS:
        raise ValueError(f"unknown peer model {name!r}; known: {', '.join(list_peers())}")
    return _PEERS[name](num_classes=num_classes, T=T, in_channels=in_channels,
                        image_size=image_size, device=torch.device(device))


def peer_unavailable_reason(name: str, device: Union[str, torch.device] = "cpu") -> str:
    """"" when the peer can be built on ``device``, else why not (the install command, or the
    device it needs)."""
    try:
        if name.startswith("spikingjelly:"):
            _spikingjelly()
    except PeerUnavailable as err:
        return str(err)
    level = _memopt_level(name)
    if level > _CPU_MEMOPT_LEVELS and torch.device(device).type != "cuda":
        return (f"SpikingJelly memopt level {level} searches with CUDA memory statistics: it "
                f"needs a CUDA device, not {torch.device(device)}")
    return ""
