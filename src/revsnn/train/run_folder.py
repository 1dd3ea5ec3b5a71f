"""The run folder: checked before anything is built, created only when training starts, every
results file replaced atomically.

- :meth:`RunFolder.check` (before data, model and memory measurement): ``--out`` must not be a
  file or lie under one, and a new run must not overwrite a run that holds a checkpoint.
- :meth:`RunFolder.create` (a new run, right before its first step): makes the folder, writes
  ``config.yaml`` and the ``metrics.csv`` header; if that fails (read-only file system, no
  permission) the folders it made are removed again and a :class:`RunFolderError` names the
  path and what to do.
- ``config.yaml``, ``metrics.csv`` and ``summary.json`` are written to a temporary file and
  renamed over the old one, so a crash or a Ctrl-C never leaves half a file, and a resumed run
  writes nothing until it has done work of its own.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

from .checkpoint import write_text_atomic
from .config import TrainConfig, config_text

__all__ = ["METRIC_FIELDS", "RunFolder", "RunFolderError"]

METRIC_FIELDS = [
    "epoch", "step", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "epoch_time_s",
    "images_per_s",
]


class RunFolderError(ValueError):
    """``--out`` cannot hold a run (a file in the way, read-only, no permission, taken)."""


class RunFolder:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.created: Optional[Path] = None  # the outermost folder this run created
        self.rows: List[Dict[str, Any]] = []

    # ------------------------------------------------------------------ before anything
    def check(self, resume: bool) -> None:
        p = self.path
        if p.exists() and not p.is_dir():
            raise RunFolderError(f"--out {p} is a file, not a folder; choose another --out")
        anc = p
        while not anc.exists() and anc != anc.parent:
            anc = anc.parent
        if anc.exists() and not anc.is_dir():
            raise RunFolderError(
                f"--out {p} lies under {anc}, which is a file, not a folder; choose another --out"
            )
        if not resume and (p / "checkpoint.pt").exists():
            raise RunFolderError(
                f"run folder {p} already holds a checkpoint; continue it with --resume {p} or "
                "choose another --out"
            )

    def load_metrics(self, upto_epoch: int) -> None:
        """Keep the rows of the epochs a resumed checkpoint has done."""
        f = self.path / "metrics.csv"
        if f.exists():
            with open(f, newline="") as fh:
                self.rows = [r for r in csv.DictReader(fh) if int(r["epoch"]) <= upto_epoch]

    # ------------------------------------------------------------------ writing
    def create(self, cfg: TrainConfig) -> None:
        """Make the folder of a new run with its config and the metrics header."""
        missing = self.path
        while not missing.parent.exists() and missing.parent != missing:
            missing = missing.parent
        existed = self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            if not existed:
                self.created = missing
            self.write_config(cfg)
            self.write_metrics()
        except OSError as err:
            self.remove_created()
            reason = err.strerror or type(err).__name__
            raise RunFolderError(
                f"cannot write the run folder {self.path}: {reason}; choose a writable --out"
            ) from None

    def remove_created(self) -> None:
        if self.created is not None and self.created.exists():
            shutil.rmtree(self.created, ignore_errors=True)
        self.created = None

    def write_config(self, cfg: TrainConfig) -> None:
        write_text_atomic(self.path / "config.yaml", config_text(cfg))

    def add_metrics(self, row: Dict[str, Any]) -> None:
        self.rows.append({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self.write_metrics()

    def write_metrics(self) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows(self.rows)
        write_text_atomic(self.path / "metrics.csv", buf.getvalue())

    def write_summary(self, summary: Dict[str, Any]) -> None:
        write_text_atomic(self.path / "summary.json", json.dumps(summary, indent=2) + "\n")

    def read_summary(self) -> Optional[Dict[str, Any]]:
        f = self.path / "summary.json"
        try:
            return json.loads(f.read_text())
        except (OSError, ValueError):
            return None
