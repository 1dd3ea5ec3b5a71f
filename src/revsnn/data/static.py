"""Static image data sets, read from their standard on-disk formats.

Every reader returns an :class:`ImageSet`: ``images`` ``[N, C, H, W]`` (uint8 0..255, or float32
in [0, 1] for ``digits``) and ``labels`` ``[N]`` int64, kept in memory so that batches are cut by
indexing and augmented batch-wise (:mod:`revsnn.data.transforms`). ``imagefolder`` is the
exception: it decodes lazily (:class:`ImageFolderSet`, a ``torch.utils.data.Dataset``).

- ``digits``: scikit-learn's real 8x8 digits (1797 images, pixels 0..16 scaled to [0, 1]), split
  once into train / test by a stratified split with a fixed seed (20 % test).
- ``mnist`` / ``fashion_mnist``: the four standard IDX files (``.gz`` or raw) in a directory.
- ``cifar10`` / ``cifar100``: the standard python-pickle batches, read with a restricted unpickler
  that only rebuilds numpy arrays (no arbitrary code runs).
- ``imagefolder``: ``root/{train,val}/<class>/<image>``, decoded with PIL (``vision`` extra),
  resized (shorter side) and centre-cropped to ``image_size``.
"""

from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = [
    "DataNotFoundError",
    "ImageFolderSet",
    "ImageSet",
    "load_cifar",
    "load_digits_split",
    "load_idx_split",
    "read_idx",
]

PathLike = Union[str, Path]

DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
DEFAULT_MNIST_DIR = "/usr/share/datasets/mnist"

#: Channel statistics of the training sets (for normalisation), in [0, 1] pixel units.
STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


class DataNotFoundError(FileNotFoundError):
    """A data set's files are missing; the message says where they were looked for and how to
    get them."""


@dataclass
class ImageSet:
    """An in-memory image data set: ``images[i]`` is ``[C, H, W]``, ``labels[i]`` its class."""

    images: torch.Tensor  # [N, C, H, W] uint8 or float32
    labels: torch.Tensor  # [N] int64
    num_classes: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    classes: List[str] = field(default_factory=list)
    indices: Optional[torch.Tensor] = None  # rows of the source data set (for split checks)

    def __post_init__(self) -> None:
        if self.images.dim() != 4:
            raise ValueError(f"images must be [N, C, H, W], got {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must be [N={self.images.shape[0]}], got {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def in_channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> Tuple[int, int]:
        return (self.images.shape[2], self.images.shape[3])


# ---------------------------------------------------------------------------------- digits
def load_digits_split(
    split: str, test_fraction: float = 0.2, seed: int = 0
) -> ImageSet:
    """scikit-learn's 8x8 digits, one side of a fixed stratified train/test split.

    Pixels (0..16) are divided by 16 -> float32 in [0, 1]; images ``[N, 1, 8, 8]``.
    """
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError(
            "the 'digits' data set needs scikit-learn: pip install 'revsnn[train]'"
        ) from err
    d = load_digits()
    x = d.images.astype(np.float32) / 16.0  # [N, 8, 8]
    y = d.target.astype(np.int64)
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=test_fraction, stratify=y, random_state=seed)
    pick = {"train": np.sort(tr), "test": np.sort(te)}[_check_split(split)]
    images = torch.from_numpy(x[pick]).unsqueeze(1)  # [N, 1, 8, 8]
    mean = float(x[np.sort(tr)].mean())
    std = float(x[np.sort(tr)].std())
    return ImageSet(
        images, torch.from_numpy(y[pick]), 10, (mean,), (std,), [str(i) for i in range(10)],
        torch.from_numpy(pick),
    )


def _check_split(split: str) -> str:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return split


