"""Event-camera file readers and the event -> frame integration.

Every reader returns a numpy structured array with fields ``t`` (int64, microseconds), ``x``,
``y`` (int16, pixels) and ``p`` (int8 polarity, 1 = ON, 0 = OFF), in file order.

Formats:
- N-MNIST ``.bin``: 5 bytes per event: ``x`` (8 bit), ``y`` (8 bit), then 24 bits whose top bit
  is the polarity and the low 23 bits the timestamp (µs). An event with ``y == 240`` marks a
  timestamp overflow (adds 2^23 µs to the following events) and is not an event.
- AEDAT 3.1 (DVS128 Gesture): ``#`` header lines up to ``#!END-HEADER``, then packets of a 28-byte
  header (int16 type, int16 source, int32 size, ts offset, ts overflow, capacity, number, valid;
  little-endian) followed by ``capacity * size`` bytes. Polarity events (type 1, 8 bytes):
  uint32 data (bit 0 valid, bit 1 polarity, bits 2-16 y, bits 17-31 x), int32 timestamp;
  ``t = overflow << 31 | timestamp``.
- AEDAT 2.0 (CIFAR10-DVS, jAER): ``#`` header lines, then big-endian ``(uint32 address,
  uint32 timestamp)`` pairs; address bit 31 = 0 for DVS events, bits 22-30 y, bits 12-21 x,
  bit 11 polarity.
- AEDAT 4 (iniVation DV): ``#!AER-DAT4.0\\r\\n``, int32 header size, an ``IOHE`` flatbuffer
  (compression, data-table position, an XML description of the streams), then packets
  ``(int32 stream id, int32 size, data)``; the data of an event stream (``EVTS``) is an (LZ4- or
  zstd-compressed) flatbuffer holding a vector of 16-byte structs ``(int64 t, int16 x,
  int16 y, bool on, 3 bytes padding)``. LZ4 needs the ``events`` extra (``lz4``). Read by
  :mod:`revsnn.data.aedat4`.

Every reader error is a :class:`~revsnn.data.limits.DataError` whose message starts with the file.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np

from .limits import data_error

__all__ = [
    "EVENT_DTYPE",
    "events_to_frames",
    "make_events",
    "read_aedat2",
    "read_aedat31",
    "read_dvs_gesture_labels",
    "read_nmnist",
]

PathLike = Union[str, Path]

EVENT_DTYPE = np.dtype([("t", np.int64), ("x", np.int16), ("y", np.int16), ("p", np.int8)])


def make_events(t, x, y, p) -> np.ndarray:
    """Pack equal-length sequences into an :data:`EVENT_DTYPE` array."""
    t = np.asarray(t)
    ev = np.empty(len(t), dtype=EVENT_DTYPE)
    ev["t"], ev["x"], ev["y"], ev["p"] = t, x, y, p
    return ev


# ---------------------------------------------------------------------------------- N-MNIST
def read_nmnist(path: PathLike) -> np.ndarray:
    """Read an N-MNIST ``.bin`` recording (34x34 ATIS, 5 bytes per event)."""
    path = Path(path)
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % 5:
        raise data_error(path, f"N-MNIST files hold 5 bytes per event, got {raw.size} bytes "
                               f"({raw.size % 5} left over)")
    b = raw.reshape(-1, 5).astype(np.int64)  # [N, 5]
    x, y = b[:, 0], b[:, 1]
    p = b[:, 2] >> 7
    t = ((b[:, 2] & 0x7F) << 16) | (b[:, 3] << 8) | b[:, 4]
    overflow = y == 240
    t = t + np.cumsum(overflow) * (1 << 23)
    keep = ~overflow
    return make_events(t[keep], x[keep], y[keep], p[keep])


# ---------------------------------------------------------------------------------- AEDAT 2/3
def _skip_hash_header(raw: bytes, path: Path, end_marker: Optional[bytes] = None) -> int:
    """Offset of the first byte after the ``#`` header lines."""
    pos = 0
    while pos < len(raw) and raw[pos : pos + 1] == b"#":
        nl = raw.find(b"\n", pos)
        if nl < 0:
            raise data_error(path, f"header line without a newline at byte {pos}")
        line = raw[pos : nl + 1]
        pos = nl + 1
        if end_marker is not None and line.strip() == end_marker:
            return pos
    if end_marker is not None:
        raise data_error(path, f"no '{end_marker.decode()}' line ends the header")
    return pos


