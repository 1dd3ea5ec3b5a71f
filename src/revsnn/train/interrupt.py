"""Ctrl-C during training: finish the current step, save, stop.

A first SIGINT only sets :attr:`StopRequest.requested`; the training loop looks at it after
every optimiser step (all-reduced with the step's NaN check, so every process stops at the
same step) and during evaluation, writes a checkpoint at that point and raises
:class:`TrainingInterrupted`. A second SIGINT raises ``KeyboardInterrupt`` at once (the last
checkpoint written stays). The handler is installed only in the main thread (Python delivers
signals there); elsewhere a ``KeyboardInterrupt`` is caught by the loop and the last checkpoint
is kept.
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Callable, Dict, Optional

__all__ = ["StopRequest", "TrainingInterrupted"]


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C; ``summary`` is what summary.json records (``status:
    interrupted``), ``resume`` the command that continues the run (or None)."""

    def __init__(self, message: str, summary: Optional[Dict[str, Any]] = None,
                 resume: Optional[str] = None) -> None:
        super().__init__(message)
        self.message, self.summary, self.resume = message, summary, resume

    def __str__(self) -> str:
        return self.message


class StopRequest:
    """Context manager: while active, the first SIGINT requests a stop instead of raising."""

    def __init__(self, log: Optional[Callable[[str], None]] = None) -> None:
        self.requested = False
        self.log = log
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        if self.requested:  # second Ctrl-C: stop now
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = True
        if self.log is not None:
            self.log("interrupt: finishing the current step, then saving a checkpoint "
                     "(Ctrl-C again to stop at once and keep the last checkpoint)")

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False
