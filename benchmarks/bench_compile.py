"""Eager vs ``torch.compile`` (inductor, the model compiled in place by
``revsnn.models.compile.compile_model``): training step time, compile time and peak memory.

For every model, memory mode and batch size, the eager and the compiled copy of the same model
(same weights) take turns step by step in one process (``revsnn.bench.timing.time_steps``:
wall and process CPU of the same steps, median of ``--repeats``); the compiled copy compiles
during the warm-up step, and the seconds spent compiling are counted apart
(``CompileClock``: TorchDynamo, AOTAutograd and inductor, backward graphs included).

Peak memory on CPU: the allocation tracker of ``revsnn.bench.memory`` cannot see the buffers
that inductor's generated code allocates directly, so both set-ups are measured the same other
way: the process heap in use (glibc ``mallinfo2``: ``uordblks + hblkhd``) sampled every 0.2 ms
by a thread during one training step, minus its value before the step (parameters, gradients,
the batch and optimiser state are allocated before). Per image: the slope between the two
timed batch sizes. On CUDA: ``max_memory_allocated`` over one step.

    nice python benchmarks/bench_compile.py                       # the results file
    python benchmarks/bench_compile.py --models trevsnn_tiny --modes reversible --batches 16
"""

from __future__ import annotations

import argparse
import ast
import copy
import ctypes
import functools
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

from revsnn import model_info
from revsnn.bench.data import random_batches
from revsnn.bench.results import RESULTS_DIR, command_line, provenance, publish, table
from revsnn.bench.setups import create
from revsnn.bench.timing import time_steps
from revsnn.measure import default_loss, default_optimizer, training_step
from revsnn.models.compile import CompileClock, compile_model, compile_problem

MODELS = ["revs_resnet37", "ms_resnet34", "trevsnn_tiny", "pararevsnn_resnet37"]


class _CompiledOnCopy(nn.Module):
    """Stands for "this model, compiled": ``time_steps`` deep-copies every set-up, and the copy
    of this one is the inner model copied and then compiled in place."""

    def __init__(self, model: nn.Module, options: Dict[str, Any]) -> None:
        super().__init__()
        self.inner, self.options = model, options

    def __deepcopy__(self, memo):
        m = copy.deepcopy(self.inner, memo)
        return compile_model(m, **self.options)


class _Heap:
    """Peak of glibc's heap in use during a block (sampled by a thread), minus the start."""

    def __init__(self) -> None:
        libc = ctypes.CDLL("libc.so.6")

        class Info(ctypes.Structure):
            _fields_ = [(n, ctypes.c_size_t) for n in (
                "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                "uordblks", "fordblks", "keepcost")]

        libc.mallinfo2.restype = Info
        self._info = libc.mallinfo2

    def now(self) -> int:
        i = self._info()
        return int(i.uordblks + i.hblkhd)

    def peak_of(self, fn) -> int:
        base = self.now()
        peak = [base]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], self.now())
                time.sleep(0.0002)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        try:
            fn()
        finally:
            done.set()
            t.join()
        peak[0] = max(peak[0], self.now())
        return peak[0] - base


def _step_of(model: nn.Module, batch, device: torch.device) -> Callable[[], None]:
    """One training step as every measurement runs it (:func:`revsnn.measure.training_step`
    with the default loss and SGD)."""
    opt = default_optimizer([p for p in model.parameters() if p.requires_grad])
    x, y = batch[0].to(device), batch[1].to(device)
    return functools.partial(training_step, model, default_loss, opt, x, y)


def _peak_bytes(model: nn.Module, batch, device: torch.device) -> int:
    """Peak memory of one training step (after one untimed step: compiled, grads allocated)."""
    step = _step_of(model, batch, device)
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    return _Heap().peak_of(step)


def _profile(model: nn.Module, batch, device: torch.device, top: int = 12) -> List[Dict]:
    """Where one training step's time goes (after two untimed steps): the ``top`` operators
    and compiled regions by self CPU time."""
    step = _step_of(model, batch, device)
    step()
    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows) or 1.0
    return [{"name": e.key[:80], "calls": e.count, "self_cpu_ms": e.self_cpu_time_total / 1e3,
             "share": e.self_cpu_time_total / total} for e in rows[:top]]


def _load() -> Optional[float]:
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except OSError:
        return None


