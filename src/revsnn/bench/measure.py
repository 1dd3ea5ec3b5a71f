"""The measuring calls every benchmark makes: memory, step time and energy of models built by
:mod:`revsnn.bench.setups`, with one :class:`Settings` record saying how.

Benchmark scripts, ``revsnn bench``, the claims table and the GPU suite all measure through
these three functions, so a number means the same wherever it is printed:

- :func:`memory`: :func:`revsnn.bench.memory.measure_training_step` on the training objective
  (every head, the training loss) with seeded random batches, at every batch range of the
  settings; :func:`memory_columns` flattens the result into table columns.
- :func:`step_times`: :func:`revsnn.bench.timing.time_steps` of several set-ups on one batch,
  interleaved (training steps on the training objective, or inference forwards).
- :func:`energy`: :func:`revsnn.bench.energy.count_synops` under one or more spike-input
  conventions, summarised per image.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from .data import random_batches
from .energy import SpikeInput, count_synops
from .memory import DEFAULT_RANGES, measure_training_step
from .setups import objective, supported_modes
from .timing import CLOCKS, MIN_REPEATS, time_steps

__all__ = [
    "Settings",
    "add_arguments",
    "energy",
    "memory",
    "memory_columns",
    "memory_headers",
    "memory_rows",
    "range_key",
    "settings_from",
    "step_times",
    "time_columns",
]


@dataclass
class Settings:
    """How to measure: input shape, T, device, memory batch ranges, timing batch and counts."""

    T: int = 4
    image_size: int = 32
    in_channels: int = 3
    num_classes: int = 10
    device: str = "cpu"
    seed: int = 0
    ranges: Tuple[Tuple[int, int], ...] = field(default=DEFAULT_RANGES)
    time_batch: int = 4
    warmup: int = 1
    repeats: int = MIN_REPEATS
    energy_images: int = 16
    threads: Optional[int] = None
    dtype: str = "float32"
    data: str = "random"  # "random" normal pixels, or "digits" (real, normalised as in training)

    def as_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["ranges"] = [list(r) for r in self.ranges]
        return d

    def batches(self):
        """``B -> (x, target)``: images of the settings' shape -- seeded random, or the first
        B digits test images (normalised as in training, resized, labels mod classes)."""
        dtype = getattr(torch, self.dtype)
        if self.data == "digits":
            from .data import digits_images

            def digits(B: int):
                x, y = digits_images(B, self.image_size, self.in_channels)
                return x.to(dtype), y % self.num_classes

            return digits
        if self.data != "random":
            raise ValueError(f"data must be 'random' or 'digits', got {self.data!r}")
        return random_batches(self.in_channels, self.image_size, self.num_classes, self.seed,
                              dtype)


def add_arguments(p, time_batch: Optional[int] = 4) -> None:
    """The options every benchmark script shares: ``--device``, ``--ranges``, ``--time-batch``
    (unless ``time_batch`` is None), ``--repeats``, ``--threads``, ``--out``."""
    from pathlib import Path

    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--ranges", nargs="+", default=[",".join(map(str, r)) for r in DEFAULT_RANGES],
                   help="memory batch ranges, e.g. 2,4 16,32")
    if time_batch is not None:
        p.add_argument("--time-batch", type=int, default=time_batch, help="step-time batch")
    p.add_argument("--repeats", type=int, default=MIN_REPEATS, help="timed steps (>= 5)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=None, help="results file")


def settings_from(args, **kwargs) -> Settings:
    """:class:`Settings` from :func:`add_arguments`' options (``kwargs`` override); sets the
    CPU thread count."""
    torch.set_num_threads(args.threads)
    try:
        ranges = tuple(tuple(int(b) for b in r.split(",")) for r in args.ranges)
    except ValueError as err:
        raise SystemExit(f"--ranges look like 2,4 16,32; got {args.ranges}") from err
    kw = dict(device=args.device, ranges=ranges, repeats=args.repeats, threads=args.threads)
    if getattr(args, "time_batch", None) is not None:
        kw["time_batch"] = args.time_batch
    return Settings(**{**kw, **kwargs})


def range_key(r: Sequence[int]) -> str:
    """Column suffix of a batch range: ``(2, 4) -> "2_4"``."""
    return "_".join(str(b) for b in r)


def memory(model: nn.Module, s: Settings) -> Dict[str, Any]:
    """Training memory of ``model`` (in its current memory mode) at every range of ``s``."""
    module, loss_fn = objective(model)
    return measure_training_step(module, s.batches(), loss_fn, device=s.device,
                                 ranges=s.ranges)


def memory_columns(r: Mapping[str, Any]) -> Dict[str, float]:
    """Flat columns of a :func:`memory` result: ``mib_<range>`` (slope, MiB per image) and
    ``fixed_<range>`` (batch-independent MiB) per range, ``saved_mib`` (saved for backward,
    per image), ``params_mib``."""
    out: Dict[str, float] = {}
    for rng in r["ranges"]:
        k = range_key(rng["batches"])
        out[f"mib_{k}"] = rng["mib_per_image"]
        out[f"fixed_{k}"] = rng["fixed_mib"]
    out["saved_mib"] = r["saved_mib_per_image"]
    out["params_mib"] = r["params_mib"]
    return out


def memory_headers(ranges: Sequence[Sequence[int]]) -> Dict[str, str]:
    """Table headers of :func:`memory_columns`' slopes and fixed parts, range by range."""
    arrows = {range_key(r): "→".join(map(str, r)) for r in ranges}
    return {**{f"mib_{k}": f"MiB/img {a}" for k, a in arrows.items()},
            **{f"fixed_{k}": f"fixed MiB ({a})" for k, a in arrows.items()}}


