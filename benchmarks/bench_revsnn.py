"""RevSNN memory and step time: RevSResNet 21/37/109 vs MS-ResNet34, RevSFormer vs Spikingformer.

For every model and memory mode (none / checkpoint / reversible; the non-reversible baselines
have no reversible mode), measured in one process:

- peak training memory per image (``revsnn.bench.memory.measure_training_step``: peak live
  tensor bytes of forward + loss + backward with preallocated gradients, slope between two
  batch sizes, 2 and 4 by default) and bytes saved for backward per image;
- training step time (``revsnn.bench.timing.time_training_step``: median of >= 5 steps after
  warm-up, over ``--rounds`` interleaved rounds because the CPU may be shared) and its ratio
  to the same model's ``none`` step. Ratios are the claims; absolute CPU times are not.

It then checks the goals: reversible memory flat in depth (21 -> 109 grows <= 10 %),
RevSResNet37 reversible <= 12 MiB per image and >= 6x less than MS-ResNet34, RevSFormer-4-384
>= 4x less than Spikingformer-4-384, reversible step <= 1.3x none.

    python benchmarks/bench_revsnn.py                       # everything, T=4, 32x32, 10 classes
    python benchmarks/bench_revsnn.py --models revs_resnet37 ms_resnet34 --no-time
    python benchmarks/bench_revsnn.py --mem-batches 8 16 --csv out.csv
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any, Dict, List

import torch

import revsnn
from revsnn.bench.memory import measure_training_step
from revsnn.bench.report import environment, markdown_table, write_csv
from revsnn.bench.timing import time_training_step

MODELS = [
    "revs_resnet21", "revs_resnet37", "revs_resnet109", "ms_resnet34",
    "revsformer_2_384", "revsformer_4_384", "spikingformer_4_384",
]
BASELINES = {"ms_resnet34", "ms_resnet18", "spikingformer_2_384", "spikingformer_4_384"}


def parse_args(argv: List[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--modes", nargs="+", default=["none", "checkpoint", "reversible"])
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--image", type=int, default=32)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--mem-batches", type=int, nargs="+", default=[2, 4])
    p.add_argument("--time-batch", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-time", action="store_true", help="memory only")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 gives steadier ratios on a shared CPU)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--csv", default=None)
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def make_batch_fn(args: argparse.Namespace):
    def make_batch(B: int):
        g = torch.Generator().manual_seed(B)
        x = torch.randn(B, 3, args.image, args.image, generator=g)
        return x, torch.randint(0, args.classes, (B,), generator=g)

    return make_batch


def modes_for(name: str, modes: List[str]) -> List[str]:
    return [m for m in modes if not (name in BASELINES and m == "reversible")]


def measure(args: argparse.Namespace) -> List[Dict[str, Any]]:
    make_batch = make_batch_fn(args)
    rows: List[Dict[str, Any]] = []
    for name in args.models:
        modes = modes_for(name, args.modes)
        torch.manual_seed(0)
        base = revsnn.create_model(name, num_classes=args.classes, T=args.T, memory_mode="none")
        n_params = sum(p.numel() for p in base.parameters())
        models = {m: base if m == "none" else _copy_in_mode(base, m) for m in modes}
        per_mode: Dict[str, Dict[str, Any]] = {}
        for mode, model in models.items():
            t0 = time.time()
            r = measure_training_step(model, make_batch, device=args.device,
                                      batches=args.mem_batches)
            per_mode[mode] = dict(
                model=name, depth=getattr(model, "depth", ""), params=n_params, mode=mode,
                mib_per_img=r["mib_per_image"], peak_mib_per_img=r["peak_mib_per_image"],
                saved_mib_per_img=r["saved_mib_per_image"],
            )
            _progress(f"{name} {mode}: {r['mib_per_image']:.2f} MiB/img "
                      f"(saved {r['saved_mib_per_image']:.2f}) [{time.time() - t0:.0f}s]")
        if not args.no_time:
            x, y = make_batch(args.time_batch)
            times: Dict[str, List[float]] = {m: [] for m in modes}
            for _ in range(args.rounds):
                for mode, model in models.items():
                    r = time_training_step(model, (x, y), device=args.device, warmup=1,
                                           repeats=args.repeats)
                    times[mode] += r["times_s"]
            med = {m: statistics.median(v) for m, v in times.items()}
            for mode in modes:
                per_mode[mode]["step_ms"] = 1e3 * med[mode]
                if "none" in med:
                    per_mode[mode]["step_vs_none"] = med[mode] / med["none"]
            _progress(f"{name} step ratios: " + ", ".join(
                f"{m} {per_mode[m].get('step_vs_none', float('nan')):.3f}" for m in modes))
        rows += [per_mode[m] for m in modes]
    return rows


def _copy_in_mode(model: torch.nn.Module, mode: str) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model).set_memory_mode(mode)


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def goals(rows: List[Dict[str, Any]]) -> List[str]:
    mem = {(r["model"], r["mode"]): r["mib_per_img"] for r in rows}
    step = {(r["model"], r["mode"]): r.get("step_vs_none") for r in rows}
    out = []

    def line(ok: bool, text: str) -> None:
        out.append(f"- [{'x' if ok else ' '}] {text}")

    rv = "reversible"
    if (("revs_resnet21", rv) in mem) and (("revs_resnet109", rv) in mem):
        g = mem[("revs_resnet109", rv)] / mem[("revs_resnet21", rv)] - 1
        line(g <= 0.10, f"reversible memory 21 -> 109 layers grows {100 * g:+.1f}% (<= 10%)")
    if ("revs_resnet37", rv) in mem:
        v = mem[("revs_resnet37", rv)]
        line(v <= 12, f"RevSResNet37 reversible {v:.2f} MiB/img (<= 12)")
        if ("ms_resnet34", "none") in mem:
            q = mem[("ms_resnet34", "none")] / v
            line(q >= 6, f"MS-ResNet34 / RevSResNet37 reversible = {q:.2f}x (>= 6x)")
    if ("revsformer_4_384", rv) in mem and ("spikingformer_4_384", "none") in mem:
        q = mem[("spikingformer_4_384", "none")] / mem[("revsformer_4_384", rv)]
        line(q >= 4, f"Spikingformer-4-384 / RevSFormer-4-384 reversible = {q:.2f}x (>= 4x)")
    for (name, mode), s in step.items():
        if mode == rv and s is not None:
            line(s <= 1.3, f"{name} reversible step = {s:.3f}x none (<= 1.3x)")
    return out


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    env = environment(args.device, torch.float32)
    rows = measure(args)
    setting = (f"T={args.T}, {args.image}x{args.image}, {args.classes} classes, float32, "
               f"memory slope over batches {args.mem_batches}, step time at batch "
               f"{args.time_batch}, {args.threads} thread(s)")
    print(f"## RevSNN memory and step time ({setting})\n")
    print(", ".join(f"{k}: {v}" for k, v in env.items()) + "\n")
    cols = ["model", "depth", "params", "mode", "mib_per_img", "peak_mib_per_img",
            "saved_mib_per_img", "step_ms", "step_vs_none"]
    print(markdown_table(rows, [c for c in cols if any(c in r for r in rows)]))
    print("\nGoals:")
    print("\n".join(goals(rows)))
    if args.csv:
        write_csv(rows, args.csv)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(environment=env, setting=setting, rows=rows), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
