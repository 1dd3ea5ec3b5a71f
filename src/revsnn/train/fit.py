"""``revsnn.train.fit``: the training of ``revsnn train`` for a model and data sets of your own.

::

    from revsnn.train import fit
    summary = fit(model, train_set, test_set, epochs=5, lr=1e-3, out="runs/mine")
    summary = fit(model, train_set, test_set, epochs=10, resume="runs/mine")   # continue

``model``: any ``nn.Module`` mapping a batch to logits ``[B, classes]`` (or, with
``forward_heads``, a list of them -- see :class:`revsnn.models.objective.TrainForward`); its memory
mode, if it has one, is set from ``memory_mode``. ``train_data`` / ``test_data``: any map-style
data set of ``(input, label)`` -- inputs ``[C, H, W]`` (images, batched to ``[B, C, H, W]``) or
``[T, C, H, W]`` (frames, batched time-first to ``[T, B, C, H, W]``), as tensors or numpy
arrays: a ``TensorDataset``, a tonic data set with a ``ToFrame`` transform, your own
``Dataset``. ``**config``: any key of :class:`~revsnn.train.config.TrainConfig` (epochs,
batch_size, lr, optimizer, scheduler, augmentation, ema_decay, out, resume, save_every, ...),
checked as on the command line. Checkpoints, resume (bitwise), Ctrl-C, the run folder and
data-parallel training under ``torchrun`` work as for ``revsnn train``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from torch import nn

from ..data import DataInfo, ImageSet
from ..data.tonic_sets import MapDataset
from .build import bundle_data
from .config import TrainConfig, apply_overrides, validate_config
from .finite import check_hyperparameters
from .loop import train_model

__all__ = ["fit"]


def _wrap(ds: Any, num_classes: Optional[int], name: str) -> Any:
    if isinstance(ds, (ImageSet, MapDataset)):
        return ds
    return MapDataset(ds, num_classes, name=name)


def fit(
    model: nn.Module, train_data: Any, test_data: Any = None,
    log: Optional[Callable[[str], None]] = None, **config: Any,
) -> Dict[str, Any]:
    """Train ``model`` on ``train_data`` (evaluating on ``test_data`` after every epoch);
    returns the summary (also in ``<out>/summary.json``). ``model`` ends with the trained
    weights. ``log`` receives the printed lines (default: print)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"fit expects an nn.Module as model, got {type(model).__name__}")
    config.setdefault("model", type(model).__name__)
    config.setdefault("data", getattr(train_data, "name", None) or type(train_data).__name__)
    cfg = apply_overrides(TrainConfig(), config)
    validate_config(cfg, registry_model=False, registry_data=False)
    check_hyperparameters(cfg)
    classes = getattr(model, "num_classes", None)
    train = _wrap(train_data, classes, "train_data")
    test = None if test_data is None else _wrap(test_data, train.num_classes, "test_data")
    mean = tuple(getattr(train, "mean", None) or (0.0,) * train.in_channels)
    std = tuple(getattr(train, "std", None) or (1.0,) * train.in_channels)
    size = train.image_size
    info = DataInfo(cfg.data, getattr(train, "kind", "image"), int(train.num_classes),
                    int(train.in_channels), (size, size) if isinstance(size, int) else size,
                    mean, std)
    if hasattr(model, "set_memory_mode"):
        model.set_memory_mode(cfg.memory_mode)
    summary, _ = train_model(cfg, lambda: bundle_data(cfg, train, test, info), lambda data: model,
                              log, model=model)
    return summary
