"""Model registry with metadata.

A family registers each variant with one line::

    register_model("revs_resnet37", RevSResNet, FAMILY, "RevSResNet37, n = (1, 2, 3, 2)",
                   blocks=(1, 2, 3, 2))

where ``FAMILY`` (:class:`Family`) carries what every variant of the family shares (name,
paper). Every variant is built the same way -- ``create_model(name, **kwargs)`` calls
``cls(**{**defaults, **kwargs})`` -- and carries :class:`ModelInfo`: family, paper, input kind,
default T, classes, channels and image size, the memory modes it supports, and a one-line
description. ``list_models(pattern, family=...)`` and ``model_info(name)`` read it; training and
the benchmarks read it instead of inspecting builders or classes.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from torch import nn

__all__ = [
    "Family", "ModelInfo", "register_model", "create_model", "list_models", "model_info",
    "families",
]


@dataclass(frozen=True)
class Family:
    """What every variant of a model family shares."""

    name: str
    paper: str
    description: str = ""


@dataclass(frozen=True)
class ModelInfo:
    """Metadata of one registered model (``revsnn.model_info(name)``)."""

    name: str
    family: str
    paper: str
    description: str
    input: str  # "image" (static images only), "image+frames" or "frames" (event data)
    T: int
    num_classes: int
    in_channels: int
    image_size: int
    memory_modes: Tuple[str, ...]
    default_memory_mode: str
    cls: type = field(repr=False, compare=False)
    defaults: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    #: how the family's published code names its parameters
    #: (:class:`revsnn.models.published.PublishedLayout`), ``None`` without published code
    published: Any = field(default=None, repr=False, compare=False)

    @property
    def reversible(self) -> bool:
        return "reversible" in self.memory_modes

    def build(self, **kwargs) -> nn.Module:
        """``cls(**{**defaults, **kwargs})``; unknown arguments are a ``ValueError`` naming the
        arguments the family takes."""
        args = {**self.defaults, **kwargs}
        accepted = _accepted(self.cls)
        unknown = sorted(k for k in args if k not in accepted)
        if unknown:
            raise ValueError(
                f"model {self.name!r} does not take the argument(s) {', '.join(unknown)}; "
                f"{self.cls.__name__} takes {', '.join(sorted(accepted))}"
            )
        return self.cls(**args)


_REGISTRY: Dict[str, ModelInfo] = {}


def _accepted(cls: type) -> List[str]:
    params = inspect.signature(cls.__init__).parameters
    return [k for k, p in params.items() if k != "self" and p.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]


def _default(cls: type, defaults: Dict[str, Any], key: str) -> Any:
    if key in defaults:
        return defaults[key]
    p = inspect.signature(cls.__init__).parameters.get(key)
    if p is None or p.default is inspect.Parameter.empty:
        raise ValueError(f"{cls.__name__} has no default for {key!r}: give it at registration")
    return p.default


def register_model(name: str, cls: type, family: Family, description: str,
                   image_size: int = 32, input: Optional[str] = None,
                   published: Any = None, **defaults: Any) -> ModelInfo:
    """Register ``name`` as ``cls(**defaults)`` with its metadata (see the module docstring).
    ``input`` defaults to the class's (``"image"`` for image-only models, else
    ``"image+frames"``; give ``"frames"`` for event-data variants). ``published``: the
    family's :class:`~revsnn.models.published.PublishedLayout` when published code with
    checkpoints exists (``revsnn.load_published`` reads them)."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    from ..reversible.mode import MemoryMode

    modes = tuple(m.value for m in getattr(cls, "supported_modes", tuple(MemoryMode)))
    if input is None:
        input = "image+frames" if getattr(cls, "takes_frames", True) else "image"
    if input not in ("image", "image+frames", "frames"):
        raise ValueError(f"input must be 'image', 'image+frames' or 'frames', got {input!r}")
    mode = MemoryMode.parse(_default(cls, defaults, "memory_mode")).value
    info = ModelInfo(
        name=name, family=family.name, paper=family.paper, description=description, input=input,
        T=int(_default(cls, defaults, "T")),
        num_classes=int(_default(cls, defaults, "num_classes")),
        in_channels=int(_default(cls, defaults, "in_channels")),
        image_size=int(image_size), memory_modes=modes, default_memory_mode=mode, cls=cls,
        defaults=dict(defaults), published=published,
    )
    _REGISTRY[name] = info
    return info


def _ensure_loaded() -> None:
    # Importing the models package registers every family.
    importlib.import_module("revsnn.models")


def list_models(pattern: str = "*", family: Optional[str] = None) -> List[str]:
    """Registered model names matching a shell-style ``pattern`` (and ``family``), sorted."""
    _ensure_loaded()
    return sorted(
        n for n, info in _REGISTRY.items()
        if fnmatch.fnmatch(n, pattern) and (family is None or info.family == family)
    )


def families() -> List[str]:
    """The registered families, sorted."""
    _ensure_loaded()
    return sorted({info.family for info in _REGISTRY.values()})


def model_info(name: str) -> ModelInfo:
    """The metadata of a registered model; ``ValueError`` (with close names) otherwise."""
    _ensure_loaded()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown model {name!r}{hint} (revsnn.list_models() lists all {len(_REGISTRY)})"
        )
    return _REGISTRY[name]


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model, e.g. ``create_model("trevsnn_tiny", num_classes=10, T=4)``."""
    return model_info(name).build(**kwargs)
