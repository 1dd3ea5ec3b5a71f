"""Every GPU figure of the README in one run (target: under 8 minutes on one H200); writes
``docs/results/<section>_gpu.json``.

Sections (``--only`` picks some), each the same benchmark command as on a CPU with GPU settings:

- ``claims``: ``benchmarks/claims.py``, memory ranges 2->4, 16->32, 32->64 via
  ``max_memory_allocated``, step times at batch 32 with CUDA events;
- ``revsnn``: ``benchmarks/bench_revsnn.py`` (memory at the same ranges, step ratios at batch 32);
- ``trevsnn``: ``benchmarks/bench_trevsnn.py`` (memory and step ratios vs T at batch 32; the
  energy count does not depend on the device and is not repeated);
- ``pararevsnn``: ``benchmarks/bench_pararevsnn.py`` at 37 and 69 layers with RevSResNet, the
  fused ParaRevSNN and the two-stream ``pair`` path (``streams=True``);
- ``plan``: ``benchmarks/plan_budgets.py``: the planner's predicted vs measured peak and step
  at 25 / 50 / 75 % budgets on the four models, beside SpikingJelly's MS-ResNet34 plain, memopt
  level 1 and level 4 (level 4's search needs CUDA);
- ``compile``: ``benchmarks/bench_compile.py``: eager vs ``torch.compile`` (inductor, Triton
  kernels) step time with CUDA events, compile time and ``max_memory_allocated`` for the four
  models in none and reversible mode at batch 4 and 16 (the smoke run traces with the ``eager``
  backend: no kernel build);
- ``fsdp``: ``benchmarks/bench_fsdp.py``: per-process peak (batch-independent part, MiB per
  image) and step time of FSDP2 sharding over all local GPUs (NCCL, one process per GPU)
  against one GPU, RevSResNet37 and a 0.33B-parameter RevSResNet in reversible mode;
- ``checks``: equality checks -- a channels_last copy against the contiguous model, and under
  bf16 autocast each memory mode against ``none`` (relative differences of the logits and of
  every parameter gradient, and whether they are within tolerance); each model in a child
  process under ``MALLOC_CHECK_=3``, so a native crash is a failed row with its message.

``--device cpu --smoke`` runs every section on tiny models in seconds (a test does, so the
script cannot rot); its files go under ``results/gpu_suite_smoke`` unless ``--out``.

    python benchmarks/gpu_suite.py                    # on a GPU machine
    python benchmarks/gpu_suite.py --only claims checks
    python benchmarks/gpu_suite.py --device cpu --smoke --out /tmp/smoke
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_compile  # noqa: E402
import bench_fsdp  # noqa: E402
import bench_pararevsnn  # noqa: E402
import bench_revsnn  # noqa: E402
import bench_trevsnn  # noqa: E402
import claims  # noqa: E402
import plan_budgets  # noqa: E402

from revsnn.bench.data import random_batches  # noqa: E402
from revsnn.bench.results import RESULTS_DIR, command_line, provenance, publish, table  # noqa: E402
from revsnn.bench.setups import create, objective, supported_modes  # noqa: E402

RANGES = ["2,4", "16,32", "32,64"]
#: section -> (command, full arguments, smoke arguments)
SECTIONS = {
    "claims": (claims.main, ["--ranges", *RANGES, "--time-batch", "32"],
               ["--smoke", "--ranges", "1,2", "--time-batch", "1", "--energy-images", "1"]),
    "revsnn": (bench_revsnn.main, ["--ranges", *RANGES, "--time-batch", "32",
                                   "--models", bench_revsnn.default_models()],
               ["--ranges", "1,2", "--time-batch", "1", "--models", "revs_resnet_test"]),
    "trevsnn": (bench_trevsnn.main, ["--ranges", *RANGES, "--time-batches", "32", "--no-energy"],
                ["--model", "trevsnn_cifar", "--image", "8", "--Ts", "1", "--ranges", "1,2",
                 "--time-batches", "1", "--no-energy"]),
    "pararevsnn": (bench_pararevsnn.main,
                   ["--depths", "37", "69", "--kinds", "revsresnet", "pararevsnn_fused",
                    "pararevsnn_pair", "--streams", "--ranges", *RANGES, "--time-batch", "32"],
                   ["--depths", "21", "--widths", "4,4,4,4", "--kinds", "revsresnet",
                    "pararevsnn_pair", "--ranges", "1,2", "--time-batch", "1"]),
    "compile": (bench_compile.main, ["--batches", "4", "16"],
                ["--models", "revmlp_test", "--modes", "reversible", "--batches", "1", "2",
                 "--image", "8", "--T", "2", "--backend", "eager"]),
    # writes plan_budgets_<kind>.{json,md} and the plan-space figure into the folder
    "plan": (plan_budgets.main, ["--rounds", "2", "--repeats", "7"],
             ["--models", "ms_resnet_test", "--peers-beside", "ms_resnet_test", "--peers",
              "spikingjelly:ms_resnet34", "spikingjelly:ms_resnet34+memopt4", "--batch", "4",
              "--image", "8", "--T", "2", "--rounds", "1", "--repeats", "2",
              "--figure-model", "ms_resnet_test"]),
    "fsdp": (bench_fsdp.main, ["--batches", "16", "32", "--image", "32", "--T", "4"],
             ["--models", "revs_resnet_test", "--batches", "1", "2", "--image", "8", "--T", "1",
              "--steps", "1"]),
}
#: sections whose script takes a folder (``--out``), not a results file
FOLDER_OUT = {"plan"}
CHECK_MODELS = ["revs_resnet21", "ms_resnet34", "trevsnn_tiny", "pararevsnn_resnet21"]
SMOKE_CHECK_MODELS = ["revs_resnet_test", "ms_resnet_test", "trevsnn_test", "pararevsnn_test"]
TOL = {"channels_last": 1e-3, "bf16_autocast": 5e-2}


def _step(model, x, y, autocast):
    """Logits (final head) and every parameter gradient of one training step."""
    model = copy.deepcopy(model).train()  # BN statistics start equal in every compared run
    module, loss_fn = objective(model)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        heads = module(x)
        loss = loss_fn(heads, y)
    loss.backward()
    return heads[-1].detach().float(), [p.grad.detach().float().clone()
                                       for p in model.parameters() if p.grad is not None]


def _rel(a, b) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def equality_checks(names, device, image, batch):
    """Each model's checks in a child process (``--check-model``): channels_last and autocast
    cross native kernels in unusual layouts, and a native crash there (PyTorch's oneDNN
    backward of a strided 1x1 conv in channels_last corrupts the heap on some CPUs:
    revsnn.spiking.pointwise) must become a failed row with its message, not a dead suite."""
    rows = []
    for name in names:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--check-model", name, "--device",
               device, "--image", str(image), "--batch", str(batch)]
        env = dict(os.environ, MALLOC_CHECK_="3")  # abort at the first heap corruption
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
        except subprocess.TimeoutExpired:
            done = None
        sys.stderr.write("" if done is None else done.stderr)
        if done is not None and done.returncode == 0:
            rows += json.loads(done.stdout.strip().splitlines()[-1])
            continue
        why = ("timed out after 1800 s" if done is None else
               f"child exited with {done.returncode}" + (" (signal: a native crash)"
                                                         if done.returncode < 0 else ""))
        tail = "" if done is None else " | ".join(done.stderr.strip().splitlines()[-3:])
        for check in TOL:
            rows.append({"check": check, "model": name, "mode": "all", "against":
                         "contiguous" if check == "channels_last" else "none", "ok": False,
                         "error": f"{why}: {tail}"[:300]})
    return rows


def model_checks(name, device, image, batch):
    """The rows of one model's checks (run in the child of :func:`equality_checks`)."""
    torch.set_num_threads(1)
    rows = []
    model = create(name, device=device)
    x, y = random_batches(3, image, 10)(batch)
    x, y = x.to(device), y.to(device)
    modes = [m.value for m in supported_modes(model)]
    for mode in modes:
        if callable(getattr(model, "set_memory_mode", None)):
            model.set_memory_mode(mode)
        cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        pairs = {"channels_last": (
            (cl, x.contiguous(memory_format=torch.channels_last), y, False),
            (model, x, y, False))}  # (model, x, target, autocast) of the two runs
        if mode != "none":
            ref = copy.deepcopy(model)
            ref.set_memory_mode("none")
            pairs["bf16_autocast"] = ((model, x, y, True), (ref, x, y, True))
        for check, (args_a, args_b) in pairs.items():
            row = {"check": check, "model": name, "mode": mode,
                   "against": "contiguous" if check == "channels_last" else "none"}
            try:
                (la, ga), (lb, gb) = _step(*args_a), _step(*args_b)
            except (RuntimeError, ValueError) as err:  # reported, not hidden
                row.update(ok=False, error=f"{type(err).__name__}: {err}"[:200])
            else:
                row.update(logits_rel=_rel(la, lb),
                           grad_rel_max=max(_rel(a, b) for a, b in zip(ga, gb)))
                row["ok"] = max(row["logits_rel"], row["grad_rel_max"]) <= TOL[check]
            rows.append(row)
            print(f"[gpu_suite] {check} {name} [{mode}]: " + ", ".join(
                f"{k} {v:.2e}" if isinstance(v, float) else f"{k} {v}"
                for k, v in row.items() if k in ("logits_rel", "grad_rel_max", "ok",
                                                 "error")), file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--smoke", action="store_true", help="tiny models, seconds, any device")
    p.add_argument("--only", nargs="+", default=[*SECTIONS, "checks"],
                   choices=[*SECTIONS, "checks"])
    p.add_argument("--out", type=Path, default=None, help="folder of the results files")
    p.add_argument("--check-model", default=None, help=argparse.SUPPRESS)  # one child's checks
    p.add_argument("--image", type=int, default=8, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.check_model:
        print(json.dumps(model_checks(args.check_model, args.device, args.image, args.batch)))
        return 0
    command = command_line([__file__, *(sys.argv[1:] if argv is None else argv)])
    kind = torch.device(args.device).type
    if kind == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU machine, or --device cpu --smoke")
    out = args.out or (Path("results") / "gpu_suite_smoke" if args.smoke else RESULTS_DIR)
    torch.set_num_threads(1)  # CPU-side work only on a GPU; steady numbers on a shared CPU
    seconds = {}
    for name in args.only:
        t0 = time.time()
        if name == "checks":
            rows = equality_checks(SMOKE_CHECK_MODELS if args.smoke else CHECK_MODELS,
                                   args.device, 8 if args.smoke else 32, 2 if args.smoke else 8)
            prov = provenance(args.device, {"tolerance": TOL, "smoke": args.smoke},
                              command=command)
            text = table(rows, {"check": "check", "model": "model", "mode": "mode",
                                "against": "against", "logits_rel": "logits rel. diff",
                                "grad_rel_max": "max grad rel. diff", "ok": "within tol.",
                                "error": "error"},
                         prov, fmt={"logits_rel": ".1e", "grad_rel_max": ".1e"})
            publish(out / f"checks_{kind}.json", prov, rows, tables={"checks": text})
        else:
            fn, full, smoke = SECTIONS[name]
            target = out if name in FOLDER_OUT else out / f"{name}_{kind}.json"
            fn([*(smoke if args.smoke else full), "--device", args.device, "--out", str(target)])
        seconds[name] = round(time.time() - t0, 1)
        print(f"[gpu_suite] {name} done in {seconds[name]} s", file=sys.stderr, flush=True)
    print(f"[gpu_suite] sections {seconds}, total {sum(seconds.values()):.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
