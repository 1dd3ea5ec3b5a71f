"""Two gloo processes on CPU take the same steps as one process on the combined batch
(reversible sequence with a shared conv, custom backward, per-sample augmentation), through
``run_training`` (the command line's path) and ``revsnn.train.fit``."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from revsnn.train import TrainConfig, fit, run_training
from test_train_fit import _digits
from test_train_tiny import Tiny, tiny_factory


def _cfg(out, **kw):
    base = dict(model="tiny", data="digits", T=2, epochs=1, batch_size=32, lr=0.05,
                optimizer="sgd", weight_decay=1e-4, warmup_epochs=0, max_steps=3,
                crop_padding=1, random_erase=0.3, progress=False, measure_memory=False,
                memory_mode="reversible", out=str(out), model_kwargs={"norm": "gn"})
    base.update(kw)
    return TrainConfig(**base)


def _worker(rank, world, rendezvous, out, result):
    # A file rendezvous in the test's own folder: a TCP port picked as "free" and released
    # before the group binds it can be taken by another test run on the same machine.
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank,
                            world_size=world)
    try:
        summary, model = run_training(_cfg(out), tiny_factory, log=lambda s: None)
        fitted = _fit_model()  # the Python entry point, in the same process group
        fit(fitted, *_digits(), out=f"{out}-fit", log=lambda s: None, **FIT)
    finally:
        dist.destroy_process_group()
    torch.save({"state": model.state_dict(), "summary": summary, "fit": fitted.state_dict()},
               f"{result}.{rank}")


FIT = dict(T=2, epochs=1, batch_size=32, lr=3e-3, max_steps=3, progress=False,
           measure_memory=False, optimizer="adamw", crop_padding=1, random_erase=0.3)


def _fit_model():
    torch.manual_seed(0)
    return Tiny(num_classes=10, T=2, in_channels=1, norm="gn")


def test_two_gloo_processes_equal_one_process_on_the_whole_batch(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "rendezvous"), str(tmp_path / "ddp"),
                            str(tmp_path / "res")), nprocs=2, join=True)
    single, m = run_training(_cfg(tmp_path / "one"), tiny_factory, log=lambda s: None)
    ref = m.state_dict()
    r0 = torch.load(tmp_path / "res.0", weights_only=True)
    r1 = torch.load(tmp_path / "res.1", weights_only=True)
    torch.manual_seed(0)  # the run's seed: the initial weights of every run above
    start = tiny_factory(_cfg(tmp_path), type("I", (), {"num_classes": 10, "in_channels": 1})())
    moved = 0.0
    for k, v in ref.items():
        assert torch.equal(r0["state"][k], r1["state"][k]), k  # ranks stay in sync
        torch.testing.assert_close(r0["state"][k], v, rtol=1e-4, atol=1e-5, msg=k)
        moved = max(moved, float((v - start.state_dict()[k]).abs().max()))
    assert moved > 1e-3  # three SGD steps really changed the weights
    # rank 0 alone wrote the run folder; metrics are reduced over both ranks
    assert (tmp_path / "ddp" / "checkpoint.pt").exists()
    assert r0["summary"]["world_size"] == 2 and r1["summary"]["rank"] == 1
    # test accuracy is reduced over the ranks' shares (at most one borderline image may flip)
    assert abs(r0["summary"]["final_test_acc"] - single["final_test_acc"]) <= 100 / 360 + 1e-9
    # revsnn.train.fit with TensorDatasets: the same steps as one process on the whole batch
    one = _fit_model()
    fit(one, *_digits(), out=str(tmp_path / "fit-one"), log=lambda s: None, **FIT)
    for k, v in one.state_dict().items():
        assert torch.equal(r0["fit"][k], r1["fit"][k]), k
        torch.testing.assert_close(r0["fit"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    assert (tmp_path / "ddp-fit" / "checkpoint.pt").exists()
