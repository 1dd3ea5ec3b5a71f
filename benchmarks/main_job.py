"""The main job's figures: runs ``revsnn train`` exactly as the README's first command does (or
reads a finished run), then records what it printed into ``docs/results/main_job_cpu.json``.

Also measures the training memory per image of the same network (``trevsnn_cifar`` at its
initial weights, digits test images normalised as in training, the training objective) in all
three memory modes, at the training run's own batch range (``memory_batches``, 4 -> 8; the
reversible value is the one ``revsnn train`` prints) and at 2 -> 4 and 16 -> 32.

    python benchmarks/main_job.py                    # trains (about 2-3 min on 1 CPU thread)
    python benchmarks/main_job.py --run runs/<run>   # records a finished run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from revsnn.bench.data import digits_images
from revsnn.bench.measure import memory_columns, memory_headers, range_key
from revsnn.bench.memory import DEFAULT_RANGES, measure_training_step
from revsnn.bench.results import RESULTS_DIR, command_line, provenance, publish, table
from revsnn.bench.setups import create, objective

KEEP = ("model", "data", "memory_mode", "T", "batch_size", "epochs", "params", "final_test_acc",
        "best_test_acc", "best_epoch", "memory_mib_per_image", "memory_method",
        "time_per_epoch_s", "total_time_s", "process_cpu_time_s", "device", "torch")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, default=None, help="a finished run folder to record")
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "main_job_cpu.json")
    args = p.parse_args(argv)
    run = args.run
    command = command_line([__file__, *(sys.argv[1:] if argv is None else argv)])
    if run is None:
        run = Path("runs") / f"main_job_{time.strftime('%Y%m%d-%H%M%S')}"
        subprocess.run([sys.executable, "-m", "revsnn.train", "--out", str(run)], check=True)
    s = json.loads((run / "summary.json").read_text())
    if s.get("status") != "finished":
        raise SystemExit(f"{run}: status {s.get('status')!r}, not a finished run")
    cfg = json.loads(json.dumps(s["memory"]))  # the run's own memory record
    train_range = tuple(cfg["batches"])
    torch.set_num_threads(1)
    ranges = (train_range, *[r for r in DEFAULT_RANGES if r != train_range])

    def batches(B: int):
        return digits_images(B)  # the first B test images, [B, 1, 8, 8], as training measures

    modes = []
    for mode in ("none", "checkpoint", "reversible"):
        model = create(s["model"], T=s["T"], memory_mode=mode, in_channels=1, seed=0)
        module, loss_fn = objective(model)
        cols = memory_columns(measure_training_step(module, batches, loss_fn, ranges=ranges))
        modes.append({"mode": mode, **cols})
        print(f"{mode}: " + ", ".join(f"{k} {v:.4f}" for k, v in cols.items()), file=sys.stderr)
    summary = {k: s.get(k) for k in KEEP}
    summary["memory_batches"] = list(train_range)
    rev = next(m for m in modes if m["mode"] == "reversible")
    summary["memory_matches_train"] = (
        abs(rev[f"mib_{range_key(train_range)}"] - s["memory_mib_per_image"]) < 1e-9)
    prov = provenance("cpu", {"run": str(run), "trained_by": "revsnn train" if args.run is None
                              else "a finished run of revsnn train", "config":
                              "revsnn train defaults (configs/digits_trevsnn.yaml)"},
                      command=command)
    text = table(modes, {"mode": "mode", **memory_headers(ranges)}, prov,
                 fmt={f"mib_{range_key(r)}": ".4f" for r in ranges})
    print(json.dumps(summary, indent=1))
    return publish(args.out, prov, modes, summary, {"memory": text})


if __name__ == "__main__":
    sys.exit(main())
