"""``revsnn export``: write a model's inference network as a NIR file.

::

    revsnn export --checkpoint RUN --format nir OUT.nir     # a trained run (folder or file)
    revsnn export --model NAME --format nir OUT.nir         # an untrained registered model

The graph is :func:`revsnn.export.to_nir`'s (one time step; metadata: T, dt, input, readout).
The file is written to a temporary name in the same folder and renamed, so a failed export
leaves nothing behind; an existing OUT is replaced only with ``--force``. Bad input (an unknown
format, a model NIR cannot express, a path that cannot be written) is one line on stderr and
exit code 2.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from .cli import UsageError, _Parser, _user_error, one_line
from .config import TrainConfig, parse_set

__all__ = ["main", "FORMATS"]

FORMATS = ("nir",)


def build_parser() -> _Parser:
    p = _Parser(prog="revsnn export",
                description="Write a model's inference network in an exchange format (NIR: "
                "the Neuromorphic Intermediate Representation, read by snnTorch, SpikingJelly, "
                "Norse, Sinabs, Rockpool, Lava and neuromorphic toolchains).")
    p.add_argument("out", metavar="OUT.nir", help="file to write")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", metavar="RUN", help="checkpoint file or run folder")
    src.add_argument("--model", help="registered model name, exported untrained")
    p.add_argument("--format", required=True, help="exchange format: nir")
    p.add_argument("--T", type=int, help="time steps (with --model; default the model's)")
    p.add_argument("--num-classes", type=int, help="classes (with --model)")
    p.add_argument("--input-shape", metavar="C,H,W",
                   help="per-step input shape (default: the model's channels and image size)")
    p.add_argument("--dt", type=float, default=1e-4,
                   help="seconds per time step of the neurons' discretisation (default 1e-4)")
    p.add_argument("--no-ema", action="store_true", help="export the raw (not EMA) weights")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="model argument for --model, e.g. --set merge=pair (repeatable)")
    p.add_argument("--force", action="store_true", help="replace an existing OUT")
    return p


def _rebuilt(info: Any, kwargs: Dict[str, Any], state: Dict[str, torch.Tensor], path: str):
    """The model of ``state``: classes and input channels read from its tensors."""
    from .checkpoint import load_model_state

    probe = info.build(**kwargs)
    own = dict(probe.named_parameters())
    fc = next((k for k, p in own.items() if p is probe.get_classifier().weight), None)
    if fc is not None and fc in state:
        kwargs["num_classes"] = int(state[fc].shape[0])
    first = next(iter(own), None)
    if first is not None and first in state and state[first].dim() >= 2:
        ratio = state[first].shape[1] / own[first].shape[1]
        if ratio * probe.in_channels == int(ratio * probe.in_channels):
            kwargs["in_channels"] = int(ratio * probe.in_channels)
    model = info.build(**kwargs)
    load_model_state(model, state, path)
    return model


def load_model(args: Any) -> Tuple[torch.nn.Module, str, bool]:
    """``(model in eval mode, its registered name, whether its input is frames)``."""
    from ..data.loaders import DATASETS
    from ..models.registry import model_info

    if args.checkpoint:
        from .checkpoint import load_checkpoint

        ck = load_checkpoint(args.checkpoint)
        cfg = TrainConfig.from_dict(dict(ck["config"]))
        info = model_info(cfg.model)
        kwargs = {"T": cfg.T, "memory_mode": "none", **cfg.model_kwargs}
        ema = (not args.no_ema) and ck.get("ema") is not None and cfg.eval_ema
        model = _rebuilt(info, kwargs, ck["ema"] if ema else ck["model"], ck["path"])
        data_kind = DATASETS.get(cfg.data, ("frames" if cfg.data.startswith("tonic:")
                                            else "image",))[0]
        frames = data_kind == "frames"
        name = cfg.model
    else:
        info = model_info(args.model)
        kwargs: Dict[str, Any] = {"memory_mode": "none", **parse_set(args.set)}
        if args.T is not None:
            kwargs["T"] = args.T
        if args.num_classes is not None:
            kwargs["num_classes"] = args.num_classes
        model = info.build(**kwargs)
        frames = info.input == "frames"
        name = args.model
    return model.eval(), name, frames


def sample_input(model: torch.nn.Module, name: str, frames: bool, shape: Optional[str]
                 ) -> torch.Tensor:
    from ..models.registry import model_info

    if shape:
        try:
            dims = tuple(int(v) for v in shape.split(","))
        except ValueError:
            dims = ()
        if len(dims) != 3 or min(dims) < 1:
            raise UsageError(f"revsnn export: --input-shape must be C,H,W, got {shape!r}")
    else:
        size = getattr(model, "image_size", None) or model_info(name).image_size
        dims = (model.in_channels, int(size), int(size))
    dtype = next(model.parameters()).dtype
    return torch.zeros((model.T, 1) + dims if frames else (1,) + dims, dtype=dtype)


def write_atomic(out: Path, graph: Any, force: bool) -> Path:
    """``nir.write`` into a temporary file beside ``out``, then rename it over ``out``."""
    from ..export import require_nir

    nir = require_nir()
    if out.exists() and not force:
        raise UsageError(f"revsnn export: {out} exists; pass --force to replace it")
    if out.is_dir():
        raise UsageError(f"revsnn export: {out} is a folder; give a file name such as model.nir")
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        nir.write(str(tmp), graph)
        os.replace(tmp, out)
    except OSError as err:
        raise UsageError(f"revsnn export: cannot write {out}: {_reason(err)}") from err
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def _reason(err: OSError) -> str:
    """The system's reason (h5py puts it inside a longer message)."""
    if isinstance(err, FileExistsError):
        return f"{err.filename} is a file, not a folder"
    found = re.search(r"error message = '([^']*)'", str(err))
    if found:
        return found.group(1)
    return err.strerror or str(err).split("(")[0].strip() or type(err).__name__


def main(argv: Optional[List[str]] = None) -> int:
    """``revsnn export``; 0 on success, 2 on bad input."""
    from ..export import ExportError, to_nir
    from .checkpoint import CheckpointError
    from .ownership import refuse_existing

    p = build_parser()
    try:
        try:
            args = p.parse_args(argv)
        except SystemExit as exc:  # --help
            return int(exc.code or 0)
        if args.format.lower() not in FORMATS:
            raise UsageError(f"revsnn export: unknown format {args.format!r}; expected one of "
                             f"{', '.join(FORMATS)}")
        if args.checkpoint and (args.set or args.T is not None or args.num_classes is not None):
            raise UsageError("revsnn export: --T, --num-classes and --set go with --model (a "
                             "checkpoint's model is built from its stored config)")
        if not args.dt > 0:
            raise UsageError(f"revsnn export: --dt must be a positive number of seconds, got "
                             f"{args.dt}")
        out = refuse_existing(args.out, args.force, "OUT")  # no directory; --force replaces
        model, name, frames = load_model(args)
        x = sample_input(model, name, frames, args.input_shape)
        graph = to_nir(model, x, dt=args.dt, name=name)
        write_atomic(out, graph, args.force)
    except ExportError as err:
        print(one_line(f"revsnn export: cannot express the model in NIR: {err}"),
              file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError, ImportError, CheckpointError) as err:
        print(_user_error(err), file=sys.stderr)
        return 2
    print(f"wrote {out}: {name} as NIR ({len(graph.nodes)} nodes, {len(graph.edges)} edges, "
          f"T={graph.metadata['T']}, dt={graph.metadata['dt']:g} s)")
    return 0
