"""T-RevSNN inference energy with trained weights, against its BPTT twin, on real data.

Trains ``trevsnn_cifar`` (REVERSIBLE) and ``trevsnn_cifar_bptt`` (plain BPTT, every spike a
multi-step LIF, the image repeated over T) with the main job's recipe (``revsnn train`` defaults:
scikit-learn digits, fixed stratified split, same epochs, seed and optimiser) -- or loads
``--checkpoints`` written by ``revsnn train`` -- and then counts synaptic operations of one
inference forward on the first ``--images`` test images, normalised exactly as in training
(``revsnn.bench.energy.count_synops``: MACs for real-valued inputs, ACs = firing rate x dense
operations for spike inputs, E = 4.6 pJ MAC + 0.9 pJ AC). Prints accuracy, energy per image,
MACs, ACs and mean firing rate of both, the ratio, and the stem's share.

    python benchmarks/trevsnn_energy_trained.py                      # train both (CPU, minutes)
    python benchmarks/trevsnn_energy_trained.py --T 8
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


def _report(name: str, model, bundle, n: int) -> Dict[str, Any]:
    test = bundle.test
    from revsnn.data import Loader

    batch = next(iter(Loader(test, n, False)))
    x, _ = _inputs(bundle, batch, None, train=False)
    rep = count_synops(model, x, batch_size=x.shape[0])
    rows = rep.rows()
    spiking = [r["firing_rate"] for r in rows if r["spiking_input"]]
    stem = sum(r["energy_mj_per_image"] for r in rows if not r["spiking_input"])
    return {
        "model": name, "energy_mj": rep.energy_mj, "macs": rep.macs, "acs": rep.acs,
        "mean_rate": sum(spiking) / max(len(spiking), 1), "non_spiking_mj": stem,
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
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    res = []
    for i, name in enumerate(PAIR):
        ck = args.checkpoints[i] if args.checkpoints else None
        model, bundle, acc = _trained(name, args, ck)
        r = _report(name, model, bundle, args.images)
        r["test_acc"] = acc
        res.append(r)
        print(f"{name}: {r['energy_mj']:.5f} mJ/img (MACs {r['macs']:.4g}, ACs {r['acs']:.4g}, "
              f"mean firing rate {r['mean_rate']:.3f}, non-spiking-input layers "
              f"{r['non_spiking_mj']:.5f} mJ), test acc "
              f"{'n/a' if acc is None else f'{acc:.2f}%'}", flush=True)
    ratio = res[1]["energy_mj"] / res[0]["energy_mj"]
    print(f"energy ratio bptt / T-RevSNN: {ratio:.2f}x (paper 1.6x), T={args.T}, "
          f"{res[0]['images']} digits test images, torch {torch.__version__}, CPU")
    if args.json:
        Path(args.json).write_text(json.dumps({"ratio": ratio, "rows": res}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
