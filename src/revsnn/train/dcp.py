"""Distributed checkpoints of a sharded run (``--parallel fsdp``), with PyTorch's DCP.

A sharded run's ``checkpoint.pt`` (and ``best.pt``) holds everything but the tensors of the
model, the optimiser and the EMA -- config, epoch, step, scheduler position, data position,
epoch state, metrics -- plus ``"sharded": {"dir", "world", "parallel"}``; the tensors are in the
folder ``<run>/<name>-<step>.dcp`` written by every process at once
(:func:`torch.distributed.checkpoint.save` of
:func:`~torch.distributed.checkpoint.state_dict.get_state_dict`: the model and optimiser state
keyed by parameter name, each process writing its own shards) together with each process's RNG
state. The small file is replaced atomically only after the folder is complete, and the previous
folder is removed after that, so a crash leaves the old checkpoint or the new one.

Loading goes through :func:`~torch.distributed.checkpoint.state_dict.set_state_dict`, which
reshards: the same world size continues bit for bit; another world size (2 -> 1, 1 -> 2) loads
the same full tensors cut differently (see :func:`load_sharded`). ``revsnn convert
--consolidate RUN`` turns a sharded checkpoint into the single file of a one-process run.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn

from .checkpoint import CheckpointError, save_checkpoint

__all__ = ["EMAView", "check_sharded_matches", "consolidate", "full_optimizer_state",
           "load_sharded", "load_single_into_sharded", "resume_tensors", "save_sharded",
           "sharded_entry"]


def _rank() -> Tuple[int, int]:
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _state(model: nn.Module, optimizer: Optional[torch.optim.Optimizer],
           ema: Any) -> Dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    if optimizer is not None:
        m, o = get_state_dict(model, optimizer)
        state: Dict[str, Any] = {"model": m, "optim": o}
    else:
        state = {"model": get_model_state_dict(model)}
    if ema is not None:
        state["ema"] = ema.state_dict()
    return state


def save_sharded(out: Path, name: str, meta: Dict[str, Any], model: nn.Module,
                 optimizer: torch.optim.Optimizer, ema: Any, parallel: str) -> Path:
    """Every process writes its shards into ``<out>/<name>-<step>.dcp``; rank 0 then writes
    ``<out>/<name>.pt`` (``meta`` + where the shards are) and removes the older folder."""
    import torch.distributed.checkpoint as dcp

    rank, world = _rank()
    folder = out / f"{name}-{int(meta['global_step'])}.dcp"
    state = _state(model, optimizer, ema)
    state[f"rng_{rank}"] = torch.get_rng_state()
    if rank == 0 and folder.exists():
        shutil.rmtree(folder)
    if dist.is_initialized():
        dist.barrier()
    dcp.save(state, checkpoint_id=str(folder))
    if dist.is_initialized():
        dist.barrier()
    path = out / f"{name}.pt"
    if rank == 0:
        old = sharded_entry(path)
        save_checkpoint(path, {**meta, "model": None, "optimizer": None, "ema": None,
                               "sharded": {"dir": folder.name, "world": world,
                                           "parallel": parallel}})
        if old is not None and old["dir"] != folder.name:
            shutil.rmtree(out / old["dir"], ignore_errors=True)
    if dist.is_initialized():
        dist.barrier()
    return path


def sharded_entry(path: Path) -> Optional[Dict[str, Any]]:
    """The ``"sharded"`` entry of a checkpoint file (None for a single-file checkpoint)."""
    if not Path(path).is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a broken file is reported by load_checkpoint
        return None
    return data.get("sharded") if isinstance(data, dict) else None


def _metadata(ck: Dict[str, Any]):
    from torch.distributed.checkpoint import FileSystemReader

    folder = Path(ck["path"]).parent / ck["sharded"]["dir"]
    if not (folder / ".metadata").is_file():
        raise CheckpointError(f"checkpoint {ck['path']}: its shards {folder} are missing or "
                              "incomplete; resume from another checkpoint of the run")
    return folder, FileSystemReader(str(folder)).read_metadata().state_dict_metadata


def check_sharded_matches(ck: Dict[str, Any], model: nn.Module,
                          parallel: Optional[str]) -> None:
    """Refuse shards of another sharding mode (``parallel``; None: any) or of another model
    (names or shapes differ); call before the model is sharded (it reads the full shapes)."""
    if parallel is not None and ck["sharded"].get("parallel") != parallel:
        raise CheckpointError(
            f"checkpoint {ck['path']} was written by --parallel {ck['sharded'].get('parallel')}"
            f", not {parallel}; resume with --parallel {ck['sharded'].get('parallel')} or write "
            f"one file first: revsnn convert --consolidate {Path(ck['path']).parent}")
    _, meta = _metadata(ck)
    saved = {k[len("model."):]: tuple(v.size) for k, v in meta.items()
             if k.startswith("model.") and hasattr(v, "size")}
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if saved != own:
        missing = sorted(set(own) - set(saved))[:3]
        extra = sorted(set(saved) - set(own))[:3]
        shapes = [k for k in own if k in saved and own[k] != saved[k]][:3]
        raise CheckpointError(
            f"checkpoint {ck['path']} holds the shards of another model than "
            f"{type(model).__name__} (missing {missing}, unexpected {extra}, other shapes "
            f"{shapes})")


def load_sharded(ck: Dict[str, Any], model: nn.Module,
                 optimizer: Optional[torch.optim.Optimizer], ema: Any) -> None:
    """Load the shards of ``ck`` into ``model`` / ``optimizer`` / ``ema`` (sharded or not:
    DCP reshards) and this process's RNG state (rank 0's when the run had fewer processes)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_state_dict

    folder, meta = _metadata(ck)
    rank, _ = _rank()
    state = _state(model, optimizer, ema)
    key = f"rng_{rank}" if f"rng_{rank}" in meta else "rng_0"
    state[key] = torch.get_rng_state()
    if ema is not None and not any(k.startswith("ema.") for k in meta):
        raise CheckpointError(f"checkpoint {ck['path']} has no EMA state but ema_decay > 0")
    dcp.load(state, checkpoint_id=str(folder))
    if optimizer is not None:
        set_state_dict(model, optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optim"])
    else:
        set_model_state_dict(model, state["model"])
    torch.set_rng_state(state[key])


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer,
                         state: Dict[str, Any]) -> Dict[str, Any]:
    """A one-process ``optimizer.state_dict()`` (parameters by index, in the order of
    ``optimizer``'s groups) keyed by parameter name, the form ``set_state_dict`` takes."""
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
    groups = []
    for g, own in zip(state["param_groups"], optimizer.param_groups):
        # the keys this optimiser has (a scheduler adds initial_lr; the run sets the rates)
        groups.append({**{k: v for k, v in g.items() if k in own},
                       "params": [order[i] for i in g["params"]]})
    return {"state": {order[i]: dict(v) for i, v in state["state"].items()},
            "param_groups": groups}


