"""Workers of tests/test_fsdp.py: one 2-process gloo group trains every family x memory mode
with FSDP2 and writes the results; the one-process oracle of the same global batches."""

import os
from typing import Dict, List, Tuple

import torch
import torch.distributed as dist

from revsnn.models.objective import TrainForward, model_loss
from revsnn.models.registry import list_models, model_info
from revsnn.train.sharding import shard_model, sync_buffers

STEPS, BATCH, LR = 3, 4, 1e-2


def cases() -> List[Tuple[str, str]]:
    return [(name, mode) for name in list_models("*_test")
            if model_info(name).cls.__module__.startswith("revsnn.")  # not tests' own models
            for mode in model_info(name).memory_modes]


def build(name: str, mode: str) -> torch.nn.Module:
    torch.manual_seed(0)
    info = model_info(name)
    return info.build(memory_mode=mode).double()


def batches(name: str) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    info = model_info(name)
    g = torch.Generator().manual_seed(1)
    return [(torch.rand(BATCH, info.in_channels, info.image_size, info.image_size,
                        generator=g, dtype=torch.float64),
             torch.randint(0, info.num_classes, (BATCH,), generator=g)) for _ in range(STEPS)]


def optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.05)


def full_state(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    from torch.distributed.tensor import DTensor

    return {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().clone()
            for k, v in model.state_dict().items()}


def oracle(name: str, mode: str, world: int = 2) -> Dict[str, torch.Tensor]:
    """One process, the same global batches: each of the ``world`` shares runs forward/backward
    with the loss divided by ``world`` (gradient accumulation); BatchNorm normalises per share
    and the shares' running statistics, each started from the same values, are averaged."""
    model = build(name, mode)
    model.train()
    opt, fwd = optimizer(model), TrainForward(model)
    for x, y in batches(name):
        opt.zero_grad(set_to_none=True)
        start = {k: b.clone() for k, b in model.named_buffers()}
        ends = []
        for part in range(world):
            s = slice(part * BATCH // world, (part + 1) * BATCH // world)
            with torch.no_grad():
                for k, b in model.named_buffers():
                    if k in start:
                        b.copy_(start[k])
            (model_loss(fwd(x[s]), y[s], 0.0) / world).backward()
            ends.append({k: b.clone() for k, b in model.named_buffers() if k in start})
        with torch.no_grad():
            for k, b in model.named_buffers():
                if k in start:  # integer counters advance by one step on every share
                    b.copy_(sum(e[k] for e in ends) / world if b.is_floating_point()
                            else ends[0][k])
        opt.step()
    return full_state(model)


def sharded(name: str, mode: str, trace=None) -> Dict[str, torch.Tensor]:
    """This process's share of the same steps under FSDP2 (call inside the process group)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    model = build(name, mode)
    model.train()
    shard_model(model, torch.device("cpu"))
    opt, fwd = optimizer(model), TrainForward(model)
    s = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    for x, y in batches(name):
        opt.zero_grad(set_to_none=True)
        model_loss(fwd(x[s]), y[s], 0.0).backward()
        opt.step()
        sync_buffers(model)
    return full_state(model)


def worker(rank: int, world: int, rendezvous: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank,
                            world_size=world)
    try:
        results = {}
        for name, mode in cases():
            try:
                results[f"{name}/{mode}"] = sharded(name, mode)
            except Exception as err:  # noqa: BLE001 - reported by the test, per case
                results[f"{name}/{mode}"] = f"{type(err).__name__}: {err}"
        results["trace"] = trace("revs_resnet_test", "reversible")
        results["plan"] = measure_sharded()
        if rank == 0:
            torch.save(results, out)
    finally:
        dist.destroy_process_group()


def trace(name: str, mode: str) -> Dict[str, object]:
    """One FSDP step recording, at every unshard, reshard and post-backward of a unit, the bytes
    of unsharded parameter storage alive on this process, and the order of the units'
    pre-backward (gather for the recomputation) and post-backward (reduce-scatter) events."""
    from torch.distributed.fsdp._fully_shard._fsdp_param_group import FSDPParamGroup

    model = build(name, mode)
    model.train()
    shard_model(model, torch.device("cpu"))
    groups: List[FSDPParamGroup] = []
    for m in model.modules():
        state = getattr(m, "_get_fsdp_state", None)
        if callable(state) and state()._fsdp_param_group is not None:
            groups.append(state()._fsdp_param_group)
    full = sum(p.numel() * p.element_size() for g in groups for p in
               (fp.sharded_param.full_tensor() for fp in g.fsdp_params))

    def unsharded_bytes() -> int:
        total = 0
        for g in groups:
            for fp in g.fsdp_params:
                if hasattr(fp, "_unsharded_param"):
                    total += fp._unsharded_param.untyped_storage().nbytes()
        return total

    events: List[Tuple[str, str, int]] = []
    saved = {k: getattr(FSDPParamGroup, k) for k in
             ("wait_for_unshard", "pre_backward", "post_backward")}

    def wrap(key):
        def run(self, *a, **kw):
            out = saved[key](self, *a, **kw)
            events.append((key, self._module_fqn or "<root>", unsharded_bytes()))
            return out
        return run

    for key in saved:
        setattr(FSDPParamGroup, key, wrap(key))
    try:
        x, y = batches(name)[0]
        rank, world = dist.get_rank(), dist.get_world_size()
        s = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
        model_loss(TrainForward(model)(x[s]), y[s], 0.0).backward()
    finally:
        for key, fn in saved.items():
            setattr(FSDPParamGroup, key, fn)
    units = {g._module_fqn or "<root>": sum(fp.sharded_param.full_tensor().numel()
                                            * fp.sharded_param.element_size()
                                            for fp in g.fsdp_params) for g in groups}
    return {"events": events, "full_bytes": full, "unit_bytes": units}


PLAN_MODEL, PLAN_KW, PLAN_BATCH = "revs_resnet_test", {"widths": [32, 64]}, 8


def plan_inputs():
    g = torch.Generator().manual_seed(2)
    return torch.rand(PLAN_BATCH, 3, 16, 16, generator=g)


def plan_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return model_info(PLAN_MODEL).build(memory_mode="reversible", **PLAN_KW)


def adamw(params):
    return torch.optim.AdamW(params)


def measure_sharded() -> Dict[str, float]:
    """This process's measured peak of one sharded training step at the per-process batch
    (the live-tensor tracker, watching the gathered parameters' storage)."""
    from revsnn.plan.measure import measure_plan
    from revsnn.plan.sharded import gathered_storage

    model = plan_model()
    shard_model(model, torch.device("cpu"))
    r = measure_plan(model, model.memory_plan(), plan_inputs(), forward=TrainForward(model),
                     optimizer=adamw, rounds=1, watch=lambda: gathered_storage(model))
    return {"peak_bytes": r["peak_bytes"], "fixed_bytes": r["fixed_bytes"]}
