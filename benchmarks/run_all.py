"""Regenerate every CPU results file under docs/results/, then the numbers README.md and
docs/*.md quote from them -- the one command to run after the code changes:

    python benchmarks/run_all.py                      # everything (CPU, 1 thread; ~45 min)
    python benchmarks/run_all.py --only claims revsnn # some steps, then the docs
    python benchmarks/run_all.py --docs-only          # only rewrite the docs from the files

Steps, in order (each writes docs/results/<step>_cpu.json): ``main_job`` (runs ``revsnn
train``), ``energy_trained`` (trains the BPTT twin, reuses the main job's run), ``revsnn``,
``trevsnn``, ``pararevsnn``, ``imagenet_scale``, ``claims``, ``plan_budgets``,
``compile_trevsnn`` and ``compile_revsnn`` (``docs/results/compile_*_cpu.json``). Then
``python -m revsnn.bench.docnumbers --write`` and the index ``docs/results/README.md``.
GPU figures: ``python benchmarks/gpu_suite.py`` on a GPU machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from revsnn.bench.docnumbers import write
from revsnn.bench.results import RESULTS_DIR, read_results

HERE = Path(__file__).resolve().parent
STEPS = {
    "main_job": ["main_job.py"],
    "energy_trained": ["trevsnn_energy_trained.py"],
    "revsnn": ["bench_revsnn.py"],
    "trevsnn": ["bench_trevsnn.py"],
    "pararevsnn": ["bench_pararevsnn.py"],
    "imagenet_scale": ["trevsnn_energy_imagenet_scale.py"],
    "claims": ["claims.py"],
    "plan_budgets": ["plan_budgets.py", "--repeats", "7"],
    # eager vs torch.compile, reversible mode at batch 16 (compiling takes most of the time)
    "compile_trevsnn": ["bench_compile.py", "--models", "trevsnn_tiny", "--modes", "reversible",
                        "--batches", "16", "--profile", "trevsnn_tiny:reversible:16",
                        "--out", str(RESULTS_DIR / "compile_trevsnn_cpu.json")],
    "compile_revsnn": ["bench_compile.py", "--models", "revs_resnet37", "--modes", "reversible",
                       "--batches", "16", "--profile", "revs_resnet37:reversible:16",
                       "--out", str(RESULTS_DIR / "compile_revsnn_cpu.json")],
}


def write_index(results: Path = RESULTS_DIR) -> Path:
    """docs/results/README.md: every results file with the command, device and commit."""
    lines = ["# Measured results", "",
             "Written by the commands below (`python benchmarks/run_all.py` runs all of the CPU "
             "ones and then rewrites the numbers that README.md and docs/*.md quote; "
             "`python -m revsnn.bench.docnumbers` checks them). Each JSON file holds its "
             "provenance (command, device, torch, dtype, threads, git commit, date, settings), "
             "the measured rows, derived figures and the tables the docs quote.", "",
             "| file | command | device | torch | commit | date |", "|---|---|---|---|---|---|"]
    for f in sorted(results.glob("*.json")):
        p = read_results(f)["provenance"]
        lines.append(f"| `{f.name}` | `{p['command']}` | {p['device']} | {p['torch']} | "
                     f"{p['commit']} | {p['date']} |")
    pngs = sorted(results.glob("*.png"))
    if pngs:
        lines += ["", "Plots (written with the JSON file of the same prefix): "
                  + ", ".join(f"`{p.name}`" for p in pngs) + "."]
    out = results / "README.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", choices=list(STEPS), default=list(STEPS))
    p.add_argument("--docs-only", action="store_true")
    args = p.parse_args(argv)
    for step in [] if args.docs_only else args.only:
        cmd = [sys.executable, str(HERE / STEPS[step][0]), *STEPS[step][1:]]
        if step == "energy_trained":
            run = read_results(RESULTS_DIR / "main_job_cpu.json")["provenance"]["settings"]["run"]
            if Path(run, "checkpoint.pt").exists():
                cmd += ["--trevsnn-run", run]
        t0 = time.time()
        print(f"[run_all] {step}: {' '.join(cmd)}", file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True)
        print(f"[run_all] {step} done in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    print(f"[run_all] wrote {write_index()}", file=sys.stderr)
    for doc in write(Path(".")):
        print(f"[run_all] rewrote {doc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
