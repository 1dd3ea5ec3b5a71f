"""Who may write where: one run per run folder, no silent replacement of an output file.

- :class:`FolderLock`: an exclusive ``fcntl.flock`` on ``<folder>/.revsnn-lock`` held while a
  run writes its folder. A second process asking for it is refused at once (the lock file names
  the holder's pid). The kernel drops the lock when its holder dies, so a killed run never
  leaves the folder locked. On a file system without ``flock`` no lock is taken.
- :func:`clean_orphans`: ``<name>.tmp-<pid>`` files (the atomic writer's temporary files,
  :func:`revsnn.train.checkpoint.save_checkpoint`) whose writer ``pid`` no longer runs are what
  a killed write left behind; they are removed on the next start. A live pid's file is kept.
- :func:`foreign_entries`: what a folder holds besides the lock and such orphans (a new run
  needs a folder that holds nothing).
- :func:`refuse_existing`: the rule of the single-file outputs (``revsnn convert``, ``revsnn
  export``): an existing output is replaced only with ``--force``, and never a directory.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import List, Optional, Union

__all__ = ["FolderLock", "FolderInUse", "LOCK_NAME", "clean_orphans", "foreign_entries",
           "pid_alive", "refuse_existing"]

LOCK_NAME = ".revsnn-lock"
_TMP = re.compile(r"^.+\.tmp-(\d+)$")


class FolderInUse(ValueError):
    """Another process holds the folder's lock."""


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one we may not signal counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def _orphan(name: str) -> bool:
    m = _TMP.match(name)
    return m is not None and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1)))


def clean_orphans(folder: Union[str, Path]) -> List[Path]:
    """Remove the ``*.tmp-<pid>`` files of dead writers in ``folder``; returns them."""
    folder = Path(folder)
    removed: List[Path] = []
    if not folder.is_dir():
        return removed
    for f in folder.iterdir():
        if _orphan(f.name) and f.is_file():
            try:
                f.unlink()
                removed.append(f)
            except OSError:
                pass
    return removed


def foreign_entries(folder: Union[str, Path]) -> List[str]:
    """Names in ``folder`` other than its lock file and orphaned temporary files (sorted)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(f.name for f in folder.iterdir()
                  if f.name != LOCK_NAME and not _orphan(f.name))


class FolderLock:
    """An exclusive, non-blocking lock on a folder (see the module docstring)."""

    def __init__(self, folder: Union[str, Path]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> FolderLock:
        import fcntl

        if self._fd is not None:
            return self
        for _ in range(5):  # the file may be replaced between open and lock: retry
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    # a file system without flock (some network mounts): no lock to take
                    os.close(fd)
                    self.path.unlink(missing_ok=True)
                    return self
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                os.close(fd)
                who = f" (pid {holder})" if holder.isdigit() else ""
                raise FolderInUse(
                    f"run folder {self.folder} is in use by another revsnn process{who}; wait "
                    "for it to finish or choose another --out"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed the file after we opened it
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self._fd = fd
            return self
        raise FolderInUse(f"run folder {self.folder}: cannot take its lock {self.path}")

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink()
        except OSError:
            pass
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def refuse_existing(path: Union[str, Path], force: bool = False, option: str = "OUT") -> Path:
    """Check that ``path`` may be written as a single-file output: not a directory, not lying
    under a file, and not an existing file unless ``force``. Orphaned temporary files of
    earlier writes of ``path`` are removed. Returns ``path``; raises ``ValueError``."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path} is a directory; give a file name")
    anc = path.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        raise ValueError(f"cannot write {option} {path}: {anc} is a file, not a folder")
    if path.exists() and not force:
        raise ValueError(f"{option} {path} already exists; pass --force to replace it")
    if path.parent.is_dir():
        for f in path.parent.glob(f"{path.name}.tmp-*"):
            if _orphan(f.name):
                try:
                    f.unlink()
                except OSError:
                    pass
    return path
