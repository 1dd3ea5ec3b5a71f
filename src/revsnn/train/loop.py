"""The training run: epochs of (augment -> forward all heads -> loss -> step), evaluation,
metrics, checkpoints, resume, Ctrl-C.

Reproducibility: the data order and every augmentation draw of an epoch depend only on
``(seed, epoch)`` (per-epoch generators); the global torch RNG (dropout) is saved in every
checkpoint, and a checkpoint written inside an epoch (``save_every`` steps, or at Ctrl-C) also
holds the epoch's generator state and running sums. Resuming from any checkpoint therefore
continues bit for bit as the uninterrupted run would.

Resuming a run that has done all its epochs changes nothing (it says so and how to extend it).
A resumed run replaces the results files only once it has done work of its own.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import nn

from ..data import Loader
from .build import (
    DataBundle,
    TrainForward,
    build_data,
    build_model,
    check_model_fits,
    count_parameters,
)
from .checkpoint import load_checkpoint, load_model_state, save_checkpoint
from .config import TrainConfig, validate_config
from .distributed import (
    DistEnv,
    all_reduce_sum,
    cleanup,
    init_distributed,
    wrap_model,
)
from .interrupt import StopRequest, TrainingInterrupted
from .loss import model_loss, soft_cross_entropy
from .memory_report import measure_run_memory, memory_matches
from .optim import (
    adaptive_clip_grad,
    build_ema,
    build_optimizer,
    build_scheduler,
    ema_update,
    scheduler_at,
)
from .progress import make_progress
from .run_folder import METRIC_FIELDS, RunFolder
from .sharding import ShardedEMA, shard_for_run, sync_buffers

__all__ = ["METRIC_FIELDS", "TrainingDiverged", "TrainingInterrupted", "evaluate", "run",
           "run_training"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf; training stopped and the last good checkpoint was kept."""


class _Stop(Exception):
    """Internal: a stop was requested (Ctrl-C) and the state is consistent."""


def _amp(cfg: TrainConfig, device: torch.device):
    if not cfg.amp:
        return nullcontext, None
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(
        cfg.amp_dtype, torch.float16 if device.type == "cuda" else torch.bfloat16
    )
    scaler = None
    if dtype is torch.float16 and device.type == "cuda":
        scaler = torch.amp.GradScaler("cuda")
    return (lambda: torch.autocast(device.type, dtype=dtype)), scaler


def _epoch_generator(cfg: TrainConfig, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed((cfg.seed * 7_919 + epoch) * 2_654_435_761 % (2**63))


def _inputs(data: DataBundle, batch, gen: Optional[torch.Generator], train: bool):
    x = data.augment(batch.x, gen, train=train, total=batch.total, part=batch.part)
    target = batch.y
    if train and data.mixup.enabled:
        x, target = data.mixup(x, batch.y, gen)
    if data.frames:
        x = x.transpose(0, 1)  # [B, T, C, H, W] -> [T, B, C, H, W]
    return x, target


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: Loader, data: DataBundle, env: Optional[DistEnv] = None,
    amp_ctx: Callable = nullcontext, stop: Optional[Callable[[], bool]] = None,
) -> Dict[str, float]:
    """Test loss and accuracy of the final head (summed over ranks)."""
    env = env or DistEnv()
    was = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64)
    try:
        for batch in loader:
            if stop is not None and stop():
                raise _Stop
            x, y = _inputs(data, batch, None, train=False)
            with amp_ctx():
                logits = model(x)
            sums[0] += float(soft_cross_entropy(logits, y)) * len(y)
            sums[1] += float((logits.argmax(1) == y).sum())
            sums[2] += len(y)
    finally:
        model.train(was)
    all_reduce_sum(sums, env)
    n = max(1.0, float(sums[2]))
    return {"test_loss": float(sums[0]) / n, "test_acc": 100.0 * float(sums[1]) / n}


