"""T-RevSNN inference energy at ImageNet scale (224 px, 1000 classes) under both spike-input
conventions, to compare with the published 2.8 mJ per image (``trevsnn_small``, T = 4, Hu et al.
ICML 2024) and to see which convention the paper's figure uses.

Counts synaptic operations of one eval forward (``revsnn.bench.energy.count_synops``, E = 4.6 pJ
MAC + 0.9 pJ AC) on a few real images -- the first ``--images`` scikit-learn digits, normalised,
resized to ``--image`` px, 3 channels (``bench_trevsnn.digits_images``) -- with the weights at
initialisation (seed 0), under

- ``strict`` (DESIGN.md §5): ACs only for layers whose input is binary, so pw1 in
  ``pw1(dw1(S(z)))`` (fed by dw1's real-valued output) counts MACs;
- ``linear_chain``: also layers fed directly by a layer that counted ACs, at the rate of the
  spikes that started the chain (SOPs = rate x FLOPs for every layer fed by spikes through
  purely linear layers, the convention of published SNN energy figures).

Untrained firing rates differ from trained ones, so only the order of magnitude is comparable
with the paper. The energy of the MAC-counted layers (the stem, and pw1 under ``strict``) does
not depend on firing rates, so for every rule the script also prints ``rate_for_paper``: the
mean firing rate over the AC-counted dense ops that would give exactly the published energy,
``(E_paper - E_MAC-layers) / (E_AC * dense ops counted as ACs)`` -- a rule whose MAC layers
alone exceed the published figure cannot reproduce it at any firing rate.

    python benchmarks/trevsnn_energy_imagenet_scale.py                  # small, tiny, tiny_bptt
    python benchmarks/trevsnn_energy_imagenet_scale.py --models trevsnn_small --images 4
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Dict, List, Optional

import torch
from bench_trevsnn import ENERGY_RULES, digits_images, energy_of, energy_rules

import revsnn
from revsnn.bench.energy import E_AC_PJ
from revsnn.bench.report import environment, markdown_table

PAPER_MJ = {"trevsnn_small": 2.8}  # Hu et al. ICML 2024, ImageNet-1k, T = 4, 224 px


def measure(name: str, x: torch.Tensor, args: argparse.Namespace) -> List[Dict[str, Any]]:
    torch.manual_seed(args.seed)
    model = revsnn.create_model(name, num_classes=args.classes, T=args.T,
                                in_channels=x.shape[1])
    params = sum(p.numel() for p in model.parameters()) / 1e6
    rows = []
    for rule in energy_rules(args.energy_rule):
        t0 = time.perf_counter()
        e = energy_of(model, x, rule)
        seconds = time.perf_counter() - t0
        published = (args.image, args.classes, args.T) == (224, 1000, 4)  # the paper's setting
        paper = PAPER_MJ.get(name) if published else None
        rate_for_paper: Any = ""
        if paper is not None:  # firing rate over the AC-counted ops that gives the paper's mJ
            rest = paper - e["mac_mj"]
            rate_for_paper = rest / (E_AC_PJ * e["ac_dense_ops"] * 1e-9) if rest > 0 else "none"
        rows.append({
            "model": name, "rule": e["rule"], "params_M": params,
            "energy_mj": e["energy_mj"], "stem_mj": e["stem_mj"],
            "stem_share": e["stem_mj"] / e["energy_mj"], "mac_layers_mj": e["mac_mj"],
            "GMACs": e["macs"] / 1e9, "GACs": e["acs"] / 1e9,
            "ac_dense_G": e["ac_dense_ops"] / 1e9, "spike_rate": e["spike_rate"],
            "chained_layers": e["chained_layers"],
            "vs_paper": "" if paper is None else e["energy_mj"] / paper,
            "rate_for_paper": rate_for_paper, "count_s": seconds,
        })
        print(f"  {name} [{e['rule']}]: {e['energy_mj']:.3f} mJ/img (stem {e['stem_mj']:.3f}, "
              f"MAC layers {e['mac_mj']:.3f}, MACs {e['macs'] / 1e9:.3f} G, ACs "
              f"{e['acs'] / 1e9:.3f} G of {e['ac_dense_ops'] / 1e9:.3f} G dense, spike rate "
              f"{e['spike_rate']:.3f}) in {seconds:.0f} s", flush=True)
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+",
                   default=["trevsnn_small", "trevsnn_tiny", "trevsnn_tiny_bptt"])
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--image", type=int, default=224)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--images", type=int, default=2, help="real images for the firing rates")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--energy-rule", default="both", choices=[*ENERGY_RULES, "both"],
                   help="spike-input convention: strict (DESIGN.md §5), linear_chain "
                        "(published SNN convention) or both")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    env = environment(torch.device("cpu"), torch.float32)
    print(f"# {env} threads={args.threads} image={args.image} T={args.T} "
          f"classes={args.classes} images={args.images} (digits, untrained, seed {args.seed})",
          flush=True)
    x = digits_images(args.images, args.image, 3)
    rows: List[Dict[str, Any]] = []
    for name in args.models:
        rows += measure(name, x, args)
    by = {(r["model"], r["rule"]): r["energy_mj"] for r in rows}
    for rule in energy_rules(args.energy_rule):
        for base in ("trevsnn_tiny", "trevsnn_cifar"):
            if (base, rule) in by and (base + "_bptt", rule) in by:
                print(f"[{rule}] {base}_bptt / {base}: "
                      f"{by[(base + '_bptt', rule)] / by[(base, rule)]:.2f}x (goal 1.6x)")
    for r in rows:
        if r["vs_paper"] != "":
            need = r["rate_for_paper"]
            need = ("no firing rate can match (MAC layers alone exceed it)" if need == "none"
                    else f"mean rate {need:.3f} over AC-counted ops would match"
                    + (" (impossible: > 1)" if need > 1 else ""))
            print(f"[{r['rule']}] {r['model']}: {r['energy_mj']:.3f} mJ/img vs paper "
                  f"{PAPER_MJ[r['model']]} mJ ({r['vs_paper']:.2f}x); MAC layers "
                  f"{r['mac_layers_mj']:.3f} mJ; {need}")
    print()
    print(markdown_table(rows, list(rows[0])))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"env": env, "args": vars(args), "rows": rows}, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
