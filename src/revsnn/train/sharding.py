"""Sharded data parallelism with PyTorch's FSDP2 (``--parallel fsdp`` under ``torchrun``).

Each process holds ``1/N`` of every parameter, gradient and optimiser state (DTensors sharded on
dim 0, :func:`torch.distributed.fsdp.fully_shard`). The units that are gathered and freed as a
whole are the model's *parts* (:meth:`revsnn.models.base.SpikingModel.parts`: reversible
sequences or stages, temporal columns, stems, downsampling layers, tokenizer stages), its
classifier head (``head_name``) and the root (whatever parameters are left). A part is the
module whose forward holds a whole recomputing autograd Function, so the Function sees the
gathered parameters both in the forward and -- FSDP's pre-backward hook gathers them again -- in
the recomputation of its backward; its gradients are reduce-scattered (averaged over processes)
as soon as that unit's backward is done, and the gathered copy is freed.

**BatchNorm.** As under DDP without ``sync_bn``, each process normalises with the statistics of
its own share of the global batch. The running statistics are then averaged over processes after
every step (:func:`sync_buffers`), so that every process holds the same buffers (DDP instead
copies rank 0's). The one-process oracle that N processes equal is therefore: the global batch
cut into the same N shares, each share's forward/backward with the loss divided by N (gradient
accumulation), each share's running statistics starting from the same values and averaged.

**Mixed precision** (CUDA): ``fsdp_param_dtype=bfloat16`` gathers and computes in bfloat16 and
reduces gradients in ``fsdp_reduce_dtype`` (float32 by default); the sharded master weights and
the optimiser state stay in float32. On CPU the policy is refused (gloo has no bfloat16
reduce-scatter worth using).
"""

from __future__ import annotations

import warnings
from typing import Dict, List, Optional

import torch
import torch.distributed as dist
from torch import nn

from ..plan.sharded import shard_units

__all__ = [
    "PARALLEL_MODES", "ShardedEMA", "check_parallel", "is_sharded", "shard_for_run",
    "shard_model", "shard_units", "sync_buffers",
]

PARALLEL_MODES = ("ddp", "fsdp")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_parallel(parallel: str, world: int, batch_size: int,
                   param_dtype: Optional[str] = None, reduce_dtype: str = "float32") -> None:
    """Refuse an unknown mode, a global batch the processes cannot share evenly, and an unknown
    precision (one line each)."""
    if parallel not in PARALLEL_MODES:
        raise ValueError(f"--parallel {parallel!r}: expected one of {', '.join(PARALLEL_MODES)}")
    if world > 1 and batch_size % world:
        raise ValueError(f"--batch-size {batch_size} is a global batch that {world} processes "
                         f"cannot share evenly; use a multiple of {world}")
    for key, value in (("fsdp_param_dtype", param_dtype), ("fsdp_reduce_dtype", reduce_dtype)):
        if value is not None and value not in _DTYPES:
            raise ValueError(f"{key} {value!r}: expected one of {', '.join(_DTYPES)}")


def _policy(param_dtype: Optional[str], reduce_dtype: str, device: torch.device):
    if param_dtype is None:
        return None
    if device.type != "cuda":
        raise ValueError("fsdp_param_dtype needs CUDA devices (mixed precision under FSDP is a "
                         "GPU feature); drop --set fsdp_param_dtype on CPU")
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=_DTYPES[param_dtype],
                                reduce_dtype=_DTYPES[reduce_dtype])


def shard_model(model: nn.Module, device: torch.device, param_dtype: Optional[str] = None,
                reduce_dtype: str = "float32") -> List[str]:
    """``fully_shard`` every unit of :func:`shard_units`, then ``model`` as the root (in place;
    the default process group, one mesh dimension over all processes). ``forward_heads`` (the
    multi-head forward that training calls) is registered as a forward method of the root.
    Returns the unit names."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    if not dist.is_initialized():
        raise ValueError("--parallel fsdp needs a process group: launch with torchrun "
                         "--nproc_per_node=N (or call fit/run_training inside one)")
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    kw = {"mesh": mesh}
    mp = _policy(param_dtype, reduce_dtype, device)
    if mp is not None:
        kw["mp_policy"] = mp
    # FSDP warns when a unit returns a view (an in-place op on it by the next module would skip
    # the gather); the parts' outputs are only read out of place -- the exactness tests of every
    # family and memory mode against the one-process oracle check it.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view")
    units = shard_units(model)
    for unit in units.values():
        fully_shard(unit, **kw)
    fully_shard(model, **kw)
    if callable(getattr(model, "forward_heads", None)):
        register_fsdp_forward_method(model, "forward_heads")
    return list(units)


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model`` (or a module inside it) was passed to ``fully_shard``."""
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in model.modules())


@torch.no_grad()
def sync_buffers(model: nn.Module) -> None:
    """Average the floating-point buffers (BatchNorm running statistics) over the processes;
    integer buffers (``num_batches_tracked``) are equal on every process already."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    bufs = [b for b in model.buffers() if b.is_floating_point()]
    if not bufs:
        return
    flat = torch.cat([b.reshape(-1) for b in bufs])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    i = 0
    for b in bufs:
        b.copy_(flat[i:i + b.numel()].view_as(b))
        i += b.numel()


class ShardedEMA:
    """Exponential moving average of a sharded model, held as shards (DTensors) like the model:
    ``w_ema <- decay * w_ema + (1 - decay) * w`` for parameters and floating-point buffers
    (integer buffers are copied), starting from the model's weights -- the update of
    :func:`revsnn.train.optim.ema_update`. ``state_dict()`` has the model's keys."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.model = model
        self.values: Dict[str, torch.Tensor] = {
            k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self) -> None:
        own = self.model.state_dict()
        for k, e in self.values.items():
            v = own[k].detach()
            if e.is_floating_point():
                e.lerp_(v, 1.0 - self.decay)
            else:
                e.copy_(v)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return self.values

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange the model's weights and the averages (call twice to restore)."""
        own = self.model.state_dict()
        for k, e in self.values.items():
            tmp = own[k].detach().clone()
            own[k].copy_(e)
            e.copy_(tmp)


def shard_for_run(model: nn.Module, cfg, env) -> bool:
    """The run's sharding decision (``revsnn train`` / ``fit``): check ``cfg.parallel`` and
    the global batch against the world size and a sharded checkpoint to resume against the
    model, then ``fully_shard`` when ``parallel="fsdp"`` and there are several processes (one
    process trains the whole model: the flag has nothing to shard). Returns whether the model
    is sharded."""
    check_parallel(cfg.parallel, env.world, cfg.batch_size, cfg.fsdp_param_dtype,
                   cfg.fsdp_reduce_dtype)
    use = cfg.parallel == "fsdp" and env.world > 1
    if cfg.resume:
        from .checkpoint import load_checkpoint
        from .dcp import check_sharded_matches

        ck = load_checkpoint(cfg.resume)
        if ck.get("sharded"):
            check_sharded_matches(ck, model, cfg.parallel if env.world > 1 else None)
    if use:
        shard_model(model, env.device, cfg.fsdp_param_dtype, cfg.fsdp_reduce_dtype)
    return use
