"""Inputs of the benchmarks: real images normalised exactly as training normalises them, and
seeded random batches.

- :func:`dataset_images`: the first ``n`` images of a split of a registered data set
  (``revsnn.data.load_dataset``), converted and normalised by the same
  ``revsnn.data.BatchAugment`` (evaluation path: to float, ``(x - mean) / std`` with the training
  split's statistics) that ``revsnn train`` applies, then optionally resized (bilinear) and
  repeated over channels to fit a model's input. Bilinear resizing is affine with weights that
  sum to one, so resizing after normalising equals normalising after resizing.
- :func:`digits_images`: the same for scikit-learn's 8x8 digits (the embedded default data set),
  the one real-image source of every energy and firing-rate figure.
- :func:`random_batches`: ``B -> (x, target)`` with normal pixels, seeded per batch size.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
from torch import nn

__all__ = ["dataset_images", "digits_images", "random_batches"]

Batch = Tuple[torch.Tensor, torch.Tensor]


def dataset_images(
    name: str,
    n: int,
    split: str = "test",
    size: Optional[int] = None,
    channels: Optional[int] = None,
    root: Optional[str] = None,
) -> Batch:
    """``(x [n, C, H, W], labels [n])``: the first ``n`` images of ``split``, normalised as in
    training; ``size`` resizes to ``size x size``, ``channels`` repeats a one-channel image."""
    from ..data import BatchAugment, data_info, load_dataset

    ds = load_dataset(name, split, root=root)
    if not hasattr(ds, "images"):
        raise ValueError(f"data set {name!r} is not an in-memory image set; use its Loader")
    if n < 1 or n > len(ds):
        raise ValueError(f"n must be in 1..{len(ds)} for {name!r} {split}, got {n}")
    info = data_info(name, ds)
    x = BatchAugment(info.mean, info.std, normalize=True)(ds.images[:n], train=False)
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    if channels is not None and channels != x.shape[1]:
        if x.shape[1] != 1:
            raise ValueError(
                f"cannot turn {x.shape[1]}-channel {name!r} images into {channels} channels"
            )
        x = x.expand(-1, channels, -1, -1)
    return x.contiguous(), ds.labels[:n].clone()  # x: [n, C, size, size]


def digits_images(
    n: int, size: Optional[int] = None, channels: Optional[int] = None, split: str = "test"
) -> Batch:
    """The first ``n`` scikit-learn digits of ``split`` (fixed stratified split of
    ``revsnn train``), normalised as in training; needs scikit-learn (``revsnn[train]``)."""
    return dataset_images("digits", n, split, size, channels)


def random_batches(
    channels: int, size: int, num_classes: int, seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Callable[[int], Batch]:
    """``B -> (x [B, channels, size, size] ~ N(0, 1), target [B])``, seeded by ``seed + B`` so
    that every caller measuring batch B sees the same batch."""

    def make(B: int) -> Batch:
        g = torch.Generator().manual_seed(seed + B)
        x = torch.randn(B, channels, size, size, generator=g)
        return x.to(dtype), torch.randint(0, num_classes, (B,), generator=g)

    return make
