"""Loading checkpoints saved by the papers' published code into revsnn models.

::

    model = revsnn.load_published("revs_resnet37", "checkpoint_max_test_acc1.pth")
    model = revsnn.load_published("trevsnn_tiny", "best.pth", memory_mode="none")

The published code (RevSNN: RevSResNet, MS-ResNet, RevSFormer; T-RevSNN) names its parameters
differently from revsnn. Each family declares its explicit name rules in its own model file (a
:class:`PublishedLayout` given to ``register_model(..., published=...)``): a published name,
matched whole by a regular expression, gives exactly one revsnn state-dict name. This module
knows no family: it matches names by those rules (:func:`match_published`) and reads
checkpoints. Loading checks, before anything is copied, that

- every published tensor is used exactly once. T-RevSNN's shared convolutions (the pw2 / dw2 of
  every column's second block, one tensor per level) appear under one published name per column;
  those names are one tensor (their values must agree) and fill our one shared module;
- every tensor of ours is filled (names that are one tensor in our model count once);
- shapes agree; the one conversion is a Conv1d weight ``[O, I, 1]`` (RevSFormer's q/k/v and
  attention-output projections) into our 1x1 Conv2d weight ``[O, I, 1, 1]``;

and raises :class:`PublishedCheckpointError` listing every name that does not fit otherwise.

A checkpoint is a path (read with ``torch.load(weights_only=True)``) or an already loaded
object: a state dict, or a dict holding one under ``"model"`` / ``"state_dict"`` (the EMA copy
under ``"state_dict_ema"`` / ``"model_ema"`` / ``"ema"``). ``module.`` (DistributedDataParallel)
and ``_orig_mod.`` (``torch.compile``) prefixes are removed. The training scripts also save their
settings inside the checkpoint (an ``argparse.Namespace``; T-RevSNN a yacs ``CfgNode`` and, by
mistake, the builtin ``input``); these are read as inert stand-ins, so ``weights_only`` loading
still executes nothing from the file.

Not covered: ParaRevSNN (no published code), the standard-BPTT T-RevSNN (ours only) and the
event T-RevSNN (the published one reads out a single head from ``c_3 / T``; ours one head per
column, so it is a different network).
"""

from __future__ import annotations

import argparse
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .registry import create_model, list_models, model_info

__all__ = [
    "BN", "WB", "WS", "NameMatch", "NameRule", "PublishedCheckpointError", "PublishedLayout",
    "load_published", "match_published", "published_in_channels", "published_num_classes",
    "published_state_dict", "read_published",
]

Checkpoint = Union[str, os.PathLike, Mapping[str, Any]]


class PublishedCheckpointError(ValueError):
    """A published checkpoint cannot be read or does not fit the model."""


# ------------------------------------------------------------------------------- name rules
#: the parameter group of a BatchNorm, a conv/linear with bias, a weight-standardised conv
BN = r"(?P<p>weight|bias|running_mean|running_var|num_batches_tracked)"
WB = r"(?P<p>weight|bias)"
WS = r"(?P<p>weight|bias|gain)"


@dataclass(frozen=True)
class NameRule:
    """``pattern`` (matched against the whole published name) -> ``target(groups, model)``,
    our state-dict name. ``shared``: several published names may be one tensor."""

    pattern: str
    target: Callable[[Dict[str, str], nn.Module], str]
    shared: bool = False

    def apply(self, name: str, model: nn.Module) -> Optional[str]:
        m = re.fullmatch(self.pattern, name)
        return None if m is None else self.target(m.groupdict(), model)


def group_int(g: Dict[str, str], key: str, minus: int = 0) -> int:
    """The integer of a matched group, less ``minus`` (published indices often start at 1)."""
    return int(g[key]) - minus