def consolidate(run: str, out: Optional[str] = None) -> Dict[str, Any]:
    """``revsnn convert --consolidate RUN``: the sharded checkpoint of ``RUN`` as one
    checkpoint file (``<RUN>/consolidated.pt`` unless ``out``) that ``revsnn eval`` and
    ``revsnn train --resume`` in one process read."""
    from .build import build_data, build_model
    from .checkpoint import load_checkpoint
    from .config import TrainConfig
    from .optim import build_optimizer

    ck = load_checkpoint(run)
    if not ck.get("sharded"):
        raise CheckpointError(f"{ck['path']} is a single-file checkpoint already; nothing to "
                              "consolidate")
    cfg = TrainConfig.from_dict(dict(ck["config"]))
    torch.manual_seed(cfg.seed)
    data = build_data(cfg)
    model = build_model(cfg, data.info)
    check_sharded_matches(ck, model, ck["sharded"]["parallel"])
    optimizer = build_optimizer(model, cfg)
    ema = _PlainEMA(model) if cfg.ema_decay > 0 else None
    load_sharded(ck, model, optimizer, ema)
    payload = {k: v for k, v in ck.items() if k not in ("path", "sharded", "format", "version")}
    payload.update(model=model.state_dict(), optimizer=optimizer.state_dict(),
                   ema=ema.values if ema is not None else None)
    target = Path(out) if out else Path(ck["path"]).parent / "consolidated.pt"
    save_checkpoint(target, payload)
    return {"path": str(target), "model": cfg.model, "epoch": ck.get("epoch"),
            "global_step": ck.get("global_step")}


class _PlainEMA:
    """The EMA values of a one-process model, keyed like its state dict (for loading)."""

    def __init__(self, model: nn.Module) -> None:
        self.values = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return self.values


class EMAView:
    """The state dict of a one-process EMA model (``AveragedModel.module``) for DCP, which
    loads in place."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return self.module.state_dict()


def load_single_into_sharded(ck: Dict[str, Any], model: nn.Module,
                             optimizer: torch.optim.Optimizer, ema: Any) -> None:
    """A one-process checkpoint file into a sharded model, optimiser and EMA (1 -> N)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )
    from torch.distributed.tensor import DTensor, distribute_tensor

    full = StateDictOptions(full_state_dict=True)
    own = model.state_dict()
    if set(own) != set(ck["model"]) or any(
            tuple(own[k].shape) != tuple(v.shape) for k, v in ck["model"].items()):
        raise CheckpointError(f"checkpoint {ck['path']} does not match the model "
                              f"{type(model).__name__} (names or shapes differ)")
    set_model_state_dict(model, dict(ck["model"]), options=full)  # (it fills the dict given)
    if ck.get("optimizer") is not None:
        try:
            state = full_optimizer_state(model, optimizer, ck["optimizer"])
        except (IndexError, KeyError) as err:
            raise CheckpointError(f"checkpoint {ck['path']}: optimizer state does not match "
                                  f"({err})") from err
        set_optimizer_state_dict(model, optimizer, state, options=full)
    if ema is not None:
        if ck.get("ema") is None:
            raise CheckpointError(f"checkpoint {ck['path']} has no EMA state but "
                                  "ema_decay > 0")
        with torch.no_grad():
            for k, e in ema.state_dict().items():
                v = ck["ema"][k].to(e.device, e.dtype)
                if isinstance(e, DTensor):
                    v = distribute_tensor(v, e.device_mesh, e.placements)
                e.copy_(v)
    rng = ck.get("rng", {})
    if "torch" in rng:
        torch.set_rng_state(rng["torch"].cpu())


def resume_tensors(ck: Dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
                   ema: Any, sharded: bool) -> None:
    """Model, optimiser, EMA and RNG of ``ck`` into a run: DCP shards into a sharded or a
    one-process run (N -> N, N -> 1), or a one-process file into a sharded run (1 -> N)."""
    if ck.get("sharded"):
        view = ema if ema is None or sharded else EMAView(ema.module)
        load_sharded(ck, model, optimizer, view)
    else:
        load_single_into_sharded(ck, model, optimizer, ema)
