"""ParaRevSNN-ResNet vs RevSResNet at the same depth, measured side by side in one process.

For each depth (block counts from ``revsnn.models.pararevsnn.BLOCKS``) three networks are built:
RevSResNet, ParaRevSNN with the fused merged block (``merge="fused"``, the default) and
ParaRevSNN with separate G_k/F_{k+1} branches (``merge="pair"``, RevSResNet's exact parameter
set). All run in the same memory mode (``reversible`` by default). Reported per network:

- training step time (zero_grad + forward + loss + backward + SGD step; median of >= 5 after
  warm-up, ``revsnn.bench.timing``), repeated over ``--rounds`` interleaved rounds because the
  CPU is shared; the median (and the minimum) over all timed steps of all rounds, and their
  ratios to RevSResNet's;
- peak training memory per image (``revsnn.bench.memory.measure_training_step``: slope of the
  peak live-tensor bytes between two batch sizes) and bytes saved for backward per image;
- inference latency per image (eval, no_grad; ``revsnn.bench.timing.time_inference``).

Ratios are the claims (same process, same inputs); absolute CPU times depend on the load.

    python benchmarks/bench_pararevsnn.py --depths 21 37 --batch 2 --image 32 --T 4
    python benchmarks/bench_pararevsnn.py --device cuda --depths 37 69 117 165 --batch 32
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from typing import Any, Callable, Dict, List

import torch
from torch import nn

from revsnn.bench.memory import measure_training_step
from revsnn.bench.report import environment, markdown_table, write_csv
from revsnn.bench.timing import time_inference, time_training_step
from revsnn.models.pararevsnn import BLOCKS, ParaRevSNN
from revsnn.models.revsresnet import RevSResNet

KINDS = ("revsresnet", "pararevsnn_fused", "pararevsnn_pair")
# measured value -> name of its ratio to RevSResNet's
RATIOS = {"step_ms": "step_vs_rev", "step_min_ms": "step_min_vs_rev",
          "step_cpu_ms": "step_cpu_vs_rev", "infer_ms_per_img": "infer_vs_rev",
          "infer_cpu_ms_per_img": "infer_cpu_vs_rev", "mib_per_img": "mib_vs_rev"}


def build(kind: str, depth: int, args: argparse.Namespace) -> nn.Module:
    kw: Dict[str, Any] = dict(
        blocks=BLOCKS[depth], num_classes=args.classes, T=args.T, memory_mode=args.mode
    )
    if kind == "revsresnet":
        return RevSResNet(**kw)
    merge = kind.rsplit("_", 1)[1]
    return ParaRevSNN(merge=merge, streams=args.streams, fuse_from=args.fuse_from, **kw)


def parse_args(argv: List[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depths", type=int, nargs="+", default=[21, 37], choices=sorted(BLOCKS))
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    p.add_argument("--batch", type=int, default=2, help="batch for step time and latency")
    p.add_argument("--mem-batches", type=int, nargs=2, default=[1, 2],
                   help="two batch sizes for the memory slope")
    p.add_argument("--image", type=int, default=32, help="square image size")
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--mode", default="reversible", choices=["none", "checkpoint", "reversible"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--streams", action="store_true", help="two CUDA streams for merge='pair'")
    p.add_argument("--fuse-from", type=int, default=1,
                   help="first fused stage (0-based; 1 as the registered models, 0 = all)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1: steadier on a shared CPU)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds")
    p.add_argument("--skip-timing", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-inference", action="store_true")
    p.add_argument("--csv", default=None, help="also write the rows to this CSV file")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    return p.parse_args(argv)


def cpu_times_ms(fn: Callable[[], Any], warmup: int, repeats: int) -> List[float]:
    """Process CPU time of ``fn`` per call (ms): unlike wall time, it does not count the time
    this process waits for a core, so it stays steady on a CPU shared with other jobs."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        out.append(1e3 * (time.process_time() - t0))
    return out


def train_step_fn(model: nn.Module, batch) -> Callable[[], None]:
    """zero_grad + forward + loss + backward + SGD step (as ``time_training_step``) on a copy."""
    m = copy.deepcopy(model).train()
    opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
    x, target = batch

    def step() -> None:
        opt.zero_grad(set_to_none=False)
        nn.functional.cross_entropy(m(x), target).backward()
        opt.step()

    return step


