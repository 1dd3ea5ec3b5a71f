"""AEDAT 4 (iniVation DV) polarity events, read without trusting the file.

Layout: ``#!AER-DAT4.0\\r\\n``, int32 header size, an ``IOHE`` flatbuffer (compression,
data-table position, an XML description of the streams), then packets ``(int32 stream id,
int32 size, data)``; the data of an event stream (``EVTS``) is an (LZ4- or zstd-compressed)
flatbuffer holding a vector of 16-byte structs ``(int64 t, int16 x, int16 y, bool on, 3 bytes
padding)``. LZ4 needs the ``events`` extra (``lz4``).

Every offset read from the file is checked against the buffer it points into, a packet inflates
to at most :data:`~revsnn.data.limits.MAX_PACKET_BYTES`, and any malformed part is a
:class:`~revsnn.data.limits.DataError` naming the file.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from .events import EVENT_DTYPE, make_events
from .limits import MAX_PACKET_BYTES, data_error, lz4_bounded

__all__ = ["read_aedat4"]

PathLike = Union[str, Path]

MAGIC = b"#!AER-DAT4.0\r\n"
_STRUCT = np.dtype({"names": ["t", "x", "y", "p"], "formats": ["<i8", "<i2", "<i2", "u1"],
                    "offsets": [0, 8, 10, 12], "itemsize": 16})


class _Malformed(Exception):
    """A bad offset or size inside one buffer (turned into a DataError naming the file)."""


def _get(fmt: str, buf: bytes, off: int):
    """``struct.unpack_from`` that refuses offsets outside ``buf`` (no negative offsets)."""
    size = struct.calcsize(fmt)
    if not 0 <= off <= len(buf) - size:
        raise _Malformed(f"offset {off} outside a {len(buf)}-byte buffer")
    return struct.unpack_from(fmt, buf, off)[0]


def _fb_fields(buf: bytes, table: int, wanted: int) -> Dict[int, int]:
    """Flatbuffer table at ``table``: field index (< ``wanted``) -> absolute offset."""
    vtable = table - _get("<i", buf, table)
    vsize = _get("<H", buf, vtable)
    fields = {}
    for i in range(min((vsize - 4) // 2, wanted)):
        off = _get("<H", buf, vtable + 4 + 2 * i)
        if off:
            fields[i] = table + off
    return fields


def _fb_root(buf: bytes, ident: bytes, wanted: int) -> Dict[int, int]:
    """Fields of the root table of a (possibly size-prefixed) flatbuffer with ``ident``."""
    if buf[4:8] == ident:
        start = 0
    elif buf[8:12] == ident:
        start = 4  # size-prefixed
    else:
        raise _Malformed(f"expected a '{ident.decode()}' flatbuffer, got {buf[:12]!r}")
    return _fb_fields(buf, start + _get("<I", buf, start), wanted)


def _decompress(data: bytes, compression: int, path: Path) -> bytes:
    if compression == 0:
        return data
    if compression in (1, 2):
        return lz4_bounded(data, path)
    if compression in (3, 4):
        try:
            import zstandard
        except ImportError as err:
            raise ImportError(
                f"{path} is zstd-compressed: reading it needs zstandard (pip install zstandard)"
            ) from err
        try:
            return zstandard.ZstdDecompressor().decompress(data, max_output_size=MAX_PACKET_BYTES)
        except zstandard.ZstdError as err:
            raise data_error(path, f"corrupted zstd packet ({err})") from None
    raise data_error(path, f"unknown AEDAT 4 compression code {compression}")


def _streams(xml: str) -> Dict[int, Tuple[str, Optional[Tuple[int, int]]]]:
    """Stream id -> (type identifier, (sizeY, sizeX) or None) from the header's XML."""
    import xml.etree.ElementTree as ET

    streams: Dict[int, Tuple[str, Optional[Tuple[int, int]]]] = {}
    if "<!" in xml:  # DV writes no DTD or entities: refuse them rather than expand them
        raise _Malformed("the header's XML declares a DTD or entities")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return streams
    for out in root.iter("node"):
        if out.get("name") != "outInfo":
            continue
        for node in out.findall("node"):
            name = node.get("name") or ""
            if not (name.isdigit() and len(name) < 10):
                continue
            attrs = {a.get("key"): (a.text or "") for a in node.findall("attr")}
            info = {a.get("key"): (a.text or "") for n in node.findall("node")
                    if n.get("name") == "info" for a in n.findall("attr")}
            size = None
            sx, sy = info.get("sizeX", ""), info.get("sizeY", "")
            if sx.isdigit() and sy.isdigit() and 0 < int(sx) < 1 << 15 and 0 < int(sy) < 1 << 15:
                size = (int(sy), int(sx))
            streams[int(name)] = (attrs.get("typeIdentifier", ""), size)
    return streams


