"""The run folder: checked before anything is built, created only when training starts, every
results file replaced atomically.

- :meth:`RunFolder.check` (before data, model and memory measurement): ``--out`` must not be a
  file or lie under one, and it must be new or empty -- a folder belongs to one run: a folder
  holding a run (or other files) is refused, except the folder of the run being resumed.
- :meth:`RunFolder.claim` (right before the first step): makes the folder, takes its exclusive
  lock (:class:`~revsnn.train.ownership.FolderLock`, held until :meth:`RunFolder.release`),
  removes temporary files a killed write left, checks again under the lock and, for a new run,
  writes ``config.yaml`` and the ``metrics.csv`` header; if that fails (read-only file system,
  no permission) the folders it made are removed again and a :class:`RunFolderError` names the
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
from .ownership import LOCK_NAME, FolderInUse, FolderLock, clean_orphans, foreign_entries

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
        self.lock = FolderLock(self.path)
        self.fresh = False  # claimed empty for a new run: everything in it is this run's

    # ------------------------------------------------------------------ before anything
    def check(self, resume: bool, source: Optional[Path] = None) -> None:
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
        self.check_owner(source)

    _RUN_FILES = ("checkpoint.pt", "config.yaml", "metrics.csv", "summary.json", "best.pt")

    def check_owner(self, source: Optional[Path]) -> None:
        """``--out`` must be new or empty, or the folder of the run being resumed (``source``,
        the resumed checkpoint's folder)."""
        p = self.path
        if source is not None and p.is_dir() and p.resolve() == Path(source).resolve():
            return
        held = foreign_entries(p)
        if not held:
            return
        run = any(n in self._RUN_FILES for n in held)
        names = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
        if source is not None and run:
            raise RunFolderError(
                f"--out {p} holds another run ({names}); --resume {source} continues into its "
                f"own folder or into a new or empty --out (to continue the run in {p}: "
                f"--resume {p})"
            )
        what = "another run" if run else "other files"
        raise RunFolderError(
            f"--out {p} already holds {what} ({names}); a run folder belongs to one run: "
            "choose a new or empty --out"
        )

    def load_metrics(self, upto_epoch: int) -> None:
        """Keep the rows of the epochs a resumed checkpoint has done."""
        f = self.path / "metrics.csv"
        if f.exists():
            with open(f, newline="") as fh:
                self.rows = [r for r in csv.DictReader(fh) if int(r["epoch"]) <= upto_epoch]

    # ------------------------------------------------------------------ writing
    def create(self, cfg: TrainConfig) -> None:
        """Make and claim the folder of a new run with its config and the metrics header."""
        self.claim(cfg, None, new=True)

    def claim(self, cfg: TrainConfig, source: Optional[Path], new: bool) -> None:
        """Make the folder, lock it, clean orphaned temporary files and check it again under
        the lock; a new run also writes its config and the metrics header."""
        missing = self.path
        while not missing.parent.exists() and missing.parent != missing:
            missing = missing.parent
        try:
            try:  # only a folder this process made is ever removed again
                self.path.mkdir(parents=True)
                self.created = missing
            except FileExistsError:
                if not self.path.is_dir():
                    raise
            self.lock.acquire()
            clean_orphans(self.path)
            self.check_owner(source)
            self.fresh = new and not foreign_entries(self.path)
            if new:
                self.write_config(cfg)
                self.write_metrics()
        except (OSError, FolderInUse, RunFolderError) as err:
            if isinstance(err, FolderInUse):  # another run holds it: touch nothing
                self.created, self.fresh = None, False
            self.remove_created()
            if not isinstance(err, OSError):
                raise
            reason = err.strerror or type(err).__name__
            raise RunFolderError(
                f"cannot write the run folder {self.path}: {reason}; choose a writable --out"
            ) from None

    def release(self) -> None:
        """Drop the folder's lock (the run writes nothing more)."""
        self.lock.release()

    def remove_created(self) -> None:
        """Remove what this run made (a run that failed before saving anything): its folder,
        or its files in an empty folder it was given; then the lock is released. Parent
        folders it made go only when empty."""
        if self.created is not None and self.path.is_dir():
            shutil.rmtree(self.path, ignore_errors=True)
            parent = self.path.parent
            while self.created in (parent, *parent.parents) and parent != parent.parent:
                try:
                    parent.rmdir()  # only when empty: another run may have come meanwhile
                except OSError:
                    break
                parent = parent.parent
        elif self.fresh and self.path.is_dir():  # an empty folder given: empty it again
            for f in self.path.iterdir():
                if f.name == LOCK_NAME:
                    continue
                if f.is_dir():
                    shutil.rmtree(f, ignore_errors=True)
                else:
                    f.unlink(missing_ok=True)
        self.release()
        self.created, self.fresh = None, False

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
