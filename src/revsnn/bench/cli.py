"""``revsnn bench memory|speed|energy``: registered models side by side, all modes in one process.

::

    revsnn bench memory --models revs_resnet21,revs_resnet37 --sweep depth \\
        --memory-modes none,checkpoint,reversible --ranges "2,4 16,32" --out results/depth
    revsnn bench memory --models trevsnn_tiny --sweep T --values 2,4,8 --out results/T
    revsnn bench memory --models ms_resnet34,spikingjelly:ms_resnet34   # a peer beside ours
    revsnn bench speed  --models trevsnn_tiny --memory-modes none,reversible
    revsnn bench energy --models trevsnn_tiny --data digits --image-size 32

Each model (per sweep value) is built once (``revsnn.bench.setups.create``: a registered model
or a peer) and measured in every requested memory mode it supports, through the same calls as
the benchmark scripts (``revsnn.bench.measure``): memory per image at every batch range with
the batch-independent part; training and inference steps of the modes interleaved, process CPU
and wall time of the same steps (CUDA events on a GPU); energy on one forward. Output: a
markdown table on stdout, and with ``--out DIR`` the files ``DIR/<kind>.csv``, ``DIR/<kind>.md``
and PNG plots (matplotlib: ``pip install revsnn[bench]``).
Every row records device, torch version, dtype, batch, image size, T, depth and git commit.
Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import OneLineParser
from ..reversible.mode import MemoryMode
from . import report
from .energy import E_AC_PJ, E_MAC_PJ, SpikeInput, count_synops
from .measure import Settings, memory_rows, range_key, step_times, time_columns
from .memory import DEFAULT_RANGES
from .peers import is_peer
from .setups import create, in_modes, supported_modes
from .timing import MIN_REPEATS

__all__ = ["main", "build_parser"]

KINDS = ("memory", "speed", "energy")
DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
def _ranges(text: str) -> Tuple[Tuple[int, int], ...]:
    try:
        out = tuple(tuple(int(b) for b in r.split(",")) for r in text.split())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"ranges look like '2,4 16,32', got {text!r}") from e
    if not out or any(len(r) < 2 for r in out):
        raise argparse.ArgumentTypeError(f"ranges look like '2,4 16,32', got {text!r}")
    return out


def _csv_list(text: str) -> List[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list, e.g. a,b")
    return items


def _modes(text: str) -> List[MemoryMode]:
    try:
        return [MemoryMode.parse(s) for s in _csv_list(text)]
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="revsnn bench",
        description="Training memory per image, step time and synaptic-operation energy of "
        "registered models, every memory mode measured in the same process.",
    )
    p.add_argument("kind", choices=KINDS, help="what to measure")
    p.add_argument("--models", type=_csv_list, required=True,
                   help="comma-separated registered model names (revsnn models lists them) or "
                   "peers such as spikingjelly:ms_resnet34 (revsnn.bench.peers)")
    p.add_argument("--memory-modes", type=_modes, default=list(MemoryMode),
                   help="comma-separated subset of none,checkpoint,reversible (default: all)")
    p.add_argument("--sweep", choices=("depth", "T"), default=None,
                   help="depth: --models lists one model per depth (--values optionally labels "
                   "them when a model has no .depth); T: each model is built once per --values T")
    p.add_argument("--values", type=_csv_list, default=None,
                   help="sweep values, comma-separated (T values, or depth labels)")
    p.add_argument("--batch", type=int, default=4,
                   help="batch size of speed and energy runs (default 4)")
    p.add_argument("--ranges", type=_ranges, default=DEFAULT_RANGES,
                   help="memory: batch ranges, each 'B1,B2', separated by spaces (default "
                   "'2,4 16,32'): per image = slope of the peak over each range, fixed = its "
                   "intercept (the batch-independent part)")
    p.add_argument("--image-size", type=int, default=32, help="input height = width")
    p.add_argument("--in-channels", type=int, default=None,
                   help="input channels (default: the model's .in_channels, else 3)")
    p.add_argument("--T", type=int, default=4, help="time steps when not sweeping T")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--data", choices=("random", "digits"), default="random",
                   help="input images: random normal, or scikit-learn's real 8x8 digits resized "
                   "(needs scikit-learn)")
    p.add_argument("--warmup", type=int, default=2, help="speed: untimed steps first")
    p.add_argument("--repeats", type=int, default=MIN_REPEATS,
                   help=f"speed: timed steps, median reported (>= {MIN_REPEATS})")
    p.add_argument("--e-mac", type=float, default=E_MAC_PJ, help="energy per MAC in pJ")
    p.add_argument("--e-ac", type=float, default=E_AC_PJ, help="energy per AC in pJ")
    p.add_argument("--spike-input", choices=[r.value for r in SpikeInput],
                   default=SpikeInput.STRICT.value,
                   help="energy: which layer inputs count as spikes -- strict (binary inputs "
                   "only, the default) or linear_chain (also layers fed by a spike-fed layer "
                   "through linear layers only: the SOP convention of published SNN figures)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads for CPU runs (default: torch's own choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None,
                   help="output folder for <kind>.csv, <kind>.md and PNG plots")
    return p


@dataclass
class Setting:
    """One model build: registered name, T, and the sweep value it stands for."""

    model: str
    T: int
    sweep_value: Any = None


def _settings(args: argparse.Namespace) -> List[Setting]:
    if args.sweep == "T":
        if not args.values:
            raise ValueError("--sweep T needs --values, e.g. --values 2,4,8")
        try:
            Ts = [int(v) for v in args.values]
        except ValueError as e:
            raise ValueError(f"--sweep T needs integer --values, got {args.values}") from e
        if min(Ts) < 1:
            raise ValueError(f"T values must be >= 1, got {Ts}")
        return [Setting(m, T, T) for m in args.models for T in Ts]
    if args.sweep == "depth":
        if args.values is not None and len(args.values) != len(args.models):
            raise ValueError(
                f"--sweep depth takes one model per depth: {len(args.models)} models but "
                f"{len(args.values)} values"
            )
        labels = args.values or [None] * len(args.models)
        return [Setting(m, args.T, v) for m, v in zip(args.models, labels)]
    if args.values is not None:
        raise ValueError("--values needs --sweep depth|T")
    return [Setting(m, args.T) for m in args.models]


def _progress(msg: str) -> None:
    print(f"[revsnn bench] {msg}", file=sys.stderr, flush=True)


def _build(setting: Setting, args: argparse.Namespace, first_mode: MemoryMode) -> nn.Module:
    model = create(setting.model, num_classes=args.num_classes, T=setting.T,
                   memory_mode=None if is_peer(setting.model) else first_mode,
                   in_channels=args.in_channels or 3, image_size=args.image_size,
                   seed=args.seed, device=args.device)
    return model.to(dtype=DTYPES[args.dtype])


def _base_row(
    args: argparse.Namespace, setting: Setting, model: nn.Module, channels: int,
    env: Dict[str, str],
) -> Dict[str, Any]:
    depth = getattr(model, "depth", None)
    if depth is None and args.sweep == "depth" and setting.sweep_value is not None:
        depth = setting.sweep_value
    sweep_value = setting.sweep_value
    if args.sweep == "depth":
        sweep_value = depth if depth is not None else args.models.index(setting.model)
    return {
        "bench": args.kind,
        "model": setting.model,
        "depth": "" if depth is None else depth,
        "T": setting.T,
        "sweep": args.sweep or "",
        "sweep_value": "" if sweep_value is None else sweep_value,
        "batch": args.batch,
        "image_size": args.image_size,
        "in_channels": channels,
        "num_classes": args.num_classes,
        "data": args.data,
        "params": sum(p.numel() for p in model.parameters()),
        **env,
    }


def _settings_of(args: argparse.Namespace, setting: Setting, channels: int) -> Settings:
    return Settings(T=setting.T, image_size=args.image_size, in_channels=channels,
                    num_classes=args.num_classes, device=args.device, seed=args.seed,
                    ranges=args.ranges, time_batch=args.batch, warmup=args.warmup,
                    repeats=args.repeats, dtype=args.dtype, data=args.data)


def _modes_of(model: nn.Module, name: str, modes: List[MemoryMode]) -> List[str]:
    ok = supported_modes(model)
    skipped = [m.value for m in modes if m not in ok]
    if skipped:
        _progress(f"  {name} has no {', '.join(skipped)} mode (it supports "
                  f"{', '.join(m.value for m in ok)}): skipped")
    return [m.value for m in modes if m in ok]


def _run_memory(model, name, modes, base, s, args) -> List[Dict[str, Any]]:
    rows = memory_rows(model, s, modes=_modes_of(model, name, modes), base=base)
    for r in rows:
        r["memory_mode"] = r.pop("mode")
        first = range_key(s.ranges[0])
        r["mib_per_image"] = r[f"mib_{first}"]  # the first range's slope, for plots
    return rows


def _run_speed(model, name, modes, base, s, args) -> List[Dict[str, Any]]:
    names = _modes_of(model, name, modes)
    if not names:
        return []
    baseline = "none" if "none" in names else names[0]
    setups = in_modes(model, names)
    train = time_columns(step_times(setups, s, train=True), baseline, "train")
    infer = time_columns(step_times(setups, s, train=False), baseline, "infer")
    rows = []
    for mode in names:
        t, i = train[mode], infer[mode]
        clock = "cuda_ms" if "train_cuda_ms" in t else "cpu_ms"
        rows.append({
            **base,
            "memory_mode": mode,
            "train_ms_per_step": t[f"train_{clock}"],
            "train_wall_ms_per_step": t["train_wall_ms"],
            "train_ms_per_image": t[f"train_{clock}"] / args.batch,
            "infer_ms_per_image": i[f"infer_{clock}"] / args.batch,
            "train_time_ratio": t[f"train_vs_{baseline}"],
            "train_wall_ratio": t[f"train_vs_{baseline}_wall"],
            "infer_time_ratio": i[f"infer_vs_{baseline}"],
            "clock": clock[:-3],
            "ratio_baseline": baseline,
            "repeats": args.repeats,
            "warmup": args.warmup,
        })
    return rows


def _run_energy(model, name, modes, base, s, args, layer_rows) -> List[Dict[str, Any]]:
    # The forward pass (eval, no grad) is the same computation in every memory mode.
    mode = MemoryMode.parse(_modes_of(model, name, modes)[0])
    x, _ = s.batches()(args.batch)
    rep = count_synops(model, x.to(args.device), batch_size=args.batch,
                       e_mac_pj=args.e_mac, e_ac_pj=args.e_ac, spike_input=args.spike_input)
    for lr in rep.rows():
        layer_rows.append({"model": name, "T": base["T"], "depth": base["depth"],
                           "sweep_value": base["sweep_value"], **lr})
    rate = rep.mean_firing_rate
    return [{
        **base,
        "memory_mode": mode.value,
        "energy_mj_per_image": rep.energy_mj,
        "macs_per_image": rep.macs,
        "acs_per_image": rep.acs,
        "mean_firing_rate": "" if rate is None else rate,
        "e_mac_pj": args.e_mac,
        "e_ac_pj": args.e_ac,
        "spike_input": rep.spike_input.value,
    }]


DISPLAY = {
    "memory": [],  # per range: mib_<range>, fixed_<range>; see _display_columns
    "speed": ["train_ms_per_step", "train_time_ratio", "infer_ms_per_image", "infer_time_ratio"],
    "energy": ["energy_mj_per_image", "macs_per_image", "acs_per_image", "mean_firing_rate"],
}


def _display_columns(kind: str, args: argparse.Namespace) -> List[str]:
    cols = ["model", "depth", "T", "memory_mode"] if kind == "memory" else [
        "model", "depth", "T", "batch", "memory_mode"]
    if kind == "memory":
        keys = [range_key(r) for r in args.ranges]
        return cols + [f"mib_{k}" for k in keys] + [f"fixed_{k}" for k in keys] + [
            "saved_mib", "params_mib"]
    return cols + DISPLAY[kind]


def _plots(kind: str, rows, layer_rows, args, out: Path) -> List[Path]:
    made: List[Path] = []
    sweep = args.sweep
    if kind == "memory":
        if sweep:
            group = ["memory_mode"] if sweep == "depth" else ["model", "memory_mode"]
            made.append(report.plot_lines(
                rows, "sweep_value", "mib_per_image", group,
                out / f"memory_per_image_vs_{sweep}.png", xlabel=sweep,
                title=f"training memory per image vs {sweep}", ylabel="MiB per image"))
        else:
            made.append(report.plot_bars(
                rows, ["model", "memory_mode"], "mib_per_image", out / "memory_per_image.png",
                title="training memory per image", ylabel="MiB per image"))
    elif kind == "speed":
        made.append(report.plot_bars(
            rows, ["model", "sweep_value", "memory_mode"] if sweep else ["model", "memory_mode"],
            "train_ms_per_step", out / "step_time.png",
            title=f"training step time ({rows[0]['device']})", ylabel="ms per step"))
    elif kind == "energy":
        keys = sorted({(r["model"], r["sweep_value"]) for r in layer_rows}, key=str)
        for model, sv in keys:
            sel = [r for r in layer_rows if r["model"] == model and r["sweep_value"] == sv]
            suffix = f"_{sweep}{sv}" if sweep else ""
            made.append(report.plot_bars(
                sel, ["layer"], "energy_mj_per_image", out / f"energy_layers_{model}{suffix}.png",
                title=f"energy per layer: {model}{suffix}", ylabel="mJ per image",
                horizontal=True))
        if sweep:
            made.append(report.plot_lines(
                rows, "sweep_value", "energy_mj_per_image", ["model"],
                out / f"energy_vs_{sweep}.png", xlabel=sweep, title=f"energy per image vs {sweep}",
                ylabel="mJ per image"))
    return made


def _run(args: argparse.Namespace) -> int:
    if args.batch < 1 or args.image_size < 1 or args.T < 1 or args.num_classes < 1:
        raise ValueError("--batch, --image-size, --T and --num-classes must be >= 1")
    if args.repeats < MIN_REPEATS:
        raise ValueError(f"--repeats must be >= {MIN_REPEATS} (median of >= 5)")
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device} requested but CUDA is not available")
    settings = _settings(args)
    dtype = DTYPES[args.dtype]
    if any(min(r) < 1 or len(set(r)) != len(r) for r in args.ranges):
        raise ValueError(f"--ranges need distinct positive batch sizes, got {args.ranges}")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    env = report.environment(dev, dtype)
    env["threads"] = str(torch.get_num_threads())
    modes: List[MemoryMode] = list(dict.fromkeys(args.memory_modes))
    rows: List[Dict[str, Any]] = []
    layer_rows: List[Dict[str, Any]] = []
    for setting in settings:
        t0 = time.perf_counter()
        model = _build(setting, args, modes[0])
        channels = args.in_channels or int(getattr(model, "in_channels", 3))
        s = _settings_of(args, setting, channels)
        base = _base_row(args, setting, model, channels, env)
        _progress(f"{args.kind}: {setting.model} T={setting.T} depth={base['depth'] or '?'} "
                  f"modes={','.join(m.value for m in modes)} on {env['device']}")
        if args.kind == "memory":
            rows += _run_memory(model, setting.model, modes, base, s, args)
        elif args.kind == "speed":
            rows += _run_speed(model, setting.model, modes, base, s, args)
        else:
            rows += _run_energy(model, setting.model, modes, base, s, args, layer_rows)
        _progress(f"  done in {time.perf_counter() - t0:.1f} s")
        del model

    table = report.markdown_table(rows, _display_columns(args.kind, args))
    what = (f"ranges={' '.join(','.join(map(str, r)) for r in args.ranges)}"
            if args.kind == "memory" else f"batch={args.batch}")
    prov = (f"device={env['device']} torch={env['torch']} dtype={env['dtype']} {what} "
            f"image_size={args.image_size} data={args.data} commit={env['commit']}")
    print(table)
    print(f"\n{prov}")
    if args.out is not None:
        out: Path = args.out
        out.mkdir(parents=True, exist_ok=True)
        report.write_csv(rows, out / f"{args.kind}.csv")
        md = f"{table}\n\n{prov}\n"
        if layer_rows:
            report.write_csv(layer_rows, out / "energy_layers.csv")
            md += "\n## Energy per layer\n\n" + report.markdown_table(layer_rows) + "\n"
        (out / f"{args.kind}.md").write_text(md)
        if report.plots_available():
            for path in _plots(args.kind, rows, layer_rows, args, out):
                _progress(f"wrote {path}")
        else:
            _progress("PNG plots skipped: matplotlib is not installed (pip install revsnn[bench])")
        _progress(f"wrote {out / (args.kind + '.csv')} and {out / (args.kind + '.md')}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``revsnn bench`` (argv without the leading "bench")."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        return _run(args)
    except Exception as e:  # noqa: BLE001 - expected failures become one line, bugs re-raise
        from ..errors import expected_error

        line = expected_error(e)
        if line is None:
            raise
        print(line if line.startswith("revsnn ") else f"revsnn bench: {line}", file=sys.stderr)
        return 2
