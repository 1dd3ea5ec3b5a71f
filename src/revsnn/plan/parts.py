"""A model's parts as the planner sees them: names, supported modes, applying a plan, the
profiling configurations.

Parts are the outermost submodules with a settable memory mode
(:class:`~revsnn.reversible.mode.HasMemoryMode`), named by their module path -- exactly
:meth:`revsnn.models.base.SpikingModel.parts`. Any ``nn.Module`` built from the public blocks
works: a :class:`~revsnn.models.base.SpikingModel` gets its plan through ``set_memory_mode``, any
other module has its parts' ``memory_mode`` set directly.
"""

from __future__ import annotations

import itertools
from typing import Callable, Dict, List, Mapping, Sequence

from torch import nn

from ..reversible.mode import MemoryMode, parts_of

__all__ = [
    "GLUE",
    "model_parts",
    "part_modes",
    "memory_plan",
    "apply_modes",
    "restore_point",
    "configurations",
]

#: the mode of the pseudo-units before the first part and after the last one (no choice)
GLUE = "-"



def model_parts(model: nn.Module) -> Dict[str, nn.Module]:
    """The parts of ``model`` by name (``model.parts()`` when it has that method)."""
    fn = getattr(model, "parts", None)
    return dict(fn()) if callable(fn) else parts_of(model)


def part_modes(part: nn.Module) -> List[str]:
    """The memory modes a part supports, as strings (``"none"`` first)."""
    modes = [MemoryMode.parse(m).value for m in getattr(part, "supported_modes", tuple(MemoryMode))]
    return sorted(modes, key=[m.value for m in MemoryMode].index)


def memory_plan(model: nn.Module) -> Dict[str, str]:
    """The current mode of every part."""
    return {name: MemoryMode.parse(p.memory_mode).value for name, p in model_parts(model).items()}


def apply_modes(model: nn.Module, modes: Mapping[str, str]) -> None:
    """Give every part its mode (a mapping naming every part exactly)."""
    parts = model_parts(model)
    missing = sorted(set(parts) - set(modes))
    unknown = sorted(set(modes) - set(parts))
    if missing or unknown:
        raise ValueError(
            f"a plan names every part exactly: missing {missing}, unknown {unknown} "
            f"(parts: {', '.join(parts)})"
        )
    if callable(getattr(model, "set_memory_mode", None)) and callable(
            getattr(model, "parts", None)):
        model.set_memory_mode(dict(modes))
        return
    for name, part in parts.items():
        part.memory_mode = modes[name]


def restore_point(model: nn.Module) -> Callable[[], None]:
    """A function that puts the model's modes back as they are now -- through the same
    single mode when one was set (so that ``model.memory_mode`` is unchanged), else the
    per-part mapping."""
    plan = memory_plan(model)
    single = None
    if callable(getattr(model, "parts", None)) and callable(
            getattr(model, "set_memory_mode", None)):
        single = getattr(model, "memory_mode", None)

    def restore() -> None:
        if single is not None:
            model.set_memory_mode(single)
        else:
            apply_modes(model, plan)

    return restore


def configurations(order: Sequence[str], modes: Mapping[str, Sequence[str]]
                   ) -> List[Dict[str, str]]:
    """Plans that together put every pair of neighbouring parts (in execution order) in every
    pair of their modes: for each ordered pair of modes ``(a, b)``, parts at even positions in
    ``a`` and at odd positions in ``b`` (a part without that mode keeps its first one).
    ``k`` modes give at most ``k**2`` plans (duplicates dropped); uniform plans come first."""
    union: List[str] = []
    for name in order:
        for m in modes[name]:
            if m not in union:
                union.append(m)
    pairs = [(a, a) for a in union] + [
        (a, b) for a, b in itertools.product(union, union) if a != b]
    out: List[Dict[str, str]] = []
    seen = set()
    for a, b in pairs:
        plan = {}
        for i, name in enumerate(order):
            want = a if i % 2 == 0 else b
            plan[name] = want if want in modes[name] else modes[name][0]
        key = tuple(plan[n] for n in order)
        if key not in seen:
            seen.add(key)
            out.append(plan)
    return out
