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
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import nn

from ..data import Loader
from ..models.objective import TrainForward
from .build import DataBundle, build_data, build_model, check_model_fits, count_parameters
from .checkpoint import load_checkpoint, load_model_state
from .compiling import check_compile, compile_for_training
from .config import TrainConfig, validate_config
from .distributed import DistEnv, all_reduce_sum, cleanup, init_distributed, wrap_model
from .finite import NonFiniteData, StepGuard, check_hyperparameters
from .interrupt import StopRequest, TrainingInterrupted
from .memory_report import measure_run_memory, memory_matches
from .optim import build_ema, build_optimizer, build_scheduler
from .payload import already_complete, checkpoint_payload, resume_state, save
from .report import end_epoch, header, interrupted, summary
from .run_folder import METRIC_FIELDS, RunFolder
from .sharding import ShardedEMA, shard_for_run
from .step import (
    StopTraining,
    TrainingDiverged,
    amp_context,
    batch_inputs,
    evaluate,
    train_epoch,
)

__all__ = ["METRIC_FIELDS", "NonFiniteData", "TrainingDiverged", "TrainingInterrupted",
           "evaluate", "run", "run_training", "train_model"]


class _Run:
    """State of one training run (see :func:`run_training`)."""

    def __init__(self, cfg: TrainConfig, env: DistEnv, data: DataBundle, model: nn.Module,
                 log: Callable[[str], None]) -> None:
        self.cfg, self.env, self.log, self.data = cfg, env, log, data
        self.device = env.device
        if cfg.compile:
            check_compile(self.device)
        self.model = model.to(self.device)
        self.params = count_parameters(self.model)
        self.train_loader = Loader(data.train, cfg.batch_size, True, cfg.seed, env.rank,
                                   env.world, cfg.num_workers, self.device, cfg.data_on_device)
        self.test_loader = None if data.test is None else Loader(
            data.test, cfg.batch_size, False, cfg.seed, env.rank, env.world, cfg.num_workers,
            self.device, cfg.data_on_device)
        first = next(iter(self.train_loader))
        x, _ = batch_inputs(self.data, first, None, train=False)
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
        self.amp_ctx, self.scaler = amp_context(cfg, self.device)
        self.start_epoch, self.start_step, self.global_step = 0, 0, 0
        self.epoch_state: Optional[Dict[str, Any]] = None
        self.best_acc, self.best_epoch = -1.0, -1
        self.epoch_times: list = []
        self.last: Dict[str, Any] = {}  # metrics of the last completed epoch
        self.memory: Dict[str, Any] = {"mib_per_image": None, "method": "not measured"}
        self.saved_any = False
        self.stop: Optional[StopRequest] = None
        self.current_epoch = 0
        ck = (load_checkpoint(cfg.resume, map_location=self.device, resume=True)
              if cfg.resume else None)
        self.guard = StepGuard(self.model, cfg.skip_nonfinite,
                               int(ck.get("skipped_nonfinite", 0)) if ck else 0)
        self.source = Path(ck["path"]).parent if ck else None
        out = cfg.out or (str(Path(ck["path"]).parent) if ck else None)
        if out is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out = str(Path("runs") / f"{cfg.data.replace(':', '-')}_{cfg.model}_{stamp}")
        self.folder = RunFolder(Path(out))
        if env.main:
            self.folder.check(resume=ck is not None, source=self.source)
        if ck is not None:
            resume_state(self, ck)
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
                    lambda b: batch_inputs(self.data, b, None, train=False))
        self.compile_clock = compile_for_training(self.model) if cfg.compile else None
        self.ddp = self.module if self.sharded else wrap_model(self.module, env, cfg.sync_bn)
        self.tb = None

    @property
    def out(self) -> Path:
        return self.folder.path

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

    # ------------------------------------------------------------------ main
    def fit(self) -> Dict[str, Any]:
        cfg, env, log = self.cfg, self.env, self.log
        if env.main:
            self.folder.claim(cfg, self.source, new=not cfg.resume)
        t_start = time.perf_counter()
        where = (self.start_epoch, self.start_step)
        try:
            with StopRequest(log if env.main else None) as self.stop:
                if env.main:
                    log(header(self))
                    if cfg.tensorboard:
                        from torch.utils.tensorboard import SummaryWriter

                        self.tb = SummaryWriter(str(self.out / "tensorboard"))
                for epoch in range(self.start_epoch, cfg.epochs):
                    self.current_epoch = epoch
                    resumed = epoch == self.start_epoch
                    tr = train_epoch(self, epoch, self.start_step if resumed else 0,
                                     self.epoch_state if resumed else None)
                    where = (epoch, tr["step"])
                    if tr["stopped"]:
                        save(self, checkpoint_payload(self, epoch, tr["step"], tr["state"]))
                        raise StopTraining
                    try:
                        te = self.evaluate()
                    except StopTraining:  # evaluation left for the resumed run
                        save(self, checkpoint_payload(self, epoch, tr["step"], tr["state"]))
                        raise
                    end_epoch(self, epoch, tr, te)
                    where = (epoch + 1, 0)
                    if self._stop_requested():
                        raise StopTraining
        except StopTraining:
            raise interrupted(self, where, t_start, saved_now=True) from None
        except TrainingInterrupted:
            raise
        except KeyboardInterrupt:  # a second Ctrl-C, or not the main thread
            raise interrupted(self, where, t_start, saved_now=False) from None
        except TrainingDiverged as err:
            summary(self, "diverged", time.perf_counter() - t_start)
            kept = self.out / "checkpoint.pt"
            keep = (f"the last good (finite) checkpoint {kept} is kept" if kept.exists()
                    else "no checkpoint had been written yet")
            raise TrainingDiverged(f"training diverged: {err}; training stopped, {keep}. Lower "
                                   "--lr or enable grad_clip/agc_clip (or --set "
                                   "skip_nonfinite=N).") from None
        except BaseException:
            if env.main and not self.saved_any and not cfg.resume:
                self.folder.remove_created()  # failed before any work: no half-made folder
            raise
        finally:
            if self.tb is not None:
                self.tb.close()
            if env.main:
                self.folder.release()
        return summary(self, "finished", time.perf_counter() - t_start)

    def _stop_requested(self) -> bool:
        flag = torch.tensor([1.0 if self.stop is not None and self.stop.requested else 0.0])
        return float(all_reduce_sum(flag, self.env)) > 0


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
    check_hyperparameters(cfg)
    return train_model(cfg, lambda: build_data(cfg),
                  lambda data: build_model(cfg, data.info, model_factory), log)


def train_model(cfg: TrainConfig, make_data: Callable[[], DataBundle],
           make_model: Callable[[DataBundle], nn.Module],
           log: Optional[Callable[[str], None]],
           model: Optional[nn.Module] = None) -> Tuple[Dict[str, Any], Optional[nn.Module]]:
    """Join the process group, seed, build data (``make_data()``) and model
    (``make_model(data)``), train; returns ``(summary, model)``. A resumed run that has done
    all its epochs returns at once (``model`` -- when given -- gets the checkpoint's weights;
    otherwise the model returned is None)."""
    log = log or (lambda s: print(s, flush=True))
    if cfg.resume:
        ck = load_checkpoint(cfg.resume, resume=True)
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
                              lambda b: batch_inputs(data, b, None, train=False))
        r = _Run(cfg, env, data, model, log)
        return r.fit(), r.model
    finally:
        cleanup(env)


def run(cfg: TrainConfig, model_factory: Optional[Callable] = None,
        log: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """:func:`run_training` without the model: the summary dict (also in summary.json)."""
    return run_training(cfg, model_factory, log)[0]
