"""revsnn.train: the ``revsnn train`` command, its config, loop, losses, optimisers and
checkpoints.

::

    from revsnn.train import TrainConfig, run, fit
    summary = run(TrainConfig(epochs=5))     # the main job, shorter
    summary = fit(model, train_set, test_set, epochs=5, lr=1e-3)   # your model and data
"""

from ..models.objective import column_loss, model_loss, soft_cross_entropy
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import TrainConfig, apply_overrides, load_config_file
from .fit import fit
from .interrupt import TrainingInterrupted
from .loop import TrainingDiverged, evaluate, run, run_training
from .optim import Lamb, adaptive_clip_grad, build_ema, build_optimizer, build_scheduler

__all__ = [
    "CheckpointError", "Lamb", "TrainConfig", "TrainingDiverged", "TrainingInterrupted",
    "adaptive_clip_grad", "apply_overrides", "build_ema", "build_optimizer", "build_scheduler",
    "column_loss", "evaluate", "fit", "load_checkpoint", "load_config_file", "model_loss", "run",
    "run_training", "save_checkpoint", "soft_cross_entropy",
]
