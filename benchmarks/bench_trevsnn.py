"""T-RevSNN training memory, step time and inference energy against its memory modes and its
standard-BPTT counterpart, measured side by side in one process.

For every T (number of columns = time steps) four training set-ups of the same size class:
``trevsnn_tiny`` in memory modes none / checkpoint / reversible and ``trevsnn_tiny_bptt`` (every
spike a multi-step LIF over T steps, input repeated over T, plain BPTT). The training loss is the
one training uses (``revsnn.train.loss.model_loss``: T-RevSNN's column loss over every head, plain
cross-entropy for the one-head BPTT network; ``--loss final``: the final head only), label
smoothing 0.1.

- memory: ``revsnn.bench.memory.measure_training_step`` -- peak live-tensor bytes of one training
  step (forward + loss + backward) per image, the slope between two batch sizes; plus bytes saved
  for backward per image, and what the reversible engine stored (``memory_summary``);
- step time: zero_grad + forward + loss + backward + SGD step, median over interleaved rounds, wall
  clock (``revsnn.bench.timing``) and process CPU time (steadier on a shared CPU); ratios are the
  claims, absolute CPU times are not;
- energy (``revsnn.bench.energy.count_synops``): SOP-based energy per image from a
  real forward on real images (scikit-learn digits, resized to the image size) in eval mode,
  with the stem's share. Weights are at initialisation unless ``--checkpoint`` gives trained ones.
  ``--energy-rule`` picks the spike-input convention: ``strict`` (DESIGN.md §5: ACs only for
  binary inputs), ``linear_chain`` (also a layer fed directly by a spike-fed layer, e.g. pw1 in
  ``pw1(dw1(S(z)))``: the SOP convention of published SNN energy figures) or ``both`` (default);
  every energy column and line names its rule.

    python benchmarks/bench_trevsnn.py                       # T = 4 8 16, 32x32, CPU
    python benchmarks/bench_trevsnn.py --Ts 4 --image 64 --skip-timing
    python benchmarks/bench_trevsnn.py --device cuda --mem-batches 16 32 --batch 32
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
import torch.nn.functional as F
from torch import nn

import revsnn
from revsnn.bench.energy import count_synops
from revsnn.bench.memory import measure_training_step
from revsnn.bench.report import environment, markdown_table, write_csv
from revsnn.bench.timing import time_training_step
from revsnn.train.loss import model_loss

KINDS = ("none", "checkpoint", "reversible", "bptt")
ENERGY_RULES = ("strict", "linear_chain")  # revsnn.bench.energy.SpikeInput values
PUBLISHED_MIB = {4: 1.55, 16: 1.96}  # published code, reversible, 32x32 (SYSTEMS.md / issue)


class Heads(nn.Module):
    """The training forward: every head's logits (``final_only``: the final head alone)."""

    def __init__(self, model: nn.Module, final_only: bool = False) -> None:
        super().__init__()
        self.model = model
        self.final_only = final_only

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return [self.model(x)] if self.final_only else list(self.model.forward_heads(x))


