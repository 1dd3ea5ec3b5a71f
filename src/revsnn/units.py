"""Byte sizes as people write them: ``parse_bytes("8GiB")`` and ``format_bytes(n)``.

Binary units (K, M, G, T, KiB ... TiB) are powers of 1024, decimal ones (KB, MB, GB, TB) powers
of 1000; :data:`MIB` is ``2**20`` bytes.
"""

from __future__ import annotations

import math
import re

__all__ = ["MIB", "format_bytes", "parse_bytes"]

MIB = float(1 << 20)

_UNITS = {
    "": 1, "b": 1,
    "k": 1 << 10, "kib": 1 << 10, "kb": 10**3,
    "m": 1 << 20, "mib": 1 << 20, "mb": 10**6,
    "g": 1 << 30, "gib": 1 << 30, "gb": 10**9,
    "t": 1 << 40, "tib": 1 << 40, "tb": 10**12,
}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_bytes(text) -> int:
    """``"8GiB"``, ``"512 MiB"``, ``"1.5G"`` (binary: K, M, G, T, KiB ... TiB), ``"8GB"``
    (decimal: KB, MB, GB, TB) or a plain number of bytes -> bytes (> 0)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        m = _SIZE.match(str(text))
        if m is None or m.group(2).lower() not in _UNITS:
            raise ValueError(
                f"cannot read the memory size {text!r}: expected a number with an optional unit "
                "such as 8GiB, 512MiB, 1.5G (binary) or 8GB (decimal)"
            )
        value, unit = float(m.group(1)), m.group(2).lower()
    if not math.isfinite(value * _UNITS[unit]):
        raise ValueError(f"the memory size {text!r} is not a finite number of bytes")
    n = int(round(value * _UNITS[unit]))
    if n <= 0:
        raise ValueError(f"a memory size must be positive, got {text!r}")
    return n


def format_bytes(n: float) -> str:
    """Bytes in KiB, MiB or GiB with 1 decimal (``"734.2 MiB"``, ``"12.0 GiB"``)."""
    if abs(n) >= (1 << 30) * 10:
        return f"{n / (1 << 30):.1f} GiB"
    if abs(n) >= MIB:
        return f"{n / MIB:.1f} MiB"
    return f"{n / 1024:.1f} KiB"
