"""Building what a run needs from its config: data, model (checked against the data), and the
module that training calls (all heads of a multi-head model)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn

from ..data import BatchAugment, DataInfo, Mixup, data_info, load_dataset
from ..measure import preserved
from ..models.objective import TrainForward
from ..models.registry import model_info
from .config import TrainConfig

__all__ = [
    "DataBundle", "build_data", "build_model", "bundle_data", "check_model_fits",
    "count_parameters",
]

ModelFactory = Callable[[TrainConfig, DataInfo], nn.Module]


@dataclass
class DataBundle:
    train: Any
    test: Any
    info: DataInfo
    augment: BatchAugment
    mixup: Mixup

    @property
    def frames(self) -> bool:
        return self.info.kind == "frames"


def build_data(cfg: TrainConfig) -> DataBundle:
    frames = cfg.frames or cfg.T
    kw = dict(
        root=cfg.data_dir, T=frames, frame_mode=cfg.frame_mode,
        frame_size=tuple(cfg.frame_size) if cfg.frame_size else None, image_size=cfg.image_size,
    )
    if cfg.data.startswith("tonic:"):
        kw["download"] = cfg.download
    train = load_dataset(cfg.data, "train", **kw)
    test = load_dataset(cfg.data, "test", **kw)
    return bundle_data(cfg, train, test, data_info(cfg.data, train))


def bundle_data(cfg: TrainConfig, train: Any, test: Any, info: DataInfo) -> DataBundle:
    """The splits with the batch augmentation and mixup the config asks for."""
    ra = cfg.randaugment
    if ra is not None and len(ra) != 3:
        raise ValueError(f"randaugment expects [ops, magnitude, magnitude_std], got {ra}")
    augment = BatchAugment(
        info.mean, info.std, crop_padding=cfg.crop_padding, hflip=cfg.hflip,
        random_erase=cfg.random_erase,
        randaugment=(int(ra[0]), float(ra[1]), float(ra[2])) if ra else None,
        normalize=cfg.normalize,
    )
    mixup = Mixup(info.num_classes, cfg.mixup, cfg.cutmix, cfg.mix_prob)
    return DataBundle(train, test, info, augment, mixup)


def build_model(
    cfg: TrainConfig, info: DataInfo, factory: Optional[ModelFactory] = None
) -> nn.Module:
    """``create_model(cfg.model, num_classes=..., T=..., in_channels=..., memory_mode=...,
    **cfg.model_kwargs)``: every registered model takes the four common arguments; an argument
    its family does not take is a ``ValueError`` naming the ones it does."""
    if factory is not None:
        return factory(cfg, info)
    kwargs = {
        "num_classes": info.num_classes, "T": cfg.T, "in_channels": info.in_channels,
        "memory_mode": cfg.memory_mode, **cfg.model_kwargs,
    }
    return model_info(cfg.model).build(**kwargs)


@torch.no_grad()
def check_model_fits(
    model: nn.Module, x: torch.Tensor, num_classes: int, cfg: TrainConfig
) -> None:
    """One training-mode forward on a real batch (no graph, state restored): a model that
    cannot take this data, T or batch size fails here with a clear message."""
    try:
        with preserved(model, x.device, seed=None):
            heads = TrainForward(model)(x)
    except (RuntimeError, ValueError, TypeError) as err:
        shape = tuple(x.shape)
        raise ValueError(
            f"model {cfg.model!r} (T={cfg.T}) cannot train on data {cfg.data!r} with batch "
            f"input shape {shape}: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from err
    batch = x.shape[1 if x.dim() == 5 else 0]
    for i, z in enumerate(heads):
        if z.dim() != 2 or z.shape[0] != batch or z.shape[1] != num_classes:
            raise ValueError(
                f"model {cfg.model!r} head {i} returned shape {tuple(z.shape)}; expected "
                f"[batch, {num_classes}] for data {cfg.data!r}"
            )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
