"""Benchmarks: training memory, step time and synaptic-operation energy, measured side by side.

- :mod:`revsnn.bench.memory`: ``AllocationTracker`` (live tensor bytes on CPU),
  ``saved_tensor_bytes``, ``measure_training_step`` (peak MiB per image of one training step).
- :mod:`revsnn.bench.timing`: ``time_training_step``, ``time_inference`` (median of >= 5 after
  warm-up, CUDA-synchronised), ``ratios``.
- :mod:`revsnn.bench.energy`: ``count_synops`` (per-layer MACs / ACs from a real forward pass;
  ``spike_input=SpikeInput.STRICT | LINEAR_CHAIN`` picks which inputs count as spikes).
- :mod:`revsnn.bench.report`: markdown table, CSV, PNG plots (matplotlib, ``revsnn[bench]``).
- ``revsnn bench memory|speed|energy`` / ``python -m revsnn.bench``: :mod:`revsnn.bench.cli`.
"""

from .energy import E_AC_PJ, E_MAC_PJ, EnergyReport, LayerOps, SpikeInput, count_synops
from .memory import MIB, AllocationTracker, measure_training_step, saved_tensor_bytes, tensor_bytes
from .timing import ratios, time_fn, time_inference, time_training_step

__all__ = [
    "E_AC_PJ",
    "E_MAC_PJ",
    "MIB",
    "AllocationTracker",
    "EnergyReport",
    "LayerOps",
    "SpikeInput",
    "count_synops",
    "measure_training_step",
    "ratios",
    "saved_tensor_bytes",
    "tensor_bytes",
    "time_fn",
    "time_inference",
    "time_training_step",
]
