"""Workers of tests/test_fsdp_checkpoint.py: ``run_training(parallel="fsdp")`` in a 2-process
gloo group -- an uninterrupted run, a run stopped by Ctrl-C inside an epoch and resumed, a
one-process checkpoint resumed by two processes, and the refusals."""

import os
import shutil
import signal
from pathlib import Path

import torch
import torch.distributed as dist

from revsnn.train import TrainConfig, run_training
from revsnn.train.build import build_model
from revsnn.train.interrupt import TrainingInterrupted

MODEL = "revs_resnet_test"


def cfg(out, **kw) -> TrainConfig:
    base = dict(model=MODEL, data="digits", T=2, epochs=2, batch_size=16, lr=3e-3, max_steps=3,
                optimizer="adamw", scheduler="constant", warmup_epochs=0, ema_decay=0.9,
                crop_padding=1, random_erase=0.3, progress=False, measure_memory=False,
                memory_mode="reversible", parallel="fsdp", out=str(out))
    base.update(kw)
    return TrainConfig(**base)


def full_state(model):
    from torch.distributed.tensor import DTensor

    return {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().clone()
            for k, v in model.state_dict().items()}


def _sigint_at(call: int, rank: int):
    def factory(c, info):
        m = build_model(c, info)
        count = [0]

        def hook(mod, inp, out):
            if mod.training and torch.is_grad_enabled():
                count[0] += 1
                if count[0] == call and dist.get_rank() == rank:
                    os.kill(os.getpid(), signal.SIGINT)

        m.stem.register_forward_hook(hook)
        return m
    return factory


def _error(fn) -> str:
    try:
        fn()
    except (ValueError, TypeError) as err:
        return f"{type(err).__name__}: {err}"
    return "no error"


def _check_one_to_two(single: Path) -> dict:
    """A one-process checkpoint loaded into the sharded model, optimiser and EMA: the full
    tensors equal the file's."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
    )

    from revsnn.train import load_checkpoint
    from revsnn.train.build import build_data
    from revsnn.train.dcp import full_optimizer_state, resume_tensors
    from revsnn.train.optim import build_optimizer
    from revsnn.train.sharding import ShardedEMA, shard_model

    ck = load_checkpoint(single)
    c = TrainConfig.from_dict(ck["config"])
    model = build_model(c, build_data(c).info)
    shard_model(model, torch.device("cpu"))
    opt = build_optimizer(model, c)
    ema = ShardedEMA(model, c.ema_decay)
    resume_tensors(ck, model, opt, ema, True)
    got = full_state(model)
    same_model = all(torch.equal(got[k], v) for k, v in ck["model"].items())
    ema_full = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v)
                for k, v in ema.state_dict().items()}
    same_ema = all(torch.equal(ema_full[k], v) for k, v in ck["ema"].items())
    want = full_optimizer_state(model, opt, ck["optimizer"])["state"]
    have = get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True))
    same_opt = all(torch.equal(have["state"][k][s], v[s]) for k, v in want.items()
                   for s in ("exp_avg", "exp_avg_sq"))
    return {"model": same_model, "ema": same_ema, "optimizer": same_opt, "n": len(want)}


def worker(rank: int, world: int, rendezvous: str, tmp: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank,
                            world_size=world)
    tmp = Path(tmp)
    res = {}
    quiet = dict(log=lambda s: None)
    try:
        summary, model = run_training(cfg(tmp / "A"), **quiet)
        res["A"] = full_state(model)
        res["A_summary"] = summary
        # Ctrl-C on rank 1 during the 5th training step (epoch 2, step 2): both stop there
        try:
            run_training(cfg(tmp / "B", save_every=2), _sigint_at(5, 1), **quiet)
            res["B_stop"] = "not interrupted"
        except TrainingInterrupted as err:
            res["B_stop"] = str(err)
        dist.barrier()
        if rank == 0:
            shutil.copytree(tmp / "B", tmp / "B-copy")
        dist.barrier()
        _, model = run_training(cfg(tmp / "B", resume=str(tmp / "B")), **quiet)
        res["B"] = full_state(model)
        # 1 -> 2: the one-process run's checkpoint (written by the test) resumed by 2 processes
        res["one_to_two"] = _check_one_to_two(tmp / "C" / "checkpoint.pt")
        s, _ = run_training(cfg(tmp / "C", resume=str(tmp / "C")), **quiet)
        res["C_summary"] = s
        # refusals, before anything is written
        res["odd_batch"] = _error(lambda: run_training(cfg(tmp / "odd", batch_size=15), **quiet))
        res["odd_written"] = (tmp / "odd").exists()
        res["ddp_on_shards"] = _error(lambda: run_training(
            cfg(tmp / "B-copy", parallel="ddp", resume=str(tmp / "B-copy")), **quiet))
        res["other_model"] = _error(lambda: run_training(
            cfg(tmp / "B-copy", model="pararevsnn_test", resume=str(tmp / "B-copy")), **quiet))
    finally:
        dist.destroy_process_group()
    if rank == 0:
        torch.save(res, tmp / "results.pt")
