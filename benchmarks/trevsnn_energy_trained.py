"""T-RevSNN inference energy with trained weights, against its BPTT twin, on real data.

Trains ``trevsnn_cifar`` (REVERSIBLE) and ``trevsnn_cifar_bptt`` (plain BPTT, every spike a
multi-step LIF, the image repeated over T) with the main job's recipe (``revsnn train`` defaults:
scikit-learn digits, fixed stratified split, same epochs, seed and optimiser) -- or loads
``--checkpoints`` written by ``revsnn train`` -- and then counts synaptic operations of one
inference forward on the first ``--images`` test images, normalised exactly as in training
(``revsnn.bench.energy.count_synops``: MACs for real-valued inputs, ACs = firing rate x dense
operations for spike inputs, E = 4.6 pJ MAC + 0.9 pJ AC). Prints accuracy, energy per image,
MACs, ACs and mean firing rate of both, the ratio, and the share of the layers counted as MACs.
``--energy-rule``: ``strict`` (DESIGN.md §5: ACs only for binary inputs), ``linear_chain`` (also
a layer fed directly by a spike-fed layer, e.g. pw1 in ``pw1(dw1(S(z)))``: the SOP convention
of published SNN energy figures) or ``both`` (default, the same trained weights); every line
names its rule.

    python benchmarks/trevsnn_energy_trained.py                      # train both (CPU, minutes)
    python benchmarks/trevsnn_energy_trained.py --T 8 --energy-rule linear_chain
    python benchmarks/trevsnn_energy_trained.py --checkpoints runs/a runs/b
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from revsnn.bench.energy import count_synops
from revsnn.train.build import build_data, build_model
from revsnn.train.checkpoint import load_checkpoint, load_model_state
from revsnn.train.config import TrainConfig, apply_overrides
from revsnn.train.loop import _inputs, run_training

PAIR = ("trevsnn_cifar", "trevsnn_cifar_bptt")
ENERGY_RULES = ("strict", "linear_chain")  # revsnn.bench.energy.SpikeInput values


def _trained(name: str, args: argparse.Namespace, ck: Optional[str]):
    if ck is not None:
        data = load_checkpoint(ck)
        cfg = TrainConfig.from_dict(dict(data["config"]))
        bundle = build_data(cfg)
        model = build_model(cfg, bundle.info)
        load_model_state(model, data["model"], data["path"])
        acc = None
    else:
        overrides: Dict[str, Any] = {
            "model": name, "T": args.T, "seed": args.seed,
            "memory_mode": "reversible" if name == PAIR[0] else "none",
            "out": str(Path(args.out) / name),
        }
        if args.epochs is not None:
            overrides["epochs"] = args.epochs
        cfg = apply_overrides(TrainConfig(), overrides)
        t = time.time()
        summary, model = run_training(cfg, log=lambda s: print(s, file=sys.stderr, flush=True))
        acc = summary["final_test_acc"]
        print(f"[energy] trained {name}: {acc:.2f}% in {time.time() - t:.0f} s", file=sys.stderr)
        bundle = build_data(cfg)
    return model.cpu(), bundle, acc


def _report(name: str, model, bundle, n: int, rule: str) -> Dict[str, Any]:
    test = bundle.test
    from revsnn.data import Loader

    batch = next(iter(Loader(test, n, False)))
    x, _ = _inputs(bundle, batch, None, train=False)
    rep = count_synops(model, x, batch_size=x.shape[0], spike_input=rule)
    rows = rep.rows()
    spiking = [r["firing_rate"] for r in rows if r["spiking_input"]]  # binary inputs only
    mac = sum(r["energy_mj_per_image"] for r in rows
              if not (r["spiking_input"] or r["chained"]))
    return {
        "model": name, "rule": rep.spike_input.value, "energy_mj": rep.energy_mj,
        "macs": rep.macs, "acs": rep.acs, "mean_rate": sum(spiking) / max(len(spiking), 1),
        "non_spiking_mj": mac, "chained_layers": sum(1 for r in rows if r["chained"]),
        "images": int(x.shape[0]),
    }


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--epochs", type=int, default=None, help="default: the main job's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", type=int, default=256, help="test images for the firing rates")
    p.add_argument("--checkpoints", nargs=2, default=None, metavar=("TREVSNN", "BPTT"))
    p.add_argument("--out", default="runs/energy_trained")
    p.add_argument("--energy-rule", default="both", choices=[*ENERGY_RULES, "both"],
                   help="spike-input convention of the energy count: strict (DESIGN.md §5), "
                        "linear_chain (published SNN convention) or both")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rules = list(ENERGY_RULES) if args.energy_rule == "both" else [args.energy_rule]
    res: Dict[str, List[Dict[str, Any]]] = {rule: [] for rule in rules}
    for i, name in enumerate(PAIR):
        ck = args.checkpoints[i] if args.checkpoints else None
        model, bundle, acc = _trained(name, args, ck)
        for rule in rules:
            r = _report(name, model, bundle, args.images, rule)
            r["test_acc"] = acc
            res[rule].append(r)
            print(f"[{rule}] {name}: {r['energy_mj']:.5f} mJ/img (MACs {r['macs']:.4g}, ACs "
                  f"{r['acs']:.4g}, mean firing rate {r['mean_rate']:.3f}, MAC-counted layers "
                  f"{r['non_spiking_mj']:.5f} mJ, {r['chained_layers']} chained layers), test acc "
                  f"{'n/a' if acc is None else f'{acc:.2f}%'}", flush=True)
    ratios = {rule: rows[1]["energy_mj"] / rows[0]["energy_mj"] for rule, rows in res.items()}
    for rule, ratio in ratios.items():
        print(f"[{rule}] energy ratio bptt / T-RevSNN: {ratio:.2f}x (paper 1.6x), T={args.T}, "
              f"{res[rule][0]['images']} digits test images, torch {torch.__version__}, CPU")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"ratios": ratios, "rows": [r for rows in res.values() for r in rows]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
