"""FSDP2 sharding (``--parallel fsdp``): two gloo processes on CPU, float64, every family's
``*_test`` model in every memory mode, take the same 3 AdamW steps as one process on the same
global batches (BatchNorm per process share, running statistics averaged: the oracle of
tests/fsdp_helpers.py); under the reversible mode each unit's gradients are reduce-scattered as
soon as its backward is done, and no point of the step holds every gathered parameter at once.

One process group is started for the whole file (module fixture); the pytest side compares."""

import pytest
import torch
import torch.multiprocessing as mp

import fsdp_helpers as H

CASES = H.cases()


@pytest.fixture(scope="module")
def group_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fsdp")
    out = tmp / "results.pt"
    mp.spawn(H.worker, args=(2, str(tmp / "rendezvous"), str(out)), nprocs=2, join=True)
    return torch.load(out, weights_only=True)


def test_every_family_and_memory_mode_is_covered():
    from revsnn.models.registry import list_models

    library = {H.model_info(n).family for n in list_models()  # not families tests register
               if H.model_info(n).cls.__module__.startswith("revsnn.")}
    assert {H.model_info(n).family for n, _ in CASES} == library
    assert {m for _, m in CASES} == {"none", "checkpoint", "reversible"}


@pytest.mark.parametrize("name,mode", CASES, ids=[f"{n}-{m}" for n, m in CASES])
def test_two_processes_equal_one_process(group_results, name, mode):
    got = group_results[f"{name}/{mode}"]
    assert not isinstance(got, str), got  # the sharded run raised: its message
    ref = H.oracle(name, mode)
    start = H.build(name, mode).state_dict()
    assert set(got) == set(ref)
    moved = 0.0
    for k, v in ref.items():
        if not v.is_floating_point():
            assert torch.equal(got[k], v), k
            continue
        scale = float(v.abs().max().clamp_min(1e-30))
        assert float((got[k] - v).abs().max()) <= 1e-10 * scale, k
        moved = max(moved, float((v - start[k]).abs().max()))
    assert moved > 1e-4  # the steps really changed the weights


def test_reversible_units_gather_alone_and_reduce_per_stage(group_results):
    tr = group_results["trace"]
    events, units, full = tr["events"], tr["unit_bytes"], tr["full_bytes"]
    assert len(units) >= 4 and full == sum(units.values())
    peak = max(b for _, _, b in events)
    two = sum(sorted(units.values())[-2:])
    assert 0 < peak < full and peak <= two, (peak, full, units)
    # every unit's gradients are reduce-scattered once, before the next unit's backward gathers
    post = [(i, u) for i, (k, u, _) in enumerate(events) if k == "post_backward"]
    pre = [(i, u) for i, (k, u, _) in enumerate(events) if k == "pre_backward"]
    assert sorted(u for _, u in post) == sorted(units)
    for (i, u), (j, v) in zip(post, pre[1:]):
        assert i < j, f"{u} reduced after {v} began its backward"
    assert all(b == 0 for k, _, b in events if k == "post_backward")  # freed after reducing


def test_plan_per_process_predicts_the_measured_sharded_peak(group_results):
    from revsnn.plan import profile
    from revsnn.plan.cost import predict
    from revsnn.plan.measure import measure_plan
    from revsnn.plan.sharded import shard_profile

    model, x = H.plan_model(), H.plan_inputs()
    fwd = H.TrainForward(model)
    prof = profile(model, x, forward=fwd, optimizer=H.adamw, rounds=1,
                   batches=[H.PLAN_BATCH // 2, H.PLAN_BATCH])
    one = measure_plan(model, model.memory_plan(), x, forward=fwd, optimizer=H.adamw, rounds=1)
    two = predict(shard_profile(prof, model, 2), model.memory_plan(), H.PLAN_BATCH)
    measured = group_results["plan"]["peak_bytes"]
    assert abs(two.peak_bytes / measured - 1) <= 0.10, (two.peak_bytes, measured)
    # sharding really lowered the per-process peak, by the state's half less a gathered unit
    assert measured < 0.95 * one["peak_bytes"]
    assert group_results["plan"]["fixed_bytes"] < 0.55 * one["fixed_bytes"]


def test_plan_command_world_size(capsys):
    import json

    from revsnn.train.plan_cli import main as plan_main

    args = ["--model", "revs_resnet_test", "--batch", "4", "--budget", "1GiB", "--json",
            "--rounds", "1", "--no-measure"]
    fixed = {}
    for n in (1, 2):
        assert plan_main(args + ["--world-size", str(n)]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["world_size"] == n
        fixed[n] = out["fixed_bytes"]
    assert fixed[2] < fixed[1]
    assert plan_main(args + ["--world-size", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--world-size" in err
