"""Static image data sets, read from their standard on-disk formats.

Every reader returns an :class:`ImageSet`: ``images`` ``[N, C, H, W]`` (uint8 0..255, or float32
in [0, 1] for ``digits``) and ``labels`` ``[N]`` int64, kept in memory so that batches are cut by
indexing and augmented batch-wise (:mod:`revsnn.data.transforms`). ``imagefolder`` is the
exception: it decodes lazily (:class:`ImageFolderSet`, a ``torch.utils.data.Dataset``).

- ``digits``: scikit-learn's real 8x8 digits (1797 images, pixels 0..16 scaled to [0, 1]), split
  once into train / test by a stratified split with a fixed seed (20 % test).
- ``mnist`` / ``fashion_mnist``: the four standard IDX files (``.gz`` or raw) in a directory.
- ``cifar10`` / ``cifar100``: the standard python-pickle batches, read with a restricted unpickler
  that only rebuilds numpy arrays (no arbitrary code runs): :mod:`revsnn.data.cifar`.
- ``imagefolder``: ``root/{train,val}/<class>/<image>``, decoded with PIL (``vision`` extra),
  resized (shorter side) and centre-cropped to ``image_size``.
"""

from __future__ import annotations

import io
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .limits import (
    IMAGE_FLOOR_BYTES,
    MAX_DEFLATE_RATIO,
    MAX_IMAGE_RATIO,
    DataError,
    check_labels,
    data_error,
    gunzip_bounded,
    product,
)

__all__ = [
    "DataError",
    "DataNotFoundError",
    "ImageFolderSet",
    "ImageSet",
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
        if len(self.labels) and (int(self.labels.min()) < 0
                                 or int(self.labels.max()) >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes - 1}], got "
                             f"[{int(self.labels.min())}, {int(self.labels.max())}]")

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
    uint32 sizes, then the data in C order.

    The header bounds the work: a gzip stream inflates to at most the declared size (and is
    refused unread when deflate could not reach that size from the compressed bytes), and the
    data must be exactly the declared size. Any other content is a :class:`DataError`.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)  # the header first: 4 bytes, then dims
        try:
            head = d.decompress(raw, 4)
            if len(head) == 4 and head[3]:  # (max_length 0 would mean "no limit")
                head += d.decompress(d.unconsumed_tail, 4 * head[3])
        except zlib.error as err:
            raise data_error(path, f"corrupted gzip stream ({err})") from None
        dtype, dims = _idx_header(head, path)
        size = 4 + 4 * len(dims) + product(dims) * dtype.itemsize
        if size > MAX_DEFLATE_RATIO * len(raw) + 1024:
            raise data_error(path, f"its header declares {size} bytes, more than a gzip stream "
                                   f"of {len(raw)} bytes can hold (dims {dims})")
        raw = gunzip_bounded(raw, size, path)
    dtype, dims = _idx_header(raw, path)
    header = 4 + 4 * len(dims)
    need = product(dims) * dtype.itemsize
    if len(raw) - header != need:
        what = "truncated IDX file" if len(raw) - header < need else "trailing data after"
        raise data_error(path, f"{what}: dims {dims} need {need} bytes of data, found "
                               f"{len(raw) - header}")
    data = np.frombuffer(raw, dtype, count=product(dims), offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def _idx_header(raw: bytes, path: Path) -> Tuple[np.dtype, Tuple[int, ...]]:
    """(dtype, dims) of an IDX header; a :class:`DataError` names the file when it is not one."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise data_error(path, f"not an IDX file (bad magic {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise data_error(path, f"truncated IDX header ({ndim} dimensions need {4 + 4 * ndim} "
                               f"bytes, found {len(raw)})")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    return _IDX_DTYPES[raw[2]], dims


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
    xp, yp = _find_idx(root, split, "images", name), _find_idx(root, split, "labels", name)
    x, y = read_idx(xp), read_idx(yp)
    if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise DataError(f"{xp} and {yp}: expected images [N, H, W] and labels [N], got "
                        f"{x.shape} and {y.shape}")
    if not len(y):
        raise data_error(xp, "holds no images")
    images = torch.from_numpy(pixels_uint8(x, xp)).unsqueeze(1)  # [N, 1, H, W]
    mean, std = STATS[name]
    return ImageSet(images, torch.from_numpy(check_labels(y, 10, yp)), 10, mean, std)


def pixels_uint8(x: np.ndarray, path: PathLike) -> np.ndarray:
    """``x`` as uint8 after checking every value is a finite whole number in 0..255 (a float
    or wide-integer file is never cast to garbage)."""
    if x.dtype == np.uint8:
        return x
    bad = (x < 0) | (x > 255)
    if x.dtype.kind == "f":
        bad |= ~np.isfinite(x) | (x != np.round(x))
    if bad.any():
        i = np.unravel_index(int(np.flatnonzero(bad)[0]), x.shape)
        raise data_error(path, f"pixel {tuple(int(j) for j in i)} is {x[i].item()!r}; pixels "
                               "must be whole numbers in 0..255")
    return x.astype(np.uint8)


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
        try:
            arr = self._decode(Image, path)
        except DataError:
            raise
        except Exception as err:  # noqa: BLE001 - whatever the decoder raises on a bad file
            raise data_error(path, f"cannot decode the image ({type(err).__name__}: {err})"
                             ) from None
        return torch.from_numpy(arr).permute(2, 0, 1), label  # [3, S, S]

    def _decode(self, Image, path: Path) -> np.ndarray:
        """Decode, resize and crop one image. Refused before the pixels are decoded: PIL's
        decompression-bomb warning (an image above ``Image.MAX_IMAGE_PIXELS``) and a header
        declaring more pixels than the file can encode (:mod:`revsnn.data.limits`)."""
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            raw = path.read_bytes()  # from memory: a read past the end never preallocates
            with Image.open(io.BytesIO(raw)) as im:
                w, h = im.size
                if w * h * 3 > max(IMAGE_FLOOR_BYTES, MAX_IMAGE_RATIO * len(raw)):
                    raise data_error(path, f"its header declares {w}x{h} pixels, more than its "
                                           f"{len(raw)} bytes can encode (limit: "
                                           f"{MAX_IMAGE_RATIO} RGB bytes per file byte)")
                im = im.convert("RGB")
                s = self.image_size
                short = max(1, round(s / self.crop_fraction))
                scale = short / min(w, h)
                # the centre s x s of the image resized to (rw, rh), cut from the source by
                # resize's box: the resized image is never built, whatever the aspect ratio
                rw, rh = max(s, round(w * scale)), max(s, round(h * scale))
                left, top = (rw - s) // 2, (rh - s) // 2
                box = (left * w / rw, top * h / rh, (left + s) * w / rw, (top + s) * h / rh)
                im = im.resize((s, s), Image.BILINEAR, box=box)
                return np.array(im, dtype=np.uint8)  # [S, S, 3]


def stack_items(items: Sequence[Tuple[torch.Tensor, int]]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Collate ``(image, label)`` pairs into ``([B, ...], [B])``."""
    xs, ys = zip(*items)
    return torch.stack(xs), torch.as_tensor(ys, dtype=torch.int64)
