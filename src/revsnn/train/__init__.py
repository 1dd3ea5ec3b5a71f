"""revsnn.train: the ``revsnn train`` command, its config, loop, losses, optimisers and
checkpoints.

::

    from revsnn.train import TrainConfig, run
    summary = run(TrainConfig(epochs=5))     # the main job, shorter
"""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import TrainConfig, apply_overrides, load_config_file
from .interrupt import TrainingInterrupted
from .loop import TrainingDiverged, evaluate, run, run_training
from .loss import column_loss, model_loss, soft_cross_entropy
from .optim import Lamb, ModelEMA, adaptive_clip_grad, build_optimizer, lr_at

__all__ = [
    "CheckpointError", "Lamb", "ModelEMA", "TrainConfig", "TrainingDiverged", "TrainingInterrupted",
    "adaptive_clip_grad", "apply_overrides", "build_optimizer", "column_loss", "evaluate",
    "load_checkpoint", "load_config_file", "lr_at", "model_loss", "run", "run_training",
    "save_checkpoint", "soft_cross_entropy",
]
