"""Training progress on stderr: a tqdm bar on a terminal, plain lines otherwise.

- On a terminal with tqdm installed (the ``tqdm`` extra): a tqdm bar per epoch (steps, rate,
  elapsed and tqdm's ETA for the epoch), with loss, accuracy, images/s and the ETA of the whole
  run in its postfix; the bar stays as the epoch's last state.
- Without tqdm, or when stderr is not a terminal (logs, CI): a plain line at most every
  ``log_every`` seconds (10 s on a terminal, 60 s otherwise), so short epochs write nothing
  there; the one-line epoch summary that the training loop prints on stdout carries the same
  numbers.

ETA of the run: the mean time of this epoch's steps so far times the steps left in the epoch and
in the epochs after it (``later_steps``); evaluation time is not included.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Optional, TextIO

__all__ = ["Progress", "make_progress"]


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


class Progress:
    """Running loss / accuracy / rate of one epoch; subclasses decide how to show them."""

    def __init__(self, total: int, desc: str, initial: int = 0, later_steps: int = 0) -> None:
        self.total, self.desc = max(1, int(total)), desc
        self.initial, self.later = int(initial), int(later_steps)
        self.done = self.initial
        self.images, self.loss_sum, self.correct = 0, 0.0, 0.0
        self.start = time.perf_counter()
        self._compile_clock: Any = None
        self._compile_start = 0.0

    @property
    def compile_clock(self) -> Any:
        """A clock whose ``seconds`` count compile time (``--compile``): left out of the rate
        and the ETA, shown apart."""
        return self._compile_clock

    @compile_clock.setter
    def compile_clock(self, clock: Any) -> None:
        self._compile_clock = clock
        self._compile_start = 0.0 if clock is None else clock.seconds

    @property
    def compiling(self) -> float:
        """Seconds spent compiling during this epoch."""
        c = self._compile_clock
        return 0.0 if c is None else c.seconds - self._compile_start

    @property
    def elapsed(self) -> float:
        """Seconds of this epoch's steps, compile time left out."""
        return time.perf_counter() - self.start - self.compiling

    def update(self, images: int, loss: float, correct: float) -> None:
        self.done += 1
        self.images += images
        self.loss_sum += loss * images
        self.correct += correct
        self.show()

    def stats(self) -> str:
        n = max(1, self.images)
        rate = self.images / max(self.elapsed, 1e-9)
        acc = 100.0 * self.correct / n
        c = self.compiling
        extra = f" (+{c:.1f}s compiling)" if c > 0 else ""
        return f"loss {self.loss_sum / n:.4f} acc {acc:5.1f}% {rate:,.0f} img/s{extra}"

    def eta(self, with_epoch: bool = True) -> str:
        ran = self.done - self.initial
        if ran <= 0:
            return ""
        per_step = self.elapsed / ran
        left = max(0, self.total - self.done)
        parts = [f"ETA {_clock(per_step * left)}"] if with_epoch else []
        if self.later:
            parts.append(f"run ETA {_clock(per_step * (left + self.later))}")
        return " ".join(parts)

    def show(self) -> None:  # pragma: no cover - per kind
        pass

    def close(self) -> None:
        pass


class _Tqdm(Progress):
    def __init__(self, tqdm_cls: Any, stream: TextIO, **kw: Any) -> None:
        super().__init__(**kw)
        self.bar = tqdm_cls(total=self.total, initial=self.initial, desc=self.desc, file=stream,
                            unit="step", dynamic_ncols=True, leave=True)

    def show(self) -> None:
        self.bar.set_postfix_str(f"{self.stats()}{' ' if self.later else ''}"
                                 f"{self.eta(with_epoch=False)}", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


class _Lines(Progress):
    def __init__(self, stream: TextIO, log_every: float, **kw: Any) -> None:
        super().__init__(**kw)
        self.stream, self.log_every = stream, float(log_every)
        self._logged = self.start

    def show(self) -> None:
        now = time.perf_counter()
        if now - self._logged >= self.log_every and self.done < self.total:
            self._logged = now
            self.stream.write(f"{self.desc} step {self.done}/{self.total} {self.stats()} "
                              f"{self.eta()}\n")
            self.stream.flush()


def make_progress(
    total: int, desc: str, enabled: bool = True, stream: Optional[TextIO] = None,
    initial: int = 0, later_steps: int = 0, log_every: Optional[float] = None,
) -> Progress:
    """The progress display for one epoch (see the module docstring)."""
    kw = dict(total=total, desc=desc, initial=initial, later_steps=later_steps)
    if not enabled:
        return Progress(**kw)
    stream = stream if stream is not None else sys.stderr
    tty = bool(getattr(stream, "isatty", lambda: False)())
    if tty:
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None:
            return _Tqdm(tqdm, stream, **kw)
    return _Lines(stream, log_every if log_every is not None else (10.0 if tty else 60.0), **kw)
