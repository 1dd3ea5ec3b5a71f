"""Checkpoints: atomic writes, safe loading, clear errors.

A checkpoint is a dict of tensors and plain Python values (no pickled classes)::

    {"format": "revsnn-checkpoint", "version": 1, "config": {...}, "epoch": int,
     "global_step": int, "model": state_dict, "optimizer": state_dict, "ema": state_dict|None,
     "scaler": state_dict|None, "rng": {"torch": ByteTensor, "cuda": [ByteTensor]},
     "best_acc": float, "best_epoch": int, "epoch_times": [float], "memory": {...}}

It is written to ``<name>.tmp-<pid>`` and renamed over the target (``os.replace``), so a crash
never leaves a half-written checkpoint, and read with ``torch.load(weights_only=True)``, which
refuses arbitrary pickled objects.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Union

import torch
from torch import nn

__all__ = ["CheckpointError", "load_checkpoint", "load_model_state", "save_checkpoint"]

FORMAT = "revsnn-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupted, or does not match the model."""


def save_checkpoint(path: Union[str, Path], payload: Dict[str, Any]) -> Path:
    """Write ``payload`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    data = {"format": FORMAT, "version": VERSION, **payload}
    try:
        with open(tmp, "wb") as f:
            torch.save(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path: Union[str, Path], map_location: Any = "cpu") -> Dict[str, Any]:
    """Read a revsnn checkpoint with ``weights_only=True``; errors name the file."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader failure means a bad file
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is corrupted, truncated or not a "
            f"checkpoint ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a revsnn checkpoint (no '{FORMAT}' marker)")
    if data.get("version", 0) > VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {data['version']}, newer than this revsnn "
            f"understands ({VERSION})"
        )
    for key in ("config", "model"):
        if key not in data:
            raise CheckpointError(f"{path} lacks the '{key}' entry")
    data["path"] = str(path)
    return data


def load_model_state(
    model: nn.Module, state: Dict[str, torch.Tensor], path: Union[str, Path]
) -> None:
    """``model.load_state_dict(state)`` with a readable error naming the file and the mismatch."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:3])})")
        raise CheckpointError(
            f"checkpoint {path} does not match the model {type(model).__name__}: "
            + ", ".join(parts)
        )
    model.load_state_dict(state)
