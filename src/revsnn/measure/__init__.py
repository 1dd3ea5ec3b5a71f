"""The one way to measure a training step; bench, plan and train build on it.

- :mod:`.meter`: :class:`AllocationTracker` (exact live-tensor bytes on CPU), :class:`Meter`
  (live bytes and peaks on CPU or CUDA), :func:`peak_of`, :func:`tensor_bytes`,
  :func:`saved_tensor_bytes`, :func:`held_bytes`.
- :mod:`.clocks`: :class:`Clock` (wall and CPU stamps), :func:`timed` (one call on every
  clock), :func:`interleaved` (set-ups taking turns), :func:`primary_clock`.
- :mod:`.restore`: :func:`preserved` (save and restore a model around a measurement),
  :func:`restore_point`, :func:`forked_rng`.
- :mod:`.step`: :func:`training_step` with :func:`default_loss` and :func:`default_optimizer`,
  :func:`batch_of`, :func:`device_of`.
"""

from ..units import MIB
from .clocks import CLOCKS, Clock, interleaved, primary_clock, timed
from .meter import AllocationTracker, Meter, held_bytes, peak_of, saved_tensor_bytes, tensor_bytes
from .restore import forked_rng, preserved, restore_point
from .step import batch_of, default_loss, default_optimizer, device_of, training_step

__all__ = [
    "CLOCKS", "MIB", "AllocationTracker", "Clock", "Meter", "batch_of", "default_loss",
    "default_optimizer", "device_of", "forked_rng", "held_bytes", "peak_of", "preserved",
    "interleaved", "primary_clock", "restore_point", "saved_tensor_bytes", "tensor_bytes", "timed",
    "training_step",
]
