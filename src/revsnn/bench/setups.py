"""What the benchmarks measure: models by name, their memory modes, the training objective.

This is the one place where benchmark code asks what a model supports, and it reads the
registry's metadata (:func:`revsnn.model_info`) and the model's declared ``supported_modes``.

- :func:`create`: a registered model (``revsnn.create_model``) or a peer
  (``library:model``, :mod:`revsnn.bench.peers`), seeded, on a device.
- :func:`supported_modes`: the memory modes a model accepts.
- :func:`in_modes`: one copy of a model per memory mode (the same weights), for interleaved
  timing.
- :func:`objective`: the module and loss that one training step runs -- the training loop's
  own: every head of a multi-head model (``revsnn.models.objective.TrainForward``) and
  ``revsnn.models.objective.model_loss`` with label smoothing 0.1 (T-RevSNN's column loss over all
  heads; cross-entropy for one head).
"""

from __future__ import annotations

import copy
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..models.objective import TrainForward, model_loss
from ..reversible.mode import MemoryMode
from .peers import create_peer, is_peer

__all__ = [
    "LABEL_SMOOTHING",
    "create",
    "family",
    "in_modes",
    "objective",
    "stored_columns",
    "supported_modes",
]

#: Label smoothing of the benchmark loss (the training recipes' value).
LABEL_SMOOTHING = 0.1

LossFn = Callable[[List[torch.Tensor], torch.Tensor], torch.Tensor]


def create(
    name: str,
    *,
    num_classes: int = 10,
    T: int = 4,
    memory_mode: Union[str, MemoryMode, None] = None,
    in_channels: int = 3,
    image_size: int = 32,
    seed: int = 0,
    device: Union[str, torch.device] = "cpu",
    **kwargs,
) -> nn.Module:
    """Build ``name`` with the seed fixed: a registered model (``memory_mode`` and ``kwargs``
    passed on; ``in_channels`` only when not 3) or a peer ``library:model``."""
    torch.manual_seed(seed)
    if is_peer(name):
        if memory_mode not in (None, "none", MemoryMode.NONE) or kwargs:
            raise ValueError(f"peer model {name!r} takes no memory mode or extra arguments")
        return create_peer(name, num_classes=num_classes, T=T, in_channels=in_channels,
                           image_size=image_size, device=device)
    from .. import create_model

    kw = dict(kwargs)
    if memory_mode is not None:
        kw["memory_mode"] = MemoryMode.parse(memory_mode).value
    if in_channels != 3:
        kw["in_channels"] = in_channels
    return create_model(name, num_classes=num_classes, T=T, **kw).to(device)


def supported_modes(model: nn.Module) -> List[MemoryMode]:
    """The memory modes ``model`` declares (``SpikingModel.supported_modes``, in
    :class:`MemoryMode` order); a model without memory modes (a peer, a plain ``nn.Module``)
    runs plain autograd only."""
    declared = getattr(model, "supported_modes", None)
    if declared is None or not callable(getattr(model, "set_memory_mode", None)):
        return [MemoryMode.NONE]
    return [m for m in MemoryMode if m in tuple(declared)]


def family(name: str) -> str:
    """The model class behind a registered name (``RevSResNet``, ``TRevSNN``, ...), or the
    peer's library; "" when unknown."""
    if is_peer(name):
        return name.split(":", 1)[0]
    from ..models.registry import model_info

    try:
        return model_info(name).cls.__name__
    except ValueError:
        return ""


def stored_columns(model: nn.Module) -> Optional[str]:
    """What a temporal-reversible engine stored in its last training forward, as "2/5" or
    "none"; ``None`` for a model without such an engine."""
    summary = getattr(model, "memory_summary", None)
    if not callable(summary):
        return None
    return "/".join(map(str, summary().get("stored_columns", []))) or "none"


def in_modes(model: nn.Module, modes: Sequence[Union[str, MemoryMode]]) -> Dict[str, nn.Module]:
    """``{mode: copy of model in that mode}`` (the same weights); unsupported modes raise."""
    out: Dict[str, nn.Module] = {}
    for mode in modes:
        mode = MemoryMode.parse(mode)
        m = copy.deepcopy(model)
        if callable(getattr(m, "set_memory_mode", None)):
            m.set_memory_mode(mode)
        elif mode is not MemoryMode.NONE:
            raise ValueError(f"{type(model).__name__} has no memory modes; it runs 'none' only")
        out[mode.value] = m
    return out


def objective(model: nn.Module) -> Tuple[nn.Module, LossFn]:
    """``(module, loss_fn)`` of one training step, as ``revsnn train`` runs it: ``module(x)``
    returns every head's logits (a list), ``loss_fn(heads, target)`` is the training loss."""
    def loss_fn(heads: List[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        return model_loss(heads, target, label_smoothing=LABEL_SMOOTHING)

    return TrainForward(model), loss_fn


#: ParaRevSNN-ResNet set-ups compared at one depth (same block counts n_i).
PARAREV_KINDS = ("revsresnet", "pararevsnn_fused", "pararevsnn_pair")


def pararev_at_depth(kind: str, depth: int, *, streams: bool = False, **kwargs) -> nn.Module:
    """RevSResNet or ParaRevSNN (merged ``fused`` or separate ``pair`` blocks) with the block
    counts of ParaRevSNN-``depth`` (``revsnn.models.pararevsnn.BLOCKS``); ``kwargs`` as for
    :func:`create` (``num_classes``, ``T``, ``memory_mode``, ``seed``, ``device``)."""
    if kind not in PARAREV_KINDS:
        raise ValueError(f"kind must be one of {PARAREV_KINDS}, got {kind!r}")
    if kind == "revsresnet":
        from ..models.pararevsnn import BLOCKS
        from ..models.revsresnet import RevSResNet

        if depth not in BLOCKS:
            raise ValueError(f"depth must be one of {sorted(BLOCKS)}, got {depth}")
        # RevSResNet is registered at 21/37/109 only: build the class with ParaRevSNN's counts.
        device = kwargs.pop("device", "cpu")
        torch.manual_seed(kwargs.pop("seed", 0))
        return RevSResNet(blocks=BLOCKS[depth], **kwargs).to(device)
    merge = kind.rsplit("_", 1)[1]
    return create(f"pararevsnn_resnet{depth}", merge=merge, streams=streams, **kwargs)