def infer_fn(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    m = copy.deepcopy(model).eval()

    def forward() -> None:
        with torch.no_grad():
            m(x)

    return forward


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    cpu_clock = dev.type == "cpu"
    env = environment(dev, torch.float32)
    print(f"# {env} threads={args.threads} batch={args.batch} T={args.T} "
          f"image={args.image} mode={args.mode}", flush=True)
    g = torch.Generator().manual_seed(0)

    def make_batch(B: int):
        x = torch.randn(B, 3, args.image, args.image, generator=g)
        return x, torch.randint(0, args.classes, (B,), generator=g)

    batch = make_batch(args.batch)
    rows: List[Dict[str, Any]] = []
    for depth in args.depths:
        torch.manual_seed(0)
        models = {k: build(k, depth, args).to(dev) for k in args.kinds}
        row = {k: dict(depth=depth, model=k, blocks=BLOCKS[depth], **env) for k in models}
        for k, m in models.items():
            row[k]["params_M"] = sum(p.numel() for p in m.parameters()) / 1e6
            # sequential stages of work per pass: RevSResNet 2n per sequence, ParaRev n + 1
            n = BLOCKS[depth]
            row[k]["stages"] = 2 * sum(n) if k == "revsresnet" else sum(n) + len(n)
        samples: Dict[str, Dict[str, List[float]]] = {k: {} for k in models}
        for r in range(args.rounds if not args.skip_timing else 0):
            for k, m in models.items():  # interleaved, so load changes hit every model alike
                t = time_training_step(m, batch, device=dev, warmup=args.warmup,
                                       repeats=args.repeats)
                got = {"step_ms": [1e3 * v for v in t["times_s"]]}
                if cpu_clock:
                    got["step_cpu_ms"] = cpu_times_ms(
                        train_step_fn(m, batch), args.warmup, args.repeats
                    )
                if not args.skip_inference:
                    t = time_inference(m, batch[0], device=dev, warmup=args.warmup,
                                       repeats=args.repeats)
                    got["infer_ms_per_img"] = [1e3 * v / args.batch for v in t["times_s"]]
                    if cpu_clock:
                        got["infer_cpu_ms_per_img"] = [
                            v / args.batch
                            for v in cpu_times_ms(infer_fn(m, batch[0]), args.warmup, args.repeats)
                        ]
                for key, values in got.items():
                    samples[k].setdefault(key, []).extend(values)
                medians = ", ".join(f"{key} {statistics.median(v):.1f}" for key, v in got.items())
                print(f"  depth {depth} round {r} {k}: {medians}", flush=True)
        for k in models:
            for key, values in samples[k].items():  # medians over all rounds' timed runs
                row[k][key] = statistics.median(values)
            if "step_ms" in samples[k]:
                row[k]["step_min_ms"] = min(samples[k]["step_ms"])
        if not args.skip_memory:
            for k, m in models.items():
                mem = measure_training_step(m, make_batch, device=dev, batches=args.mem_batches)
                row[k]["mib_per_img"] = mem["mib_per_image"]
                row[k]["saved_mib_per_img"] = mem["saved_mib_per_image"]
                print(f"  depth {depth} {k}: {mem['mib_per_image']:.2f} MiB/img", flush=True)
        base = row.get("revsresnet")
        for k in models:
            if base is not None:
                for key, name in RATIOS.items():
                    if key in row[k]:
                        row[k][name] = row[k][key] / base[key]
            rows.append(row[k])
        del models
    cols = ["depth", "model", "params_M", "stages", "step_ms", "step_vs_rev", "step_min_vs_rev",
            "step_cpu_ms", "step_cpu_vs_rev", "infer_ms_per_img", "infer_vs_rev",
            "infer_cpu_ms_per_img", "infer_cpu_vs_rev", "mib_per_img", "mib_vs_rev",
            "saved_mib_per_img"]
    print()
    print(markdown_table(rows, [c for c in cols if any(c in r for r in rows)]))
    if args.csv:
        write_csv(rows, args.csv)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
