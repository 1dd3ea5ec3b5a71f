"""The published claims of the three papers as data, and the one loop that measures them.

A :class:`Claim` names the paper's statement and figure, the set-ups to measure (registered
models or peers, each in a memory mode), the quantities (``memory``, ``time``, ``energy``), the
comparison (:class:`Ratio` s between set-ups) and the format of the measured text. The loop
(:func:`run_claims`) measures each quantity once per set-up through :mod:`revsnn.bench.measure`
(memory at every batch range of the settings, with the batch-independent part; step times of
a claim's set-ups interleaved; energy on real digits images under both spike-input
conventions) and fills the format. Memory measured for one claim is reused by the next.

Fields a format can use, for a ratio named ``r`` (``num / den``):

- memory: ``r_<range>`` per batch range (``r_2_4``, ``r_16_32``), ``r_first`` and ``r_last``
  (the first and last range of the settings) and ``r_at``, the text "9.87× at batch 2→4,
  7.13× at 16→32" over all ranges;
- time: ``r`` (the primary clock: process CPU time on a CPU, CUDA events on a GPU), ``r_wall``,
  ``r_cpu`` (and ``r_cuda``), ``r_change`` ("12.8% less" or "3.0% more"); ``clock`` names the
  primary clock;
- energy: ``r_strict``, ``r_linear_chain``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import measure
from .measure import Settings, range_key
from .setups import create, stored_columns

__all__ = ["CLAIMS", "TINY", "Claim", "Ratio", "Setup", "run_claims", "select", "tiny"]

CLOCK_NAMES = {"cpu_ms": "process CPU time", "wall_ms": "wall time", "cuda_ms": "CUDA time"}


@dataclass(frozen=True)
class Setup:
    """A model to measure: ``key`` (used by ratios), a registered or peer name, a mode."""

    key: str
    model: str
    mode: str = "none"

    @property
    def label(self) -> str:
        return self.model if ":" in self.model else f"{self.model} [{self.mode}]"


@dataclass(frozen=True)
class Ratio:
    """``num / den`` of one quantity, between two set-up keys."""

    name: str
    quantity: str  # "memory" | "time" | "energy"
    num: str
    den: str


@dataclass(frozen=True)
class Claim:
    id: str
    source: str
    statement: str
    figure: str
    setups: Tuple[Setup, ...]
    ratios: Tuple[Ratio, ...]
    format: str
    note: str = ""

    @property
    def quantities(self) -> Tuple[str, ...]:
        return tuple(dict.fromkeys(r.quantity for r in self.ratios))

    def setup(self, key: str) -> Setup:
        return next(s for s in self.setups if s.key == key)


_REVSNN = "RevSNN (Zhang & Zhang, AAAI 2024)"
_TREV = "T-RevSNN (Hu et al., ICML 2024)"
_PARA = "ParaRevSNN (Xu et al., AAAI 2026)"
_TWIN = "(paper: vs the Spike-driven Transformer; here: vs its BPTT twin"
_MEM = "less: {r_at}"
REV37 = Setup("rev37", "revs_resnet37", "reversible")
TREV_PAIR = (Setup("bptt", "trevsnn_tiny_bptt", "none"),
             Setup("rev", "trevsnn_tiny", "reversible"))
PARA_PAIR = (REV37, Setup("para37", "pararevsnn_resnet37", "reversible"))

CLAIMS: Tuple[Claim, ...] = (
    Claim("revsresnet37-memory", _REVSNN,
          "RevSResNet37 needs less GPU memory per image in training than MS-ResNet34",
          "3.79× less", (Setup("ms34", "ms_resnet34", "none"), REV37),
          (Ratio("r", "memory", "ms34", "rev37"),), _MEM),
    Claim("revsformer-memory", _REVSNN,
          "RevSFormer-4-384 needs less memory per image than Spikingformer-4-384", "3.00× less",
          (Setup("sf", "spikingformer_4_384", "none"),
           Setup("rsf", "revsformer_4_384", "reversible")),
          (Ratio("r", "memory", "sf", "rsf"),), _MEM),
    Claim("trevsnn-memory", _TREV, f"T-RevSNN needs less training memory {_TWIN}, all heads in "
          "the loss)", "8.6× less", TREV_PAIR, (Ratio("r", "memory", "bptt", "rev"),), _MEM),
    Claim("trevsnn-time", _TREV, f"T-RevSNN trains faster {_TWIN})", "2.0× faster", TREV_PAIR,
          (Ratio("r", "time", "rev", "bptt"),),
          "reversible step = {r:.2f}× the BPTT twin's ({clock}; wall {r_wall:.2f}×)"),
    Claim("trevsnn-energy", _TREV, f"T-RevSNN needs less inference energy {_TWIN}, untrained "
          "weights)", "1.6× less", TREV_PAIR, (Ratio("r", "energy", "bptt", "rev"),),
          "{r_linear_chain:.2f}× less (linear_chain); {r_strict:.2f}× (strict)"),
    Claim("pararevsnn37-time", _PARA,
          "ParaRevSNN-37 trains faster than RevSResNet37 (16-18% at 69-165 layers)",
          "15.8% less (6.45 → 5.43 h)", PARA_PAIR, (Ratio("r", "time", "para37", "rev37"),),
          "{r_change} ({clock}; wall {r_wall:.2f}×)"),
    Claim("pararevsnn37-memory", _PARA, "ParaRevSNN-37 vs RevSResNet37 training memory per image",
          "1.15× (44.00 vs 38.13 MB)", PARA_PAIR, (Ratio("r", "memory", "para37", "rev37"),),
          "{r_at}"),
    Claim("spikingjelly-ms-resnet34", "peer: SpikingJelly 2.0 memopt (level 1)",
          "SpikingJelly's MS-ResNet34 (same 21,282,122 parameters), plain and with memopt "
          "level 1, beside ours", "no published figure",
          (Setup("sj", "spikingjelly:ms_resnet34"),
           Setup("sj1", "spikingjelly:ms_resnet34+memopt1"),
           Setup("ms34c", "ms_resnet34", "checkpoint"), REV37),
          (Ratio("m", "memory", "sj1", "sj"), Ratio("t", "time", "sj1", "sj"),
           Ratio("ours", "memory", "sj1", "ms34c"), Ratio("rev", "memory", "sj1", "rev37")),
          "memopt1: {m_last:.2f}× plain's memory at {t:.2f}× its step; {ours_last:.2f}× our "
          "ms_resnet34 [checkpoint], {rev_last:.2f}× revs_resnet37 [reversible] (last range)",
          note="optional: skipped with the reason when SpikingJelly is not installed"),
)


#: Tiny registered stand-ins of the claims' models, for smoke runs that exercise the loop.
TINY = {"ms_resnet34": "ms_resnet_test", "revs_resnet37": "revs_resnet_test",
        "spikingformer_4_384": "spikingformer_test", "revsformer_4_384": "revsformer_test",
        "trevsnn_tiny": "trevsnn_cifar", "trevsnn_tiny_bptt": "trevsnn_cifar_bptt",
        "pararevsnn_resnet37": "pararevsnn_test"}


def tiny(claim: Claim) -> Claim:
    """The same claim on the :data:`TINY` stand-ins (peers are kept as they are)."""
    return dataclasses.replace(claim, setups=tuple(
        dataclasses.replace(st, model=TINY.get(st.model, st.model)) for st in claim.setups))


def select(ids: Optional[Sequence[str]]) -> List[Claim]:
    """The claims with these ids (all when ``ids`` is empty), in table order."""
    if not ids:
        return list(CLAIMS)
    known = {c.id: c for c in CLAIMS}
    bad = [i for i in ids if i not in known]
    if bad:
        raise ValueError(f"unknown claim id(s) {bad}; known: {', '.join(known)}")
    return [c for c in CLAIMS if c.id in ids]


class _Runner:
    """Builds set-ups lazily and keeps each measured quantity for the claims that follow."""

    def __init__(self, s: Settings, log: Callable[[str], None]) -> None:
        self.s, self.log = s, log
        self.memory: Dict[Tuple[str, str], Dict[str, Any]] = {}
        self.energy: Dict[Tuple[str, str], Dict[str, Any]] = {}
        self._digits = None

    def build(self, st: Setup):
        s = self.s
        return create(st.model, num_classes=s.num_classes, T=s.T,
                      memory_mode=None if ":" in st.model else st.mode,
                      in_channels=s.in_channels, image_size=s.image_size, seed=s.seed,
                      device=s.device)

    def measure_memory(self, st: Setup) -> Dict[str, Any]:
        key = (st.model, st.mode)
        if key not in self.memory:
            t0 = time.time()
            model = self.build(st)
            r = measure.memory(model, self.s)
            cols = measure.memory_columns(r)
            stored = stored_columns(model)
            if stored is not None:
                cols["stored_columns"] = stored
            cols["params"] = sum(p.numel() for p in model.parameters())
            self.memory[key] = cols
            self.log(f"memory {st.label}: " + ", ".join(
                f"{k} {v:.3f}" for k, v in cols.items() if k.startswith("mib_"))
                + f" [{time.time() - t0:.0f} s]")
        return self.memory[key]

    def measure_energy(self, st: Setup) -> Dict[str, Any]:
        key = (st.model, st.mode)
        if key not in self.energy:
            if self._digits is None:
                from .data import digits_images

                self._digits, _ = digits_images(self.s.energy_images, self.s.image_size,
                                                self.s.in_channels)
            model = self.build(st)
            self.energy[key] = measure.energy(model, self._digits.to(self.s.device))
        return self.energy[key]

    def measure_times(self, setups: Sequence[Setup]) -> Dict[str, Dict[str, Any]]:
        models = {st.key: self.build(st) for st in setups}
        return measure.step_times(models, self.s)


def _ratio_fields(r: Ratio, values: Dict[str, Dict[str, Any]], s: Settings) -> Dict[str, Any]:
    a, b = values[r.num], values[r.den]
    if r.quantity == "memory":
        out: Dict[str, Any] = {}
        at = []
        for i, rng in enumerate(s.ranges):
            k = range_key(rng)
            out[f"{r.name}_{k}"] = q = a[f"mib_{k}"] / b[f"mib_{k}"]
            at.append(f"{q:.2f}× at {'batch ' if i == 0 else ''}{rng[0]}→{rng[-1]}")
        out[f"{r.name}_first"] = out[f"{r.name}_{range_key(s.ranges[0])}"]
        out[f"{r.name}_last"] = out[f"{r.name}_{range_key(s.ranges[-1])}"]
        out[f"{r.name}_at"] = ", ".join(at)
        return out
    if r.quantity == "time":
        clock = a["clock"]
        out = {f"{r.name}_{c[:-3]}": a[f"median_{c}"] / b[f"median_{c}"]
               for c in ("wall_ms", "cpu_ms", "cuda_ms") if f"median_{c}" in a}
        out[r.name] = a[f"median_{clock}"] / b[f"median_{clock}"]
        q = out[r.name]
        out[f"{r.name}_change"] = (f"{100 * (1 - q):.1f}% less" if q <= 1
                                   else f"{100 * (q - 1):.1f}% more")
        return out
    return {f"{r.name}_{rule}": a[rule]["energy_mj_per_image"] / b[rule]["energy_mj_per_image"]
            for rule in ("strict", "linear_chain")}


def _details(claim: Claim, values: Dict[str, Dict[str, Any]], s: Settings) -> str:
    parts = []
    keys = [range_key(r) for r in s.ranges]
    for st in claim.setups:
        v = values.get(st.key, {})
        bits = []
        if "mib_" + keys[0] in v:
            slopes = " / ".join(f"{v['mib_' + k]:.2f}" for k in keys)
            fixed = " / ".join(f"{v['fixed_' + k]:.1f}" for k in keys)
            bits.append(f"{slopes} MiB/img, fixed {fixed} MiB")
            if v.get("stored_columns") is not None:
                bits.append(f"stored columns: {v['stored_columns']}")
        if "median_wall_ms" in v:
            bits.append(f"step {v['median_wall_ms']:.0f} ms wall / {v['median_cpu_ms']:.0f} ms CPU"
                        + (f" / {v['median_cuda_ms']:.1f} ms CUDA" if "median_cuda_ms" in v
                           else ""))
        if "strict" in v:
            bits.append(f"{v['linear_chain']['energy_mj_per_image']:.4f} mJ linear_chain, "
                        f"{v['strict']['energy_mj_per_image']:.4f} mJ strict, rate "
                        f"{v['strict']['mean_firing_rate']:.3f}")
        parts.append(f"{st.label}: " + ", ".join(bits))
    return "; ".join(parts)


def run_claims(claims: Sequence[Claim], s: Settings,
               log: Callable[[str], None] = lambda msg: None) -> List[Dict[str, Any]]:
    """Measure ``claims`` in order; one result record per claim. A claim whose set-ups need a
    peer that is not installed is recorded as skipped, with the reason."""
    from .peers import peer_unavailable_reason

    runner = _Runner(s, log)
    rows: List[Dict[str, Any]] = []
    for claim in claims:
        t0 = time.time()
        log(f"claim {claim.id}: {claim.statement}")
        row: Dict[str, Any] = {"id": claim.id, "source": claim.source,
                               "statement": claim.statement, "figure": claim.figure}
        reasons = sorted({peer_unavailable_reason(st.model, s.device)
                          for st in claim.setups} - {""})
        if reasons:
            row.update(measured="skipped", skipped=reasons[0], ratios={}, values={},
                       details="", seconds=0.0)
            log(f"  skipped: {reasons[0]}")
            rows.append(row)
            continue
        values: Dict[str, Dict[str, Any]] = {st.key: {"label": st.label} for st in claim.setups}
        timed = [k for r in claim.ratios if r.quantity == "time" for k in (r.num, r.den)]
        if timed:
            times = runner.measure_times([claim.setup(k) for k in dict.fromkeys(timed)])
            for k, t in times.items():
                values[k].update({f"median_{c}": t[f"median_{c}"] for c in
                                  ("wall_ms", "cpu_ms", "cuda_ms") if f"median_{c}" in t},
                                 clock=t["clock"])
        for r in claim.ratios:
            for k in (r.num, r.den):
                if r.quantity == "memory":
                    values[k].update(runner.measure_memory(claim.setup(k)))
                elif r.quantity == "energy":
                    values[k].update(runner.measure_energy(claim.setup(k)))
        ratios: Dict[str, Any] = {}
        for r in claim.ratios:
            ratios.update(_ratio_fields(r, values, s))
        clock = next((v["clock"] for v in values.values() if "clock" in v), "cpu_ms")
        row.update(measured=claim.format.format(**ratios, clock=CLOCK_NAMES[clock]),
                   ratios=ratios, values=values, details=_details(claim, values, s),
                   seconds=round(time.time() - t0, 1))
        log(f"  {row['measured']} [{row['seconds']:.0f} s]")
        rows.append(row)
    return rows
