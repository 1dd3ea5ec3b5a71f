"""Benchmarks: training memory, step time and synaptic-operation energy, measured side by side.

What to measure, on the meters and clocks of :mod:`revsnn.measure` (the one measuring package,
which the planner and the training loop use too); ``benchmarks/`` scripts and ``revsnn bench``
call it.

- :mod:`revsnn.bench.memory`: ``measure_training_step`` (per image at batch ranges such as 2->4
  and 16->32, and the batch-independent part with gradients pre-allocated); ``AllocationTracker``,
  ``saved_tensor_bytes`` and ``tensor_bytes`` are re-exported from :mod:`revsnn.measure`.
- :mod:`revsnn.bench.timing`: ``time_steps`` (wall and process-CPU time of the same steps, CUDA
  events on a GPU, set-ups interleaved), ``ratios``.
- :mod:`revsnn.bench.energy`: ``count_synops`` (per-layer MACs / ACs from a real forward pass;
  ``EnergyReport.mean_firing_rate`` is the one firing-rate definition).
- :mod:`revsnn.bench.data`: real images normalised as in training, seeded random batches.
- :mod:`revsnn.bench.setups`: models by name (registry or peers), their memory modes, the
  training objective. :mod:`revsnn.bench.peers`: SpikingJelly 2.0 (optional).
- :mod:`revsnn.bench.measure`: the measuring calls (``Settings``, ``memory``, ``step_times``,
  ``energy``). :mod:`revsnn.bench.claims`: the published claims as data, and their loop.
- :mod:`revsnn.bench.results`, :mod:`revsnn.bench.docnumbers`: results files under
  docs/results/ and the numbers README.md and docs/*.md quote from them.
- :mod:`revsnn.bench.report`: markdown table, CSV, PNG plots (matplotlib, ``revsnn[bench]``).
- ``revsnn bench memory|speed|energy`` / ``python -m revsnn.bench``: :mod:`revsnn.bench.cli`.
"""

from ..measure import MIB, AllocationTracker, saved_tensor_bytes, tensor_bytes
from .data import digits_images, random_batches
from .energy import E_AC_PJ, E_MAC_PJ, EnergyReport, LayerOps, SpikeInput, count_synops
from .measure import Settings
from .memory import DEFAULT_RANGES, measure_training_step
from .setups import create, in_modes, objective, supported_modes
from .timing import MIN_REPEATS, ratios, time_steps

__all__ = [
    "DEFAULT_RANGES",
    "E_AC_PJ",
    "E_MAC_PJ",
    "MIB",
    "MIN_REPEATS",
    "AllocationTracker",
    "EnergyReport",
    "LayerOps",
    "Settings",
    "SpikeInput",
    "count_synops",
    "create",
    "digits_images",
    "in_modes",
    "measure_training_step",
    "objective",
    "random_batches",
    "ratios",
    "saved_tensor_bytes",
    "supported_modes",
    "tensor_bytes",
    "time_steps",
]
