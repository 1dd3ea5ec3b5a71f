"""Tonic data sets and any map-style ``(input, label)`` data set in revsnn training.

- :class:`MapDataset` wraps any map-style data set whose items are ``(input, label)`` --
  a tonic data set with a ``ToFrame`` transform, a ``TensorDataset``, a user's own ``Dataset``
  -- into float32 tensors ``[C, H, W]`` (images) or ``[T, C, H, W]`` (frames) and int labels,
  with the attributes training needs (``kind``, ``num_classes``, ``in_channels``,
  ``image_size``).
- :func:`tonic_dataset` (``--data tonic:NAME --data-dir DIR``) builds
  ``tonic.datasets.NAME(save_to=DIR, train=..., transform=...)`` with the run's frame settings as
  tonic transforms: ``ToFrame(sensor_size, n_event_bins=T)`` for ``frame_mode: count`` (equal
  event count), ``ToFrame(sensor_size, n_time_bins=T)`` for ``frame_mode: time``, preceded by
  ``Downsample(spatial_factor=...)`` when ``frame_size`` is smaller than the sensor. Tonic never
  downloads unless ``download=True``: missing files are a clear error naming the folder. Data
  sets without a train/test argument (``CIFAR10DVS``) are split per class, the last
  ``test_fraction`` (10 %) of each class being the test set.

tonic is the optional ``tonic`` extra (``pip install 'revsnn[tonic]'``), imported only here and
only when used; revsnn's own readers (:mod:`revsnn.data.event_sets`) need nothing extra.
"""

from __future__ import annotations

import difflib
import inspect
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .static import DataNotFoundError

__all__ = ["TONIC_PREFIX", "MapDataset", "import_tonic", "tonic_dataset"]

TONIC_PREFIX = "tonic:"


def import_tonic():
    try:
        import tonic
    except ImportError:
        raise ImportError(
            "tonic data sets need the tonic package: pip install 'revsnn[tonic]' (or pip "
            "install tonic)"
        ) from None
    return tonic


def _as_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x
    elif isinstance(x, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(x))
    else:
        t = torch.as_tensor(np.asarray(x))
    return t.to(torch.float32)


class MapDataset(torch.utils.data.Dataset):
    """``(input, label)`` items as ``(float32 tensor, int)``; see the module docstring.

    ``num_classes``: given, else ``len(dataset.classes)``, else ``max(dataset.targets) + 1``,
    else the largest label over the data set plus one (reads every item once).
    """

    def __init__(self, dataset: Any, num_classes: Optional[int] = None,
                 indices: Optional[Sequence[int]] = None, name: str = "data") -> None:
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TypeError(f"{name}: expected a map-style data set (len() and [i]) of "
                            f"(input, label), got {type(dataset).__name__}")
        self.dataset = dataset
        self.indices = list(indices) if indices is not None else None
        if len(self) == 0:
            raise ValueError(f"{name}: the data set is empty")
        x, _ = self[0]
        if x.dim() == 3:
            self.kind = "image"  # [C, H, W]
        elif x.dim() == 4:
            self.kind = "frames"  # [T, C, H, W]
        else:
            raise ValueError(
                f"{name}: items must be (input, label) with input [C, H, W] (image) or "
                f"[T, C, H, W] (frames, e.g. tonic's ToFrame); got input shape {tuple(x.shape)}"
            )
        self.in_channels = int(x.shape[-3])
        self.image_size = (int(x.shape[-2]), int(x.shape[-1]))
        self.num_classes = int(num_classes) if num_classes else self._count_classes()

    def _count_classes(self) -> int:
        classes = getattr(self.dataset, "classes", None)
        if classes:
            return len(classes)
        targets = getattr(self.dataset, "targets", None)
        if targets is not None and len(targets):
            return int(max(int(t) for t in targets)) + 1
        return max(int(self[i][1]) for i in range(len(self))) + 1

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.dataset)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, int]:
        j = self.indices[i] if self.indices is not None else i
        x, y = self.dataset[j]
        return _as_tensor(x), int(y)


