"""The allowed range of every numeric and list-valued config key, checked before anything runs.

Each refusal names the key, the allowed range and the value given, e.g.
``random_erase must be >= 0 and <= 1 (a probability), got 2.0``. Floats must be finite (NaN and
infinities are outside every range). Names (model, data, optimizer, ...) are checked by
:func:`revsnn.train.config.validate_config`.
"""

from __future__ import annotations

import math
from typing import Any, Tuple

__all__ = ["RANGES", "check_ranges"]

INF = math.inf
# key -> (low, high, low included, high included, what it is); None values pass (nullable keys)
RANGES = {
    "T": (1, 100_000, True, True, "time steps"),
    "frames": (1, 100_000, True, True, "frames per sample"),
    "epochs": (1, 10**6, True, True, ""),
    "batch_size": (1, 10**7, True, True, "global batch size"),
    "lr": (0, INF, False, False, "peak learning rate"),
    "momentum": (0, 1, True, False, ""),
    "weight_decay": (0, INF, True, False, ""),
    "warmup_epochs": (0, INF, True, False, "epochs of linear warm-up"),
    "warmup_lr": (0, INF, True, False, ""),
    "min_lr": (0, INF, True, False, ""),
    "gamma": (0, 1, False, True, "step decay factor"),
    "label_smoothing": (0, 1, True, False, ""),
    "mixup": (0, INF, True, False, "Beta(alpha, alpha); 0 = off"),
    "cutmix": (0, INF, True, False, "Beta(alpha, alpha); 0 = off"),
    "mix_prob": (0, 1, True, True, "a probability"),
    "crop_padding": (0, 4096, True, True, "pixels"),
    "random_erase": (0, 1, True, True, "a probability"),
    "image_size": (1, 16384, True, True, "pixels"),
    "ema_decay": (0, 1, True, False, "per step; 0 = off"),
    "agc_clip": (0, INF, True, False, "0 = off"),
    "grad_clip": (0, INF, True, False, "0 = off"),
    "seed": (0, 2**32 - 1, True, True, ""),
    "threads": (0, 4096, True, True, "0: torch's default"),
    "num_workers": (0, 1024, True, True, ""),
    "save_every": (0, 10**12, True, True, "steps; 0 = only at epoch ends"),
    "max_steps": (1, 10**12, True, True, "steps per epoch, or null for all"),
}
# list keys: key -> (length low, length high, element range as above, whole numbers only)
LISTS = {
    "betas": (2, 2, (0, 1, True, False, ""), False),
    "milestones": (0, 10_000, (1, 10**6, True, True, "epochs"), True),
    "frame_size": (2, 2, (1, 16384, True, True, "[H, W] pixels"), True),
    "memory_batches": (2, 64, (1, 10**7, True, True, "batch sizes"), True),
}
# randaugment: [ops, magnitude, magnitude std]
RANDAUGMENT = ((0, 64, True, True, "operations per sample"), (0, 10, True, True, "magnitude"),
               (0, INF, True, False, "magnitude std"))


def _num(v: Any) -> str:
    return str(v) if isinstance(v, int) else f"{v:g}"


def _interval(spec: Tuple[Any, ...]) -> str:
    """``">= 0 and < 1 (what)"``: the allowed range in words (``> 0`` when unbounded above)."""
    lo, hi, lo_in, hi_in, what = spec
    parts = [f"{'>=' if lo_in else '>'} {_num(lo)}"] if lo != -INF else []
    if hi != INF:
        parts.append(f"{'<=' if hi_in else '<'} {_num(hi)}")
    text = " and ".join(parts) if parts else "finite"
    return f"{text} ({what})" if what else text


def _inside(value: Any, spec: Tuple[Any, ...]) -> bool:
    lo, hi, lo_in, hi_in, _ = spec
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return (lo <= value if lo_in else lo < value) and (value <= hi if hi_in else value < hi)


def check_value(key: str, value: Any, spec: Tuple[Any, ...], whole: bool = False) -> None:
    """Raise ``ValueError`` naming ``key`` and the allowed range unless ``value`` lies in it."""
    if not _inside(value, spec) or (whole and value != int(value)):
        kind = "a whole number " if whole else ""
        raise ValueError(f"{key} must be {kind}{_interval(spec)}, got {value!r}")


def check_ranges(cfg: Any) -> None:
    """Check every key of :data:`RANGES`, :data:`LISTS` and ``randaugment`` on ``cfg``."""
    for key, spec in RANGES.items():
        value = getattr(cfg, key)
        if value is not None:
            check_value(key, value, spec)
    for key, (n_lo, n_hi, spec, whole) in LISTS.items():
        value = getattr(cfg, key)
        if value is None:
            continue
        if not isinstance(value, list) or not n_lo <= len(value) <= n_hi:
            n = f"{n_lo}" if n_lo == n_hi else f"{n_lo} to {n_hi}"
            raise ValueError(f"{key} must be a list of {n} values, each {_interval(spec)}; "
                             f"got {value!r}")
        for i, v in enumerate(value):
            check_value(f"{key}[{i}]", v, spec, whole)
    if len(set(cfg.memory_batches)) < 2:
        raise ValueError(f"memory_batches must hold at least 2 distinct batch sizes, got "
                         f"{cfg.memory_batches!r}")
    ra = cfg.randaugment
    if ra is not None:
        if not isinstance(ra, list) or len(ra) != 3:
            raise ValueError("randaugment must be [ops, magnitude, magnitude_std] with ops "
                             f"{_interval(RANDAUGMENT[0])}, magnitude "
                             f"{_interval(RANDAUGMENT[1])}, std {_interval(RANDAUGMENT[2])}; "
                             f"got {ra!r}")
        for name, v, spec in zip(("ops", "magnitude", "magnitude_std"), ra, RANDAUGMENT):
            check_value(f"randaugment {name}", v, spec, whole=name == "ops")
