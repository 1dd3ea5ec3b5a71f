"""Checkpoints: atomic writes, safe loading, clear errors.

A checkpoint is a dict of tensors and plain Python values (no pickled classes)::

    {"format": "revsnn-checkpoint", "version": 1, "config": {...}, "epoch": int,
     "global_step": int, "model": state_dict, "optimizer": state_dict, "ema": state_dict|None,
     "scaler": state_dict|None, "rng": {"torch": ByteTensor, "cuda": [ByteTensor]},
     "best_acc": float, "best_epoch": int, "epoch_times": [float], "memory": {...},
     "step_in_epoch": int, "epoch_state": {...} | None, "last_metrics": {...}}

``epoch`` counts completed epochs; a checkpoint written inside an epoch (``save_every``, or at
an interrupt) also holds ``step_in_epoch`` (steps of epoch ``epoch + 1`` already done) and
``epoch_state`` (that epoch's augmentation generator, running sums and training time), so a
resumed run continues from that step exactly as the uninterrupted run would.

It is written to ``<name>.tmp-<pid>`` and renamed over the target (``os.replace``), so a crash
never leaves a half-written checkpoint, and read with ``torch.load(weights_only=True)``, which
refuses arbitrary pickled objects.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, Union

import torch
from torch import nn

from .checkpoint_check import CheckpointError, check_loaded

__all__ = [
    "CheckpointError", "load_checkpoint", "load_model_state", "save_checkpoint",
    "write_text_atomic",
]

FORMAT = "revsnn-checkpoint"
VERSION = 1


class _Recording:
    """A file whose write errors are kept: ``torch.save`` turns an ``OSError`` of the file
    (disk full, file too large) into an opaque ``RuntimeError``; the original names the file."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.f.flush()


def _write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """``write(file)`` into ``<name>.tmp-<pid>`` in the same folder, fsync, rename over ``path``:
    readers see the old file or the new one, never half of one. A failed write (disk full, file
    too large) is an ``OSError`` naming ``path``, and the temporary file is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            rec = _Recording(f)
            try:
                write(rec)  # type: ignore[arg-type]
                f.flush()
                os.fsync(f.fileno())
            except (OSError, RuntimeError) as err:
                cause = rec.error if rec.error is not None else err
                if isinstance(cause, OSError) and cause.errno is not None:
                    raise OSError(cause.errno, cause.strerror, str(path)) from None
                raise
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_text_atomic(path: Union[str, Path], text: str) -> Path:
    """Replace a text file (summary.json, metrics.csv, config.yaml) atomically."""
    return _write_atomic(Path(path), lambda f: f.write(text.encode("utf-8")))


def save_checkpoint(path: Union[str, Path], payload: Dict[str, Any]) -> Path:
    """Write ``payload`` atomically (temp file in the same folder, fsync, rename)."""
    data = {"format": FORMAT, "version": VERSION, **payload}
    return _write_atomic(Path(path), lambda f: torch.save(data, f))


def load_checkpoint(path: Union[str, Path], map_location: Any = "cpu",
                    resume: bool = False) -> Dict[str, Any]:
    """Read a revsnn checkpoint with ``weights_only=True``; errors name the file. The entries
    are checked (types, finite tensors; with ``resume`` also the training state a resumed run
    needs, see :mod:`revsnn.train.checkpoint_check`)."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist; pass a run folder that holds checkpoint.pt or "
            "a checkpoint file written by revsnn train"
        )
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader failure means a bad file
        # torch's own text may advise weights_only=False: wrong for a file of ours (a revsnn
        # checkpoint holds only tensors and plain values), so only the error type is kept.
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is corrupted, truncated or not a revsnn "
            f"checkpoint ({type(err).__name__}); resume from another checkpoint of the run "
            "(e.g. best.pt) or start a new run"
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
    check_loaded(data, path, resume)
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
