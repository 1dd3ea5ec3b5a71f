"""Expected failures of the command line as one line each (exit code 2).

:func:`expected_error` maps an exception a user can cause or fix -- a bad file or value, out of
memory on the CPU or a GPU, a full disk or a file-size limit, a number too large -- to the one
line ``revsnn`` prints on stderr; anything else (a bug) is left alone (``None``) so that its
traceback is seen. Every entry point (``revsnn train|eval|plan|bench|convert|export|models``)
and the ``revsnn`` dispatcher use it. No imports beyond the standard library and torch.
"""

from __future__ import annotations

import argparse
import errno
from typing import Optional

__all__ = ["OneLineParser", "UsageError", "expected_error", "is_out_of_memory", "one_line"]

_MEMORY_HINT = ("lower --batch-size or use --memory-mode reversible (or checkpoint), or plan "
                "the modes for a budget with --memory-budget")
_DISK = {errno.ENOSPC: "no space left on the device", errno.EFBIG: "file too large",
         errno.EDQUOT: "disk quota exceeded"}


def one_line(text: object) -> str:
    return " ".join(str(text).split())


class UsageError(ValueError):
    """A command line argparse refuses (unknown flag, bad value, missing argument)."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but an error is one line (a :class:`UsageError`, so the command exits 2)."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def is_out_of_memory(err: BaseException) -> Optional[str]:
    """``"cuda"`` / ``"cpu"`` when ``err`` is an allocation failure there, else None."""
    try:
        import torch

        if isinstance(err, torch.OutOfMemoryError):
            return "cuda"
    except (ImportError, AttributeError):  # pragma: no cover - torch is a dependency
        pass
    if isinstance(err, MemoryError):
        return "cpu"
    if isinstance(err, RuntimeError):
        text = str(err)
        if "DefaultCPUAllocator: can't allocate memory" in text:
            return "cpu"
        if "CUDA out of memory" in text:
            return "cuda"
    return None


def expected_error(err: BaseException) -> Optional[str]:
    """The one line for an expected failure, or None for anything else."""
    if isinstance(err, UsageError):
        return one_line(err)
    where = is_out_of_memory(err)
    if where == "cuda":
        return f"error: out of GPU memory; {_MEMORY_HINT}"
    if where == "cpu":
        return f"error: out of memory (CPU: the allocation failed); {_MEMORY_HINT}"
    if isinstance(err, OSError) and err.errno in _DISK:
        name = f" {err.filename}" if err.filename else ""
        return one_line(f"error: cannot write{name}: {_DISK[err.errno]} ({err.strerror}); "
                        "free space or choose another --out")
    if isinstance(err, OSError) and str(err).startswith("[Errno"):  # raw from the system
        name = f" {err.filename}" if err.filename else ""
        return one_line(f"error: cannot access{name}: {err.strerror}")
    if isinstance(err, OverflowError):
        return one_line(f"error: a number is too large ({err})")
    if isinstance(err, (ValueError, TypeError, OSError, ImportError)):
        return one_line(f"error: {err}")
    return None