def measure(name: str, mode: str, batches: List[int], args, device: torch.device,
            options: Dict[str, Any], profiles: Dict[str, Any]) -> List[Dict[str, Any]]:
    model = create(name, memory_mode=mode, image_size=args.image, T=args.T).to(device)
    make = random_batches(model.in_channels, args.image, model.num_classes)
    rows, peaks = [], {"eager": {}, "compiled": {}}
    for B in batches:
        batch = make(B)
        clock = CompileClock()
        load0 = _load()
        try:
            r = time_steps({"eager": model, "compiled": _CompiledOnCopy(model, options)}, batch,
                           device=device, warmup=1, repeats=args.repeats)
        finally:
            clock.close()
        compile_s = clock.seconds
        for kind in ("eager", "compiled"):
            m = copy.deepcopy(model)
            if kind == "compiled":
                compile_model(m, **options)
            peaks[kind][B] = _peak_bytes(m, batch, device)
            if f"{name}:{mode}:{B}" in args.profile:  # the compiled graphs are cached by now
                profiles.setdefault(f"{name}:{mode}:{B}", {})[kind] = _profile(m, batch, device)
            del m
        e, c = r["eager"], r["compiled"]
        rows.append({
            "model": name, "mode": mode, "batch": B,
            "eager_wall_ms": e["median_wall_ms"], "compiled_wall_ms": c["median_wall_ms"],
            "eager_cpu_ms": e["median_cpu_ms"], "compiled_cpu_ms": c["median_cpu_ms"],
            "speedup_wall": e["median_wall_ms"] / c["median_wall_ms"],
            "speedup_cpu": e["median_cpu_ms"] / c["median_cpu_ms"],
            "compile_s": compile_s,
            "eager_peak_mib": peaks["eager"][B] / 2**20,
            "compiled_peak_mib": peaks["compiled"][B] / 2**20,
            "load_before": load0, "load_after": _load(),
        })
        print(f"[bench_compile] {name} {mode} B={B}: eager {e['median_wall_ms']:.1f} ms, "
              f"compiled {c['median_wall_ms']:.1f} ms (x{rows[-1]['speedup_wall']:.2f} wall, "
              f"x{rows[-1]['speedup_cpu']:.2f} cpu), compile {compile_s:.1f} s",
              file=sys.stderr, flush=True)
        torch._dynamo.reset()
    if len(batches) >= 2:
        b1, b2 = batches[0], batches[-1]
        for kind in ("eager", "compiled"):
            slope = (peaks[kind][b2] - peaks[kind][b1]) / (b2 - b1) / 2**20
            for row in rows:
                row[f"{kind}_mib_per_image"] = slope
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--modes", nargs="+", default=["none", "reversible"])
    p.add_argument("--batches", type=int, nargs="+", default=[4, 16])
    p.add_argument("--image", type=int, default=32)
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--backend", default="inductor",
                   help="torch.compile backend (the smoke test uses 'eager': no C++ build)")
    p.add_argument("--profile", nargs="*", default=[], metavar="MODEL:MODE:BATCH",
                   help="also profile one eager and one compiled step (top operators by self "
                   "CPU time) of these measured set-ups")
    p.add_argument("--inductor", nargs="*", default=[], metavar="KEY=VALUE",
                   help="torch._inductor.config settings (Python literals), e.g. "
                   "layout_optimization=False")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if args.backend == "inductor":
        problem = compile_problem(device)
        if problem is not None:
            print(f"bench_compile: {problem}", file=sys.stderr)
            return 2
    torch.set_num_threads(args.threads)
    options = {"backend": args.backend}
    inductor = {}
    for item in args.inductor:
        key, _, value = item.partition("=")
        inductor[key] = ast.literal_eval(value)
    if inductor:
        options["options"] = inductor
    rows: List[Dict[str, Any]] = []
    profiles: Dict[str, Any] = {}
    t0 = time.time()
    for name in args.models:
        for mode in args.modes:
            if mode not in model_info(name).memory_modes:
                continue
            rows += measure(name, mode, args.batches, args, device, options, profiles)
    prov = provenance(device, {
        "models": args.models, "modes": args.modes, "batches": args.batches,
        "image": args.image, "T": args.T, "repeats": args.repeats, "threads": args.threads,
        "backend": args.backend, "inductor": inductor, "dynamic": False,
        "seconds": round(time.time() - t0, 1),
        "memory": "CUDA max_memory_allocated" if device.type == "cuda" else
        "glibc heap in use (mallinfo2) sampled every 0.2 ms during one step, minus before",
    }, command=command_line([__file__, *(sys.argv[1:] if argv is None else argv)]))
    cols = {"model": "model", "mode": "mode", "batch": "batch",
            "eager_wall_ms": "eager wall ms", "compiled_wall_ms": "compiled wall ms",
            "speedup_wall": "speed-up (wall)", "eager_cpu_ms": "eager CPU ms",
            "compiled_cpu_ms": "compiled CPU ms", "speedup_cpu": "speed-up (CPU)",
            "compile_s": "compile s", "eager_peak_mib": "eager peak MiB",
            "compiled_peak_mib": "compiled peak MiB", "eager_mib_per_image": "eager MiB/img",
            "compiled_mib_per_image": "compiled MiB/img", "load_before": "load"}
    text = table(rows, cols, prov, fmt={"load_before": ".1f", "compile_s": ".1f"})
    out = args.out or RESULTS_DIR / f"compile_{device.type}.json"
    return publish(out, prov, rows, tables={"compile": text},
                   sections={"profiles": profiles} if profiles else None)


if __name__ == "__main__":
    sys.exit(main())
