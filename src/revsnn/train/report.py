"""What a training run reports: the header, the memory line, each epoch's line and metrics row,
the summary (summary.json), and where an interrupted run stopped."""

from __future__ import annotations

import time
from typing import Any, Dict, Tuple

import torch

from .compiling import compile_note, compile_seconds
from .interrupt import TrainingInterrupted
from .payload import checkpoint_payload, save

__all__ = ["end_epoch", "header", "interrupted", "memory_line", "mode_name", "summary"]


def header(run: Any) -> str:
    """The lines printed before the first epoch."""
    cfg, env = run.cfg, run.env
    total = cfg.epochs * run.steps
    left = total - (run.start_epoch * run.steps + run.start_step)
    threads = (f"{torch.get_num_threads()} CPU thread"
               f"{'s' if torch.get_num_threads() != 1 else ''}")
    n_test = len(run.data.test) if run.data.test is not None else 0
    budget = f" (per-part modes for {cfg.memory_budget})" if cfg.memory_budget else ""
    lines = [
        f"revsnn train: {cfg.model} ({run.params:,} params) on {cfg.data} "
        f"({len(run.data.train)} train / {n_test} test), run folder {run.out}",
        f"  device {run.device}, {threads}, {env.world} process"
        f"{'es' if env.world > 1 else ''}{' (fsdp: sharded)' if run.sharded else ''}"
        f" | memory_mode {mode_name(run)}{budget}, T={cfg.T}, "
        f"batch {cfg.batch_size} | {cfg.epochs} epochs x {run.steps} steps = {total:,} "
        "steps" + (f" ({left:,} left, resuming at epoch {run.start_epoch + 1} step "
                   f"{run.start_step + 1})" if cfg.resume else ""),
    ]
    mem = run.memory.get("mib_per_image")
    if isinstance(mem, float):
        lines.append(f"  training memory {mem:.3f} MiB/image in {mode_name(run)} mode"
                     + none_part(run))
    return "\n".join(lines)

def mode_name(run: Any) -> str:
    """The memory mode, or "plan" when --memory-budget chose per-part modes."""
    return "plan" if run.cfg.memory_budget else str(run.cfg.memory_mode)

def none_part(run: Any) -> str:
    mem, none = run.memory.get("mib_per_image"), run.memory.get("none_mib_per_image")
    if mode_name(run) == "none" or not isinstance(none, float) or not mem:
        return ""
    return f" (none would need {none:.3f}, {none / mem:.1f}x)"

def memory_line(run: Any) -> str:
    """The measured training memory, and what ``none`` would need."""
    mem = run.memory.get("mib_per_image")
    if not isinstance(mem, float):
        return f"training memory n/a ({run.memory.get('method')})"
    return f"training memory {mem:.4f} MiB/image in {mode_name(run)} mode" + \
        none_part(run)

