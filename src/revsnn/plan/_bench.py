"""The measuring functions the planner uses, imported in one place (``revsnn.bench``): the exact
CPU live-tensor tracker and storage byte counts."""

from __future__ import annotations

from ..bench.memory import AllocationTracker, tensor_bytes

__all__ = ["AllocationTracker", "tensor_bytes"]
