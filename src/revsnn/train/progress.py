"""A dependency-free text progress bar on stderr (loss, accuracy, images/s, ETA).

ETA: the mean time of this epoch's steps so far times the steps left in the epoch, and (``run``)
in the run (``later_steps`` after this epoch; evaluation time not included).

On a terminal the bar redraws in place (at most every 0.1 s) and stays as the epoch's last
state. When stderr is not a terminal (logs, CI) a plain line is written at most every
``log_every`` seconds (60 by default), so short epochs write nothing: the one-line epoch summary
that the training loop prints on stdout carries the same numbers.
"""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

__all__ = ["ProgressBar"]


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


class ProgressBar:
    def __init__(
        self, total: int, desc: str, enabled: bool = True, stream: Optional[TextIO] = None,
        width: int = 24, log_every: float = 60.0, initial: int = 0, later_steps: int = 0,
    ) -> None:
        self.total = max(1, int(total))
        self.initial = int(initial)  # steps already done (a resumed epoch)
        self.later = int(later_steps)
        self.desc = desc
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.log_every = float(log_every)
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self._last = 0.0
        self._logged = self.start
        self.done = self.initial
        self.images = 0
        self.loss_sum = 0.0
        self.correct = 0.0

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def update(self, images: int, loss: float, correct: float) -> None:
        self.done += 1
        self.images += images
        self.loss_sum += loss * images
        self.correct += correct
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.tty:
            if now - self._last >= 0.1 or self.done == self.total:
                self._last = now
                self.stream.write("\r" + self.render())
                self.stream.flush()
        elif now - self._logged >= self.log_every and self.done < self.total:
            self._logged = now
            self.stream.write(self.render() + "\n")
            self.stream.flush()

    def render(self) -> str:
        frac = min(1.0, self.done / self.total)
        fill = int(round(frac * self.width))
        bar = "#" * fill + "-" * (self.width - fill)
        n = max(1, self.images)
        rate = self.images / max(self.elapsed, 1e-9)
        return (
            f"{self.desc} [{bar}] {self.done}/{self.total} loss {self.loss_sum / n:.4f} "
            f"acc {100.0 * self.correct / n:5.1f}% {rate:,.0f} img/s{self.eta()}"
        )

    def eta(self) -> str:
        ran = self.done - self.initial
        if ran <= 0:
            return ""
        per_step = self.elapsed / ran
        left = max(0, self.total - self.done)
        s = f" ETA {_clock(per_step * left)}"
        if self.later:
            s += f" (run {_clock(per_step * (left + self.later))})"
        return s

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\r" + self.render() + "\n")
            self.stream.flush()