def summary(run: Any, status: str, total_time: float) -> Dict[str, Any]:
    """The run's summary dict (written to summary.json on the main rank)."""
    cfg, final = run.cfg, run.last
    s = {
        "status": status, "model": cfg.model, "data": cfg.data, "memory_mode": mode_name(run),
        "T": cfg.T, "batch_size": cfg.batch_size, "epochs": cfg.epochs,
        "epochs_done": len(run.epoch_times), "global_step": run.global_step,
        "steps_per_epoch": run.steps, "device": str(run.device),
        "threads": torch.get_num_threads(), "world_size": run.env.world,
        "parallel": "fsdp" if run.sharded else "ddp" if run.env.world > 1 else None,
        "rank": run.env.rank, "torch": str(torch.__version__), "params": run.params,
        "best_test_acc": run.best_acc if run.best_acc >= 0 else None,
        "best_epoch": run.best_epoch if run.best_epoch >= 0 else None,
        "final_test_acc": final.get("test_acc"), "final_train_acc": final.get("train_acc"),
        "final_train_loss": final.get("train_loss"),
        "memory_mib_per_image": run.memory.get("mib_per_image"),
        "memory_none_mib_per_image": run.memory.get("none_mib_per_image"),
        "memory_method": run.memory.get("method"), "memory": run.memory,
        "time_per_epoch_s": (sum(run.epoch_times) / len(run.epoch_times))
        if run.epoch_times else None,
        "epoch_times_s": run.epoch_times, "total_time_s": total_time,
        "process_cpu_time_s": time.process_time(),
        "compile_time_s": compile_seconds(getattr(run, "compile_clock", None))
        if cfg.compile else None,
        "run_dir": str(run.out), "skipped_nonfinite_steps": run.guard.skipped,
    }
    if cfg.memory_budget and callable(getattr(run.model, "memory_plan", None)):
        s["memory_plan"] = run.model.memory_plan()
    if run.device.type == "cuda":
        s["cuda_peak_train_mib_per_image"] = (
            torch.cuda.max_memory_allocated(run.device) / 2**20
            / max(1, cfg.batch_size // run.env.world)
        )
    # A resumed run replaces summary.json only once it has saved work of its own.
    if run.env.main and (run.saved_any or not cfg.resume):
        run.folder.write_summary(s)
    return s


def end_epoch(run: Any, epoch: int, tr: Dict[str, Any], te: Dict[str, Any]) -> None:
    """Record an epoch: best accuracy, checkpoint, metrics row, TensorBoard, the log line."""
    cfg = run.cfg
    t_train = tr["elapsed"]
    run.epoch_times.append(t_train)
    acc = te["test_acc"]
    if acc is not None and acc > run.best_acc:
        run.best_acc, run.best_epoch = acc, epoch + 1
    run.last = {k: tr[k] for k in ("lr", "train_loss", "train_acc")}
    run.last.update(te)
    row = {"epoch": epoch + 1, "step": run.global_step, "lr": tr["lr"],
           "train_loss": tr["train_loss"], "train_acc": tr["train_acc"],
           "test_loss": te["test_loss"], "test_acc": acc, "epoch_time_s": t_train,
           "images_per_s": tr["images"] / max(t_train - tr.get("compile_s", 0.0), 1e-9)}
    if run.sharded:  # every process writes its shards
        save(run, checkpoint_payload(run, epoch + 1), best=run.best_epoch == epoch + 1)
    if not run.env.main:
        return
    if not run.sharded:
        save(run, checkpoint_payload(run, epoch + 1), best=run.best_epoch == epoch + 1)
    run.folder.add_metrics(row)
    if run.tb is not None:
        for k in ("lr", "train_loss", "train_acc", "test_loss", "test_acc", "images_per_s"):
            if row[k] is not None:
                run.tb.add_scalar(k, row[k], row["epoch"])
        run.tb.flush()
    test = (f"test loss {te['test_loss']:.4f} acc {acc:5.2f}% (best {run.best_acc:5.2f}%)"
            if acc is not None else "no test set")
    run.log(f"epoch {epoch + 1:3d}/{cfg.epochs} lr {tr['lr']:.2e} train loss "
             f"{tr['train_loss']:.4f} acc {tr['train_acc']:5.2f}% | {test} | "
             f"{t_train:.1f}s{compile_note(tr.get('compile_s', 0.0))}, "
             f"{row['images_per_s']:,.0f} img/s")


def interrupted(run: Any, where: Tuple[int, int], t_start: float,
                saved_now: bool) -> TrainingInterrupted:
    """The error that says where the run stopped, what was kept and how to continue."""
    summary_ = summary(run, "interrupted", time.perf_counter() - t_start)
    ck = run.out / "checkpoint.pt"
    epoch, step = where
    at = (f"after epoch {epoch}" if step == 0 else
          f"in epoch {epoch + 1} after step {step}/{run.steps}")
    if not saved_now:  # stopped at once: somewhere inside a step
        at = f"during epoch {run.current_epoch + 1}"
    if saved_now and run.saved_any:
        what = f"interrupted {at}; checkpoint {ck} written"
    elif ck.exists():
        what = f"interrupted {at}; the last checkpoint {ck} is kept"
    else:
        what = f"interrupted {at}; no checkpoint had been written yet"
    resume = f"revsnn train --resume {run.out}" if ck.exists() else None
    msg = what + (f". Continue with: {resume}" if resume else "")
    return TrainingInterrupted(msg, summary_, resume)
