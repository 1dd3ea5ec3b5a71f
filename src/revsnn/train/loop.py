"""The training run: epochs of (augment -> forward all heads -> loss -> step), evaluation,
metrics, checkpoints, resume.

Reproducibility: the data order and every augmentation draw of an epoch depend only on
``(seed, epoch)`` (per-epoch generators); the global torch RNG (dropout) is saved in every
checkpoint. Resuming from the checkpoint of epoch ``k`` therefore continues bit for bit as the
uninterrupted run would.
"""

from __future__ import annotations

import csv
import json
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..data import Loader, check_dataset_name
from ..models.registry import model_entrypoint
from ..reversible.mode import MemoryMode
from .build import (
    DataBundle,
    TrainForward,
    build_data,
    build_model,
    check_model_fits,
    count_parameters,
)
from .checkpoint import load_checkpoint, load_model_state, save_checkpoint
from .config import TrainConfig, save_config
from .distributed import DistEnv, all_reduce_sum, cleanup, init_distributed, wrap_model
from .loss import model_loss, soft_cross_entropy
from .optim import ModelEMA, adaptive_clip_grad, build_optimizer, lr_at, set_lr
from .progress import ProgressBar

__all__ = ["TrainingDiverged", "evaluate", "run", "run_training"]

METRIC_FIELDS = [
    "epoch", "step", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "epoch_time_s",
    "images_per_s",
]


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf; training stopped and the last good checkpoint was kept."""


def _validate(cfg: TrainConfig, factory: Any) -> None:
    check_dataset_name(cfg.data)
    if factory is None:
        model_entrypoint(cfg.model)  # unknown name -> ValueError with suggestions
    MemoryMode.parse(cfg.memory_mode)
    for key in ("T", "epochs", "batch_size", "save_every"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"{key} must be >= 1, got {getattr(cfg, key)}")
    if cfg.lr <= 0:
        raise ValueError(f"lr must be > 0, got {cfg.lr}")
    if cfg.optimizer.lower() not in ("sgd", "adamw", "lamb"):
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; expected sgd, adamw or lamb")
    if cfg.scheduler.lower() not in ("cosine", "step", "constant"):
        raise ValueError(f"unknown scheduler {cfg.scheduler!r}; expected cosine, step or constant")
    if cfg.amp_dtype not in ("auto", "bfloat16", "float16"):
        raise ValueError(f"amp_dtype must be auto, bfloat16 or float16, got {cfg.amp_dtype!r}")


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
    amp_ctx: Callable = nullcontext,
) -> Dict[str, float]:
    """Test loss and accuracy of the final head (summed over ranks)."""
    env = env or DistEnv()
    was = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64)
    for batch in loader:
        x, y = _inputs(data, batch, None, train=False)
        with amp_ctx():
            logits = model(x)
        sums[0] += float(soft_cross_entropy(logits, y)) * len(y)
        sums[1] += float((logits.argmax(1) == y).sum())
        sums[2] += len(y)
    model.train(was)
    all_reduce_sum(sums, env)
    n = max(1.0, float(sums[2]))
    return {"test_loss": float(sums[0]) / n, "test_acc": 100.0 * float(sums[1]) / n}


def _measure_memory(module: TrainForward, data: DataBundle, cfg: TrainConfig,
                    device: torch.device) -> Dict[str, Any]:
    """Peak training memory per image of one step (revsnn.bench.memory), or why not."""
    try:
        from ..bench.memory import measure_training_step
    except ImportError as err:  # the bench module is optional at this level
        return {"mib_per_image": None, "method": f"unavailable ({err})"}
    in_memory = hasattr(data.test, "images")
    batches = [int(b) for b in cfg.memory_batches]

    def make_batch(B: int):
        from ..data.loaders import Batch

        if in_memory:
            xb, yb = data.test.images[:B], data.test.labels[:B]
        else:
            items = [data.test[i] for i in range(B)]
            xb = torch.stack([it[0] for it in items])
            yb = torch.as_tensor([it[1] for it in items])
        b = Batch(xb.to(device), yb.to(device), slice(0, B), B, 0)
        return _inputs(data, b, None, train=False)

    def loss_fn(out, target):
        return model_loss(out, target, cfg.label_smoothing)

    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            return measure_training_step(module, make_batch, loss_fn, device, batches)
    except Exception as err:  # noqa: BLE001 - memory is a report, never a reason to stop
        return {"mib_per_image": None, "method": f"failed ({type(err).__name__}: {err})"}


class _Run:
    """State of one training run (kept small; see :func:`run`)."""

    def __init__(self, cfg: TrainConfig, env: DistEnv, factory: Any, log: Callable[[str], None]):
        self.cfg, self.env, self.log = cfg, env, log
        self.device = env.device
        torch.manual_seed(cfg.seed)
        if cfg.threads and cfg.threads > 0 and self.device.type == "cpu":
            torch.set_num_threads(int(cfg.threads))
        self.data = build_data(cfg)
        info = self.data.info
        self.model = build_model(cfg, info, factory).to(self.device)
        self.params = count_parameters(self.model)
        self.train_loader = Loader(self.data.train, cfg.batch_size, True, cfg.seed, env.rank,
                                   env.world, cfg.num_workers, self.device, cfg.data_on_device)
        self.test_loader = Loader(self.data.test, cfg.batch_size, False, cfg.seed, env.rank,
                                  env.world, cfg.num_workers, self.device, cfg.data_on_device)
        first = next(iter(self.train_loader))
        x, _ = _inputs(self.data, first, None, train=False)
        check_model_fits(self.model, x, info.num_classes, cfg)
        self.steps = len(self.train_loader)
        if cfg.max_steps:
            self.steps = min(self.steps, int(cfg.max_steps))
        self.module = TrainForward(self.model)
        self.optimizer = build_optimizer(self.model, cfg)
        self.ema = ModelEMA(self.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.amp_ctx, self.scaler = _amp(cfg, self.device)
        self.start_epoch, self.global_step = 0, 0
        self.best_acc, self.best_epoch = -1.0, -1
        self.epoch_times: List[float] = []
        self.memory: Dict[str, Any] = {}
        self.out = Path(cfg.out) if cfg.out else None
        if cfg.resume:
            self._resume(cfg.resume)
        elif cfg.measure_memory and env.main:
            self.memory = _measure_memory(self.module, self.data, cfg, self.device)
        else:
            self.memory = {"mib_per_image": None, "method": "not measured"}
        self.ddp = wrap_model(self.module, env, cfg.sync_bn)
        self.tb = None

    # ------------------------------------------------------------------ state
    def _resume(self, path: str) -> None:
        ck = load_checkpoint(path, map_location=self.device)
        load_model_state(self.model, ck["model"], ck["path"])
        try:
            self.optimizer.load_state_dict(ck["optimizer"])
        except (ValueError, KeyError) as err:
            raise ValueError(
                f"checkpoint {ck['path']}: optimizer state does not match ({err})"
            ) from err
        if self.ema is not None:
            if ck.get("ema") is None:
                raise ValueError(f"checkpoint {ck['path']} has no EMA state but ema_decay > 0")
            self.ema.load_state_dict(ck["ema"])
        if self.scaler is not None and ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        rng = ck.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"].cpu())
        if rng.get("cuda") and self.device.type == "cuda":
            torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
        self.start_epoch = int(ck["epoch"])
        self.global_step = int(ck["global_step"])
        self.best_acc, self.best_epoch = float(ck["best_acc"]), int(ck["best_epoch"])
        self.epoch_times = list(ck.get("epoch_times", []))
        self.memory = dict(ck.get("memory", {}))

    def payload(self, epoch: int) -> Dict[str, Any]:
        rng: Dict[str, Any] = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "config": self.cfg.to_dict(), "epoch": epoch, "global_step": self.global_step,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng, "best_acc": self.best_acc, "best_epoch": self.best_epoch,
            "epoch_times": self.epoch_times, "memory": self.memory, "params": self.params,
        }

    # ------------------------------------------------------------------ epochs
    def train_epoch(self, epoch: int) -> Dict[str, float]:
        cfg, env = self.cfg, self.env
        self.ddp.train()
        self.train_loader.set_epoch(epoch)
        gen = _epoch_generator(cfg, epoch)
        bar = ProgressBar(self.steps, f"epoch {epoch + 1}/{cfg.epochs}",
                          enabled=cfg.progress and env.main)
        sums = torch.zeros(3, dtype=torch.float64)  # loss * n, correct, n
        lr = cfg.lr
        for batch in self.train_loader:
            if batch.step >= self.steps:
                break
            lr = lr_at(self.global_step, self.steps, cfg)
            set_lr(self.optimizer, lr)
            x, target = _inputs(self.data, batch, gen, train=True)
            with self.amp_ctx():
                heads = self.ddp(x)
            loss = model_loss(heads, target, cfg.label_smoothing)
            bad = torch.tensor([0.0 if torch.isfinite(loss.detach()) else 1.0])
            if float(all_reduce_sum(bad, env)) > 0:
                raise TrainingDiverged(
                    f"loss became {float(loss.detach())} at epoch {epoch + 1}, step "
                    f"{batch.step + 1} (lr {lr:.3g})"
                )
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
            if self.ema is not None:
                self.ema.update(self.model)
            self.global_step += 1
            n = len(batch.y)
            truth = target if target.dim() == 1 else target.argmax(1)
            correct = float((heads[-1].detach().argmax(1) == truth).sum())
            sums += torch.tensor([float(loss.detach()) * n, correct, n], dtype=torch.float64)
            bar.update(n * env.world, float(loss.detach()), correct * env.world)
        bar.close()
        all_reduce_sum(sums, env)
        n = max(1.0, float(sums[2]))
        return {"lr": lr, "train_loss": float(sums[0]) / n, "train_acc": 100.0 * float(sums[1]) / n,
                "images": n}

    def evaluate(self) -> Dict[str, float]:
        ctx = self.ema.applied(self.model) if (self.ema and self.cfg.eval_ema) else nullcontext()
        with ctx:
            return evaluate(self.model, self.test_loader, self.data, self.env, self.amp_ctx)

    # ------------------------------------------------------------------ files
    def prepare_out(self) -> None:
        if not self.env.main:
            return
        cfg = self.cfg
        if self.out is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            self.out = Path("runs") / f"{cfg.data}_{cfg.model}_{stamp}"
        if not cfg.resume and (self.out / "checkpoint.pt").exists():
            raise FileExistsError(
                f"run folder {self.out} already holds a checkpoint; continue it with --resume "
                f"{self.out} or choose another --out"
            )
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.out / "config.yaml")
        metrics = self.out / "metrics.csv"
        rows: List[Dict[str, str]] = []
        if cfg.resume and metrics.exists():
            with open(metrics, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= self.start_epoch]
        with open(metrics, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
            w.writeheader()
            w.writerows(rows)
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise ImportError(
                    "--tensorboard needs the tensorboard package: "
                    "pip install -e '.[bench]' (or pip install tensorboard)"
                ) from err
            self.tb = SummaryWriter(str(self.out / "tensorboard"))

    def record(self, row: Dict[str, Any]) -> None:
        if not self.env.main:
            return
        with open(self.out / "metrics.csv", "a", newline="") as f:
            csv.DictWriter(f, fieldnames=METRIC_FIELDS).writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
            )
        if self.tb is not None:
            for k in ("lr", "train_loss", "train_acc", "test_loss", "test_acc", "images_per_s"):
                self.tb.add_scalar(k, row[k], row["epoch"])
            self.tb.flush()

    def summary(self, final: Dict[str, Any], status: str, total_time: float) -> Dict[str, Any]:
        cfg = self.cfg
        s = {
            "status": status, "model": cfg.model, "data": cfg.data, "memory_mode": cfg.memory_mode,
            "T": cfg.T, "batch_size": cfg.batch_size, "epochs": cfg.epochs,
            "epochs_done": len(self.epoch_times), "device": str(self.device),
            "world_size": self.env.world, "rank": self.env.rank, "torch": str(torch.__version__),
            "params": self.params,
            "best_test_acc": self.best_acc if self.best_acc >= 0 else None,
            "best_epoch": self.best_epoch if self.best_epoch >= 0 else None,
            "final_test_acc": final.get("test_acc"), "final_train_acc": final.get("train_acc"),
            "final_train_loss": final.get("train_loss"),
            "memory_mib_per_image": self.memory.get("mib_per_image"),
            "memory_method": self.memory.get("method"), "memory": self.memory,
            "time_per_epoch_s": (sum(self.epoch_times) / len(self.epoch_times))
            if self.epoch_times else None,
            "epoch_times_s": self.epoch_times, "total_time_s": total_time,
            "process_cpu_time_s": time.process_time(),
            "run_dir": str(self.out) if self.out else None,
        }
        if self.device.type == "cuda":
            s["cuda_peak_train_mib_per_image"] = (
                torch.cuda.max_memory_allocated(self.device) / 2**20
                / max(1, cfg.batch_size // self.env.world)
            )
        if self.env.main and self.out is not None:
            (self.out / "summary.json").write_text(json.dumps(s, indent=2) + "\n")
        return s

    # ------------------------------------------------------------------ main
    def fit(self) -> Dict[str, Any]:
        cfg, env, log = self.cfg, self.env, self.log
        self.prepare_out()
        t_start = time.perf_counter()
        if env.main:
            mem = self.memory.get("mib_per_image")
            mem_s = f"{mem:.3f} MiB/image" if isinstance(mem, float) else "n/a"
            log(f"revsnn train: {cfg.model} ({self.params:,} params, memory_mode "
                f"{cfg.memory_mode}, T={cfg.T}) on {cfg.data} "
                f"({len(self.data.train)} train / {len(self.data.test)} test), device "
                f"{self.device}, world {env.world}, {self.steps} steps/epoch, memory {mem_s}; "
                f"run folder {self.out}")
        final: Dict[str, Any] = {}
        try:
            for epoch in range(self.start_epoch, cfg.epochs):
                t0 = time.perf_counter()
                tr = self.train_epoch(epoch)
                t_train = time.perf_counter() - t0
                te = self.evaluate()
                self.epoch_times.append(t_train)
                if te["test_acc"] > self.best_acc:
                    self.best_acc, self.best_epoch = te["test_acc"], epoch + 1
                final = {**tr, **te}
                row = {"epoch": epoch + 1, "step": self.global_step, "lr": tr["lr"],
                       "train_loss": tr["train_loss"], "train_acc": tr["train_acc"],
                       "test_loss": te["test_loss"], "test_acc": te["test_acc"],
                       "epoch_time_s": t_train, "images_per_s": tr["images"] / max(t_train, 1e-9)}
                self.record(row)
                if env.main:
                    last = epoch + 1 == cfg.epochs
                    if last or (epoch + 1) % cfg.save_every == 0:
                        payload = self.payload(epoch + 1)
                        save_checkpoint(self.out / "checkpoint.pt", payload)
                        if self.best_epoch == epoch + 1:
                            save_checkpoint(self.out / "best.pt", payload)
                    log(f"epoch {epoch + 1:3d}/{cfg.epochs} lr {tr['lr']:.2e} train loss "
                        f"{tr['train_loss']:.4f} acc {tr['train_acc']:5.2f}% | test loss "
                        f"{te['test_loss']:.4f} acc {te['test_acc']:5.2f}% (best "
                        f"{self.best_acc:5.2f}%) | {t_train:.1f}s, "
                        f"{row['images_per_s']:,.0f} img/s")
        except TrainingDiverged as err:
            total = time.perf_counter() - t_start
            self.summary(final, "diverged", total)
            kept = self.out / "checkpoint.pt" if self.out else None
            keep = (f"the last good checkpoint {kept} is kept" if kept and kept.exists()
                    else "no checkpoint had been written yet")
            raise TrainingDiverged(f"{err}; training stopped, {keep}. Lower --lr or enable "
                                   "grad_clip/agc_clip.") from None
        finally:
            if self.tb is not None:
                self.tb.close()
        return self.summary(final, "finished", time.perf_counter() - t_start)


def run_training(
    cfg: TrainConfig,
    model_factory: Optional[Callable] = None,
    log: Optional[Callable[[str], None]] = None,
) -> Tuple[Dict[str, Any], nn.Module]:
    """Train (and evaluate every epoch) as configured; returns ``(summary, model)``.

    ``model_factory(cfg, data_info) -> nn.Module`` replaces the registry lookup (tests, custom
    models). Under torchrun the process group is joined here and left at the end.
    """
    _validate(cfg, model_factory)
    log = log or (lambda s: print(s, flush=True))
    env = init_distributed(cfg.device)
    try:
        r = _Run(cfg, env, model_factory, log)
        return r.fit(), r.model
    finally:
        cleanup(env)


def run(cfg: TrainConfig, model_factory: Optional[Callable] = None,
        log: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """:func:`run_training` without the model: the summary dict (also in summary.json)."""
    return run_training(cfg, model_factory, log)[0]