# ---------------------------------------------------------------------------------- IDX
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: PathLike) -> np.ndarray:
    """Read one IDX file (``.gz`` or raw): magic ``00 00 <dtype> <ndim>``, ``ndim`` big-endian
    uint32 sizes, then the data in C order."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise ValueError(f"{path}: corrupted gzip stream ({err})") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic {raw[:4].hex()})")
    dtype = _IDX_DTYPES[raw[2]]
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    n = int(np.prod(dims)) if dims else 1
    if len(raw) - header < n * dtype.itemsize:
        raise ValueError(
            f"{path}: truncated IDX file, dims {dims} need {n * dtype.itemsize} bytes of data, "
            f"found {len(raw) - header}"
        )
    data = np.frombuffer(raw, dtype, count=n, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


_IDX_NAMES = {
    ("train", "images"): ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    ("train", "labels"): ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    ("test", "images"): ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    ("test", "labels"): ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def _find_idx(root: Path, split: str, what: str, name: str) -> Path:
    for stem in _IDX_NAMES[(split, what)]:
        for suffix in (".gz", ""):
            p = root / (stem + suffix)
            if p.is_file():
                return p
    stem = _IDX_NAMES[(split, what)][0]
    raise DataNotFoundError(
        f"{name}: {stem}[.gz] not found in {root}. "
        + _idx_hint(name, root)
    )


def _idx_hint(name: str, root: Path) -> str:
    files = ", ".join(v[0] + ".gz" for v in _IDX_NAMES.values())
    extra = (
        " On Debian/Ubuntu: apt-get install dataset-fashion-mnist (installs them in "
        f"{DEFAULT_FASHION_MNIST_DIR})."
        if name == "fashion_mnist"
        else ""
    )
    return (
        f"Put the four standard IDX files ({files}) in one directory and pass it with "
        f"--set data_dir=DIR.{extra}"
    )


def load_idx_split(name: str, root: Optional[PathLike], split: str) -> ImageSet:
    """``mnist`` or ``fashion_mnist`` from the standard IDX files in ``root``: uint8
    ``[N, 1, 28, 28]``."""
    _check_split(split)
    if name not in ("mnist", "fashion_mnist"):
        raise ValueError(f"load_idx_split reads 'mnist' or 'fashion_mnist', got {name!r}")
    default = DEFAULT_FASHION_MNIST_DIR if name == "fashion_mnist" else DEFAULT_MNIST_DIR
    root = Path(root) if root is not None else Path(default)
    if not root.is_dir():
        raise DataNotFoundError(
            f"{name}: data directory {root} does not exist. " + _idx_hint(name, root)
        )
    x = read_idx(_find_idx(root, split, "images", name))
    y = read_idx(_find_idx(root, split, "labels", name))
    if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{name} in {root}: expected images [N, H, W] and labels [N], got {x.shape} and "
            f"{y.shape}"
        )
    images = torch.from_numpy(x.astype(np.uint8)).unsqueeze(1)  # [N, 1, H, W]
    mean, std = STATS[name]
    return ImageSet(images, torch.from_numpy(y.astype(np.int64)), 10, mean, std)


# ---------------------------------------------------------------------------------- CIFAR
class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds numpy arrays and nothing else (no arbitrary callables)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: D401
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: a CIFAR batch holds only arrays and lists"
        )


def _load_batch(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            d = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise ValueError(f"{path} is not a CIFAR python batch ({err})") from err
    if not isinstance(d, dict):
        raise ValueError(f"{path} is not a CIFAR python batch (got {type(d).__name__})")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


_CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "labels", "batches.meta", "label_names", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", "meta",
                 "fine_label_names", 100),
}


def load_cifar(name: str, root: Optional[PathLike], split: str) -> ImageSet:
    """CIFAR-10/100 from the python-pickle batches: uint8 ``[N, 3, 32, 32]``.

    ``root`` is the extracted folder (``cifar-10-batches-py`` / ``cifar-100-python``) or its
    parent.
    """
    _check_split(split)
    if name not in _CIFAR:
        raise ValueError(f"load_cifar reads {sorted(_CIFAR)}, got {name!r}")
    folder, train_files, test_files, key, meta, meta_key, k = _CIFAR[name]
    if root is None:
        raise DataNotFoundError(
            f"{name}: no data directory given; pass --set data_dir=DIR pointing at the "
            f"extracted '{folder}' folder (the python version of the data set)"
        )
    root = Path(root)
    if (root / folder).is_dir():
        root = root / folder
    files = train_files if split == "train" else test_files
    missing = [f for f in files if not (root / f).is_file()]
    if missing:
        raise DataNotFoundError(
            f"{name}: {', '.join(missing)} not found in {root}; expected the extracted "
            f"'{folder}' folder of the python version of the data set"
        )
    xs, ys = [], []
    for f in files:
        d = _load_batch(root / f)
        if "data" not in d or key not in d:
            raise ValueError(f"{root / f}: a CIFAR batch needs 'data' and '{key}' entries")
        data = np.asarray(d["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072:
            raise ValueError(f"{root / f}: 'data' must be [N, 3072] uint8, got {data.shape}")
        xs.append(data.reshape(-1, 3, 32, 32))  # rows are R(1024) G(1024) B(1024)
        ys.append(np.asarray(d[key], dtype=np.int64))
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    if len(x) != len(y):
        raise ValueError(f"{name} in {root}: {len(x)} images but {len(y)} labels")
    classes: List[str] = []
    if (root / meta).is_file():
        m = _load_batch(root / meta)
        names = m.get(meta_key, [])
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    mean, std = STATS[name]
    return ImageSet(torch.from_numpy(x), torch.from_numpy(y), k, mean, std, classes)


# ---------------------------------------------------------------------------------- folders
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff"}


class ImageFolderSet(torch.utils.data.Dataset):
    """``root/<split>/<class>/<image>`` (ImageNet layout), decoded lazily with PIL.

    Each item is ``(uint8 [3, S, S], label)``: the shorter side is resized to
    ``round(S / crop_fraction)`` and the centre ``S x S`` is cut (augmentation happens
    batch-wise afterwards). Split folder names: ``train`` and ``val`` (or ``test``).
    """

    def __init__(
        self, root: PathLike, split: str, image_size: int = 224, crop_fraction: float = 0.875
    ) -> None:
        _check_split(split)
        base = Path(root)
        if not base.is_dir():
            raise DataNotFoundError(f"imagefolder: data directory {base} does not exist")
        names = ("train",) if split == "train" else ("val", "test")
        folder = next((base / n for n in names if (base / n).is_dir()), None)
        if folder is None:
            raise DataNotFoundError(
                f"imagefolder: none of {', '.join(str(base / n) for n in names)} exists; "
                "expected root/train/<class>/*.jpg and root/val/<class>/*.jpg"
            )
        self.classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if not self.classes:
            raise DataNotFoundError(f"imagefolder: no class folders in {folder}")
        self.samples: List[Tuple[Path, int]] = []
        for i, c in enumerate(self.classes):
            for p in sorted((folder / c).rglob("*")):
                if p.suffix.lower() in _IMAGE_SUFFIXES:
                    self.samples.append((p, i))
        if not self.samples:
            raise DataNotFoundError(f"imagefolder: no images under {folder}")
        self.num_classes = len(self.classes)
        self.image_size = int(image_size)
        self.crop_fraction = float(crop_fraction)
        self.mean, self.std = STATS["imagefolder"]
        self.in_channels = 3

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, int]:
        try:
            from PIL import Image
        except ImportError as err:  # pragma: no cover - depends on the install
            raise ImportError(
                "the 'imagefolder' data set needs Pillow: pip install 'revsnn[vision]'"
            ) from err
        path, label = self.samples[i]
        with Image.open(path) as im:
            im = im.convert("RGB")
            s = self.image_size
            short = max(1, round(s / self.crop_fraction))
            w, h = im.size
            scale = short / min(w, h)
            im = im.resize((max(s, round(w * scale)), max(s, round(h * scale))), Image.BILINEAR)
            w, h = im.size
            left, top = (w - s) // 2, (h - s) // 2
            im = im.crop((left, top, left + s, top + s))
            arr = np.asarray(im, dtype=np.uint8)  # [S, S, 3]
        return torch.from_numpy(arr.copy()).permute(2, 0, 1), label  # [3, S, S]


def stack_items(items: Sequence[Tuple[torch.Tensor, int]]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Collate ``(image, label)`` pairs into ``([B, ...], [B])``."""
    xs, ys = zip(*items)
    return torch.stack(xs), torch.as_tensor(ys, dtype=torch.int64)