def _tonic_class(tonic, name: str):
    import tonic.datasets as tds

    cls = getattr(tds, name, None)
    if not inspect.isclass(cls):
        known = sorted(n for n in dir(tds) if inspect.isclass(getattr(tds, n))
                       and not n.startswith("_"))
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown tonic data set {name!r}{hint} (tonic {tonic.__version__} has "
                         f"{', '.join(known)})")
    return cls


def frame_transform(sensor_size: Tuple[int, int, int], T: int, frame_mode: str = "count",
                    frame_size: Optional[Tuple[int, int]] = None) -> Callable:
    """The tonic transform that turns events into ``T`` frames ``[T, P, H, W]``."""
    tonic = import_tonic()
    tt = tonic.transforms
    W, H, P = (int(s) for s in sensor_size)
    steps: List[Callable] = []
    if frame_size is not None and tuple(frame_size) != (H, W):
        Ho, Wo = int(frame_size[0]), int(frame_size[1])
        steps.append(tt.Downsample(spatial_factor=(Wo / W, Ho / H)))
        W, H = Wo, Ho
    if frame_mode == "count":
        steps.append(tt.ToFrame(sensor_size=(W, H, P), n_event_bins=T))
    elif frame_mode == "time":
        steps.append(tt.ToFrame(sensor_size=(W, H, P), n_time_bins=T))
    else:
        raise ValueError(f"frame_mode must be 'count' or 'time', got {frame_mode!r}")
    return steps[0] if len(steps) == 1 else tt.Compose(steps)


def tonic_dataset(
    name: str, root: Optional[Union[str, Path]], split: str, T: int = 4,
    frame_mode: str = "count", frame_size: Optional[Tuple[int, int]] = None,
    transform: Optional[Callable] = None, download: bool = False,
    test_fraction: float = 0.1,
) -> MapDataset:
    """One split of ``tonic.datasets.<name>`` as a :class:`MapDataset` (see the module doc)."""
    tonic = import_tonic()
    if name.startswith(TONIC_PREFIX):
        name = name[len(TONIC_PREFIX):]
    cls = _tonic_class(tonic, name)
    if root is None:
        raise DataNotFoundError(f"tonic:{name}: pass the folder that holds (or gets) its files "
                                "with --data-dir DIR")
    sensor = getattr(cls, "sensor_size", None)
    if transform is None:
        if sensor is None or len(sensor) != 3:
            raise ValueError(f"tonic:{name} has no (W, H, P) sensor_size; pass a transform")
        transform = frame_transform(sensor, T, frame_mode, frame_size)

    class _NoDownload(cls):  # type: ignore[misc, valid-type]
        def download(self) -> None:
            if download:
                return super().download()
            raise DataNotFoundError(
                f"tonic:{name}: its files were not found under {self.location_on_system} "
                f"(tonic's layout for {name}); put them there, or let tonic download them with "
                "--set download=true"
            )

    _NoDownload.__name__ = cls.__name__  # tonic keeps files in save_to/<class name>
    params = inspect.signature(cls.__init__).parameters
    kwargs = {"save_to": str(root), "transform": transform}
    if "train" in params:
        ds = _NoDownload(train=split == "train", **kwargs)
        return MapDataset(ds, len(getattr(cls, "classes", []) or []) or None,
                          name=f"tonic:{name}")
    ds = _NoDownload(**kwargs)  # one set: split it per class
    targets = [int(t) for t in getattr(ds, "targets", [])]
    if len(targets) != len(ds):
        targets = [int(ds[i][1]) for i in range(len(ds))]
    picked: List[int] = []
    for c in sorted(set(targets)):
        idx = [i for i, t in enumerate(targets) if t == c]
        n_test = max(1, round(len(idx) * test_fraction)) if len(idx) > 1 else 0
        picked += idx[len(idx) - n_test:] if split == "test" else idx[: len(idx) - n_test]
    return MapDataset(ds, len(getattr(cls, "classes", []) or []) or None, indices=picked,
                      name=f"tonic:{name}")
