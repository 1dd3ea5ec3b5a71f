"""How much memory the device offers: the ceiling of a ``--max-batch`` search.

- CPU: the memory the kernel reports as available (``MemAvailable`` of ``/proc/meminfo``; else
  ``SC_AVPHYS_PAGES * SC_PAGE_SIZE``), i.e. what can be allocated without swapping;
- CUDA: the device's free memory (``torch.cuda.mem_get_info``).

A budget above it cannot be met by any batch size, so :func:`cap_budget` lowers a budget to it
(and says so) before the largest batch is searched.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

import torch

__all__ = ["cap_budget", "device_memory_bytes"]


def _cpu_available() -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def device_memory_bytes(device: torch.device) -> Optional[int]:
    """Bytes the device can still allocate (None when unknown)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        return _cpu_available()
    return None


def cap_budget(budget: int, device: torch.device) -> Tuple[int, Optional[str]]:
    """``(min(budget, device memory), a note when it was lowered)``."""
    from ..units import format_bytes

    have = device_memory_bytes(device)
    if have is None or budget <= have:
        return budget, None
    return have, (f"the budget {format_bytes(budget)} exceeds the memory {device} can allocate "
                  f"now ({format_bytes(have)}); the largest batch is searched within that")
