"""``torch.compile`` for revsnn models: the compute in whole graphs, the engines eager.

:func:`compile_model` (also ``model.compile()`` on every :class:`~revsnn.models.SpikingModel`)
compiles, in place, every *unit* of the model and then the model's own forward:

- a unit is a module the model or one of its parts calls as a whole and that holds no part
  itself: each coupling branch (``F``, ``G``, ParaRev's merged modules), each temporal-column
  level and readout, each layer of a recomputed stem or downsampling part (convolutions,
  BatchNorm, neurons), and the head (:func:`compile_units` lists them by name);
- compiled in place (``nn.Module.compile``) a unit's ``__call__`` runs its graph wherever it is
  called from -- inside the forward of a whole-model graph, inside a recomputing engine's
  forward run, and inside the engine's recomputation during the backward;
- the engines themselves (:mod:`revsnn.reversible.compiled`) stay eager: RNG capture, module
  state fingerprints, the BatchNorm freeze and the parameter aliases of the recompute contract
  run as written around the compiled units.

``dynamic=False`` by default: shapes are static per batch size (a new batch size compiles once
more), which keeps the neuron loops and chunking free of symbolic sizes.
:func:`compile_problem` says what is missing for compiling on a device (a C++ compiler on CPU,
Triton on CUDA).
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any, Dict, Optional, Union

import torch
from torch import nn

from ..reversible.compiled import prepare
from ..reversible.coupling import Coupling
from ..reversible.mode import HasMemoryMode

__all__ = ["CompileClock", "compile_model", "compile_problem", "compile_units"]


def _holds_part(m: nn.Module) -> bool:
    return any(isinstance(s, HasMemoryMode) for s in m.modules())


def _has_body(m: nn.Module) -> bool:
    """A recomputed part (stem, downsampling layer, tokenizer stage): its ``body`` method is
    what runs, in the forward and again in the backward."""
    return isinstance(m, HasMemoryMode) and callable(getattr(type(m), "body", None))


def _callable(m: nn.Module) -> bool:
    return type(m).forward is not nn.Module.forward  # containers of parameters never run


def compile_units(model: nn.Module) -> Dict[str, nn.Module]:
    """What :func:`compile_model` compiles, by dotted name: the outermost submodules holding
    no part, looking through parts, containers and couplings (a coupling is never called; its
    engine calls its branches); for a recomputed part, its ``body`` (named ``<part>.body``,
    the value is the part)."""
    out: Dict[str, nn.Module] = {}
    seen: set = set()

    def walk(prefix: str, m: nn.Module) -> None:
        for name, child in m.named_children():
            path = f"{prefix}.{name}" if prefix else name
            if id(child) in seen:
                continue
            if _has_body(child):
                seen.add(id(child))
                out[f"{path}.body"] = child
            elif isinstance(child, (Coupling, nn.ModuleList, nn.ModuleDict)) or _holds_part(child):
                walk(path, child)
            elif _callable(child) and not isinstance(child, nn.Identity):
                seen.add(id(child))
                out[path] = child

    walk("", model)
    return out


def compile_model(model: nn.Module, **options: Any) -> nn.Module:
    """Compile ``model`` in place for training and evaluation and return it: every unit
    (:func:`compile_units`: modules through ``nn.Module.compile``, a recomputed part's
    ``body`` as a compiled method) and then the model's own forward, with ``torch.compile``'s
    ``options`` (``dynamic=False`` unless given). The parameters, state dict and memory modes
    are unchanged. Copy a model (``copy.deepcopy``, EMA) before compiling it, not after."""
    opts = {"dynamic": False, **options}
    prepare()
    units = compile_units(model)
    _room_for(len(units))
    for name, unit in units.items():
        if name.endswith(".body") and _has_body(unit):
            unit.body = torch.compile(type(unit).body.__get__(unit), **opts)
        else:
            nn.Module.compile(unit, **opts)
    nn.Module.compile(model, **opts)
    return model


def _room_for(n_units: int) -> None:
    """Raise TorchDynamo's recompile limits so that every unit keeps its graphs: units of one
    class share their ``forward`` code, and TorchDynamo caches at most ``recompile_limit``
    graphs per code object (then runs it eagerly). A unit needs up to four (grad on and off:
    an engine's forward run and its recomputation; train and eval)."""
    import torch._dynamo.config as cfg

    cfg.recompile_limit = max(cfg.recompile_limit, 4 * n_units + 8)
    cfg.accumulated_recompile_limit = max(cfg.accumulated_recompile_limit, 8 * n_units + 256)


def _cxx() -> Optional[str]:
    """The C++ compiler inductor would use (``CXX`` or the first of its defaults on PATH)."""
    cxx = os.environ.get("CXX")
    if cxx:
        return shutil.which(cxx)
    for name in ("g++", "clang++", "c++"):
        found = shutil.which(name)
        if found:
            return found
    return None


def compile_problem(device: Union[str, torch.device] = "cpu") -> Optional[str]:
    """``None`` when ``torch.compile`` (inductor) can compile for ``device``; otherwise what is
    missing, in one phrase."""
    dev = torch.device(device)
    if dev.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "Triton is not installed (inductor needs it for CUDA kernels)"
        return None
    if _cxx() is None:
        cxx = os.environ.get("CXX")
        where = f"CXX={cxx!r} is not an executable" if cxx else "no g++/clang++/c++ on PATH"
        return f"no C++ compiler found ({where}; inductor needs one for CPU kernels)"
    return None


class CompileClock:
    """Wall seconds spent compiling since construction (TorchDynamo tracing, AOTAutograd and
    inductor, the lazily compiled backward graphs included), from torch's compile callbacks;
    :meth:`close` stops counting."""

    def __init__(self) -> None:
        import torch._dynamo.callback as cb

        self.seconds = 0.0
        self._t: Optional[float] = None
        self._handler = cb.callback_handler
        self._handler.register_start_callback(self._start)
        self._handler.register_end_callback(self._end)

    def _start(self, _args: Any = None) -> None:
        self._t = time.perf_counter()

    def _end(self, _args: Any = None) -> None:
        if self._t is not None:
            self.seconds += time.perf_counter() - self._t
            self._t = None

    def close(self) -> None:
        for remove, cb in ((self._handler.remove_start_callback, self._start),
                           (self._handler.remove_end_callback, self._end)):
            try:
                remove(cb)
            except ValueError:
                pass
