"""CIFAR-10/100 from the standard python-pickle batches, read without trusting them.

A batch is a pickled dict with ``data`` (``[N, 3072]`` uint8, each row the R, G, B planes of a
32x32 image) and the labels (``labels`` / ``fine_labels``). Reading it:

1. the whole pickle is scanned opcode by opcode first (:func:`scan_pickle`: every declared
   string length is checked against the bytes that follow, so a pickle declaring a 10^12-byte
   string is refused before anything is allocated);
2. a restricted unpickler rebuilds numpy arrays, lists, dicts and nothing else (no code runs;
   ``_codecs.encode`` only for numpy's own latin-1 array payloads);
3. shapes and sizes are checked on the unpickled objects before any conversion: a batch holds
   at most as many pixel values and labels as the pickle has bytes (an honest pickle stores
   each one), so a list repeating one row by reference is refused without allocating it;
4. pixels must be whole numbers in 0..255 and labels whole numbers in ``[0, classes)``.

Every failure is a :class:`~revsnn.data.limits.DataError` naming the file.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import struct
import warnings
from pathlib import Path
from typing import Any, List, Optional

import numpy as np
import torch

from .limits import DataError, check_labels, data_error
from .static import STATS, DataNotFoundError, ImageSet, PathLike, _check_split, pixels_uint8

__all__ = ["load_batch", "load_cifar", "scan_pickle"]

ROW = 3 * 32 * 32


def _latin1_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as numpy's pickles use it (a latin-1 str -> bytes), nothing else."""
    if encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    if not isinstance(obj, str):
        raise pickle.UnpicklingError("refusing _codecs.encode of a non-string")
    return obj.encode("latin-1", errors)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds numpy arrays and nothing else (no arbitrary callables)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):  # noqa: D401
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: a CIFAR batch holds only arrays and lists"
        )


_OPS = {op.code.encode("latin-1")[0]: op for op in pickletools.opcodes}
_LENGTH = {-2: "<B", -3: "<i", -4: "<I", -5: "<Q"}  # pickletools' length-prefixed arguments


def scan_pickle(raw: bytes) -> None:
    """Walk the opcodes of ``raw`` up to STOP without building anything: every opcode must be
    known and every declared length must fit in the bytes that follow (``ValueError``
    otherwise). Payloads are skipped, not decoded, so the walk costs one pass over the
    opcodes."""
    pos, end = 0, len(raw)
    while pos < end:
        op = _OPS.get(raw[pos])
        if op is None:
            raise ValueError(f"unknown opcode {raw[pos:pos + 1]!r} at byte {pos}")
        pos += 1
        if op.name == "STOP":
            return
        arg = op.arg
        if arg is None:
            continue
        if arg.n >= 0:
            pos += arg.n
        elif arg.n == -1:  # up to a newline (two lines for GLOBAL / INST)
            for _ in range(2 if arg.name == "stringnl_noescape_pair" else 1):
                nl = raw.find(b"\n", pos)
                if nl < 0:
                    raise ValueError(f"{op.name} at byte {pos - 1} has no newline")
                pos = nl + 1
        else:
            fmt = _LENGTH[arg.n]
            size = struct.calcsize(fmt)
            if pos + size > end:
                raise ValueError(f"{op.name} at byte {pos - 1} is truncated")
            (n,) = struct.unpack_from(fmt, raw, pos)
            pos += size
            if n < 0 or n > end - pos:
                raise ValueError(f"{op.name} at byte {pos - size - 1} declares {n} bytes, "
                                 f"{end - pos} remain")
            pos += n
        if pos > end:
            raise ValueError(f"{op.name} is truncated")
    raise ValueError("the pickle ends without STOP")


