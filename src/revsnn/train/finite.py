"""Non-finite values in training: refused batches, checked steps, never a NaN state kept.

Every optimiser step of :mod:`revsnn.train.loop` passes three checks, each one fused reduction
(two host synchronisations per step, all-reduced over the processes, so every rank stops
together):

1. the batch: the norm of a floating-point input is finite, else the batch is refused with
   the index (and file, where the data set has one) of its first non-finite sample
   (:func:`check_batch`, a :class:`NonFiniteData` error: bad input, not divergence); reduced
   together with the next check;
2. before the step: the loss and the norm over all gradients and the buffers the forward pass
   updated (BatchNorm's running statistics) are finite (:meth:`StepGuard.grads_ok`);
3. after the step: the norm over parameters and floating-point buffers is finite
   (:meth:`StepGuard.state_ok`).

The norm is the 2-norm of the per-tensor 2-norms accumulated in float64, which cannot overflow
for finite float32/16 values (float32's 2-norm overflows above ~1e19), so a finite state is
never taken for a divergence (float64 tensors use the infinity norm).

On a failed check the first non-finite tensor is found by a per-tensor scan (only then) and
named with the step in one line (:class:`TrainingDiverged`); the run writes ``status:
diverged`` and saves nothing, so the kept checkpoint is the last finite one. With
``skip_nonfinite = N`` up to ``N`` steps whose loss, gradients or buffers are non-finite are
skipped as a mixed-precision loss scaler skips them: the optimiser and its state are
untouched, the buffers the forward pass changed are restored, the learning-rate schedule
still advances (the step counts) and the EMA is not updated. A non-finite state *after* a step
cannot be undone and always stops the run.

:func:`nonfinite_in` checks a state dict (a checkpoint before it is written and when it is
loaded); :func:`check_hyperparameters` refuses NaN and infinite learning rates and friends
before anything is built.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = [
    "NonFiniteData", "StepGuard", "TrainingDiverged", "check_batch", "check_hyperparameters",
    "batch_finite", "checked_step", "first_nonfinite", "nonfinite_in", "refuse_batch",
    "refuse_nonfinite_payload",
]


class TrainingDiverged(RuntimeError):
    """The loss, a gradient, a parameter or a buffer became NaN/inf; training stopped and only
    finite checkpoints were kept."""


class NonFiniteData(ValueError):
    """A training batch holds NaN or inf (bad input: names the sample and its file)."""


def _norm(tensors: Sequence[torch.Tensor]) -> Optional[torch.Tensor]:
    """One 0-dim norm over all floating-point ``tensors`` that is finite exactly when every
    element is (None when there are none).

    ``sqrt(sum_t ||t||_2^2)`` accumulated in float64 (``_foreach_norm``: one fused kernel per
    device and dtype): a float32/16 value is below 3.4e38, so a sum of squares of finite values
    stays below 1.2e77 * numel and never overflows float64, while any NaN or inf propagates.
    float64 tensors (which could overflow) use the infinity norm ``max |x|`` instead."""
    # a DTensor (a sharded run's parameter or gradient): this process's shard; the caller's
    # reduction over processes covers the rest
    ts = [t.to_local() if callable(getattr(t, "to_local", None)) else t for t in tensors]
    ts = [t.detach() for t in ts if t.is_floating_point() and t.numel()]
    if not ts:
        return None
    wide = [t for t in ts if t.dtype == torch.float64]
    narrow = [t for t in ts if t.dtype != torch.float64]
    norms = list(torch._foreach_norm(narrow, 2, dtype=torch.float64)) if narrow else []
    norms += list(torch._foreach_norm(wide, float("inf"))) if wide else []
    dev = norms[0].device
    return torch.linalg.vector_norm(torch.stack([n.to(dev, torch.float64) for n in norms]),
                                    float("inf"))


def all_finite(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """1.0 when every element of every floating-point tensor is finite, else 0.0 (0-dim,
    on the tensors' device; no host synchronisation)."""
    m = _norm(tensors)
    if m is None:
        return torch.ones(())
    return torch.isfinite(m).float()


def first_nonfinite(named: Iterable[Tuple[str, torch.Tensor]]) -> Optional[str]:
    """The name of the first tensor holding NaN or inf (a scan; used only after a failed
    fused check), with what it holds."""
    for name, t in named:
        if not torch.is_tensor(t) or not t.is_floating_point() or not t.numel():
            continue
        t = t.detach()
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            kind = "NaN" if bool(torch.isnan(t).any()) else "inf"
            return f"{name} ({int(bad.sum())} of {t.numel()} values {kind})"
    return None


def _flatten(state: Any, prefix: str) -> List[Tuple[str, torch.Tensor]]:
    out: List[Tuple[str, torch.Tensor]] = []
    if torch.is_tensor(state):
        out.append((prefix, state))
    elif isinstance(state, Mapping):
        for k, v in state.items():
            out.extend(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            out.extend(_flatten(v, f"{prefix}.{i}" if prefix else str(i)))
    return out


def nonfinite_in(state: Any, prefix: str = "") -> Optional[str]:
    """The first non-finite tensor of a (nested) state dict, or None when all are finite."""
    named = _flatten(state, prefix)
    tensors = [t for _, t in named]
    if not tensors or bool(all_finite(tensors)):
        return None
    return first_nonfinite(named)


def _sample_name(dataset: Any, index: int) -> str:
    """``sample 12 (file a/b.png)`` where the data set knows its files."""
    where = ""
    samples = getattr(dataset, "samples", None)
    try:
        if samples is not None:
            first = samples[index]
            where = f" (file {first[0] if isinstance(first, (tuple, list)) else first})"
        elif getattr(dataset, "indices", None) is not None:
            where = f" (row {int(dataset.indices[index])} of the source data)"
    except (IndexError, TypeError, ValueError):
        where = ""
    return f"sample {index}{where}"


def check_batch(x: torch.Tensor, indices: Optional[torch.Tensor], dataset: Any,
                split: str = "training") -> torch.Tensor:
    """A 0-dim flag (1.0: finite) for a batch; raises :class:`NonFiniteData` naming the first
    non-finite sample when ``x`` is floating point and not finite. ``indices[i]`` is the data
    set index of row ``i`` of the batch (None: rows are named by their batch position)."""
    if not x.is_floating_point():
        return torch.ones(())
    ok = all_finite([x])
    if bool(ok):
        return ok
    rows = (~torch.isfinite(x.detach())).flatten(1).any(1).nonzero().flatten()
    row = int(rows[0]) if len(rows) else 0
    if indices is not None and row < len(indices):
        what = _sample_name(dataset, int(indices[row]))
    else:
        what = f"row {row} of the batch"
    bad = x.detach()[row]
    kind = "NaN" if bool(torch.isnan(bad).any()) else "inf"
    raise NonFiniteData(f"the {split} data holds {kind} values: {what}; fix or remove that "
                        "sample (inputs must be finite)")


def batch_finite(x: torch.Tensor) -> torch.Tensor:
    """0-dim flag (1.0: finite) of a batch without a host synchronisation (integer inputs are
    always finite)."""
    return all_finite([x]) if x.is_floating_point() else torch.ones(())


def refuse_batch(x: torch.Tensor, indices: Optional[torch.Tensor], dataset: Any) -> None:
    """Raise :class:`NonFiniteData` for a batch found non-finite here or on another process."""
    check_batch(x, indices, dataset)
    raise NonFiniteData("the training data of another process holds NaN or inf values")


class StepGuard:
    """The checks around one optimiser step of ``model`` (see the module docstring)."""

    def __init__(self, model: nn.Module, skip_nonfinite: int = 0, skipped: int = 0) -> None:
        self.model = model
        self.allowed = int(skip_nonfinite)
        self.skipped = int(skipped)
        self._params = [p for p in model.parameters()]
        self._named_state = list(model.named_parameters()) + list(model.named_buffers())
        self._buffers = [b for b in model.buffers()]
        self._saved: Optional[List[torch.Tensor]] = None

    # ------------------------------------------------------------------ before the forward
    def remember_buffers(self) -> None:
        """Keep a copy of the buffers (only when steps may be skipped: a skipped step restores
        the running statistics its forward pass changed)."""
        if self.allowed <= self.skipped or not self._buffers:
            return
        if self._saved is None:
            self._saved = [b.detach().clone() for b in self._buffers]
        else:
            torch._foreach_copy_(self._saved, [b.detach() for b in self._buffers])

    # ------------------------------------------------------------------ before the step
    def grads_ok(self, loss: torch.Tensor, grads: bool = True) -> torch.Tensor:
        """0-dim flag: 1.0 when the loss and (with ``grads``) every gradient are finite. A
        loss scaler (float16) checks the gradients itself: then ``grads=False``."""
        flag = torch.isfinite(loss.detach()).float()
        g = [p.grad for p in self._params if p.grad is not None] if grads else []
        return flag * all_finite(g + self._buffers).to(flag.device)

    def describe_grads(self, loss: torch.Tensor) -> str:
        if not bool(torch.isfinite(loss.detach())):
            return f"the loss is {float(loss.detach())}"
        named = [(f"gradient of {n}", p.grad) for n, p in self.model.named_parameters()
                 if p.grad is not None]
        named += [(f"buffer {n}", b) for n, b in self.model.named_buffers()]
        first = first_nonfinite(named)
        return (f"the {first} is not finite" if first
                else "a gradient or buffer is not finite on another process")

    def skip(self) -> bool:
        """Skip this step if allowed: restore the buffers; True when skipped."""
        if self.skipped >= self.allowed:
            return False
        self.skipped += 1
        if self._saved is not None:
            with torch.no_grad():
                torch._foreach_copy_([b for b in self._buffers], self._saved)
        return True

    # ------------------------------------------------------------------ after the step
    def state_ok(self) -> torch.Tensor:
        """0-dim flag: 1.0 when every parameter and floating-point buffer is finite."""
        return all_finite(self._params + self._buffers)

    def describe_state(self) -> str:
        first = first_nonfinite(self._named_state)
        return (f"{first} is not finite after the optimiser step" if first
                else "a parameter or buffer is not finite on another process")


def refuse_nonfinite_payload(payload: Mapping[str, Any]) -> None:
    """Raise :class:`TrainingDiverged` when a checkpoint payload's model, EMA or optimiser
    state holds NaN or inf (it is then not written)."""
    for key in ("model", "ema", "optimizer"):
        bad = nonfinite_in(payload.get(key), key)
        if bad is not None:
            raise TrainingDiverged(f"{bad} is not finite; it was not saved")


def checked_step(run: Any, loss: torch.Tensor, data_ok: torch.Tensor, batch: Any, epoch: int,
                 lr: float) -> Tuple[bool, bool]:
    """The optimiser step of a training run after its backward pass (and clipping), checked.

    One copy to the host and one reduction over the processes of [loss, a gradient or a buffer
    not finite, the batch not finite (``data_ok`` from :func:`batch_finite`), Ctrl-C requested
    (``run.stop``)]:
    a non-finite batch is refused (:class:`NonFiniteData`); a non-finite step is skipped
    (``run.guard``'s budget; the optimiser is not stepped) or stops the run
    (:class:`TrainingDiverged`); else the optimiser (or loss scaler) steps and the parameters
    and buffers are checked. Returns ``(skipped, stop requested)``.
    """
    from .distributed import all_reduce_sum

    cfg, env, guard = run.cfg, run.env, run.guard
    requested = run.stop is not None and run.stop.requested
    ok = guard.grads_ok(loss, run.scaler is None)
    on_device = torch.stack([1.0 - ok, 1.0 - data_ok.to(ok.device)]).cpu()  # one copy
    flags = torch.cat([on_device, torch.tensor([1.0 if requested else 0.0])])
    all_reduce_sum(flags, env)
    if float(flags[1]) > 0:
        refuse_batch(batch.x, getattr(batch, "index", None), run.data.train)
    stop = float(flags[2]) > 0
    at = (f"epoch {epoch + 1}, step {batch.step + 1} (global step {run.global_step + 1}, "
          f"lr {lr:.3g})")
    if float(flags[0]) > 0:
        what = guard.describe_grads(loss)
        if not guard.skip():
            raise TrainingDiverged(f"{what} at {at}")
        run.optimizer.zero_grad(set_to_none=True)
        if env.main:
            run.log(f"{what} at {at}; step skipped ({guard.skipped} of "
                    f"skip_nonfinite={cfg.skip_nonfinite})")
        return True, stop
    if run.scaler is not None:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    ok = guard.state_ok().cpu().reshape(1)  # parameters and buffers after the step
    if float(all_reduce_sum(ok, env)) < env.world:
        raise TrainingDiverged(f"{guard.describe_state()} at {at}")
    return False, stop


def check_hyperparameters(cfg: Any) -> None:
    """NaN is refused for every float setting (and inside float lists); the learning rates,
    momentum and weight decay must also be finite; ``skip_nonfinite >= 0``."""
    must_be_finite = ("lr", "min_lr", "warmup_lr", "momentum", "weight_decay", "ema_decay")
    d: Dict[str, Any] = cfg.to_dict()
    for key, value in d.items():
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, float) and (math.isnan(v) or (key in must_be_finite
                                                           and math.isinf(v))):
                raise ValueError(f"config key {key!r} must be a finite number, got {value!r}")
    skip = d.get("skip_nonfinite", 0)
    if skip is None or skip < 0:
        raise ValueError(f"skip_nonfinite must be >= 0 (0: stop at the first non-finite step), "
                         f"got {skip}")
