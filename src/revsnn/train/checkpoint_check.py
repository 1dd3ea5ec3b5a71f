"""What a loaded checkpoint must hold before anything uses it.

Every checkpoint: ``config`` a mapping, ``model`` a mapping of tensors, and the model, EMA and
optimiser tensors finite (a state holding NaN or inf is never a "good" checkpoint: revsnn does
not write one, and one written elsewhere is refused rather than trained or evaluated on).
:func:`stored_config` turns a checkpoint's config into a checked
:class:`~revsnn.train.config.TrainConfig` (``revsnn eval``: names, ranges, finite values, ``T``
at most :data:`MAX_T`; the caller replaces machine-specific keys such as ``data_dir``).
A checkpoint to resume from also needs the training state: ``epoch``, ``global_step``,
``best_epoch`` integers >= 0 (``best_epoch`` may be -1), ``best_acc`` a number and
``optimizer`` a mapping. Every refusal is a :class:`~revsnn.train.checkpoint.CheckpointError`
naming the file and the entry (:class:`CheckpointError`, also exported by
:mod:`revsnn.train.checkpoint`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping

import torch

from .finite import nonfinite_in

__all__ = ["MAX_T", "CheckpointError", "check_loaded", "stored_config"]

#: the largest number of time steps a stored config may ask for (the config's own range)
MAX_T = 100_000


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupted, or does not match the model."""


def _int(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def check_loaded(data: Dict[str, Any], path: Path, resume: bool = False) -> None:
    if not isinstance(data["config"], Mapping):
        raise CheckpointError(f"checkpoint {path}: the stored config is a "
                              f"{type(data['config']).__name__}, not a mapping of config keys")
    if isinstance(data.get("sharded"), Mapping):
        # a --parallel fsdp run's file: the tensors are in its DCP folder, matched against the
        # model when loaded (revsnn.train.dcp); the counters are checked here as for any file
        if resume:
            for key in ("epoch", "global_step", "best_epoch"):
                if not _int(data.get(key), -1):
                    raise CheckpointError(f"checkpoint {path}: '{key}' must be an integer, "
                                          f"got {data.get(key)!r}")
        return
    model = data["model"]
    if not isinstance(model, Mapping) or not all(torch.is_tensor(v) for v in model.values()):
        raise CheckpointError(f"checkpoint {path}: the 'model' entry is not a state dict of "
                              "tensors")
    if resume:
        wants = {"epoch": 0, "global_step": 0, "best_epoch": -1}
        for key, low in wants.items():
            if key not in data:
                raise CheckpointError(f"checkpoint {path} lacks '{key}', which resuming needs; "
                                      "evaluate it with revsnn eval or start a new run")
            if not _int(data[key], low):
                raise CheckpointError(f"checkpoint {path}: '{key}' must be an integer >= {low}, "
                                      f"got {data[key]!r}")
        if not isinstance(data.get("best_acc"), (int, float)):
            raise CheckpointError(f"checkpoint {path}: 'best_acc' must be a number, got "
                                  f"{data.get('best_acc')!r}")
        if not isinstance(data.get("optimizer"), Mapping):
            raise CheckpointError(f"checkpoint {path} lacks the optimiser state, which "
                                  "resuming needs; evaluate it with revsnn eval or start a new run")
    for key in ("model", "ema", "optimizer"):
        if data.get(key) is None:
            continue
        bad = nonfinite_in(data[key], key)
        if bad is not None:
            raise CheckpointError(
                f"checkpoint {path} holds non-finite values ({bad}); it is not a usable state: "
                "resume from an earlier checkpoint or start a new run"
            )


def stored_config(ck: Dict[str, Any], replace: Dict[str, Any]) -> Any:
    """The checked config stored in checkpoint ``ck`` with the keys of ``replace`` set."""
    from .config import TrainConfig, apply_overrides, validate_config
    from .finite import check_hyperparameters

    path = ck.get("path")
    try:
        stored = {k: v for k, v in ck["config"].items() if k not in replace}
        cfg = apply_overrides(TrainConfig.from_dict(stored), replace)
        validate_config(cfg)
        check_hyperparameters(cfg)
        if not 1 <= cfg.T <= MAX_T:
            raise ValueError(f"T must be in 1..{MAX_T}, got {cfg.T}")
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"checkpoint {path}: stored config: {err}") from None
    return cfg
