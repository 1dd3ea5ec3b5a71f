"""T-RevSNN inference energy at ImageNet scale (224 px, 1000 classes, T = 4) under both
spike-input conventions, against the published 2.8 mJ per image (``trevsnn_small``, Hu et al.
ICML 2024); writes ``docs/results/trevsnn_energy_imagenet_scale_cpu.json``.

One eval forward (``revsnn.bench.measure.energy``, E = 4.6 pJ MAC + 0.9 pJ AC) on the first
``--images`` digits test images (normalised as in training, resized to 224 px, 3 channels),
weights at initialisation (seed 0): only the order of magnitude compares with the paper. The
energy of the MAC-counted operations does not depend on firing rates, so for the paper's model
the script also gives ``rate_for_paper``: the mean rate over the AC-counted dense operations that
would give exactly 2.8 mJ (none when the MAC part alone exceeds it).

    python benchmarks/trevsnn_energy_imagenet_scale.py
    python benchmarks/trevsnn_energy_imagenet_scale.py --models trevsnn_small --images 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from revsnn.bench.data import digits_images
from revsnn.bench.energy import E_AC_PJ
from revsnn.bench.measure import energy
from revsnn.bench.results import RESULTS_DIR, command_line, provenance, publish, table
from revsnn.bench.setups import create

PAPER_MJ = {"trevsnn_small": 2.8}  # Hu et al. ICML 2024, ImageNet-1k, T = 4, 224 px
RULES = ("strict", "linear_chain")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+",
                   default=["trevsnn_small", "trevsnn_tiny", "trevsnn_tiny_bptt"])
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--image", type=int, default=224)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path,
                   default=RESULTS_DIR / "trevsnn_energy_imagenet_scale_cpu.json")
    args = p.parse_args(argv)
    command = command_line([__file__, *(sys.argv[1:] if argv is None else argv)])
    torch.set_num_threads(args.threads)
    x, _ = digits_images(args.images, args.image, 3)
    paper_setting = (args.image, args.classes, args.T) == (224, 1000, 4)
    rows = []
    for name in args.models:
        model = create(name, num_classes=args.classes, T=args.T)
        for rule, e in energy(model, x, RULES).items():
            paper = PAPER_MJ.get(name) if paper_setting else None
            rest = None if paper is None else paper - e["mac_mj"]
            rows.append({"model": name, "rule": rule, "energy_mj": e["energy_mj_per_image"],
                         "stem_mj": e["stem_mj"], "mac_mj": e["mac_mj"],
                         "gmacs": e["macs_per_image"] / 1e9, "gacs": e["acs_per_image"] / 1e9,
                         "rate": e["mean_firing_rate"], "vs_paper": (
                             None if paper is None else e["energy_mj_per_image"] / paper),
                         "rate_for_paper": None if rest is None else (
                             rest / (E_AC_PJ * e["ac_dense_ops"] * 1e-9) if rest > 0 else "none")})
            print(f"{name} [{rule}]: {e['energy_mj_per_image']:.3f} mJ/img", file=sys.stderr)
        del model
    by = {(r["model"], r["rule"]): r["energy_mj"] for r in rows}
    summary = {f"bptt_over_tiny_{rule}": by[("trevsnn_tiny_bptt", rule)]
               / by[("trevsnn_tiny", rule)] for rule in RULES
               if ("trevsnn_tiny_bptt", rule) in by and ("trevsnn_tiny", rule) in by}
    prov = provenance("cpu", {"images": args.images, "image": args.image,
                              "classes": args.classes, "T": args.T, "models": args.models,
                              "data": "digits test images, resized", "weights": "init, seed 0"},
                      command=command)
    text = table(rows, {"model": "model", "rule": "rule", "energy_mj": "mJ/img",
                        "stem_mj": "stem mJ", "mac_mj": "MAC-counted mJ", "gmacs": "GMACs",
                        "gacs": "GACs", "rate": "mean rate", "vs_paper": "/ paper's 2.8 mJ",
                        "rate_for_paper": "rate for 2.8 mJ"}, prov,
                 fmt={"energy_mj": ".3f", "stem_mj": ".3f", "mac_mj": ".3f", "gmacs": ".3f",
                      "gacs": ".3f", "rate": ".3f", "rate_for_paper": ".3f"})
    return publish(args.out, prov, rows, summary, {"table": text})


if __name__ == "__main__":
    sys.exit(main())
