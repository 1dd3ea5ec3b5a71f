"""Data set registry and the batch iteration used by training.

``load_dataset(name, split, ...)`` returns an in-memory :class:`~revsnn.data.static.ImageSet`
or a map-style ``Dataset`` (image folders, event frames). :class:`Loader` iterates one epoch:

- the epoch's order is a permutation drawn from a generator seeded with ``(seed, epoch)``, cut
  into *global* batches of ``batch_size`` (the last partial batch is dropped in training);
- with ``world`` data-parallel processes, rank ``r`` takes the ``r``-th contiguous share of
  every global batch (the union over ranks is exactly the single-process batch);
- in-memory sets are indexed directly (optionally kept on the training device), other sets go
  through a ``torch.utils.data.DataLoader`` driven by the same index plan.

Each yielded :class:`Batch` carries ``part``/``total`` so that batch-wise augmentation draws for
the whole global batch and keeps this rank's share (see :mod:`revsnn.data.transforms`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple, Union

import torch

from .limits import DataError
from .static import ImageSet

__all__ = [
    "DATASETS",
    "Batch",
    "DataInfo",
    "Loader",
    "check_dataset_name",
    "data_info",
    "list_datasets",
    "load_dataset",
]

#: name -> (kind, short description)
DATASETS = {
    "digits": ("image", "scikit-learn 8x8 digits, embedded (1437 train / 360 test)"),
    "mnist": ("image", "MNIST, IDX files in data_dir"),
    "fashion_mnist": ("image", "Fashion-MNIST, IDX files in data_dir "
                               "(default /usr/share/datasets/fashion-mnist)"),
    "cifar10": ("image", "CIFAR-10 python batches in data_dir"),
    "cifar100": ("image", "CIFAR-100 python batches in data_dir"),
    "imagefolder": ("image", "data_dir/{train,val}/<class>/<image> (vision extra)"),
    "nmnist": ("frames", "N-MNIST .bin files, data_dir/{Train,Test}/<digit>/"),
    "tonic:NAME": ("frames", "tonic.datasets.NAME in data_dir, frames by tonic's ToFrame "
                             "(tonic extra)"),
    "dvs_gesture": ("frames", "DVS128 Gesture AEDAT 3.1 + labels csv in data_dir"),
    "cifar10_dvs": ("frames", "CIFAR10-DVS AEDAT 2.0, data_dir/<class>/*.aedat"),
}


def list_datasets() -> List[str]:
    return sorted(DATASETS)


def check_dataset_name(name: str) -> str:
    """A registered name, or ``tonic:NAME`` (a tonic data set, checked when it is loaded)."""
    if name.startswith("tonic:"):
        if not name[len("tonic:"):]:
            raise ValueError("--data tonic:NAME needs the name of a tonic data set, e.g. "
                             "tonic:DVSGesture")
        return name
    if name not in DATASETS:
        close = difflib.get_close_matches(name, list(DATASETS), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown data set {name!r}{hint} (known: {', '.join(list_datasets())}, "
                         "or tonic:NAME for a tonic data set)")
    return name


@dataclass
class DataInfo:
    name: str
    kind: str  # "image" ([B, C, H, W]) or "frames" ([T, B, C, H, W] after the loop's transpose)
    num_classes: int
    in_channels: int
    image_size: Tuple[int, int]
    mean: Tuple[float, ...]
    std: Tuple[float, ...]


def load_dataset(
    name: str,
    split: str,
    root: Optional[Union[str, Path]] = None,
    T: int = 4,
    frame_mode: str = "count",
    frame_size: Optional[Tuple[int, int]] = None,
    image_size: Optional[int] = None,
    test_fraction: Optional[float] = None,
    download: bool = False,
) -> Any:
    """One split (``"train"`` or ``"test"``) of a registered data set, or of a tonic data set
    (``name="tonic:NAME"``, see :mod:`revsnn.data.tonic_sets`; ``download`` lets tonic fetch
    missing files)."""
    check_dataset_name(name)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if name.startswith("tonic:"):
        from .tonic_sets import tonic_dataset

        return tonic_dataset(name, root, split, T, frame_mode, frame_size, download=download,
                             test_fraction=0.1 if test_fraction is None else test_fraction)
    from . import static

    if name == "digits":
        return static.load_digits_split(split, 0.2 if test_fraction is None else test_fraction)
    if name in ("mnist", "fashion_mnist"):
        return static.load_idx_split(name, root, split)
    if name in ("cifar10", "cifar100"):
        from .cifar import load_cifar

        return load_cifar(name, root, split)
    if root is None:
        raise static.DataNotFoundError(f"{name}: pass the data directory with --set data_dir=DIR")
    if name == "imagefolder":
        return static.ImageFolderSet(root, split, image_size=image_size or 224)
    from . import event_sets

    if name == "nmnist":
        return event_sets.NMNISTSet(root, split, T, frame_mode, frame_size)
    if name == "dvs_gesture":
        return event_sets.DVSGestureSet(root, split, T, frame_mode, frame_size)
    return event_sets.CIFAR10DVSSet(
        root, split, T, frame_mode, frame_size, 0.1 if test_fraction is None else test_fraction
    )


def data_info(name: str, ds: Any) -> DataInfo:
    """Shapes and statistics of a loaded split."""
    kind = getattr(ds, "kind", None) or DATASETS[name][0]
    mean = tuple(getattr(ds, "mean", None) or (0.0,) * ds.in_channels)
    std = tuple(getattr(ds, "std", None) or (1.0,) * ds.in_channels)
    size = ds.image_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    return DataInfo(name, kind, int(ds.num_classes), int(ds.in_channels), size, mean, std)


@dataclass
class Batch:
    x: torch.Tensor  # [B_local, C, H, W] images or [B_local, T, C, H, W] frames
    y: torch.Tensor  # [B_local]
    part: slice  # this rank's share of the global batch
    total: int  # global batch size
    step: int  # index of the batch in the epoch
    index: Optional[torch.Tensor] = None  # [B_local] data set index of each row (CPU)


class Loader:
    """Epoch iterator over a data set (see the module docstring)."""

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        train: bool,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        num_workers: int = 0,
        device: Union[str, torch.device] = "cpu",
        data_on_device: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if train and batch_size % world:
            raise ValueError(
                f"batch_size {batch_size} is the global batch and must be divisible by the "
                f"number of processes ({world})"
            )
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.train = bool(train)
        self.seed = int(seed)
        self.rank, self.world = int(rank), int(world)
        self.num_workers = int(num_workers)
        self.device = torch.device(device)
        self.epoch = 0
        self.in_memory = isinstance(dataset, ImageSet)
        n = len(dataset)
        if train and n < batch_size:
            raise ValueError(
                f"batch_size {batch_size} is larger than the training set ({n} samples)"
            )
        if self.in_memory:
            dev = self.device if data_on_device else torch.device("cpu")
            self._x = dataset.images.to(dev)
            self._y = dataset.labels.to(dev)

    def _check_labels(self, y: torch.Tensor, idx: torch.Tensor) -> None:
        """Refuse a label outside ``[0, num_classes)`` with the sample (and its file)."""
        k = getattr(self.dataset, "num_classes", None)
        if not k or not len(y) or (int(y.min()) >= 0 and int(y.max()) < k):
            return
        j = int(((y < 0) | (y >= k)).nonzero()[0])
        i = int(idx[j])
        samples = getattr(self.dataset, "samples", None)
        where = f"{samples[i][0]}: " if isinstance(samples, list) and i < len(samples) else ""
        raise DataError(f"{where}sample {i} has label {int(y[j])}; labels must lie in "
                        f"[0, {k - 1}]")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def plan(self) -> List[Tuple[torch.Tensor, slice, int]]:
        """``(this rank's indices, its slice of the global batch, global batch size)`` per
        step of the current epoch."""
        n = len(self.dataset)
        if self.train:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        out = []
        for s in range(len(self)):
            idx = order[s * self.batch_size : (s + 1) * self.batch_size]
            shares = torch.tensor_split(torch.arange(len(idx)), self.world)
            mine = shares[self.rank]
            lo = int(mine[0]) if len(mine) else 0
            part = slice(lo, lo + len(mine))
            out.append((idx[part], part, len(idx)))
        return out

    def __iter__(self) -> Iterator[Batch]:
        return self.batches(0)

    def batches(self, start: int = 0) -> Iterator[Batch]:
        """The epoch's batches from step ``start`` on (a resumed epoch skips the steps it has
        done; the order and the step numbers are those of the whole epoch)."""
        plan = [p for p in self.plan() if len(p[0])]  # a rank may get no share of a last batch
        steps = list(range(len(plan)))[start:]
        plan = plan[start:]
        if self.in_memory:
            for step, (idx, part, total) in zip(steps, plan):
                plan_idx = idx
                idx = idx.to(self._x.device)
                yield Batch(self._x[idx].to(self.device, non_blocking=True),
                            self._y[idx].to(self.device, non_blocking=True), part, total, step,
                            plan_idx)
            return
        from .static import stack_items

        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=[p[0].tolist() for p in plan],
            num_workers=self.num_workers,
            collate_fn=stack_items,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        batches = iter(loader)
        for step, (idx, part, total) in zip(steps, plan):
            try:
                x, y = next(batches)
            except DataError as err:  # from a worker: its message carries the worker's traceback
                raise DataError(worker_message(err)) from None
            self._check_labels(y, idx)
            yield Batch(x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True),
                        part, total, step, idx)


def worker_message(err: BaseException) -> str:
    """The original one-line message of an error re-raised from a DataLoader worker (whose
    message is "Caught ... Original Traceback ...: <message>"), else the message itself."""
    text = str(err)
    if "Original Traceback" not in text:
        return text
    last = [ln for ln in text.strip().splitlines() if ln.strip()][-1]
    name = type(err).__name__ + ": "
    return last.split(name, 1)[1] if name in last else last
