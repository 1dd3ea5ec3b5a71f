"""Command line: ``revsnn train ...`` (:func:`main`) and ``revsnn eval --checkpoint PATH``
(:func:`eval_main`). ``python -m revsnn.train`` and ``torchrun -m revsnn.train`` run :func:`main`.

With no arguments ``revsnn train`` runs the main job: the default model on the embedded digits
on CPU, printing test accuracy, training memory per image and time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..errors import OneLineParser as _Parser  # an argparse error is one line, exit 2
from ..errors import UsageError
from .config import TrainConfig, apply_overrides, load_config_file, parse_set

__all__ = ["UsageError", "eval_main", "main"]




def one_line(text: str) -> str:
    return " ".join(str(text).split())


def _user_error(err: BaseException) -> Optional[str]:
    """The one line printed for an error the user can fix (None: not one; re-raised)."""
    from ..errors import expected_error, is_out_of_memory

    if isinstance(err, UsageError):
        return one_line(err)
    if is_out_of_memory(err) or (isinstance(err, OSError) and err.errno in (28, 27, 122)):
        return expected_error(err)
    if not isinstance(err, (ValueError, TypeError, OSError, ImportError, OverflowError,
                            MemoryError)):
        return expected_error(err)
    if isinstance(err, OSError) and str(err).startswith("[Errno"):  # raw from the system
        where = f" {err.filename}" if err.filename else ""
        return one_line(f"error: cannot access{where}: {err.strerror}; check the paths given "
                        "(--data-dir, --out, --config, --resume)")
    return one_line(f"error: {err}")


# flag -> config key (flags default to None: only flags given on the command line override)
_FLAGS = {
    "model": "model", "data": "data", "data_dir": "data_dir", "T": "T", "epochs": "epochs",
    "batch_size": "batch_size", "lr": "lr", "memory_mode": "memory_mode", "out": "out",
    "device": "device", "seed": "seed", "resume": "resume", "tensorboard": "tensorboard",
    "amp": "amp", "threads": "threads", "save_every": "save_every",
    "memory_budget": "memory_budget", "max_batch": "max_batch", "parallel": "parallel",
    "compile": "compile",
}


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="revsnn train",
        description="Train a revsnn model. Without arguments: T-RevSNN on the embedded 8x8 "
        "digits on CPU (the main job). Precedence: defaults < --config < flags < --set.",
    )
    p.add_argument("--model", help="registered model name (revsnn.list_models())")
    p.add_argument("--data", help="data set: digits, mnist, fashion_mnist, cifar10, cifar100, "
                   "imagefolder, nmnist, dvs_gesture, cifar10_dvs")
    p.add_argument("--data-dir", help="directory holding the data set's files")
    p.add_argument("--T", type=int, help="time steps (T-RevSNN: columns)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="global batch size (split across processes)")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--memory-mode", choices=["none", "checkpoint", "reversible"])
    p.add_argument("--memory-budget", metavar="SIZE",
                   help="device memory per process for training, e.g. 8GiB: per-part memory "
                   "modes chosen by the planner (revsnn plan) replace --memory-mode")
    p.add_argument("--max-batch", action="store_true", default=None,
                   help="with --memory-budget: train at the largest batch size that fits")
    p.add_argument("--config", help="YAML file of config keys (see configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set mixup=0.5 (repeatable)")
    p.add_argument("--out", help="run folder (default runs/<data>_<model>_<time>)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--parallel", choices=["ddp", "fsdp"],
                   help="with several processes (torchrun): ddp replicates the model (default), "
                   "fsdp shards parameters, gradients and optimiser state (FSDP2, distributed "
                   "checkpoints); one process ignores it")
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--resume", metavar="PATH",
                   help="continue from a checkpoint file or run folder (a finished run: pass a "
                   "larger --epochs to train longer)")
    p.add_argument("--save-every", type=int, metavar="N",
                   help="also checkpoint every N optimiser steps (always at each epoch's end)")
    p.add_argument("--tensorboard", action="store_true", default=None,
                   help="also log to <run>/tensorboard (needs tensorboard)")
    p.add_argument("--amp", action="store_true", default=None,
                   help="mixed precision (bfloat16 on CPU, float16 on CUDA)")
    p.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the model (inductor; needs a C++ compiler on CPU, Triton "
                   "on CUDA); compile time is reported apart from the step time")
    p.add_argument("--list-models", action="store_true", help="print model names and exit")
    p.add_argument("--list-data", action="store_true", help="print data set names and exit")
    return p


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults < checkpoint config (with --resume) < --config < flags < --set."""
    cfg = TrainConfig()
    if args.resume:
        from .checkpoint import load_checkpoint

        ck = load_checkpoint(args.resume, resume=True)
        stored = dict(ck["config"])
        stored.pop("resume", None)
        cfg = apply_overrides(cfg, stored)
        if args.out is None:
            cfg = apply_overrides(cfg, {"out": str(Path(ck["path"]).parent)})
        cfg = apply_overrides(cfg, {"resume": ck["path"]})
    if args.config:
        cfg = apply_overrides(cfg, load_config_file(args.config))
    flags: Dict[str, Any] = {}
    for attr, key in _FLAGS.items():
        v = getattr(args, attr, None)
        if v is not None and not (attr == "resume"):
            flags[key] = v
    cfg = apply_overrides(cfg, flags)
    return apply_overrides(cfg, parse_set(args.set))