def read_aedat31(path: PathLike) -> np.ndarray:
    """Polarity events of an AEDAT 3.1 file (e.g. DVS128 Gesture), valid events only."""
    path = Path(path)
    raw = path.read_bytes()
    if not raw.startswith(b"#!AER-DAT3"):
        raise data_error(path, f"not an AEDAT 3.x file (first line {raw[:14]!r})")
    pos = _skip_hash_header(raw, path, end_marker=b"#!END-HEADER")
    chunks: List[np.ndarray] = []
    header = struct.Struct("<hhiiiiii")
    pol_dtype = np.dtype([("data", "<u4"), ("ts", "<i4")])
    while pos + header.size <= len(raw):
        etype, _src, esize, _tsoff, tsover, capacity, number, _valid = header.unpack_from(raw, pos)
        pos += header.size
        nbytes = capacity * esize
        if (esize <= 0 or capacity < 0 or not 0 <= number <= capacity or tsover < 0
                or pos + nbytes > len(raw)):
            raise data_error(path, f"corrupted packet header at byte {pos - header.size} (size "
                                   f"{esize}, capacity {capacity}, number {number}, overflow "
                                   f"{tsover}, {len(raw) - pos} bytes left)")
        if etype == 1 and number > 0:
            if esize != 8:
                raise data_error(path, f"polarity events must be 8 bytes, got {esize}")
            ev = np.frombuffer(raw, pol_dtype, count=number, offset=pos)
            d = ev["data"].astype(np.int64)
            valid = (d & 1) == 1
            t = (np.int64(tsover) << 31) | ev["ts"].astype(np.int64)
            chunks.append(
                make_events(t, (d >> 17) & 0x7FFF, (d >> 2) & 0x7FFF, (d >> 1) & 1)[valid]
            )
        pos += nbytes
    if pos != len(raw):
        raise data_error(path, f"{len(raw) - pos} trailing bytes do not form a packet header")
    return np.concatenate(chunks) if chunks else np.empty(0, EVENT_DTYPE)


