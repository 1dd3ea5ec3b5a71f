"""``profile(model, example_input)``: measure the cost model's terms, per part and mode.

One training step is ``zero_grad`` (gradients kept allocated) + forward + loss + backward +
optimiser step. The profile runs it, on the device the model is on, in a few plans that
together put every pair of neighbouring parts in every pair of their modes
(:func:`~revsnn.plan.parts.configurations`: ``k**2`` plans for ``k`` modes):

- memory: once per plan at each of two batch sizes, cut at the parts' boundaries
  (:mod:`.timeline`; exact live-tensor bytes on CPU, the caching allocator's counts on CUDA);
  each term of :mod:`.cost` is fitted linear in the batch size through the two;
- time: ``rounds`` rounds over the plans at the example's batch size, interleaved (each round
  runs every plan once), so that drift of the machine's load affects every mode alike; each
  unit's time in each mode is the median of its observations.

The model's parameters, buffers, gradients, memory modes, training flag and the RNG are
restored afterwards.
"""

from __future__ import annotations

import platform
import statistics
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from ..measure import (
    batch_of,
    default_loss,
    default_optimizer,
    device_of,
    interleaved,
    preserved,
)
from .cost import Lin, Profile, bwd_key, fwd_key
from .parts import (
    GLUE,
    apply_modes,
    configurations,
    memory_plan,
    model_parts,
    part_modes,
)
from .timeline import Clock, Meter, Timeline, fixed_bytes, timed_step, unit_records

__all__ = ["label_source", "profile", "resize_batch"]

LossFn = Callable[[object, torch.Tensor], torch.Tensor]
OptimizerFactory = Callable[[List[nn.Parameter]], torch.optim.Optimizer]


