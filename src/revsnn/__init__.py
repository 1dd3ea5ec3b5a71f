"""revsnn: reversible spiking neural networks with exact-gradient memory modes.

Public API::

    import revsnn
    revsnn.list_models("*", family="trevsnn")
    revsnn.model_info("trevsnn_tiny")   # family, paper, input kind, T, image size, memory modes
    m = revsnn.create_model("trevsnn_tiny", num_classes=10, T=4, memory_mode="reversible")
    m.set_memory_mode("none")   # "none" | "checkpoint" | "reversible" | {part pattern: mode}
    m = revsnn.load_published("revs_resnet37", "checkpoint.pth")  # the published code's weights
"""

from .models.published import load_published
from .models.registry import create_model, families, list_models, model_info, register_model
from .reversible.mode import MemoryMode

__version__ = "0.1.0"

__all__ = [
    "MemoryMode", "create_model", "families", "list_models", "load_published", "model_info",
    "register_model", "__version__",
]