def read_dvs_gesture_labels(path: PathLike) -> List[Tuple[int, int, int]]:
    """``(class 0..10, start µs, end µs)`` per gesture from a DVS128 Gesture ``_labels.csv``
    (columns ``class,startTime_usec,endTime_usec``, classes 1..11 in the file)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise data_error(path, f"not a text file ({err})") from None
    rows = []
    for i, line in enumerate(text.splitlines()):
        line = line.strip()
        if not line or (i == 0 and line[0].isalpha()):
            continue
        parts = line.split(",")
        if len(parts) < 3:
            raise data_error(f"{path}:{i + 1}", f"expected 'class,start,end', got {line[:80]!r}")
        c, s, e = (_whole(v, f"{path}:{i + 1}") for v in parts[:3])
        if not 1 <= c <= 11:
            raise data_error(f"{path}:{i + 1}", f"DVS128 Gesture classes are 1..11, got {c}")
        if not 0 <= s < e:
            raise data_error(f"{path}:{i + 1}", f"a gesture needs 0 <= start < end (µs), got "
                                                f"start {s}, end {e}")
        rows.append((c - 1, s, e))
    if not rows:
        raise data_error(path, "no gesture rows 'class,start,end'")
    return rows


def _whole(text: str, where: str) -> int:
    """A whole number written as ``12`` or ``12.0``; anything else (inf, nan, 1.5, words) is a
    :class:`DataError` naming ``where``."""
    try:
        v = float(text)
    except ValueError:
        raise data_error(where, f"expected a whole number, got {text.strip()[:40]!r}") from None
    if not np.isfinite(v) or v != int(v) or abs(v) >= 2 ** 62:
        raise data_error(where, f"expected a whole number, got {text.strip()[:40]!r}")
    return int(text) if text.strip().lstrip("+-").isdigit() else int(v)


def read_aedat2(path: PathLike) -> np.ndarray:
    """DVS events of an AEDAT 2.0 file (jAER; CIFAR10-DVS recordings)."""
    path = Path(path)
    raw = path.read_bytes()
    pos = _skip_hash_header(raw, path)
    n = (len(raw) - pos) // 8
    if (len(raw) - pos) % 8:
        raise data_error(path, f"AEDAT 2.0 events are 8 bytes (address, timestamp), "
                               f"{(len(raw) - pos) % 8} bytes left over")
    ev = np.frombuffer(raw, np.dtype([("a", ">u4"), ("t", ">u4")]), count=n, offset=pos)
    a = ev["a"].astype(np.int64)
    dvs = (a >> 31) == 0
    a = a[dvs]
    return make_events(
        ev["t"][dvs].astype(np.int64), (a >> 12) & 0x3FF, (a >> 22) & 0x1FF, (a >> 11) & 1
    )


# ---------------------------------------------------------------------------------- frames
def events_to_frames(
    events: np.ndarray,
    T: int,
    sensor_size: Tuple[int, int],
    mode: str = "count",
    out_size: Optional[Tuple[int, int]] = None,
    source: Optional[PathLike] = None,
) -> np.ndarray:
    """Integrate events into ``T`` frames ``[T, 2, H, W]`` (float32 event counts).

    - ``mode="count"``: frame ``k`` holds the ``k``-th of ``T`` contiguous chunks of (nearly)
      equal event count (``np.array_split`` sizes, first chunks one larger).
    - ``mode="time"``: frame ``k`` holds events with
      ``floor((t - t_0) * T / (t_last - t_0 + 1)) == k`` (equal time bins), computed exactly
      for any int64 timestamps (bin edges ``ceil(k * span / T)`` in Python integers, so no
      product overflows).

    Channel 0 counts OFF events (p = 0), channel 1 ON events. ``sensor_size`` is ``(H, W)``;
    ``out_size`` (smaller) bins pixels by ``x * W_out // W`` (and the same for y). ``source``
    (the recording's file) is named in the error of an event outside the sensor.
    """
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    if mode not in ("count", "time"):
        raise ValueError(f"mode must be 'count' or 'time', got {mode!r}")
    H, W = (int(s) for s in sensor_size)
    Ho, Wo = (H, W) if out_size is None else (int(out_size[0]), int(out_size[1]))
    n = len(events)
    frames = np.zeros((T, 2, Ho, Wo), dtype=np.float32)
    if n == 0:
        return frames
    x = events["x"].astype(np.int64)
    y = events["y"].astype(np.int64)
    if x.min() < 0 or y.min() < 0 or x.max() >= W or y.max() >= H:
        raise data_error(source or "events", f"events fall outside the sensor (H={H}, W={W}): "
                         f"x in [{x.min()}, {x.max()}], y in [{y.min()}, {y.max()}]")
    x = x * Wo // W
    y = y * Ho // H
    p = (events["p"] > 0).astype(np.int64)
    if mode == "count":
        sizes = np.full(T, n // T, dtype=np.int64)
        sizes[: n % T] += 1
        k = np.repeat(np.arange(T), sizes)
    else:
        t = events["t"].astype(np.int64)
        t0 = int(t.min())
        span = int(t.max()) - t0 + 1  # Python integers: up to 2^64
        d = t.view(np.uint64) - np.uint64(t0 % (1 << 64))  # t - t0 mod 2^64, exact here
        edges = np.array([-(-j * span // T) for j in range(1, T)], dtype=np.uint64)
        k = np.searchsorted(edges, d, side="right")
    index = ((k * 2 + p) * Ho + y) * Wo + x
    frames += np.bincount(index, minlength=T * 2 * Ho * Wo).reshape(T, 2, Ho, Wo)
    return frames


def slice_by_time(events: np.ndarray, start: int, end: int) -> np.ndarray:
    """Events with ``start <= t < end``."""
    t = events["t"]
    return events[(t >= start) & (t < end)]

