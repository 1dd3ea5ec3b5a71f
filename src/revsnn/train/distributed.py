"""Data-parallel training across processes (``torchrun --nproc_per_node=N -m revsnn.train``).

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`init_distributed` then joins the process group (NCCL on CUDA, gloo on CPU) and picks
``cuda:LOCAL_RANK``. ``--batch-size`` is the *global* batch: each of the ``N`` processes runs
``batch_size / N`` samples, the contiguous share of the global batch (see
:class:`revsnn.data.Loader`), and DistributedDataParallel averages the gradients, so N processes
take the same step as one process on the whole batch. Only rank 0 prints, writes files and saves
checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistEnv", "all_reduce_sum", "barrier", "cleanup", "init_distributed", "parse_device",
    "resolve_device", "wrap_model",
]


@dataclass
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def parse_device(name: str) -> None:
    """Refuse a device name that training cannot use, with the accepted forms."""
    if name == "auto":
        return
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {name!r}; expected auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available here; use "
                         "--device cpu (or auto)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} requested but MPS is not available here; use "
                         "--device cpu (or auto)")


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    parse_device(name)
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available here")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    return dev


def init_distributed(device: str = "auto") -> DistEnv:
    """Join the process group when launched by torchrun (``WORLD_SIZE > 1``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv(device=resolve_device(device))
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing and not dist.is_initialized():
        raise ValueError(f"WORLD_SIZE={world} but no process group to join ({', '.join(missing)} "
                         "unset); launch with torchrun --nproc_per_node=N")
    rank = int(os.environ["RANK"]) if "RANK" in os.environ else dist.get_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    created = False
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        created = True
    return DistEnv(rank, world, local_rank, dev, created)


def wrap_model(module: nn.Module, env: DistEnv, sync_bn: bool = False) -> nn.Module:
    """DistributedDataParallel (and optionally SyncBatchNorm, CUDA only) for ``world > 1``."""
    if not env.distributed:
        if sync_bn and env.main:
            print("note: sync_bn has no effect in a single process")
        return module
    if sync_bn:
        if env.device.type != "cuda":
            raise ValueError("sync_bn needs CUDA devices (SyncBatchNorm does not run on CPU)")
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    ids = [env.device.index] if env.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


def all_reduce_sum(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def cleanup(env: Optional[DistEnv]) -> None:
    if env is not None and env.initialized_here and dist.is_initialized():
        dist.destroy_process_group()
