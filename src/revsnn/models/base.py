"""The base class of every registered model: common arguments, memory modes, classifier verbs.

A family subclasses :class:`SpikingModel`::

    class MyNet(SpikingModel):
        supported_modes = (MemoryMode.NONE, MemoryMode.CHECKPOINT, MemoryMode.REVERSIBLE)

        def __init__(self, width=8, num_classes=10, T=4, in_channels=3,
                     memory_mode="reversible"):
            super().__init__(num_classes, T, in_channels, memory_mode)  # checked here
            ...                             # build modules; the classifier head in self.head
            # no set_memory_mode call: the mode is applied when __init__ returns

        def forward(self, x):               # [B, C, H, W] or [T, B, C, H, W] -> [B, classes]
            x, static = self.check_input(x)
            ...

**Parts and memory modes.** Every submodule with a settable memory mode
(:class:`~revsnn.reversible.mode.HasMemoryMode`: reversible sequences, temporal columns,
recomputed stems, downsampling layers, tokenizer stages, residual blocks) is a *part*, named by
its path (``"stages.0"``, ``"downsamples.1"``, ``"columns"``). ``set_memory_mode("reversible")``
applies the family's default plan for that mode (:meth:`default_plan`); a mapping gives each
part its own mode, e.g. ``{"stages.0": "none", "stages.*": "reversible", "*": "checkpoint"}``
(shell patterns; the most specific matching pattern wins, an exact name being the most specific).
Parameter names never depend on the modes.

**Classifier.** The head lives in one attribute (``head_name``, ``"head"`` by default) and
follows the head protocol: ``head.classifier`` (the module producing the logits) and
``head.replace_classifier(num_classes)``.

The outputs of ``forward`` pass through :func:`revsnn.reversible.recompute.guard`: a backward
with ``create_graph=True`` through a model with first-order-only parts raises before any of the
model's parameters receives a gradient.
"""

from __future__ import annotations

import fnmatch
import functools
from typing import ClassVar, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from ..reversible.mode import MemoryMode, check_mode, parts_of
from ..reversible.recompute import guard

__all__ = ["SpikingModel", "check_input", "Plan"]

Plan = Union[str, MemoryMode, Mapping[str, Union[str, MemoryMode]]]