@dataclass(frozen=True)
class PublishedLayout:
    """How a family's published code names its parameters, declared in the family's model file
    and given to ``register_model(..., published=...)``.

    ``rules(model) -> (label, name rules)``: the rules for this model (a family whose variants
    differ, e.g. in their stem, picks them here; it raises :class:`PublishedCheckpointError`
    for a variant without published code). ``classifiers`` / ``first_convs``: patterns of the
    published classifier weight (first dimension: the number of classes) and first conv weight
    (second dimension: the input channels)."""

    rules: Callable[[nn.Module], Tuple[str, List[NameRule]]]
    classifiers: Tuple[str, ...] = ()
    first_convs: Tuple[str, ...] = ()


def _layouts() -> List[Tuple[type, PublishedLayout]]:
    """The registered families' layouts, with the class each belongs to (first seen first)."""
    out: List[Tuple[type, PublishedLayout]] = []
    for name in list_models():
        info = model_info(name)
        if info.published is not None and all(info.published is not lay for _, lay in out):
            out.append((info.cls, info.published))
    return out


def _rules_of(model: nn.Module) -> Tuple[str, List[NameRule]]:
    layouts = _layouts()
    for cls, layout in layouts:
        if isinstance(model, cls):
            return layout.rules(model)
    known = ", ".join(sorted({cls.__name__ for cls, _ in layouts}))
    raise PublishedCheckpointError(
        f"no published checkpoint layout for {type(model).__name__}: published code exists for "
        f"{known}"
    )


# ------------------------------------------------------------------------------- matching
def _fits(published: Tuple[int, ...], ours: Tuple[int, ...]) -> bool:
    """Same shape, or a Conv1d weight ``[O, I, 1]`` for our 1x1 Conv2d ``[O, I, 1, 1]``."""
    return published == ours or (
        len(published) == 3 and published[2] == 1 and ours == published + (1,)
    )