def load_batch(path: PathLike) -> dict:
    """The dict of one pickled batch (keys decoded to str), after the scan of step 1."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        scan_pickle(raw)  # declared lengths vs. the bytes left, before any allocation
        with warnings.catch_warnings():  # a damaged STRING opcode warns about its escapes
            warnings.simplefilter("ignore")
            d = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except RecursionError:
        raise data_error(path, "not a CIFAR python batch (nested too deeply)") from None
    except Exception as err:  # noqa: BLE001 - whatever a malformed pickle raises
        raise data_error(path, f"not a CIFAR python batch ({type(err).__name__}: {err})") from None
    if not isinstance(d, dict):
        raise data_error(path, f"not a CIFAR python batch (got {type(d).__name__})")
    return {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in d.items()}


def _pixels(value: Any, path: Path, budget: int) -> np.ndarray:
    """``data`` as uint8 ``[N, 3072]``; sizes checked before any conversion."""
    if isinstance(value, np.ndarray):
        if value.ndim != 2 or value.shape[1] != ROW or value.dtype.kind not in "uif":
            raise data_error(path, f"'data' must be [N, {ROW}] uint8, got {value.dtype} "
                                   f"{value.shape}")
        return pixels_uint8(value, path)
    if not isinstance(value, (list, tuple)):
        raise data_error(path, f"'data' must be an array [N, {ROW}], got {type(value).__name__}")
    if len(value) * ROW > budget:
        raise data_error(path, f"'data' lists {len(value)} rows of {ROW} pixels, more than the "
                               f"{budget}-byte file can hold (rows repeated by reference?)")
    for i, row in enumerate(value):
        ok = (isinstance(row, (bytes, bytearray)) or (isinstance(row, np.ndarray) and row.ndim == 1)
              or (isinstance(row, list) and all(type(v) is int for v in row)))
        if not ok or len(row) != ROW:
            raise data_error(path, f"'data' row {i} must be {ROW} integers, got "
                                   f"{type(row).__name__} of length {len(row)}")
    rows = [np.frombuffer(r, np.uint8) if isinstance(r, (bytes, bytearray)) else r for r in value]
    try:
        x = np.array(rows).reshape(len(rows), ROW) if rows else np.zeros((0, ROW), np.uint8)
    except (OverflowError, ValueError, TypeError) as err:
        raise data_error(path, f"'data' is not an integer array ({err})") from None
    if x.dtype.kind not in "uif":
        raise data_error(path, f"'data' must hold integers, got {x.dtype}")
    return pixels_uint8(x, path)


def _labels(value: Any, path: Path, budget: int, k: int) -> np.ndarray:
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise data_error(path, f"labels must be a list [N], got shape {value.shape}")
        return check_labels(value, k, path)
    if not isinstance(value, (list, tuple)) or len(value) > budget:
        raise data_error(path, f"labels must be a list of at most {budget} integers, got "
                               f"{type(value).__name__}")
    if not all(type(v) in (int, float) for v in value):
        raise data_error(path, "labels must be integers")
    try:
        y = np.array(value, dtype=np.float64 if any(type(v) is float for v in value) else None)
    except OverflowError as err:
        raise data_error(path, f"labels out of range ({err})") from None
    if y.dtype.kind == "O":  # Python integers beyond int64
        raise data_error(path, f"labels must lie in [0, {k - 1}]")
    return check_labels(y.reshape(len(value)), k, path)


_CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "labels", "batches.meta", "label_names", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", "meta",
                 "fine_label_names", 100),
}


def _class_names(path: Path, key: str) -> List[str]:
    names = load_batch(path).get(key, [])
    if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
        raise data_error(path, f"'{key}' must be a list of class names")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]


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
        path = root / f
        d = load_batch(path)
        if "data" not in d or key not in d:
            raise data_error(path, f"a CIFAR batch needs 'data' and '{key}' entries")
        budget = path.stat().st_size
        x = _pixels(d["data"], path, budget)
        y = _labels(d[key], path, budget, k)
        if len(x) != len(y):
            raise data_error(path, f"{len(x)} images but {len(y)} labels")
        xs.append(x.reshape(-1, 3, 32, 32))  # rows are R(1024) G(1024) B(1024)
        ys.append(y)
    x, y = np.concatenate(xs), np.concatenate(ys)
    if not len(y):
        raise DataError(f"{', '.join(str(root / f) for f in files)}: no images in the {split} "
                        "batches")
    classes = _class_names(root / meta, meta_key) if (root / meta).is_file() else []
    mean, std = STATS[name]
    return ImageSet(torch.from_numpy(x), torch.from_numpy(y), k, mean, std, classes)