def read_aedat4(path: PathLike, with_size: bool = False):
    """Polarity events of every ``EVTS`` stream of an AEDAT 4 file, in file order.

    With ``with_size=True`` returns ``(events, (height, width) or None)``.
    """
    path = Path(path)
    raw = path.read_bytes()
    if not raw.startswith(MAGIC):
        raise data_error(path, f"not an AEDAT 4 file (starts with {raw[:14]!r})")
    try:
        events, size = _read(raw, path)
    except (_Malformed, struct.error) as err:
        raise data_error(path, f"malformed AEDAT 4 file ({err})") from None
    return (events, size) if with_size else events


def _read(raw: bytes, path: Path):
    pos = len(MAGIC)
    if len(raw) < pos + 4:
        raise data_error(path, "truncated AEDAT 4 file: it ends after its magic line")
    hsize = _get("<i", raw, pos)
    pos += 4
    header = raw[pos : pos + max(hsize, 0)]
    if hsize < 0 or len(header) != hsize:
        raise data_error(path, f"truncated header ({len(header)} of {hsize} bytes)")
    fields = _fb_root(header, b"IOHE", 3)
    compression = _get("<i", header, fields[0]) if 0 in fields else 0
    table_pos = _get("<q", header, fields[1]) if 1 in fields else -1
    xml = ""
    if 2 in fields:
        s = fields[2] + _get("<I", header, fields[2])
        n = _get("<I", header, s)
        xml = header[s + 4 : s + 4 + n].decode("utf-8", "replace")
    streams = _streams(xml)
    event_ids = {i for i, (ident, _) in streams.items() if ident == "EVTS"}
    size = next((streams[i][1] for i in sorted(event_ids) if streams[i][1]), None)
    end = table_pos if 0 < table_pos <= len(raw) else len(raw)
    pos += hsize
    chunks: List[np.ndarray] = []
    while pos + 8 <= end:
        sid, psize = struct.unpack_from("<ii", raw, pos)
        pos += 8
        if psize < 0 or pos + psize > len(raw):
            raise data_error(path, f"corrupted packet header at byte {pos - 8} (size {psize})")
        if sid in event_ids or (not streams and sid == 0):
            buf = _decompress(raw[pos : pos + psize], compression, path)
            pf = _fb_root(buf, b"EVTS", 1)
            if 0 in pf:
                v = pf[0] + _get("<I", buf, pf[0])
                count = _get("<I", buf, v)
                if count > (len(buf) - v - 4) // _STRUCT.itemsize:
                    raise data_error(path, f"an event packet declares {count} events but holds "
                                           f"{len(buf)} bytes")
                ev = np.frombuffer(buf, _STRUCT, count=count, offset=v + 4)
                chunks.append(make_events(ev["t"], ev["x"], ev["y"], ev["p"] != 0))
        pos += psize
    events = np.concatenate(chunks) if chunks else np.empty(0, EVENT_DTYPE)
    return events, size
