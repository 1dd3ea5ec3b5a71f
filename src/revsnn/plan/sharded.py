"""Plans per process under sharded data parallelism (FSDP2, ``--parallel fsdp``).

The units that FSDP gathers and frees as a whole (:func:`shard_units`) are the model's parts
(:meth:`revsnn.models.base.SpikingModel.parts`), its classifier head and the root, which keeps
whatever parameters are left. With ``N`` processes each holds ``1/N`` of the parameters
``P``, of their gradients and of the optimiser state (``k`` tensors of the parameters' size:
AdamW and LAMB 2, SGD with momentum 1), and while a unit runs its gathered parameters and, in
its backward, their full gradients until the reduce-scatter. From the one-process profile of the
per-process batch (:func:`revsnn.plan.profile`), whose gradients are held across the step, the
per-process profile (:func:`shard_profile`) is::

    fixed_N = fixed_1 - (2 + k) P (1 - 1/N) + R      Tf_u += U_u    Tb_u += 2 U_u
    opt_N = opt_1 / N

with ``U_u`` the parameter bytes of part ``u``'s unit (the head's for the head-and-loss unit)
and ``R`` the root's own parameters, which stay gathered through the step; the optimiser's
transient scales with the shards. Activations are those of the per-process batch.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List

import torch
from torch import nn

from .cost import Lin, Profile

__all__ = ["gathered_storage", "optimizer_state_factor", "shard_profile", "shard_units",
           "unit_bytes"]


def shard_units(model: nn.Module) -> Dict[str, nn.Module]:
    """The modules that become FSDP units, by name: the parts, then the classifier head.

    A model may name its own units with a ``shard_units()`` method; otherwise they are
    ``model.parts()`` (the registry's per-family parts) plus the module in ``head_name`` (when
    it has a ``forward``). A unit holding a parameter that is also registered outside it (a
    weight shared between parts) is dropped: its parameters stay with the root unit."""
    own = getattr(model, "shard_units", None)
    if callable(own):
        return dict(own())
    from ..reversible.mode import parts_of

    fn = getattr(model, "parts", None)
    units = dict(fn()) if callable(fn) else parts_of(model)
    head_name = getattr(model, "head_name", None)
    head = getattr(model, head_name, None) if head_name else None
    if isinstance(head, nn.Module) and type(head).forward is not nn.Module.forward and \
            all(head is not u for u in units.values()):
        units[head_name] = head
    return _without_shared(model, units)


def _without_shared(model: nn.Module, units: Dict[str, nn.Module]) -> Dict[str, nn.Module]:
    units = {k: u for k, u in units.items() if any(True for _ in u.parameters())}
    while True:
        inside = {k: {id(p) for p in u.parameters()} for k, u in units.items()}
        count: Dict[int, int] = {}
        for ids in inside.values():
            for i in ids:
                count[i] = count.get(i, 0) + 1
        outside = set()
        stack, seen = [model], set()
        unit_ids = {id(u) for u in units.values()}
        while stack:  # every path from the root that does not enter a unit
            m = stack.pop()
            if id(m) in seen:
                continue
            seen.add(id(m))
            outside.update(id(p) for p in m.parameters(recurse=False))
            stack.extend(c for c in m.children() if id(c) not in unit_ids)
        bad = [k for k, ids in inside.items()
               if any(count[i] > 1 or i in outside for i in ids)]
        if not bad:
            return units
        for k in bad:
            units.pop(k)


def _bytes(params) -> int:
    return sum(p.numel() * p.element_size() for p in {id(p): p for p in params}.values())


def unit_bytes(model: nn.Module) -> Dict[str, int]:
    """Parameter bytes of every unit, the root's own (``"<root>"``) included."""
    units = shard_units(model)
    out = {k: _bytes(u.parameters()) for k, u in units.items()}
    inside = {id(p) for u in units.values() for p in u.parameters()}
    out["<root>"] = _bytes(p for p in model.parameters() if id(p) not in inside)
    return out


def optimizer_state_factor(name: str, momentum: float = 0.9) -> int:
    """Tensors of the parameters' size an optimiser keeps per parameter."""
    name = name.lower()
    if name in ("adamw", "adam", "lamb"):
        return 2
    return 1 if momentum > 0 else 0


def shard_profile(profile: Profile, model: nn.Module, world: int,
                  state_factor: int = 2) -> Profile:
    """The per-process profile of ``world`` processes from the one-process ``profile`` of the
    per-process batch (see the module docstring)."""
    if world <= 1:
        return profile
    sizes = unit_bytes(model)
    P = _bytes(p for p in model.parameters() if p.requires_grad)
    root = sizes.pop("<root>")
    head = getattr(model, "head_name", None)
    per_unit = [0] + [sizes.get(name, 0) for name in profile.order] + [sizes.get(head, 0)]

    def plus(table, times):
        return [{k: (None if v is None else Lin(v.a + times * u, v.s)) for k, v in d.items()}
                for d, u in zip(table, per_unit)]

    saved = (2 + state_factor) * P * (1 - 1 / world)
    meta = {**profile.meta, "world_size": world,
            "sharded_state_bytes": P * (2 + state_factor) / world,
            "gathered_unit_bytes": max(per_unit) + root}
    return dataclasses.replace(
        profile, fixed=Lin(profile.fixed.a - saved + root, profile.fixed.s),
        Tf=plus(profile.Tf, 1), Tb=plus(profile.Tb, 2),
        opt_peak=Lin(profile.opt_peak.a / world, profile.opt_peak.s / world), meta=meta)


def gathered_storage(model: nn.Module) -> List[torch.Tensor]:
    """The tensors whose storage a sharded model (``fully_shard``) grows while a unit is
    gathered and frees after (``storage.resize_``, unseen by a dispatch-mode tracker): each
    parameter's gathered copy and all-gather buffers. Call after one step (they exist then)."""
    out: List[torch.Tensor] = []
    for m in model.modules():
        state = getattr(m, "_get_fsdp_state", None)
        group = state()._fsdp_param_group if callable(state) else None
        if group is None:
            continue
        for fp in group.fsdp_params:
            if hasattr(fp, "_unsharded_param"):
                out.append(fp._unsharded_param)
            out.extend(t for t in getattr(fp, "all_gather_outputs", []) or []
                       if isinstance(t, torch.Tensor))
    return out
