"""Model registry: ``@register_model``, ``create_model(name, **kw)``, ``list_models(pattern)``."""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from typing import Callable, Dict, List

from torch import nn

__all__ = ["register_model", "create_model", "list_models", "model_entrypoint"]

_REGISTRY: Dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model builder under its function name."""
    name = fn.__name__
    if name in _REGISTRY and _REGISTRY[name] is not fn:
        raise ValueError(f"model {name!r} is registered twice")
    _REGISTRY[name] = fn
    return fn


def _ensure_loaded() -> None:
    # Importing the models package registers every family.
    importlib.import_module("revsnn.models")


def list_models(pattern: str = "*") -> List[str]:
    """Registered model names matching a shell-style ``pattern``, sorted."""
    _ensure_loaded()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
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
    return model_entrypoint(name)(**kwargs)
