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
  int16 y, bool on, 3 bytes padding)``. LZ4 needs the ``events`` extra (``lz4``).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

__all__ = [
    "EVENT_DTYPE",
    "events_to_frames",
    "make_events",
    "read_aedat2",
    "read_aedat31",
    "read_aedat4",
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
        raise ValueError(
            f"{path}: N-MNIST files hold 5 bytes per event, got {raw.size} bytes "
            f"({raw.size % 5} left over)"
        )
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
            raise ValueError(f"{path}: header line without a newline at byte {pos}")
        line = raw[pos : nl + 1]
        pos = nl + 1
        if end_marker is not None and line.strip() == end_marker:
            return pos
    if end_marker is not None:
        raise ValueError(f"{path}: no '{end_marker.decode()}' line ends the header")
    return pos


def read_aedat31(path: PathLike) -> np.ndarray:
    """Polarity events of an AEDAT 3.1 file (e.g. DVS128 Gesture), valid events only."""
    path = Path(path)
    raw = path.read_bytes()
    if not raw.startswith(b"#!AER-DAT3"):
        raise ValueError(f"{path} is not an AEDAT 3.x file (first line {raw[:14]!r})")
    pos = _skip_hash_header(raw, path, end_marker=b"#!END-HEADER")
    chunks: List[np.ndarray] = []
    header = struct.Struct("<hhiiiiii")
    pol_dtype = np.dtype([("data", "<u4"), ("ts", "<i4")])
    while pos + header.size <= len(raw):
        etype, _src, esize, _tsoff, tsover, capacity, number, _valid = header.unpack_from(raw, pos)
        pos += header.size
        nbytes = capacity * esize
        if esize <= 0 or capacity < 0 or number > capacity or pos + nbytes > len(raw):
            raise ValueError(
                f"{path}: corrupted packet header at byte {pos - header.size} (size {esize}, "
                f"capacity {capacity}, number {number}, {len(raw) - pos} bytes left)"
            )
        if etype == 1 and number > 0:
            if esize != 8:
                raise ValueError(f"{path}: polarity events must be 8 bytes, got {esize}")
            ev = np.frombuffer(raw, pol_dtype, count=number, offset=pos)
            d = ev["data"].astype(np.int64)
            valid = (d & 1) == 1
            t = (np.int64(tsover) << 31) | ev["ts"].astype(np.int64)
            chunks.append(
                make_events(t, (d >> 17) & 0x7FFF, (d >> 2) & 0x7FFF, (d >> 1) & 1)[valid]
            )
        pos += nbytes
    if pos != len(raw):
        raise ValueError(f"{path}: {len(raw) - pos} trailing bytes do not form a packet header")
    return np.concatenate(chunks) if chunks else np.empty(0, EVENT_DTYPE)


def read_dvs_gesture_labels(path: PathLike) -> List[Tuple[int, int, int]]:
    """``(class 0..10, start µs, end µs)`` per gesture from a DVS128 Gesture ``_labels.csv``
    (columns ``class,startTime_usec,endTime_usec``, classes 1..11 in the file)."""
    path = Path(path)
    rows = []
    for i, line in enumerate(path.read_text().splitlines()):
        line = line.strip()
        if not line or (i == 0 and line[0].isalpha()):
            continue
        parts = line.split(",")
        if len(parts) < 3:
            raise ValueError(f"{path}:{i + 1}: expected 'class,start,end', got {line!r}")
        c, s, e = (int(float(v)) for v in parts[:3])
        if not 1 <= c <= 11:
            raise ValueError(f"{path}:{i + 1}: DVS128 Gesture classes are 1..11, got {c}")
        rows.append((c - 1, s, e))
    return rows


def read_aedat2(path: PathLike) -> np.ndarray:
    """DVS events of an AEDAT 2.0 file (jAER; CIFAR10-DVS recordings)."""
    path = Path(path)
    raw = path.read_bytes()
    pos = _skip_hash_header(raw, path)
    n = (len(raw) - pos) // 8
    if (len(raw) - pos) % 8:
        raise ValueError(
            f"{path}: AEDAT 2.0 events are 8 bytes (address, timestamp), "
            f"{(len(raw) - pos) % 8} bytes left over"
        )
    ev = np.frombuffer(raw, np.dtype([("a", ">u4"), ("t", ">u4")]), count=n, offset=pos)
    a = ev["a"].astype(np.int64)
    dvs = (a >> 31) == 0
    a = a[dvs]
    return make_events(
        ev["t"][dvs].astype(np.int64), (a >> 12) & 0x3FF, (a >> 22) & 0x1FF, (a >> 11) & 1
    )


# ---------------------------------------------------------------------------------- AEDAT 4
def _fb_table(buf: bytes, table: int) -> Tuple[int, Dict[int, int]]:
    """Flatbuffer table at ``table``: field index -> absolute offset of the field."""
    vtable = table - struct.unpack_from("<i", buf, table)[0]
    vsize = struct.unpack_from("<H", buf, vtable)[0]
    fields = {}
    for i in range((vsize - 4) // 2):
        off = struct.unpack_from("<H", buf, vtable + 4 + 2 * i)[0]
        if off:
            fields[i] = table + off
    return table, fields


def _fb_root(buf: bytes, ident: bytes, path: Path) -> Dict[int, int]:
    """Fields of the root table of a (possibly size-prefixed) flatbuffer with ``ident``."""
    if buf[4:8] == ident:
        start = 0
    elif buf[8:12] == ident:
        start = 4  # size-prefixed
    else:
        raise ValueError(f"{path}: expected a '{ident.decode()}' flatbuffer, got {buf[:12]!r}")
    root = start + struct.unpack_from("<I", buf, start)[0]
    return _fb_table(buf, root)[1]


def _decompress(data: bytes, compression: int, path: Path) -> bytes:
    if compression == 0:
        return data
    if compression in (1, 2):
        try:
            import lz4.frame
        except ImportError as err:
            raise ImportError(
                f"{path} is LZ4-compressed: reading it needs lz4 (pip install 'revsnn[events]')"
            ) from err
        return lz4.frame.decompress(data)
    if compression in (3, 4):
        try:
            import zstandard
        except ImportError as err:
            raise ImportError(
                f"{path} is zstd-compressed: reading it needs zstandard (pip install zstandard)"
            ) from err
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=1 << 30)
    raise ValueError(f"{path}: unknown AEDAT 4 compression code {compression}")


def _aedat4_streams(xml: str) -> Dict[int, Tuple[str, Optional[Tuple[int, int]]]]:
    """Stream id -> (type identifier, (sizeY, sizeX) or None) from the header's XML."""
    import xml.etree.ElementTree as ET

    streams: Dict[int, Tuple[str, Optional[Tuple[int, int]]]] = {}
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return streams
    for out in root.iter("node"):
        if out.get("name") != "outInfo":
            continue
        for node in out.findall("node"):
            if not (node.get("name") or "").isdigit():
                continue
            attrs = {a.get("key"): (a.text or "") for a in node.findall("attr")}
            info = {a.get("key"): (a.text or "") for n in node.findall("node")
                    if n.get("name") == "info" for a in n.findall("attr")}
            size = None
            if info.get("sizeX", "").isdigit() and info.get("sizeY", "").isdigit():
                size = (int(info["sizeY"]), int(info["sizeX"]))
            streams[int(node.get("name"))] = (attrs.get("typeIdentifier", ""), size)
    return streams


def read_aedat4(path: PathLike, with_size: bool = False):
    """Polarity events of every ``EVTS`` stream of an AEDAT 4 file, in file order.

    With ``with_size=True`` returns ``(events, (height, width) or None)``.
    """
    path = Path(path)
    raw = path.read_bytes()
    magic = b"#!AER-DAT4.0\r\n"
    if not raw.startswith(magic):
        raise ValueError(f"{path} is not an AEDAT 4 file (starts with {raw[:14]!r})")
    pos = len(magic)
    (hsize,) = struct.unpack_from("<i", raw, pos)
    pos += 4
    header = raw[pos : pos + hsize]
    if len(header) != hsize:
        raise ValueError(f"{path}: truncated header ({len(header)} of {hsize} bytes)")
    fields = _fb_root(header, b"IOHE", path)
    compression = struct.unpack_from("<i", header, fields[0])[0] if 0 in fields else 0
    table_pos = struct.unpack_from("<q", header, fields[1])[0] if 1 in fields else -1
    xml = ""
    if 2 in fields:
        s = fields[2] + struct.unpack_from("<I", header, fields[2])[0]
        (n,) = struct.unpack_from("<I", header, s)
        xml = header[s + 4 : s + 4 + n].decode("utf-8", "replace")
    streams = _aedat4_streams(xml)
    event_ids = {i for i, (ident, _) in streams.items() if ident == "EVTS"}
    size = next((streams[i][1] for i in sorted(event_ids) if streams[i][1]), None)
    end = table_pos if 0 < table_pos <= len(raw) else len(raw)
    pos += hsize
    struct_dtype = np.dtype(
        {"names": ["t", "x", "y", "p"], "formats": ["<i8", "<i2", "<i2", "u1"],
         "offsets": [0, 8, 10, 12], "itemsize": 16}
    )
    chunks: List[np.ndarray] = []
    while pos + 8 <= end:
        sid, psize = struct.unpack_from("<ii", raw, pos)
        pos += 8
        if psize < 0 or pos + psize > len(raw):
            raise ValueError(f"{path}: corrupted packet header at byte {pos - 8} (size {psize})")
        if sid in event_ids or (not streams and sid == 0):
            buf = _decompress(raw[pos : pos + psize], compression, path)
            pf = _fb_root(buf, b"EVTS", path)
            if 0 in pf:
                v = pf[0] + struct.unpack_from("<I", buf, pf[0])[0]
                (count,) = struct.unpack_from("<I", buf, v)
                ev = np.frombuffer(buf, struct_dtype, count=count, offset=v + 4)
                chunks.append(make_events(ev["t"], ev["x"], ev["y"], ev["p"] != 0))
        pos += psize
    events = np.concatenate(chunks) if chunks else np.empty(0, EVENT_DTYPE)
    return (events, size) if with_size else events


# ---------------------------------------------------------------------------------- frames
def events_to_frames(
    events: np.ndarray,
    T: int,
    sensor_size: Tuple[int, int],
    mode: str = "count",
    out_size: Optional[Tuple[int, int]] = None,
) -> np.ndarray:
    """Integrate events into ``T`` frames ``[T, 2, H, W]`` (float32 event counts).

    - ``mode="count"``: frame ``k`` holds the ``k``-th of ``T`` contiguous chunks of (nearly)
      equal event count (``np.array_split`` sizes, first chunks one larger).
    - ``mode="time"``: frame ``k`` holds events with
      ``floor((t - t_0) * T / (t_last - t_0 + 1)) == k`` (equal time bins).

    Channel 0 counts OFF events (p = 0), channel 1 ON events. ``sensor_size`` is ``(H, W)``;
    ``out_size`` (smaller) bins pixels by ``x * W_out // W`` (and the same for y).
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
        raise ValueError(
            f"events fall outside the sensor (H={H}, W={W}): x in [{x.min()}, {x.max()}], "
            f"y in [{y.min()}, {y.max()}]"
        )
    x = x * Wo // W
    y = y * Ho // H
    p = (events["p"] > 0).astype(np.int64)
    if mode == "count":
        sizes = np.full(T, n // T, dtype=np.int64)
        sizes[: n % T] += 1
        k = np.repeat(np.arange(T), sizes)
    else:
        t = events["t"].astype(np.int64)
        t0 = t.min()
        span = t.max() - t0 + 1
        k = np.minimum((t - t0) * T // span, T - 1)
    index = ((k * 2 + p) * Ho + y) * Wo + x
    frames += np.bincount(index, minlength=T * 2 * Ho * Wo).reshape(T, 2, Ho, Wo)
    return frames


def slice_by_time(events: np.ndarray, start: int, end: int) -> np.ndarray:
    """Events with ``start <= t < end``."""
    t = events["t"]
    return events[(t >= start) & (t < end)]
