"""``revsnn plan``: per-part memory modes for a registered model, a batch size and a budget.

::

    revsnn plan --model revs_resnet37 --batch 16 --budget 600MiB
    revsnn plan --model ms_resnet34 --batch 16 --budget 1GiB --json
    revsnn plan --model trevsnn_tiny --max-batch --budget 8GiB --device cuda

Profiles the model on the device (:func:`revsnn.plan.profile`), solves
(:func:`revsnn.plan.solve` or :func:`revsnn.plan.max_batch`), then measures the chosen plan
(:func:`revsnn.plan.measure_plan`; ``--no-measure`` skips it) and prints a table: part, mode,
MiB kept for backward, extra milliseconds over ``none``, and predicted vs measured peak and step.
The step is ``revsnn train``'s: every head and its loss, gradients held, the optimiser's step.
``--json`` prints one object whose ``"modes"`` is the mapping ``set_memory_mode`` accepts.
Exit codes: 0 a plan fits, 1 no plan fits (the leanest plan and its shortfall are printed),
2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Optional

__all__ = ["main", "build_parser"]


class _UsageError(ValueError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        raise _UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="revsnn plan",
        description="Choose each part's memory mode so that a training step fits a memory "
        "budget (parameters, gradients, optimiser state, batch, activations and transients) "
        "at the least step time. Profiles the model on the device, solves, measures the plan.",
    )
    p.add_argument("--model", required=True, help="registered model name (revsnn models)")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--batch", type=int, help="batch size to plan for")
    size.add_argument("--max-batch", action="store_true",
                      help="find the largest batch size that fits the budget")
    p.add_argument("--world-size", type=int, default=1, metavar="N",
                   help="plan per process of N processes sharding the model (--parallel fsdp): "
                   "parameters, gradients and optimiser state / N plus the largest gathered "
                   "unit; --batch is the per-process batch (not measured here: one process "
                   "cannot run the sharded step)")
    p.add_argument("--budget", required=True,
                   help="device memory for the training step, e.g. 8GiB, 600MiB, 1.5G, 8GB")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--T", type=int, help="time steps (default: the model's)")
    p.add_argument("--image-size", type=int, help="input height = width (default: the model's)")
    p.add_argument("--num-classes", type=int, help="classes (default: the model's)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    p.add_argument("--optimizer", default="adamw", choices=["sgd", "adamw", "lamb"],
                   help="optimiser whose state counts (default adamw, as revsnn train)")
    p.add_argument("--profile-batch", type=int,
                   help="batch size to profile at (memory at half of it and at it; default: "
                   "the planned batch, or 8 with --max-batch)")
    p.add_argument("--rounds", type=int, default=2, help="timing rounds of the profile")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="time to minimise: wall (default) or process CPU time")
    p.add_argument("--no-measure", action="store_true",
                   help="do not measure the chosen plan (predictions only)")
    p.add_argument("--repeats", type=int, default=3, help="timed steps of the measured plan")
    return p


def _resolve_device(text: str):
    import torch

    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except RuntimeError:
        raise ValueError(f"unknown device {text!r}; expected auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {text!r}; expected auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA is not available here; use --device cpu")
    return dev


def _positive(name: str, v: Optional[int]) -> None:
    if v is not None and v < 1:
        raise ValueError(f"--{name} must be >= 1, got {v}")


def _setup(args) -> Dict[str, Any]:
    """Model, example input, step functions, from the command line."""
    import torch

    from ..models.objective import TrainForward, model_loss
    from ..models.registry import model_info
    from ..units import parse_bytes
    from .config import TrainConfig, apply_overrides
    from .optim import build_optimizer

    for name in ("batch", "T", "image_size", "num_classes", "threads", "profile_batch", "rounds",
                 "repeats", "world_size"):
        _positive(name.replace("_", "-"), getattr(args, name))
    budget = parse_bytes(args.budget)
    info = model_info(args.model)
    dev = _resolve_device(args.device)
    if dev.type == "cpu":
        torch.set_num_threads(int(args.threads))
    T = args.T or info.T
    kw = {"num_classes": args.num_classes or info.num_classes}
    if args.T is not None:
        kw["T"] = args.T
    torch.manual_seed(0)
    model = info.build(**kw).to(dev)
    size = args.image_size or info.image_size
    pb = args.profile_batch or (args.batch if args.batch else 8)
    frames = info.input == "frames"

    def make_input(b: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        shape = (T, b, info.in_channels, size, size) if frames else (b, info.in_channels,
                                                                      size, size)
        return torch.rand(shape, generator=g).to(dev)

    cfg = apply_overrides(TrainConfig(), {"optimizer": args.optimizer})
    return {
        "budget": budget, "info": info, "device": dev, "model": model, "T": T, "size": size,
        "profile_batch": pb, "make_input": make_input, "forward": TrainForward(model),
        "loss_fn": lambda out, y: model_loss(out, y),
        "optimizer": lambda params: build_optimizer(model, cfg),
    }


def _table(s: Dict[str, Any], sol, measured: Optional[Dict[str, Any]], args, prof) -> str:
    from ..units import MIB, format_bytes

    p = sol.prediction
    dev = s["device"]
    where = f"{dev}" + (f" ({args.threads} thread{'s' if args.threads > 1 else ''})"
                        if dev.type == "cpu" else "")
    lines = [
        f"{args.model} | batch {sol.batch_size}, T={s['T']}, {s['size']}x{s['size']}, {where}, "
        f"{args.optimizer} | budget {format_bytes(sol.budget_bytes)}"
        + (f" per process of {args.world_size} (FSDP)" if args.world_size > 1 else ""),
        f"{'part':<22} {'mode':<11} {'kept MiB':>9} {'extra ms':>9}",
    ]
    for name in prof.order:
        lines.append(f"{name:<22} {sol.modes[name]:<11} {p.kept_bytes[name] / MIB:>9.1f} "
                     f"{1e3 * p.extra_s[name]:>9.1f}")
    for name, mode in prof.idle.items():
        lines.append(f"{name:<22} {mode:<11} {'(unused)':>9}")
    lines.append(f"fixed: parameters, buffers, gradients, optimiser state, batch "
                 f"{format_bytes(sol.fixed_bytes)}")

    def cmp(pred: float, meas: Optional[float], fmt) -> str:
        if meas is None:
            return f"predicted {fmt(pred)}"
        return f"predicted {fmt(pred)}, measured {fmt(meas)} ({100 * (pred / meas - 1):+.1f}%)"

    mp = measured.get("peak_bytes") if measured else None
    ms = measured.get(f"{args.clock}_s") if measured else None
    lines.append(f"peak: {cmp(sol.predicted_peak_bytes, mp, format_bytes)} "
                 f"[{(sol.predicted_peak_bytes - sol.fixed_bytes) / MIB / sol.batch_size:.2f} "
                 f"MiB/image above fixed; {p.peak_at}]")
    reps = f", median of {len(measured[f'{args.clock}_times_s'])}" if measured else ""
    lines.append(f"step: {cmp(sol.predicted_step_s, ms, lambda v: f'{v:.3f} s')} "
                 f"[{args.clock} time{reps}]")
    if measured and measured.get("error"):
        lines.append(f"measured: {measured['error']}")
    lines.append(sol.message)
    lines.append(f"model.set_memory_mode({json.dumps(sol.modes)})")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    """``revsnn plan``; returns 0 (fits), 1 (no plan fits) or 2 (bad input)."""
    import torch

    from ..plan.measure import measure_plan
    from ..plan.profiler import profile
    from ..plan.solver import max_batch, solve

    parser = build_parser()
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as done:  # --help
            return 0 if done.code in (0, None) else 2
        s = _setup(args)
        prof_x = s["make_input"](s["profile_batch"])
        prof = profile(s["model"], prof_x, forward=s["forward"], loss_fn=s["loss_fn"],
                       optimizer=s["optimizer"], rounds=args.rounds)
        if args.world_size > 1:
            from ..plan.sharded import optimizer_state_factor, shard_profile

            prof = shard_profile(prof, s["model"], args.world_size,
                                 optimizer_state_factor(args.optimizer))
        if args.max_batch:
            from ..plan.capacity import cap_budget

            s["budget"], note = cap_budget(s["budget"], s["device"])
            if note:
                print(f"revsnn plan: {note}", file=sys.stderr)
            sol = max_batch(prof, s["budget"], clock=args.clock)
        else:
            sol = solve(prof, args.batch, s["budget"], clock=args.clock)
    except Exception as err:  # noqa: BLE001 - expected failures become one line, bugs re-raise
        from ..errors import expected_error

        line = str(err) if isinstance(err, _UsageError) else expected_error(err)
        if line is None:
            raise
        print(line, file=sys.stderr)
        return 2
    measured: Optional[Dict[str, Any]] = None
    if not args.no_measure and args.world_size == 1:
        from ..errors import is_out_of_memory

        try:
            measured = measure_plan(s["model"], sol.modes, s["make_input"](sol.batch_size),
                                    forward=s["forward"], loss_fn=s["loss_fn"],
                                    optimizer=s["optimizer"], rounds=args.repeats)
        except (RuntimeError, MemoryError) as err:
            if not is_out_of_memory(err):
                raise
            measured = {"error": f"out of memory ({' '.join(str(err).split())[:200]})"}
    if args.json:
        out = sol.to_json()
        out.update(model=args.model, T=s["T"], image_size=s["size"], device=str(s["device"]),
                   world_size=args.world_size,
                   torch=torch.__version__, optimizer=args.optimizer, clock=args.clock,
                   profile_batches=list(prof.batches))
        if measured is not None:
            out["measured_peak_bytes"] = (None if "peak_bytes" not in measured
                                          else int(measured["peak_bytes"]))
            out["measured_step_s"] = measured.get(f"{args.clock}_s")
        print(json.dumps(out, indent=1))
    else:
        print(_table(s, sol, measured, args, prof))
    if not sol.fits:
        print(f"revsnn plan: {sol.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