def loss_fn(outputs: List[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    return model_loss(outputs, target, label_smoothing=0.1)


def build(kind: str, T: int, args: argparse.Namespace) -> nn.Module:
    kw = dict(num_classes=args.classes, T=T, in_channels=args.in_channels)
    if kind == "bptt":
        return revsnn.create_model(args.model + "_bptt", **kw)
    return revsnn.create_model(args.model, memory_mode=kind, tolerance=args.tolerance, **kw)


def cpu_times_ms(fn: Callable[[], Any], warmup: int, repeats: int) -> List[float]:
    """Process CPU time per call (ms): not counting time spent waiting for a shared core."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        out.append(1e3 * (time.process_time() - t0))
    return out


def train_step_fn(model: nn.Module, batch) -> Callable[[], None]:
    m = copy.deepcopy(model).train()
    opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
    x, target = batch

    def step() -> None:
        opt.zero_grad(set_to_none=False)
        loss_fn(m(x), target).backward()
        opt.step()

    return step


def digits_images(n: int, size: int, channels: int) -> torch.Tensor:
    """Real images: the first n scikit-learn digits, normalised, resized to size x size."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - optional
        raise ImportError(
            "energy on real data needs scikit-learn: pip install revsnn[train]"
        ) from err
    x = torch.tensor(load_digits().images[:n], dtype=torch.float32).unsqueeze(1) / 16.0
    x = (x - x.mean()) / x.std()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.expand(-1, channels, -1, -1).contiguous()  # [n, C, size, size]


def energy_rules(rule: str) -> List[str]:
    """``--energy-rule`` -> the conventions to count: ``both`` is strict and linear_chain."""
    return list(ENERGY_RULES) if rule == "both" else [rule]


def energy_of(model: nn.Module, x: torch.Tensor, rule: str) -> Dict[str, Any]:
    """Energy per image of one eval forward on ``x`` under ``rule``: total, stem share, MACs,
    ACs, the energy of the MAC-counted layers (independent of firing rates), the dense ops
    counted as ACs, the mean firing rate of the binary layer inputs (weighted by their sizes)
    and the number of chained layers (``revsnn.bench.energy.count_synops``)."""
    rep = count_synops(model, x, spike_input=rule)
    rows = rep.rows()
    stem = sum(r["energy_mj_per_image"] for r in rows if r["layer"].startswith("stem"))
    binary = [layer for layer in rep.layers if layer.spiking]
    elements = sum(layer.input_elements for layer in binary)
    return {"rule": rep.spike_input.value, "energy_mj": rep.energy_mj, "stem_mj": stem,
            "macs": rep.macs, "acs": rep.acs, "mac_mj": rep.e_mac_pj * rep.macs * 1e-9,
            "ac_dense_ops": sum(layer.ac_dense_ops for layer in rep.layers) / rep.batch_size,
            "spike_rate": sum(layer.input_nonzeros for layer in binary) / max(elements, 1),
            "chained_layers": sum(1 for r in rows if r["chained"])}


def energy_rows(T: int, args: argparse.Namespace) -> Dict[str, Dict[str, Any]]:
    """``{rule: {"reversible" | "bptt": energy_of(...)}}`` for every rule of ``--energy-rule``."""
    x = digits_images(args.energy_images, args.image, args.in_channels)
    out: Dict[str, Dict[str, Any]] = {rule: {} for rule in energy_rules(args.energy_rule)}
    for kind in ("reversible", "bptt"):
        torch.manual_seed(0)
        m = build(kind, T, args)
        if args.checkpoint and kind == "reversible":
            m.load_state_dict(torch.load(args.checkpoint, map_location="cpu"))
        for rule in out:
            out[rule][kind] = energy_of(m, x, rule)
    return out


def parse_args(argv: List[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="trevsnn_tiny", choices=["trevsnn_tiny", "trevsnn_cifar"])
    p.add_argument("--Ts", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    p.add_argument("--loss", default="all", choices=["all", "final"],
                   help="all: the column loss over every head (training); final: last head only")
    p.add_argument("--tolerance", type=float, default=None,
                   help="rebuild tolerance of the reversible engine (default 1e3*eps; inf: "
                        "never store -- a pure rebuild, not exact)")
    p.add_argument("--image", type=int, default=32)
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch", type=int, default=4, help="batch for step time")
    p.add_argument("--mem-batches", type=int, nargs=2, default=[2, 4])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (1: steadier when shared)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds")
    p.add_argument("--energy-images", type=int, default=32)
    p.add_argument("--checkpoint", default=None, help="trained T-RevSNN state_dict for energy")
    p.add_argument("--energy-rule", default="both", choices=[*ENERGY_RULES, "both"],
                   help="spike-input convention of the energy count: strict (DESIGN.md §5), "
                        "linear_chain (published SNN convention) or both")
    p.add_argument("--skip-timing", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-energy", action="store_true")
    p.add_argument("--csv", default=None)
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    env = environment(dev, torch.float32)
    print(f"# {env} threads={args.threads} model={args.model} image={args.image} "
          f"batch={args.batch} mem_batches={args.mem_batches} Ts={args.Ts} loss={args.loss} "
          f"tolerance={args.tolerance}", flush=True)
    g = torch.Generator().manual_seed(0)

    def make_batch(B: int):
        x = torch.randn(B, args.in_channels, args.image, args.image, generator=g)
        return x, torch.randint(0, args.classes, (B,), generator=g)

    batch = make_batch(args.batch)
    rows: List[Dict[str, Any]] = []
    for T in args.Ts:
        torch.manual_seed(0)
        models = {k: Heads(build(k, T, args), args.loss == "final").to(dev) for k in args.kinds}
        row = {k: dict(T=T, kind=k, **env) for k in models}
        for k, m in models.items():
            row[k]["params_M"] = sum(p.numel() for p in m.parameters()) / 1e6
        if not args.skip_memory:
            for k, m in models.items():
                mem = measure_training_step(m, make_batch, loss_fn=loss_fn, device=dev,
                                            batches=args.mem_batches)
                row[k]["mib_per_img"] = mem["mib_per_image"]
                row[k]["saved_mib_per_img"] = mem["saved_mib_per_image"]
                if k == "reversible":
                    s = m.model.memory_summary()
                    row[k]["stored_cols"] = "/".join(map(str, s["stored_columns"])) or "-"
                    row[k]["fixups"] = s["fixup_elements"]
                print(f"  T={T} {k}: {mem['mib_per_image']:.3f} MiB/img "
                      f"(saved {mem['saved_mib_per_image']:.3f})", flush=True)
        samples: Dict[str, Dict[str, List[float]]] = {k: {} for k in models}
        for r in range(0 if args.skip_timing else args.rounds):
            for k, m in models.items():  # interleaved: load changes hit every set-up alike
                t = time_training_step(m, batch, loss_fn=loss_fn, device=dev, warmup=args.warmup,
                                       repeats=args.repeats)
                got = {"step_ms": [1e3 * v for v in t["times_s"]]}
                if dev.type == "cpu":
                    got["step_cpu_ms"] = cpu_times_ms(train_step_fn(m, batch), args.warmup,
                                                      args.repeats)
                for key, values in got.items():
                    samples[k].setdefault(key, []).extend(values)
                print(f"  T={T} round {r} {k}: " + ", ".join(
                    f"{key} {statistics.median(v):.1f}" for key, v in got.items()), flush=True)
        for k in models:
            for key, values in samples[k].items():
                row[k][key] = statistics.median(values)
        for k in models:
            for key in ("step_ms", "step_cpu_ms"):
                if key in row[k] and "none" in row:
                    row[k][key.replace("_ms", "_vs_none")] = row[k][key] / row["none"][key]
            if "reversible" in row and k != "reversible":
                rev = row["reversible"]
                if "mib_per_img" in row[k]:
                    row[k]["mib_vs_rev"] = row[k]["mib_per_img"] / rev["mib_per_img"]
                if "step_cpu_ms" in row[k]:
                    row[k]["step_cpu_vs_rev"] = row[k]["step_cpu_ms"] / rev["step_cpu_ms"]
        if not args.skip_energy and "reversible" in models and "bptt" in models:
            for rule, e in energy_rows(T, args).items():
                for k in ("reversible", "bptt"):
                    row[k][f"energy_mj_{rule}"] = e[k]["energy_mj"]
                    row[k][f"stem_mj_{rule}"] = e[k]["stem_mj"]
                ratio = e["bptt"]["energy_mj"] / e["reversible"]["energy_mj"]
                row["bptt"][f"energy_vs_rev_{rule}"] = ratio
                rev_e, bptt_e = e["reversible"], e["bptt"]
                print(f"  T={T} energy mJ/img [{rule}]: reversible {rev_e['energy_mj']:.4f} "
                      f"(stem {rev_e['stem_mj']:.4f}, {rev_e['stem_mj'] / rev_e['energy_mj']:.1%}),"
                      f" bptt {bptt_e['energy_mj']:.4f} (stem {bptt_e['stem_mj']:.4f}, "
                      f"{bptt_e['stem_mj'] / bptt_e['energy_mj']:.1%}), bptt/rev {ratio:.2f}x",
                      flush=True)
        rows.extend(row[k] for k in models)
        del models
    rev = {r["T"]: r for r in rows if r["kind"] == "reversible" and "mib_per_img" in r}
    if len(rev) > 1:
        lo, hi = min(rev), max(rev)
        growth = rev[hi]["mib_per_img"] / rev[lo]["mib_per_img"] - 1
        print(f"\nreversible memory per image T={lo} -> T={hi}: {100 * growth:+.1f}% "
              f"(goal <= +5%; published code 1.55 -> 1.96 MiB, +26%)")
    for T, r in rev.items():
        if T in PUBLISHED_MIB:
            print(f"reversible T={T}: {r['mib_per_img']:.3f} MiB/img "
                  f"vs published {PUBLISHED_MIB[T]}")
    cols = ["T", "kind", "params_M", "mib_per_img", "saved_mib_per_img", "mib_vs_rev",
            "stored_cols", "fixups", "step_ms", "step_vs_none", "step_cpu_ms", "step_cpu_vs_none",
            "step_cpu_vs_rev"]
    cols += [f"{c}_{rule}" for rule in ENERGY_RULES for c in ("energy_mj", "stem_mj",
                                                               "energy_vs_rev")]
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
