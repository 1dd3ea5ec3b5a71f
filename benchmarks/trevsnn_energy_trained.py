"""T-RevSNN inference energy with trained weights against its BPTT twin, on real data; writes
``docs/results/trevsnn_energy_trained_cpu.json``.

``trevsnn_cifar`` (reversible; the main job) and ``trevsnn_cifar_bptt`` (plain BPTT, every spike
a multi-step LIF, the image repeated over T) are trained with the main job's recipe
(``revsnn train`` defaults; only ``--model`` and ``--memory-mode`` differ) -- or taken from
finished runs -- and one eval forward on the first ``--images`` digits test images, normalised
as in training, is counted under both spike-input conventions (``revsnn.bench.measure.energy``,
E = 4.6 pJ MAC + 0.9 pJ AC).

    python benchmarks/trevsnn_energy_trained.py                          # trains both (~5 min)
    python benchmarks/trevsnn_energy_trained.py --trevsnn-run runs/main_job_X   # trains one
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from revsnn.bench.data import digits_images
from revsnn.bench.measure import energy
from revsnn.bench.results import RESULTS_DIR, command_line, provenance, publish, table

RULES = ("strict", "linear_chain")
PAIR = {"trevsnn": ("trevsnn_cifar", "reversible"), "bptt": ("trevsnn_cifar_bptt", "none")}


def trained(kind: str, run) -> tuple:
    """(model with the run's final weights, summary) -- training the run first if needed."""
    from revsnn.train.build import build_data, build_model
    from revsnn.train.checkpoint import load_checkpoint, load_model_state
    from revsnn.train.config import TrainConfig

    if run is None:
        name, mode = PAIR[kind]
        run = Path("runs") / f"energy_{name}_{time.strftime('%Y%m%d-%H%M%S')}"
        subprocess.run([sys.executable, "-m", "revsnn.train", "--model", name, "--memory-mode",
                        mode, "--out", str(run)], check=True)
    ck = load_checkpoint(Path(run) / "checkpoint.pt")
    cfg = TrainConfig.from_dict(dict(ck["config"]))
    model = build_model(cfg, build_data(cfg).info)
    load_model_state(model, ck["model"], ck["path"])
    return model.eval(), json.loads((Path(run) / "summary.json").read_text()), str(run)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trevsnn-run", type=Path, default=None, help="finished trevsnn_cifar run")
    p.add_argument("--bptt-run", type=Path, default=None, help="finished trevsnn_cifar_bptt run")
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "trevsnn_energy_trained_cpu.json")
    args = p.parse_args(argv)
    command = command_line([__file__, *(sys.argv[1:] if argv is None else argv)])
    torch.set_num_threads(1)
    x, _ = digits_images(args.images)  # [n, 1, 8, 8], normalised as in training
    rows, runs = [], {}
    for kind, run in (("trevsnn", args.trevsnn_run), ("bptt", args.bptt_run)):
        model, summary, runs[kind] = trained(kind, run)
        for rule, e in energy(model, x, RULES).items():
            rows.append({"kind": kind, "model": summary["model"], "rule": rule,
                         "energy_mj": e["energy_mj_per_image"], "macs": e["macs_per_image"],
                         "acs": e["acs_per_image"], "rate": e["mean_firing_rate"],
                         "mac_mj": e["mac_mj"], "test_acc": summary["final_test_acc"]})
    by = {(r["kind"], r["rule"]): r for r in rows}
    out_summary = {f"bptt_over_trevsnn_{rule}": by[("bptt", rule)]["energy_mj"]
                   / by[("trevsnn", rule)]["energy_mj"] for rule in RULES}
    for kind in PAIR:
        out_summary[f"{kind}_test_acc"] = by[(kind, "strict")]["test_acc"]
        out_summary[f"{kind}_rate"] = by[(kind, "strict")]["rate"]
    prov = provenance("cpu", {"images": int(x.shape[0]), "runs": runs,
                              "recipe": "revsnn train defaults"}, command=command)
    text = table(rows, {"model": "model", "rule": "rule", "energy_mj": "mJ/img", "macs": "MACs",
                        "acs": "ACs", "rate": "mean rate", "test_acc": "test acc %"}, prov,
                 fmt={"energy_mj": ".5f", "macs": ".4g", "acs": ".4g", "rate": ".3f"})
    return publish(args.out, prov, rows, out_summary, {"table": text})


if __name__ == "__main__":
    sys.exit(main())
