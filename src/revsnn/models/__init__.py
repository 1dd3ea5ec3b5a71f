"""Model families; importing this package registers every model."""

from . import baselines, pararevsnn, revsformer, revsresnet, trevsnn  # noqa: F401
from .registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