def memory_rows(
    model: nn.Module, s: Settings, modes: Optional[Sequence[str]] = None,
    base: Optional[Mapping[str, Any]] = None, log: Optional[Callable[[str], None]] = None,
) -> List[Dict[str, Any]]:
    """One row per memory mode of ``model`` (``modes`` it supports, all by default): ``base``
    plus ``mode``, ``params`` and :func:`memory_columns`. The mode is switched in place and
    restored afterwards."""
    ok = [m.value for m in supported_modes(model)]
    wanted = [m for m in (modes or ok) if m in ok]
    before = getattr(model, "memory_mode", None)
    rows = []
    for mode in wanted:
        if callable(getattr(model, "set_memory_mode", None)):
            model.set_memory_mode(mode)
        t0 = time.time()
        cols = memory_columns(memory(model, s))
        rows.append({**(base or {}), "mode": mode,
                     "params": sum(p.numel() for p in model.parameters()), **cols})
        if log is not None:
            log(f"{(base or {}).get('model', type(model).__name__)} [{mode}]: " + ", ".join(
                f"{k} {v:.3f}" for k, v in cols.items() if k.startswith(("mib_", "fixed_")))
                + f" [{time.time() - t0:.0f} s]")
    if before is not None and callable(getattr(model, "set_memory_mode", None)):
        model.set_memory_mode(before)
    return rows


def time_columns(
    times: Mapping[str, Mapping[str, Any]], baseline: Optional[str] = None, prefix: str = "step"
) -> Dict[str, Dict[str, float]]:
    """``{name: columns}`` of a :func:`step_times` result: ``<prefix>_<clock>`` medians (ms per
    step) and, with a ``baseline`` name, ``<prefix>_vs_<baseline>_<clock>`` ratios plus
    ``<prefix>_vs_<baseline>`` in the primary clock."""
    out: Dict[str, Dict[str, float]] = {}
    for name, t in times.items():
        cols: Dict[str, float] = {}
        for c in CLOCKS:
            if f"median_{c}" not in t:
                continue
            cols[f"{prefix}_{c}"] = t[f"median_{c}"]
            if baseline is not None:
                cols[f"{prefix}_vs_{baseline}_{c[:-3]}"] = (
                    t[f"median_{c}"] / times[baseline][f"median_{c}"])
        if baseline is not None:
            clock = t["clock"]
            cols[f"{prefix}_vs_{baseline}"] = t[f"median_{clock}"] / times[baseline][
                f"median_{clock}"]
        out[name] = cols
    return out


def step_times(
    models: Mapping[str, nn.Module], s: Settings, train: bool = True,
    batch: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
) -> Dict[str, Dict[str, Any]]:
    """Interleaved step times of ``models`` (name -> model in its mode) at ``s.time_batch``:
    training steps of the training objective, or inference forwards (``train=False``)."""
    x, target = batch if batch is not None else s.batches()(s.time_batch)
    if train:
        modules = {name: objective(m)[0] for name, m in models.items()}
        _, loss_fn = objective(nn.Identity())  # the same training loss for every set-up
        return time_steps(modules, (x, target), loss_fn, train=True, device=s.device,
                          warmup=s.warmup, repeats=s.repeats)
    return time_steps(dict(models), (x, target), train=False, device=s.device,
                      warmup=s.warmup, repeats=s.repeats)


def energy(
    model: nn.Module, x: torch.Tensor, rules: Sequence[str] = ("strict", "linear_chain"),
    batch_size: Optional[int] = None,
) -> Dict[str, Dict[str, Any]]:
    """``{rule: summary}`` of one eval forward on ``x`` per spike-input convention: energy,
    MACs and ACs per image, the mean firing rate (``EnergyReport.mean_firing_rate``), the
    stem's energy (layers named ``stem*``), the energy of the operations counted as MACs
    (``mac_mj``, independent of firing rates), the dense operations counted as ACs and the
    number of chained layers."""
    out: Dict[str, Dict[str, Any]] = {}
    for rule in rules:
        rep = count_synops(model, x, batch_size=batch_size, spike_input=SpikeInput.parse(rule))
        rows = rep.rows()
        out[rep.spike_input.value] = {
            **rep.summary(),
            "stem_mj": sum(r["energy_mj_per_image"] for r in rows if r["layer"].startswith("stem")),
            "mac_mj": rep.e_mac_pj * rep.macs * 1e-9,
            "ac_dense_ops": sum(layer.ac_dense_ops for layer in rep.layers) / rep.batch_size,
            "chained_layers": sum(1 for r in rows if r["chained"]),
        }
    return out
