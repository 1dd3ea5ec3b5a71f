"""Event data sets: recordings -> ``T`` frames ``[T, 2, H, W]`` per sample.

Each set is a ``torch.utils.data.Dataset`` of ``(frames float32 [T, 2, H, W], label)`` with the
attributes ``num_classes``, ``in_channels`` (2), ``image_size`` and ``files`` (the recordings
it reads, for split checks). Train and test recordings never overlap:

- ``nmnist``: ``root/Train/<digit>/*.bin`` and ``root/Test/<digit>/*.bin`` (the official split).
- ``dvs_gesture``: ``root/user<NN>_<lighting>.aedat`` + ``_labels.csv`` (AEDAT 3.1); each labelled
  gesture is one sample. The split follows ``trials_to_train.txt`` / ``trials_to_test.txt`` when
  present, else the official one by subject (users 1-23 train, 24-29 test).
- ``cifar10_dvs``: ``root/<class>/*.aedat`` (AEDAT 2.0, 10 class folders, no official split): per
  class the recordings sorted by their number, the last ``test_fraction`` (10 %) are the test set.

A sample without events (an empty recording or gesture window) or with events outside the sensor
is a :class:`~revsnn.data.limits.DataError` naming its file, never all-zero frames.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np
import torch

from .events import (
    events_to_frames,
    read_aedat2,
    read_aedat31,
    read_dvs_gesture_labels,
    read_nmnist,
    slice_by_time,
)
from .limits import data_error
from .static import DataNotFoundError

__all__ = ["CIFAR10DVSSet", "DVSGestureSet", "EventFrameSet", "NMNISTSet"]

PathLike = Union[str, Path]


def _number(p: Path) -> Tuple[int, str]:
    m = re.findall(r"\d+", p.stem)
    return (int(m[-1]) if m else -1, p.name)


class EventFrameSet(torch.utils.data.Dataset):
    """Base: ``samples`` are ``(file, label, start_us or None, end_us or None)``."""

    sensor_size: Tuple[int, int] = (128, 128)
    num_classes: int = 10
    in_channels = 2

    def __init__(
        self, T: int, mode: str = "count", out_size: Optional[Tuple[int, int]] = None
    ) -> None:
        if T < 1:
            raise ValueError(f"T (frames per sample) must be >= 1, got {T}")
        if mode not in ("count", "time"):
            raise ValueError(f"frame mode must be 'count' or 'time', got {mode!r}")
        self.T = int(T)
        self.mode = mode
        self.out_size = tuple(out_size) if out_size else None
        self.samples: List[Tuple[Path, int, Optional[int], Optional[int]]] = []
        self._cache: Tuple[Optional[Path], Optional[np.ndarray]] = (None, None)

    @property
    def image_size(self) -> Tuple[int, int]:
        return self.out_size or self.sensor_size

    @property
    def files(self) -> List[Path]:
        return sorted({s[0] for s in self.samples})

    def read(self, path: Path) -> np.ndarray:  # pragma: no cover - per format
        raise NotImplementedError

    def _events(self, path: Path) -> np.ndarray:
        if self._cache[0] != path:  # one file holds several gestures: keep the last one read
            self._cache = (path, self.read(path))
        return self._cache[1]  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, int]:
        path, label, start, end = self.samples[i]
        ev = self._events(path)
        if start is not None:
            ev = slice_by_time(ev, start, end)
        if not len(ev):  # all-zero frames would train on nothing: refuse the sample
            window = "" if start is None else f" between {start} and {end} µs"
            raise data_error(path, f"no events{window} (an empty recording); remove it or its "
                                   "label")
        frames = events_to_frames(ev, self.T, self.sensor_size, self.mode, self.out_size,
                                  source=path)
        return torch.from_numpy(frames), label  # [T, 2, H, W]


class NMNISTSet(EventFrameSet):
    sensor_size = (34, 34)
    num_classes = 10

    def __init__(self, root: PathLike, split: str, T: int, mode: str = "count",
                 out_size: Optional[Tuple[int, int]] = None) -> None:
        super().__init__(T, mode, out_size)
        root = Path(root)
        names = ("Train", "train") if split == "train" else ("Test", "test")
        folder = next((root / n for n in names if (root / n).is_dir()), None)
        if folder is None:
            raise DataNotFoundError(
                f"nmnist: {root / names[0]} not found; expected root/Train/<digit>/*.bin and "
                "root/Test/<digit>/*.bin (the extracted N-MNIST archives)"
            )
        for d in range(10):
            for p in sorted((folder / str(d)).glob("*.bin")):
                self.samples.append((p, d, None, None))
        if not self.samples:
            raise DataNotFoundError(f"nmnist: no .bin files under {folder}/<digit>/")

    def read(self, path: Path) -> np.ndarray:
        return read_nmnist(path)


class DVSGestureSet(EventFrameSet):
    sensor_size = (128, 128)
    num_classes = 11

    def __init__(self, root: PathLike, split: str, T: int, mode: str = "count",
                 out_size: Optional[Tuple[int, int]] = None) -> None:
        super().__init__(T, mode, out_size)
        root = Path(root)
        if (root / "DvsGesture").is_dir():
            root = root / "DvsGesture"
        if not root.is_dir():
            raise DataNotFoundError(f"dvs_gesture: data directory {root} does not exist")
        files = self.split_files(root, split)
        for f in files:
            labels = f.with_name(f.stem + "_labels.csv")
            if not labels.is_file():
                raise DataNotFoundError(f"dvs_gesture: {labels.name} missing for {f}")
            for c, s, e in read_dvs_gesture_labels(labels):
                self.samples.append((f, c, s, e))
        if not self.samples:
            raise DataNotFoundError(f"dvs_gesture: no labelled {split} recordings in {root}")

    @staticmethod
    def split_files(root: Path, split: str) -> List[Path]:
        listed = root / f"trials_to_{split}.txt"
        if listed.is_file():
            try:
                text = listed.read_text(encoding="utf-8")
            except UnicodeDecodeError as err:
                raise data_error(listed, f"not a text file ({err})") from None
            names = [ln.strip() for ln in text.splitlines() if ln.strip()]
            return [root / n for n in names if (root / n).is_file()]
        out = []
        for f in sorted(root.glob("user*.aedat")):
            m = re.match(r"user(\d+)_", f.name)
            if m and (int(m.group(1)) <= 23) == (split == "train"):
                out.append(f)
        return out

    def read(self, path: Path) -> np.ndarray:
        return read_aedat31(path)


CIFAR10_DVS_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)


class CIFAR10DVSSet(EventFrameSet):
    sensor_size = (128, 128)
    num_classes = 10

    def __init__(self, root: PathLike, split: str, T: int, mode: str = "count",
                 out_size: Optional[Tuple[int, int]] = None, test_fraction: float = 0.1) -> None:
        super().__init__(T, mode, out_size)
        root = Path(root)
        if not root.is_dir():
            raise DataNotFoundError(f"cifar10_dvs: data directory {root} does not exist")
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        missing = [c for c in CIFAR10_DVS_CLASSES if not (root / c).is_dir()]
        if missing:
            raise DataNotFoundError(
                f"cifar10_dvs: class folders {missing} missing in {root}; expected "
                "root/<class>/*.aedat for the 10 CIFAR-10 classes"
            )
        for label, c in enumerate(CIFAR10_DVS_CLASSES):
            files = sorted((root / c).glob("*.aedat"), key=_number)
            n_test = max(1, round(len(files) * test_fraction)) if len(files) > 1 else 0
            pick = files[len(files) - n_test:] if split == "test" else files[: len(files) - n_test]
            self.samples.extend((f, label, None, None) for f in pick)
        if not self.samples:
            raise DataNotFoundError(f"cifar10_dvs: no {split} recordings under {root}")

    def read(self, path: Path) -> np.ndarray:
        return read_aedat2(path)
