"""Model families; importing this package registers every model (one line per family)."""

from . import (  # noqa: F401
    msresnet,
    pararevsnn,
    revmlp,
    revsformer,
    revsresnet,
    spikingformer,
    trevsnn,
    trevsnn_bptt,
)
from .registry import create_model, families, list_models, model_info, register_model

__all__ = ["create_model", "families", "list_models", "model_info", "register_model"]
