"""``revsnn convert --published CKPT --model NAME OUT.pt``: a checkpoint saved by the papers'
published code -> a revsnn checkpoint that ``revsnn eval --checkpoint OUT.pt`` reads.

The model is built as ``revsnn train`` / ``revsnn eval`` build it from the run config
(defaults < ``--config`` < flags < ``--set``; ``--model`` is required), with the number of
classes taken from the published classifier unless ``--num-classes`` is given, and filled by
:func:`revsnn.load_published` (explicit name rules; every published tensor used once). The
config stored in the checkpoint says which data ``revsnn eval`` evaluates on, so give the data
set the model was trained on, e.g. ``--config configs/dvs_gesture_revsformer_2_256.yaml``.
An existing ``OUT.pt`` is replaced only with ``--force`` (never a directory); every failure is
one line on stderr and exit code 2, with nothing written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from .config import TrainConfig, apply_overrides, load_config_file, parse_set

__all__ = ["convert_published", "main"]


def consolidate_main(argv: List[str]) -> int:
    """``revsnn convert --consolidate RUN [OUT.pt]``: one checkpoint file from the shards of a
    ``--parallel fsdp`` run (default ``RUN/consolidated.pt``)."""
    from .checkpoint import CheckpointError
    from .dcp import consolidate

    p = argparse.ArgumentParser(prog="revsnn convert --consolidate",
                                description="Write one checkpoint file from the shards of a "
                                "--parallel fsdp run.")
    p.add_argument("run", metavar="RUN", help="run folder or its checkpoint.pt / best.pt")
    p.add_argument("out", nargs="?", metavar="OUT.pt", help="default RUN/consolidated.pt")
    args = p.parse_args(argv)
    try:
        res = consolidate(args.run, args.out)
    except (ValueError, TypeError, OSError, ImportError, CheckpointError) as err:
        print(" ".join(f"error: {err}".split()), file=sys.stderr)
        return 2
    print(f"wrote {res['path']}: {res['model']} at step {res['global_step']} (epoch "
          f"{res['epoch']}); evaluate with revsnn eval --checkpoint {res['path']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .cli import _Parser

    p = _Parser(
        prog="revsnn convert",
        description="Convert a checkpoint of the published RevSNN / T-RevSNN code into a revsnn "
        "checkpoint (the format of 'revsnn eval --checkpoint').",
    )
    p.add_argument("out", metavar="OUT.pt", help="revsnn checkpoint to write")
    p.add_argument("--published", required=True, metavar="CKPT",
                   help="checkpoint file saved by the published code")
    p.add_argument("--model", required=True, help="registered model name (revsnn models)")
    p.add_argument("--config", help="YAML run config (the data set and recipe to evaluate on)")
    p.add_argument("--data", help="data set the model is evaluated on (see revsnn train --help)")
    p.add_argument("--data-dir", help="directory holding the data set's files")
    p.add_argument("--T", type=int, help="time steps (T-RevSNN: columns)")
    p.add_argument("--num-classes", type=int,
                   help="classes of the model (default: the published classifier's)")
    ema = p.add_mutually_exclusive_group()
    ema.add_argument("--ema", dest="ema", action="store_true", default=None,
                     help="require the checkpoint's EMA weights")
    ema.add_argument("--no-ema", dest="ema", action="store_false",
                     help="take the trained (not EMA) weights")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any run-config key (repeatable)")
    p.add_argument("--force", action="store_true", help="replace an existing OUT.pt")
    return p


def convert_published(
    published: str, model: str, out: str, cfg: TrainConfig, num_classes: Optional[int] = None,
    ema: Optional[bool] = None,
) -> Dict[str, Any]:
    """Load ``published`` into ``model`` (built from ``cfg``) and save a revsnn checkpoint."""
    from ..models.published import load_published, read_published
    from .checkpoint import save_checkpoint

    state, entry = read_published(published, ema)
    kwargs: Dict[str, Any] = {"T": cfg.T, "memory_mode": cfg.memory_mode, **cfg.model_kwargs}
    if num_classes is not None:
        kwargs["num_classes"] = int(num_classes)
    m = load_published(model, state, ema=False, **kwargs)
    path = save_checkpoint(out, {
        "config": cfg.to_dict(), "epoch": 0, "global_step": 0, "model": m.state_dict(),
        "ema": None, "published": {"source": str(published), "entry": entry, "model": model},
    })
    return {"path": str(path), "entry": entry, "num_classes": m.num_classes,
            "params": sum(p.numel() for p in {id(p): p for p in m.parameters()}.values())}


def main(argv: Optional[List[str]] = None) -> int:
    """``revsnn convert``; returns 0 on success, 2 on bad input."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--consolidate" in argv:
        argv.remove("--consolidate")
        return consolidate_main(argv)
    from ..errors import expected_error
    from .cli import _parse
    from .ownership import refuse_existing

    try:
        args = _parse(build_parser(), argv)
        if args is None:
            return 0
        refuse_existing(args.out, args.force, "OUT.pt")
        cfg = TrainConfig()
        if args.config:
            cfg = apply_overrides(cfg, load_config_file(args.config))
        flags = {"model": args.model, "data": args.data, "data_dir": args.data_dir, "T": args.T}
        cfg = apply_overrides(cfg, {k: v for k, v in flags.items() if v is not None})
        cfg = apply_overrides(cfg, parse_set(args.set))
        res = convert_published(args.published, args.model, args.out, cfg, args.num_classes,
                                args.ema)
    except Exception as err:  # noqa: BLE001 - expected failures become one line, bugs re-raise
        line = expected_error(err)
        if line is None:
            raise
        print(line if line.startswith("revsnn ") else f"revsnn convert: {line}",
              file=sys.stderr)
        return 2
    print(f"wrote {res['path']}: {args.model} ({res['params']:,} params, {res['num_classes']} "
          f"classes) from {Path(args.published).name} [{res['entry']}]; evaluate with "
          f"revsnn eval --checkpoint {res['path']}")
    return 0
