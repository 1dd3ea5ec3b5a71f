"""Model families; importing this package registers every model."""

from . import pararevsnn  # noqa: F401
from . import revsresnet, revsformer, baselines  # noqa: F401
from . import trevsnn  # noqa: F401
from .registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
