"""Bounds every reader checks before it allocates, and the one error type of a bad data file.

A data file is trusted for nothing: sizes come from its header or pickle and are checked against
what the file can hold before anything of that size is allocated or inflated:

- a gzip stream inflates to at most the size its IDX header declares (and never more than
  :data:`MAX_DEFLATE_RATIO` times its compressed size, the largest ratio deflate reaches);
- a compressed event packet inflates to at most :data:`MAX_PACKET_BYTES`;
- a CIFAR batch holds at most as many pixel values as its pickle has bytes (an honest pickle
  stores every pixel; rows repeated by reference are refused before conversion);
- an image decodes only when its header's size is below PIL's decompression-bomb limit and
  its RGB pixels are at most :data:`MAX_IMAGE_RATIO` times its file size (or
  :data:`IMAGE_FLOOR_BYTES`): a damaged header cannot make a small file allocate hundreds of MiB.

Every failure is a :class:`DataError` (a ``ValueError``) whose one-line message starts with the
file's path, which the command line prints as one line with exit code 2.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Iterable, Union

import numpy as np

__all__ = [
    "IMAGE_FLOOR_BYTES",
    "MAX_DEFLATE_RATIO",
    "MAX_IMAGE_RATIO",
    "MAX_PACKET_BYTES",
    "DataError",
    "check_labels",
    "data_error",
    "gunzip_bounded",
    "lz4_bounded",
    "product",
]

#: deflate's largest expansion (a 258-byte match per ~2 bits): no gzip member inflates more.
MAX_DEFLATE_RATIO = 1032
#: the largest decompressed AEDAT 4 packet accepted (real packets are kilobytes to a few MiB).
MAX_PACKET_BYTES = 1 << 28
#: an image may declare at most this many RGB bytes per byte of its file (photos: ~10; deflate
#: reaches 1032, LZW ~2700) ...
MAX_IMAGE_RATIO = 4096
#: ... or this many RGB bytes whatever its file size (2.8 megapixels).
IMAGE_FLOOR_BYTES = 8 << 20

PathLike = Union[str, Path]


class DataError(ValueError):
    """A data file is malformed, truncated or out of bounds; the message names the file."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def data_error(path: PathLike, what: object) -> DataError:
    """``DataError("<path>: <what>")`` on one line."""
    return DataError(_one_line(f"{path}: {what}"))


def product(dims: Iterable[int]) -> int:
    """Exact product of sizes (Python integers: never wraps, unlike ``np.prod``)."""
    return math.prod(int(d) for d in dims)


def gunzip_bounded(raw: bytes, limit: int, path: PathLike) -> bytes:
    """Inflate the gzip stream ``raw`` to at most ``limit`` bytes.

    A stream that holds more than ``limit`` bytes, or is corrupt or truncated, is a
    :class:`DataError`; nothing beyond ``limit + 1`` bytes is ever inflated.
    """
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(raw, limit + 1)
    except zlib.error as err:
        raise data_error(path, f"corrupted gzip stream ({err})") from None
    if len(out) > limit:
        raise data_error(path, f"the gzip stream holds more than the {limit} bytes its header "
                               "declares")
    if not d.eof:
        raise data_error(path, "truncated gzip stream (it ends before its end marker)")
    return out


def lz4_bounded(data: bytes, path: PathLike, limit: int = MAX_PACKET_BYTES) -> bytes:
    """Decompress one LZ4 frame to at most ``limit`` bytes (``lz4`` is the events extra)."""
    try:
        import lz4.frame
    except ImportError as err:
        raise ImportError(
            f"{path} is LZ4-compressed: reading it needs lz4 (pip install 'revsnn[events]')"
        ) from err
    dec = lz4.frame.LZ4FrameDecompressor()
    parts, total, chunk = [], 0, 1 << 20  # lz4 allocates max_length up front: small steps
    try:
        while not dec.eof:
            part = dec.decompress(b"" if parts else data, max_length=chunk)
            if not part and (dec.needs_input or parts):
                break  # no progress: the frame ends before its end mark
            parts.append(part)
            total += len(part)
            if total > limit:
                raise data_error(path, f"an LZ4 packet inflates to more than {limit} bytes")
    except RuntimeError as err:  # lz4 reports corrupt frames as RuntimeError
        raise data_error(path, f"corrupted LZ4 packet ({err})") from None
    if not dec.eof:
        raise data_error(path, "truncated LZ4 packet")
    return b"".join(parts)


def check_labels(labels: np.ndarray, num_classes: int, path: PathLike) -> np.ndarray:
    """``labels`` as int64 after checking they are whole numbers in ``[0, num_classes)``."""
    y = np.asarray(labels)
    if y.dtype.kind == "b" or y.dtype.kind not in "iuf":
        raise data_error(path, f"labels must be integers, got {y.dtype}")
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise data_error(path, f"label {i} is {y[i].item()!r}, not a whole number")
    if y.size:
        out = (y < 0) | (y >= num_classes)
        if out.any():
            i = int(np.flatnonzero(out)[0])
            raise data_error(path, f"label {i} is {y[i].item()!r}; labels must lie in "
                                   f"[0, {num_classes - 1}]")
    return y.astype(np.int64)