def check_input(
    x: torch.Tensor, in_channels: int, T: Optional[int], who: str, frames: bool = True
) -> Tuple[torch.Tensor, bool]:
    """Validate model input; return ``(x, is_static)``.

    Static images are ``[B, C, H, W]``; frames are time-first ``[T, B, C, H, W]`` and their T
    must equal the model's ``T`` (when the model has a fixed T). ``frames=False``: the model
    takes static images only, and the errors ask for ``[B, C, H, W]`` alone.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{who} expects a tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{who} expects a floating-point tensor, got dtype {x.dtype}")
    if not frames and x.dim() != 4:
        hint = (" (frames [T, B, C, H, W] need an event variant such as trevsnn_tiny_dvs)"
                if x.dim() == 5 else "")
        raise ValueError(
            f"{who} expects images [B, {in_channels}, H, W] only (static images, encoded once "
            f"and shared by its T={T} columns); got shape {tuple(x.shape)}{hint}"
        )
    if x.dim() == 4:
        static = True
        c = x.shape[1]
    elif x.dim() == 5:
        static = False
        c = x.shape[2]
        if T is not None and x.shape[0] != T:
            raise ValueError(
                f"{who} has T={T} but got {x.shape[0]} frames: expected [T={T}, B, "
                f"{in_channels}, H, W], got {tuple(x.shape)}"
            )
    else:
        raise ValueError(
            f"{who} expects images [B, {in_channels}, H, W] or frames [T, B, {in_channels}, H, W],"
            f" got shape {tuple(x.shape)}"
        )
    if c != in_channels:
        layout = "[B, C, H, W]" if static else "[T, B, C, H, W]"
        raise ValueError(
            f"{who} expects {in_channels} input channels ({layout} with C={in_channels}), "
            f"got shape {tuple(x.shape)}"
        )
    return x, static


def _positive_int(value, name: str, who: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{who}: {name} must be an int >= 1, got {value!r}")
    return int(value)


class SpikingModel(nn.Module):
    """Base class of every registered model (see the module docstring).

    Args:
        num_classes: classifier outputs.
        T: time steps (T-RevSNN: columns).
        in_channels: input channels.
        memory_mode: one mode of ``supported_modes`` or a per-part mapping (applied when the
            subclass's ``__init__`` returns).
    """

    #: memory modes a single-string ``set_memory_mode`` accepts for the whole model
    supported_modes: ClassVar[Tuple[MemoryMode, ...]] = tuple(MemoryMode)
    #: the attribute holding the classifier head (``head.classifier``,
    #: ``head.replace_classifier``)
    head_name: ClassVar[str] = "head"
    #: input the model takes: static images and frames (True) or static images only (False)
    takes_frames: ClassVar[bool] = True

    def __init__(self, num_classes: int, T: int, in_channels: int,
                 memory_mode: Plan = MemoryMode.NONE) -> None:
        super().__init__()
        who = type(self).__name__
        self.num_classes = _positive_int(num_classes, "num_classes", who)
        self.T = _positive_int(T, "T", who)
        self.in_channels = _positive_int(in_channels, "in_channels", who)
        if not isinstance(memory_mode, Mapping):
            check_mode(memory_mode, self.supported_modes, who)
        self._requested_plan: Plan = memory_mode
        self._plan: Dict[str, MemoryMode] = {}
        self.register_forward_hook(_guard_outputs)

    def __init_subclass__(cls, **kwargs) -> None:
        """Apply the requested memory mode once the outermost ``__init__`` has built every
        part (so a family's ``__init__`` never ends with its own ``set_memory_mode``)."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        @functools.wraps(init)
        def wrapped(self, *args, **kw):
            depth = self.__dict__.get("_init_depth", 0)
            object.__setattr__(self, "_init_depth", depth + 1)
            try:
                init(self, *args, **kw)
            finally:
                object.__setattr__(self, "_init_depth", depth)
            if depth == 0:
                self.set_memory_mode(self._requested_plan)

        cls.__init__ = wrapped

    # ------------------------------------------------------------------ input
    def check_input(self, x: torch.Tensor) -> Tuple[torch.Tensor, bool]:
        """``check_input`` with this model's channels, T and input kind."""
        return check_input(x, self.in_channels, self.T, type(self).__name__,
                           frames=self.takes_frames)

    # ------------------------------------------------------------------ memory modes
    def parts(self) -> Dict[str, nn.Module]:
        """The model's parts (submodules with a memory mode, the outermost ones), by name."""
        return parts_of(self)

    def default_plan(self, mode: MemoryMode) -> Dict[str, MemoryMode]:
        """The per-part modes that ``set_memory_mode(mode)`` applies (every part in ``mode`` by
        default; families override it where a part is better left as plain autograd)."""
        return {"*": mode}

    def set_memory_mode(self, mode: Plan) -> SpikingModel:
        """One mode for the whole model (the family's default plan for it) or a per-part
        mapping of shell patterns to modes; every part gets the mode of its most specific
        matching pattern. Raises ``ValueError`` for an unsupported mode, a pattern that matches
        no part, or a part without a mode."""
        who = type(self).__name__
        parts = self.parts()
        if isinstance(mode, Mapping):
            plan = {str(k): MemoryMode.parse(v) for k, v in mode.items()}
            requested: Plan = dict(plan)
        else:
            requested = check_mode(mode, self.supported_modes, who)
            plan = self.default_plan(requested)
        resolved = _resolve(plan, list(parts), who, strict=isinstance(mode, Mapping))
        for name, part in parts.items():
            try:
                part.memory_mode = resolved[name]
            except ValueError as err:
                raise ValueError(f"{who} part {name!r}: {err}") from None
        self._plan = resolved
        self._requested_plan = requested
        return self

    def memory_plan(self) -> Dict[str, str]:
        """The memory mode of every part, by name."""
        return {name: part.memory_mode.value for name, part in self.parts().items()}

    @property
    def memory_mode(self) -> Optional[MemoryMode]:
        """The model's memory mode: the single-string mode last set, ``None`` for a mixed plan."""
        req = self._requested_plan
        return None if isinstance(req, Mapping) else MemoryMode.parse(req)

    # ------------------------------------------------------------------ classifier
    def _head(self) -> nn.Module:
        return getattr(self, self.head_name)

    def get_classifier(self) -> nn.Module:
        """The module producing the logits."""
        return self._head().classifier

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh classifier for ``num_classes`` classes (same device, dtype, initialisation
        rule); the rest of the model is unchanged."""
        self.num_classes = _positive_int(num_classes, "num_classes", type(self).__name__)
        self._head().replace_classifier(self.num_classes)

    def compile(self, *args, **kwargs) -> None:  # type: ignore[override]
        """``torch.compile`` in place: every unit (branch, level, readout, neuron, head) and
        the model's forward, with ``torch.compile``'s keyword options (``dynamic=False``
        unless given); see :mod:`revsnn.models.compile`."""
        if args:
            raise TypeError("SpikingModel.compile takes torch.compile's options as keywords")
        from .compile import compile_model

        compile_model(self, **kwargs)

    def forward_heads(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Every head's logits for the training loss (one head: ``[self(x)]``)."""
        return [self(x)]


def _resolve(plan: Mapping[str, MemoryMode], names: List[str], who: str,
             strict: bool) -> Dict[str, MemoryMode]:
    """Each part's mode: the matching pattern with the most literal characters wins."""
    out: Dict[str, MemoryMode] = {}
    used = set()
    for name in names:
        best, score = None, -1
        for pattern in plan:
            if fnmatch.fnmatchcase(name, pattern):
                s = 10**6 if pattern == name else len(pattern.replace("*", "").replace("?", ""))
                if s > score:
                    best, score = pattern, s
        if best is None:
            raise ValueError(
                f"{who}: no memory mode for part {name!r} (parts: {', '.join(names)}); add it or "
                "a pattern such as '*'"
            )
        out[name] = plan[best]
        used.add(best)
    unused = [p for p in plan if p not in used and not any(
        fnmatch.fnmatchcase(n, p) for n in names)]
    if strict and unused:
        raise ValueError(
            f"{who}: memory-mode pattern(s) {', '.join(map(repr, unused))} match no part "
            f"(parts: {', '.join(names)})"
        )
    return out


def _guard_outputs(module: nn.Module, _inputs, output):
    if isinstance(output, torch.Tensor):
        return guard(module, output)[0]
    if isinstance(output, (list, tuple)) and output and all(
        isinstance(o, torch.Tensor) for o in output
    ):
        return type(output)(guard(module, *output))
    return output