def resize_batch(x: torch.Tensor, b: int) -> torch.Tensor:
    """``x`` with batch size ``b`` (its first ``b`` samples, repeated when ``b`` is larger)."""
    dim = 1 if x.dim() == 5 else 0
    n = x.shape[dim]
    if b <= n:
        return x.narrow(dim, 0, b).clone()
    reps = -(-b // n)
    return torch.cat([x] * reps, dim=dim).narrow(dim, 0, b).clone()


def label_source(model: nn.Module, forward: Callable, x: torch.Tensor,
                 target: Optional[torch.Tensor], dev: torch.device
                 ) -> Callable[[int], torch.Tensor]:
    """``b -> labels`` of batch ``b``: ``target`` resized, or fixed random classes (the
    number of classes from ``model.num_classes`` or the width of one forward's logits)."""
    if target is not None:
        y0 = target.to(dev)
        return lambda b: resize_batch(y0, b)
    k = getattr(model, "num_classes", None)
    if not isinstance(k, int):
        with torch.no_grad():
            out = forward(x)
        logits = out[-1] if isinstance(out, (list, tuple)) else out
        k = logits.shape[-1] if logits.dim() else 1
        del out, logits

    def labels(b: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(1)
        return torch.randint(0, k, (b,), generator=g).to(dev)

    return labels


def _order(events, parts: Dict[str, nn.Module], calls: Dict[str, int]) -> List[str]:
    twice = sorted(n for n, c in calls.items() if c > 1)
    if twice:
        raise ValueError(
            f"part(s) {', '.join(twice)} ran more than once in one forward; the planner needs "
            "every part to run once per step (give a shared module one part per use)"
        )
    return [n for kind, n, *_ in events if kind == "pre"]


def profile(
    model: nn.Module,
    example_input: torch.Tensor,
    target: Optional[torch.Tensor] = None,
    *,
    forward: Optional[Callable] = None,
    loss_fn: Optional[LossFn] = None,
    optimizer: Optional[OptimizerFactory] = None,
    batches: Optional[Sequence[int]] = None,
    rounds: int = 2,
    warmup: int = 1,
) -> Profile:
    """Measure the planner's cost model for ``model`` (see the module docstring).

    Args:
        model: a model with parts (``revsnn.create_model(...)`` or any module built from the
            public blocks), on the device to plan for.
        example_input: a batch ``[B, C, H, W]`` (or frames ``[T, B, C, H, W]``); time is
            measured at its batch size ``B``.
        target: labels for the loss (default: fixed random classes of the output).
        forward: ``x -> output`` (default ``model``; ``revsnn plan`` passes every head).
        loss_fn: ``(output, target) -> scalar`` (default cross-entropy of the last output).
        optimizer: ``params -> Optimizer`` (default SGD with momentum); its state counts.
        batches: the two batch sizes memory is measured at (default ``(B // 2, B)``, or
            ``(1, 2)`` for ``B = 1``).
        rounds: timing rounds over the profiled plans (each plan once per round).
        warmup: untimed steps before timing.
    """
    parts = model_parts(model)
    if not parts:
        raise ValueError(
            f"{type(model).__name__} has no parts with a memory mode (reversible sequences, "
            "temporal columns, recomputed parts): nothing to plan"
        )
    if not isinstance(example_input, torch.Tensor) or example_input.dim() < 2:
        raise ValueError("example_input must be a batch tensor [B, C, H, W] or [T, B, C, H, W]")
    if int(rounds) < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    dev = device_of(model)
    x0 = example_input.to(dev)
    B0 = batch_of(x0)
    if batches is None:
        batches = (B0 // 2, B0) if B0 >= 2 else (1, 2)
    b1, b2 = (int(b) for b in batches)
    if not 1 <= b1 < b2:
        raise ValueError(f"batches must be two batch sizes 1 <= b1 < b2, got {tuple(batches)}")
    forward = forward or model
    loss_fn = loss_fn or default_loss
    make_opt = optimizer or default_optimizer

    params = [p for p in model.parameters() if p.requires_grad]
    modes_before = memory_plan(model)
    timeline = Timeline(parts).attach()
    clock = Clock(dev)
    try:
        with preserved(model, dev):
            opt = make_opt(params)
            labels = label_source(model, forward, x0, target, dev)

            # discovery and warm-up (allocates gradients and optimiser state)
            y = labels(B0)
            events = timed_step(forward, loss_fn, opt, x0, y, timeline, Meter(None), clock)
            order = _order(events, parts, timeline.calls)
            idle = {n: m for n, m in modes_before.items() if n not in order}
            modes = {n: part_modes(parts[n]) for n in order}
            plans = configurations(order, modes)
            mem = _memory(forward, loss_fn, opt, x0, labels, (b1, b2), plans, order, idle,
                          timeline, clock, dev, params, model)
            times = _times(forward, loss_fn, opt, x0, y, plans, order, idle, timeline, clock,
                           dev, model, int(rounds), int(warmup))
    except torch.OutOfMemoryError as err:
        raise ValueError(
            f"profiling ran out of device memory at batch sizes {(b1, b2)}: profile at smaller "
            f"batch sizes (batches=..., revsnn plan --profile-batch) ({err})"
        ) from None
    finally:
        timeline.detach()
    meta = {
        "device": str(dev), "device_name": _device_name(dev), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "plans_profiled": len(plans),
        "input_shape": list(x0.shape), "dtype": str(x0.dtype).replace("torch.", ""),
        "memory_method": "dispatch-tracker" if dev.type == "cpu" else "cuda-memory-allocated",
        "time_method": "wall perf_counter" if dev.type == "cpu" else "cuda events",
        "rounds": int(rounds), "chain": mem.pop("chain"),
        "pair_spread_at": mem.pop("pair_spread_at"),
    }
    return Profile(order=order, modes=modes, batches=(b1, b2), time_batch=B0, idle=idle,
                   meta=meta, **mem, **times)


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return platform.processor() or platform.machine()


def _seq(plan: Dict[str, str], order: Sequence[str]) -> List[str]:
    return [GLUE] + [plan[n] for n in order] + [GLUE]


def _memory(forward, loss_fn, opt, x0, labels, batches, plans, order, idle, timeline, clock,
            dev, params, model) -> Dict:
    n = len(order) + 2
    obs: Dict[str, List[Dict]] = {k: [dict() for _ in range(n)] for k in ("G", "Tf", "E", "Tb")}
    fixed: Dict[int, float] = {}
    opt_peak: Dict[int, float] = {}
    chain = True
    for b in batches:
        x, y = resize_batch(x0, b), labels(b)
        timed_step(forward, loss_fn, opt, x, y, timeline, Meter(None), clock)  # warm-up
        for plan in plans:
            apply_modes(model, {**plan, **idle})
            events = timed_step(forward, loss_fn, opt, x, y, timeline, Meter(dev), clock)
            r = unit_records(events, order)
            chain = chain and r.backward_order == sorted(r.backward_order, reverse=True)
            seq = _seq(plan, order)
            Cf = r.Cf + [r.fwd_end]
            for u in range(n):
                pf, pb = fwd_key(u, seq), bwd_key(u, seq)
                vals = {
                    ("G", pf): Cf[u + 1] - Cf[u],
                    ("Tf", pf): r.Pf[u] - r.Cf[u],
                    ("E", pb): None if r.Cb[u] is None else r.Cb[u] - Cf[u + 1],
                    ("Tb", pb): None if r.Pb[u] is None else r.Pb[u] - r.Cb[u],
                }
                for (table, pair), v in vals.items():
                    obs[table][u].setdefault(pair, {}).setdefault(b, []).append(v)
            opt_peak[b] = max(opt_peak.get(b, 0.0), r.opt_peak)
            fixed[b] = max(fixed.get(b, 0.0), fixed_bytes(dev, events, model, opt, x, y))
    b1, b2 = batches
    spread, spread_at = 0.0, ""
    tables = {}
    for table, units in obs.items():
        out = []
        for d in units:
            row = {}
            for pair, per_b in d.items():
                if any(v is None for vs in per_b.values() for v in vs):
                    row[pair] = None
                    continue
                for vs in per_b.values():
                    if max(vs) - min(vs) > spread:
                        spread = max(vs) - min(vs)
                        spread_at = f"{table} of unit {len(out)} in modes {pair}"
                # the largest of repeated measurements: a plan is never predicted below one
                row[pair] = Lin.fit(b1, max(per_b[b1]), b2, max(per_b[b2]))
            out.append(row)
        tables[table] = out
    return {
        **tables,
        "fixed": Lin.fit(b1, fixed[b1], b2, fixed[b2]),
        "opt_peak": Lin.fit(b1, opt_peak[b1], b2, opt_peak[b2]),
        "pair_spread": spread, "chain": chain, "pair_spread_at": spread_at,
    }


def _times(forward, loss_fn, opt, x, y, plans, order, idle, timeline, clock, dev, model,
           rounds: int, warmup: int) -> Dict:
    n = len(order) + 2
    obs = {k: [dict() for _ in range(n)] for k in Clock.KINDS}
    rest: Dict[str, List[float]] = {k: [] for k in Clock.KINDS}
    for _ in range(warmup):
        timed_step(forward, loss_fn, opt, x, y, timeline, Meter(None), clock)
    for order_of_round in interleaved(plans, rounds):  # each round starts one plan later
        for plan in order_of_round:
            apply_modes(model, {**plan, **idle})
            events = timed_step(forward, loss_fn, opt, x, y, timeline, Meter(None), clock)
            seq = _seq(plan, order)
            for kind in Clock.KINDS:
                r = unit_records(events, order, kind)
                total_units = 0.0
                for u in range(n):
                    t = r.tf[u] + r.tb[u]
                    total_units += t
                    obs[kind][u].setdefault(seq[u], []).append(t)
                rest[kind].append(r.total_s - total_units)
    times, spread = {}, {}
    for kind in Clock.KINDS:
        times[kind] = [{m: statistics.median(v) for m, v in d.items()} for d in obs[kind]]
        spreads = []
        for d in obs[kind]:
            for v in d.values():
                med = statistics.median(v)
                if len(v) >= 4 and med > 1e-4:
                    qs = statistics.quantiles(v, n=4)
                    spreads.append((qs[2] - qs[0]) / med)
        spread[kind] = statistics.median(spreads) if spreads else 0.0
    return {
        "times": times, "time_rest": {k: statistics.median(v) for k, v in rest.items()},
        "time_spread": spread,
    }