class _Run:
    """State of one training run (see :func:`run_training`)."""

    def __init__(self, cfg: TrainConfig, env: DistEnv, data: DataBundle, model: nn.Module,
                 log: Callable[[str], None]) -> None:
        self.cfg, self.env, self.log, self.data = cfg, env, log, data
        self.device = env.device
        self.model = model.to(self.device)
        self.params = count_parameters(self.model)
        self.train_loader = Loader(data.train, cfg.batch_size, True, cfg.seed, env.rank,
                                   env.world, cfg.num_workers, self.device, cfg.data_on_device)
        self.test_loader = None if data.test is None else Loader(
            data.test, cfg.batch_size, False, cfg.seed, env.rank, env.world, cfg.num_workers,
            self.device, cfg.data_on_device)
        first = next(iter(self.train_loader))
        x, _ = _inputs(self.data, first, None, train=False)
        check_model_fits(self.model, x, data.info.num_classes, cfg)
        self.steps = len(self.train_loader)
        if cfg.max_steps:
            self.steps = min(self.steps, int(cfg.max_steps))
        self.module = TrainForward(self.model)
        self.sharded = shard_for_run(self.model, cfg, env)  # --parallel fsdp (sharding.py)
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.steps)
        self.ema = (None if cfg.ema_decay <= 0 else ShardedEMA(self.model, cfg.ema_decay)
                    if self.sharded else build_ema(self.model, cfg.ema_decay))
        self.amp_ctx, self.scaler = _amp(cfg, self.device)
        self.start_epoch, self.start_step, self.global_step = 0, 0, 0
        self.epoch_state: Optional[Dict[str, Any]] = None
        self.best_acc, self.best_epoch = -1.0, -1
        self.epoch_times: list = []
        self.last: Dict[str, Any] = {}  # metrics of the last completed epoch
        self.memory: Dict[str, Any] = {"mib_per_image": None, "method": "not measured"}
        self.saved_any = False
        self.stop: Optional[StopRequest] = None
        self.current_epoch = 0
        ck = load_checkpoint(cfg.resume, map_location=self.device) if cfg.resume else None
        out = cfg.out or (str(Path(ck["path"]).parent) if ck else None)
        if out is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out = str(Path("runs") / f"{cfg.data.replace(':', '-')}_{cfg.model}_{stamp}")
        self.folder = RunFolder(Path(out))
        if env.main:
            self.folder.check(resume=ck is not None)
        if ck is not None:
            self._resume(ck)
        if self.sharded:
            self.memory["method"] = "not measured under --parallel fsdp (revsnn plan " \
                                    "--world-size N predicts the per-process peak)"
        elif cfg.measure_memory and env.main:
            stored = ck.get("memory") if ck else None
            if memory_matches(stored, cfg, self.device):
                self.memory = dict(stored)
            else:
                self.memory = measure_run_memory(
                    self.module, self.model, self.data, cfg, self.device,
                    lambda b: _inputs(self.data, b, None, train=False))
        self.ddp = self.module if self.sharded else wrap_model(self.module, env, cfg.sync_bn)
        self.tb = None

    @property
    def out(self) -> Path:
        return self.folder.path

    # ------------------------------------------------------------------ state
    def _resume(self, ck: Dict[str, Any]) -> None:
        if not (ck.get("sharded") or self.sharded):
            load_model_state(self.model, ck["model"], ck["path"])
        # the schedule of this config replayed to the checkpoint's step (the same rates as the
        # uninterrupted run; a changed --epochs gives the new schedule from here on)
        self.scheduler = scheduler_at(self.optimizer, self.cfg, self.steps,
                                      int(ck["global_step"]))
        rates = [g["lr"] for g in self.optimizer.param_groups]
        if ck.get("sharded") or self.sharded:  # DCP shards, or one file into shards
            from .dcp import resume_tensors

            resume_tensors(ck, self.model, self.optimizer, self.ema, self.sharded)
        else:
            try:
                self.optimizer.load_state_dict(ck["optimizer"])
            except (ValueError, KeyError) as err:
                raise ValueError(
                    f"checkpoint {ck['path']}: optimizer state does not match ({err})"
                ) from err
        for g, lr in zip(self.optimizer.param_groups, rates):
            g["lr"] = lr
        if self.ema is not None and not (ck.get("sharded") or self.sharded):
            if ck.get("ema") is None:
                raise ValueError(f"checkpoint {ck['path']} has no EMA state but ema_decay > 0")
            load_model_state(self.ema.module, ck["ema"], ck["path"])
        if self.scaler is not None and ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        rng = ck.get("rng", {})
        if "torch" in rng and not ck.get("sharded"):
            torch.set_rng_state(rng["torch"].cpu())
        if rng.get("cuda") and self.device.type == "cuda":
            torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
        self.start_epoch = int(ck["epoch"])
        self.start_step = int(ck.get("step_in_epoch", 0))
        self.epoch_state = ck.get("epoch_state")
        self.global_step = int(ck["global_step"])
        self.best_acc, self.best_epoch = float(ck["best_acc"]), int(ck["best_epoch"])
        self.epoch_times = list(ck.get("epoch_times", []))
        self.last = dict(ck.get("last_metrics") or {})
        if self.env.main:
            self.folder.load_metrics(self.start_epoch)

    def payload(self, epoch: int, step_in_epoch: int = 0,
                epoch_state: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        rng: Dict[str, Any] = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "config": self.cfg.to_dict(), "epoch": epoch, "global_step": self.global_step,
            "step_in_epoch": step_in_epoch, "epoch_state": epoch_state,
            "model": None if self.sharded else self.model.state_dict(),
            "optimizer": None if self.sharded else self.optimizer.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None and not self.sharded
            else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng, "best_acc": self.best_acc, "best_epoch": self.best_epoch,
            "epoch_times": self.epoch_times, "memory": self.memory, "params": self.params,
            "last_metrics": self.last,
        }

    def save(self, payload: Dict[str, Any], best: bool = False) -> None:
        if self.sharded:  # every process writes its shards (dcp.py)
            from .dcp import save_sharded

            if self.cfg.resume and not self.saved_any and self.env.main:
                self.folder.write_config(self.cfg)
            for name in ("checkpoint", "best") if best else ("checkpoint",):
                save_sharded(self.out, name, payload, self.model, self.optimizer, self.ema,
                             self.cfg.parallel)
            self.saved_any = True
            return
        if not self.env.main:
            return
        if self.cfg.resume and not self.saved_any:
            self.folder.write_config(self.cfg)  # a resumed run's own config, once it has work
        save_checkpoint(self.out / "checkpoint.pt", payload)
        if best:
            save_checkpoint(self.out / "best.pt", payload)
        self.saved_any = True

    # ------------------------------------------------------------------ epochs
    def train_epoch(self, epoch: int, start: int, state: Optional[Dict[str, Any]]
                    ) -> Dict[str, Any]:
        cfg, env = self.cfg, self.env
        self.ddp.train()
        self.train_loader.set_epoch(epoch)
        gen = _epoch_generator(cfg, epoch)
        sums = torch.zeros(3, dtype=torch.float64)  # loss * n, correct, n
        before = 0.0
        if state is not None:
            gen.set_state(state["gen"])
            sums = state["sums"].to(torch.float64).clone()
            before = float(state["elapsed"])
        later = (cfg.epochs - epoch - 1) * self.steps
        bar = make_progress(self.steps, f"epoch {epoch + 1}/{cfg.epochs}",
                            enabled=cfg.progress and env.main, initial=start, later_steps=later)
        t0 = time.perf_counter()
        lr, step, stop = self.last.get("lr", cfg.lr), start, False

        def epoch_state() -> Dict[str, Any]:
            return {"gen": gen.get_state(), "sums": sums.clone(),
                    "elapsed": before + time.perf_counter() - t0}

        for batch in self.train_loader.batches(start):
            if batch.step >= self.steps:
                break
            lr = self.optimizer.param_groups[0]["lr"]
            x, target = _inputs(self.data, batch, gen, train=True)
            with self.amp_ctx():
                heads = self.ddp(x)
            loss = model_loss(heads, target, cfg.label_smoothing)
            # one reduction per step: [loss not finite, Ctrl-C requested] on any rank
            flags = torch.tensor([0.0 if torch.isfinite(loss.detach()) else 1.0,
                                  1.0 if self.stop is not None and self.stop.requested else 0.0])
            all_reduce_sum(flags, env)
            if float(flags[0]) > 0:
                raise TrainingDiverged(
                    f"loss became {float(loss.detach())} at epoch {epoch + 1}, step "
                    f"{batch.step + 1} (lr {lr:.3g})"
                )
            stop = float(flags[1]) > 0
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)
            else:
                loss.backward()
            if cfg.agc_clip > 0:
                adaptive_clip_grad(self.model.parameters(), cfg.agc_clip)
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.scheduler.step()
            if self.sharded:
                sync_buffers(self.model)  # BatchNorm running statistics: the ranks' mean
            if isinstance(self.ema, ShardedEMA):
                self.ema.update()
            elif self.ema is not None:
                ema_update(self.ema, self.model)
            self.global_step += 1
            step = batch.step + 1
            n = len(batch.y)
            truth = target if target.dim() == 1 else target.argmax(1)
            correct = float((heads[-1].detach().argmax(1) == truth).sum())
            sums += torch.tensor([float(loss.detach()) * n, correct, n], dtype=torch.float64)
            bar.update(n * env.world, float(loss.detach()), correct * env.world)
            if stop:
                break
            if cfg.save_every and self.global_step % cfg.save_every == 0 and step < self.steps:
                self.save(self.payload(epoch, step, epoch_state()))
        bar.close()
        totals = sums.clone()
        all_reduce_sum(totals, env)
        n = max(1.0, float(totals[2]))
        return {"lr": lr, "train_loss": float(totals[0]) / n,
                "train_acc": 100.0 * float(totals[1]) / n, "images": n, "step": step,
                "stopped": stop, "state": epoch_state(),
                "elapsed": before + time.perf_counter() - t0}

    def evaluate(self) -> Dict[str, Optional[float]]:
        if self.test_loader is None:
            return {"test_loss": None, "test_acc": None}
        use_ema = self.ema is not None and self.cfg.eval_ema
        if use_ema and self.sharded:  # the averages swapped into the sharded model
            self.ema.swap()
            try:
                return evaluate(self.model, self.test_loader, self.data, self.env, self.amp_ctx)
            finally:
                self.ema.swap()
        model = self.ema.module if use_ema else self.model
        single = self.env.world == 1 and self.stop is not None
        return evaluate(model, self.test_loader, self.data, self.env, self.amp_ctx,
                        stop=(lambda: self.stop.requested) if single else None)

    # ------------------------------------------------------------------ reporting
    def header(self) -> str:
        cfg, env = self.cfg, self.env
        total = cfg.epochs * self.steps
        left = total - (self.start_epoch * self.steps + self.start_step)
        threads = (f"{torch.get_num_threads()} CPU thread"
                   f"{'s' if torch.get_num_threads() != 1 else ''}")
        n_test = len(self.data.test) if self.data.test is not None else 0
        budget = f" (per-part modes for {cfg.memory_budget})" if cfg.memory_budget else ""
        lines = [
            f"revsnn train: {cfg.model} ({self.params:,} params) on {cfg.data} "
            f"({len(self.data.train)} train / {n_test} test), run folder {self.out}",
            f"  device {self.device}, {threads}, {env.world} process"
            f"{'es' if env.world > 1 else ''}{' (fsdp: sharded)' if self.sharded else ''}"
            f" | memory_mode {self.mode_name}{budget}, T={cfg.T}, "
            f"batch {cfg.batch_size} | {cfg.epochs} epochs x {self.steps} steps = {total:,} "
            "steps" + (f" ({left:,} left, resuming at epoch {self.start_epoch + 1} step "
                       f"{self.start_step + 1})" if cfg.resume else ""),
        ]
        mem = self.memory.get("mib_per_image")
        if isinstance(mem, float):
            lines.append(f"  training memory {mem:.3f} MiB/image in {self.mode_name} mode"
                         + self._none_part())
        return "\n".join(lines)

    @property
    def mode_name(self) -> str:
        """The memory mode, or "plan" when --memory-budget chose per-part modes."""
        return "plan" if self.cfg.memory_budget else str(self.cfg.memory_mode)

    def _none_part(self) -> str:
        mem, none = self.memory.get("mib_per_image"), self.memory.get("none_mib_per_image")
        if self.mode_name == "none" or not isinstance(none, float) or not mem:
            return ""
        return f" (none would need {none:.3f}, {none / mem:.1f}x)"

    def memory_line(self) -> str:
        mem = self.memory.get("mib_per_image")
        if not isinstance(mem, float):
            return f"training memory n/a ({self.memory.get('method')})"
        return f"training memory {mem:.4f} MiB/image in {self.mode_name} mode" + \
            self._none_part()

    def summary(self, status: str, total_time: float) -> Dict[str, Any]:
        cfg, final = self.cfg, self.last
        s = {
            "status": status, "model": cfg.model, "data": cfg.data, "memory_mode": self.mode_name,
            "T": cfg.T, "batch_size": cfg.batch_size, "epochs": cfg.epochs,
            "epochs_done": len(self.epoch_times), "global_step": self.global_step,
            "steps_per_epoch": self.steps, "device": str(self.device),
            "threads": torch.get_num_threads(), "world_size": self.env.world,
            "parallel": "fsdp" if self.sharded else "ddp" if self.env.world > 1 else None,
            "rank": self.env.rank, "torch": str(torch.__version__), "params": self.params,
            "best_test_acc": self.best_acc if self.best_acc >= 0 else None,
            "best_epoch": self.best_epoch if self.best_epoch >= 0 else None,
            "final_test_acc": final.get("test_acc"), "final_train_acc": final.get("train_acc"),
            "final_train_loss": final.get("train_loss"),
            "memory_mib_per_image": self.memory.get("mib_per_image"),
            "memory_none_mib_per_image": self.memory.get("none_mib_per_image"),
            "memory_method": self.memory.get("method"), "memory": self.memory,
            "time_per_epoch_s": (sum(self.epoch_times) / len(self.epoch_times))
            if self.epoch_times else None,
            "epoch_times_s": self.epoch_times, "total_time_s": total_time,
            "process_cpu_time_s": time.process_time(),
            "run_dir": str(self.out),
        }
        if cfg.memory_budget and callable(getattr(self.model, "memory_plan", None)):
            s["memory_plan"] = self.model.memory_plan()
        if self.device.type == "cuda":
            s["cuda_peak_train_mib_per_image"] = (
                torch.cuda.max_memory_allocated(self.device) / 2**20
                / max(1, cfg.batch_size // self.env.world)
            )
        # A resumed run replaces summary.json only once it has saved work of its own.
        if self.env.main and (self.saved_any or not cfg.resume):
            self.folder.write_summary(s)
        return s

    # ------------------------------------------------------------------ main
    def fit(self) -> Dict[str, Any]:
        cfg, env, log = self.cfg, self.env, self.log
        if env.main and not cfg.resume:
            self.folder.create(cfg)
        t_start = time.perf_counter()
        where = (self.start_epoch, self.start_step)
        try:
            with StopRequest(log if env.main else None) as self.stop:
                if env.main:
                    log(self.header())
                    if cfg.tensorboard:
                        from torch.utils.tensorboard import SummaryWriter

                        self.tb = SummaryWriter(str(self.out / "tensorboard"))
                for epoch in range(self.start_epoch, cfg.epochs):
                    self.current_epoch = epoch
                    resumed = epoch == self.start_epoch
                    tr = self.train_epoch(epoch, self.start_step if resumed else 0,
                                          self.epoch_state if resumed else None)
                    where = (epoch, tr["step"])
                    if tr["stopped"]:
                        self.save(self.payload(epoch, tr["step"], tr["state"]))
                        raise _Stop
                    try:
                        te = self.evaluate()
                    except _Stop:  # evaluation left for the resumed run
                        self.save(self.payload(epoch, tr["step"], tr["state"]))
                        raise
                    self.end_epoch(epoch, tr, te)
                    where = (epoch + 1, 0)
                    if self._stop_requested():
                        raise _Stop
        except _Stop:
            raise self._interrupted(where, t_start, saved_now=True) from None
        except TrainingInterrupted:
            raise
        except KeyboardInterrupt:  # a second Ctrl-C, or not the main thread
            raise self._interrupted(where, t_start, saved_now=False) from None
        except TrainingDiverged as err:
            self.summary("diverged", time.perf_counter() - t_start)
            kept = self.out / "checkpoint.pt"
            keep = (f"the last good checkpoint {kept} is kept" if kept.exists()
                    else "no checkpoint had been written yet")
            raise TrainingDiverged(f"{err}; training stopped, {keep}. Lower --lr or enable "
                                   "grad_clip/agc_clip.") from None
        finally:
            if self.tb is not None:
                self.tb.close()
        return self.summary("finished", time.perf_counter() - t_start)

    def _stop_requested(self) -> bool:
        flag = torch.tensor([1.0 if self.stop is not None and self.stop.requested else 0.0])
        return float(all_reduce_sum(flag, self.env)) > 0

    def end_epoch(self, epoch: int, tr: Dict[str, Any], te: Dict[str, Any]) -> None:
        cfg = self.cfg
        t_train = tr["elapsed"]
        self.epoch_times.append(t_train)
        acc = te["test_acc"]
        if acc is not None and acc > self.best_acc:
            self.best_acc, self.best_epoch = acc, epoch + 1
        self.last = {k: tr[k] for k in ("lr", "train_loss", "train_acc")}
        self.last.update(te)
        row = {"epoch": epoch + 1, "step": self.global_step, "lr": tr["lr"],
               "train_loss": tr["train_loss"], "train_acc": tr["train_acc"],
               "test_loss": te["test_loss"], "test_acc": acc, "epoch_time_s": t_train,
               "images_per_s": tr["images"] / max(t_train, 1e-9)}
        if self.sharded:  # every process writes its shards
            self.save(self.payload(epoch + 1), best=self.best_epoch == epoch + 1)
        if not self.env.main:
            return
        if not self.sharded:
            self.save(self.payload(epoch + 1), best=self.best_epoch == epoch + 1)
        self.folder.add_metrics(row)
        if self.tb is not None:
            for k in ("lr", "train_loss", "train_acc", "test_loss", "test_acc", "images_per_s"):
                if row[k] is not None:
                    self.tb.add_scalar(k, row[k], row["epoch"])
            self.tb.flush()
        test = (f"test loss {te['test_loss']:.4f} acc {acc:5.2f}% (best {self.best_acc:5.2f}%)"
                if acc is not None else "no test set")
        self.log(f"epoch {epoch + 1:3d}/{cfg.epochs} lr {tr['lr']:.2e} train loss "
                 f"{tr['train_loss']:.4f} acc {tr['train_acc']:5.2f}% | {test} | "
                 f"{t_train:.1f}s, {row['images_per_s']:,.0f} img/s")

    def _interrupted(self, where: Tuple[int, int], t_start: float,
                     saved_now: bool) -> TrainingInterrupted:
        summary = self.summary("interrupted", time.perf_counter() - t_start)
        ck = self.out / "checkpoint.pt"
        epoch, step = where
        at = (f"after epoch {epoch}" if step == 0 else
              f"in epoch {epoch + 1} after step {step}/{self.steps}")
        if not saved_now:  # stopped at once: somewhere inside a step
            at = f"during epoch {self.current_epoch + 1}"
        if saved_now and self.saved_any:
            what = f"interrupted {at}; checkpoint {ck} written"
        elif ck.exists():
            what = f"interrupted {at}; the last checkpoint {ck} is kept"
        else:
            what = f"interrupted {at}; no checkpoint had been written yet"
        resume = f"revsnn train --resume {self.out}" if ck.exists() else None
        msg = what + (f". Continue with: {resume}" if resume else "")
        return TrainingInterrupted(msg, summary, resume)


def run_training(
    cfg: TrainConfig,
    model_factory: Optional[Callable] = None,
    log: Optional[Callable[[str], None]] = None,
) -> Tuple[Dict[str, Any], nn.Module]:
    """Train (and evaluate every epoch) as configured; returns ``(summary, model)``.

    ``model_factory(cfg, data_info) -> nn.Module`` replaces the registry lookup (tests, custom
    models). Under torchrun the process group is joined here and left at the end. Resuming a
    run that has done all of ``cfg.epochs`` changes nothing and returns ``(its summary with
    already_complete=True, None)``.
    """
    validate_config(cfg, registry_model=model_factory is None)
    return _train(cfg, lambda: build_data(cfg),
                  lambda data: build_model(cfg, data.info, model_factory), log)


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


def _train(cfg: TrainConfig, make_data: Callable[[], DataBundle],
           make_model: Callable[[DataBundle], nn.Module],
           log: Optional[Callable[[str], None]],
           model: Optional[nn.Module] = None) -> Tuple[Dict[str, Any], Optional[nn.Module]]:
    """Join the process group, seed, build data and model, train. A resumed run that has done
    all its epochs returns at once (``model`` -- when given -- gets the checkpoint's weights;
    otherwise the model returned is None)."""
    log = log or (lambda s: print(s, flush=True))
    if cfg.resume:
        ck = load_checkpoint(cfg.resume)
        if int(ck["epoch"]) >= cfg.epochs:
            if model is not None and ck.get("sharded"):
                from .dcp import load_sharded

                load_sharded(ck, model, None, None)
            elif model is not None:
                load_model_state(model, ck["model"], ck["path"])
            return already_complete(cfg, ck, DistEnv(rank=int(os.environ.get("RANK", 0))),
                                    log), model
    env = init_distributed(cfg.device)
    try:
        torch.manual_seed(cfg.seed)
        if cfg.threads and cfg.threads > 0 and env.device.type == "cpu":
            torch.set_num_threads(int(cfg.threads))
        data = make_data()
        model = make_model(data)
        if cfg.memory_budget is not None:
            from .budget import plan_memory

            cfg = plan_memory(cfg, data, model, env, log,
                              lambda b: _inputs(data, b, None, train=False))
        r = _Run(cfg, env, data, model, log)
        return r.fit(), r.model
    finally:
        cleanup(env)


def run(cfg: TrainConfig, model_factory: Optional[Callable] = None,
        log: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """:func:`run_training` without the model: the summary dict (also in summary.json)."""
    return run_training(cfg, model_factory, log)[0]
