"""The main job over several seeds: a figure a newcomer can check on their own machine.

Runs ``revsnn train --seed S`` (the README's main job, its defaults otherwise) for each seed one
after the other, or reads finished runs, and records each run's final and best test accuracy
and its time, with mean, standard deviation (``n - 1``) and range, into
``docs/results/main_job_seeds_cpu.json``. One test image of the 360 is 0.28 %: float32 rounding
differs between CPUs (kernels, instruction sets), so the same seed moves by a few test images
from one machine to another; the spread over seeds says how far.

    python benchmarks/main_seeds.py                        # 5 seeds, ~3 min each on 1 thread
    python benchmarks/main_seeds.py --seeds 0 1 2
    python benchmarks/main_seeds.py --runs runs/s0 runs/s1  # record finished runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

from revsnn.bench.results import RESULTS_DIR, command_line, provenance, publish, table

KEEP = ("seed", "final_test_acc", "best_test_acc", "best_epoch", "total_time_s",
        "process_cpu_time_s", "time_per_epoch_s", "threads", "torch", "device", "model", "data",
        "memory_mode", "T", "batch_size", "epochs")


def spread(values: List[float]) -> Dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max."""
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def record(run: Path) -> Dict[str, Any]:
    s = json.loads((run / "summary.json").read_text())
    if s.get("status") != "finished":
        raise SystemExit(f"{run}: status {s.get('status')!r}, not a finished run")
    cfg = (run / "config.yaml").read_text()
    seed = next((int(line.split(":", 1)[1]) for line in cfg.splitlines()
                 if line.startswith("seed:")), None)
    return {**{k: s.get(k) for k in KEEP if k != "seed"}, "seed": seed, "run": str(run)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--runs", type=Path, nargs="+", default=None,
                   help="finished run folders to record instead of training")
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "main_job_seeds_cpu.json")
    args = p.parse_args(argv)
    command = command_line([__file__, *(sys.argv[1:] if argv is None else argv)])
    runs = args.runs
    if runs is None:
        base = Path("runs") / f"main_seeds_{time.strftime('%Y%m%d-%H%M%S')}"
        runs = []
        for seed in args.seeds:  # one after the other: the timings are those of one run alone
            run = base / f"seed{seed}"
            subprocess.run([sys.executable, "-m", "revsnn.train", "--seed", str(seed), "--out",
                            str(run)], check=True)
            runs.append(run)
    rows = sorted((record(r) for r in runs), key=lambda r: (r["seed"] is None, r["seed"]))
    summary: Dict[str, Any] = {"runs": len(rows), "seeds": [r["seed"] for r in rows],
                               "test_images": 360, "one_image_pct": 100 / 360}
    for key in ("final_test_acc", "best_test_acc", "total_time_s"):
        summary[key] = spread([float(r[key]) for r in rows])
    for key in ("torch", "device", "threads", "model", "data", "memory_mode", "T", "batch_size",
                "epochs"):
        values = {json.dumps(r[key]) for r in rows}
        summary[key] = rows[0][key] if len(values) == 1 else "mixed"
    prov = provenance("cpu", {"config": "revsnn train defaults (configs/digits_trevsnn.yaml), "
                              "--seed S", "seeds": summary["seeds"],
                              "trained_by": "revsnn train" if args.runs is None
                              else "finished runs of revsnn train"}, command=command)
    prov["threads"] = summary["threads"]  # the runs' own thread count (this process trains none)
    text = table(rows, {"seed": "seed", "final_test_acc": "final test acc. %",
                        "best_test_acc": "best test acc. %", "best_epoch": "best epoch",
                        "total_time_s": "time s", "process_cpu_time_s": "CPU time s"}, prov,
                 fmt={"final_test_acc": ".2f", "best_test_acc": ".2f", "total_time_s": ".0f",
                      "process_cpu_time_s": ".0f"})
    f = summary["final_test_acc"]
    print(f"final test accuracy over {len(rows)} seeds: {f['mean']:.2f} ± {f['std']:.2f} % "
          f"(range {f['min']:.2f} - {f['max']:.2f})", file=sys.stderr)
    return publish(args.out, prov, rows, summary, {"seeds": text})


if __name__ == "__main__":
    sys.exit(main())