def _fmt(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


def _listing(title: str, items: List[str], limit: int = 20) -> str:
    more = f"\n    ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"  {title} ({len(items)}):\n    " + "\n    ".join(items[:limit]) + more


@dataclass
class NameMatch:
    """Which published tensor fills which of ours.

    ``sources[c]``: the published names for our canonical name ``c`` (several only for a shared
    tensor); ``alias[n]``: the canonical name of each of our state-dict names (names that are
    one tensor in our model share one); ``family``: the rule set used.
    """

    family: str
    sources: Dict[str, List[str]] = field(default_factory=dict)
    alias: Dict[str, str] = field(default_factory=dict)


def match_published(model: nn.Module, shapes: Mapping[str, Sequence[int]]) -> NameMatch:
    """Match published names (with their shapes) to ``model``'s state dict by the family's
    rules; raises :class:`PublishedCheckpointError` listing every misfit. Works on a model on
    the ``meta`` device (names and shapes only)."""
    family, rules = _rules_of(model)
    ours = model.state_dict(keep_vars=True)
    match = NameMatch(family)
    first: Dict[int, str] = {}
    for name, t in ours.items():  # names that are one tensor share the first name
        match.alias[name] = first.setdefault(id(t), name)
    unmatched: List[str] = []
    bad_shape: List[str] = []
    twice: List[str] = []
    shared_ok: Dict[str, bool] = {}
    for pname, shape in shapes.items():
        shape = tuple(int(s) for s in shape)
        hits = [(r, r.apply(pname, model)) for r in rules]
        hits = [(r, t) for r, t in hits if t is not None]
        if len(hits) != 1 or hits[0][1] not in ours:
            why = "no rule" if not hits else (
                f"rule gives {hits[0][1]!r}, not in the model" if len(hits) == 1
                else "several rules")
            unmatched.append(f"{pname} {_fmt(shape)} ({why})")
            continue
        rule, target = hits[0]
        own = tuple(ours[target].shape)
        if not _fits(shape, own):
            bad_shape.append(f"{pname} {_fmt(shape)} -> {target} {_fmt(own)}")
            continue
        canon = match.alias[target]
        if canon in match.sources:
            if not (rule.shared and shared_ok[canon]):
                twice.append(f"{pname} -> {target} (already filled by "
                             f"{match.sources[canon][0]})")
                continue
        else:
            shared_ok[canon] = rule.shared
        match.sources.setdefault(canon, []).append(pname)
    unfilled = sorted({c for c in match.alias.values() if c not in match.sources},
                      key=list(ours).index)
    if unmatched or bad_shape or twice or unfilled:
        parts = [f"checkpoint does not fit {type(model).__name__} (published {family} layout):"]
        if unmatched:
            parts.append(_listing("published names without a place in the model", unmatched))
        if bad_shape:
            parts.append(_listing("shape mismatches", bad_shape))
        if twice:
            parts.append(_listing("published names for a tensor already filled", twice))
        if unfilled:
            parts.append(_listing("tensors of the model left unfilled", [
                f"{c} {_fmt(ours[c].shape)}" for c in unfilled]))
        hint = _class_hint(model, shapes)
        raise PublishedCheckpointError("\n".join(parts) + hint)
    return match


def _class_hint(model: nn.Module, shapes: Mapping[str, Sequence[int]]) -> str:
    k = published_num_classes(shapes)
    n = getattr(model, "num_classes", None)
    if k is not None and n is not None and k != n:
        return f"\n  (the checkpoint has {k} classes, the model {n}: pass num_classes={k})"
    return ""


def _dim_of(state: Mapping[str, Any], patterns: Sequence[str], dim: int) -> Optional[int]:
    for pattern in patterns:
        for name, t in state.items():
            if re.fullmatch(pattern, name):
                shape = t if isinstance(t, (tuple, list, torch.Size)) else t.shape
                return int(shape[dim]) if len(shape) > dim else None
    return None


def published_num_classes(state: Mapping[str, Any]) -> Optional[int]:
    """Number of classes of a published state dict (from its classifier weight), or None.
    ``state`` maps names to tensors or to shapes."""
    return _dim_of(state, [p for _, lay in _layouts() for p in lay.classifiers], 0)


def published_in_channels(state: Mapping[str, Any]) -> Optional[int]:
    """Input channels of a published state dict (from its first conv weight), or None."""
    return _dim_of(state, [p for _, lay in _layouts() for p in lay.first_convs], 1)


# ------------------------------------------------------------------------------- reading
class _ConfigStandIn:
    """Stand-in for a dict-like configuration class saved inside a checkpoint (yacs'
    ``CfgNode``): it unpickles as a plain ``OrderedDict`` holding the same items."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
        return OrderedDict()


def _inert(*args: Any, **kwargs: Any) -> None:
    raise PublishedCheckpointError("a stand-in for a function saved in a checkpoint was called")


# What the published training scripts save next to the weights, read as inert data.
_SAFE_GLOBALS: List[Any] = [
    argparse.Namespace,
    (_ConfigStandIn, "yacs.config.CfgNode"),
    (_inert, "builtins.input"),
]

_EMA_KEYS = ("state_dict_ema", "model_ema", "ema", "ema_state_dict")
_MODEL_KEYS = ("model", "state_dict", "module", "net")
_PREFIXES = ("module.", "_orig_mod.")


def _torch_load(path: Path) -> Any:
    if not path.is_file():
        raise PublishedCheckpointError(f"published checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader failure means an unreadable file
        msg = str(err).strip().splitlines()
        raise PublishedCheckpointError(
            f"cannot read {path} with torch.load(weights_only=True): "
            f"{msg[0] if msg else type(err).__name__}. If the file holds other pickled objects "
            "and you trust it, extract its state dict first: torch.save(torch.load(path, "
            "weights_only=False)['model'], 'state_dict.pth')"
        ) from err


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def _strip(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    out: Dict[str, torch.Tensor] = {}
    for name, t in state.items():
        short = name
        while short.startswith(_PREFIXES):
            short = short.split(".", 1)[1]
        if short in out:
            raise PublishedCheckpointError(
                f"{name!r} and another entry both become {short!r} without their prefixes"
            )
        out[short] = t
    return out


def read_published(
    checkpoint: Checkpoint, ema: Optional[bool] = None
) -> Tuple[Dict[str, torch.Tensor], str]:
    """The published state dict inside ``checkpoint`` (prefixes removed) and where it was found
    (``"state dict"`` or the dict key).

    ``ema``: None takes the EMA copy when the checkpoint has one (as T-RevSNN's own evaluation
    does), True requires it, False takes the trained weights.
    """
    obj: Any = checkpoint
    if isinstance(checkpoint, (str, os.PathLike)):
        obj = _torch_load(Path(checkpoint))
    if _is_state_dict(obj):
        if ema:
            raise PublishedCheckpointError("ema=True, but the checkpoint is a bare state dict")
        return _strip(obj), "state dict"
    if not isinstance(obj, Mapping):
        raise PublishedCheckpointError(
            f"a published checkpoint is a state dict or a dict holding one, got "
            f"{type(obj).__name__}"
        )
    ema_key = next((k for k in _EMA_KEYS if _is_state_dict(obj.get(k))), None)
    model_key = next((k for k in _MODEL_KEYS if _is_state_dict(obj.get(k))), None)
    if ema and ema_key is None:
        raise PublishedCheckpointError(
            f"ema=True, but the checkpoint holds no EMA state dict (looked for "
            f"{', '.join(_EMA_KEYS)}; it has {', '.join(map(str, obj))})"
        )
    key = ema_key if (ema is None or ema) and ema_key is not None else model_key
    if key is None:
        raise PublishedCheckpointError(
            f"no state dict in the checkpoint: looked for {', '.join(_MODEL_KEYS + _EMA_KEYS)}; "
            f"it has {', '.join(map(str, obj))}"
        )
    return _strip(obj[key]), key


# ------------------------------------------------------------------------------- loading
def published_state_dict(
    model: nn.Module, state: Mapping[str, torch.Tensor]
) -> Dict[str, torch.Tensor]:
    """Our state dict (every name of ``model.state_dict()``) filled from a published one."""
    match = match_published(model, {k: tuple(v.shape) for k, v in state.items()})
    values: Dict[str, torch.Tensor] = {}
    for canon, names in match.sources.items():
        t = state[names[0]]
        for other in names[1:]:  # one shared tensor saved under several names
            o = state[other]
            if o.data_ptr() != t.data_ptr() and not torch.equal(o, t):
                raise PublishedCheckpointError(
                    f"{names[0]} and {other} are one shared tensor in the published model, but "
                    "their values differ in the checkpoint"
                )
        values[canon] = t
    ours = model.state_dict()
    out: Dict[str, torch.Tensor] = {}
    for name, own in ours.items():
        t = values[match.alias[name]]
        out[name] = t.reshape(own.shape) if t.shape != own.shape else t
    return out


def load_published(
    name: str,
    checkpoint: Checkpoint,
    *,
    ema: Optional[bool] = None,
    dtype: Optional[torch.dtype] = None,
    **model_kwargs: Any,
) -> nn.Module:
    """Build the registered model ``name`` and load a checkpoint saved by the published code.

    Args:
        name: a registered model with published code (``revs_resnet21/37``, ``revs_resnet24``,
            ``ms_resnet18/34``, ``revsformer_*``, ``trevsnn_tiny/small`` and their variants).
        checkpoint: a path, a state dict or a dict holding one (see the module docstring).
        ema: None = the EMA copy when present, True = require it, False = the trained weights.
        dtype: the model's floating-point dtype (e.g. ``torch.float64``); default float32.
        model_kwargs: passed to ``create_model``; ``num_classes`` and ``in_channels`` default to
            the checkpoint's.

    Returns the model in eval mode. Raises :class:`PublishedCheckpointError` when the checkpoint
    cannot be read or does not fit (the message lists every misfit).
    """
    state, _ = read_published(checkpoint, ema)
    for key, find in (("num_classes", published_num_classes),
                      ("in_channels", published_in_channels)):
        if key not in model_kwargs and find(state) is not None:
            model_kwargs[key] = find(state)
    model = create_model(name, **model_kwargs)
    if dtype is not None:
        model = model.to(dtype)
    model.load_state_dict(published_state_dict(model, state))
    return model.eval()
