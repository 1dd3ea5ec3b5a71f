"""Per-process memory and step time of sharded training (FSDP2, ``--parallel fsdp``) at world
size 1 and N, in reversible mode; writes ``docs/results/fsdp_<device>.json``.

For each model, each world size (gloo on CPU, NCCL on CUDA; ``torch.multiprocessing`` spawns
the processes, one CPU thread each) and each per-process batch of ``--batches``, one process
group runs ``revsnn.plan.measure_plan`` on the model sharded as ``revsnn train --parallel fsdp``
shards it (every part, the head, the root; AdamW; ``revsnn train``'s step: every head, its loss,
gradients held, the optimiser step): the peak of live tensors on each process (the CPU tracker
also watching the gathered parameters' storage, which FSDP resizes outside the dispatcher; on
CUDA ``max_memory_allocated``) and the median wall time of ``--steps`` steps. From the two
batches: the batch-independent part and MiB per image (the slope), per process. Beside the
measurement, an estimate from the one-process peak at the same per-process batch: minus the
parameters, gradients and AdamW state that sharding removes (1 - 1/N of them), plus twice the
largest gathered unit (its parameters, then its full gradients) -- the figure of
:mod:`revsnn.plan.sharded` placed at the one-process peak, without profiling the model.

The budget line: a per-process budget halfway between the one-process and the N-process
measured peak of the first model at the largest batch -- the one-process step does not fit it,
each of the N processes does.

    python benchmarks/bench_fsdp.py                       # revs_resnet37 and a 0.33B RevSResNet
    python benchmarks/bench_fsdp.py --models revs_resnet_test --batches 1 2 --image 8 --T 1 \
        --out /tmp/fsdp_smoke.json                        # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from revsnn.bench.results import RESULTS_DIR, command_line, provenance, publish, table
from revsnn.models.registry import model_info

MIB = 2**20
#: name -> (registered model, keyword arguments)
MODELS = {
    "revs_resnet37": ("revs_resnet37", {}),
    # a deep RevSResNet of 0.33B parameters: 22 reversible blocks, widest stage 1024 channels
    "revs_resnet_deep330m": ("revs_resnet37", {"blocks": [2, 4, 12, 4],
                                               "widths": [64, 128, 640, 1024]}),
    "revs_resnet_test": ("revs_resnet_test", {}),
}


def build(name: str, T: int) -> torch.nn.Module:
    reg, kw = MODELS[name]
    torch.manual_seed(0)
    return model_info(reg).build(memory_mode="reversible", T=T, **kw)


def _measure(rank: int, world: int, rendezvous: str, name: str, args: Dict[str, Any],
             out: str) -> None:
    from revsnn.models.objective import TrainForward
    from revsnn.plan.measure import measure_plan
    from revsnn.plan.sharded import gathered_storage, unit_bytes
    from revsnn.train.sharding import shard_model

    torch.set_num_threads(1)
    device = torch.device(args["device"] if args["device"] != "cuda" else f"cuda:{rank}")
    if world > 1:
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                init_method=f"file://{rendezvous}", rank=rank,
                                world_size=world)
    try:
        model = build(name, args["T"])
        params = sum(p.numel() for p in model.parameters())
        units = unit_bytes(model)
        model = model.to(device)
        if world > 1:
            shard_model(model, device)
        rows = []
        for B in args["batches"]:
            g = torch.Generator().manual_seed(B)
            x = torch.rand(B, 3, args["image"], args["image"], generator=g).to(device)
            r = measure_plan(model, model.memory_plan(), x, forward=TrainForward(model),
                             optimizer=lambda p: torch.optim.AdamW(p), rounds=args["steps"],
                             watch=(lambda: gathered_storage(model)) if world > 1 else None,
                             restore=False)  # no copy of a 0.33B model's state
            rows.append({"batch": B, "peak_bytes": r["peak_bytes"],
                         "fixed_bytes": r["fixed_bytes"], "wall_s": r["wall_s"]})
        res = {"rank": rank, "rows": rows, "params": params, "unit_bytes": units}
        gathered = [None] * world
        if world > 1:
            dist.all_gather_object(gathered, res)
        else:
            gathered = [res]
        if rank == 0:
            Path(out).write_text(json.dumps(gathered))
    finally:
        if world > 1:
            dist.destroy_process_group()


def run(name: str, world: int, args: Dict[str, Any]) -> List[Dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "out.json")
        # a process of its own even for one (its memory is returned when it ends)
        mp.spawn(_measure, args=(world, str(Path(tmp) / "rv"), name, args, out),
                 nprocs=world, join=True)
        return json.loads(Path(out).read_text())


def summarise(name: str, world: int, ranks: List[Dict[str, Any]], one: Dict[str, Any],
              args: Dict[str, Any]) -> Dict[str, Any]:
    r0 = ranks[0]
    (b1, b2) = (args["batches"][0], args["batches"][-1])
    peak = {r["batch"]: max(k["rows"][i]["peak_bytes"] for k in ranks)
            for i, r in enumerate(r0["rows"])}
    slope = (peak[b2] - peak[b1]) / (b2 - b1)
    row = {
        "model": name, "params_M": r0["params"] / 1e6, "world_size": world,
        "batch_per_process": b2, "T": args["T"], "image": args["image"],
        "peak_mib": peak[b2] / MIB, "batch_independent_mib": (peak[b1] - slope * b1) / MIB,
        "mib_per_image": slope / MIB,
        "fixed_mib": max(k["rows"][-1]["fixed_bytes"] for k in ranks) / MIB,
        "step_s": max(k["rows"][-1]["wall_s"] for k in ranks),
    }
    if world > 1:
        units = dict(r0["unit_bytes"])
        root = units.pop("<root>")
        gathered = max(units.values(), default=0) + root
        P = 4 * r0["params"]  # float32 parameters
        one_peak = one["peak_mib"] * MIB
        # AdamW: params, grads, 2 states sharded; the gathered unit twice (revsnn.plan.sharded)
        pred = one_peak - 4 * P * (1 - 1 / world) + 2 * gathered
        row["predicted_peak_mib"] = pred / MIB
        row["predicted_error_pct"] = 100 * (pred / (peak[b2]) - 1)
        row["largest_gathered_unit_mib"] = gathered / MIB
        row["batch_independent_ratio"] = row["batch_independent_mib"] / \
            one["batch_independent_mib"]
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["revs_resnet37", "revs_resnet_deep330m"],
                   choices=list(MODELS))
    p.add_argument("--world", type=int, default=2, help="the sharded world size")
    p.add_argument("--batches", nargs=2, type=int, default=[2, 4],
                   help="per-process batches (the slope between them: MiB per image)")
    p.add_argument("--image", type=int, default=16)
    p.add_argument("--T", type=int, default=1)
    p.add_argument("--steps", type=int, default=3, help="timed steps per batch (median)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    kind = torch.device(a.device).type
    # on CUDA: every local GPU, one process each (one GPU: only the one-process figures)
    world = a.world if kind != "cuda" else torch.cuda.device_count()
    args = {"batches": a.batches, "image": a.image, "T": a.T, "steps": a.steps,
            "device": a.device}
    rows = []
    for name in a.models:
        one = summarise(name, 1, run(name, 1, args), {}, args)
        rows.append(one)
        if world > 1:
            rows.append(summarise(name, world, run(name, world, args), one, args))
        print(json.dumps(rows[-2:]), file=sys.stderr, flush=True)
    first = [r for r in rows if r["model"] == a.models[0]] * (2 if world < 2 else 1)
    budget_mib = (first[0]["peak_mib"] + first[1]["peak_mib"]) / 2
    budget = {"model": a.models[0], "budget_mib_per_process": budget_mib,
              "one_process_peak_mib": first[0]["peak_mib"],
              "per_process_peak_mib": first[1]["peak_mib"], "world_size": world,
              "one_process_fits": first[0]["peak_mib"] <= budget_mib,
              "sharded_fits": first[1]["peak_mib"] <= budget_mib}
    prov = provenance(a.device, {**args, "world_size": world, "optimizer": "AdamW",
                                 "memory_mode": "reversible", "threads_per_process": 1},
                      command=command_line([__file__, *(sys.argv[1:] if argv is None
                                                       else argv)]))
    text = table(rows, {"model": "model", "params_M": "params (M)", "world_size": "processes",
                        "batch_per_process": "batch/process", "peak_mib": "peak MiB/process",
                        "batch_independent_mib": "batch-indep. MiB",
                        "mib_per_image": "MiB/image", "predicted_peak_mib": "predicted MiB",
                        "predicted_error_pct": "pred. err %", "step_s": "step s"},
                 prov, fmt={"params_M": ".1f", "peak_mib": ".1f",
                            "batch_independent_mib": ".1f", "mib_per_image": ".2f",
                            "predicted_peak_mib": ".1f", "predicted_error_pct": "+.1f",
                            "step_s": ".2f"})
    out = a.out or RESULTS_DIR / f"fsdp_{kind}.json"
    return publish(out, prov, rows, summary={"budget": budget}, tables={"fsdp": text})


if __name__ == "__main__":
    sys.exit(main())