def _fmt(v: Optional[float], spec: str, unit: str = "") -> str:
    return "n/a" if v is None else f"{v:{spec}}{unit}"


def _parse(parser: argparse.ArgumentParser, argv: Optional[List[str]]):
    """``parser.parse_args``; ``--help`` returns None (exit 0) instead of raising SystemExit."""
    try:
        return parser.parse_args(argv)
    except SystemExit as done:  # --help printed
        if done.code in (0, None):
            return None
        raise


def main(argv: Optional[List[str]] = None) -> int:
    """``revsnn train``; returns the exit code: 0 ok (or nothing left to do), 1 training
    diverged, 2 bad input (one line on stderr, nothing written), 130 interrupted (Ctrl-C:
    checkpoint written, resume command printed)."""
    from .interrupt import TrainingInterrupted
    from .loop import TrainingDiverged, run

    try:
        args = _parse(build_parser(), argv)
        if args is None:
            return 0
        if args.list_models:
            from ..models.registry import list_models

            print("\n".join(list_models()))
            return 0
        if args.list_data:
            from ..data import DATASETS

            for k, (kind, desc) in sorted(DATASETS.items()):
                print(f"{k:14s} {kind:7s} {desc}")
            return 0
        cfg = resolve_config(args)
        summary = run(cfg)
    except TrainingInterrupted as err:
        print(f"revsnn train: {err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("revsnn train: interrupted before training started; nothing was written",
              file=sys.stderr)
        return 130
    except TrainingDiverged as err:
        print(one_line(f"error: {err}"), file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 - expected failures become one line, bugs re-raise
        line = _user_error(err)
        if line is None:
            raise
        print(line, file=sys.stderr)
        return 2
    if summary.get("rank", 0) != 0 or summary.get("already_complete"):
        return 0  # only rank 0 reports; a complete run was reported by the loop
    mem = summary.get("memory_mib_per_image")
    none = summary.get("memory_none_mib_per_image")
    mem_s = (f"training memory {mem:.4f} MiB/image in {summary['memory_mode']} mode"
             if isinstance(mem, float) else f"training memory n/a ({summary.get('memory_method')})")
    if isinstance(mem, float) and isinstance(none, float) and summary["memory_mode"] != "none":
        mem_s += f" (none would need {none:.4f}, {none / mem:.1f}x)"
    print(
        f"done: test accuracy {_fmt(summary['final_test_acc'], '.2f', '%')} (best "
        f"{_fmt(summary['best_test_acc'], '.2f', '%')} at epoch {summary['best_epoch']}) | "
        f"{mem_s} | {_fmt(summary['time_per_epoch_s'], '.1f', ' s/epoch')}, total "
        f"{summary['total_time_s']:.1f} s{_compile_note(summary)} | "
        f"{summary['params']:,} params | run folder {summary['run_dir']}"
    )
    return 0


def _compile_note(summary: Dict[str, Any]) -> str:
    c = summary.get("compile_time_s")
    return f" (of which compiling {c:.1f} s)" if isinstance(c, float) else ""


def eval_main(argv: Optional[List[str]] = None) -> int:
    """``revsnn eval --checkpoint PATH``: test accuracy of a saved model."""
    p = _Parser(prog="revsnn eval", description="Evaluate a saved checkpoint.")
    p.add_argument("--checkpoint", required=True, help="checkpoint file or run folder")
    p.add_argument("--data-dir", help="directory holding the data set's files (the one stored "
                   "in the checkpoint is not used; nothing is ever downloaded)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--no-ema", action="store_true", help="evaluate the raw (not EMA) weights")
    try:
        args = _parse(p, argv)
        if args is None:
            return 0
        acc = evaluate_checkpoint(args.checkpoint, args.data_dir, args.device, args.batch_size,
                                  use_ema=not args.no_ema)
    except KeyboardInterrupt:
        print("revsnn eval: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - expected failures become one line, bugs re-raise
        line = _user_error(err)
        if line is None:
            raise
        print(line, file=sys.stderr)
        return 2
    print(f"{acc['checkpoint']}: {acc['model']} on {acc['data']} test: accuracy "
          f"{acc['test_acc']:.2f}%, loss {acc['test_loss']:.4f} ({acc['n']} images, epoch "
          f"{acc['epoch']}{', EMA weights' if acc['ema'] else ''})")
    return 0


def evaluate_checkpoint(
    path: str, data_dir: Optional[str] = None, device: str = "auto",
    batch_size: Optional[int] = None, use_ema: bool = True,
) -> Dict[str, Any]:
    """Rebuild the model of a checkpoint, load its weights and evaluate its test split.

    The stored config is range-checked first; its ``data_dir`` and ``download`` are not used
    (``data_dir`` comes from the caller only, and nothing is downloaded)."""
    import torch

    from ..data import Loader
    from .build import build_data, build_model
    from .checkpoint import load_checkpoint, load_model_state
    from .checkpoint_check import stored_config
    from .distributed import DistEnv, resolve_device
    from .loop import evaluate

    ck = load_checkpoint(path)
    cfg = stored_config(ck, {"data_dir": data_dir, "download": False})
    dev = resolve_device(device)
    data = build_data(cfg)
    model = build_model(cfg, data.info).to(dev)
    if ck.get("sharded"):  # the shards of a --parallel fsdp run, gathered in this process
        from .dcp import EMAView, check_sharded_matches, load_sharded

        check_sharded_matches(ck, model, None)
        ema = use_ema and cfg.ema_decay > 0 and cfg.eval_ema
        load_sharded(ck, model, None, None)
        if ema:
            load_sharded(ck, model, None, EMAView(model))
    else:
        ema = use_ema and ck.get("ema") is not None and cfg.eval_ema
        load_model_state(model, ck["ema"] if ema else ck["model"], ck["path"])
    loader = Loader(data.test, batch_size or cfg.batch_size, False, device=dev)
    with torch.no_grad():
        res = evaluate(model, loader, data, DistEnv(device=dev))
    return {**res, "checkpoint": ck["path"], "model": cfg.model, "data": cfg.data,
            "epoch": ck.get("epoch"), "n": len(data.test), "ema": ema}
