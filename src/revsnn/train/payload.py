"""Checkpoint payloads of a training run, and resuming from them.

Every checkpoint holds the global torch RNG (dropout); one written inside an epoch
(``save_every`` steps, or at Ctrl-C) also holds the epoch's generator state and running sums.
Resuming from any checkpoint therefore continues bit for bit as the uninterrupted run would.
Resuming a run that has done all its epochs changes nothing (:func:`already_complete`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch

from .checkpoint import load_model_state, save_checkpoint
from .config import TrainConfig
from .distributed import DistEnv
from .finite import refuse_nonfinite_payload
from .optim import scheduler_at
from .run_folder import RunFolder

__all__ = ["already_complete", "checkpoint_payload", "resume_state", "save"]


def resume_state(run: Any, ck: Dict[str, Any]) -> None:
    """Put the run's model, optimiser, schedule, EMA, scaler, RNG and counters where the
    checkpoint ``ck`` left them (DCP shards or one file, sharded run or not: dcp.py)."""
    shards = bool(ck.get("sharded") or run.sharded)
    if not shards:
        load_model_state(run.model, ck["model"], ck["path"])
    # the schedule of this config replayed to the checkpoint's step (the same rates as the
    # uninterrupted run; a changed --epochs gives the new schedule from here on)
    run.scheduler = scheduler_at(run.optimizer, run.cfg, run.steps,
                                  int(ck["global_step"]))
    rates = [g["lr"] for g in run.optimizer.param_groups]
    if shards:
        from .dcp import resume_tensors

        resume_tensors(ck, run.model, run.optimizer, run.ema, run.sharded)
    else:
        try:
            run.optimizer.load_state_dict(ck["optimizer"])
        except (ValueError, KeyError) as err:
            raise ValueError(
                f"checkpoint {ck['path']}: optimizer state does not match ({err})"
            ) from err
    for g, lr in zip(run.optimizer.param_groups, rates):
        g["lr"] = lr
    if run.ema is not None and not shards:
        if ck.get("ema") is None:
            raise ValueError(f"checkpoint {ck['path']} has no EMA state but ema_decay > 0")
        load_model_state(run.ema.module, ck["ema"], ck["path"])
    if run.scaler is not None and ck.get("scaler"):
        run.scaler.load_state_dict(ck["scaler"])
    rng = ck.get("rng", {})
    if "torch" in rng and not ck.get("sharded"):  # shards: each process's own (dcp.py)
        torch.set_rng_state(rng["torch"].cpu())
    if rng.get("cuda") and run.device.type == "cuda":
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
    run.start_epoch = int(ck["epoch"])
    run.start_step = int(ck.get("step_in_epoch", 0))
    run.epoch_state = ck.get("epoch_state")
    run.global_step = int(ck["global_step"])
    run.best_acc, run.best_epoch = float(ck["best_acc"]), int(ck["best_epoch"])
    run.epoch_times = list(ck.get("epoch_times", []))
    run.last = dict(ck.get("last_metrics") or {})
    if run.env.main:
        run.folder.load_metrics(run.start_epoch)


def checkpoint_payload(run: Any, epoch: int, step_in_epoch: int = 0,
                       epoch_state: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """What a checkpoint holds: config, counters, model, optimiser, EMA, scaler, RNG, metrics
    (and, inside an epoch, the epoch's generator state and running sums)."""
    rng: Dict[str, Any] = {"torch": torch.get_rng_state()}
    if run.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "config": run.cfg.to_dict(), "epoch": epoch, "global_step": run.global_step,
        "step_in_epoch": step_in_epoch, "epoch_state": epoch_state,
        "model": None if run.sharded else run.model.state_dict(),
        "optimizer": None if run.sharded else run.optimizer.state_dict(),
        "ema": run.ema.module.state_dict() if run.ema is not None and not run.sharded
        else None,
        "scaler": run.scaler.state_dict() if run.scaler is not None else None,
        "rng": rng, "best_acc": run.best_acc, "best_epoch": run.best_epoch,
        "epoch_times": run.epoch_times, "memory": run.memory, "params": run.params,
        "last_metrics": run.last, "skipped_nonfinite": run.guard.skipped,
    }


def save(run: Any, payload: Dict[str, Any], best: bool = False) -> None:
    """Write ``checkpoint.pt`` (and ``best.pt``) on the main rank; a sharded run's processes
    all write their shards (:func:`revsnn.train.dcp.save_sharded`)."""
    if run.sharded:
        from .dcp import save_sharded

        if run.cfg.resume and not run.saved_any and run.env.main:
            run.folder.write_config(run.cfg)
        for name in ("checkpoint", "best") if best else ("checkpoint",):
            save_sharded(run.out, name, payload, run.model, run.optimizer, run.ema,
                         run.cfg.parallel)
        run.saved_any = True
        return
    if not run.env.main:
        return
    refuse_nonfinite_payload(payload)  # a non-finite state is never saved
    if run.cfg.resume and not run.saved_any:
        run.folder.write_config(run.cfg)  # a resumed run's own config, once it has work
    save_checkpoint(run.out / "checkpoint.pt", payload)
    if best:
        save_checkpoint(run.out / "best.pt", payload)
    run.saved_any = True


def already_complete(cfg: TrainConfig, ck: Dict[str, Any], env: DistEnv,
                     log: Callable[[str], None]) -> Dict[str, Any]:
    """The summary of a run whose checkpoint has done ``cfg.epochs`` epochs; writes nothing."""
    folder = RunFolder(Path(cfg.out or Path(ck["path"]).parent))
    done = int(ck["epoch"])
    stored = folder.read_summary() or {}
    acc = stored.get("final_test_acc", (ck.get("last_metrics") or {}).get("test_acc"))
    acc_s = f"final test accuracy {acc:.2f}%; " if isinstance(acc, (int, float)) else ""
    if env.main:
        log(f"run {folder.path} is already complete ({done} of {done} epochs done; {acc_s}"
            f"nothing was changed). To train longer, resume with a larger --epochs: "
            f"revsnn train --resume {folder.path} --epochs {2 * done}")
    return {**stored, "already_complete": True, "run_dir": str(folder.path),
            "epochs_done": done, "rank": env.rank}
