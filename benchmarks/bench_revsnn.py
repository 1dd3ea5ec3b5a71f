"""RevSNN memory and step time: RevSResNet 21/37/109 vs MS-ResNet34, RevSFormer vs Spikingformer.

For every model and memory mode (none / checkpoint / reversible; the non-reversible baselines
have no reversible mode), measured in one process:

- peak training memory per image (``revsnn.bench.memory.measure_training_step``: peak live
  tensor bytes of forward + loss + backward with preallocated gradients, slope between two
  batch sizes) and bytes saved for backward per image. Two slopes: between batch 2 and 4 (how
  the published code was measured) and between 16 and 32. At batch 2-4 the peak of a
  reversible network can sit in a batch-independent place (the engine holds one gradient per
  parameter of a sequence, > 100 MB for RevSResNet109's last stage), so the 2-4 slope can
  under-report; at 16-32 the activations dominate and the slope is the per-image cost;
- training step time (zero_grad + forward + loss + backward + SGD step, as in
  ``revsnn.bench.timing``; median of ``rounds * repeats`` >= 5 steps after warm-up, the modes
  alternating step by step because the CPU may be shared) and its ratio to the same model's
  ``none`` step. Ratios are the claims; absolute CPU times are not.

It then checks the goals (on the 16-32 slope when measured): reversible memory flat in depth
(21 -> 109 grows <= 10 %), RevSResNet37 reversible <= 12 MiB per image and >= 6x less than
MS-ResNet34, RevSFormer-4-384 >= 4x less than Spikingformer-4-384, reversible step <= 1.3x
none.

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
from revsnn.reversible import ReversibleSequence

MODELS = [
    "revs_resnet21", "revs_resnet37", "revs_resnet109", "ms_resnet34",
    "revsformer_2_384", "revsformer_4_384", "spikingformer_4_384",
]


def parse_args(argv: List[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--modes", nargs="+", default=["none", "checkpoint", "reversible"])
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--image", type=int, default=32)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--mem-batches", type=int, nargs="+", default=[2, 4])
    p.add_argument("--mem-batches-large", type=int, nargs="*", default=[16, 32],
                   help="second slope (activation-dominated); pass nothing to skip")
    p.add_argument("--time-batch", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2, help="timed steps = rounds * repeats")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-time", action="store_true", help="memory only")
    p.add_argument("--no-memory", action="store_true", help="step times only")
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


def modes_for(model: torch.nn.Module, modes: List[str]) -> List[str]:
    """The requested modes, without "reversible" for networks that have no inverse."""
    reversible = any(isinstance(m, ReversibleSequence) for m in model.modules())
    return [m for m in modes if reversible or m != "reversible"]


def measure(args: argparse.Namespace) -> List[Dict[str, Any]]:
    make_batch = make_batch_fn(args)
    rows: List[Dict[str, Any]] = []
    for name in args.models:
        torch.manual_seed(0)
        base = revsnn.create_model(name, num_classes=args.classes, T=args.T, memory_mode="none")
        modes = modes_for(base, args.modes)
        n_params = sum(p.numel() for p in base.parameters())
        models = {m: base if m == "none" else _copy_in_mode(base, m) for m in modes}
        per_mode: Dict[str, Dict[str, Any]] = {}
        for mode, model in models.items():
            per_mode[mode] = dict(model=name, depth=getattr(model, "depth", ""), params=n_params,
                                  mode=mode)
            if args.no_memory:
                continue
            t0 = time.time()
            r = measure_training_step(model, make_batch, device=args.device,
                                      batches=args.mem_batches)
            per_mode[mode].update(
                mib_per_img=r["mib_per_image"], peak_mib_per_img=r["peak_mib_per_image"],
                saved_mib_per_img=r["saved_mib_per_image"],
            )
            if args.mem_batches_large:
                r2 = measure_training_step(model, make_batch, device=args.device,
                                           batches=args.mem_batches_large)
                per_mode[mode]["mib_per_img_large"] = r2["mib_per_image"]
            _progress(f"{name} {mode}: {r['mib_per_image']:.2f} MiB/img, large batch "
                      f"{per_mode[mode].get('mib_per_img_large', float('nan')):.2f} "
                      f"(saved {r['saved_mib_per_image']:.2f}) [{time.time() - t0:.0f}s]")
        if not args.no_time:
            med = time_interleaved(models, make_batch(args.time_batch), args)
            for mode in modes:
                per_mode[mode]["step_ms"] = 1e3 * med[mode]
                if "none" in med:
                    per_mode[mode]["step_vs_none"] = med[mode] / med["none"]
            _progress(f"{name} step ratios: " + ", ".join(
                f"{m} {per_mode[m].get('step_vs_none', float('nan')):.3f}" for m in modes))
        rows += [per_mode[m] for m in modes]
    return rows


def time_interleaved(models: Dict[str, torch.nn.Module], batch, args) -> Dict[str, float]:
    """Median training-step time per mode, the modes alternating step by step.

    A step is zero_grad + forward + loss + backward + SGD step (as in
    ``revsnn.bench.timing.time_training_step``); alternating single steps keeps a shared CPU's
    changing load from favouring one mode. One warm-up step each, then ``rounds * repeats``
    timed steps each (at least 5).
    """
    x, y = batch
    opts = {m: torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
            for m, model in models.items()}

    def step(mode: str) -> float:
        t0 = time.perf_counter()
        opts[mode].zero_grad(set_to_none=False)
        torch.nn.functional.cross_entropy(models[mode](x), y).backward()
        opts[mode].step()
        return time.perf_counter() - t0

    for mode in models:
        models[mode].train()
        step(mode)
    times: Dict[str, List[float]] = {m: [] for m in models}
    for _ in range(max(5, args.rounds * args.repeats)):
        for mode in models:
            times[mode].append(step(mode))
    return {m: statistics.median(v) for m, v in times.items()}


def _copy_in_mode(model: torch.nn.Module, mode: str) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model).set_memory_mode(mode)


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def goals(rows: List[Dict[str, Any]]) -> List[str]:
    key = "mib_per_img_large" if all("mib_per_img_large" in r for r in rows) else "mib_per_img"
    mem = {(r["model"], r["mode"]): r[key] for r in rows if key in r}
    step = {(r["model"], r["mode"]): r.get("step_vs_none") for r in rows}
    out = [f"(memory: {key})"]

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
               f"memory slopes over batches {args.mem_batches} and {args.mem_batches_large}, "
               f"step time at batch "
               f"{args.time_batch}, {args.threads} thread(s)")
    print(f"## RevSNN memory and step time ({setting})\n")
    print(", ".join(f"{k}: {v}" for k, v in env.items()) + "\n")
    cols = ["model", "depth", "params", "mode", "mib_per_img", "mib_per_img_large",
            "peak_mib_per_img", "saved_mib_per_img", "step_ms", "step_vs_none"]
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
